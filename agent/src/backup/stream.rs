//! Backing up a stream (standard input, or a program's output such as `pg_dump -Fc`) as one
//! named file.
//!
//! The stream is cut by the repository's chunker like any file, so successive dumps of a
//! slowly changing database deduplicate. The snapshot's root tree holds a single regular
//! file, `/<name>`, and its source kind is `stream`. A stream whose producer fails (a
//! non-zero exit, a read error) commits nothing: a truncated dump must never look like a
//! good backup.

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, IsTerminal, Read};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use bunker_repo_format::snapshot::{
    ConsistencyLevel, PROGRAM_VERSION, Snapshot, SourceKind, Summary,
};
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Tree, is_valid_name};
use bunker_repo_format::{BlobKind, BlobWriter, PackId, Repository};

use super::dedup::Dedup;
use super::{BackupError, BackupOutcome, WriteStart, commit, now, pack, start_writing};
use crate::cancel::Cancel;
use crate::progress::Progress;
use crate::supervise;

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
    /// Counters to update while the stream is read.
    pub progress: Option<Arc<Progress>>,
    /// Store blobs without opening and re-hashing each first (see
    /// [`BackupOptions::skip_verify`](super::BackupOptions::skip_verify)).
    pub skip_verify: bool,
    /// Where [`backup_command`]'s command writes its standard error: each line, without its
    /// newline, in order; `None` lets the command inherit this process's standard error.
    /// For a display that draws over standard error (a progress bar would erase the lines).
    pub command_stderr: Option<LineSink>,
}

/// Takes the lines of a command's standard error (see [`StreamOptions::command_stderr`]).
#[derive(Clone)]
pub struct LineSink(Arc<TakeLine>);

/// What a [`LineSink`] calls with each line.
type TakeLine = dyn Fn(&[u8]) + Send + Sync;

impl LineSink {
    /// A sink that calls `take` with each line.
    pub fn new(take: impl Fn(&[u8]) + Send + Sync + 'static) -> Self {
        Self(Arc::new(take))
    }
}

impl std::fmt::Debug for LineSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LineSink")
    }
}

/// How long a finished command's last standard-error lines are waited for: a process it
/// left in the background may hold the pipe open, and the backup does not wait for that.
const STDERR_DRAIN: Duration = Duration::from_secs(2);

/// The longest standard-error line handed on whole.
const STDERR_LINE: u64 = 64 << 10;

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
/// Its standard error is inherited, or goes line by line to
/// [`options.command_stderr`](StreamOptions::command_stderr). A non-zero exit fails the
/// backup before the commit.
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
    let stderr = match options.command_stderr {
        Some(_) => Stdio::piped(),
        None => Stdio::inherit(),
    };
    let mut spawn = Command::new("/bin/sh");
    spawn
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    // Run from a terminal, the command stays in the foreground process group: it may
    // prompt on /dev/tty (ssh, pg_dump), which a background group could not, and Ctrl-C
    // reaches it. Elsewhere (the agent) it gets a group of its own, stopped whole.
    if !std::io::stdin().is_terminal() {
        spawn.process_group(0);
    }
    let mut child = spawn.spawn().map_err(command_error)?;
    let Some(stdout) = child.stdout.take() else {
        return Err(command_error(io::Error::other(
            "no pipe to the command's output",
        )));
    };
    let forwarded = match (child.stderr.take(), &options.command_stderr) {
        (Some(stderr), Some(sink)) => Some(forward_lines(stderr, sink.clone())),
        _ => None,
    };
    // A cancelled job (its timeout, a shutdown) stops the command, which may be printing
    // nothing for a long while: its output ends, and so does the stream.
    let leader = child.id();
    let result = supervise::stop_on_cancel(leader, cancel, || {
        backup_stream_checked(repo, stdout, options, cancel, || {
            let status = child.wait().map_err(command_error)?;
            if status.success() {
                Ok(())
            } else {
                Err(command_error(io::Error::other(format!(
                    "the command failed ({status}); no snapshot was written"
                ))))
            }
        })
    });
    // On an early error the command may still be running: stop it, and its group.
    if result.is_err() && matches!(child.try_wait(), Ok(None)) {
        supervise::stop_group(leader, || matches!(child.try_wait(), Ok(Some(_))));
        let _ = child.wait();
    }
    if let Some(forwarded) = forwarded {
        // The last lines come once the command has ended (or never, see the constant).
        let _ = forwarded.recv_timeout(STDERR_DRAIN);
    }
    result
}

/// Hands each line read from `from` to `sink` on a thread of its own until `from` ends; the
/// receiver hears when it has.
fn forward_lines(from: impl Read + Send + 'static, sink: LineSink) -> Receiver<()> {
    let (done, ended) = mpsc::channel();
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut line = Vec::new();
        // A read error ends the lines as the end of the pipe does; a longer line comes in
        // pieces of `STDERR_LINE` bytes.
        while (&mut from)
            .take(STDERR_LINE)
            .read_until(b'\n', &mut line)
            .is_ok_and(|read| read > 0)
        {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            (sink.0)(&line);
            line.clear();
        }
        let _ = done.send(());
    });
    ended
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
    writer.exclude_packs(condemned.iter().copied());
    let dedup = Dedup::new(&index, condemned);
    let source_error = |source: io::Error| BackupError::Source {
        path: PathBuf::from(format!("/{}", options.name)),
        source,
    };
    let stored =
        store_stream(repo, writer, dedup, reader, options, cancel).map_err(|e| match e {
            ChunkFailure::Io(e) => source_error(e),
            ChunkFailure::Backup(e) => e,
        })?;
    let StoredStream {
        extents,
        read,
        mut writer,
        deduplicated,
    } = stored;
    if let Err(e) = complete() {
        // What was uploaded is indexed for the next run; no snapshot is written.
        writer.finish()?;
        return Err(e);
    }

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
    let mut dependencies: HashSet<_> = writer.dependencies().clone();
    dependencies.extend(deduplicated);
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
        program_version: PROGRAM_VERSION.to_owned(),
    };
    let id = commit(repo, heartbeat, &dependencies, &session, &snapshot, cancel)?;
    Ok(BackupOutcome::single_entry(
        id,
        snapshot,
        stats.data_bytes_added,
    ))
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

impl From<BackupError> for ChunkFailure {
    fn from(e: BackupError) -> Self {
        ChunkFailure::Backup(e)
    }
}

impl From<bunker_repo_format::Error> for ChunkFailure {
    fn from(e: bunker_repo_format::Error) -> Self {
        ChunkFailure::Backup(e.into())
    }
}

/// A stream's chunks, stored.
struct StoredStream<'a> {
    extents: Vec<Extent>,
    /// Bytes read.
    read: u64,
    /// The writer back from the pack stage, every pack uploaded and recorded.
    writer: BlobWriter<'a>,
    /// Existing packs the stream deduplicated against.
    deduplicated: HashSet<PackId>,
}

/// Chunks and hashes the stream on this thread and stores its new chunks through the same
/// stages as a file backup ([`pack::seal_and_pack`]): the sealer compresses, seals and
/// verifies them on the rayon pool while reading goes on, and the pack stage packs them in
/// order and uploads full packs. On failure the packs stored so far are indexed (so the
/// next run reuses them) and no snapshot is written.
fn store_stream<'a>(
    repo: &'a Repository,
    writer: BlobWriter<'a>,
    mut dedup: Dedup<'_>,
    reader: impl Read,
    options: &StreamOptions,
    cancel: &Cancel,
) -> Result<StoredStream<'a>, ChunkFailure> {
    let progress = options.progress.as_deref();
    let mut extents = Vec::new();
    let mut buffer = Vec::new();
    let verify = !options.skip_verify;
    let (read, writer) = pack::seal_and_pack(repo, writer, verify, cancel, |sealer, failed| {
        repo.chunker().clone().chunk_reader::<_, ChunkFailure>(
            reader,
            u64::MAX,
            &mut buffer,
            |chunk| {
                if cancel.is_cancelled() {
                    return Err(ChunkFailure::Backup(BackupError::Interrupted));
                }
                if failed.load(Ordering::SeqCst) {
                    // The pack stage's error is the one to report.
                    return Err(ChunkFailure::Backup(BackupError::Interrupted));
                }
                let id = repo.blob_id(chunk);
                let length = chunk.len() as u32;
                extents.push(Extent::Chunk { id, length });
                if dedup.claim(id) {
                    sealer.push(id, chunk);
                }
                if let Some(progress) = progress {
                    progress.read(u64::from(length));
                    progress.bytes_done(u64::from(length));
                }
                Ok(())
            },
        )
    })?;
    if let Some(progress) = progress {
        progress.files_done(1);
    }
    Ok(StoredStream {
        extents,
        read,
        writer,
        deduplicated: dedup.into_dependencies(),
    })
}
