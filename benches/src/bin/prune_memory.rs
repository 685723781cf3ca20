//! Peak memory of `prune` on a repository with many small blobs.
//!
//! `cargo run --release -p bunker-benches --bin prune_memory [BLOBS]` (default 1 000 000)
//! builds a repository in a temporary directory: two snapshots, the first over every data
//! blob and the second over half of them, then deletes the first and runs a zero-grace
//! prune (plan, condemn, delete) in a child process, which prints its peak resident memory
//! (VmHWM) above what it started with, per indexed blob.

use std::sync::Arc;
use std::time::Instant;

use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::config::RepositoryParams;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::prune::{PruneOptions, prune, prune_plan};
use bunker_repo_format::snapshot::{Snapshot, Summary};
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Timestamp, Tree};
use bunker_repo_format::{BlobId, BlobKind, InitOptions, Repository};

const PASSWORD: &[u8] = b"bench";
/// Chunks per file and files per directory: one directory tree per 10 000 blobs.
const CHUNKS_PER_FILE: usize = 100;
const FILES_PER_DIR: usize = 100;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("--prune") => {
            let dir = args.next().ok_or("--prune DIR")?;
            let blobs: usize = args.next().ok_or("--prune DIR BLOBS")?.parse()?;
            run_prune(&dir, blobs)
        }
        other => {
            let blobs: usize = other.map(str::parse).transpose()?.unwrap_or(1_000_000);
            let dir = tempfile_dir()?;
            let started = Instant::now();
            let indexed = build(&dir, blobs)?;
            println!(
                "built {indexed} blobs in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let status = std::process::Command::new(std::env::current_exe()?)
                .args(["--prune", &dir, &indexed.to_string()])
                .status()?;
            std::fs::remove_dir_all(&dir)?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("prune failed: {status}").into())
            }
        }
    }
}

fn tempfile_dir() -> Result<String, Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("bunker-prune-memory-{}", std::process::id()));
    Ok(dir.display().to_string())
}

/// Builds the repository; returns how many blobs are indexed.
fn build(dir: &str, blobs: usize) -> Result<usize, Box<dyn std::error::Error>> {
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::create(dir)?);
    let repo = Repository::init(
        backend,
        PASSWORD,
        InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            params: RepositoryParams {
                pack_size: 1 << 20,
                ..RepositoryParams::default()
            },
            ..Default::default()
        },
    )?;
    let index = repo.load_index()?.index;
    let mut writer = repo.blob_writer(&index);
    let mut dirs: Vec<BlobId> = Vec::new();
    let per_dir = CHUNKS_PER_FILE * FILES_PER_DIR;
    let mut next = 0u64;
    while next < blobs as u64 {
        let mut files = Vec::new();
        for file in 0..FILES_PER_DIR {
            let mut extents = Vec::new();
            for _ in 0..CHUNKS_PER_FILE {
                let chunk = next.to_le_bytes().repeat(8);
                next += 1;
                let (id, _) = writer.add(BlobKind::Data, &chunk)?;
                extents.push(Extent::Chunk {
                    id,
                    length: chunk.len() as u32,
                });
            }
            files.push(entry(format!("f{file}"), Node::File { extents }));
        }
        let (tree, _) = writer.add(BlobKind::Tree, &Tree::new(files)?.encode())?;
        dirs.push(tree);
    }
    let all = snapshot(&repo, &mut writer, &dirs)?;
    snapshot(&repo, &mut writer, &dirs[..dirs.len() / 2])?;
    writer.finish()?;
    repo.delete_snapshot(&all)?;
    let trees = dirs.len() + 2;
    Ok(dirs.len() * per_dir + trees)
}

fn entry(name: String, node: Node) -> Entry {
    Entry {
        name: name.into_bytes(),
        meta: Metadata::default(),
        node,
    }
}

fn snapshot(
    repo: &Repository,
    writer: &mut bunker_repo_format::BlobWriter<'_>,
    dirs: &[BlobId],
) -> Result<bunker_repo_format::SnapshotId, Box<dyn std::error::Error>> {
    let entries = dirs
        .iter()
        .enumerate()
        .map(|(n, subtree)| entry(format!("d{n:06}"), Node::Dir { subtree: *subtree }))
        .collect();
    let (tree, _) = writer.add(BlobKind::Tree, &Tree::new(entries)?.encode())?;
    let sealing = writer.session().clone();
    writer.flush()?;
    let snapshot = Snapshot {
        time: Timestamp::default(),
        host: "bench".into(),
        username: "bench".into(),
        paths: vec![],
        tags: vec![],
        parent: None,
        tree,
        source_kind: Default::default(),
        consistency: Default::default(),
        consistency_detail: String::new(),
        excludes: vec![],
        summary: Summary::default(),
        errors: vec![],
        program_version: "bench".into(),
    };
    Ok(repo.save_snapshot(&sealing, &snapshot)?)
}

fn run_prune(dir: &str, blobs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let before = status_kib("VmRSS:");
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::open(dir)?);
    let repo = Repository::open(backend, PASSWORD)?;
    let started = Instant::now();
    let options = PruneOptions {
        grace: std::time::Duration::ZERO,
        ..PruneOptions::default()
    };
    let plan = prune_plan(&repo, &options, false)?;
    let used = plan.used_blobs;
    let report = prune(&repo, plan)?;
    let peak = status_kib("VmHWM:");
    let grown = peak.saturating_sub(before) as f64 * 1024.0;
    println!(
        "prune: {blobs} blobs indexed, {used} used; deleted {} packs, repacked {} in {:.1} s",
        report.deleted_packs,
        report.repacked_packs,
        started.elapsed().as_secs_f64()
    );
    println!(
        "peak resident memory: +{:.1} MiB = {:.1} bytes/blob (VmRSS {before} KiB at start, VmHWM {peak} KiB)",
        grown / (1 << 20) as f64,
        grown / blobs as f64
    );
    Ok(())
}

/// A field of /proc/self/status, in KiB (0 where /proc is missing).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(field))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
