//! The walk stage: turns a directory walk into tree entries, in a deterministic order.
//!
//! A directory is listed and its entries' metadata captured ([`super::listing`], mostly
//! ahead of the walk by the [prefetcher](super::prefetch)), and each file is taken from the
//! parent snapshot or the [files cache](super::files_cache) when its identity is unchanged.
//! The directory's small files that need reading are then
//! [read in groups](super::small_files), and its subdirectories and large files
//! [read](super::read) in name order. The [dedup](super::dedup) stage claims new chunks in
//! that order and the [seal](super::seal) stage compresses and seals them on the rayon pool
//! while the walk goes on. Trees are written bottom-up, sealed here (they are small) and
//! sent to the [pack](super::pack) stage too.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::Summary;
use bunker_repo_format::tree::{Entry, EntryFlags, Extent, Metadata, Node, Timestamp, Tree};
use bunker_repo_format::{BlobId, BlobKind, Repository};

use super::dedup::Dedup;
use super::files_cache::{FileKey, FilesCache};
use super::fixed_chunks::FixedChunks;
use super::listing::{Lister, Listing, subtree_of};
use super::prefetch::{self, Prefetcher};
use super::racy::Settled;
use super::read::{Chunking, ReadFailure, ReadFile, read_file};
use super::seal::Sealer;
use super::small_files::{self, SMALL_FILE, SmallFile, SmallFileReader};
use super::{BackupError, ChangeDetection, Excludes, ReadFrom, TagFile};
use crate::cancel::Cancel;
use crate::deep_stack::MAX_TREE_DEPTH;
use crate::platform::{self, Captured, CapturedKind, DirHandle, NameCache};
use crate::progress::Progress;

/// What the walk produced besides the root tree.
pub(super) struct Finished {
    pub summary: Summary,
    /// Existing packs the new trees depend on (deduplicated against).
    pub dependencies: HashSet<bunker_repo_format::PackId>,
    pub unreadable: Vec<String>,
    pub changed: Vec<String>,
    /// Files read that were cut as disk images.
    pub disk_images: Vec<String>,
    pub mount_points: Vec<String>,
    /// The files cache to save once the snapshot is written.
    pub files_cache: FilesCache,
    /// Every source path's entry (and so all below it) is the parent snapshot's; the
    /// directories on the way to them may differ.
    pub paths_unchanged: bool,
}

/// The stages and state the walk feeds.
pub(super) struct Stages<'a> {
    pub dedup: Dedup<'a>,
    pub sealer: &'a mut Sealer,
    pub files_cache: FilesCache,
    /// Set by a later stage that failed: the walk stops.
    pub failed: Arc<AtomicBool>,
    pub progress: Option<Arc<Progress>>,
    /// Told of each file read.
    pub files_read: Option<super::FileSink>,
}

/// A source path, or a directory on the way to one (`/srv` on the way to `/srv/app`).
enum Planned {
    Real(PathBuf),
    Virtual(PathBuf, BTreeMap<Vec<u8>, Planned>),
}

/// The parent snapshot's content for a file that has not changed since (same size,
/// modification and status-change times, inode and device, as far as `detection` compares
/// them) and was stored completely then.
fn unchanged_content(
    parent: Option<&Entry>,
    now: &Metadata,
    size: u64,
    detection: ChangeDetection,
    settled: &Settled,
) -> Option<Vec<Extent>> {
    let parent = parent?;
    let Node::File { extents } = &parent.node else {
        return None;
    };
    let was = FileKey::new(&parent.meta, parent.size());
    let complete =
        parent.meta.flags & (EntryFlags::CHANGED_DURING_BACKUP | EntryFlags::INCOMPLETE) == 0;
    (complete
        && settled.trusted_in_parent(&parent.meta)
        && was.unchanged_as(&FileKey::new(now, size), detection))
    .then(|| extents.clone())
}

pub(super) struct Archiver<'a> {
    stages: Stages<'a>,
    repo: &'a Repository,
    index: &'a Index,
    excludes: &'a Excludes,
    cancel: &'a Cancel,
    with_atime: bool,
    names: Arc<NameCache>,
    chunking: Chunking,
    small_files: SmallFileReader,
    buffer: Vec<u8>,
    summary: Summary,
    unreadable: Vec<String>,
    changed: Vec<String>,
    disk_images: Vec<String>,
    /// Directories recorded empty because they are on another filesystem.
    skipped_mounts: Vec<String>,
    /// False once a source path's entry differs from the parent snapshot's.
    paths_unchanged: bool,
    read_from: Option<ReadFrom>,
    /// The recorded path of the entry holding `read_from`'s snapshot, never archived.
    hidden: Option<PathBuf>,
    /// Directories on another filesystem than their source path's are recorded empty.
    one_file_system: bool,
    /// The live device of the source path being archived (with `one_file_system`).
    source_device: Option<u64>,
    /// Source paths below another source path (`/home` in `/ /home`): the walk reaches
    /// them inside the outer one's tree, where each is still a path named to back up,
    /// whatever its size or filesystem.
    nested_sources: HashSet<PathBuf>,
    /// Depth in the snapshot of the tree being built (the root tree's is 0).
    depth: usize,
    /// Directories holding one of these files are left out.
    tag_files: &'a [TagFile],
    /// Regular files larger than this are left out.
    largest_file: Option<u64>,
    /// What tells a file unchanged since the parent snapshot or the files cache.
    detection: ChangeDetection,
    /// Which recorded identities are old enough to trust (see [`super::racy`]).
    settled: Settled,
    /// Lists subdirectories ahead of the walk, while it walks.
    prefetcher: Option<Arc<Prefetcher>>,
}

/// Threads that list directories ahead of the walk, at most (and no more than the rayon
/// pool has): listing a directory is mostly system calls, which run side by side.
const LISTING_THREADS: usize = 4;

fn display(path: &Path) -> String {
    path.display().to_string()
}

impl<'a> Archiver<'a> {
    pub(super) fn new(
        repo: &'a Repository,
        index: &'a Index,
        stages: Stages<'a>,
        excludes: &'a Excludes,
        cancel: &'a Cancel,
        with_atime: bool,
    ) -> Self {
        let chunking = Chunking::of(repo).sharing_the_pool_with(stages.sealer.load());
        let small_files =
            SmallFileReader::new(chunking.clone(), cancel.clone(), Arc::clone(&stages.failed));
        Self {
            stages,
            repo,
            index,
            excludes,
            cancel,
            with_atime,
            names: Arc::new(NameCache::new()),
            chunking,
            small_files,
            buffer: Vec::new(),
            summary: Summary::default(),
            unreadable: Vec::new(),
            changed: Vec::new(),
            disk_images: Vec::new(),
            skipped_mounts: Vec::new(),
            paths_unchanged: true,
            read_from: None,
            hidden: None,
            one_file_system: false,
            source_device: None,
            nested_sources: HashSet::new(),
            depth: 0,
            tag_files: &[],
            largest_file: None,
            detection: ChangeDetection::default(),
            settled: Settled::default(),
            prefetcher: None,
        }
    }

    /// Tells unchanged files as `detection` says.
    pub(super) fn detecting_changes(mut self, detection: ChangeDetection) -> Self {
        self.detection = detection;
        self
    }

    /// Trusts recorded identities as far as `settled` says (see [`super::racy`]).
    pub(super) fn trusting_timestamps(mut self, settled: Settled) -> Self {
        self.settled = settled;
        self
    }

    /// Cuts the files it reads into fixed chunks of this size, when given.
    pub(super) fn cutting_fixed_chunks(mut self, fixed: Option<FixedChunks>) -> Self {
        self.chunking = self.chunking.cutting_fixed_chunks(fixed);
        self.small_files = SmallFileReader::new(
            self.chunking.clone(),
            self.cancel.clone(),
            Arc::clone(&self.stages.failed),
        );
        self
    }

    /// Cuts files recognised as disk images by content, as other files, when
    /// `by_content`; otherwise at the repository's volume chunk size. (The small files read
    /// beside the walk are never taken for images: they are under the smallest image size.)
    pub(super) fn cutting_images_by_content(mut self, by_content: bool) -> Self {
        if by_content {
            self.chunking = self.chunking.cutting_images_by_content();
        }
        self
    }

    /// Leaves out the directories that hold one of `tag_files`.
    pub(super) fn leaving_out_dirs_tagged(mut self, tag_files: &'a [TagFile]) -> Self {
        self.tag_files = tag_files;
        self
    }

    /// Leaves out regular files larger than `limit` bytes, when given.
    pub(super) fn leaving_out_files_larger_than(mut self, limit: Option<u64>) -> Self {
        self.largest_file = limit;
        self
    }

    /// Does not descend into directories on another filesystem than their source path's.
    pub(super) fn staying_on_one_filesystem(mut self, one_file_system: bool) -> Self {
        self.one_file_system = one_file_system;
        self
    }

    /// True when `child`, a directory, is on another filesystem than its source path (whose
    /// device the first directory after [`Self::archive_entry`] of a source path sets).
    fn crosses_filesystems(&mut self, child: &Child<'_>) -> bool {
        if !self.one_file_system {
            return false;
        }
        match self.source_device {
            None => {
                self.source_device = Some(child.live_device);
                false
            }
            Some(device) => device != child.live_device,
        }
    }

    /// True when `path` is a source path below another one (see `nested_sources`).
    fn is_nested_source(&self, path: &Path) -> bool {
        !self.nested_sources.is_empty() && self.nested_sources.contains(path)
    }

    /// Reads from a filesystem snapshot instead of the live tree (see [`ReadFrom`]).
    pub(super) fn reading_from(mut self, read_from: Option<ReadFrom>) -> Self {
        self.hidden = read_from.as_ref().and_then(ReadFrom::hidden);
        self.read_from = read_from;
        self
    }

    /// The path to read the entry recorded at `path` from.
    fn access_path(&self, path: &Path) -> PathBuf {
        match &self.read_from {
            Some(read_from) => read_from.access_path(path),
            None => path.to_path_buf(),
        }
    }

    /// The device number to record and compare for an entry captured with `device`.
    fn recorded_device(&self, device: u64) -> u64 {
        self.read_from.as_ref().map_or(device, |r| r.device)
    }

    /// Sends what is queued to the seal stage and waits until it left the pool. The pack
    /// stage ends once the caller drops its own sender too.
    pub(super) fn finish(self) -> Finished {
        self.stages.sealer.finish();
        let mut summary = self.summary;
        summary.errors = self.unreadable.len() as u64;
        Finished {
            summary,
            dependencies: self.stages.dedup.into_dependencies(),
            unreadable: self.unreadable,
            changed: self.changed,
            disk_images: self.disk_images,
            mount_points: self.skipped_mounts,
            files_cache: self.stages.files_cache,
            paths_unchanged: self.paths_unchanged,
        }
    }

    fn stopped(&self) -> bool {
        self.cancel.is_cancelled() || self.stages.failed.load(Ordering::Relaxed)
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
        let lister = Lister {
            share_captures: false,
            ..self.lister()
        };
        let tag_files = self.tag_files;
        let prefetcher = Arc::new(Prefetcher::new(self.stages.sealer.load()));
        std::thread::scope(|scope| {
            // Closed on every way out of the walk, so that the scope's join returns.
            let _closing = prefetcher.closing();
            for _ in 0..LISTING_THREADS.min(rayon::current_num_threads()) {
                let serving = std::thread::Builder::new()
                    .name("bunker-list".to_owned())
                    .spawn_scoped(scope, || prefetcher.serve(&lister, tag_files));
                // Without a listing thread, the walk lists every directory itself.
                if serving.is_ok() {
                    self.prefetcher = Some(Arc::clone(&prefetcher));
                }
            }
            let tree = self.walk_roots(paths, parent_root);
            self.prefetcher = None;
            tree
        })
    }

    /// What listing a directory reads from (see [`Lister`]).
    fn lister(&self) -> Lister<'a> {
        Lister {
            repo: self.repo,
            index: self.index,
            excludes: self.excludes,
            hidden: self.hidden.clone(),
            names: Arc::clone(&self.names),
            trust_parent: self.read_from.is_none(),
            share_captures: true,
        }
    }

    /// [`Archiver::archive_roots`] on the walking thread.
    fn walk_roots(
        &mut self,
        paths: &[PathBuf],
        parent_root: Option<BlobId>,
    ) -> Result<BlobId, BackupError> {
        if paths.iter().any(|p| p.parent().is_none()) {
            self.nested_sources = paths
                .iter()
                .filter(|p| p.parent().is_some())
                .cloned()
                .collect();
            let mut meta = Metadata::default();
            let root = Path::new("/");
            let access = self.access_path(root);
            self.source_device = std::fs::symlink_metadata(&access)
                .ok()
                .map(|m| std::os::unix::fs::MetadataExt::dev(&m));
            let tree = self.archive_dir_contents(root, &access, &mut meta, parent_root)?;
            self.paths_unchanged &= parent_root == Some(tree);
            return Ok(tree);
        }
        self.nested_sources = paths
            .iter()
            .filter(|path| {
                paths
                    .iter()
                    .any(|outer| outer != *path && path.starts_with(outer))
            })
            .cloned()
            .collect();
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
        self.lister().parent_tree(id)
    }

    /// The directory at `path`, on the way to a source path (`/srv` for `/srv/app`). A
    /// symlink there (`link` for `link/sub`) is walked through by the paths below it, so
    /// what stands for it is the directory it leads to, not the link's own metadata.
    fn capture_on_the_way(&self, path: &Path) -> Result<Captured, String> {
        let access = self.access_path(path);
        let captured = platform::capture(&access, &self.names).map_err(|e| e.to_string())?;
        if !matches!(captured.kind, CapturedKind::Symlink { .. }) {
            return Ok(captured);
        }
        let target = std::fs::canonicalize(&access)
            .map_err(|e| format!("could not follow the symlink: {e}"))?;
        platform::capture(&target, &self.names).map_err(|e| e.to_string())
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
                    let access = self.access_path(&path);
                    self.source_device = None;
                    // Its tree is at the depth of its path (`/srv/app`: 2).
                    self.depth = path.components().count().saturating_sub(2);
                    let entry = self.archive_entry(&path, &access, name, parent_entry)?;
                    self.paths_unchanged &= entry.is_some() && entry.as_ref() == parent_entry;
                    entries.extend(entry);
                }
                Planned::Virtual(path, children) => {
                    let mut captured = match self.capture_on_the_way(&path) {
                        Ok(captured) => captured,
                        Err(e) => {
                            self.unreadable(&path, &e);
                            continue;
                        }
                    };
                    if !self.with_atime {
                        captured.meta.atime = Timestamp::default();
                    }
                    captured.meta.device = self.recorded_device(captured.meta.device);
                    let parent_subtree = self.parent_tree(subtree_of(parent_entry));
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
        if self.stopped() {
            return Err(BackupError::Interrupted);
        }
        let captured = platform::capture(access, &self.names);
        let Some(mut child) =
            self.admit(path.to_owned(), access.to_owned(), name, parent, captured)
        else {
            return Ok(None);
        };
        self.settle(&mut child);
        self.complete(child)
    }

    /// Makes a child of a captured entry, recording why it could not be (it is left out)
    /// or which parts of its metadata could not be read.
    fn admit<'p>(
        &mut self,
        path: PathBuf,
        access: PathBuf,
        name: Vec<u8>,
        parent: Option<&'p Entry>,
        captured: Result<Captured, platform::PlatformError>,
    ) -> Option<Child<'p>> {
        let Captured {
            mut meta,
            kind,
            warnings,
        } = match captured {
            Ok(captured) => captured,
            Err(e) => {
                self.unreadable(&path, &format!("could not {} it: {}", e.op, e.source));
                return None;
            }
        };
        for warning in warnings {
            self.unreadable(
                &path,
                &format!("could not {} it: {}", warning.op, warning.message),
            );
        }
        if !self.with_atime {
            meta.atime = Timestamp::default();
        }
        // The live device number is kept for the changed-while-read check; the recorded one
        // (which differs when reading from a snapshot) is compared and stored.
        let live_device = meta.device;
        meta.device = self.recorded_device(live_device);
        let work = match kind {
            CapturedKind::File { size } => Work::File { size },
            CapturedKind::Dir => Work::Dir,
            CapturedKind::Symlink { target } => Work::Done(Node::Symlink { target }),
            CapturedKind::Fifo => Work::Done(Node::Fifo),
            CapturedKind::Socket => Work::Done(Node::Socket),
            CapturedKind::CharDevice { rdev } => Work::Done(Node::CharDevice { rdev }),
            CapturedKind::BlockDevice { rdev } => Work::Done(Node::BlockDevice { rdev }),
        };
        if matches!(work, Work::Done(_)) {
            self.summary.others += 1;
        }
        Some(Child {
            name,
            path,
            access,
            meta,
            live_device,
            parent,
            work,
        })
    }

    /// Takes a file's content from the parent snapshot (or the files cache) when it did not
    /// change since; any other entry is left as it is.
    fn settle(&mut self, child: &mut Child<'_>) {
        let Work::File { size } = child.work else {
            return;
        };
        let Some(extents) = self.unchanged(&child.path, child.parent, &child.meta, size) else {
            return;
        };
        self.summary.files += 1;
        self.summary.files_unchanged += 1;
        self.summary.bytes += size;
        if let Some(progress) = &self.stages.progress {
            progress.file_done(size);
        }
        self.record_in_cache(&child.path, &child.meta, size, &extents);
        child.work = Work::Done(Node::File { extents });
    }

    /// Finishes `child` (archiving a directory's contents, reading a file not read yet)
    /// into its tree entry; `None` when it could not be read and is left out.
    fn complete(&mut self, mut child: Child<'_>) -> Result<Option<Entry>, BackupError> {
        let work = std::mem::replace(&mut child.work, Work::Unreadable);
        let source = self.is_nested_source(&child.path);
        let node = match work {
            Work::Unreadable => return Ok(None),
            Work::Done(node) => node,
            Work::Dir if self.tag_files.iter().any(|tag| tag.tags(&child.access)) => {
                return Ok(None);
            }
            Work::Dir if self.depth + 1 >= MAX_TREE_DEPTH => {
                // As deep as a tree may nest: kept empty, and said so.
                self.summary.dirs += 1;
                self.unreadable(
                    &child.path,
                    &format!(
                        "{MAX_TREE_DEPTH} directory levels deep, the most a snapshot holds: \
                         its contents are left out"
                    ),
                );
                child.meta.flags |= EntryFlags::INCOMPLETE;
                Node::Dir {
                    subtree: self.store_tree(Vec::new())?,
                }
            }
            Work::Dir if source => {
                // A source path of its own: its filesystem is the one to stay on below it.
                self.summary.dirs += 1;
                let outer_device = self.source_device.replace(child.live_device);
                let parent_subtree = child.parent_subtree();
                let subtree = self.archive_subdirectory(&mut child, parent_subtree);
                self.source_device = outer_device;
                Node::Dir { subtree: subtree? }
            }
            Work::Dir if self.crosses_filesystems(&child) => {
                // A mount point: the directory is kept, what the other filesystem holds is not.
                self.summary.dirs += 1;
                self.skipped_mounts.push(display(&child.path));
                Node::Dir {
                    subtree: self.store_tree(Vec::new())?,
                }
            }
            Work::Dir => {
                self.summary.dirs += 1;
                let parent_subtree = child.parent_subtree();
                Node::Dir {
                    subtree: self.archive_subdirectory(&mut child, parent_subtree)?,
                }
            }
            Work::File { size } => match self.archive_file(&mut child, size) {
                Ok(node) => node,
                Err(BackupError::Source { source, .. }) => {
                    self.unreadable(&child.path, &source.to_string());
                    return Ok(None);
                }
                Err(e) => return Err(e),
            },
        };
        Ok(Some(Entry {
            name: child.name,
            meta: child.meta,
            node,
        }))
    }

    /// [`Self::archive_dir_contents`] of `child`, a level deeper.
    fn archive_subdirectory(
        &mut self,
        child: &mut Child<'_>,
        parent_subtree: Option<BlobId>,
    ) -> Result<BlobId, BackupError> {
        self.depth += 1;
        let subtree =
            self.archive_dir_contents(&child.path, &child.access, &mut child.meta, parent_subtree);
        self.depth -= 1;
        subtree
    }

    /// Counts a file at `path` that was read as new or changed, and tells the sink.
    fn count_read(&mut self, path: &Path, parent: Option<&Entry>, disk_image: bool) {
        let change = if parent.is_some() {
            self.summary.files_changed += 1;
            super::FileChange::Changed
        } else {
            self.summary.files_new += 1;
            super::FileChange::New
        };
        if disk_image {
            self.disk_images.push(display(path));
        }
        if let Some(sink) = &self.stages.files_read {
            sink.tell(&super::FileRead {
                path,
                change,
                disk_image,
            });
        }
    }

    /// Archives a directory's entries and stores its tree. A directory that cannot be
    /// listed is stored empty and flagged incomplete.
    ///
    /// Its listing ([`Listing`]) is the prefetcher's, or made here when the prefetcher has
    /// none (its subdirectories are then handed to the prefetcher). Its small files that
    /// need reading are read in groups ([`small_files`]); the rest (subdirectories, large
    /// files) follow in name order.
    fn archive_dir_contents(
        &mut self,
        path: &Path,
        access: &Path,
        meta: &mut Metadata,
        parent: Option<BlobId>,
    ) -> Result<BlobId, BackupError> {
        let prefetched = self.prefetcher.as_ref().and_then(|p| p.take(path));
        let listing = match prefetched {
            Some(listing) => listing,
            None => {
                let listing = self.lister().list(path, access, parent);
                if let Some(prefetcher) = &self.prefetcher {
                    let stay_on = self.source_device.filter(|_| self.one_file_system);
                    let subdirectories =
                        prefetch::subdirectories(&listing, stay_on, self.tag_files);
                    prefetcher.hand_over(subdirectories);
                }
                listing
            }
        };
        if let Some(e) = &listing.error {
            self.unreadable(path, &format!("could not list directory: {e}"));
            meta.flags |= EntryFlags::INCOMPLETE;
        }
        if self.stopped() {
            return Err(BackupError::Interrupted);
        }
        let Listing {
            parent,
            handle,
            listed,
            captured,
            ..
        } = listing;
        let mut children = Vec::with_capacity(listed.len());
        for (entry, captured) in listed.into_iter().zip(captured) {
            let parent_entry = parent.as_ref().and_then(|tree| tree.get(&entry.name));
            let (path, access, name) = (entry.path, entry.access, entry.name);
            if let Some(mut child) = self.admit(path, access, name, parent_entry, captured) {
                if let Work::File { size } = child.work
                    && self.largest_file.is_some_and(|limit| size > limit)
                    && !self.is_nested_source(&child.path)
                {
                    continue;
                }
                self.settle(&mut child);
                children.push(child);
            }
        }
        self.read_small_files(&mut children, handle.as_ref())?;
        let mut entries = Vec::with_capacity(children.len());
        for child in children {
            if self.stopped() {
                return Err(BackupError::Interrupted);
            }
            if let Some(entry) = self.complete(child)? {
                entries.push(entry);
            }
        }
        self.store_tree(entries)
    }

    /// Reads the small files among `children` that still need reading, a group at a time
    /// (see [`small_files`]), then claims and queues their new chunks in order. A file that
    /// could not be read is recorded and left out. `dir` is their directory, open.
    fn read_small_files(
        &mut self,
        children: &mut [Child<'_>],
        dir: Option<&Arc<DirHandle>>,
    ) -> Result<(), BackupError> {
        let to_read: Vec<usize> = children
            .iter()
            .enumerate()
            .filter(|(_, child)| matches!(child.work, Work::File { size } if size <= SMALL_FILE))
            .map(|(i, _)| i)
            .collect();
        let sizes: Vec<u64> = to_read.iter().map(|&i| children[i].size()).collect();
        for group in small_files::groups(&sizes) {
            let indices = &to_read[group];
            let files = indices
                .iter()
                .map(|&i| children[i].small_file(dir))
                .collect();
            let reads = self.small_files.read_group(files);
            for (&i, read) in indices.iter().zip(reads) {
                let child = &mut children[i];
                let mut read = match read {
                    Ok(read) => read,
                    Err(ReadFailure::Consumer(e)) => return Err(e),
                    Err(ReadFailure::Io(e)) => {
                        self.unreadable(&child.path, &e.to_string());
                        child.work = Work::Unreadable;
                        continue;
                    }
                };
                if let Some(progress) = &self.stages.progress {
                    progress.read(read.read.bytes_read);
                }
                if let Some(id) = read.whole_file_chunk() {
                    // Most small files are one chunk: its bytes go to the seal stage as read.
                    if self.stages.dedup.claim(id) {
                        self.stages
                            .sealer
                            .push_owned(id, std::mem::take(&mut read.data));
                    }
                } else {
                    for (id, chunk) in read.chunks() {
                        if self.stages.dedup.claim(id) {
                            self.stages.sealer.push(id, chunk);
                        }
                    }
                }
                let size = child.size();
                let (path, meta) = (&child.path, &mut child.meta);
                let node = self.file_read(path, meta, size, read.read, read.changed, child.parent);
                child.work = Work::Done(node);
            }
            if self.stopped() {
                return Err(BackupError::Interrupted);
            }
        }
        Ok(())
    }

    /// The stored content of a file whose identity did not change since the parent
    /// snapshot or the files cache recorded it, when every chunk of it is still stored.
    fn unchanged(
        &mut self,
        path: &Path,
        parent: Option<&Entry>,
        meta: &Metadata,
        size: u64,
    ) -> Option<Vec<Extent>> {
        if let Some(extents) = unchanged_content(parent, meta, size, self.detection, &self.settled)
            && self.all_stored(&extents)
        {
            return Some(extents);
        }
        let key = FileKey::new(meta, size);
        let cached =
            self.stages
                .files_cache
                .lookup(path.as_os_str().as_bytes(), &key, self.detection)?;
        let length: u64 = cached.iter().map(Extent::length).sum();
        (length == size && self.all_stored(&cached)).then_some(cached)
    }

    /// True when every chunk of `extents` is stored (or claimed in this session), so
    /// content taken from the parent snapshot or the files cache is complete.
    fn all_stored(&mut self, extents: &[Extent]) -> bool {
        let mut all = true;
        for extent in extents {
            if let Extent::Chunk { id, .. } = extent {
                all &= self.stages.dedup.is_stored(id);
            }
        }
        all
    }

    fn store_tree(&mut self, entries: Vec<Entry>) -> Result<BlobId, BackupError> {
        let tree = Tree::new(entries).map_err(|e| {
            bunker_repo_format::Error::Invalid(format!("could not build a tree: {e}"))
        })?;
        let encoded = tree.encode();
        let id = self.repo.blob_id(&encoded);
        if self.stages.dedup.claim(id) {
            let sealed = self.stages.sealer.seal_now(BlobKind::Tree, id, encoded);
            self.stages.sealer.send(sealed)?;
        }
        Ok(id)
    }

    /// Reads a regular file's data regions into chunks; holes become hole extents.
    fn archive_file(&mut self, child: &mut Child<'_>, size: u64) -> Result<Node, BackupError> {
        let (path, access) = (&child.path, &child.access);
        let source_error = |source: std::io::Error| BackupError::Source {
            path: path.to_owned(),
            source,
        };
        let mut file = platform::open_for_backup(access).map_err(source_error)?;
        let mut buffer = std::mem::take(&mut self.buffer);
        let cancel = self.cancel;
        let failed = &self.stages.failed;
        let dedup = &mut self.stages.dedup;
        let sealer = &mut self.stages.sealer;
        let progress = self.stages.progress.as_deref();
        let read = read_file(&self.chunking, &mut file, size, &mut buffer, |id, chunk| {
            if cancel.is_cancelled() || failed.load(Ordering::Relaxed) {
                return Err(BackupError::Interrupted);
            }
            if let Some(progress) = progress {
                progress.read(chunk.len() as u64);
            }
            if dedup.claim(id) {
                sealer.push(id, chunk);
            }
            Ok(())
        });
        self.buffer = buffer;
        let read = match read {
            Ok(read) => read,
            Err(ReadFailure::Io(e)) => return Err(source_error(e)),
            Err(ReadFailure::Consumer(e)) => return Err(e),
        };
        let changed = read.short
            || platform::changed_since(&file.file, size, &child.identity())
                .map_err(source_error)?;
        let (path, meta) = (&child.path, &mut child.meta);
        Ok(self.file_read(path, meta, size, read, changed, child.parent))
    }

    /// Accounts for the file at `path`, read (new, or changed since its entry in the parent
    /// snapshot, `parent`): a file that changed while it was read is flagged (and kept out
    /// of the files cache), any other one is recorded in the cache.
    fn file_read(
        &mut self,
        path: &Path,
        meta: &mut Metadata,
        size: u64,
        read: ReadFile,
        changed: bool,
        parent: Option<&Entry>,
    ) -> Node {
        self.count_read(path, parent, read.disk_image);
        self.summary.bytes_read += read.bytes_read;
        self.summary.files += 1;
        self.summary.bytes += read.length;
        if let Some(progress) = &self.stages.progress {
            progress.file_done(read.length);
        }
        if changed {
            meta.flags |= EntryFlags::CHANGED_DURING_BACKUP;
            self.changed.push(display(path));
        } else {
            self.record_in_cache(path, meta, size, &read.extents);
        }
        Node::File {
            extents: read.extents,
        }
    }

    /// Records the file at `path` in the files cache, unless its last write is too recent
    /// to tell a later one in the same clock tick from it (see [`super::racy`]).
    fn record_in_cache(&mut self, path: &Path, meta: &Metadata, size: u64, extents: &[Extent]) {
        if self.settled.recordable(meta) {
            let key = FileKey::new(meta, size);
            (self.stages.files_cache).record(path.as_os_str().as_bytes(), key, extents);
        }
    }
}

/// An entry of a directory on its way into the tree.
struct Child<'p> {
    name: Vec<u8>,
    /// Its real path, for messages and the tree.
    path: PathBuf,
    /// The path to use in system calls (see [`DirHandle`]).
    access: PathBuf,
    /// Its metadata as recorded (the device number as recorded too).
    meta: Metadata,
    /// The device number it was captured with (differs when reading from a snapshot).
    live_device: u64,
    /// Its entry in the parent snapshot's tree, if there is one.
    parent: Option<&'p Entry>,
    /// What is left to do for it.
    work: Work,
}

/// What is left to do for a [`Child`].
enum Work {
    /// Nothing: its node is known.
    Done(Node),
    /// Archive the directory's contents.
    Dir,
    /// Read the regular file, of `size` bytes at capture.
    File { size: u64 },
    /// Nothing: it could not be read and is left out (the reason is recorded).
    Unreadable,
}

impl Child<'_> {
    /// A directory's tree in the parent snapshot.
    fn parent_subtree(&self) -> Option<BlobId> {
        subtree_of(self.parent)
    }

    /// A regular file's size at capture (0 for anything else).
    fn size(&self) -> u64 {
        match self.work {
            Work::File { size } => size,
            _ => 0,
        }
    }

    /// What a file read is compared with to tell whether it changed meanwhile: its
    /// identity as captured, with the live device number.
    fn identity(&self) -> Metadata {
        Metadata {
            device: self.live_device,
            inode: self.meta.inode,
            mtime: self.meta.mtime,
            ctime: self.meta.ctime,
            ..Metadata::default()
        }
    }

    /// This file, to read in a group (see [`small_files`]).
    fn small_file(&self, dir: Option<&Arc<DirHandle>>) -> SmallFile {
        SmallFile {
            access: self.access.clone(),
            at: dir.map(|dir| {
                (
                    Arc::clone(dir),
                    std::ffi::OsStr::from_bytes(&self.name).to_owned(),
                )
            }),
            size: self.size(),
            identity: self.identity(),
        }
    }
}
