//! Writing: positioned writes of verified blobs, out of order, into the files the planner
//! created; then metadata, last.
//!
//! Any blob can be written as soon as it is unsealed, from any thread (`pwrite` through a
//! shared descriptor): a write past the end grows the file, and a file ending in a hole was
//! given its size when created; a file several threads have blobs for is written by one of
//! them at a time, the others leaving theirs with it ([`SharedFile`]); a large file's blobs
//! go to the direct writing threads instead (see [`super::direct`]). Holes are never
//! written, so they stay holes. A blob that cannot be fetched or verified fails the files
//! it feeds, and the message names the pack (or blob) and those files; such a file still
//! gets its full size, but not its metadata (it is left private, mode 0600, with the
//! restore's times), so that it cannot pass for a complete file by its size and time. A
//! full target stops the writing at once ([`ContentWriter::target_full`]).
//!
//! Metadata is applied after content. A batch's files that got all their content get
//! theirs as soon as the batch is written, through the descriptor each was created with
//! when it kept one. Everything else (symlinks, special files, files left alone,
//! directories) gets its metadata after all content, each directory after everything
//! inside it, so writing into a directory does not move its times and a read-only
//! directory does not block its children.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rayon::prelude::*;

use super::direct::{ALIGN, BlobToWrite, DirectFile, DirectQueue, LeftOver, SharedBlocks};
use super::plaintext::{Buffers, Plaintext};
use super::plan::{Pending, PendingDir, Placement, PlannedBlob, PlannedFile};
use super::reopen::reopen;
use crate::platform::{self, ApplyOptions, DirHandle};
use crate::progress::Progress;

/// Files without a kept descriptor that one fetched range opens once for several of its
/// blobs, at most; beyond them, a file is opened for each write.
pub(super) const SHARED_OPENS: usize = 256;

/// Files named in one failure message; the rest are counted.
const NAMED_FILES: usize = 10;

/// What went wrong while writing content.
#[derive(Debug, Default)]
struct Failures {
    messages: Vec<String>,
    files: BTreeSet<u32>,
    /// Files that lost content, by why (which names the pack or blob): one message each,
    /// however many of its ranges or blobs failed.
    lost: BTreeMap<String, BTreeSet<u32>>,
}

/// Writes blobs to their placements; shared by the pool's threads.
#[derive(Debug)]
pub(super) struct ContentWriter<'a> {
    files: &'a [PlannedFile],
    progress: Option<&'a Progress>,
    /// Where the blobs of files with a usable [`DirectFile`] go.
    direct: Option<&'a DirectQueue>,
    /// The buffers blobs are unsealed into.
    buffers: Buffers,
    /// Blocks of directly written files that blobs share, until each is complete.
    shared_blocks: Mutex<SharedBlocks>,
    bytes: AtomicU64,
    bytes_direct: AtomicU64,
    failures: Mutex<Failures>,
    /// Set by the first write that found the target full: the path and the error.
    full: Mutex<Option<(PathBuf, std::io::Error)>>,
    /// `full` is set.
    is_full: AtomicBool,
}

/// What a [`ContentWriter`] did.
#[derive(Debug)]
pub(super) struct WriteSummary {
    /// Content bytes written.
    pub bytes: u64,
    /// Of those, bytes written around the page cache (see [`super::direct`]).
    pub bytes_direct: u64,
    /// What failed, each naming the pack or blob and the files affected.
    pub errors: Vec<String>,
    /// The numbers of the files that lost content (they get no metadata).
    pub failed: BTreeSet<u32>,
}

/// The files open for one fetched range, by file number.
/// `None`: the file could not be opened (already reported), so its writes are skipped.
pub(super) type OpenFiles = HashMap<u32, Option<Target>>;

/// A file open for one fetched range.
#[derive(Debug)]
pub(super) enum Target {
    /// Takes one blob of the range, or is written directly (see [`super::direct`]).
    Single(Arc<File>),
    /// Takes several blobs of the range, which the pool unseals at once: written one at a
    /// time (see [`SharedFile`]).
    Shared(SharedFile),
}

/// A file several threads have blobs for. ext4 (like most filesystems) serialises buffered
/// writes to one file on its inode lock, and a thread waiting for it spins: half of a
/// two-core volume restore went to `rwsem_spin_on_owner` (docs/PERFORMANCE.md, session 12).
/// So one thread writes at a time, and a thread that finds the file busy leaves its blob
/// with the writer and goes back to unsealing; the writer writes what was left before it
/// lets go. At most [`QUEUED_WRITES`] blobs wait: when writing is what holds the restore,
/// unsealing further ahead would only fill memory, so a thread that finds the queue full
/// waits (asleep) for room.
#[derive(Debug)]
pub(super) struct SharedFile {
    file: Arc<File>,
    queue: Mutex<WriteQueue>,
    room: Condvar,
}

/// Blobs waiting for the thread writing a [`SharedFile`], at most.
const QUEUED_WRITES: usize = 4;

/// Writes left for the thread writing a [`SharedFile`].
#[derive(Debug, Default)]
struct WriteQueue {
    /// A thread is writing (and will write whatever is queued).
    writing: bool,
    /// Offsets and bytes left to write, oldest first.
    queued: VecDeque<(u64, Vec<u8>)>,
}

impl<'a> ContentWriter<'a> {
    /// A writer into `files`; `direct` takes the blobs of those with a [`DirectFile`]
    /// (written buffered without it).
    pub fn new(
        files: &'a [PlannedFile],
        progress: Option<&'a Progress>,
        direct: Option<&'a DirectQueue>,
    ) -> Self {
        Self {
            files,
            progress,
            direct,
            buffers: Buffers::default(),
            shared_blocks: Mutex::default(),
            bytes: AtomicU64::new(0),
            bytes_direct: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
            full: Mutex::new(None),
            is_full: AtomicBool::new(false),
        }
    }

    /// True once a write found the target full: nothing more is worth writing.
    pub fn is_target_full(&self) -> bool {
        self.is_full.load(Ordering::Relaxed)
    }

    /// The path and error of the first write that found the target full, if one did.
    pub fn target_full(&self) -> Option<(PathBuf, std::io::Error)> {
        self.full
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The descriptors for writing `blobs` (one fetched range): every file that kept its
    /// descriptor, and up to [`SHARED_OPENS`] others that take several of these blobs, each
    /// opened once. Any other file is opened for its one write (see [`Self::write`]), so a
    /// range of thousands of small files never holds thousands of descriptors. Files
    /// written directly need none: the direct writing threads write them.
    pub fn open_targets(&self, blobs: &[PlannedBlob]) -> OpenFiles {
        let mut open = OpenFiles::new();
        let mut placements: HashMap<u32, usize> = HashMap::new();
        for placement in blobs.iter().flat_map(|b| &b.placements) {
            *placements.entry(placement.file).or_default() += 1;
        }
        let mut opened = 0;
        for (&number, &count) in &placements {
            if self.direct_queue(number).is_some() {
                continue;
            }
            let planned = &self.files[number as usize];
            let file = if let Some(handle) = &planned.handle {
                Some(Arc::clone(handle))
            } else if count > 1 && opened < SHARED_OPENS {
                opened += 1;
                self.open_or_fail(number)
            } else {
                continue;
            };
            let target = file.map(|file| {
                if count > 1 {
                    Target::Shared(SharedFile {
                        file,
                        queue: Mutex::default(),
                        room: Condvar::new(),
                    })
                } else {
                    Target::Single(file)
                }
            });
            open.insert(number, target);
        }
        open
    }

    /// Opens file `number` for writing, or records why it cannot be (once per file).
    fn open_or_fail(&self, number: u32) -> Option<Arc<File>> {
        let planned = &self.files[number as usize];
        match open_for_writing(planned) {
            Ok(file) => Some(file),
            Err(e) => {
                let mut failures = self.failures();
                if failures.files.insert(number) {
                    failures.messages.push(format!(
                        "{}: could not open for writing: {e}",
                        planned.path.display()
                    ));
                }
                None
            }
        }
    }

    /// The queue to the direct writing threads, when file `number` is written directly.
    fn direct_queue(&self, number: u32) -> Option<&DirectQueue> {
        let direct = self.files[number as usize].direct.as_ref();
        self.direct
            .filter(|_| direct.is_some_and(DirectFile::is_usable))
    }

    /// A buffer to unseal `blob` (`len` bytes) into. It goes to the blob's last placement,
    /// so it is laid out for that one when it is written directly.
    pub fn plaintext_for(&self, blob: &PlannedBlob, len: usize) -> Plaintext {
        let lead = blob
            .placements
            .last()
            .filter(|last| self.direct_queue(last.file).is_some())
            .map_or(0, lead_of);
        self.buffers.take(lead, len)
    }

    /// Writes a verified blob to each of its placements: through `open` or a descriptor
    /// opened for this write, or by a direct writing thread.
    pub fn write(&self, open: &OpenFiles, blob: &PlannedBlob, plaintext: Plaintext) {
        let Some((last, others)) = blob.placements.split_last() else {
            self.buffers.give(plaintext);
            return;
        };
        // The last placement may keep the buffer; the others get copies or borrow it.
        for placement in others {
            match self.direct_queue(placement.file) {
                Some(queue) => {
                    let copy = self.buffers.copy(plaintext.bytes(), lead_of(placement));
                    self.send_direct(queue, placement, copy);
                }
                None => self.write_buffered(open, placement, plaintext.bytes()),
            }
        }
        match self.direct_queue(last.file) {
            Some(queue) if plaintext.lead() == lead_of(last) => {
                self.send_direct(queue, last, plaintext);
            }
            Some(queue) => {
                let copy = self.buffers.copy(plaintext.bytes(), lead_of(last));
                self.buffers.give(plaintext);
                self.send_direct(queue, last, copy);
            }
            None => {
                self.write_buffered(open, last, plaintext.bytes());
                self.buffers.give(plaintext);
            }
        }
    }

    /// Hands `data` for `placement` to the direct writing threads.
    fn send_direct(&self, queue: &DirectQueue, placement: &Placement, data: Plaintext) {
        let blob = BlobToWrite {
            file: placement.file,
            offset: placement.offset,
            data,
        };
        if let Err(unsent) = queue.send(blob) {
            // The queue closes only once every blob is written; never lose bytes.
            self.write_blob(unsent);
        }
    }

    /// Writes `bytes` at `placement` through `open`, or a descriptor opened for this write.
    fn write_buffered(&self, open: &OpenFiles, placement: &Placement, bytes: &[u8]) {
        match open.get(&placement.file) {
            Some(Some(Target::Single(file))) => self.write_at(file, placement, bytes),
            Some(Some(Target::Shared(shared))) => self.write_shared(shared, placement, bytes),
            Some(None) => {}
            None => {
                if let Some(file) = self.open_or_fail(placement.file) {
                    self.write_at(&file, placement, bytes);
                }
            }
        }
    }

    /// Writes `data` to `shared` now if no other thread is writing to it, then whatever
    /// others left meanwhile; else leaves it for the thread that is (waiting for room when
    /// [`QUEUED_WRITES`] blobs already wait).
    fn write_shared(&self, shared: &SharedFile, placement: &Placement, data: &[u8]) {
        let lock = || shared.queue.lock().unwrap_or_else(PoisonError::into_inner);
        {
            let mut queue = lock();
            while queue.writing && queue.queued.len() >= QUEUED_WRITES {
                queue = shared
                    .room
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if queue.writing {
                queue.queued.push_back((placement.offset, data.to_vec()));
                return;
            }
            queue.writing = true;
        }
        self.write_at(&shared.file, placement, data);
        loop {
            let (offset, left) = {
                let mut queue = lock();
                let next = queue.queued.pop_front();
                if next.is_none() {
                    queue.writing = false;
                }
                // Room for one more, or the file is free: either lets waiting threads on.
                shared.room.notify_all();
                match next {
                    Some(next) => next,
                    None => return,
                }
            };
            let at = Placement {
                file: placement.file,
                offset,
            };
            self.write_at(&shared.file, &at, &left);
        }
    }

    /// Writes `data` at `placement` in `file`, counting it or recording the failure.
    fn write_at(&self, file: &File, placement: &Placement, data: &[u8]) {
        let written = file.write_all_at(data, placement.offset).map(|()| 0);
        self.record(placement.file, placement.offset, data.len(), written);
    }

    /// Writes the blobs [`Self::write`] hands over, until the queue closes; run by each
    /// direct writing thread.
    pub fn write_direct(&self) {
        while let Some(blob) = self.direct.and_then(DirectQueue::next) {
            self.write_blob(blob);
        }
    }

    /// Writes one blob of a directly written file: its whole blocks, with the blocks it
    /// shares with its neighbours that it completes, in one direct write from its own
    /// buffer. Its part of a block still missing bytes waits in [`SharedBlocks`].
    fn write_blob(&self, blob: BlobToWrite) {
        let BlobToWrite {
            file: number,
            offset,
            mut data,
        } = blob;
        let block = ALIGN as usize;
        let length = data.bytes().len();
        let (start, end) = (data.lead(), data.lead() + length);
        let first_block = offset / ALIGN;
        let blocks = data.blocks_mut();
        let mut whole = 0..blocks.len() / block;
        // The first and last blocks, when the blob does not fill them.
        let edges = [
            (start % block != 0).then_some(0),
            (end % block != 0).then(|| end / block),
        ];
        let mut edges = edges.into_iter().flatten().collect::<Vec<_>>();
        edges.dedup();
        let mut left_over = Vec::new();
        for edge in edges {
            let part = start.max(edge * block)..end.min((edge + 1) * block);
            let at = part.start - edge * block;
            let place = first_block + edge as u64;
            let completed = self
                .shared_blocks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(number, place, at, &blocks[part], &mut left_over);
            match completed {
                Some(completed) => blocks[edge * block..][..block].copy_from_slice(&completed),
                None if edge == whole.start => whole.start += 1,
                None => whole.end = edge,
            }
        }
        self.write_left_over(left_over);
        let written = if whole.start < whole.end {
            let planned = &self.files[number as usize];
            let at = (first_block + whole.start as u64) * ALIGN;
            let bytes = &blocks[whole.start * block..whole.end * block];
            open_for_writing(planned).and_then(|buffered| match &planned.direct {
                Some(direct) => direct.write_blocks(&buffered, bytes, at),
                None => buffered.write_all_at(bytes, at).map(|()| 0),
            })
        } else {
            Ok(0)
        };
        self.record(number, offset, length, written);
        self.buffers.give(data);
    }

    /// Writes pieces of blocks no blob completed, through the files' ordinary descriptors.
    /// Their bytes were counted with their blobs; only failures are recorded.
    fn write_left_over(&self, pieces: Vec<LeftOver>) {
        for (number, offset, bytes) in pieces {
            let written = open_for_writing(&self.files[number as usize])
                .and_then(|file| file.write_all_at(&bytes, offset));
            if let Err(e) = written {
                self.record(number, offset, 0, Err(e));
            }
        }
    }

    /// Counts `length` bytes written at `offset` in file `number` (`Ok` with the bytes
    /// of them written directly), or records the failure.
    fn record(&self, number: u32, offset: u64, length: usize, written: std::io::Result<u64>) {
        match written {
            Ok(direct) => {
                self.bytes.fetch_add(length as u64, Ordering::Relaxed);
                self.bytes_direct.fetch_add(direct, Ordering::Relaxed);
                if let Some(progress) = self.progress {
                    progress.bytes_done(length as u64);
                }
            }
            Err(e) => {
                let path = &self.files[number as usize].path;
                let mut failures = self.failures();
                failures.files.insert(number);
                if super::is_storage_full(&e) {
                    let mut full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
                    if !self.is_full.swap(true, Ordering::Relaxed) {
                        *full = Some((path.clone(), e));
                    }
                    return;
                }
                failures.messages.push(format!(
                    "{}: could not write at offset {offset}: {e}",
                    path.display(),
                ));
            }
        }
    }

    /// Records that `blobs` cannot be had, for `reason` (which names the pack or blob),
    /// with the files that lose content.
    pub fn fail_blobs(&self, blobs: &[PlannedBlob], reason: &str) {
        let affected: Vec<u32> = blobs
            .iter()
            .flat_map(|b| &b.placements)
            .map(|p| p.file)
            .collect();
        let mut failures = self.failures();
        failures.files.extend(&affected);
        failures
            .lost
            .entry(reason.to_owned())
            .or_default()
            .extend(affected);
    }

    /// One message per reason content was lost, naming the files affected.
    fn lost_messages(&self, lost: BTreeMap<String, BTreeSet<u32>>) -> Vec<String> {
        lost.into_iter()
            .map(|(reason, affected)| {
                let mut names: Vec<String> = affected
                    .iter()
                    .take(NAMED_FILES)
                    .map(|&f| self.files[f as usize].path.display().to_string())
                    .collect();
                if affected.len() > NAMED_FILES {
                    names.push(format!("and {} more", affected.len() - NAMED_FILES));
                }
                format!(
                    "{reason}; {} file(s) affected: {}",
                    affected.len(),
                    names.join(", ")
                )
            })
            .collect()
    }

    /// What was written and what failed.
    ///
    /// A file that lost content is given its final size, since the write that would have
    /// set it may be the one lost; what is missing reads as zeros (a hole).
    pub fn finish(self) -> WriteSummary {
        let left_over = self
            .shared_blocks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain();
        self.write_left_over(left_over);
        let mut failures = self
            .failures
            .lock()
            .map(|mut failures| std::mem::take(&mut *failures))
            .unwrap_or_else(|poisoned| std::mem::take(&mut *poisoned.into_inner()));
        let lost = std::mem::take(&mut failures.lost);
        failures.messages.extend(self.lost_messages(lost));
        for &number in &failures.files {
            let planned = &self.files[number as usize];
            // The file is already reported as failed; a file that cannot be opened or
            // sized now is the one that could not be opened or written before.
            if let Ok(file) = open_for_writing(planned)
                && file.metadata().is_ok_and(|m| m.len() < planned.size)
            {
                let _ = platform::punch_hole_or_set_len(&file, planned.size);
            }
        }
        WriteSummary {
            bytes: self.bytes.into_inner(),
            bytes_direct: self.bytes_direct.into_inner(),
            errors: failures.messages,
            failed: failures.files,
        }
    }
}

/// How far into its block `placement` starts.
fn lead_of(placement: &Placement) -> usize {
    (placement.offset % ALIGN) as usize
}

/// The descriptor a planned file keeps, or the file reopened by its path (if that still
/// leads to the file created).
fn open_for_writing(planned: &PlannedFile) -> std::io::Result<Arc<File>> {
    match &planned.handle {
        Some(handle) => Ok(Arc::clone(handle)),
        None => reopen(&planned.path, planned.identity, true).map(Arc::new),
    }
}

/// Errors and warnings, each naming its path.
type Report = (Vec<String>, Vec<String>);

/// Directories with fewer entries than this have their entries' metadata applied on the
/// calling thread: handing a few to the pool costs more than it saves.
const PARALLEL_APPLY: usize = 8;

/// Applies the metadata of a written batch's files, on the rayon pool: through the
/// descriptor a file kept (no path lookup), else reopened by its path
/// ([`open_for_writing`]). Each file's last write is
/// done, so nothing moves its times or clears its setuid bit afterwards. The files
/// numbered in `failed` lost content: they are left private (made so if they were
/// created with their recorded permissions).
pub(super) fn apply_files(
    files: &[PlannedFile],
    failed: &BTreeSet<u32>,
    options: &ApplyOptions,
) -> Report {
    let reports: Vec<Report> = files
        .par_iter()
        .enumerate()
        .with_min_len(PARALLEL_APPLY)
        .filter_map(|(number, planned)| {
            let number = u32::try_from(number).ok()?;
            let lost = failed.contains(&number);
            if lost && !planned.created_open {
                return None;
            }
            // `None`: made private instead.
            let meta = if lost {
                None
            } else {
                Some(planned.meta.as_ref()?)
            };
            let result = open_for_writing(planned)
                .map_err(|e| platform::PlatformError::new(&planned.path, "reopen", e))
                .and_then(|file| match meta {
                    Some(meta) => {
                        platform::apply_file_metadata(&file, &planned.path, meta, options)
                    }
                    None => platform::make_private(&file, &planned.path).map(|()| Vec::new()),
                });
            let mut report = Report::default();
            record(&planned.path, result, &mut report);
            Some(report)
        })
        .collect();
    let mut report = Report::default();
    merge(&mut report, reports);
    report
}

/// Adds the errors and warnings of `reports` to `report`, in order.
fn merge(report: &mut Report, reports: Vec<Report>) {
    for (errors, warnings) in reports {
        report.0.extend(errors);
        report.1.extend(warnings);
    }
}

/// Applies the metadata of everything under `root` (not to `root` itself unless it has
/// metadata), children before their directory. Returns errors and warnings, naming paths.
///
/// Every directory is opened from its parent's descriptor, never through a symlink, and
/// every entry's metadata is applied relative to its directory's descriptor (a directory's
/// own through the descriptor open on it): however long the restore ran, an entry or a
/// directory on the way replaced by a symlink in the meantime leads nowhere else.
///
/// A directory's entries are applied in parallel on the rayon pool (idle by now: the
/// content is written), each directory once all of its entries are done; the report keeps
/// the tree's order.
pub(super) fn apply_all(root: &PendingDir, options: &ApplyOptions) -> Report {
    match DirHandle::open(&root.path) {
        Ok(handle) => apply_dir(root, &handle, options),
        Err(e) => cannot_open(&root.path, &e),
    }
}

fn cannot_open(path: &Path, error: &std::io::Error) -> Report {
    (
        vec![format!(
            "{}: could not open directory to restore metadata: {error}",
            path.display()
        )],
        Vec::new(),
    )
}

fn apply_dir(dir: &PendingDir, handle: &DirHandle, options: &ApplyOptions) -> Report {
    let mut report = Report::default();
    let apply_child = |child: &Pending| match child {
        Pending::Leaf { path, meta, node } => {
            let mut report = Report::default();
            let name = path.file_name().unwrap_or(OsStr::new(""));
            record(
                path,
                platform::apply_metadata_at(handle.fd(), name, path, meta, node, options),
                &mut report,
            );
            report
        }
        Pending::Dir(child) => {
            let name = child.path.file_name().unwrap_or(OsStr::new(""));
            match handle.open_dir(name) {
                Ok(opened) => apply_dir(child, &opened, options),
                Err(e) => cannot_open(&child.path, &e),
            }
        }
    };
    let reports: Vec<Report> = if dir.children.len() < PARALLEL_APPLY {
        dir.children.iter().map(apply_child).collect()
    } else {
        dir.children.par_iter().map(apply_child).collect()
    };
    merge(&mut report, reports);
    if let Some(meta) = &dir.meta {
        record(
            &dir.path,
            platform::apply_file_metadata(handle.file(), &dir.path, meta, options),
            &mut report,
        );
    }
    report
}

/// Adds the outcome of applying `path`'s metadata to `report`.
fn record(
    path: &Path,
    result: Result<Vec<platform::PlatformError>, platform::PlatformError>,
    report: &mut Report,
) {
    match result {
        Ok(warnings) => report.1.extend(
            warnings
                .into_iter()
                .map(|w| format!("{}: could not {} it: {}", path.display(), w.op, w.source)),
        ),
        Err(e) => report.0.push(format!(
            "{}: could not {} it: {}",
            path.display(),
            e.op,
            e.source
        )),
    }
}

#[cfg(test)]
mod tests {
    use bunker_repo_format::index::BlobLocation;
    use bunker_repo_format::tree::Node;
    use bunker_repo_format::{BlobId, BlobKind, PackId};

    use super::super::direct::{ALIGN, DirectFile};
    use super::*;

    const BLOCK: usize = 64 << 10;

    /// A directory replaced by a symlink (to somewhere the restore must never touch)
    /// between its creation and the metadata pass: nothing outside the target changes.
    #[test]
    fn the_metadata_pass_never_follows_a_directory_replaced_by_a_symlink() {
        use std::fs;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let tmp = tempfile::tempdir().expect("tempdir");
        let (target, outside) = (tmp.path().join("target"), tmp.path().join("outside"));
        fs::create_dir_all(target.join("kept")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("f"), b"x").expect("write");
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o700)).expect("chmod");
        fs::set_permissions(outside.join("f"), fs::Permissions::from_mode(0o600)).expect("chmod");
        std::os::unix::fs::symlink(&outside, target.join("dir")).expect("symlink");
        fs::write(target.join("kept/g"), b"y").expect("write");
        let meta = |mode: u32| bunker_repo_format::tree::Metadata {
            mode,
            uid: 12345,
            gid: 12345,
            mtime: bunker_repo_format::tree::Timestamp {
                sec: 1_000_000,
                nsec: 0,
            },
            atime: bunker_repo_format::tree::Timestamp {
                sec: 1_000_000,
                nsec: 0,
            },
            ..Default::default()
        };
        let leaf = |dir: &str, mode: u32| Pending::Leaf {
            path: target.join(dir).join(if dir == "dir" { "f" } else { "g" }),
            meta: meta(mode),
            node: Node::File {
                extents: Vec::new(),
            },
        };
        let root = PendingDir {
            path: target.clone(),
            meta: None,
            children: vec![
                Pending::Dir(PendingDir {
                    path: target.join("dir"),
                    meta: Some(meta(0o777)),
                    children: vec![leaf("dir", 0o666)],
                }),
                Pending::Dir(PendingDir {
                    path: target.join("kept"),
                    meta: Some(meta(0o751)),
                    children: vec![leaf("kept", 0o640)],
                }),
            ],
        };
        let options = ApplyOptions {
            ownership: platform::is_root(),
            remove_other_xattrs: false,
        };
        let (errors, _) = apply_all(&root, &options);

        let (dir, file) = (
            fs::metadata(&outside).expect("stat"),
            fs::metadata(outside.join("f")).expect("stat"),
        );
        assert_eq!(dir.mode() & 0o7777, 0o700, "outside the target");
        assert_eq!(file.mode() & 0o7777, 0o600, "outside the target");
        assert_ne!(file.uid(), 12345, "outside the target");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].starts_with(&format!(
                "{}: could not open directory to restore metadata",
                target.join("dir").display()
            )),
            "{errors:?}"
        );
        // The directory that stayed one got its metadata, and its entry too.
        let kept = fs::metadata(target.join("kept")).expect("stat");
        assert_eq!((kept.mode() & 0o7777, kept.mtime()), (0o751, 1_000_000));
        let g = fs::metadata(target.join("kept/g")).expect("stat");
        assert_eq!((g.mode() & 0o7777, g.mtime()), (0o640, 1_000_000));
    }

    fn blob(i: usize) -> PlannedBlob {
        PlannedBlob {
            id: BlobId::from_bytes([i as u8; 32]),
            location: BlobLocation {
                pack: PackId::from_bytes([0; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 0,
                raw_length: BLOCK as u32,
            },
            placements: vec![Placement {
                file: 0,
                offset: (i * BLOCK) as u64,
            }],
        }
    }

    fn content(i: usize) -> Vec<u8> {
        vec![i as u8 + 1; BLOCK]
    }

    /// The one file of a batch: `size` bytes at `path`, created empty, to be written
    /// directly when the filesystem allows it.
    fn large_file(path: &Path, size: usize) -> Vec<PlannedFile> {
        vec![PlannedFile {
            path: path.to_owned(),
            handle: Some(Arc::new(File::create(path).expect("create"))),
            size: size as u64,
            meta: None,
            direct: DirectFile::open(path),
            verify_against: None,
            created_open: false,
            identity: None,
        }]
    }

    /// `bytes` in the buffer `writer` has `blob` unsealed into.
    fn unsealed(writer: &ContentWriter, blob: &PlannedBlob, bytes: &[u8]) -> Plaintext {
        let mut plaintext = writer.plaintext_for(blob, bytes.len());
        plaintext.bytes_mut().copy_from_slice(bytes);
        plaintext
    }

    #[test]
    fn blobs_unsealed_at_once_for_one_file_are_all_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("volume.img");
        let count = 128;
        let files = vec![PlannedFile {
            path: path.clone(),
            handle: Some(Arc::new(File::create(&path).expect("create"))),
            size: (count * BLOCK) as u64,
            meta: None,
            direct: None,
            verify_against: None,
            created_open: false,
            identity: None,
        }];
        let blobs: Vec<PlannedBlob> = (0..count).map(blob).collect();
        let writer = ContentWriter::new(&files, None, None);
        let open = writer.open_targets(&blobs);
        let Some(Some(Target::Shared(shared))) = open.get(&0) else {
            panic!("a file taking several blobs of a range is shared")
        };

        // A blob arriving while another thread writes is left with that thread...
        shared.queue.lock().expect("lock").writing = true;
        writer.write(&open, &blobs[0], unsealed(&writer, &blobs[0], &content(0)));
        assert_eq!(shared.queue.lock().expect("lock").queued.len(), 1);
        assert_eq!(
            std::fs::metadata(&path).expect("stat").len(),
            0,
            "not written yet"
        );
        // ...which writes it before it lets go of the file.
        shared.queue.lock().expect("lock").writing = false;
        writer.write(&open, &blobs[1], unsealed(&writer, &blobs[1], &content(1)));
        assert!(shared.queue.lock().expect("lock").queued.is_empty());

        blobs[2..].par_iter().enumerate().for_each(|(i, blob)| {
            writer.write(&open, blob, unsealed(&writer, blob, &content(i + 2)))
        });
        drop(open);
        let summary = writer.finish();
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        assert_eq!(summary.bytes, (count * BLOCK) as u64);
        let written = std::fs::read(&path).expect("read");
        for (i, block) in written.chunks(BLOCK).enumerate() {
            assert_eq!(block, content(i).as_slice(), "block {i}");
        }
        assert_eq!(written.len(), count * BLOCK);
    }

    #[test]
    fn a_large_file_is_written_directly_from_end_to_end_whatever_the_order_of_its_blobs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        // Chunks of odd lengths: several in one block, some spanning many.
        let lengths = [
            1usize,
            4095,
            4097,
            70_000,
            3,
            12_288,
            8192 + 17,
            100_001,
            5000,
        ];
        let size: usize = lengths.iter().sum();
        let content: Vec<u8> = (0..size as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect();
        let files = large_file(&path, size);
        let supported = files[0].direct.is_some();
        let mut offset = 0;
        let mut blobs = Vec::new();
        for (i, &length) in lengths.iter().enumerate() {
            let mut planned = blob(i);
            planned.placements[0].offset = offset as u64;
            blobs.push((planned, content[offset..offset + length].to_vec()));
            offset += length;
        }

        let queue = DirectQueue::new();
        let writer = ContentWriter::new(&files, None, Some(&queue));
        if supported {
            // Its writers are the direct writing threads: no descriptor per range.
            let all: Vec<PlannedBlob> = blobs.iter().map(|(b, _)| b.clone()).collect();
            assert!(writer.open_targets(&all).is_empty());
        }
        std::thread::scope(|scope| {
            let writer = &writer;
            scope.spawn(move || writer.write_direct());
            // Out of order, from both ends, one range per blob (each written at once).
            blobs.par_iter().rev().for_each(|(blob, data)| {
                let open = writer.open_targets(std::slice::from_ref(blob));
                writer.write(&open, blob, unsealed(writer, blob, data));
            });
            queue.close();
        });
        let summary = writer.finish();
        assert!(summary.errors.is_empty(), "{:?}", summary.errors);
        assert_eq!(summary.bytes, size as u64);
        drop(files);
        assert_eq!(std::fs::read(&path).expect("read"), content);
        if supported {
            // Every block but the last, partial one: the blocks blobs share went out whole.
            let whole_blocks = size / ALIGN as usize * ALIGN as usize;
            assert_eq!(summary.bytes_direct, whole_blocks as u64);
        } else {
            assert_eq!(summary.bytes_direct, 0);
            eprintln!("no direct I/O in {}: buffered only", dir.path().display());
        }
    }

    #[test]
    fn a_direct_file_takes_a_blob_placed_twice_and_keeps_the_neighbours_of_a_lost_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        // A at 0, B, A again, C (lost), D up to a size that ends inside a block.
        let (a, b, c, d) = (5000, 9000, 7000, 6001);
        let size = a + b + a + c + d;
        let bytes = |seed: usize, length: usize| -> Vec<u8> {
            (0..length).map(|i| (i * 7 + seed) as u8 | 1).collect()
        };
        let (bytes_a, bytes_b, bytes_d) = (bytes(1, a), bytes(2, b), bytes(3, d));
        let files = large_file(&path, size);
        let supported = files[0].direct.is_some();
        let placed = |i: usize, offsets: &[usize]| {
            let mut planned = blob(i);
            planned.placements = offsets
                .iter()
                .map(|&offset| Placement {
                    file: 0,
                    offset: offset as u64,
                })
                .collect();
            planned
        };
        let blob_a = placed(0, &[0, a + b]);
        let blob_b = placed(1, &[a]);
        let blob_c = placed(2, &[a + b + a]);
        let blob_d = placed(3, &[a + b + a + c]);

        let queue = DirectQueue::new();
        let writer = ContentWriter::new(&files, None, Some(&queue));
        std::thread::scope(|scope| {
            let writer = &writer;
            scope.spawn(move || writer.write_direct());
            let open = OpenFiles::new();
            writer.write(&open, &blob_d, unsealed(writer, &blob_d, &bytes_d));
            writer.write(&open, &blob_a, unsealed(writer, &blob_a, &bytes_a));
            writer.fail_blobs(std::slice::from_ref(&blob_c), "pack p: lost");
            writer.write(&open, &blob_b, unsealed(writer, &blob_b, &bytes_b));
            queue.close();
        });
        let summary = writer.finish();
        assert_eq!(summary.errors.len(), 1, "{:?}", summary.errors);
        assert!(summary.errors[0].starts_with("pack p: lost"));
        drop(files);
        let expected = [bytes_a.clone(), bytes_b, bytes_a, vec![0; c], bytes_d].concat();
        assert_eq!(std::fs::read(&path).expect("read"), expected);
        if supported {
            // The blocks before the lost blob's first one; the others touch it or the end.
            let before_lost = (a + b + a) / ALIGN as usize * ALIGN as usize;
            assert_eq!(summary.bytes_direct, before_lost as u64);
        }
    }
}
