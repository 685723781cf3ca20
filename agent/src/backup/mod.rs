//! Backing up files and directories into a repository.
//!
//! [`backup`] runs a pipeline of stages, one module each, connected by bounded queues:
//!
//! - `archiver` (walk): captures metadata in a deterministic order, builds the trees
//!   bottom-up, and takes unchanged files from the parent snapshot or the `files_cache`;
//! - `read`: reads, chunks and hashes the other files on the walking thread (the segments
//!   of large files in parallel on the rayon pool, with the same boundaries);
//! - `small_files`: reads small files a group at a time, with idle pool threads helping
//!   (`shared_work`);
//! - `dedup`: claims each new chunk once, in walk order;
//! - `seal`: compresses, seals and verifies batches of new chunks on the rayon pool;
//! - `pack`: one thread packs sealed blobs and indexes the uploaded packs;
//! - `upload`: a few threads store full packs.
//!
//! Then it flushes the packs and their index segments and finally writes the snapshot: the
//! commit point. An interrupted backup leaves only unreferenced (but indexed) packs behind.
//! [`backup_volume`] does the same for a block device or disk image with fixed-size chunks,
//! and [`backup_stream`] / [`backup_command`] for a stream stored as one file: each reads,
//! chunks, hashes and deduplicates on its own thread and shares the seal, pack and upload
//! stages.

mod archiver;
mod dedup;
mod disk_image;
mod excludes;
mod files_cache;
mod fixed_chunks;
mod listing;
mod pack;
mod prefetch;
mod racy;
mod read;
mod seal;
mod shared_work;
mod small_files;
mod stream;
mod upload;
mod volume;

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bunker_repo_format::config::Operation;
use bunker_repo_format::gc;
use bunker_repo_format::session::ActiveSession;
use bunker_repo_format::snapshot::{ConsistencyLevel, PROGRAM_VERSION, Snapshot, SourceKind};
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};

pub use excludes::{Excludes, PatternError};
pub use fixed_chunks::{ChunkSizeError, FixedChunks};
pub use stream::{LineSink, StreamOptions, backup_command, backup_stream};
pub use volume::{VolumeOptions, backup_volume};

use crate::cancel::Cancel;
use crate::progress::Progress;

/// What to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Source paths; made absolute (without resolving symlinks) before use.
    pub paths: Vec<PathBuf>,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// User name recorded in the snapshot.
    pub username: String,
    /// `key=value` tags.
    pub tags: Vec<(String, String)>,
    /// Snapshot time; now when `None`.
    pub time: Option<Timestamp>,
    /// Exclude patterns (see [`Excludes`]).
    pub excludes: Vec<String>,
    /// Parent snapshot; when `None`, the latest snapshot of the same host and paths.
    pub parent: Option<SnapshotId>,
    /// Record access times. Off by default: reading a tree changes the access times of its
    /// directories, so recording them makes every backup write new tree blobs. Without
    /// them a restore sets each entry's access time to its modification time.
    pub with_atime: bool,
    /// The files cache directory of this repository (see the files cache module); `None`
    /// disables the cache (the parent snapshot's trees are still used).
    pub cache_dir: Option<PathBuf>,
    /// Counters to update as the backup goes (see [`Progress`]).
    pub progress: Option<Arc<Progress>>,
    /// Do not open and re-hash each sealed blob before packing it (for measuring its cost).
    pub skip_verify: bool,
    /// How consistent the source is (set by the agent's quiesce step).
    pub consistency: ConsistencyLevel,
    /// What the quiesce step did.
    pub consistency_detail: String,
    /// Read the files from a filesystem snapshot instead of the live paths.
    pub read_from: Option<ReadFrom>,
    /// Stay on the filesystem of each source path: a directory on another filesystem (a
    /// mount point: `/proc`, a network share, a data disk under `/`) is recorded empty.
    pub one_file_system: bool,
    /// Leave out every directory holding one of these files (`.nobackup`, `CACHEDIR.TAG`).
    pub exclude_if_present: Vec<TagFile>,
    /// Leave out regular files larger than this many bytes (a path given to back up is
    /// backed up whatever its size).
    pub exclude_larger_than: Option<u64>,
    /// Leave the files cache as it was: a dry run, whose repository stores nothing (see
    /// [`DryRunBackend`](bunker_repo_format::backend::DryRunBackend)).
    pub dry_run: bool,
    /// Write no snapshot when the parent snapshot has the same source paths and each is
    /// the same entry there, with everything below it and all metadata
    /// ([`BackupOutcome::skipped`]); the directories on the way to them may differ.
    pub skip_if_unchanged: bool,
    /// Told of each file the backup reads (new or changed), as the walk goes.
    pub files_read: Option<FileSink>,
    /// What tells a file unchanged, so that it is not read again.
    pub change_detection: ChangeDetection,
    /// Cut the files read into chunks of this size at the multiples of it in each file,
    /// instead of the repository's content-defined chunks (see [`FixedChunks`]).
    pub fixed_chunks: Option<FixedChunks>,
    /// Cut files recognised as disk images by content too, instead of at the
    /// repository's volume chunk size, as `backup --volume` cuts a disk.
    pub images_by_content: bool,
}

/// How a backup tells that a file did not change since the parent snapshot (or the files
/// cache) recorded it, and takes its content from there without reading it.
///
/// By default a file is unchanged when its size, modification time, status-change time,
/// inode and device are all the same. Some filesystems do not keep the last three steady:
/// a network or FUSE filesystem may number a file's inode anew on each mount, and a device
/// number differs after a remount. There every file would be read at every backup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChangeDetection {
    /// Read every file, trusting neither the parent snapshot nor the files cache (content
    /// changed behind unchanged metadata: a restored image, a faulty tool, bit rot).
    pub read_all: bool,
    /// Compare neither inode, device nor status-change time: size and modification time
    /// alone (restic's `--ignore-inode`).
    pub ignore_inode: bool,
    /// Do not compare the status-change time, which `chmod`, `chown` and a new link move
    /// without touching the content.
    pub ignore_ctime: bool,
}

/// Whether a file a backup read is new or changed since the parent snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileChange {
    /// The parent snapshot has no entry at its path (or there is no parent).
    New,
    /// The parent snapshot's entry at its path differs (size, times, inode).
    Changed,
}

/// A file a backup read, as a [`FileSink`] is told of it.
#[derive(Debug, Clone, Copy)]
pub struct FileRead<'a> {
    /// The path it is recorded under.
    pub path: &'a Path,
    /// New or changed since the parent snapshot.
    pub change: FileChange,
    /// Taken for a disk image and cut at the repository's volume chunk size.
    pub disk_image: bool,
}

/// What a [`FileSink`] calls with each file.
type TellFile = dyn Fn(&FileRead<'_>) + Send + Sync;

/// Receives each file a backup reads.
#[derive(Clone)]
pub struct FileSink(Arc<TellFile>);

impl FileSink {
    /// A sink calling `tell` with each file.
    pub fn new(tell: impl Fn(&FileRead<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(tell))
    }

    pub(crate) fn tell(&self, file: &FileRead<'_>) {
        (self.0)(file);
    }
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileSink")
    }
}

/// A file whose presence in a directory leaves the directory out of a backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFile {
    /// The file's name.
    pub name: std::ffi::OsString,
    /// Bytes the file must start with to count (none: any file of that name).
    pub header: Option<Vec<u8>>,
}

impl TagFile {
    /// The Cache Directory Tagging Specification's tag: `CACHEDIR.TAG` starting with its
    /// signature, which caches (browsers, build tools) put in their directories.
    pub fn cache_dir() -> TagFile {
        TagFile {
            name: "CACHEDIR.TAG".into(),
            header: Some(b"Signature: 8a477f597d28d172789f06886806bc55".to_vec()),
        }
    }

    /// The tag files of `names` (each `NAME` or `NAME:HEADER`), and with `caches` the cache
    /// directory tag: what `--exclude-if-present` and `--exclude-caches` (or a policy's
    /// `exclude_if_present` and `exclude_caches`) leave out.
    pub fn list<'n>(names: impl IntoIterator<Item = &'n String>, caches: bool) -> Vec<TagFile> {
        names
            .into_iter()
            .map(|name| TagFile::parse(name))
            .chain(caches.then(TagFile::cache_dir))
            .collect()
    }

    /// `NAME` or `NAME:HEADER` (the file must start with HEADER).
    pub fn parse(text: &str) -> TagFile {
        match text.split_once(':') {
            Some((name, header)) => TagFile {
                name: name.into(),
                header: Some(header.as_bytes().to_vec()),
            },
            None => TagFile {
                name: text.into(),
                header: None,
            },
        }
    }

    /// True when the directory at `dir` holds this tag file (a regular file, with the
    /// header when one is required).
    pub fn tags(&self, dir: &Path) -> bool {
        let path = dir.join(&self.name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            return false;
        };
        if !meta.is_file() {
            return false;
        }
        let Some(header) = &self.header else {
            return true;
        };
        let mut start = vec![0u8; header.len()];
        std::fs::File::open(&path)
            .and_then(|mut file| io::Read::read_exact(&mut file, &mut start))
            .is_ok_and(|()| &start == header)
    }
}

/// A filesystem snapshot to read from in place of a live directory: paths under `live` are
/// read at the same relative place under `snapshot` and recorded under `live`, with the
/// live directory's device number (a snapshot's changes every time, which would make every
/// file look changed). `snapshot` itself, when it lies under `live`, is left out.
#[derive(Debug, Clone)]
pub struct ReadFrom {
    /// The directory the snapshot was taken of.
    pub live: PathBuf,
    /// Where the snapshot is.
    pub snapshot: PathBuf,
    /// The device number to record for every entry.
    pub device: u64,
    /// When the snapshot was taken: a live file written in the same clock tick just after
    /// keeps the times the snapshot shows (see `racy.rs`).
    pub taken: Timestamp,
}

impl ReadFrom {
    /// Where `path` (an absolute path as recorded) is read from.
    pub(crate) fn access_path(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(&self.live) {
            Ok(relative) if relative.as_os_str().is_empty() => self.snapshot.clone(),
            Ok(relative) => self.snapshot.join(relative),
            Err(_) => path.to_path_buf(),
        }
    }

    /// The entry under `live` that holds the snapshot (left out of the backup), if any.
    pub(crate) fn hidden(&self) -> Option<PathBuf> {
        let inside = self.snapshot.strip_prefix(&self.live).ok()?;
        let first = inside.components().next()?;
        Some(self.live.join(first))
    }
}

/// A finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id.
    pub id: SnapshotId,
    /// The snapshot as written.
    pub snapshot: Snapshot,
    /// Entries that could not be read (not in the snapshot, or incomplete), with reasons.
    pub unreadable: Vec<String>,
    /// Files that changed while they were read (stored as read, flagged in the tree).
    pub changed: Vec<String>,
    /// Files read that were taken for disk images and cut at the repository's volume
    /// chunk size.
    pub disk_images: Vec<String>,
    /// Mount points recorded as empty directories (`one_file_system`).
    pub mount_points: Vec<String>,
    /// Why the files cache could not be saved (the backup itself succeeded).
    pub cache_warning: Option<String>,
    /// Nothing changed since the parent and `skip_if_unchanged` was asked: no snapshot was
    /// written, and `id` is the parent's.
    pub skipped: bool,
    /// Plaintext bytes of the new data blobs: the summary's `bytes_added` without the
    /// trees, what deduplication is measured against.
    pub data_bytes_added: u64,
}

impl BackupOutcome {
    /// The outcome of a backup of one stream or volume: read whole or not at all, so
    /// nothing to list as unreadable, changed or left out.
    fn single_entry(id: SnapshotId, snapshot: Snapshot, data_bytes_added: u64) -> BackupOutcome {
        BackupOutcome {
            id,
            snapshot,
            unreadable: Vec::new(),
            changed: Vec::new(),
            disk_images: Vec::new(),
            mount_points: Vec::new(),
            cache_warning: None,
            skipped: false,
            data_bytes_added,
        }
    }
}

/// Why a backup did not produce a snapshot.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    /// The repository could not be read or written.
    #[error(transparent)]
    Repository(#[from] bunker_repo_format::Error),
    /// A path given to back up cannot be used.
    #[error("{}: {source}", path.display())]
    Source {
        /// The path as given.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Nothing to back up: no path given, and the lists given (`--files-from`) are empty.
    #[error("no paths to back up (the path lists given are empty)")]
    NoPaths,
    /// An exclude pattern does not compile.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// The session was paused so long that a prune may have removed or condemned data it
    /// deduplicated against; no snapshot was written.
    #[error("this backup was paused for {}s, longer than prune's session timeout, and {lost} pack(s) it reused are gone or condemned; no snapshot was written: run the backup again", paused.as_secs())]
    Stale {
        /// The longest gap between heartbeats.
        paused: std::time::Duration,
        /// Packs it depended on that are missing or condemned.
        lost: usize,
    },
    /// The backup was cancelled; no snapshot was written.
    #[error(
        "backup interrupted: no snapshot was written (packs already uploaded are indexed and will be reused)"
    )]
    Interrupted,
}

/// How a snapshot's `errors` name a file that changed while it was read:
/// `changed during backup: PATH`.
pub const CHANGED_DURING_BACKUP: &str = "changed during backup: ";

/// Now as a [`Timestamp`].
pub fn now() -> Timestamp {
    Timestamp::now()
}

/// `path` as a backup records it: absolute, with `.` and `..` resolved by name (`a/x/..`
/// is `a`, as restic and `realpath -s` read it; a symlink `x` is not followed) and no
/// trailing slash. `snapshots --path` compares against the same form.
pub fn source_path(path: &Path) -> std::io::Result<PathBuf> {
    use std::path::Component;
    let absolute = std::path::absolute(path)?;
    let mut clean = PathBuf::from("/");
    for component in absolute.components() {
        match component {
            Component::Normal(name) => clean.push(name),
            Component::ParentDir => {
                clean.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(clean)
}

/// Backs up `options.paths` into `repo` and writes a snapshot.
///
/// Unreadable entries do not fail the backup: they are left out (files) or stored without
/// their content (directories that cannot be listed), and listed in the outcome and the
/// snapshot. A path given in `options.paths` that does not exist fails it.
pub fn backup(
    repo: &Repository,
    options: &BackupOptions,
    cancel: &Cancel,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    repo.check_features(Operation::Write)?;
    // The walk holds a directory open per level it is down.
    crate::platform::raise_open_files_limit();
    let excludes = Excludes::new(&options.excludes)?;
    let time = options.time.unwrap_or_else(now);
    // What this backup records is as of its start, or of its filesystem snapshot's.
    let as_of = [
        Some(now()),
        options.time,
        options.read_from.as_ref().map(|r| r.taken),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or_else(now);

    let mut paths = Vec::with_capacity(options.paths.len());
    for path in &options.paths {
        let absolute = source_path(path).map_err(|source| BackupError::Source {
            path: path.clone(),
            source,
        })?;
        let access = match &options.read_from {
            Some(read_from) => read_from.access_path(&absolute),
            None => absolute.clone(),
        };
        std::fs::symlink_metadata(&access).map_err(|source| BackupError::Source {
            path: path.clone(),
            source,
        })?;
        paths.push(absolute);
    }
    if paths.is_empty() {
        return Err(BackupError::NoPaths);
    }
    let path_bytes: Vec<Vec<u8>> = paths
        .iter()
        .map(|p| std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()).to_vec())
        .collect();

    let parent = match options.parent {
        Some(parent) => Some(parent),
        None => find_parent(repo, &options.host, &path_bytes)?,
    };

    let WriteStart {
        heartbeat,
        condemned,
        index,
    } = start_writing(repo, &options.host)?;
    // An unreadable parent only costs reading everything again.
    let parent_snapshot = parent.and_then(|id| repo.load_snapshot(&id).ok());
    if let (Some(progress), Some(snapshot)) = (&options.progress, &parent_snapshot) {
        progress.expect(snapshot.summary.files, snapshot.summary.bytes);
    }
    let parent_paths = parent_snapshot
        .as_ref()
        .map(|snapshot| snapshot.paths.clone());
    let settled = racy::Settled::new(as_of, parent_snapshot.as_ref().map(|s| s.time));
    let parent_root = parent_snapshot.map(|snapshot| snapshot.tree);

    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned.iter().copied());
    let session = writer.session().clone();
    let verify = !options.skip_verify;
    let ((tree, finished), mut writer) =
        pack::seal_and_pack(repo, writer, verify, cancel, |sealer, failed| {
            let stages = archiver::Stages {
                dedup: dedup::Dedup::new(&index, condemned.iter().copied().collect()),
                sealer,
                files_cache: files_cache::FilesCache::load(options.cache_dir.as_deref()),
                failed: Arc::clone(failed),
                progress: options.progress.clone(),
                files_read: options.files_read.clone(),
            };
            let mut archiver = archiver::Archiver::new(
                repo,
                &index,
                stages,
                &excludes,
                cancel,
                options.with_atime,
            )
            .reading_from(options.read_from.clone())
            .staying_on_one_filesystem(options.one_file_system)
            .leaving_out_dirs_tagged(&options.exclude_if_present)
            .leaving_out_files_larger_than(options.exclude_larger_than)
            .detecting_changes(options.change_detection)
            .trusting_timestamps(settled)
            .cutting_fixed_chunks(options.fixed_chunks)
            .cutting_images_by_content(options.images_by_content);
            let tree = crate::deep_stack::run("bunker-walk", || {
                archiver.archive_roots(&paths, parent_root)
            });
            // The walk's own error is reported after the packs stored so far are indexed
            // (below); a failed pack stage's comes first, from `seal_and_pack`.
            Ok::<_, BackupError>((tree, archiver.finish()))
        })?;
    let dependencies: HashSet<_> = finished
        .dependencies
        .iter()
        .chain(writer.dependencies())
        .copied()
        .collect();
    writer.flush()?;
    let stats = writer.stats();
    let tree = tree?;
    let mut summary = finished.summary;
    summary.bytes_added = stats.bytes_added;
    summary.bytes_stored = stats.bytes_stored;
    summary.data_blobs_added = stats.data_blobs;
    summary.tree_blobs_added = stats.tree_blobs;
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut errors = finished.unreadable.clone();
    errors.extend(
        finished
            .changed
            .iter()
            .map(|c| format!("{CHANGED_DURING_BACKUP}{c}")),
    );
    errors.truncate(10_000);
    let snapshot = Snapshot {
        time,
        host: options.host.clone(),
        username: options.username.clone(),
        paths: path_bytes,
        tags: options.tags.clone(),
        parent,
        tree,
        source_kind: SourceKind::Files,
        consistency: options.consistency,
        consistency_detail: options.consistency_detail.clone(),
        excludes: excludes.patterns().to_vec(),
        summary,
        errors,
        program_version: PROGRAM_VERSION.to_owned(),
    };
    // The source paths as the parent's, their entries the same; the directories on the way
    // to them (`/home` for `/home/me/docs`) change often and are not what was asked for.
    let skipped = options.skip_if_unchanged
        && finished.paths_unchanged
        && parent_paths.is_some_and(|mut theirs| {
            theirs.sort();
            let mut ours = snapshot.paths.clone();
            ours.sort();
            theirs == ours
        });
    let id = match parent {
        Some(parent) if skipped => {
            // Nothing to commit: the session ends as the heartbeat drops.
            drop(heartbeat);
            parent
        }
        _ => commit(repo, heartbeat, &dependencies, &session, &snapshot, cancel)?,
    };
    let cache_warning = if options.dry_run {
        None
    } else {
        finished
            .files_cache
            .save()
            .err()
            .map(|e| format!("could not save the files cache: {e}"))
    };
    Ok(BackupOutcome {
        id,
        snapshot,
        unreadable: finished.unreadable,
        changed: finished.changed,
        disk_images: finished.disk_images,
        mount_points: finished.mount_points,
        cache_warning,
        skipped,
        data_bytes_added: stats.data_bytes_added,
    })
}

/// The latest snapshot of `host` with exactly `paths`.
fn find_parent(
    repo: &Repository,
    host: &str,
    paths: &[Vec<u8>],
) -> Result<Option<SnapshotId>, BackupError> {
    // A put-only key cannot open snapshots (nor trees): it backs up without a parent and
    // deduplicates by blob id alone.
    if repo.is_put_only() {
        return Ok(None);
    }
    let mut sorted = paths.to_vec();
    sorted.sort();
    let mut best: Option<(Timestamp, SnapshotId)> = None;
    // Loaded as many at once as the store takes small reads (one round trip each over S3).
    // An unreadable snapshot cannot be a parent; `check` reports it.
    let (snapshots, _unreadable) = repo.load_readable_snapshots()?;
    for (id, snapshot) in snapshots {
        let mut theirs = snapshot.paths.clone();
        theirs.sort();
        if snapshot.host == host && theirs == sorted && best.is_none_or(|(t, _)| snapshot.time >= t)
        {
            best = Some((snapshot.time, id));
        }
    }
    Ok(best.map(|(_, id)| id))
}

/// What a writer session starts with, in the order prune's liveness rule needs.
struct WriteStart {
    heartbeat: UncommittedSession,
    /// Packs condemned by a GC plan: never deduplicated against.
    condemned: std::collections::HashSet<bunker_repo_format::PackId>,
    /// The index, without locations in packs that are gone.
    index: bunker_repo_format::index::Index,
}

/// Starts a writer session: heartbeat first (everything this session reads from the index
/// is read after it, which is what prune's liveness rule relies on), then the condemned
/// packs and the index.
fn start_writing(repo: &Repository, host: &str) -> Result<WriteStart, BackupError> {
    let heartbeat = UncommittedSession(Some(ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        host,
        "backup",
        true,
    )?));
    let condemned = gc::condemned_packs(repo)?;
    let mut loaded = repo.load_index()?;
    // Self-healing: trust the index only for packs that exist (listed after the index was
    // read, so every pack it names was already stored). A blob whose pack is gone is read
    // and stored again by whatever file needs it: reusing a file from the parent snapshot
    // requires every one of its chunks to be known.
    let stored = gc::stored_packs(repo)?;
    loaded.index.retain_packs(|pack| stored.contains_key(pack));
    Ok(WriteStart {
        heartbeat,
        condemned,
        index: loaded.index,
    })
}

/// A backup's heartbeat session until its commit takes it ([`commit`]). A backup that
/// stops before that (interrupted, the repository full, a failed stage) ends the session as
/// it goes, so that prune need not wait 15 minutes for it to time out: it wrote no
/// snapshot and never will, and what it stored is protected as any unreferenced or
/// unindexed pack is (FORMAT.md §14a). A commit that fails leaves the session to time out
/// instead, since a snapshot write that failed may still land.
struct UncommittedSession(Option<ActiveSession>);

impl Drop for UncommittedSession {
    fn drop(&mut self) {
        if let Some(session) = self.0.take() {
            // Not ended (no space for the beat, storage gone): it times out instead.
            let _ = session.end();
        }
    }
}

/// Writes the snapshot (the commit point) unless a pack it depends on was lost meanwhile.
fn commit(
    repo: &Repository,
    mut heartbeat: UncommittedSession,
    dependencies: &std::collections::HashSet<bunker_repo_format::PackId>,
    session: &bunker_repo_format::crypto::SealingSession,
    snapshot: &Snapshot,
    cancel: &Cancel,
) -> Result<SnapshotId, BackupError> {
    // A signal that came while the last packs were sealed and uploaded still means
    // "nothing committed": the snapshot is the commit point.
    if cancel.is_cancelled() {
        return Err(BackupError::Interrupted);
    }
    let heartbeat = heartbeat
        .0
        .take()
        .expect("the session is taken once, by its commit");
    gc::commit_snapshot(repo, heartbeat, dependencies, session, snapshot)?.map_err(|refused| {
        BackupError::Stale {
            paused: refused.paused,
            lost: refused.lost,
        }
    })
}
