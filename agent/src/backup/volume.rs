//! Backing up a block device or a disk image with fixed-size chunks.
//!
//! The volume is cut into chunks of the repository's volume chunk size, aligned to the
//! device's start (the last one may be shorter). A reader thread reads them in order, 8 MiB
//! of whole chunks per read, into aligned buffers that come back once hashed; chunks that
//! lie wholly in a hole of an image file (`SEEK_HOLE`) are not read at all. The calling
//! thread checks each chunk for zeros, hashes and deduplicates it; new chunks go through a
//! file backup's seal and pack stages (sealed and verified on the rayon pool, packed in
//! order on a thread of their own), so reading, hashing, sealing and packing overlap. All-zero chunks become
//! holes (adjacent ones merged), not data. The snapshot's root tree holds one regular
//! file entry, named by `--name` or the device's base name, whose extents are the volume's
//! content (docs/FORMAT.md §12a); its source kind is `volume`.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::time::Instant;

use bunker_repo_format::aligned::AlignedBuffer;
use bunker_repo_format::config::Operation;
use bunker_repo_format::snapshot::{
    ConsistencyLevel, PROGRAM_VERSION, Snapshot, SourceKind, Summary,
};
use bunker_repo_format::tree::{Entry, Extent, Node, Timestamp, Tree, is_valid_name};
use bunker_repo_format::{BlobId, BlobKind, BlobWriter, PackId, Repository, SnapshotId};
use rayon::prelude::*;

use super::dedup::Dedup;
use super::seal::Sealer;
use super::{
    BackupError, BackupOutcome, WriteStart, commit, find_parent, now, pack, start_writing,
};
use crate::cancel::Cancel;
use crate::platform::{self, NameCache};
use crate::progress::Progress;

/// Bytes read per batch (rounded to whole chunks, at least one).
const BATCH_BYTES: u64 = 8 << 20;
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
    /// Counters to update as the volume is read (one file of the volume's size).
    pub progress: Option<Arc<Progress>>,
    /// Store blobs without opening and re-hashing each first (see
    /// [`BackupOptions::skip_verify`](super::BackupOptions::skip_verify)).
    pub skip_verify: bool,
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
    // The node's metadata, not a symlink's on the way (`/dev/vg/data` is one, mode 0777):
    // a restore of the volume as a file gives it these permissions.
    let node = std::fs::canonicalize(&device).map_err(source_error)?;
    let mut meta = match platform::capture(&node, &NameCache::new()) {
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
    writer.exclude_packs(condemned.iter().copied());
    let dedup = Dedup::new(&index, condemned);
    let chunk_size = repo.config().params.volume_chunk_size;
    let spans = if kind.is_file() {
        // The reader reads at offsets: that the search moves the file's offset is no matter.
        let mut spans = Vec::new();
        let mut regions = platform::DataRegions::new(size);
        while let Some(region) = regions.next_region(&file).map_err(source_error)? {
            widen_into(&mut spans, region, u64::from(chunk_size), size);
        }
        spans
    } else {
        // A device has no holes to ask for: all of it is read.
        std::iter::once(0..size).collect()
    };
    let bytes_read = spans.iter().map(|span| span.end - span.start).sum();
    let reader = ChunkReader {
        file,
        size,
        spans,
        batch: (BATCH_BYTES / u64::from(chunk_size)).max(1) * u64::from(chunk_size),
    };
    if let Some(progress) = &options.progress {
        progress.expect(1, size);
    }
    let (extents, mut writer, deduplicated) = read_volume(
        repo, writer, dedup, reader, options, chunk_size, cancel,
    )
    .map_err(|e| match e {
        VolumeFailure::Io(e) => source_error(e),
        VolumeFailure::Backup(e) => e,
    })?;
    let entry = Entry {
        name,
        meta: meta.clone(),
        node: Node::File { extents },
    };
    let tree = Tree::new(vec![entry]).map_err(|e| {
        bunker_repo_format::Error::Invalid(format!("could not build the volume's tree: {e}"))
    })?;
    let (root, _) = writer.add(BlobKind::Tree, &tree.encode())?;
    let mut dependencies = writer.dependencies().clone();
    dependencies.extend(deduplicated);
    let session = writer.session().clone();
    let (stats, _) = writer.finish()?;
    let summary = Summary {
        files: 1,
        bytes: size,
        files_new: 1,
        bytes_read,
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
        program_version: PROGRAM_VERSION.to_owned(),
    };
    let id = commit(repo, heartbeat, &dependencies, &session, &snapshot, cancel)?;
    Ok(BackupOutcome::single_entry(
        id,
        snapshot,
        stats.data_bytes_added,
    ))
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

impl From<BackupError> for VolumeFailure {
    fn from(e: BackupError) -> Self {
        VolumeFailure::Backup(e)
    }
}

impl From<bunker_repo_format::Error> for VolumeFailure {
    fn from(e: bunker_repo_format::Error) -> Self {
        VolumeFailure::Backup(e.into())
    }
}

/// Reads the volume on a reader thread and stores its chunks through the same stages as
/// a file backup: this thread checks each chunk for zeros, hashes and deduplicates it, the
/// [`Sealer`] compresses, seals and verifies new ones on the rayon pool (batches in flight
/// while the next chunks are read and hashed, no pause between them), and the pack stage
/// packs them in order and uploads full packs. Returns the extents, the writer back from
/// the pack stage and the packs the volume deduplicated against.
fn read_volume<'a>(
    repo: &'a Repository,
    writer: BlobWriter<'a>,
    mut dedup: Dedup<'_>,
    reader: ChunkReader,
    options: &VolumeOptions,
    chunk_size: u32,
    cancel: &Cancel,
) -> Result<(Vec<Extent>, BlobWriter<'a>, HashSet<PackId>), VolumeFailure> {
    let progress = options.progress.as_deref();
    let (sender, receiver) = mpsc::sync_channel::<io::Result<Batch>>(READ_AHEAD);
    // Batches go back to the reader once their chunks are hashed and the new ones copied.
    let (recycle, recycled) = mpsc::channel::<AlignedBuffer>();
    let mut extents: Vec<Extent> = Vec::new();
    let verify = !options.skip_verify;
    std::thread::scope(|scope| {
        scope.spawn(move || reader.run(&sender, &recycled, cancel));
        pack::seal_and_pack(repo, writer, verify, cancel, |sealer, failed| {
            for batch in receiver {
                if cancel.is_cancelled() {
                    return Err(VolumeFailure::Backup(BackupError::Interrupted));
                }
                if failed.load(Ordering::SeqCst) {
                    // The pack stage's error is the one to report.
                    return Ok(());
                }
                match batch.map_err(VolumeFailure::Io)? {
                    Batch::Read(buffer) => {
                        let chunk = chunk_size as usize;
                        let bytes = buffer.as_slice();
                        store_batch(repo, &mut dedup, sealer, bytes, chunk, &mut extents);
                        if let Some(progress) = progress {
                            progress.read(bytes.len() as u64);
                            progress.bytes_done(bytes.len() as u64);
                        }
                        // The reader may have stopped: then the buffer just goes.
                        let _ = recycle.send(buffer);
                    }
                    Batch::Hole(length) => {
                        push_hole(&mut extents, length);
                        if let Some(progress) = progress {
                            progress.bytes_done(length);
                        }
                    }
                }
            }
            if cancel.is_cancelled() {
                return Err(VolumeFailure::Backup(BackupError::Interrupted));
            }
            if let Some(progress) = progress {
                progress.files_done(1);
            }
            Ok(())
        })
    })
    .map(|((), writer)| (extents, writer, dedup.into_dependencies()))
}

/// What the reader hands on, in the volume's order.
enum Batch {
    /// Whole chunks read from the volume (the last chunk may be short).
    Read(AlignedBuffer),
    /// Whole chunks of this many bytes inside a hole of an image file: zeros, not read.
    Hole(u64),
}

/// Adds a data `region` of an image (see [`platform::DataRegions`], in order) to the
/// chunk-aligned `spans` to read: widened to whole chunks of `chunk` bytes, clipped to
/// `size`, merged with the last span when they overlap or touch. A chunk outside every
/// span is all hole. However fragmented the image, there is at most one span per chunk.
fn widen_into(spans: &mut Vec<Range<u64>>, region: Range<u64>, chunk: u64, size: u64) {
    if region.start >= region.end {
        return;
    }
    let start = region.start - region.start % chunk;
    let end = region.end.div_ceil(chunk).saturating_mul(chunk).min(size);
    match spans.last_mut() {
        Some(last) if start <= last.end => last.end = last.end.max(end),
        _ => spans.push(start..end),
    }
}

/// Reads a volume's spans in order, a batch of whole chunks per read.
struct ChunkReader {
    file: File,
    size: u64,
    /// What to read (chunk-aligned, in order); the rest is hole.
    spans: Vec<Range<u64>>,
    /// Bytes per batch: a multiple of the chunk size.
    batch: u64,
}

impl ChunkReader {
    /// Sends batches and holes until the end, a read error (sent too) or `cancel`. Buffers
    /// come back through `recycled` once their chunks are hashed and the new ones copied.
    ///
    /// The buffers are page-aligned and batches start at multiples of the chunk size, so
    /// every read's memory agrees with its offset (see
    /// [`READ_ALIGN`](bunker_repo_format::chunker::READ_ALIGN) for what it costs otherwise).
    fn run(
        self,
        batches: &SyncSender<io::Result<Batch>>,
        recycled: &Receiver<AlignedBuffer>,
        cancel: &Cancel,
    ) {
        let mut position = 0u64;
        for span in &self.spans {
            if span.start > position
                && batches
                    .send(Ok(Batch::Hole(span.start - position)))
                    .is_err()
            {
                return;
            }
            position = span.start;
            while position < span.end {
                if cancel.is_cancelled() {
                    return;
                }
                let length = self.batch.min(span.end - position) as usize;
                let mut buffer = recycled.try_recv().unwrap_or_default();
                let bytes = buffer.resize_for_overwrite(length);
                let result = self.file.read_exact_at(bytes, position).map_err(|e| {
                    io::Error::new(e.kind(), format!("read at offset {position}: {e}"))
                });
                position += length as u64;
                let failed = result.is_err();
                if batches.send(result.map(|()| Batch::Read(buffer))).is_err() || failed {
                    return;
                }
            }
        }
        if position < self.size {
            let _ = batches.send(Ok(Batch::Hole(self.size - position)));
        }
    }
}

/// Appends the extents of a batch of chunks: a hole for each all-zero chunk, else its id,
/// new chunks copied to the sealer. The chunks are checked and hashed on the pool while
/// sealing leaves a pool thread idle (as when little is new), else on this thread.
fn store_batch(
    repo: &Repository,
    dedup: &mut Dedup<'_>,
    sealer: &mut Sealer,
    batch: &[u8],
    chunk_size: usize,
    extents: &mut Vec<Extent>,
) {
    let id = |data: &[u8]| (!is_zero(data)).then(|| repo.blob_id(data));
    let ids: Vec<Option<BlobId>> = if sealer.load().saturated() {
        batch.chunks(chunk_size).map(id).collect()
    } else {
        batch.par_chunks(chunk_size).map(id).collect()
    };
    for (data, id) in batch.chunks(chunk_size).zip(ids) {
        let length = data.len() as u64;
        let Some(id) = id else {
            push_hole(extents, length);
            continue;
        };
        extents.push(Extent::Chunk {
            id,
            length: length as u32,
        });
        if dedup.claim(id) {
            sealer.push(id, data);
        }
    }
}

/// Appends a hole of `length` bytes, merged into the hole before it.
fn push_hole(extents: &mut Vec<Extent>, length: u64) {
    match extents.last_mut() {
        Some(Extent::Hole { length: hole }) => *hole += length,
        _ => extents.push(Extent::Hole { length }),
    }
}

/// True when every byte is zero (checked 4 KiB at a time: vectorized, with an early exit).
fn is_zero(data: &[u8]) -> bool {
    data.chunks(4096)
        .all(|block| block.iter().fold(0u8, |acc, &b| acc | b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spans of `regions`, added in order.
    fn chunk_spans(regions: &[Range<u64>], chunk: u64, size: u64) -> Vec<Range<u64>> {
        let mut spans = Vec::new();
        for region in regions {
            widen_into(&mut spans, region.clone(), chunk, size);
        }
        spans
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // the spans expected are one range
    fn data_regions_widen_to_whole_chunks_and_merge() {
        const C: u64 = 100;
        // Within one chunk, across a boundary, two regions in one chunk, up to a short end.
        let regions = [5..10, 290..310, 520..530, 580..590, 930..950];
        assert_eq!(
            chunk_spans(&regions, C, 950),
            [0..100, 200..400, 500..600, 900..950]
        );
        // Regions in adjacent chunks merge; an empty region adds nothing.
        assert_eq!(
            chunk_spans(&[10..20, 150..160, 300..300], C, 1000),
            [0..200]
        );
        assert_eq!(chunk_spans(&[], C, 1000), []);
        assert_eq!(chunk_spans(&[0..1000], C, 1000), [0..1000]);
    }
}
