//! `bunker check`.

use std::io::Write;

use anyhow::Result;
use bunker_repo_format::check::{CheckOptions, check};
use serde_json::{Value, json};

use crate::args::{CheckArgs, GlobalOptions};
use crate::output::{bytes, print_json};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &CheckArgs) -> Result<u8> {
    let repository = repo::open(global)?;
    repository.check_features(bunker_repo_format::config::Operation::Read)?;
    let report = check(
        &repository,
        CheckOptions {
            read_data: args.read_data,
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
            "packs_read": report.packs_read,
            "bytes_read": report.bytes_read,
            "errors": problems(&report.errors),
            "warnings": problems(&report.warnings),
            "broken_snapshots": report.broken_snapshots.iter().map(|b| json!({
                "id": b.id.to_hex(),
                "reasons": b.reasons,
            })).collect::<Vec<_>>(),
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
            if args.read_data {
                format!(
                    "; read {} packs ({})",
                    report.packs_read,
                    bytes(report.bytes_read)
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
        if report.is_healthy() {
            writeln!(out, "no errors found")?;
        } else {
            writeln!(
                out,
                "damage found: {} errors, {} snapshots affected",
                report.errors.len(),
                report.broken_snapshots.len()
            )?;
        }
    }
    Ok(if report.is_healthy() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}
