//! Throughput of the backup pipeline's CPU stages on 1 MiB-class chunks and on small
//! (16 KiB) blobs, of the walk's system calls per small file, and of chunking plus hashing
//! one large buffer sequentially against in parallel segments.

use std::ffi::OsStr;
use std::io::Read;

use bunker_agent::platform::{self, DirHandle, NameCache};
use bunker_benches::{random_bytes, text_bytes};
use bunker_repo_format::blob::{open_blob, seal_blob};
use bunker_repo_format::chunker::{Chunker, ChunkerParams};
use bunker_repo_format::crypto::{MasterKey, SymmetricKey, WriterKey};
use bunker_repo_format::{BlobId, BlobKind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rayon::prelude::*;

fn chunking(c: &mut Criterion) {
    let data = random_bytes(64 << 20, 1);
    let chunker =
        Chunker::new(ChunkerParams::default(), &[9; 32]).expect("default params are valid");
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("fastcdc_seeded_1MiB_avg", |b| {
        b.iter(|| chunker.cut_all(&data).len())
    });
    group.finish();
}

/// Hashes the chunks of `data` with the given lengths on the rayon pool.
fn hash_parallel(writer: &WriterKey, data: &[u8], lengths: &[usize]) -> Vec<[u8; 32]> {
    let mut spans = Vec::with_capacity(lengths.len());
    let mut start = 0;
    for &length in lengths {
        spans.push(start..start + length);
        start += length;
    }
    spans
        .par_iter()
        .map(|span| writer.blob_id_bytes(&data[span.clone()]))
        .collect()
}

/// What the agent does with a large file region: windows of one segment per rayon thread
/// (plus the undecided tail carried over), each cut and then hashed in parallel.
fn windowed(chunker: &Chunker, writer: &WriterKey, data: &[u8], segment: usize) -> usize {
    let window = rayon::current_num_threads().clamp(1, 8) * segment;
    let max = chunker.params().max_size as usize;
    let (mut consumed, mut chunks) = (0, 0);
    loop {
        let end = data.len().min(consumed + window + max);
        let at_end = end == data.len();
        let lengths = chunker.cut_parallel(&data[consumed..end], at_end, segment);
        chunks += hash_parallel(writer, &data[consumed..end], &lengths).len();
        consumed += lengths.iter().sum::<usize>();
        if at_end {
            return chunks;
        }
    }
}

/// Chunk and hash a 256 MiB buffer: sequential (`cut_all`, then each chunk hashed), against
/// the parallel path with 4, 8 and 16 MiB segments, as one call and in the agent's windows.
fn segments(c: &mut Criterion) {
    let data = random_bytes(256 << 20, 4);
    let chunker =
        Chunker::new(ChunkerParams::default(), &[9; 32]).expect("default params are valid");
    let key = MasterKey::generate();
    let writer = key.writer();
    let mut group = c.benchmark_group("chunk_hash_256MiB");
    group.throughput(Throughput::Bytes(data.len() as u64));
    group.sample_size(10);
    group.bench_function("sequential", |b| {
        b.iter(|| {
            let mut start = 0;
            let mut ids = Vec::new();
            for length in chunker.cut_all(&data) {
                ids.push(writer.blob_id_bytes(&data[start..start + length]));
                start += length;
            }
            ids.len()
        })
    });
    for segment_mib in [4usize, 8, 16] {
        let segment = segment_mib << 20;
        group.bench_function(format!("parallel_{segment_mib}MiB_segments"), |b| {
            b.iter(|| {
                let lengths = chunker.cut_parallel(&data, true, segment);
                hash_parallel(writer, &data, &lengths).len()
            })
        });
        group.bench_function(format!("windowed_{segment_mib}MiB_segments"), |b| {
            b.iter(|| windowed(&chunker, writer, &data, segment))
        });
    }
    group.finish();
}

fn hashing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let chunk = random_bytes(1 << 20, 2);
    let mut group = c.benchmark_group("hash");
    group.throughput(Throughput::Bytes(chunk.len() as u64));
    group.bench_function("keyed_blake3_1MiB", |b| {
        b.iter(|| key.writer().blob_id_bytes(&chunk))
    });
    group.finish();
}

fn sealing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let session = key.writer().new_session();
    let id = BlobId::from_bytes([1; 32]);
    let mut group = c.benchmark_group("seal");
    for (name, chunk) in [
        ("random", random_bytes(1 << 20, 3)),
        ("text", text_bytes(1 << 20)),
    ] {
        group.throughput(Throughput::Bytes(chunk.len() as u64));
        for level in [0, 1, 3] {
            group.bench_function(format!("{name}_zstd{level}_1MiB"), |b| {
                b.iter(|| seal_blob(session.key(), BlobKind::Data, &id, &chunk, level).len())
            });
        }
        let sealed = seal_blob(session.key(), BlobKind::Data, &id, &chunk, 3);
        group.bench_function(format!("{name}_open_1MiB"), |b| {
            b.iter(|| open(session.key(), &id, &sealed, chunk.len()))
        });
    }
    group.finish();
}

/// Opens `sealed`, the data blob `id` of `length` bytes, as a restore does; its length.
fn open(key: &SymmetricKey, id: &BlobId, sealed: &[u8], length: usize) -> usize {
    open_blob(key, BlobKind::Data, id, sealed, length as u32, "bench")
        .expect("the bench's blob opens")
        .len()
}

/// Bytes of a typical small file (the Linux-source corpus averages 16.5 KB a file): most
/// of a source tree's blobs are whole small files, and a blob's fixed costs (zstd's tables
/// and entropy headers, the cipher's setup) weigh more on them than on 1 MiB chunks.
const SMALL_BLOB: usize = 16 << 10;

/// The seal stage's costs on small text blobs, per blob: hash (the id), seal at zstd 3,
/// and the verification's open (its re-hash is one more `hash`).
fn small_blobs(c: &mut Criterion) {
    let key = MasterKey::generate();
    let session = key.writer().new_session();
    let id = BlobId::from_bytes([1; 32]);
    let blob = text_bytes(SMALL_BLOB);
    let mut group = c.benchmark_group("small_blob_16KiB");
    group.throughput(Throughput::Bytes(blob.len() as u64));
    group.bench_function("hash", |b| b.iter(|| key.writer().blob_id_bytes(&blob)));
    group.bench_function("seal_text_zstd3", |b| {
        b.iter(|| seal_blob(session.key(), BlobKind::Data, &id, &blob, 3).len())
    });
    let sealed = seal_blob(session.key(), BlobKind::Data, &id, &blob, 3);
    group.bench_function("open_text", |b| {
        b.iter(|| open(session.key(), &id, &sealed, blob.len()))
    });
    group.finish();
}

/// The walk and read stages' system calls for one small file, as a backup makes them:
/// capture its metadata (`fstatat` relative to its open directory, extended attributes),
/// open it relative to the directory, read it, and check it did not change meanwhile.
/// What this costs is the kernel's, per file; the page cache holds the files.
fn small_files(c: &mut Criterion) {
    const FILES: usize = 256;
    let dir = tempfile::tempdir().expect("tempdir");
    let content = text_bytes(SMALL_BLOB);
    let names: Vec<String> = (0..FILES).map(|i| format!("file{i:04}.c")).collect();
    for name in &names {
        std::fs::write(dir.path().join(name), &content).expect("write");
    }
    let handle = DirHandle::open(dir.path()).expect("open directory");
    let cache = NameCache::new();
    let mut buffer = vec![0u8; SMALL_BLOB];
    let mut group = c.benchmark_group("walk_read");
    group.throughput(Throughput::Bytes((FILES * SMALL_BLOB) as u64));
    group.bench_function("capture_open_read_256_files_of_16KiB", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for name in &names {
                let path = dir.path().join(name);
                let at = Some((handle.fd(), OsStr::new(name)));
                let captured = platform::capture_knowing(&path, at, &cache, None).expect("capture");
                let mut source = platform::open_for_backup_at(&path, at).expect("open");
                bytes += source.file.read(&mut buffer).expect("read");
                let size = buffer.len() as u64;
                assert!(
                    !platform::changed_since(&source.file, size, &captured.meta).expect("stat")
                );
            }
            bytes
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    chunking,
    segments,
    hashing,
    sealing,
    small_blobs,
    small_files
);
criterion_main!(benches);
