//! `bunker prune`.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Result;
use bunker_repo_format::Repository;
use bunker_repo_format::prune::{
    PruneEvent, PruneOptions, PrunePlan, PruneProgress, PruneReport, prune_observed,
    prune_plan_observed,
};
use serde_json::{Value, json};

use crate::args::{GlobalOptions, PruneArgs};
use crate::output::{bytes, print_json};
use crate::{exit, repo};

fn options(args: &PruneArgs) -> PruneOptions {
    PruneOptions {
        grace: args.grace,
        max_unused: args.max_unused / 100.0,
        max_repack: args.max_repack.unwrap_or(u64::MAX),
        host: bunker_agent::platform::hostname(),
        keep_audit: args.keep_audit,
    }
}

fn plan_json(plan: &PrunePlan) -> Value {
    json!({
        "snapshots": plan.snapshots,
        "used_blobs": plan.used_blobs,
        "packs": plan.packs.0,
        "pack_bytes": plan.packs.1,
        "condemn": plan.condemn.iter().map(|(p, _, size)| json!({"pack": p.to_hex(), "bytes": size})).collect::<Vec<_>>(),
        "repack": plan.repack.iter().map(|(p, _, size, live)| json!({"pack": p.to_hex(), "bytes": size, "live_bytes": live})).collect::<Vec<_>>(),
        "due_plans": plan.due.iter().map(|d| json!({
            "plan": d.name,
            "delete": d.delete.iter().map(|(p, _, size)| json!({"pack": p.to_hex(), "bytes": size})).collect::<Vec<_>>(),
            "recovered": d.recovered.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "waiting_plans": plan.waiting.iter().map(|(name, reason)| json!({"plan": name, "reason": reason})).collect::<Vec<_>>(),
        "unused_bytes_left": plan.unused_bytes_left,
        "stale_heartbeats": plan.stale_heartbeats.len(),
        "stale_temps": plan.stale_temps.iter().map(|t| json!({"file": t.name, "bytes": t.size})).collect::<Vec<_>>(),
        "merge_index": plan.merge_segments,
        "expired_audit_records": plan.expired_audit.len(),
        "locked": plan.locked.iter().map(|(name, until)| json!({"object": name, "until": date(*until)})).collect::<Vec<_>>(),
    })
}

fn report_json(report: &PruneReport) -> Value {
    json!({
        "deleted_packs": report.deleted_packs,
        "deleted_bytes": report.deleted_bytes,
        "recovered_packs": report.recovered_packs,
        "condemned_packs": report.condemned_packs,
        "repacked_packs": report.repacked_packs,
        "plans_executed": report.plans_executed,
        "plan_written": report.plan_written,
        "index_segments_written": report.segments_written,
        "index_segments_removed": report.segments_removed,
        "heartbeats_removed": report.heartbeats_removed,
        "temps_removed": report.temps_removed.0,
        "temp_bytes_removed": report.temps_removed.1,
        "locked": report.locked.iter().map(|(name, until)| json!({"object": name, "until": date(*until)})).collect::<Vec<_>>(),
        "locks_extended": report.locks_extended,
        "forgotten_snapshots_deleted": report.forgotten_snapshots_deleted,
        "forget_markers_removed": report.forget_markers_removed,
        "audit_records_removed": report.audit_records_removed,
    })
}

/// A storage date in RFC 3339.
pub fn date(time: std::time::SystemTime) -> String {
    jiff::Timestamp::try_from(time).map_or_else(|_| "?".to_owned(), |t| t.to_string())
}

fn print_plan(out: &mut impl Write, plan: &PrunePlan) -> std::io::Result<()> {
    writeln!(
        out,
        "{} snapshots use {} blobs; {} packs hold {}",
        plan.snapshots,
        plan.used_blobs,
        plan.packs.0,
        bytes(plan.packs.1)
    )?;
    let deleting: u64 = plan
        .due
        .iter()
        .flat_map(|d| d.delete.iter())
        .map(|d| d.2)
        .sum();
    let delete_count: usize = plan.due.iter().map(|d| d.delete.len()).sum();
    let recovered: usize = plan.due.iter().map(|d| d.recovered.len()).sum();
    writeln!(
        out,
        "due plans: {}: delete {} packs ({}), recover {} packs",
        plan.due.len(),
        delete_count,
        bytes(deleting),
        recovered
    )?;
    for (name, reason) in &plan.waiting {
        writeln!(out, "waiting: {name}: {reason}")?;
    }
    for (name, until) in &plan.locked {
        writeln!(
            out,
            "locked: {name} until {}: deleted by a run after that",
            date(*until)
        )?;
    }
    if !plan.stale_temps.is_empty() {
        writeln!(
            out,
            "temp files left by interrupted writers: {} ({}), to remove",
            plan.stale_temps.len(),
            bytes(plan.stale_temps.iter().map(|t| t.size).sum())
        )?;
    }
    if !plan.expired_audit.is_empty() {
        writeln!(
            out,
            "audit records older than --keep-audit: {}, to remove",
            plan.expired_audit.len()
        )?;
    }
    let condemn_bytes: u64 = plan.condemn.iter().map(|c| c.2).sum();
    let repack_bytes: u64 = plan.repack.iter().map(|r| r.2).sum();
    writeln!(
        out,
        "new plan: condemn {} unused packs ({}), repack {} packs ({}); unused space left {}",
        plan.condemn.len(),
        bytes(condemn_bytes),
        plan.repack.len(),
        bytes(repack_bytes),
        bytes(plan.unused_bytes_left)
    )
}

/// Shows a prune run's progress on stderr: one rewritten line per phase on a terminal,
/// JSON lines (`{"progress": ...}`) with `--json`, nothing otherwise. Counters are shown
/// at most ten times a second, plus each phase's first and last step.
struct Progress {
    json: bool,
    terminal: bool,
    phase: &'static str,
    shown: Option<Instant>,
}

impl Progress {
    fn new(global: &GlobalOptions) -> Self {
        Self {
            json: global.json,
            terminal: !global.json && std::io::stderr().is_terminal(),
            phase: "",
            shown: None,
        }
    }

    fn line(event: &PruneEvent) -> String {
        match event {
            PruneEvent::Listing => "listing snapshots, index and packs".into(),
            PruneEvent::ReadingIndex { done, total } => {
                format!("reading index segments {done}/{total}")
            }
            PruneEvent::WalkingSnapshots {
                done,
                total,
                used_blobs,
            } => format!("walking snapshots {done}/{total}, {used_blobs} blobs used"),
            PruneEvent::Deciding => "deciding".into(),
            PruneEvent::Repacking {
                done,
                total,
                bytes: done_bytes,
                total_bytes,
            } => format!(
                "repacking packs {done}/{total}, {} of {}",
                bytes(*done_bytes),
                bytes(*total_bytes)
            ),
            PruneEvent::WritingIndex { segments } => {
                format!("writing the index ({segments} segments replaced)")
            }
            PruneEvent::Deleting {
                done,
                total,
                bytes: freed,
            } => format!("deleting packs {done}/{total}, {} freed", bytes(*freed)),
            PruneEvent::Done => "done".into(),
            _ => event.phase().into(),
        }
    }

    fn json(event: &PruneEvent) -> Value {
        let mut value = json!({ "phase": event.phase() });
        let fields = match event {
            PruneEvent::ReadingIndex { done, total } => json!({ "done": done, "total": total }),
            PruneEvent::WalkingSnapshots {
                done,
                total,
                used_blobs,
            } => json!({ "done": done, "total": total, "used_blobs": used_blobs }),
            PruneEvent::Repacking {
                done,
                total,
                bytes,
                total_bytes,
            } => {
                json!({ "done": done, "total": total, "bytes": bytes, "total_bytes": total_bytes })
            }
            PruneEvent::WritingIndex { segments } => json!({ "segments": segments }),
            PruneEvent::Deleting { done, total, bytes } => {
                json!({ "done": done, "total": total, "bytes": bytes })
            }
            _ => json!({}),
        };
        if let (Some(value), Value::Object(fields)) = (value.as_object_mut(), fields) {
            value.extend(fields);
        }
        json!({ "progress": value })
    }

    /// True for a counter's last step (or an event without a counter).
    fn is_last(event: &PruneEvent) -> bool {
        match event {
            PruneEvent::ReadingIndex { done, total }
            | PruneEvent::WalkingSnapshots { done, total, .. }
            | PruneEvent::Repacking { done, total, .. }
            | PruneEvent::Deleting { done, total, .. } => done == total,
            _ => true,
        }
    }
}

impl PruneProgress for Progress {
    fn event(&mut self, event: &PruneEvent) {
        if !self.json && !self.terminal {
            return;
        }
        let new_phase = event.phase() != self.phase;
        let due = self
            .shown
            .is_none_or(|at| at.elapsed() >= Duration::from_millis(100));
        if !(new_phase || due || Self::is_last(event)) {
            return;
        }
        self.shown = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        // Progress is best effort: a closed stderr must not stop the prune.
        let _ = if self.json {
            writeln!(err, "{}", Self::json(event))
        } else {
            let end = if new_phase && !self.phase.is_empty() {
                "\n"
            } else {
                ""
            };
            write!(err, "{end}\r\x1b[2K{}", Self::line(event)).and_then(|()| {
                if matches!(event, PruneEvent::Done) {
                    writeln!(err)
                } else {
                    err.flush()
                }
            })
        };
        self.phase = event.phase();
    }
}

/// Runs prune on an open repository (also used by `forget --prune`).
pub fn run_on(global: &GlobalOptions, repository: &Repository, args: &PruneArgs) -> Result<u8> {
    let options = options(args);
    let mut progress = Progress::new(global);
    let plan = prune_plan_observed(repository, &options, args.dry_run, &mut progress)?;
    if progress.terminal {
        // The plan summary goes to stdout: end the progress line first.
        eprintln!();
        progress.phase = "";
    }
    if args.dry_run {
        if global.json {
            print_json(&json!({ "dry_run": true, "plan": plan_json(&plan) }))?;
        } else {
            let mut out = std::io::stdout().lock();
            print_plan(&mut out, &plan)?;
            writeln!(out, "dry run: nothing changed")?;
        }
        return Ok(exit::OK);
    }
    let planned = plan_json(&plan);
    if !global.json {
        print_plan(&mut std::io::stdout().lock(), &plan)?;
    }
    let report = prune_observed(repository, plan, &mut progress)?;
    if global.json {
        print_json(&json!({ "dry_run": false, "plan": planned, "report": report_json(&report) }))?;
    } else {
        writeln!(
            std::io::stdout(),
            "deleted {} packs ({}), recovered {}, condemned {} (repacked {}), {} plans executed{}",
            report.deleted_packs,
            bytes(report.deleted_bytes),
            report.recovered_packs,
            report.condemned_packs,
            report.repacked_packs,
            report.plans_executed,
            report
                .plan_written
                .as_ref()
                .map(|p| format!("; wrote {p}"))
                .unwrap_or_default()
        )?;
        if report.temps_removed.0 > 0 {
            writeln!(
                std::io::stdout(),
                "removed {} temp files ({}) left by interrupted writers",
                report.temps_removed.0,
                bytes(report.temps_removed.1)
            )?;
        }
        if report.audit_records_removed > 0 {
            writeln!(
                std::io::stdout(),
                "removed {} audit records older than --keep-audit",
                report.audit_records_removed
            )?;
        }
        if !report.locked.is_empty() || report.locks_extended > 0 {
            writeln!(
                std::io::stdout(),
                "{} objects kept until their locks lapse; {} locks extended",
                report.locked.len(),
                report.locks_extended
            )?;
        }
    }
    Ok(exit::OK)
}

pub fn run(global: &GlobalOptions, args: &PruneArgs) -> Result<u8> {
    let repository = repo::open(global, "prune")?;
    run_on(global, &repository, args)
}
