//! Backing up a stream (standard input, or a program's output such as `pg_dump -Fc`) as one
//! named file.
//!
//! The stream is cut by the repository's chunker like any file, so successive dumps of a
//! slowly changing database deduplicate. The snapshot's root tree holds a single regular
//! file, `/<name>`, and its source kind is `stream`. A stream whose producer fails (a
//! non-zero exit, a read error) commits nothing: a truncated dump must never look like a
//! good backup.

use std::collections::HashSet;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot, SourceKind, Summary};
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Tree, is_valid_name};
use bunker_repo_format::{BlobId, BlobKind, Repository};

use super::upload::Packer;
use super::{BackupError, BackupOutcome, WriteStart, commit, now, start_writing};
use crate::cancel::Cancel;

/// Bytes of new chunks collected before they are sealed in parallel.
const SEAL_BATCH_BYTES: usize = 16 << 20;

/// What to record about a stream backup.
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// The file name in the snapshot (a single path component).
    pub name: String,
    /// Host to record.
    pub host: String,
    /// User to record.
    pub username: String,
    /// Snapshot tags.
    pub tags: Vec<(String, String)>,
    /// Snapshot time (default: now).
    pub time: Option<bunker_repo_format::tree::Timestamp>,
    /// How consistent the data is, and what made it so.
    pub consistency: ConsistencyLevel,
    /// Free text: what the quiesce step did.
    pub consistency_detail: String,
}

/// Backs up everything `reader` yields as the file `/<options.name>`.
pub fn backup_stream(
    repo: &Repository,
    reader: impl Read,
    options: &StreamOptions,
    cancel: &Cancel,
) -> Result<BackupOutcome, BackupError> {
    backup_stream_checked(repo, reader, options, cancel, || Ok(()))
}

/// Runs `command` with `/bin/sh -c` and backs up its standard output as `/<options.name>`.
/// Its standard error is inherited. A non-zero exit fails the backup before the commit.
pub fn backup_command(
    repo: &Repository,
    command: &str,
    env: &[(String, String)],
    options: &StreamOptions,
    cancel: &Cancel,
) -> Result<BackupOutcome, BackupError> {
    let command_error = |source: io::Error| BackupError::Source {
        path: PathBuf::from(command),
        source,
    };
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(command_error)?;
    let Some(stdout) = child.stdout.take() else {
        return Err(command_error(io::Error::other(
            "no pipe to the command's output",
        )));
    };
    let result = backup_stream_checked(repo, stdout, options, cancel, || {
        let status = child.wait().map_err(command_error)?;
        if status.success() {
            Ok(())
        } else {
            Err(command_error(io::Error::other(format!(
                "the command failed ({status}); no snapshot was written"
            ))))
        }
    });
    // On an early error the command may still be running: stop it.
    if result.is_err() && matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
    }
    result
}

/// Backs up `reader`, then asks `complete` whether the stream was whole before committing.
fn backup_stream_checked(
    repo: &Repository,
    reader: impl Read,
    options: &StreamOptions,
    cancel: &Cancel,
    complete: impl FnOnce() -> Result<(), BackupError>,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    repo.check_features(bunker_repo_format::config::Operation::Write)?;
    let name_error = || BackupError::Source {
        path: PathBuf::from(&options.name),
        source: io::Error::new(
            io::ErrorKind::InvalidInput,
            "a stream's name must be one non-empty path component",
        ),
    };
    if !is_valid_name(options.name.as_bytes()) {
        return Err(name_error());
    }
    let time = options.time.unwrap_or_else(now);
    let WriteStart {
        heartbeat,
        condemned,
        index,
    } = start_writing(repo, &options.host)?;
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned);

    let mut extents = Vec::new();
    let mut buffer = Vec::new();
    let source_error = |source: io::Error| BackupError::Source {
        path: PathBuf::from(format!("/{}", options.name)),
        source,
    };
    let stored = std::thread::scope(|scope| {
        let mut sealer = Sealer::new(Packer::start(scope, repo, &mut writer));
        let read = repo.chunker().clone().chunk_reader::<_, ChunkFailure>(
            reader,
            u64::MAX,
            &mut buffer,
            |chunk| {
                if cancel.is_cancelled() {
                    return Err(ChunkFailure::Backup(BackupError::Interrupted));
                }
                let id = repo.blob_id(chunk);
                extents.push(Extent::Chunk {
                    id,
                    length: chunk.len() as u32,
                });
                sealer.queue(id, chunk).map_err(ChunkFailure::Backup)
            },
        );
        let read = match read {
            Ok(read) => sealer.seal_pending().map(|()| read),
            Err(ChunkFailure::Io(e)) => Err(source_error(e)),
            Err(ChunkFailure::Backup(e)) => Err(e),
        };
        // The packs stored so far are recorded either way, so a failed run's uploads are
        // indexed below and reused by the next one.
        let finished = sealer.packer.finish();
        read.and_then(|read| finished.map(|()| read).map_err(BackupError::from))
    });
    let read = match stored {
        Ok(read) => read,
        Err(e) => {
            writer.finish()?;
            return Err(e);
        }
    };
    complete()?;

    let stamp = now();
    let meta = Metadata {
        mode: 0o600,
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        mtime: stamp,
        atime: stamp,
        ctime: stamp,
        nlinks: 1,
        ..Metadata::default()
    };
    let entry = Entry {
        name: options.name.as_bytes().to_vec(),
        meta,
        node: Node::File { extents },
    };
    let tree = Tree::new(vec![entry])
        .map_err(|e| BackupError::Repository(bunker_repo_format::Error::Invalid(e.to_string())))?;
    let (root, _) = writer.add(BlobKind::Tree, &tree.encode())?;
    let session = writer.session().clone();
    let dependencies: HashSet<_> = writer.dependencies().clone();
    let (stats, _) = writer.finish()?;

    let summary = Summary {
        files: 1,
        bytes: read,
        files_new: 1,
        bytes_read: read,
        bytes_added: stats.bytes_added,
        bytes_stored: stats.bytes_stored,
        data_blobs_added: stats.data_blobs,
        tree_blobs_added: stats.tree_blobs,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..Summary::default()
    };
    let snapshot = Snapshot {
        time,
        host: options.host.clone(),
        username: options.username.clone(),
        paths: vec![format!("/{}", options.name).into_bytes()],
        tags: options.tags.clone(),
        parent: None,
        tree: root,
        source_kind: SourceKind::Stream,
        consistency: options.consistency,
        consistency_detail: options.consistency_detail.clone(),
        excludes: Vec::new(),
        summary,
        errors: Vec::new(),
        program_version: concat!("bunker ", env!("CARGO_PKG_VERSION")).to_owned(),
    };
    let id = commit(repo, heartbeat, &dependencies, &session, &snapshot)?;
    Ok(BackupOutcome {
        id,
        snapshot,
        unreadable: Vec::new(),
        changed: Vec::new(),
        cache_warning: None,
    })
}

/// Why reading the stream stopped.
enum ChunkFailure {
    Io(io::Error),
    Backup(BackupError),
}

impl From<io::Error> for ChunkFailure {
    fn from(e: io::Error) -> Self {
        ChunkFailure::Io(e)
    }
}

/// Queues new chunks and seals them in parallel batches; full packs upload in the background.
struct Sealer<'w, 'r, 's> {
    packer: Packer<'w, 'r, 's>,
    pending: Vec<(BlobId, Vec<u8>)>,
    pending_ids: HashSet<BlobId>,
    pending_bytes: usize,
}

impl<'w, 'r, 's> Sealer<'w, 'r, 's> {
    fn new(packer: Packer<'w, 'r, 's>) -> Self {
        Sealer {
            packer,
            pending: Vec::new(),
            pending_ids: HashSet::new(),
            pending_bytes: 0,
        }
    }

    fn queue(&mut self, id: BlobId, chunk: &[u8]) -> Result<(), BackupError> {
        if self.packer.writer.reuse(&id) || !self.pending_ids.insert(id) {
            return Ok(());
        }
        self.pending.push((id, chunk.to_vec()));
        self.pending_bytes += chunk.len();
        if self.pending_bytes >= SEAL_BATCH_BYTES {
            self.seal_pending()?;
        }
        Ok(())
    }

    fn seal_pending(&mut self) -> Result<(), BackupError> {
        let pending = std::mem::take(&mut self.pending);
        self.packer.seal_and_add(&pending)?;
        self.pending_ids.clear();
        self.pending_bytes = 0;
        Ok(())
    }
}
