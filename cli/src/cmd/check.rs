//! `bunker check`.

use std::io::Write;

use anyhow::{Context, Result};
use bunker_repo_format::check::{CheckOptions, ReadData, VerifiedPacks, check};
use serde_json::{Value, json};

use crate::args::{CheckArgs, GlobalOptions};
use crate::output::{bytes, count, print_json};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &CheckArgs) -> Result<u8> {
    let subset = args.read_data_subset.clone();
    let max_duration = args.max_duration;
    // Check proves what the store holds: no copy kept on this host stands in for it.
    let repository = repo::open(global, "check")?.bypassing_cache();
    repository.check_features(bunker_repo_format::config::Operation::Read)?;
    let read_data = match (subset, max_duration) {
        (Some(subset), _) => subset,
        (None, Some(max_duration)) => {
            let dir = repo::repository_cache_dir(global, &repository).context(
                "--max-duration keeps its rolling state in the cache directory: drop \
                 --no-cache, or give --cache-dir or set HOME",
            )?;
            ReadData::Rolling {
                max_duration,
                state_file: dir.join(VerifiedPacks::FILE_NAME),
            }
        }
        (None, None) if args.read_data => ReadData::All,
        (None, None) => ReadData::None,
    };
    let reads = read_data != ReadData::None;
    let mode = read_data.describe();
    let report = check(
        &repository,
        CheckOptions {
            read_data,
            threads: 0,
        },
    )?;
    let problems = |list: &[bunker_repo_format::check::Problem]| -> Vec<Value> {
        list.iter()
            .map(|p| json!({ "object": p.object, "message": p.message }))
            .collect()
    };
    if global.json {
        print_json(&json!({
            "healthy": report.is_healthy(),
            "snapshots": report.snapshots,
            "index_segments": report.index_segments,
            "packs": report.packs,
            "blobs": report.blobs,
            "read_data": mode,
            "packs_read": report.packs_read,
            "packs_unverified": report.packs_unverified,
            "read_packs": report.read_packs,
            "bytes_read": report.bytes_read,
            "state_file": report.state_file.as_ref().map(|p| p.to_string_lossy()),
            "errors": problems(&report.errors),
            "warnings": problems(&report.warnings),
            "broken_snapshots": report.broken_snapshots.iter().map(|b| json!({
                "id": b.id.to_hex(),
                "reasons": b.reasons,
            })).collect::<Vec<_>>(),
            "unreferenced_damage": report.unreferenced_damage,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "checked {} snapshots, {} index segments, {} packs, {} blobs{}",
            report.snapshots,
            report.index_segments,
            report.packs,
            report.blobs,
            if reads {
                format!(
                    "; read {} packs ({}, {mode}), {} not verified{}",
                    report.packs_read,
                    bytes(report.bytes_read),
                    report.packs_unverified,
                    if report.state_file.is_some() {
                        " by any run yet"
                    } else {
                        ""
                    }
                )
            } else {
                String::new()
            }
        )?;
        for warning in &report.warnings {
            writeln!(out, "warning: {}: {}", warning.object, warning.message)?;
        }
        for error in &report.errors {
            writeln!(out, "error: {}: {}", error.object, error.message)?;
        }
        for broken in &report.broken_snapshots {
            writeln!(
                out,
                "snapshot {} cannot be fully restored:",
                broken.id.short()
            )?;
            for reason in &broken.reasons {
                writeln!(out, "  {reason}")?;
            }
        }
        for pack in &report.unreferenced_damage {
            writeln!(
                out,
                "note: {pack}: no snapshot needs its lost blobs (`bunker repair index` drops a missing pack from the index; `bunker prune` removes what is left)"
            )?;
        }
        if report.is_healthy() {
            writeln!(out, "no errors found")?;
        } else {
            writeln!(
                out,
                "damage found: {}, {} affected",
                count(report.errors.len() as u64, "error", "errors"),
                count(
                    report.broken_snapshots.len() as u64,
                    "snapshot",
                    "snapshots"
                )
            )?;
            let mut packs: Vec<&str> = report
                .errors
                .iter()
                .map(|error| error.object.as_str())
                .filter(|object| object.starts_with("data/") || object.starts_with("tree/"))
                .collect();
            packs.sort_unstable();
            packs.dedup();
            if !packs.is_empty() {
                writeln!(
                    out,
                    "to salvage the damaged packs, so that the next backup stores what they lost \
                     again: bunker repair packs {}",
                    packs.join(" ")
                )?;
            }
        }
    }
    Ok(if report.is_healthy() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}
