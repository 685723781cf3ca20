//! Index lookups: a blob that is indexed and one that is not, among a million.

use std::hint::black_box;

use bunker_benches::SplitMix;
use bunker_repo_format::index::{BlobLocation, Index};
use bunker_repo_format::{BlobId, BlobKind, PackId};
use criterion::{Criterion, criterion_group, criterion_main};

const BLOBS: usize = 1_000_000;

fn lookup(c: &mut Criterion) {
    let mut ids = SplitMix::new(1);
    let mut index = Index::new();
    let mut stored = Vec::with_capacity(BLOBS);
    for n in 0..BLOBS {
        let id = BlobId::from_bytes(ids.bytes32());
        let pack = PackId::from_bytes(SplitMix::new((n / 16) as u64).bytes32());
        index.insert(
            id,
            BlobLocation {
                pack,
                kind: BlobKind::Data,
                offset: 40 + (n % 16) as u64 * 500_000,
                length: 500_000,
                raw_length: 700_000,
            },
        );
        stored.push(id);
    }
    index.compact();
    let mut others = SplitMix::new(2);
    let absent: Vec<BlobId> = (0..4096)
        .map(|_| BlobId::from_bytes(others.bytes32()))
        .collect();

    let mut group = c.benchmark_group("index_lookup_1M");
    let mut at = 0usize;
    group.bench_function("hit", |b| {
        b.iter(|| {
            at = (at + 7919) % BLOBS;
            black_box(index.get(black_box(&stored[at])).map(|l| l.length))
        })
    });
    let mut at = 0usize;
    group.bench_function("miss", |b| {
        b.iter(|| {
            at = (at + 1) % absent.len();
            black_box(index.contains(black_box(&absent[at])))
        })
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
