//! `bunker copy --to REPO [SNAPSHOT...]`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::Cancel;
use bunker_agent::copy::copy;
use bunker_agent::platform;
use serde_json::json;

use crate::args::{CopyArgs, GlobalOptions};
use crate::output::print_json;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &CopyArgs, cancel: &Cancel) -> Result<u8> {
    let source = repo::open(global, "copy")?;
    // A snapshot that cannot be read is named and not copied; the others still are.
    let mut unreadable = 0;
    let snapshots = if args.snapshots.is_empty() {
        let (readable, damaged) = source.load_readable_snapshots()?;
        crate::select::warn_left_out(&damaged);
        unreadable = damaged.len();
        readable
    } else {
        let mut chosen = Vec::new();
        for spec in &args.snapshots {
            let found = crate::select::resolve(&source, spec)?;
            if !chosen.iter().any(|(id, _)| *id == found.0) {
                chosen.push(found);
            }
        }
        chosen
    };
    let (target, created) = repo::open_or_create_target(global, &args.to, &source)?;
    let outcome = copy(&source, &target, &snapshots, &platform::hostname(), cancel)?;
    if global.json {
        let pairs = |list: &[(
            bunker_repo_format::SnapshotId,
            bunker_repo_format::SnapshotId,
        )]| {
            list.iter()
                .map(|(from, to)| json!({ "source": from.to_hex(), "target": to.to_hex() }))
                .collect::<Vec<_>>()
        };
        print_json(&json!({
            "target": target.location(),
            "created": created,
            "copied": pairs(&outcome.copied),
            "skipped": pairs(&outcome.skipped),
            "data_blobs_added": outcome.stats.data_blobs,
            "tree_blobs_added": outcome.stats.tree_blobs,
            "bytes_added": outcome.stats.bytes_added,
            "bytes_stored": outcome.stats.bytes_stored,
            "packs": outcome.stats.packs,
            "verified_packs": outcome.verified_packs,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        if created {
            writeln!(out, "created repository {}", target.location())?;
        }
        for (from, to) in &outcome.copied {
            writeln!(out, "copied snapshot {} as {}", from.short(), to.short())?;
        }
        writeln!(
            out,
            "{} snapshot(s) copied, {} already present; {} new blob(s), {} byte(s) stored in {} pack(s), each read back and verified",
            outcome.copied.len(),
            outcome.skipped.len(),
            outcome.stats.data_blobs + outcome.stats.tree_blobs,
            outcome.stats.bytes_stored,
            outcome.stats.packs
        )?;
    }
    if unreadable > 0 {
        anyhow::bail!(
            "{unreadable} snapshot(s) could not be read and were not copied (named above); \
             `bunker check` names the damage"
        );
    }
    Ok(exit::OK)
}
