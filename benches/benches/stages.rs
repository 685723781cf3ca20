//! Throughput of the backup pipeline's CPU stages on 1 MiB-class chunks.

use bunker_benches::{random_bytes, text_bytes};
use bunker_repo_format::blob::{open_blob, seal_blob};
use bunker_repo_format::chunker::{Chunker, ChunkerParams};
use bunker_repo_format::crypto::MasterKey;
use bunker_repo_format::{BlobId, BlobKind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

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

criterion_group!(benches, chunking, hashing, sealing);
criterion_main!(benches);
