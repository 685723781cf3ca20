//! `bunker verify`: restore drills run now, from the command line.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use bunker_agent::Cancel;
use bunker_agent::drill::{self, DrillReport, DrillSpec, Failure};
use bunker_agent::platform;
use bunker_repo_format::snapshot::{Snapshot, SourceKind};
use serde_json::json;

use crate::args::{GlobalOptions, VerifyArgs};
use crate::output::{bytes, count, print_json, rfc3339};
use crate::policy_file::PolicyFile;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &VerifyArgs, cancel: &Cancel) -> Result<u8> {
    let policy = PolicyFile::in_effect(&args.policy)?;
    let filter = args.select.filter()?;
    // Verify proves what the store holds: no copy kept on this host stands in for it.
    let repository = repo::open(global, "verify")?.bypassing_cache();
    // Without filters, a snapshot that cannot be read is a failed drill (it might be some
    // source's newest, and it cannot be restored); with them, whether it matches is unknown
    // and it is named as a warning.
    let (chosen, unreadable) = match &args.snapshot {
        Some(spec) => (vec![filter.resolve(&repository, spec)?], Vec::new()),
        None => {
            let mut latest = drill::latest_per_source(&repository)?;
            latest
                .newest
                .retain(|(_, snapshot)| filter.matches(snapshot));
            if filter.is_empty() {
                (latest.newest, latest.unreadable)
            } else {
                crate::select::warn_left_out(&latest.unreadable);
                (latest.newest, Vec::new())
            }
        }
    };
    if chosen.is_empty() && unreadable.is_empty() {
        if filter.is_empty() {
            anyhow::bail!("the repository has no snapshots to verify");
        }
        anyhow::bail!("no source's latest snapshot matches {}", filter.describe());
    }
    let loaded = repository.load_index_for_reading()?;
    for (segment, error) in &loaded.damaged {
        eprintln!("bunker: warning: index segment {segment} is unreadable: {error}");
    }
    let mut reports = Vec::new();
    for (id, snapshot) in &chosen {
        let target = args.target.as_ref().map(|dir| {
            if chosen.len() == 1 {
                dir.clone()
            } else {
                dir.join(id.short())
            }
        });
        if let (Some(dir), true) = (&args.target, chosen.len() > 1) {
            std::fs::create_dir_all(dir)?;
        }
        let spec = spec(policy.as_ref(), snapshot, args, target);
        let report = drill::run(&repository, &loaded.index, id, snapshot, &spec, cancel)?;
        let record = report.audit_record("cli", platform::hostname(), platform::username());
        crate::audit::record_own(&repository, &record);
        if !global.json {
            print_line(&report, "bunker")?;
        }
        reports.push(report);
    }
    if global.json {
        print_json(&json!({
            "passed": unreadable.is_empty() && reports.iter().all(DrillReport::passed),
            "drills": reports.iter().map(report_json).collect::<Vec<_>>(),
            "unreadable": unreadable.iter().map(|(id, error)| json!({
                "snapshot_id": id.to_hex(),
                "error": error.to_string(),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for (id, error) in &unreadable {
            writeln!(
                out,
                "FAIL snapshot {}: cannot be read, so cannot be restored ({error}); `bunker \
                 forget {}` removes it",
                id.short(),
                id.short()
            )?;
        }
    }
    let unreadable_failure = (!unreadable.is_empty()).then_some(Failure::Restore);
    Ok(reports
        .iter()
        .filter_map(|r| r.failure)
        .chain(unreadable_failure)
        .map(exit::drill_failure)
        .max()
        .unwrap_or(exit::OK))
}

/// The drill of `snapshot`: its policy source's settings, if the policy has the source,
/// overridden by the command line.
fn spec(
    policy: Option<&PolicyFile>,
    snapshot: &Snapshot,
    args: &VerifyArgs,
    target: Option<PathBuf>,
) -> DrillSpec {
    let volume = snapshot.source_kind == SourceKind::Volume;
    let mut spec = match policy.and_then(|p| p.source_of(snapshot)) {
        Some(source) => DrillSpec::for_source(source),
        None => DrillSpec {
            fsck: volume,
            ownership: platform::is_root(),
            ..DrillSpec::default()
        },
    };
    spec.target = target;
    spec.keep = args.keep;
    if args.smoke.is_some() {
        spec.smoke.clone_from(&args.smoke);
    }
    spec.fsck &= !args.no_fsck;
    spec.mount |= args.mount && volume;
    spec
}

/// One line per drill on stdout; its problems and warnings on stderr, each after
/// `program: `.
pub(crate) fn print_line(report: &DrillReport, program: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let source = if report.source.is_empty() {
        "-"
    } else {
        &report.source
    };
    write!(
        out,
        "{} snapshot {} source {} ({}): RTO {:.2} s, verify {:.2} s, {}, {}",
        if report.passed() { "PASS" } else { "FAIL" },
        report.snapshot.short(),
        source,
        report.kind,
        report.restore_time.as_secs_f64(),
        report.verify_time.as_secs_f64(),
        count(report.files, "file", "files"),
        bytes(report.bytes),
    )?;
    if !report.checks.is_empty() {
        write!(out, ", checks {}", report.checks.join(","))?;
    }
    if let Some(failure) = report.failure {
        write!(out, ", failure {}", failure.name())?;
    }
    if report.kept {
        write!(out, ", kept in {}", report.target.display())?;
    }
    writeln!(out)?;
    drop(out);
    for error in &report.errors {
        eprintln!("{program}: {error}");
    }
    for warning in &report.warnings {
        eprintln!("{program}: warning: {warning}");
    }
    Ok(())
}

fn report_json(report: &DrillReport) -> serde_json::Value {
    json!({
        "snapshot_id": report.snapshot.to_hex(),
        "source": report.source,
        "kind": report.kind,
        "time": rfc3339(report.time),
        "passed": report.passed(),
        "failure": report.failure.map(Failure::name),
        "target": report.target.to_string_lossy(),
        "kept": report.kept,
        "restore_ms": drill::report::millis(report.restore_time),
        "verify_ms": drill::report::millis(report.verify_time),
        "duration_ms": drill::report::millis(report.duration),
        "files": report.files,
        "bytes": report.bytes,
        "checks": report.checks,
        "errors": report.errors,
        "warnings": report.warnings,
    })
}
