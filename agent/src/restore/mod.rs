//! Restoring a snapshot, a path inside it, or a volume; or streaming one file in order.
//!
//! The restorer runs in stages, one module each:
//! - `plan`: walks the trees, creates directories, symlinks, special files and
//!   hard links, creates each regular file (sparse: holes are never written), skips files
//!   already correct in the target (`resume`), and lists per pack the blobs
//!   needed and every (file, offset) each one goes to. It hands these lists over in batches
//!   while it walks on, so content is written from the start of a restore, on the other
//!   threads, and the plan's memory stays bounded;
//! - `fetch`: reads packs in coalesced ranges on a few threads, memory
//!   bounded;
//! - `unseal`: authenticates, decompresses and re-hashes every blob on the
//!   rayon pool, into a reused buffer laid out for its place in the file
//!   (`plaintext`);
//! - `write`: positioned writes out of order into the created files (a large
//!   file's whole blocks by two writing threads, around the page cache where that is
//!   faster, see `direct`); once a
//!   batch is written, its files' metadata through the descriptors they were created with.
//!   Once every batch is written, the metadata of everything else, directories last.
//!
//! `stream` writes one file or a volume in order to any writer (stdout) with a bounded
//! reorder buffer. A damaged or missing pack costs only the files that need it: the others
//! are restored, and every failure names the pack (or blob) and the files affected.

mod archive;
mod delete;
mod direct;
mod fetch;
mod overwrite;
mod plaintext;
mod plan;
mod preview;
mod readback;
mod reopen;
mod resume;
mod routes;
mod select;
mod stream;
mod unseal;
mod write;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Extent, Node};
use bunker_repo_format::{BlobId, Repository};

use crate::cancel::Cancel;
use crate::navigate::{Located, locate};
use crate::permits::Permits;
use crate::platform::{self, ApplyOptions};
use crate::progress::Progress;
use direct::{DIRECT_WRITERS, DirectFile, DirectQueue, allocate_data_runs};
use fetch::Fetched;
use plan::{Batch, PackPlanner, PackWork, PlannedFile, Planner};
use write::{ContentWriter, WriteSummary};

pub use archive::{ArchiveSummary, stream_tar};
pub use delete::Deleted;
pub use overwrite::Overwrite;
pub use plan::BATCH_FILES;
pub(crate) use resume::extent_difference;
pub use select::RestoreFilter;

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore owner and group (only root can).
    pub ownership: bool,
    /// Counters to update as the restore goes: expected = the regular files and their data
    /// bytes (holes are not written), done = bytes written, files counted once their batch's
    /// content is written; a file already correct in the target counts as done.
    pub progress: Option<Arc<Progress>>,
    /// Which entries to restore (`--include`, `--exclude`); the default restores all.
    pub filter: RestoreFilter,
    /// Then delete what the target holds and the snapshot does not, among the entries the
    /// filter selects inside `backed_up` (`--delete`; see the delete module). Only for a
    /// directory restored, and only after a restore without errors.
    pub delete: bool,
    /// The paths the snapshot's backup was given (its `paths`), which bound `delete`.
    pub backed_up: Vec<PathBuf>,
    /// Write nothing: walk the snapshot and the target and report what the restore (and
    /// `delete`) would do, `bytes` being what would be written (see the preview module).
    pub dry_run: bool,
    /// What to do with entries the target already holds (`--overwrite`; see the overwrite
    /// module).
    pub overwrite: Overwrite,
    /// Read each file back once its batch is written and check every chunk against its id
    /// (`--verify`; see the readback module). A file that differs counts as failed.
    pub verify: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    /// Regular files restored (with or without errors), skipped ones included.
    pub files: u64,
    /// Of those, files not restored in full (not created, or content lost): left without
    /// their metadata, each named in `errors`.
    pub files_failed: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, devices, fifos.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Of those, bytes written around the page cache (direct I/O for large files).
    pub bytes_direct: u64,
    /// Files already correct in the target, left alone (resumed restore).
    pub files_skipped: u64,
    /// Bytes of those files.
    pub bytes_skipped: u64,
    /// Entries the target held that the overwrite mode kept as they were (content and
    /// metadata): files, links and other entries, and non-directories where the snapshot
    /// has a directory (which is then not restored, with a warning).
    pub kept: u64,
    /// Of those, where the snapshot has a regular file (counted in `files`).
    pub files_kept: u64,
    /// Files written and then read back and found equal to the snapshot (`verify`).
    pub files_verified: u64,
    /// Bytes of those files.
    pub bytes_verified: u64,
    /// What failed, naming the path and the damaged object. Empty on full success.
    pub errors: Vec<String>,
    /// Metadata that could not be applied (xattrs a filesystem refuses, ...).
    pub warnings: Vec<String>,
    /// Sockets in the snapshot: recorded by the backup, not restored (the program that
    /// listens on one makes it).
    pub sockets_not_restored: u64,
    /// What `delete` removed from the target; `None` when it did not run.
    pub deleted: Option<Deleted>,
}

/// Why a restore could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The repository could not be read (snapshot root, index).
    #[error(transparent)]
    Repository(#[from] bunker_repo_format::Error),
    /// The target cannot be created or written.
    #[error("{}: {source}", path.display())]
    Target {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The snapshot (or path) is not what the operation needs.
    #[error("{0}")]
    Unsuitable(String),
    /// Streamed content could not be read; the message names the pack or blob.
    #[error("content lost {message}")]
    Content {
        /// Where in the stream, and what is missing or damaged.
        message: String,
    },
    /// Streamed content could not be written to the output.
    #[error("could not write the output: {source}")]
    Output {
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The restore target's filesystem is full (or its quota used up). The restore stops at
    /// once: what was written stays, and running it again resumes where it stopped.
    #[error(
        "{}: the restore target is full (free space and run the restore again: it resumes \
         where it stopped): {source}",
        path.display()
    )]
    TargetFull {
        /// What was being written.
        path: PathBuf,
        /// The error (no space left, quota exceeded).
        #[source]
        source: io::Error,
    },
    /// The restore was cancelled; what was written so far stays.
    #[error(
        "restore interrupted: what was written stays; run the same command again to resume a \
         restore into a directory"
    )]
    Interrupted,
}

/// True for the errors of a full filesystem (no space left, quota used up).
pub(crate) fn is_storage_full(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Restores `path` of the snapshot whose root tree is `root` into `target`.
///
/// With `path` = `/`, every backed-up path comes back under `target` (`/srv/app` as
/// `target/srv/app`). A directory path puts that directory's contents directly into
/// `target` and gives `target` the directory's own metadata (mode, owner, times, xattrs);
/// any other entry is restored as `target/NAME`. Files already in the target
/// with the right content are left alone, so an interrupted restore can be run again.
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &Path,
    target: &Path,
    options: &RestoreOptions,
    cancel: &Cancel,
) -> Result<RestoreOutcome, RestoreError> {
    // Planning and applying metadata recurse once per directory level.
    crate::deep_stack::run("bunker-restore", || {
        restore_on_this_thread(repo, index, root, path, target, options, cancel)
    })
}

/// [`restore`] on the calling thread.
fn restore_on_this_thread(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &Path,
    target: &Path,
    options: &RestoreOptions,
    cancel: &Cancel,
) -> Result<RestoreOutcome, RestoreError> {
    let located = locate(repo, index, root, path)?;
    if options.delete && matches!(located, Located::Other(_)) {
        return Err(RestoreError::Unsuitable(format!(
            "--delete makes a directory the snapshot's: {} is not a directory",
            Path::new("/").join(path).display()
        )));
    }
    let not_a_directory = || {
        fs::metadata(target)
            .is_ok_and(|meta| !meta.is_dir())
            .then(|| {
                io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "the restore target is not a directory (give a new or existing directory)",
                )
            })
    };
    if options.dry_run {
        if let Some(source) = not_a_directory() {
            return Err(RestoreError::Target {
                path: target.to_owned(),
                source,
            });
        }
        return preview::preview(repo, index, &located, path, target, options, cancel);
    }
    fs::create_dir_all(target).map_err(|source| RestoreError::Target {
        path: target.to_owned(),
        source: not_a_directory().unwrap_or_else(|| {
            io::Error::new(
                source.kind(),
                format!("cannot create the restore target: {source}"),
            )
        }),
    })?;
    let progress = options.progress.as_deref();
    // What the restore will write, for the progress display: a directory's is counted
    // beside the walk, which does not wait for it (reading every tree once more).
    let count_totals = |progress: &Progress| {
        let (files, bytes) = match &located {
            Located::Dir { tree, .. } => {
                plan::content_totals(repo, index, tree, &options.filter, path, cancel)
            }
            Located::Other(entry) => match &entry.node {
                Node::File { extents } => (1, plan::data_bytes(extents)),
                _ => (0, 0),
            },
        };
        progress.expect(files, bytes);
    };
    let apply = ApplyOptions {
        ownership: options.ownership,
        // Entries of a new target carry no attributes but what the restore gives them,
        // unless the target's default ACL passes one down.
        remove_other_xattrs: !plan::is_empty_dir(target)
            || xattr::get(target, "system.posix_acl_default").is_ok_and(|acl| acl.is_some()),
    };
    // The walk plans batches on this thread while the writer fills the earlier ones.
    let (batches, planned) = mpsc::sync_channel::<Batch>(1);
    let (plan, written) = std::thread::scope(|scope| {
        if let Some(progress) = progress {
            scope.spawn(|| count_totals(progress));
        }
        let writer =
            scope.spawn(|| write_batches(repo, planned, &apply, options.verify, progress, cancel));
        let mut emit = move |batch| batches.send(batch).is_ok();
        let keep_open = plan::files_kept_open(platform::raise_open_files_limit());
        // The target stands for the restored directory, or for the one entry's parent.
        let snapshot_path = match &located {
            Located::Dir { .. } => path,
            Located::Other(_) => path.parent().unwrap_or(path),
        };
        let planner = Planner::new(repo, index, cancel, target, &mut emit, keep_open)
            .with_filter(&options.filter, snapshot_path)
            .with_overwrite(if options.verify {
                options.overwrite.verified()
            } else {
                options.overwrite
            })
            .with_verify(options.verify)
            .counting_passed(progress.is_some());
        let plan = match &located {
            Located::Dir { tree, entry } => planner.plan_tree(tree, entry.as_ref()),
            Located::Other(entry) => planner.plan_entry(entry),
        };
        drop(emit); // the writer stops once the last batch is written
        let written = writer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (plan, written)
    });
    // The writer's error first: a writer that stopped (a full target) ends the walk too.
    let written = written?;
    let plan = plan?;
    let mut outcome = RestoreOutcome {
        files: plan.file_count,
        files_failed: plan.files_failed + written.files_failed,
        dirs: plan.dirs,
        others: plan.others,
        files_skipped: plan.skipped,
        bytes_skipped: plan.skipped_bytes,
        kept: plan.kept,
        files_kept: plan.files_kept,
        files_verified: written.files_verified,
        bytes_verified: written.bytes_verified,
        errors: plan.errors,
        warnings: plan.warnings,
        sockets_not_restored: plan.sockets,
        bytes: written.bytes,
        bytes_direct: written.bytes_direct,
        deleted: None,
    };
    outcome.errors.extend(written.errors);
    outcome.warnings.extend(written.warnings);
    // Before the directories' metadata: deleting from a directory changes its times.
    if let (true, Located::Dir { tree, .. }) = (options.delete, &located) {
        if outcome.errors.is_empty() {
            let sweep = delete::Sweep {
                repo,
                index,
                options,
                snapshot_path: path,
                remove: true,
                cancel,
            };
            sweep.record(tree, target, &mut outcome)?;
        } else {
            outcome
                .warnings
                .push("nothing deleted (--delete): the restore had errors".to_owned());
        }
    }
    let (errors, warnings) = write::apply_all(&plan.root, &apply);
    outcome.errors.extend(errors);
    outcome.warnings.extend(warnings);
    Ok(outcome)
}

/// What the writer did with the batches.
#[derive(Debug, Default)]
struct Written {
    /// Content bytes written.
    bytes: u64,
    /// Of those, bytes written around the page cache.
    bytes_direct: u64,
    /// Files whose content did not all arrive.
    files_failed: u64,
    /// Content lost and metadata not applied, each naming its path.
    errors: Vec<String>,
    /// Metadata applied only in part (an owner or extended attribute refused).
    warnings: Vec<String>,
    /// Files read back and found equal to the snapshot (`--verify`).
    files_verified: u64,
    /// Their bytes.
    bytes_verified: u64,
}

/// Writes the content of each batch the walk plans (and with `verify` reads it back),
/// then its files' metadata, in turn, until the walk is done.
fn write_batches(
    repo: &Repository,
    batches: mpsc::Receiver<Batch>,
    apply: &ApplyOptions,
    verify: bool,
    progress: Option<&Progress>,
    cancel: &Cancel,
) -> Result<Written, RestoreError> {
    let mut written = Written::default();
    for batch in batches {
        let content = write_content(repo, &batch.files, &batch.packs, progress, cancel)?;
        written.bytes += content.bytes;
        written.bytes_direct += content.bytes_direct;
        written.errors.extend(content.errors);
        let mut failed = content.failed;
        failed.extend(batch.incomplete);
        if verify {
            let found = readback::read_back(repo, &batch.files, &failed);
            written.files_verified += found.files;
            written.bytes_verified += found.bytes;
            for (number, message) in found.differences {
                failed.insert(number);
                written.errors.push(message);
            }
        }
        written.files_failed += failed.len() as u64;
        let (errors, warnings) = write::apply_files(&batch.files, &failed, apply);
        written.errors.extend(errors);
        written.warnings.extend(warnings);
        if let Some(progress) = progress {
            progress.files_done(batch.file_count + batch.passed_files);
            progress.bytes_done(batch.skipped_bytes);
        }
    }
    Ok(written)
}

/// Fetches, unseals and writes every blob of `packs` into `files`; returns what was
/// written and what failed.
fn write_content(
    repo: &Repository,
    files: &[PlannedFile],
    packs: &[PackWork],
    progress: Option<&Progress>,
    cancel: &Cancel,
) -> Result<WriteSummary, RestoreError> {
    let queue = DirectQueue::new();
    let direct = files.iter().any(|f| f.direct.is_some());
    let writer = ContentWriter::new(files, progress, direct.then_some(&queue));
    std::thread::scope(|scope| {
        if direct {
            for _ in 0..DIRECT_WRITERS {
                scope.spawn(|| writer.write_direct());
            }
        }
        fetch_and_write(repo, packs, &writer, cancel);
        queue.close();
    });
    if let Some((path, source)) = writer.target_full() {
        return Err(RestoreError::TargetFull { path, source });
    }
    if cancel.is_cancelled() {
        return Err(RestoreError::Interrupted);
    }
    Ok(writer.finish())
}

/// Fetches, unseals and writes every blob of `packs` through `writer`.
///
/// Each fetched range is unsealed on the pool while the next ones are fetched and the
/// pool's other threads unseal others: a range often holds one or two large blobs, and
/// unsealing one range at a time left a pool thread idle a quarter of a vol restore
/// (docs/PERFORMANCE.md, session 17). [`UNSEALING_PER_THREAD`] ranges per pool thread are
/// in flight at most, so the fetched bytes held stay bounded.
fn fetch_and_write(repo: &Repository, packs: &[PackWork], writer: &ContentWriter, cancel: &Cancel) {
    let permits = Permits::default();
    let limit = UNSEALING_PER_THREAD * rayon::current_num_threads();
    rayon::in_place_scope(|scope| {
        let stop = || cancel.is_cancelled() || writer.is_target_full();
        let abandon = cancel.flag();
        fetch::fetch_all(repo, packs, &stop, &abandon, |fetched| {
            let permit = permits.take(limit);
            scope.spawn(move |_| {
                unseal_and_write(repo, &packs[fetched.range.pack], fetched, writer);
                drop(permit);
            });
        });
    });
}

/// Fetched ranges being unsealed per pool thread, at most. Two (one waiting for each
/// thread) made vol restores no faster: 2.00-2.64 s against 1.94-2.62 s with one.
const UNSEALING_PER_THREAD: usize = 1;

/// Unseals the blobs of one fetched range of `work` and writes them through `writer`, or
/// fails them with the reason the range could not be read.
fn unseal_and_write(repo: &Repository, work: &PackWork, fetched: Fetched, writer: &ContentWriter) {
    let blobs = &work.blobs[fetched.range.first..fetched.range.end];
    match fetched.data {
        Err(e) => {
            let name = work.name();
            let reason = e.to_string();
            let reason = if reason.contains(&name) {
                reason
            } else {
                format!("pack {name}: {reason}")
            };
            writer.fail_blobs(blobs, &reason);
        }
        Ok(data) => {
            let open = writer.open_targets(blobs);
            unseal::unseal_range(
                repo,
                work,
                &fetched.range,
                &data,
                &|blob, len| writer.plaintext_for(blob, len),
                &|blob, result| match result {
                    Ok(plaintext) => writer.write(&open, blob, plaintext),
                    Err(e) => writer.fail_blobs(std::slice::from_ref(blob), &e.to_string()),
                },
            );
        }
    }
}

/// The file entry of a volume snapshot: its root tree holds exactly one regular file.
pub fn volume_entry(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
) -> Result<Entry, RestoreError> {
    let tree = repo.load_tree(index, root)?;
    match tree.entries() {
        [entry] if matches!(entry.node, Node::File { .. }) => Ok(entry.clone()),
        _ => Err(RestoreError::Unsuitable(format!(
            "root tree {root} is not a volume's (one file entry expected, found {} entries)",
            tree.entries().len()
        ))),
    }
}

/// Writes the volume of the snapshot whose root tree is `root` to `target`: a block device
/// (at least as large as the volume) or an image file (replaced, or created with mode 0600).
///
/// On an image, holes are not written: the image is truncated, set to the volume's size and
/// only data chunks are written, so it is as sparse as the backup found the volume. On a
/// block device, holes are written as zeros (portable and exact: a discard may leave old
/// data readable on devices without deterministic read-after-trim); bytes past the
/// volume's size are left alone; a device in use (mounted, say) is refused. `progress`
/// counts the data bytes written (one file).
pub fn restore_volume(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    target: &Path,
    progress: Option<&Progress>,
    cancel: &Cancel,
) -> Result<RestoreOutcome, RestoreError> {
    let entry = volume_entry(repo, index, root)?;
    let Node::File { extents } = &entry.node else {
        return Err(RestoreError::Unsuitable("not a volume".into()));
    };
    if let Some(progress) = progress {
        progress.expect(1, plan::data_bytes(extents));
    }
    let size = entry.size();
    let target_error = |source: io::Error| RestoreError::Target {
        path: target.to_owned(),
        source,
    };
    let is_device = match fs::metadata(target) {
        Ok(meta) => meta.file_type().is_block_device(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(target_error(e)),
    };
    let mut file = if is_device {
        // Exclusively: a device that is mounted (or held by LVM, md, another exclusive
        // opener) is refused, not written under a live filesystem.
        OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_EXCL)
            .open(target)
            .map_err(|e| match e.raw_os_error() {
                Some(nix::libc::EBUSY) => RestoreError::Unsuitable(format!(
                    "{}: the device is in use (mounted, or held by another program): \
                     unmount it first; nothing was written",
                    target.display()
                )),
                _ => target_error(e),
            })?
    } else {
        // A new image holds the whole disk: private, as every file a restore creates is
        // until its metadata is applied (an existing image keeps its mode).
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(platform::PRIVATE_FILE_MODE)
            .open(target)
            .map_err(target_error)?;
        file.set_len(size).map_err(target_error)?;
        allocate_data_runs(&file, extents);
        file
    };
    if is_device {
        let capacity = file.seek(SeekFrom::End(0)).map_err(target_error)?;
        if capacity < size {
            return Err(RestoreError::Unsuitable(format!(
                "{}: the device holds {capacity} bytes, the volume {size}",
                target.display()
            )));
        }
        zero_holes(&file, target, extents, cancel)?;
    }
    let file = Arc::new(file);
    let files = vec![PlannedFile {
        path: target.to_owned(),
        handle: Some(Arc::clone(&file)),
        size,
        meta: None,
        direct: DirectFile::open(target),
        verify_against: None,
        created_open: false,
        identity: None,
    }];
    let mut packs = PackPlanner::default();
    let mut errors: Vec<String> = packs
        .add_file(index, 0, extents)
        .into_iter()
        .map(|message| format!("{}: {message}", target.display()))
        .collect();
    let packs = packs.finish();
    let content = write_content(repo, &files, &packs, progress, cancel).map_err(|e| match e {
        // A volume's restore does not resume: the next run writes the image anew.
        RestoreError::TargetFull { path, source } => RestoreError::Target {
            path,
            source: io::Error::new(
                source.kind(),
                format!(
                    "the restore target is full ({source}): free space and run the restore \
                     again (it writes the volume anew)"
                ),
            ),
        },
        other => other,
    })?;
    errors.extend(content.errors);
    file.sync_all().map_err(target_error)?;
    if let Some(progress) = progress {
        progress.files_done(1);
    }
    Ok(RestoreOutcome {
        files: 1,
        bytes: content.bytes,
        bytes_direct: content.bytes_direct,
        errors,
        ..RestoreOutcome::default()
    })
}

/// Writes zeros over the holes of `extents` in `file` (the device `target`); stops with
/// [`RestoreError::Interrupted`] once `cancel` is.
fn zero_holes(
    file: &File,
    target: &Path,
    extents: &[Extent],
    cancel: &Cancel,
) -> Result<(), RestoreError> {
    let zeros = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    for extent in extents {
        if let Extent::Hole { length } = *extent {
            let mut done = 0u64;
            while done < length {
                if cancel.is_cancelled() {
                    return Err(RestoreError::Interrupted);
                }
                let piece = (length - done).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..piece], offset + done)
                    .map_err(|source| RestoreError::Target {
                        path: target.to_owned(),
                        source,
                    })?;
                done += piece as u64;
            }
        }
        offset += extent.length();
    }
    Ok(())
}

/// Writes the content of one file of the snapshot (`path`), or of a volume snapshot's
/// volume (`path` = `/`), to `out` in order; returns the bytes written.
pub fn stream_file(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &Path,
    out: &mut dyn Write,
    cancel: &Cancel,
) -> Result<u64, RestoreError> {
    let located = locate(repo, index, root, path)?;
    stream_located(repo, index, root, path, located, out, cancel)
}

/// [`stream_file`] for a `path` the caller has already located in the tree `root`.
pub fn stream_located(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &Path,
    located: Located,
    out: &mut dyn Write,
    cancel: &Cancel,
) -> Result<u64, RestoreError> {
    let entry = match located {
        Located::Other(entry) => entry,
        Located::Dir { entry: None, .. } => volume_entry(repo, index, root).map_err(|_| {
            RestoreError::Unsuitable(
                "not a volume snapshot: give the file to stream as SNAPSHOT:/path/to/file".into(),
            )
        })?,
        Located::Dir { .. } => {
            return Err(RestoreError::Unsuitable(format!(
                "{} is a directory; --stdout streams one file",
                path.display()
            )));
        }
    };
    let Node::File { extents } = &entry.node else {
        return Err(RestoreError::Unsuitable(format!(
            "{} is a {}, not a file; --stdout streams one file",
            path.display(),
            entry.node.kind_name()
        )));
    };
    stream::stream(repo, index, extents, out, cancel)
}
