//! Heap cost and lookup speed of the in-memory index with many synthetic blobs.
//!
//! `cargo run --release -p bunker-benches --bin index_memory [BLOBS] [BLOBS_PER_PACK]`
//! (defaults: 10 000 000 blobs, 16 per pack: 16 MiB packs of ~1 MiB chunks). Prints the
//! resident-memory growth per blob (VmRSS before and after loading, from /proc/self/status)
//! and the heap the index accounts for, and the mean CPU time of a lookup that hits and of
//! one that misses.

use std::hint::black_box;
use std::time::Instant;

use bunker_benches::{SplitMix, synthetic_segments};
use bunker_repo_format::BlobId;
use bunker_repo_format::index::{Index, IndexLoader};

const LOOKUPS: usize = 2_000_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let blobs: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let per_pack: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(16)
        .max(1);

    let before = resident_kib();
    let started = Instant::now();
    let index = build(blobs, per_pack);
    let load_seconds = started.elapsed().as_secs_f64();
    let after = resident_kib();
    let grown = after.saturating_sub(before) as f64 * 1024.0;
    assert_eq!(index.len(), blobs);

    // Hits: ids drawn again from the same stream, in a different order.
    let mut ids = SplitMix::new(1);
    let sample: Vec<BlobId> = (0..LOOKUPS.min(blobs))
        .map(|_| BlobId::from_bytes(ids.bytes32()))
        .collect();
    let started = cpu_ns();
    let mut found = 0u64;
    for id in sample.iter().rev() {
        found += u64::from(index.get(black_box(id)).map_or(0, |l| l.length));
    }
    let hit_ns = cpu_ns().saturating_sub(started) as f64 / sample.len() as f64;
    let mut others = SplitMix::new(2);
    let misses: Vec<BlobId> = (0..LOOKUPS)
        .map(|_| BlobId::from_bytes(others.bytes32()))
        .collect();
    let started = cpu_ns();
    let mut missed = 0u64;
    for id in &misses {
        missed += u64::from(!index.contains(black_box(id)));
    }
    let miss_ns = cpu_ns().saturating_sub(started) as f64 / misses.len() as f64;
    assert_eq!(missed, LOOKUPS as u64);
    black_box(found);

    println!(
        "index: {blobs} blobs, {per_pack} per pack, {} packs: loaded in {load_seconds:.2} s",
        blobs.div_ceil(per_pack)
    );
    println!(
        "resident memory: +{:.1} MiB = {:.1} bytes/blob (VmRSS {before} -> {after} KiB)",
        grown / (1 << 20) as f64,
        grown / blobs as f64
    );
    println!(
        "index heap (capacities): {:.1} bytes/blob",
        index.heap_bytes() as f64 / blobs as f64
    );
    println!("lookup (CPU time): {hit_ns:.0} ns/hit, {miss_ns:.0} ns/miss ({LOOKUPS} each)");
}

/// Loads `blobs` blobs, `per_pack` to a pack, through index segments as a reader does.
fn build(blobs: usize, per_pack: usize) -> Index {
    let mut loader = IndexLoader::new();
    for segment in synthetic_segments(blobs, per_pack) {
        loader.add_segment(&segment);
    }
    loader.finish()
}

/// CPU time of this thread in nanoseconds (/proc/thread-self/schedstat): unlike wall time,
/// not inflated when other processes share the cores.
fn cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// This process's resident memory, in KiB (0 where /proc is missing).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
