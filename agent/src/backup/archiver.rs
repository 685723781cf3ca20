//! The archiver: turns a directory walk into tree and data blobs.
//!
//! Files are read into a reused buffer and cut by the repository's chunker; each chunk is
//! hashed at once (its id goes into the tree entry), and chunks the repository does not
//! have yet are queued. The queue is sealed (compressed and encrypted) in parallel on the
//! rayon pool whenever it holds enough bytes, then packed. Trees are written bottom-up.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::Summary;
use bunker_repo_format::tree::{Entry, EntryFlags, Extent, Metadata, Node, Timestamp, Tree};
use bunker_repo_format::{BlobId, BlobKind, BlobWriter, Repository};
use rayon::prelude::*;

use super::{BackupError, Excludes};
use crate::cancel::Cancel;
use crate::platform::{self, Captured, CapturedKind, DirHandle, NameCache};

/// Bytes of new chunks collected before they are sealed in parallel.
const SEAL_BATCH_BYTES: usize = 16 << 20;

/// What the archiver produced besides the root tree.
pub(super) struct Finished {
    pub summary: Summary,
    /// Existing packs the new trees depend on (deduplicated against).
    pub dependencies: HashSet<bunker_repo_format::PackId>,
    pub unreadable: Vec<String>,
    pub changed: Vec<String>,
}

/// A source path, or a directory on the way to one (`/srv` on the way to `/srv/app`).
enum Planned {
    Real(PathBuf),
    Virtual(PathBuf, BTreeMap<Vec<u8>, Planned>),
}

/// The parent snapshot's content for a file that has not changed since: same size,
/// modification and status-change times, inode and device, and stored completely then.
fn unchanged_content(parent: Option<&Entry>, now: &Metadata, size: u64) -> Option<Vec<Extent>> {
    let parent = parent?;
    let Node::File { extents } = &parent.node else {
        return None;
    };
    let was = &parent.meta;
    let same = parent.size() == size
        && was.mtime == now.mtime
        && was.ctime == now.ctime
        && was.inode == now.inode
        && was.device == now.device
        && was.flags & (EntryFlags::CHANGED_DURING_BACKUP | EntryFlags::INCOMPLETE) == 0;
    same.then(|| extents.clone())
}

/// Why reading a file's chunks stopped: the file itself, or the repository/cancellation.
enum ChunkFailure {
    Io(io::Error),
    Backup(BackupError),
}

impl From<io::Error> for ChunkFailure {
    fn from(e: io::Error) -> Self {
        ChunkFailure::Io(e)
    }
}

pub(super) struct Archiver<'a> {
    writer: BlobWriter<'a>,
    repo: &'a Repository,
    index: &'a Index,
    excludes: &'a Excludes,
    cancel: &'a Cancel,
    with_atime: bool,
    names: NameCache,
    pending: Vec<(BlobId, Vec<u8>)>,
    pending_ids: HashSet<BlobId>,
    pending_bytes: usize,
    buffer: Vec<u8>,
    summary: Summary,
    unreadable: Vec<String>,
    changed: Vec<String>,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl<'a> Archiver<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a Index,
        excludes: &'a Excludes,
        cancel: &'a Cancel,
        with_atime: bool,
    ) -> Self {
        Self {
            writer: repo.blob_writer(index),
            repo,
            index,
            excludes,
            cancel,
            with_atime,
            names: NameCache::new(),
            pending: Vec::new(),
            pending_ids: HashSet::new(),
            pending_bytes: 0,
            buffer: Vec::new(),
            summary: Summary::default(),
            unreadable: Vec::new(),
            changed: Vec::new(),
        }
    }

    /// Never deduplicates against blobs in `packs` (condemned by a GC plan, or missing).
    pub(super) fn exclude_packs(
        &mut self,
        packs: impl IntoIterator<Item = bunker_repo_format::PackId>,
    ) {
        self.writer.exclude_packs(packs);
    }

    pub(super) fn session(&self) -> &bunker_repo_format::crypto::SealingSession {
        self.writer.session()
    }

    /// Seals what is queued, uploads the open packs and writes their index segment.
    pub(super) fn finish(mut self) -> Result<Finished, BackupError> {
        self.seal_pending()?;
        let dependencies = self.writer.dependencies().clone();
        let (stats, _) = self.writer.finish()?;
        let mut summary = self.summary;
        summary.bytes_added = stats.bytes_added;
        summary.bytes_stored = stats.bytes_stored;
        summary.data_blobs_added = stats.data_blobs;
        summary.tree_blobs_added = stats.tree_blobs;
        summary.errors = self.unreadable.len() as u64;
        Ok(Finished {
            summary,
            dependencies,
            unreadable: self.unreadable,
            changed: self.changed,
        })
    }

    /// Archives every source path under one root tree that mirrors their absolute paths.
    ///
    /// `parent_root` is the root tree of the parent snapshot: files whose size, mtime,
    /// ctime, inode and device match their entry there are not read again.
    pub(super) fn archive_roots(
        &mut self,
        paths: &[PathBuf],
        parent_root: Option<BlobId>,
    ) -> Result<BlobId, BackupError> {
        if paths.iter().any(|p| p.parent().is_none()) {
            let mut meta = Metadata::default();
            let root = Path::new("/");
            return self.archive_dir_contents(root, root, &mut meta, parent_root);
        }
        let mut root: BTreeMap<Vec<u8>, Planned> = BTreeMap::new();
        'paths: for path in paths {
            let components: Vec<&std::ffi::OsStr> = path
                .components()
                .filter_map(|c| match c {
                    std::path::Component::Normal(name) => Some(name),
                    _ => None,
                })
                .collect();
            let mut level = &mut root;
            let mut so_far = PathBuf::from("/");
            for (i, name) in components.iter().enumerate() {
                so_far.push(name);
                let key = name.as_bytes().to_vec();
                if i + 1 == components.len() {
                    level.insert(key, Planned::Real(so_far.clone()));
                    continue 'paths;
                }
                let slot = level
                    .entry(key)
                    .or_insert_with(|| Planned::Virtual(so_far.clone(), BTreeMap::new()));
                match slot {
                    Planned::Real(_) => continue 'paths,
                    Planned::Virtual(_, children) => level = children,
                }
            }
        }
        let parent = self.parent_tree(parent_root);
        let entries = self.archive_planned(root, parent.as_ref())?;
        self.store_tree(entries)
    }

    /// Loads a tree of the parent snapshot; an unreadable one just means reading again.
    fn parent_tree(&self, id: Option<BlobId>) -> Option<Tree> {
        id.and_then(|id| self.repo.load_tree(self.index, &id).ok())
    }

    fn archive_planned(
        &mut self,
        planned: BTreeMap<Vec<u8>, Planned>,
        parent: Option<&Tree>,
    ) -> Result<Vec<Entry>, BackupError> {
        let mut entries = Vec::with_capacity(planned.len());
        for (name, item) in planned {
            let parent_entry = parent.and_then(|tree| tree.get(&name));
            match item {
                Planned::Real(path) => {
                    if let Some(entry) = self.archive_entry(&path, &path, name, parent_entry)? {
                        entries.push(entry);
                    }
                }
                Planned::Virtual(path, children) => {
                    let mut captured = match platform::capture(&path, &self.names) {
                        Ok(captured) => captured,
                        Err(e) => {
                            self.unreadable(&path, &e.to_string());
                            continue;
                        }
                    };
                    if !self.with_atime {
                        captured.meta.atime = Timestamp::default();
                    }
                    let parent_subtree = match parent_entry.map(|e| &e.node) {
                        Some(Node::Dir { subtree }) => self.parent_tree(Some(*subtree)),
                        _ => None,
                    };
                    let children = self.archive_planned(children, parent_subtree.as_ref())?;
                    let subtree = self.store_tree(children)?;
                    self.summary.dirs += 1;
                    entries.push(Entry {
                        name,
                        meta: captured.meta,
                        node: Node::Dir { subtree },
                    });
                }
            }
        }
        Ok(entries)
    }

    fn unreadable(&mut self, path: &Path, reason: &str) {
        let message = if reason.contains(&display(path)) {
            reason.to_owned()
        } else {
            format!("{}: {reason}", display(path))
        };
        self.unreadable.push(message);
    }

    /// Archives one entry; `None` when it could not be read and is left out.
    ///
    /// `path` is the entry's real path (for messages and the tree); `access` is the path to
    /// use in system calls (see [`DirHandle`]).
    fn archive_entry(
        &mut self,
        path: &Path,
        access: &Path,
        name: Vec<u8>,
        parent: Option<&Entry>,
    ) -> Result<Option<Entry>, BackupError> {
        if self.cancel.is_cancelled() {
            return Err(BackupError::Interrupted);
        }
        let Captured {
            mut meta,
            kind,
            warnings,
        } = match platform::capture(access, &self.names) {
            Ok(captured) => captured,
            Err(e) => {
                self.unreadable(path, &format!("could not {} it: {}", e.op, e.source));
                return Ok(None);
            }
        };
        for warning in warnings {
            self.unreadable(
                path,
                &format!("could not {} it: {}", warning.op, warning.message),
            );
        }
        if !self.with_atime {
            meta.atime = Timestamp::default();
        }
        let node = match kind {
            CapturedKind::File { size } => match unchanged_content(parent, &meta, size)
                .filter(|extents| self.all_stored(extents))
            {
                Some(extents) => {
                    self.summary.files += 1;
                    self.summary.files_unchanged += 1;
                    self.summary.bytes += size;
                    Node::File { extents }
                }
                None => match self.archive_file(path, access, size, &mut meta) {
                    Ok(node) => {
                        if parent.is_some() {
                            self.summary.files_changed += 1;
                        } else {
                            self.summary.files_new += 1;
                        }
                        node
                    }
                    Err(e) if matches!(e, BackupError::Interrupted) => return Err(e),
                    Err(BackupError::Source { source, .. }) => {
                        self.unreadable(path, &source.to_string());
                        return Ok(None);
                    }
                    Err(e) => return Err(e),
                },
            },
            CapturedKind::Dir => {
                self.summary.dirs += 1;
                let parent_subtree = match parent.map(|e| &e.node) {
                    Some(Node::Dir { subtree }) => Some(*subtree),
                    _ => None,
                };
                Node::Dir {
                    subtree: self.archive_dir_contents(path, access, &mut meta, parent_subtree)?,
                }
            }
            CapturedKind::Symlink { target } => Node::Symlink { target },
            CapturedKind::Fifo => Node::Fifo,
            CapturedKind::Socket => Node::Socket,
            CapturedKind::CharDevice { rdev } => Node::CharDevice { rdev },
            CapturedKind::BlockDevice { rdev } => Node::BlockDevice { rdev },
        };
        if !matches!(node, Node::File { .. } | Node::Dir { .. }) {
            self.summary.others += 1;
        }
        Ok(Some(Entry { name, meta, node }))
    }

    /// Archives a directory's entries and stores its tree. A directory that cannot be
    /// listed is stored empty and flagged incomplete.
    fn archive_dir_contents(
        &mut self,
        path: &Path,
        access: &Path,
        meta: &mut Metadata,
        parent: Option<BlobId>,
    ) -> Result<BlobId, BackupError> {
        let parent = self.parent_tree(parent);
        let mut names: Vec<Vec<u8>> = Vec::new();
        let mut handle = None;
        let listing = DirHandle::open(access).and_then(|opened| {
            handle = Some(opened);
            std::fs::read_dir(access)
        });
        let listing = listing.and_then(|entries| {
            for entry in entries {
                names.push(entry?.file_name().as_bytes().to_vec());
            }
            Ok(())
        });
        if let Err(e) = listing {
            self.unreadable(path, &format!("could not list directory: {e}"));
            meta.flags |= EntryFlags::INCOMPLETE;
            names.clear();
        }
        names.sort();
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let os_name = std::ffi::OsStr::from_bytes(&name);
            let child = path.join(os_name);
            if self.excludes.is_excluded(&child) {
                continue;
            }
            let child_access = match &handle {
                Some(handle) => handle.child(&child, os_name),
                None => child.clone(),
            };
            let parent_entry = parent.as_ref().and_then(|tree| tree.get(&name));
            if let Some(entry) =
                self.archive_entry(&child, &child_access, name.clone(), parent_entry)?
            {
                entries.push(entry);
            }
        }
        self.store_tree(entries)
    }

    /// True when every chunk of `extents` is in the repository (or queued in this session),
    /// so content taken from the parent snapshot is complete.
    fn all_stored(&mut self, extents: &[Extent]) -> bool {
        let mut all = true;
        for extent in extents {
            if let Extent::Chunk { id, .. } = extent {
                all &= self.pending_ids.contains(id) || self.writer.reuse(id);
            }
        }
        all
    }

    fn store_tree(&mut self, entries: Vec<Entry>) -> Result<BlobId, BackupError> {
        let tree = Tree::new(entries).map_err(|e| {
            bunker_repo_format::Error::Invalid(format!("could not build a tree: {e}"))
        })?;
        let (id, _) = self.writer.add(BlobKind::Tree, &tree.encode())?;
        Ok(id)
    }

    /// Reads a regular file's data regions into chunks; holes become hole extents.
    fn archive_file(
        &mut self,
        path: &Path,
        access: &Path,
        size: u64,
        meta: &mut Metadata,
    ) -> Result<Node, BackupError> {
        let source_error = |source: io::Error| BackupError::Source {
            path: path.to_owned(),
            source,
        };
        let mut file = platform::open_for_backup(access).map_err(source_error)?;
        let regions = platform::data_regions(&file, size).map_err(source_error)?;
        let mut extents = Vec::new();
        let mut position = 0u64;
        let mut short_read = false;
        for region in regions {
            if region.start > position {
                extents.push(Extent::Hole {
                    length: region.start - position,
                });
            }
            file.seek(SeekFrom::Start(region.start))
                .map_err(source_error)?;
            let region_length = region.end - region.start;
            let mut chunks = Vec::new();
            let chunker = self.repo.chunker().clone();
            let mut buffer = std::mem::take(&mut self.buffer);
            let read = chunker.chunk_reader::<_, ChunkFailure>(
                &mut file,
                region_length,
                &mut buffer,
                |chunk| {
                    if self.cancel.is_cancelled() {
                        return Err(ChunkFailure::Backup(BackupError::Interrupted));
                    }
                    let id = self.repo.blob_id(chunk);
                    chunks.push((id, chunk.len() as u32));
                    self.queue(id, chunk).map_err(ChunkFailure::Backup)
                },
            );
            self.buffer = buffer;
            let read = match read {
                Ok(read) => read,
                Err(ChunkFailure::Io(e)) => return Err(source_error(e)),
                Err(ChunkFailure::Backup(e)) => return Err(e),
            };
            extents.extend(
                chunks
                    .into_iter()
                    .map(|(id, length)| Extent::Chunk { id, length }),
            );
            self.summary.bytes_read += read;
            position = region.start + read;
            if read < region_length {
                short_read = true;
                break;
            }
        }
        if !short_read && position < size {
            extents.push(Extent::Hole {
                length: size - position,
            });
            position = size;
        }
        self.summary.files += 1;
        self.summary.bytes += position;
        if short_read || platform::changed_since(&file, size, meta).map_err(source_error)? {
            meta.flags |= EntryFlags::CHANGED_DURING_BACKUP;
            self.changed.push(display(path));
        }
        Ok(Node::File { extents })
    }

    /// Queues a chunk for sealing unless the repository or the queue has it already.
    fn queue(&mut self, id: BlobId, chunk: &[u8]) -> Result<(), BackupError> {
        if self.writer.reuse(&id) || !self.pending_ids.insert(id) {
            return Ok(());
        }
        self.pending.push((id, chunk.to_vec()));
        self.pending_bytes += chunk.len();
        if self.pending_bytes >= SEAL_BATCH_BYTES {
            self.seal_pending()?;
        }
        Ok(())
    }

    /// Seals the queued chunks on the rayon pool and adds them to packs, in queue order.
    fn seal_pending(&mut self) -> Result<(), BackupError> {
        let pending = std::mem::take(&mut self.pending);
        let writer = &self.writer;
        let sealed: Vec<_> = pending
            .par_iter()
            .map(|(id, data)| writer.seal(BlobKind::Data, *id, data))
            .collect();
        for blob in sealed {
            self.writer.add_sealed(blob)?;
        }
        self.pending_ids.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}
