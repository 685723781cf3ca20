//! Backing up files and directories into a repository.
//!
//! [`backup`] walks the given paths (the [`archiver`] does the work: capture metadata, read,
//! chunk, hash, deduplicate, seal in parallel, pack), writes the trees bottom-up, flushes the
//! packs and their index segments, and finally writes the snapshot: the commit point. An
//! interrupted backup leaves only unreferenced (but indexed) packs behind. [`backup_volume`]
//! does the same for a block device or disk image, with fixed-size chunks.

mod archiver;
mod excludes;
mod stream;
mod volume;

use std::io;
use std::path::PathBuf;
use std::time::Instant;

use bunker_repo_format::config::Operation;
use bunker_repo_format::gc;
use bunker_repo_format::session::ActiveSession;
use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot, SourceKind};
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};
use std::sync::Arc;

pub use excludes::{Excludes, PatternError};
pub use stream::{StreamOptions, backup_command, backup_stream};
pub use volume::{VolumeOptions, backup_volume};

use crate::cancel::Cancel;

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
    /// How consistent the source is (set by the agent's quiesce step).
    pub consistency: ConsistencyLevel,
    /// What the quiesce step did.
    pub consistency_detail: String,
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

/// Now as a [`Timestamp`].
pub fn now() -> Timestamp {
    Timestamp::now()
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
    let excludes = Excludes::new(&options.excludes)?;
    let time = options.time.unwrap_or_else(now);

    let mut paths = Vec::with_capacity(options.paths.len());
    for path in &options.paths {
        let absolute = std::path::absolute(path).map_err(|source| BackupError::Source {
            path: path.clone(),
            source,
        })?;
        std::fs::symlink_metadata(&absolute).map_err(|source| BackupError::Source {
            path: path.clone(),
            source,
        })?;
        paths.push(absolute);
    }
    if paths.is_empty() {
        return Err(BackupError::Source {
            path: PathBuf::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no paths to back up"),
        });
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
    let mut archiver = archiver::Archiver::new(repo, &index, &excludes, cancel, options.with_atime);
    archiver.exclude_packs(condemned);
    // An unreadable parent only costs reading everything again.
    let parent_root = parent
        .and_then(|id| repo.load_snapshot(&id).ok())
        .map(|snapshot| snapshot.tree);
    let tree = match archiver.archive_roots(&paths, parent_root) {
        Ok(tree) => tree,
        Err(BackupError::Interrupted) => {
            // Make what was uploaded reusable; the snapshot is never written.
            archiver.finish()?;
            return Err(BackupError::Interrupted);
        }
        Err(e) => return Err(e),
    };
    let session = archiver.session().clone();
    let finished = archiver.finish()?;

    let mut summary = finished.summary;
    summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut errors = finished.unreadable.clone();
    errors.extend(
        finished
            .changed
            .iter()
            .map(|c| format!("changed during backup: {c}")),
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
        program_version: concat!("bunker ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    let id = commit(repo, heartbeat, &finished.dependencies, &session, &snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        unreadable: finished.unreadable,
        changed: finished.changed,
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
    for id in repo.list_snapshot_ids()? {
        // An unreadable snapshot cannot be a parent; `check` reports it.
        let Ok(snapshot) = repo.load_snapshot(&id) else {
            continue;
        };
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
    heartbeat: ActiveSession,
    /// Packs condemned by a GC plan: never deduplicated against.
    condemned: std::collections::HashSet<bunker_repo_format::PackId>,
    /// The index, without locations in packs that are gone.
    index: bunker_repo_format::index::Index,
}

/// Starts a writer session: heartbeat first (everything this session reads from the index
/// is read after it, which is what prune's liveness rule relies on), then the condemned
/// packs and the index.
fn start_writing(repo: &Repository, host: &str) -> Result<WriteStart, BackupError> {
    let heartbeat = ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        host,
        "backup",
        true,
    )?;
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

/// Writes the snapshot (the commit point) unless a pack it depends on was lost meanwhile.
fn commit(
    repo: &Repository,
    heartbeat: ActiveSession,
    dependencies: &std::collections::HashSet<bunker_repo_format::PackId>,
    session: &bunker_repo_format::crypto::SealingSession,
    snapshot: &Snapshot,
) -> Result<SnapshotId, BackupError> {
    gc::commit_snapshot(repo, heartbeat, dependencies, session, snapshot)?.map_err(|refused| {
        BackupError::Stale {
            paused: refused.paused,
            lost: refused.lost,
        }
    })
}
