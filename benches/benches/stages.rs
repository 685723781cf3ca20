//! Throughput of the backup pipeline's CPU stages on 1 MiB-class chunks, and of chunking
//! plus hashing one large buffer sequentially against in parallel segments.

use bunker_benches::{random_bytes, text_bytes};
use bunker_repo_format::blob::{open_blob, seal_blob};
use bunker_repo_format::chunker::{Chunker, ChunkerParams};
use bunker_repo_format::crypto::{MasterKey, WriterKey};
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
/// the parallel path with 8 and 16 MiB segments, as one call and in the agent's windows.
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
    for segment_mib in [8usize, 16] {
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
            b.iter(|| {
                open_blob(
                    session.key(),
                    BlobKind::Data,
                    &id,
                    &sealed,
                    chunk.len() as u32,
                    "bench",
                )
                .map(|p| p.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chunking, segments, hashing, sealing);
criterion_main!(benches);
