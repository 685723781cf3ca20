//! Backing up a block device or a disk image with fixed-size chunks.
//!
//! The volume is cut into chunks of the repository's volume chunk size, aligned to the
//! device's start (the last one may be shorter). A reader thread reads batches of chunks
//! sequentially with large reads; each batch is checked for all-zero chunks, hashed, and its
//! new chunks sealed in parallel on the rayon pool, then packed in order. All-zero chunks
//! become holes (adjacent ones merged), not data. The snapshot's root tree holds one regular
//! file entry, named by `--name` or the device's base name, whose extents are the volume's
//! content (docs/FORMAT.md §12a); its source kind is `volume`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Instant;

use bunker_repo_format::config::Operation;
use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot, SourceKind, Summary};
use bunker_repo_format::tree::{Entry, Extent, Node, Timestamp, Tree, is_valid_name};
use bunker_repo_format::{BlobId, BlobKind, BlobWriter, Repository, SnapshotId};
use rayon::prelude::*;

use super::upload::Packer;
use super::{BackupError, BackupOutcome, WriteStart, commit, find_parent, now, start_writing};
use crate::cancel::Cancel;
use crate::platform::{self, NameCache};

/// Bytes read per batch (rounded to whole chunks, at least one).
const BATCH_BYTES: u64 = 32 << 20;
/// Batches read ahead of the hashing and sealing.
const READ_AHEAD: usize = 2;

/// What volume to back up and how to label it.
#[derive(Debug, Clone, Default)]
pub struct VolumeOptions {
    /// The block device or image file.
    pub device: PathBuf,
    /// Name of the file entry in the snapshot; the device's base name when `None`.
    pub name: Option<String>,
    /// Host name recorded in the snapshot.
    pub host: String,
    /// User name recorded in the snapshot.
    pub username: String,
    /// `key=value` tags.
    pub tags: Vec<(String, String)>,
    /// Snapshot time; now when `None`.
    pub time: Option<Timestamp>,
    /// Parent snapshot; when `None`, the latest snapshot of the same host and device.
    pub parent: Option<SnapshotId>,
    /// How consistent the device is (set by the agent's quiesce step).
    pub consistency: ConsistencyLevel,
    /// What the quiesce step did.
    pub consistency_detail: String,
}

/// One chunk as read, with its id (`None` for all zeros).
struct Chunk {
    id: Option<BlobId>,
    data: Vec<u8>,
}

/// Backs up the volume `options.device` and writes a snapshot of source kind `volume`.
pub fn backup_volume(
    repo: &Repository,
    options: &VolumeOptions,
    cancel: &Cancel,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    repo.check_features(Operation::Write)?;
    let time = options.time.unwrap_or_else(now);
    let device = std::path::absolute(&options.device).map_err(|source| BackupError::Source {
        path: options.device.clone(),
        source,
    })?;
    let source_error = |source: io::Error| BackupError::Source {
        path: device.clone(),
        source,
    };
    let mut file = File::open(&device).map_err(source_error)?;
    let kind = file.metadata().map_err(source_error)?.file_type();
    let size = if kind.is_block_device() {
        let size = file.seek(SeekFrom::End(0)).map_err(source_error)?;
        file.seek(SeekFrom::Start(0)).map_err(source_error)?;
        size
    } else if kind.is_file() {
        file.metadata().map_err(source_error)?.len()
    } else {
        return Err(source_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a block device or an image file",
        )));
    };
    let name = entry_name(options, &device).map_err(source_error)?;
    let mut meta = match platform::capture(&device, &NameCache::new()) {
        Ok(captured) => captured.meta,
        Err(e) => return Err(source_error(e.into())),
    };
    meta.atime = Timestamp::default();
    meta.nlinks = 1;
    let path_bytes = vec![device.as_os_str().as_bytes().to_vec()];
    let parent = match options.parent {
        Some(parent) => Some(parent),
        None => find_parent(repo, &options.host, &path_bytes)?,
    };

    let WriteStart {
        heartbeat,
        condemned,
        index,
    } = start_writing(repo, &options.host)?;
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned);
    let chunk_size = repo.config().params.volume_chunk_size;
    let extents = match read_volume(repo, &mut writer, file, size, chunk_size, cancel) {
        Ok(extents) => extents,
        Err(e) => {
            // Make what was uploaded reusable; the snapshot is never written.
            writer.finish()?;
            return Err(match e {
                VolumeFailure::Io(e) => source_error(e),
                VolumeFailure::Backup(e) => e,
            });
        }
    };
    let entry = Entry {
        name,
        meta: meta.clone(),
        node: Node::File { extents },
    };
    let tree = Tree::new(vec![entry]).map_err(|e| {
        bunker_repo_format::Error::Invalid(format!("could not build the volume's tree: {e}"))
    })?;
    let (root, _) = writer.add(BlobKind::Tree, &tree.encode())?;
    let dependencies = writer.dependencies().clone();
    let session = writer.session().clone();
    let (stats, _) = writer.finish()?;
    let summary = Summary {
        files: 1,
        bytes: size,
        files_new: 1,
        bytes_read: size,
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
        paths: path_bytes,
        tags: options.tags.clone(),
        parent,
        tree: root,
        source_kind: SourceKind::Volume,
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

/// The entry's name: `--name`, or the device's base name.
fn entry_name(options: &VolumeOptions, device: &std::path::Path) -> io::Result<Vec<u8>> {
    let name = match &options.name {
        Some(name) => name.as_bytes().to_vec(),
        None => device
            .file_name()
            .unwrap_or(OsStr::new("volume"))
            .as_bytes()
            .to_vec(),
    };
    if is_valid_name(&name) {
        Ok(name)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{:?} cannot name the volume (empty, `.`, `..`, or holds `/` or NUL)",
                String::from_utf8_lossy(&name)
            ),
        ))
    }
}

enum VolumeFailure {
    Io(io::Error),
    Backup(BackupError),
}

impl From<bunker_repo_format::Error> for VolumeFailure {
    fn from(e: bunker_repo_format::Error) -> Self {
        VolumeFailure::Backup(e.into())
    }
}

/// Reads the volume in batches on a reader thread and stores its chunks; returns its
/// extents.
fn read_volume(
    repo: &Repository,
    writer: &mut BlobWriter<'_>,
    mut file: File,
    size: u64,
    chunk_size: u32,
    cancel: &Cancel,
) -> Result<Vec<Extent>, VolumeFailure> {
    let chunk = u64::from(chunk_size);
    let batch_chunks = (BATCH_BYTES / chunk).max(1);
    let (sender, receiver) = mpsc::sync_channel::<io::Result<Vec<Vec<u8>>>>(READ_AHEAD);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut position = 0u64;
            while position < size && !cancel.is_cancelled() {
                let mut batch = Vec::new();
                let mut result = Ok(());
                for _ in 0..batch_chunks {
                    if position >= size {
                        break;
                    }
                    let length = chunk.min(size - position);
                    let mut data = vec![0u8; length as usize];
                    if let Err(e) = file.read_exact(&mut data) {
                        result = Err(io::Error::new(
                            e.kind(),
                            format!("read at offset {position}: {e}"),
                        ));
                        break;
                    }
                    position += length;
                    batch.push(data);
                }
                let failed = result.is_err();
                if sender.send(result.map(|()| batch)).is_err() || failed {
                    return;
                }
            }
        });
        let mut packer = Packer::start(scope, repo, writer);
        let mut extents: Vec<Extent> = Vec::new();
        let stored = || {
            for batch in receiver {
                if cancel.is_cancelled() {
                    return Err(VolumeFailure::Backup(BackupError::Interrupted));
                }
                let batch = batch.map_err(VolumeFailure::Io)?;
                store_batch(repo, &mut packer, batch, &mut extents)?;
            }
            if cancel.is_cancelled() {
                return Err(VolumeFailure::Backup(BackupError::Interrupted));
            }
            Ok(())
        };
        let stored = stored();
        // Whatever happened, the packs stored so far are recorded (and indexed by the
        // caller's flush), so an interrupted backup's uploads are reused.
        let finished = packer.finish();
        stored?;
        finished?;
        Ok(extents)
    })
}

/// Hashes a batch, seals its new chunks in parallel and packs them; appends its extents.
fn store_batch(
    repo: &Repository,
    packer: &mut Packer<'_, '_, '_>,
    batch: Vec<Vec<u8>>,
    extents: &mut Vec<Extent>,
) -> Result<(), VolumeFailure> {
    let chunks: Vec<Chunk> = batch
        .into_par_iter()
        .map(|data| Chunk {
            id: (!is_zero(&data)).then(|| repo.blob_id(&data)),
            data,
        })
        .collect();
    let mut new = HashSet::new();
    let mut to_seal = Vec::new();
    for chunk in &chunks {
        let length = chunk.data.len() as u64;
        match chunk.id {
            None => match extents.last_mut() {
                Some(Extent::Hole { length: hole }) => *hole += length,
                _ => extents.push(Extent::Hole { length }),
            },
            Some(id) => {
                if !packer.writer.reuse(&id) && new.insert(id) {
                    to_seal.push((id, chunk.data.as_slice()));
                }
                extents.push(Extent::Chunk {
                    id,
                    length: chunk.data.len() as u32,
                });
            }
        }
    }
    packer.seal_and_add(&to_seal)?;
    Ok(())
}

/// True when every byte is zero (checked 4 KiB at a time: vectorized, with an early exit).
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}
