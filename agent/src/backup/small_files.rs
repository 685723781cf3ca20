//! Small files are opened, read, chunked and hashed a group at a time, by the walking thread
//! and by pool threads that are idle meanwhile ([`share`]).
//!
//! A tree of small files costs the walk a dozen system calls and a hash per file; done on
//! one thread, that starves the pool that compresses and seals (docs/PERFORMANCE.md,
//! "Session 9": the walking thread used 3.0 of 13.7 CPU seconds of a Linux-source backup,
//! and the pool went idle while it read). The walk reads a directory's small files that
//! need reading in groups of at most [`GROUP_BYTES`]; each comes back with its chunks' ids
//! and bytes, and the walk claims and queues them in directory order, so which file stores
//! a shared chunk stays deterministic. A group's bytes are all the memory this stage holds
//! beyond one [`SMALL_FILE`]-sized read buffer per thread.

use std::cell::RefCell;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bunker_repo_format::BlobId;
use bunker_repo_format::tree::{Extent, Metadata};

use super::BackupError;
use super::read::{Chunking, ReadFailure, ReadFile, read_file};
use super::shared_work::share;
use crate::cancel::Cancel;
use crate::platform::{self, DirHandle};

/// Files of at most this many bytes are read in groups; larger ones one at a time by the
/// walking thread, which cuts a large one in parallel segments itself (see [`super::read`]).
pub(super) const SMALL_FILE: u64 = 1 << 20;

/// A group holds files of at most this many bytes in all (at least one file).
pub(super) const GROUP_BYTES: u64 = 4 << 20;

/// One small file to read.
pub(super) struct SmallFile {
    /// The path to open (see [`platform::DirHandle`]).
    pub access: PathBuf,
    /// Its directory, open, and its name there: it is opened relative to the directory.
    pub at: Option<(Arc<DirHandle>, OsString)>,
    /// Its size when its metadata was captured.
    pub size: u64,
    /// The captured identity it is compared with once read (live device number, inode,
    /// modification and status-change times), to tell whether it changed meanwhile.
    pub identity: Metadata,
}

/// A small file as read.
pub(super) struct SmallRead {
    /// Its extents, as [`read_file`] gives them.
    pub read: ReadFile,
    /// The bytes of its chunk extents, one after another.
    pub data: Vec<u8>,
    /// It changed (or shrank) while it was read.
    pub changed: bool,
}

impl SmallRead {
    /// The id of the file's one chunk when that chunk is the whole file (no holes): its
    /// bytes are [`Self::data`], which can then be handed on without a copy.
    pub(super) fn whole_file_chunk(&self) -> Option<BlobId> {
        match self.read.extents.as_slice() {
            [Extent::Chunk { id, length }] if *length as usize == self.data.len() => Some(*id),
            _ => None,
        }
    }

    /// Each chunk's id and bytes, in order.
    pub(super) fn chunks(&self) -> impl Iterator<Item = (BlobId, &[u8])> {
        let mut offset = 0usize;
        self.read
            .extents
            .iter()
            .filter_map(move |extent| match extent {
                Extent::Chunk { id, length } => {
                    let start = offset;
                    offset += *length as usize;
                    Some((*id, &self.data[start..offset]))
                }
                Extent::Hole { .. } => None,
            })
    }
}

thread_local! {
    /// Each reading thread's buffer, reused (at most [`SMALL_FILE`] bytes).
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Splits `sizes` (of the files to read, in order) into consecutive groups of at most
/// [`GROUP_BYTES`] bytes, each with at least one file.
pub(super) fn groups(sizes: &[u64]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for (i, &size) in sizes.iter().enumerate() {
        if i > start && bytes + size > GROUP_BYTES {
            groups.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < sizes.len() {
        groups.push(start..sizes.len());
    }
    groups
}

/// Reads groups of small files; cheap to clone (pool threads hold a clone while they help).
#[derive(Clone)]
pub(super) struct SmallFileReader {
    chunking: Arc<Chunking>,
    cancel: Cancel,
    /// Set by a later stage that failed.
    failed: Arc<AtomicBool>,
}

impl SmallFileReader {
    /// Reads with `chunking` until `cancel` or `failed` is set.
    pub(super) fn new(chunking: Chunking, cancel: Cancel, failed: Arc<AtomicBool>) -> Self {
        Self {
            chunking: Arc::new(chunking),
            cancel,
            failed,
        }
    }

    /// Reads every file of `group`; results in the group's order. Once the backup is
    /// stopped, the files not read yet fail with [`BackupError::Interrupted`].
    pub(super) fn read_group(
        &self,
        group: Vec<SmallFile>,
    ) -> Vec<Result<SmallRead, ReadFailure<BackupError>>> {
        let reader = self.clone();
        share(group, move |file| reader.read(file))
    }

    fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.failed.load(Ordering::Relaxed)
    }

    fn read(&self, small: &SmallFile) -> Result<SmallRead, ReadFailure<BackupError>> {
        if self.stopped() {
            return Err(ReadFailure::Consumer(BackupError::Interrupted));
        }
        let at = small
            .at
            .as_ref()
            .map(|(dir, name)| (dir.fd(), name.as_os_str()));
        let mut file = platform::open_for_backup_at(&small.access, at)?;
        let mut data = Vec::with_capacity(usize::try_from(small.size).unwrap_or(0));
        let read = BUFFER.with_borrow_mut(|buffer| {
            read_file(&self.chunking, &mut file, small.size, buffer, |_, chunk| {
                if self.stopped() {
                    return Err(BackupError::Interrupted);
                }
                data.extend_from_slice(chunk);
                Ok(())
            })
        })?;
        let changed =
            read.short || platform::changed_since(&file.file, small.size, &small.identity)?;
        Ok(SmallRead {
            read,
            data,
            changed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File};
    use std::os::unix::fs::FileExt;
    use std::path::Path;

    use super::*;
    use crate::backup::read::tests::small_chunks_repo;
    use crate::platform::NameCache;

    /// The file at `path` as the walk hands it over: its identity as captured now.
    fn small_file(path: &Path) -> SmallFile {
        let meta = platform::capture(path, &NameCache::new())
            .expect("capture")
            .meta;
        let dir = DirHandle::open(path.parent().expect("parent")).expect("open directory");
        let name = path.file_name().expect("name").to_owned();
        SmallFile {
            access: path.to_owned(),
            at: Some((Arc::new(dir), name)),
            size: fs::metadata(path).expect("stat").len(),
            identity: Metadata {
                device: meta.device,
                inode: meta.inode,
                mtime: meta.mtime,
                ctime: meta.ctime,
                ..Metadata::default()
            },
        }
    }

    /// The file's bytes as its extents describe them: chunks from `data`, holes as zeros.
    fn rebuilt(read: &SmallRead) -> Vec<u8> {
        let mut chunks = read.chunks();
        let mut bytes = Vec::new();
        for extent in &read.read.extents {
            match extent {
                Extent::Chunk { .. } => {
                    bytes.extend_from_slice(chunks.next().expect("a chunk per chunk extent").1)
                }
                Extent::Hole { length } => bytes.resize(bytes.len() + *length as usize, 0),
            }
        }
        assert!(chunks.next().is_none(), "more chunks than chunk extents");
        bytes
    }

    #[test]
    fn a_group_is_read_whole_in_order_with_what_changed_or_failed_told_apart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let dir = tmp.path().join("src");
        fs::create_dir_all(&dir).expect("src");
        // Several chunks of the test repository (16-256 KiB), an empty file, a sparse one.
        let mut contents: Vec<(String, Vec<u8>)> = Vec::new();
        for (i, len) in [900usize << 10, 0, 1, 300 << 10].into_iter().enumerate() {
            let bytes = crate::backup::read::test_common::noise(len, i as u64 + 11);
            fs::write(dir.join(format!("f{i}")), &bytes).expect("write");
            contents.push((format!("f{i}"), bytes));
        }
        let sparse = File::create(dir.join("sparse")).expect("sparse");
        sparse.set_len(SMALL_FILE).expect("set_len");
        sparse
            .write_all_at(&[7u8; 64 << 10], 512 << 10)
            .expect("write region");
        drop(sparse);
        contents.push((
            "sparse".to_owned(),
            fs::read(dir.join("sparse")).expect("read sparse"),
        ));
        let mut group: Vec<SmallFile> = contents
            .iter()
            .map(|(name, _)| small_file(&dir.join(name)))
            .collect();
        // Changed since it was captured (its recorded modification time is older).
        let mut stale = small_file(&dir.join("f3"));
        stale.identity.mtime.sec -= 10;
        group.push(stale);
        // Gone since it was listed.
        group.push(SmallFile {
            access: dir.join("gone"),
            at: None,
            size: 10,
            identity: Metadata::default(),
        });

        let failed = Arc::new(AtomicBool::new(false));
        let reader = SmallFileReader::new(Chunking::of(&repo), Cancel::new(), failed);
        let results = reader.read_group(group);
        assert_eq!(results.len(), contents.len() + 2);
        for ((name, bytes), result) in contents.iter().zip(&results) {
            let Ok(read) = result else {
                panic!("{name} could not be read")
            };
            assert!(rebuilt(read) == *bytes, "{name}: bytes differ");
            assert_eq!(read.read.length, bytes.len() as u64, "{name}");
            assert!(!read.changed, "{name} did not change");
            for (id, chunk) in read.chunks() {
                assert_eq!(id, repo.blob_id(chunk), "{name}: chunk id");
            }
        }
        let Ok(first) = &results[0] else {
            panic!("f0 could not be read")
        };
        assert!(first.chunks().count() > 1, "900 KiB is several test chunks");
        let Ok(stale) = &results[contents.len()] else {
            panic!("the stale file could not be read")
        };
        assert!(stale.changed, "a changed identity is told");
        assert!(rebuilt(stale) == contents[3].1);
        assert!(matches!(
            &results[contents.len() + 1],
            Err(ReadFailure::Io(e)) if e.kind() == std::io::ErrorKind::NotFound
        ));

        // A stopped backup reads nothing more.
        let cancel = Cancel::new();
        cancel.cancel();
        let stopped = SmallFileReader::new(
            Chunking::of(&repo),
            cancel,
            Arc::new(AtomicBool::new(false)),
        );
        let results = stopped.read_group(vec![
            small_file(&dir.join("f0")),
            small_file(&dir.join("f1")),
        ]);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(ReadFailure::Consumer(BackupError::Interrupted))))
        );
    }

    #[test]
    fn groups_stay_within_their_bytes_and_keep_every_file_in_order() {
        let mib = 1u64 << 20;
        assert!(groups(&[]).is_empty());
        assert_eq!(groups(&[0, 0, 0]), vec![0..3]);
        assert_eq!(groups(&[mib; 9]), vec![0..4, 4..8, 8..9]);
        // A file over the group size still gets a group of its own.
        assert_eq!(groups(&[1, GROUP_BYTES + 1, 1]), vec![0..1, 1..2, 2..3]);
        assert_eq!(groups(&[3 * mib, mib, 1]), vec![0..2, 2..3]);
    }
}
