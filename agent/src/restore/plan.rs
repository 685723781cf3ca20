//! Planning a restore: walk the snapshot's trees, create what has no content, and list, per
//! pack, the blobs needed and every place each one goes.
//!
//! The lists go out in batches of at most [`BATCH_FILES`] files (the first few fewer, see
//! [`RAMP_STEPS`]) or [`BATCH_BYTES`] bytes, so the writer fills the first files while the
//! walk creates the next ones, and a plan's memory stays bounded whatever the size of the
//! tree. A blob needed by files of two
//! batches is fetched once for each.
//!
//! The walk creates directories, symlinks, special files and hard links at once, and every
//! regular file as an empty file, relative to its directory's open descriptor; each file
//! goes into the batch with its metadata, which the writer applies once the batch is
//! written. A file that ends in a hole is given its final size at once (`set_len`: sparse
//! until written, so holes stay holes); any other file reaches its size with its last
//! chunk's write. A file already at its place with the right
//! content is left alone (see [`super::resume`]). A directory this restore created (or found
//! empty) holds nothing yet, so its entries are created without first looking for what is
//! there: two `lstat` calls fewer per file when restoring into a new directory.
//!
//! Blob placements are grouped by pack and sorted by offset, so the fetcher can read each
//! pack in a few coalesced ranges; a blob used by many files of a batch (or many times in
//! one file) is fetched once and written to each place.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunker_repo_format::index::{BlobLocation, Index};
use bunker_repo_format::pack::pack_name;
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node};
use bunker_repo_format::{BlobId, PackId, Repository};

use super::RestoreError;
use super::direct::{DIRECT_MIN, DirectFile, allocate_data_runs};
use super::overwrite::{self, Overwrite, Verdict};
use super::reopen::{Identity, identity_of};
use super::resume;
use super::select::{Decision, RestoreFilter};
use crate::cancel::Cancel;
use crate::platform::{self, DirHandle};
use nix::fcntl::AtFlags;
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, fchmodat, fstatat};

/// Files with content in one batch of a restore's plan, at most.
pub const BATCH_FILES: usize = 4096;
/// Bytes of content (each placement counted) in one batch, at most (one file may exceed it).
pub(super) const BATCH_BYTES: u64 = 128 << 20;
/// The first batches hold fewer files, doubling up to the full count (256 files, then 512,
/// ...): the writer starts on the first files sooner, so progress shows sooner and a
/// restore interrupted early leaves files written for the next run to skip, while the bulk
/// of a large restore still goes in full batches. The byte limit does not ramp: a pack
/// whose first blobs fell into a later batch would cost a request for its header alone
/// (see the fetch module), and large files fill a batch in few files anyway.
const RAMP_STEPS: u32 = 4;

/// Longest path the writer reopens by name; a file with a longer path keeps its
/// descriptor open from creation until its batch is written (such paths are rare).
const REOPEN_PATH_MAX: usize = 4000;

/// Descriptors left for everything but the kept files: the writer's own opens (at most
/// [`super::write::SHARED_OPENS`] plus one per pool thread), packs being read, the walk's
/// open directories.
const OTHER_DESCRIPTORS: u64 = 1024;

/// How many files of each batch keep the descriptor they were created with until the batch
/// is written, sparing the writer an `open` and a `close` by path each, when `limit`
/// descriptors may be open: three batches can be alive at once (one written, one queued,
/// one planned). The other files are reopened by path.
pub(super) fn files_kept_open(limit: u64) -> usize {
    let per_batch = limit.saturating_sub(OTHER_DESCRIPTORS) / 3;
    usize::try_from(per_batch).map_or(BATCH_FILES, |n| n.min(BATCH_FILES))
}

/// A regular file that receives content.
#[derive(Debug)]
pub(super) struct PlannedFile {
    /// Real path, for messages and to reopen the file for writing.
    pub path: PathBuf,
    /// The descriptor it was created with, kept until its batch is written (see
    /// [`files_kept_open`]; always for long paths, volume targets and files written
    /// directly); else the writer reopens `path`.
    pub handle: Option<Arc<File>>,
    /// Its final size, set by the writer on a file that lost content (whose last chunk
    /// may never be written).
    pub size: u64,
    /// Its metadata, applied once its batch is written (through `handle` when kept);
    /// `None` for a volume target, which keeps its own.
    pub meta: Option<Metadata>,
    /// For a file of at least [`DIRECT_MIN`] data bytes, a second descriptor that writes
    /// its whole blocks around the page cache (when the filesystem allows it); such a
    /// file also keeps `handle`.
    pub direct: Option<DirectFile>,
    /// Its extents, for a restore that reads each file back once written (`--verify`,
    /// see the readback module); `None` otherwise.
    pub verify_against: Option<Vec<Extent>>,
    /// Created with its recorded permission bits rather than private (see
    /// [`creation_permissions`]): made private should it lose content.
    pub created_open: bool,
    /// The inode created, for a file not kept open: reopened by its path only if that still
    /// leads to it ([`super::reopen`]).
    pub identity: Option<Identity>,
}

/// What became of a regular file in the plan.
#[derive(Debug, Clone, Copy)]
enum FilePlanned {
    /// Created and added to the batch, which applies its metadata once written.
    Batched,
    /// Already correct in the target: left alone; its metadata is applied last.
    LeftAlone,
    /// Could not be created or checked (reported).
    Failed,
}

/// One place a blob's plaintext goes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Placement {
    /// Index into its batch's [`Batch::files`].
    pub file: u32,
    /// Offset in that file.
    pub offset: u64,
}

/// A blob to fetch, and where it goes.
#[derive(Debug, Clone)]
pub(super) struct PlannedBlob {
    /// The blob's id (checked against its plaintext after unsealing).
    pub id: BlobId,
    /// Where it is stored.
    pub location: BlobLocation,
    /// Every place its plaintext is written.
    pub placements: Vec<Placement>,
}

/// Everything needed from one pack.
#[derive(Debug)]
pub(super) struct PackWork {
    /// The pack.
    pub pack: PackId,
    /// Its blobs, sorted by offset.
    pub blobs: Vec<PlannedBlob>,
}

impl PackWork {
    /// The pack's object name (`data/ab/ab12...`).
    pub fn name(&self) -> String {
        let kind = self
            .blobs
            .first()
            .map_or(bunker_repo_format::BlobKind::Data, |b| b.location.kind);
        pack_name(kind, &self.pack)
    }
}

/// An entry whose metadata is applied after all content is written.
#[derive(Debug)]
pub(super) enum Pending {
    /// A non-directory: file, symlink, fifo, device.
    Leaf {
        /// Real path.
        path: PathBuf,
        /// Its metadata.
        meta: Metadata,
        /// Its kind (files without their extents).
        node: Node,
    },
    /// A directory, whose own metadata comes after its children's.
    Dir(PendingDir),
}

/// A directory restored, with the entries below it that need metadata.
#[derive(Debug)]
pub(super) struct PendingDir {
    /// Real path.
    pub path: PathBuf,
    /// The directory's own metadata; `None` for the restore target itself.
    pub meta: Option<Metadata>,
    /// Entries inside, in tree order.
    pub children: Vec<Pending>,
}

/// Files created by the walk, and the content they need.
#[derive(Debug, Default)]
pub(super) struct Batch {
    /// Files that receive content; placements number them from 0 in each batch.
    pub files: Vec<PlannedFile>,
    /// Per-pack work lists.
    pub packs: Vec<PackWork>,
    /// Regular files planned in this batch, those left alone or empty included.
    pub file_count: u64,
    /// Data bytes of the files left alone (already correct in the target), and of the
    /// files under a directory not restored.
    pub skipped_bytes: u64,
    /// Regular files under a directory of the snapshot not restored over an entry kept:
    /// the progress expected them, and they are done as far as this restore goes.
    pub passed_files: u64,
    /// Numbers of the files some of whose content is not in the index: written in part,
    /// left without their metadata, as files whose content fails to arrive.
    pub incomplete: BTreeSet<u32>,
}

/// The files and bytes of the batch that follows `emitted` earlier ones, at most.
fn batch_limits(emitted: u32) -> (usize, u64) {
    let shift = RAMP_STEPS.saturating_sub(emitted);
    (BATCH_FILES >> shift, BATCH_BYTES)
}

/// A batch being filled.
#[derive(Debug, Default)]
struct BatchBuilder {
    files: Vec<PlannedFile>,
    packs: PackPlanner,
    bytes: u64,
    file_count: u64,
    skipped_bytes: u64,
    passed_files: u64,
    incomplete: BTreeSet<u32>,
}

impl BatchBuilder {
    /// Full for the batch that follows `emitted` earlier ones.
    fn is_full(&self, emitted: u32) -> bool {
        let (files, bytes) = batch_limits(emitted);
        self.files.len() >= files || self.bytes >= bytes
    }

    fn is_empty(&self) -> bool {
        self.file_count == 0 && self.passed_files == 0
    }

    fn finish(self) -> Batch {
        Batch {
            files: self.files,
            packs: self.packs.finish(),
            file_count: self.file_count,
            skipped_bytes: self.skipped_bytes,
            passed_files: self.passed_files,
            incomplete: self.incomplete,
        }
    }
}

/// Takes each batch as it is planned; false when the writer has stopped (interrupted).
pub(super) type Emit<'a> = dyn FnMut(Batch) -> bool + 'a;

/// What the walk found and made.
#[derive(Debug)]
pub(super) struct Plan {
    /// The metadata still to apply, rooted at the target.
    pub root: PendingDir,
    /// Regular files in the snapshot (each name of a hard-linked file counts).
    pub file_count: u64,
    /// Directories created or merged into.
    pub dirs: u64,
    /// Symlinks, devices, fifos.
    pub others: u64,
    /// Files already correct in the target and left alone.
    pub skipped: u64,
    /// Bytes of those files.
    pub skipped_bytes: u64,
    /// Entries the target holds that the overwrite mode kept as they are.
    pub kept: u64,
    /// Of those, where the snapshot has a regular file.
    pub files_kept: u64,
    /// Per-entry failures found while planning, naming the path and the object.
    pub errors: Vec<String>,
    /// What the restore left undone by choice (a directory of the snapshot not restored
    /// over an entry kept), naming the path.
    pub warnings: Vec<String>,
    /// Regular files that could not be created, or whose content is not in the index.
    pub files_failed: u64,
    /// Sockets in the snapshot, which are not restored.
    pub sockets: u64,
}

/// Builds per-pack work lists from file extents.
#[derive(Debug, Default)]
pub(super) struct PackPlanner {
    packs: Vec<PackWork>,
    pack_slot: HashMap<PackId, usize>,
    blob_slot: HashMap<BlobId, (usize, usize)>,
}

impl PackPlanner {
    /// Records that `file` needs `extents` (its content from offset 0). Returns an error
    /// message for each chunk that cannot be found, naming its blob and, when known, the
    /// pack that held it.
    pub fn add_file(&mut self, index: &Index, file: u32, extents: &[Extent]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut offset = 0u64;
        for extent in extents {
            if let Extent::Chunk { id, length } = extent {
                let placement = Placement { file, offset };
                let stored_length = match self.blob_slot.get(id) {
                    Some(&(pack, blob)) => Some(self.packs[pack].blobs[blob].location.raw_length),
                    None => index.get(id).map(|location| location.raw_length),
                };
                // Written at the tree's offsets, a blob of another length would spill over
                // the next extent or leave a gap (a writer's bug, never a reader's guess).
                if let Some(stored) = stored_length.filter(|stored| stored != length) {
                    errors.push(format!(
                        "content at offset {offset} unusable: the snapshot gives blob {id} \
                         {length} bytes, the repository holds {stored}"
                    ));
                } else if let Some(&(pack, blob)) = self.blob_slot.get(id) {
                    self.packs[pack].blobs[blob].placements.push(placement);
                } else if let Some(location) = index.get(id) {
                    let pack = *self.pack_slot.entry(location.pack).or_insert_with(|| {
                        self.packs.push(PackWork {
                            pack: location.pack,
                            blobs: Vec::new(),
                        });
                        self.packs.len() - 1
                    });
                    let blobs = &mut self.packs[pack].blobs;
                    self.blob_slot.insert(*id, (pack, blobs.len()));
                    blobs.push(PlannedBlob {
                        id: *id,
                        location,
                        placements: vec![placement],
                    });
                } else {
                    errors.push(missing_blob(index, id, offset));
                }
            }
            offset += extent.length();
        }
        errors
    }

    /// The work lists, each pack's blobs sorted by offset.
    pub fn finish(mut self) -> Vec<PackWork> {
        for pack in &mut self.packs {
            pack.blobs.sort_by_key(|b| b.location.offset);
        }
        self.packs
    }
}

/// Why a chunk cannot be read, naming what is missing.
pub(super) fn missing_blob(index: &Index, id: &BlobId, offset: u64) -> String {
    match index.lost_location(id) {
        Some(lost) => format!(
            "content at offset {offset} lost: pack {} (holding blob {id}) is missing",
            pack_name(lost.kind, &lost.pack)
        ),
        None => format!("content at offset {offset} lost: blob {id} is not in the index"),
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Makes room at `path` for an entry of the snapshot: whatever is there is removed, but a
/// directory is kept when `merge_dir` (the snapshot's directory is merged into it). A
/// directory where the snapshot has a file, link or device goes with all it holds (never
/// following a symlink): the target is made to match the snapshot either way. Unless it is,
/// or holds, a mount point: another filesystem's contents are never the restore's to
/// delete (as `--delete` leaves them), so nothing is removed and the entry is not restored.
///
/// `path` reaches the entry (through its directory's descriptor); `real` is its path, for
/// messages.
fn make_room(path: &Path, real: &Path, merge_dir: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() && merge_dir => Ok(()),
        Ok(meta) if meta.is_dir() => {
            let device = match path.parent() {
                Some(parent) => fs::metadata(parent)?.dev(),
                None => meta.dev(),
            };
            if let Some(mount) = mount_point_at_or_below(path, device)? {
                let mount = match mount.strip_prefix(path) {
                    Ok(below) if below.as_os_str().is_empty() => real.to_owned(),
                    Ok(below) => real.join(below),
                    Err(_) => mount,
                };
                return Err(io::Error::other(format!(
                    "{} is on another filesystem (a mount point): nothing removed",
                    display(&mount)
                )));
            }
            fs::remove_dir_all(path)
        }
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first directory at or below `dir` (symlinks not followed) on another filesystem
/// than `device`, if any.
fn mount_point_at_or_below(dir: &Path, device: u64) -> io::Result<Option<PathBuf>> {
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        if fs::symlink_metadata(&dir)?.dev() != device {
            return Ok(Some(dir));
        }
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    Ok(None)
}

/// Gives the owner of an existing directory that a restore merges into the right to enter
/// it and change what it holds, as a directory this restore creates has: a restore run
/// again goes through the `0555` and `0000` directories the first run restored. The
/// directory's recorded mode is applied after its entries. A directory the process does
/// not own is left as it is (what fails inside it is reported there).
///
/// The directory is `name` in `parent`, reached relative to its descriptor and never
/// through a symlink (before it is opened: a `0000` directory cannot be opened yet).
/// Returns the mode it had when it changed it, for [`put_mode_back`].
fn let_owner_in(parent: &DirHandle, name: &OsStr) -> Option<u32> {
    let stat = fstatat(parent.fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let mode = stat.st_mode & 0o7777;
    if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFDIR.bits() || mode & 0o700 == 0o700 {
        return None;
    }
    set_mode_at(parent, name, mode | 0o700).ok()?;
    Some(mode)
}

/// Gives a directory [`let_owner_in`] opened the mode it had, when the restore leaves it
/// as it was (an include filter that restored nothing in it).
fn put_mode_back(parent: &DirHandle, name: &OsStr, mode: Option<u32>) -> io::Result<()> {
    match mode {
        Some(mode) => set_mode_at(parent, name, mode),
        None => Ok(()),
    }
}

/// `chmod` of `name` in `parent`, refused if it is a symlink.
fn set_mode_at(parent: &DirHandle, name: &OsStr, mode: u32) -> io::Result<()> {
    fchmodat(
        parent.fd(),
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

/// A kind-only copy of `node` (a file without its extents), for the metadata pass.
fn kind_only(node: &Node) -> Node {
    match node {
        Node::File { .. } => Node::File {
            extents: Vec::new(),
        },
        other => other.clone(),
    }
}

/// Metadata to apply: an unrecorded access time becomes the modification time.
pub(super) fn restorable(meta: &Metadata) -> Metadata {
    let mut meta = meta.clone();
    meta.atime = meta.atime_or_mtime();
    meta
}

/// Walks the snapshot and creates the entries; see the module documentation.
pub(super) struct Planner<'a> {
    repo: &'a Repository,
    index: &'a Index,
    cancel: &'a Cancel,
    hardlinks: HashMap<(u64, u64), PathBuf>,
    batch: BatchBuilder,
    /// Batches handed to the writer so far.
    batches_emitted: u32,
    emit: &'a mut Emit<'a>,
    keep_open: usize,
    plan: Plan,
    /// The first entry that could not be created for want of space, and the error: the
    /// walk stops there ([`RestoreError::TargetFull`]).
    full: Option<(PathBuf, io::Error)>,
    /// Which entries to restore, and the snapshot path the target stands for.
    filter: Option<(&'a RestoreFilter, PathBuf)>,
    /// What to do with entries the target already holds.
    overwrite: Overwrite,
    /// Keep each file's extents so that the writer reads it back.
    verify: bool,
    /// Count what a directory not restored holds as done ([`Planner::counting_passed`]).
    count_passed: bool,
}

impl<'a> Planner<'a> {
    /// A walk restoring into `target`, handing each batch of content to `emit`; the
    /// first `keep_open` files of each batch keep their descriptors ([`files_kept_open`]).
    pub fn new(
        repo: &'a Repository,
        index: &'a Index,
        cancel: &'a Cancel,
        target: &Path,
        emit: &'a mut Emit<'a>,
        keep_open: usize,
    ) -> Self {
        Self {
            repo,
            index,
            cancel,
            hardlinks: HashMap::new(),
            batch: BatchBuilder::default(),
            batches_emitted: 0,
            emit,
            keep_open,
            full: None,
            filter: None,
            overwrite: Overwrite::Always,
            verify: false,
            count_passed: false,
            plan: Plan {
                root: PendingDir {
                    path: target.to_owned(),
                    meta: None,
                    children: Vec::new(),
                },
                file_count: 0,
                dirs: 0,
                others: 0,
                skipped: 0,
                skipped_bytes: 0,
                kept: 0,
                files_kept: 0,
                errors: Vec::new(),
                warnings: Vec::new(),
                files_failed: 0,
                sockets: 0,
            },
        }
    }

    /// Restores only what `filter` selects; `snapshot_path` is the path in the snapshot
    /// that the target directory stands for (what is restored, or the directory holding
    /// the one entry restored).
    pub fn with_filter(mut self, filter: &'a RestoreFilter, snapshot_path: &Path) -> Self {
        if !filter.is_everything() {
            self.filter = Some((filter, Path::new("/").join(snapshot_path)));
        }
        self
    }

    /// Treats the entries the target already holds as `overwrite` says.
    pub fn with_overwrite(mut self, overwrite: Overwrite) -> Self {
        self.overwrite = overwrite;
        self
    }

    /// Gives each file its extents, for the writer to read it back once written.
    pub fn with_verify(mut self, verify: bool) -> Self {
        self.verify = verify;
        self
    }

    /// Counts the files and data bytes below a directory not restored (kept out by an entry
    /// the overwrite mode keeps) as done in the batches, for a progress that expected every
    /// file of the snapshot. It reads that directory's trees again.
    pub fn counting_passed(mut self, count: bool) -> Self {
        self.count_passed = count;
        self
    }

    /// What the filter decides for the entry restored at `path`.
    fn decide(&self, path: &Path, is_dir: bool, inside: bool) -> Decision {
        let Some((filter, base)) = &self.filter else {
            return Decision::Restore;
        };
        let below = path.strip_prefix(&self.plan.root.path).unwrap_or(path);
        filter.decide(&base.join(below), is_dir, inside)
    }

    /// Whether the root's entries start inside an included directory.
    fn starts_inside(&self) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|(filter, _)| filter.starts_inside())
    }

    /// Entries restored so far.
    fn restored(&self) -> u64 {
        self.plan.file_count + self.plan.dirs + self.plan.others
    }

    /// Restores the entries of `tree` into the target directory, and the metadata of
    /// `entry` (the directory's own; none for a snapshot's root) onto it, last.
    pub fn plan_tree(mut self, tree: &BlobId, entry: Option<&Entry>) -> Result<Plan, RestoreError> {
        self.plan.root.meta = entry.map(|entry| restorable(&entry.meta));
        let target = self.plan.root.path.clone();
        let target_state = DirState::of_target(&target);
        let mut children = Vec::new();
        let inside = self.starts_inside();
        match DirHandle::open(&target) {
            Ok(handle) => {
                self.walk_tree(tree, &target, &handle, target_state, inside, &mut children)?;
            }
            Err(e) => self.error(&target, format!("could not open directory: {e}")),
        }
        self.plan.root.children = children;
        self.finish()
    }

    /// Restores one entry as `target/NAME`.
    pub fn plan_entry(mut self, entry: &Entry) -> Result<Plan, RestoreError> {
        let target = self.plan.root.path.clone();
        let path = target.join(OsStr::from_bytes(&entry.name));
        let target_state = DirState::of_target(&target);
        let parent = DirHandle::open(&target).map_err(|source| RestoreError::Target {
            path: target.clone(),
            source,
        })?;
        let mut children = Vec::new();
        let inside = self.starts_inside();
        self.walk_entry(entry, &path, &parent, target_state, inside, &mut children)?;
        self.plan.root.children = children;
        self.finish()
    }

    fn finish(mut self) -> Result<Plan, RestoreError> {
        self.stop_if_full()?;
        self.flush()?;
        Ok(self.plan)
    }

    /// Ends the walk once an entry could not be created for want of space.
    fn stop_if_full(&mut self) -> Result<(), RestoreError> {
        match self.full.take() {
            Some((path, source)) => Err(RestoreError::TargetFull { path, source }),
            None => Ok(()),
        }
    }

    /// Records that `what` failed for `path`; a full target ends the walk instead (at the
    /// next [`Self::stop_if_full`]).
    fn io_error(&mut self, path: &Path, what: &str, e: io::Error) {
        if super::is_storage_full(&e) {
            self.full.get_or_insert((path.to_owned(), e));
        } else {
            self.error(path, format!("{what}: {e}"));
        }
    }

    /// Hands the batch planned so far to the writer.
    fn flush(&mut self) -> Result<(), RestoreError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch).finish();
        self.batches_emitted = self.batches_emitted.saturating_add(1);
        if (self.emit)(batch) {
            Ok(())
        } else {
            Err(RestoreError::Interrupted)
        }
    }

    fn error(&mut self, path: &Path, message: impl std::fmt::Display) {
        self.plan
            .errors
            .push(format!("{}: {message}", display(path)));
    }

    /// Restores the entries of `tree` into `dir`, which is in `dir_state`; `inside` when the
    /// filter restores everything below `dir`.
    /// `handle` is `dir`, open: everything below is created and looked at relative to it.
    fn walk_tree(
        &mut self,
        tree: &BlobId,
        dir: &Path,
        handle: &DirHandle,
        dir_state: DirState,
        inside: bool,
        out: &mut Vec<Pending>,
    ) -> Result<(), RestoreError> {
        let tree = match self.repo.load_tree(self.index, tree) {
            Ok(tree) => tree,
            Err(e) => {
                self.error(dir, format!("directory contents lost: {e}"));
                return Ok(());
            }
        };
        for entry in tree.entries() {
            if self.cancel.is_cancelled() {
                return Err(RestoreError::Interrupted);
            }
            let path = dir.join(OsStr::from_bytes(&entry.name));
            self.walk_entry(entry, &path, handle, dir_state, inside, out)?;
            self.stop_if_full()?;
            if self.batch.is_full(self.batches_emitted) {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Creates one entry at `path` (its real path, for messages) in the directory `parent`,
    /// and records its metadata in `out` (or, for a file with content, in its batch).
    /// `parent_state`: what is known of `parent` (when empty, there is nothing to check or
    /// replace); `inside`: the filter restores everything below `parent`.
    fn walk_entry(
        &mut self,
        entry: &Entry,
        path: &Path,
        parent: &DirHandle,
        parent_state: DirState,
        inside: bool,
        out: &mut Vec<Pending>,
    ) -> Result<(), RestoreError> {
        let fresh = parent_state.is_empty();
        let name = OsStr::from_bytes(&entry.name);
        // Through `parent`'s descriptor: no directory on the way is looked up by name again
        // (one replaced by a symlink since would lead out of the target).
        let access = &parent.pinned_child(name);
        let is_dir = matches!(entry.node, Node::Dir { .. });
        let clear = |access: &Path| {
            if fresh {
                Ok(())
            } else {
                make_room(access, path, is_dir)
            }
        };
        let decision = self.decide(path, is_dir, inside);
        if decision == Decision::Skip {
            return Ok(());
        }
        // A socket is made by the program that listens on it: counted, never created.
        if matches!(entry.node, Node::Socket) {
            self.plan.sockets += 1;
            return Ok(());
        }
        match &entry.node {
            Node::File { .. } => {
                self.plan.file_count += 1;
                self.batch.file_count += 1;
            }
            Node::Dir { .. } => {}
            _ => self.plan.others += 1,
        }
        let verdict = if fresh {
            Verdict::Restore
        } else {
            match overwrite::judge(self.overwrite, access, entry) {
                Ok(verdict) => verdict,
                Err(e) => {
                    self.error(path, format!("could not check what is there: {e}"));
                    if matches!(entry.node, Node::File { .. }) {
                        self.plan.files_failed += 1;
                    }
                    return Ok(());
                }
            }
        };
        // A second name of an inode seen earlier in this restore becomes a hard link.
        let link_key =
            (!is_dir && entry.meta.nlinks > 1).then_some((entry.meta.device, entry.meta.inode));
        if let Some(first) = link_key.and_then(|key| self.hardlinks.get(&key)).cloned() {
            let linked = !fresh && same_inode(&first, access);
            if !linked && verdict == Verdict::Keep {
                self.keep(entry, path, decision);
            } else if !linked
                && let Err(e) = clear(access).and_then(|()| fs::hard_link(&first, access))
            {
                self.error(path, format!("could not link to {}: {e}", display(&first)));
                if matches!(entry.node, Node::File { .. }) {
                    self.plan.files_failed += 1;
                }
            }
            return Ok(());
        }
        if verdict == Verdict::Keep {
            self.keep(entry, path, decision);
            return Ok(());
        }
        let created = match &entry.node {
            Node::File { extents } if verdict == Verdict::InPlace => {
                self.left_alone(extents);
                true
            }
            Node::Dir { subtree } => {
                // A directory this restore creates is empty; one already there is merged into.
                let made = clear(access).and_then(|()| match parent.create_dir(name) {
                    Ok(()) => Ok(true),
                    Err(e) if !fresh && e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
                    Err(e) => Err(e),
                });
                let created = match made {
                    Ok(created) => created,
                    Err(e) => {
                        self.io_error(path, "could not create directory", e);
                        return Ok(());
                    }
                };
                let opened = if created {
                    None
                } else {
                    let_owner_in(parent, name)
                };
                // Never through a symlink: one put there since is not the directory.
                let handle = match parent.open_dir(name) {
                    Ok(handle) => handle,
                    Err(e) => {
                        self.io_error(path, "could not open directory", e);
                        return Ok(());
                    }
                };
                let before = self.restored();
                let mut children = Vec::new();
                let inside = decision == Decision::Restore;
                let state = if created {
                    DirState::Created
                } else {
                    DirState::Existing
                };
                self.walk_tree(subtree, path, &handle, state, inside, &mut children)?;
                // A directory explored for includes stays only if something below it does.
                if decision == Decision::Explore && self.restored() == before {
                    if created && let Err(e) = fs::remove_dir(access) {
                        self.error(path, format!("could not remove the empty directory: {e}"));
                    }
                    if let Err(e) = put_mode_back(parent, name, opened) {
                        self.error(path, format!("could not give it its mode back: {e}"));
                    }
                    return Ok(());
                }
                self.plan.dirs += 1;
                out.push(Pending::Dir(PendingDir {
                    path: path.to_owned(),
                    meta: Some(restorable(&entry.meta)),
                    children,
                }));
                if let Some(key) = link_key {
                    self.hardlinks.insert(key, path.to_owned());
                }
                return Ok(());
            }
            Node::File { extents } => {
                let parent = (parent, parent_state, name);
                match self.plan_file(extents, &entry.meta, path, access, parent) {
                    // Its batch applies the metadata once the content is written.
                    FilePlanned::Batched => {
                        if let Some(key) = link_key {
                            self.hardlinks.insert(key, path.to_owned());
                        }
                        return Ok(());
                    }
                    FilePlanned::LeftAlone => true,
                    FilePlanned::Failed => {
                        self.plan.files_failed += 1;
                        false
                    }
                }
            }
            Node::Symlink { target } => {
                let made = clear(access).map_err(|e| e.to_string()).and_then(|()| {
                    platform::create_symlink(target, access)
                        .map_err(|e| format!("could not {} it: {}", e.op, e.source))
                });
                self.report(path, made)
            }
            special => {
                let made = clear(access).map_err(|e| e.to_string()).and_then(|()| {
                    platform::create_special(access, special)
                        .map_err(|e| format!("could not {} it: {}", e.op, e.source))
                });
                self.report(path, made)
            }
        };
        if !created {
            return Ok(());
        }
        if let Some(key) = link_key {
            self.hardlinks.insert(key, path.to_owned());
        }
        out.push(Pending::Leaf {
            path: path.to_owned(),
            meta: restorable(&entry.meta),
            node: kind_only(&entry.node),
        });
        Ok(())
    }

    /// Counts an entry the overwrite mode keeps as the target holds it (a file's data as
    /// done, for the progress; with [`Planner::counting_passed`], the files and data below
    /// a directory not restored too). `decision`: the filter's for the entry.
    fn keep(&mut self, entry: &Entry, path: &Path, decision: Decision) {
        self.plan.kept += 1;
        match &entry.node {
            Node::File { extents } => {
                self.plan.files_kept += 1;
                self.batch.skipped_bytes += data_bytes(extents);
            }
            Node::Dir { subtree } => {
                let warning = overwrite::directory_not_restored(path, self.overwrite);
                self.plan.warnings.push(warning);
                if self.count_passed {
                    let (files, bytes) = self.passed_totals(subtree, path, decision);
                    self.batch.passed_files += files;
                    self.batch.skipped_bytes += bytes;
                }
            }
            _ => {}
        }
    }

    /// The regular files and data bytes the filter restores below the directory `subtree`
    /// at `path` (its real path). A hard-linked file's bytes are left out: its other name
    /// may be restored, and count them.
    fn passed_totals(&self, subtree: &BlobId, path: &Path, decision: Decision) -> (u64, u64) {
        let below = path.strip_prefix(&self.plan.root.path).unwrap_or(path);
        let (filter, snapshot_path) = match &self.filter {
            Some((filter, base)) => (Some(*filter), base.join(below)),
            None => (None, Path::new("/").join(below)),
        };
        let mut totals = Totals::new(self.repo, self.index, filter);
        totals.seen = None;
        totals.walk(subtree, &snapshot_path, decision == Decision::Restore);
        (totals.files, totals.bytes)
    }

    /// Counts a file found in place, which is neither read nor written.
    fn left_alone(&mut self, extents: &[Extent]) {
        self.plan.skipped += 1;
        self.plan.skipped_bytes += extents.iter().map(Extent::length).sum::<u64>();
        self.batch.skipped_bytes += data_bytes(extents);
    }

    fn report(&mut self, path: &Path, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => true,
            Err(message) => {
                self.error(path, message);
                false
            }
        }
    }

    /// Leaves a correct existing file alone, or creates the file `name` in `parent` (which
    /// is in `parent_state`) and adds it, with its chunks and metadata, to the batch.
    /// `access` is its path for the system calls that check what is there.
    fn plan_file(
        &mut self,
        extents: &[Extent],
        meta: &Metadata,
        path: &Path,
        access: &Path,
        (parent, parent_state, name): (&DirHandle, DirState, &OsStr),
    ) -> FilePlanned {
        let size = extents.iter().map(Extent::length).sum::<u64>();
        if !parent_state.is_empty() {
            match resume::already_restored(self.repo, access, extents, size) {
                Ok(true) => {
                    self.left_alone(extents);
                    return FilePlanned::LeftAlone;
                }
                Ok(false) => {}
                Err(e) => {
                    self.error(path, format!("could not check the existing file: {e}"));
                    return FilePlanned::Failed;
                }
            }
            if let Err(e) = make_room(access, path, false) {
                self.error(path, format!("could not replace: {e}"));
                return FilePlanned::Failed;
            }
        }
        let permissions = creation_permissions(meta, parent_state);
        let file = match parent.create_file(name, permissions) {
            Ok(file) => file,
            Err(e) => {
                self.io_error(path, "could not create file", e);
                return FilePlanned::Failed;
            }
        };
        // The last chunk's write gives a file its size; one ending in a hole gets it here.
        if !matches!(extents.last(), None | Some(Extent::Chunk { .. }))
            && let Err(e) = platform::punch_hole_or_set_len(&file, size)
        {
            self.io_error(path, &format!("could not set length {size}"), e);
            return FilePlanned::Failed;
        }
        let Ok(number) = u32::try_from(self.batch.files.len()) else {
            self.error(path, "more than 4 billion files in one batch");
            return FilePlanned::Failed;
        };
        let bytes = data_bytes(extents);
        let direct = if bytes >= DIRECT_MIN {
            DirectFile::reopen(&file)
        } else {
            None
        };
        if direct.is_some() {
            allocate_data_runs(&file, extents);
        }
        // Large files are few: the two descriptors of one written directly stay open.
        let keep_open = self.batch.files.len() < self.keep_open
            || path.as_os_str().len() > REOPEN_PATH_MAX
            || direct.is_some();
        let missing = self.batch.packs.add_file(self.index, number, extents);
        self.batch.bytes += bytes;
        if !missing.is_empty()
            && let Err(e) = platform::punch_hole_or_set_len(&file, size)
        {
            self.error(path, format!("could not set length {size}: {e}"));
        }
        let identity = if keep_open { None } else { identity_of(&file) };
        self.batch.files.push(PlannedFile {
            path: path.to_owned(),
            handle: keep_open.then(|| Arc::new(file)),
            size,
            meta: Some(restorable(meta)),
            direct,
            verify_against: self.verify.then(|| extents.to_vec()),
            created_open: permissions != platform::PRIVATE_FILE_MODE,
            identity,
        });
        if !missing.is_empty() {
            self.batch.incomplete.insert(number);
        }
        for message in missing {
            self.error(path, message);
        }
        FilePlanned::Batched
    }
}

/// Bytes of `extents` that are data (holes are never written).
pub(super) fn data_bytes(extents: &[Extent]) -> u64 {
    extents
        .iter()
        .filter(|e| matches!(e, Extent::Chunk { .. }))
        .map(Extent::length)
        .sum()
}

/// The regular files under `tree` that `filter` restores (each name of a hard-linked file
/// counts) and the data bytes a restore writes (a hard-linked file's once), for progress;
/// `base` is the snapshot path of `tree`. A tree that cannot be read is left out (the walk
/// reports it); once `cancel` is, the count stops where it is.
pub(super) fn content_totals(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    filter: &RestoreFilter,
    base: &Path,
    cancel: &Cancel,
) -> (u64, u64) {
    let inside = filter.starts_inside();
    let filter = (!filter.is_everything()).then_some(filter);
    let mut totals = Totals::new(repo, index, filter).stopped_by(cancel);
    totals.walk(tree, &Path::new("/").join(base), inside);
    (totals.files, totals.bytes)
}

/// Counts the regular files and data bytes below trees, as [`content_totals`] does.
struct Totals<'a> {
    repo: &'a Repository,
    index: &'a Index,
    /// What is restored; `None`: everything.
    filter: Option<&'a RestoreFilter>,
    /// Once cancelled, no more trees are read.
    cancel: Option<&'a Cancel>,
    /// Hard-linked inodes whose bytes are counted; `None`: count none of their bytes.
    seen: Option<HashSet<(u64, u64)>>,
    files: u64,
    bytes: u64,
}

impl<'a> Totals<'a> {
    fn new(repo: &'a Repository, index: &'a Index, filter: Option<&'a RestoreFilter>) -> Self {
        Self {
            repo,
            index,
            filter,
            cancel: None,
            seen: Some(HashSet::new()),
            files: 0,
            bytes: 0,
        }
    }

    /// Stops reading trees once `cancel` is.
    fn stopped_by(self, cancel: &'a Cancel) -> Self {
        Self {
            cancel: Some(cancel),
            ..self
        }
    }

    /// Adds what `filter` restores below `tree`, whose snapshot path is `path`; `inside`:
    /// the filter restores everything below `path`.
    fn walk(&mut self, tree: &BlobId, path: &Path, inside: bool) {
        if self.cancel.is_some_and(Cancel::is_cancelled) {
            return;
        }
        let Ok(tree) = self.repo.load_tree(self.index, tree) else {
            return;
        };
        for entry in tree.entries() {
            let is_dir = matches!(entry.node, Node::Dir { .. });
            let child = || path.join(OsStr::from_bytes(&entry.name));
            let decision = match self.filter {
                None => Decision::Restore,
                Some(filter) => filter.decide(&child(), is_dir, inside),
            };
            match (&entry.node, decision) {
                (_, Decision::Skip) => {}
                (Node::Dir { subtree }, _) => {
                    self.walk(subtree, &child(), decision == Decision::Restore);
                }
                (Node::File { extents }, _) => {
                    self.files += 1;
                    let meta = &entry.meta;
                    let counted = match &mut self.seen {
                        _ if meta.nlinks <= 1 => true,
                        Some(seen) => seen.insert((meta.device, meta.inode)),
                        None => false,
                    };
                    if counted {
                        self.bytes += data_bytes(extents);
                    }
                }
                _ => {}
            }
        }
    }
}

/// What the restore knows of a directory it creates entries in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DirState {
    /// There before the restore, and may hold entries: each is checked and, when it must
    /// be, replaced.
    Existing,
    /// There before the restore, empty: nothing to check or replace.
    Empty,
    /// Made by this restore: empty, and closed to all but the restore's user (mode 0700)
    /// until its own metadata is applied, after everything in it.
    Created,
}

impl DirState {
    /// The state of a restore's target directory, which is there before it.
    fn of_target(path: &Path) -> Self {
        if is_empty_dir(path) {
            Self::Empty
        } else {
            Self::Existing
        }
    }

    /// True when the directory holds nothing the restore must check or replace.
    fn is_empty(self) -> bool {
        self != Self::Existing
    }
}

/// The permission bits a restored file is created with: `0600` (no one else may open it
/// while its content is written, since a descriptor opened then keeps its access after the
/// mode changes), or its recorded bits when no one else can reach it before its metadata
/// is applied, which then need not set them again. That is when its directory was made by
/// this restore ([`DirState::Created`]), it has no second name (a hard link in a
/// directory open to others), the restore's user may read and write it (to open it again
/// and read it back), and it has no setuid, setgid or sticky bit (given after its owner).
fn creation_permissions(meta: &Metadata, parent_state: DirState) -> u32 {
    let recorded = meta.mode & 0o7777;
    let unreachable = parent_state == DirState::Created && meta.nlinks <= 1;
    if unreachable && recorded & 0o7000 == 0 && recorded & 0o600 == 0o600 {
        recorded
    } else {
        platform::PRIVATE_FILE_MODE
    }
}

/// True when `path` is a directory with no entries (so a restore into it has nothing to
/// check or replace); false when it cannot be read.
pub(super) fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// True when `a` and `b` are the same inode (a hard link already in place).
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use bunker_repo_format::blob::BlobKind;

    use super::*;

    #[test]
    fn a_chunk_whose_length_differs_from_its_blobs_is_not_placed() {
        let blob = BlobId::from_bytes([7; 32]);
        let mut index = Index::new();
        index.insert(
            blob,
            BlobLocation {
                pack: PackId::from_bytes([1; 32]),
                kind: BlobKind::Data,
                offset: 0,
                length: 140,
                raw_length: 100,
            },
        );
        let chunk = |length| Extent::Chunk { id: blob, length };
        let mut planner = PackPlanner::default();
        // File 0 places the blob at 0 and 100; file 1 claims 50 bytes of it, after 100.
        assert!(
            planner
                .add_file(&index, 0, &[chunk(100), chunk(100)])
                .is_empty()
        );
        let errors = planner.add_file(&index, 1, &[chunk(100), chunk(50)]);
        assert_eq!(
            errors,
            vec![format!(
                "content at offset 100 unusable: the snapshot gives blob {blob} 50 bytes, the \
                 repository holds 100"
            )]
        );
        let work = planner.finish();
        let placements: Vec<(u32, u64)> = work[0].blobs[0]
            .placements
            .iter()
            .map(|p| (p.file, p.offset))
            .collect();
        assert_eq!(placements, vec![(0, 0), (0, 100), (1, 0)]);
    }

    #[test]
    fn files_are_created_with_their_bits_only_where_no_one_else_can_reach_them() {
        let meta = |mode: u32, nlinks: u64| Metadata {
            mode,
            nlinks,
            ..Metadata::default()
        };
        let private = platform::PRIVATE_FILE_MODE;
        for mode in [
            0o600, 0o644, 0o664, 0o666, 0o700, 0o755, 0o777, 0o640, 0o604,
        ] {
            assert_eq!(
                creation_permissions(&meta(mode, 1), DirState::Created),
                mode,
                "{mode:o}"
            );
            for state in [DirState::Existing, DirState::Empty] {
                let got = creation_permissions(&meta(mode, 1), state);
                assert_eq!(got, private, "{mode:o} in a directory open to others");
            }
            let linked = creation_permissions(&meta(mode, 2), DirState::Created);
            assert_eq!(linked, private, "{mode:o} with a second name");
        }
        // Special bits come after the owner; an owner who cannot read and write it could
        // not open it again nor read it back.
        for mode in [
            0o4755, 0o2755, 0o1644, 0o6777, 0o444, 0o400, 0o200, 0o000, 0o070,
        ] {
            let got = creation_permissions(&meta(mode, 1), DirState::Created);
            assert_eq!(got, private, "{mode:o}");
        }
    }

    #[test]
    fn the_first_batches_hold_fewer_files_doubling_up_to_the_full_count() {
        assert_eq!(batch_limits(0), (256, BATCH_BYTES));
        assert_eq!(batch_limits(1), (512, BATCH_BYTES));
        assert_eq!(batch_limits(RAMP_STEPS), (BATCH_FILES, BATCH_BYTES));
        assert_eq!(batch_limits(u32::MAX), (BATCH_FILES, BATCH_BYTES));
    }

    #[test]
    fn files_kept_open_leave_room_for_three_batches_and_the_rest() {
        assert_eq!(files_kept_open(20_000), BATCH_FILES);
        assert_eq!(files_kept_open(u64::MAX), BATCH_FILES);
        assert_eq!(files_kept_open(4096), (4096 - 1024) / 3);
        assert_eq!(files_kept_open(1024), 0);
        assert_eq!(files_kept_open(0), 0);
    }
}
