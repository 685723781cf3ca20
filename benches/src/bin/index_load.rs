//! How long a command takes to load a large repository's index from a local directory.
//!
//! `cargo run --release -p bunker-benches --bin index_load [BLOBS] [BLOBS_PER_PACK]`
//! (defaults: 1 000 000 blobs, 16 per pack) writes that many synthetic blobs as sealed
//! index segments of 100 000 blobs (what writers write) into a new repository in a
//! temporary directory, then times `Repository::load_index` three times: listing, reading
//! and opening every segment, decoding it and building the in-memory index, which every
//! command that reads or writes data does before anything else.

use std::sync::Arc;
use std::time::Instant;

use bunker_benches::synthetic_segments;
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::index::encode_segment;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::{IndexId, InitOptions, Repository, content_hash};

const RUNS: usize = 3;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let blobs: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let per_pack: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(16)
        .max(1);
    let dir = std::env::temp_dir().join(format!("bunker-index-load-{}", std::process::id()));
    let result = run(&dir, blobs, per_pack);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn run(
    dir: &std::path::Path,
    blobs: usize,
    per_pack: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::create(dir)?);
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repo = Repository::init(Arc::clone(&backend), b"bench", options)?;
    let started = Instant::now();
    let (segments, bytes) = write_segments(&repo, backend.as_ref(), blobs, per_pack)?;
    println!(
        "wrote {blobs} blobs ({per_pack} per pack) in {segments} segments, {:.1} MB, in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    for run in 1..=RUNS {
        let started = Instant::now();
        let loaded = repo.load_index()?;
        let seconds = started.elapsed().as_secs_f64();
        if loaded.index.len() != blobs || !loaded.damaged.is_empty() {
            return Err(format!(
                "loaded {} blobs of {blobs}, {} damaged segments",
                loaded.index.len(),
                loaded.damaged.len()
            )
            .into());
        }
        println!(
            "load {run}: {seconds:.2} s ({:.0} ns per blob)",
            seconds * 1e9 / blobs as f64
        );
    }
    Ok(())
}

/// Writes the segments straight to storage (no packs behind them: loading never reads a
/// pack); returns how many and their total size.
fn write_segments(
    repo: &Repository,
    backend: &dyn Backend,
    blobs: usize,
    per_pack: usize,
) -> Result<(usize, u64), Box<dyn std::error::Error>> {
    let (mut segments, mut bytes) = (0, 0u64);
    for segment in synthetic_segments(blobs, per_pack) {
        let sealed = encode_segment(&segment, repo.writer_key(), &repo.new_session());
        let name = ObjectKind::Index.name(&IndexId::from_bytes(content_hash(&sealed)).to_hex());
        backend.put_if_absent(&name, &sealed)?;
        segments += 1;
        bytes += sealed.len() as u64;
    }
    Ok((segments, bytes))
}
