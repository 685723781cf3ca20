//! `bunker forget`: remove snapshots by a retention policy.
//!
//! Plan, then apply: [`retention::apply`] decides, the table (or JSON) shows the decisions,
//! and only then are the removed snapshots forgotten, unless `--dry-run`; `bunker forget ID...`
//! forgets the named snapshots instead. Forgetting frees no space by itself; `prune` removes
//! the data no snapshot uses any more. In a locked repository a snapshot whose lock holds is
//! hidden by a forget marker and deleted by a prune after the lock lapses.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Result, bail};
use bunker_agent::Cancel;
use bunker_repo_format::SnapshotId;
use bunker_repo_format::config::Operation;
use bunker_repo_format::forget_marker::Forgotten;
use bunker_repo_format::retention::{self, Group, RetentionPolicy};
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

use crate::args::{ForgetArgs, GlobalOptions};
use crate::output::{count, print_json, rfc3339};
use crate::select::{SnapshotFilter, readable_snapshots};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &ForgetArgs, cancel: &Cancel) -> Result<u8> {
    // Everything the user typed is checked before the repository is opened.
    let policy = policy(args)?;
    if args.snapshots.is_empty() && !policy.has_rule() {
        bail!(
            "no --keep-* rule given, so nothing would be kept; refusing to remove every \
             snapshot (give e.g. --keep-last 10 or --keep-daily 7, or name the snapshots)"
        );
    }
    if !args.snapshots.is_empty() && policy.has_rule() {
        bail!("give either snapshots to forget or --keep-* rules, not both");
    }
    let filter = args.select.filter()?;

    let repository = repo::open(global, "forget")?;
    repository.check_features(Operation::Prune)?;
    let removed: Vec<SnapshotId> = if args.snapshots.is_empty() {
        // Unreadable snapshots are named and left alone: no rule can weigh them.
        let snapshots: Vec<(SnapshotId, Snapshot)> = readable_snapshots(&repository)?
            .into_iter()
            .filter(|(_, s)| filter.matches(s))
            .collect();
        let groups = retention::apply(&snapshots, &policy, args.group_by, Timestamp::now())?;
        if global.json {
            print_json(&Value::Array(groups.iter().map(group_json).collect()))?;
        } else {
            print_table(&groups)?;
        }
        groups
            .iter()
            .flat_map(Group::removed)
            .map(|d| d.id)
            .collect()
    } else {
        named_snapshots(global, &repository, &filter, &args.snapshots)?
    };
    if args.dry_run {
        if !global.json {
            writeln!(
                std::io::stdout(),
                "would remove {}{}",
                count(removed.len() as u64, "snapshot", "snapshots"),
                if args.prune {
                    "; prune not run in a dry run"
                } else {
                    ""
                }
            )?;
        }
        return Ok(exit::OK);
    }
    let mut failed = 0;
    let mut hidden: Vec<SystemTime> = Vec::new();
    for (done, id) in removed.iter().enumerate() {
        // Each forget is complete on its own: stopping between two leaves a consistent
        // repository with fewer snapshots removed.
        if cancel.is_cancelled() {
            eprintln!(
                "bunker: interrupted after removing {} of {} snapshots",
                done - failed,
                removed.len()
            );
            return Ok(exit::INTERRUPTED);
        }
        match repository.forget_snapshot(id) {
            Ok(Forgotten::Deleted) => {}
            Ok(Forgotten::Hidden { until, .. }) => hidden.push(until),
            Err(e) => {
                eprintln!("bunker: could not remove snapshot {}: {e}", id.short());
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} snapshots could not be removed",
            removed.len()
        );
    }
    if !global.json {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "removed {}",
            count(removed.len() as u64, "snapshot", "snapshots")
        )?;
        if let Some(last) = hidden.iter().max() {
            writeln!(
                out,
                "{} of them are locked until {} at the latest: forget markers hide them, and \
                 a prune after their locks lapse deletes them",
                hidden.len(),
                super::prune::date(*last)
            )?;
        }
    }
    if args.prune {
        let prune_args = crate::args::PruneArgs {
            grace: args.grace,
            max_unused: args.max_unused,
            max_repack: args.max_repack,
            keep_audit: args.keep_audit,
            dry_run: false,
        };
        return super::prune::run_on(global, &repository, &prune_args);
    }
    Ok(exit::OK)
}

/// The snapshots named on the command line, shown as the forget table (or JSON) shows
/// retention decisions. Each must match `filter` (`latest` is the newest that does), as
/// `--host`, `--tag` and `--path` promise that the snapshots they leave out stay.
fn named_snapshots(
    global: &GlobalOptions,
    repository: &bunker_repo_format::Repository,
    filter: &SnapshotFilter,
    specs: &[String],
) -> Result<Vec<SnapshotId>> {
    // An id is enough: a snapshot that cannot be read can be forgotten too (its time shows
    // as unknown), unless a filter asks what it is.
    let mut named: Vec<(SnapshotId, Option<Snapshot>)> = Vec::new();
    for spec in specs {
        let (id, snapshot) = if crate::select::names_latest(spec) || !filter.is_empty() {
            let (id, snapshot) = filter.resolve(repository, spec)?;
            (id, Some(snapshot))
        } else {
            let id = repository.resolve_snapshot_id(spec)?;
            let snapshot = match repository.load_snapshot(&id) {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    eprintln!(
                        "bunker: warning: snapshot {} cannot be read ({e}); forgetting it anyway",
                        id.short()
                    );
                    None
                }
            };
            (id, snapshot)
        };
        if !named.iter().any(|(known, _)| *known == id) {
            named.push((id, snapshot));
        }
    }
    if global.json {
        let rows: Vec<Value> = named
            .iter()
            .map(|(id, s)| {
                json!({
                    "id": id.to_hex(),
                    "short_id": id.short(),
                    "time": s.as_ref().map(|s| rfc3339(s.time)),
                    "keep": false,
                    "reasons": ["named"],
                })
            })
            .collect();
        print_json(&json!([{ "group": null, "snapshots": rows }]))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{:<8}  {:<19}  action", "id", "time (UTC)")?;
        for (id, s) in &named {
            let time = s
                .as_ref()
                .map_or_else(|| "(unreadable)".into(), |s| utc_time(s.time));
            writeln!(out, "{:<8}  {:<19}  remove", id.short(), time)?;
        }
    }
    Ok(named.into_iter().map(|(id, _)| id).collect())
}

fn policy(args: &ForgetArgs) -> Result<RetentionPolicy> {
    Ok(RetentionPolicy {
        keep_last: args.keep_last,
        keep_hourly: args.keep_hourly,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
        keep_yearly: args.keep_yearly,
        keep_within: args.keep_within,
        keep_within_hourly: args.keep_within_hourly,
        keep_within_daily: args.keep_within_daily,
        keep_within_weekly: args.keep_within_weekly,
        keep_within_monthly: args.keep_within_monthly,
        keep_within_yearly: args.keep_within_yearly,
        keep_tags: args.keep_tags.clone(),
        keep_min: args.keep_min,
    })
}

fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

fn group_json(group: &Group) -> Value {
    let key = &group.key;
    let snapshots: Vec<Value> = group
        .decisions
        .iter()
        .map(|d| {
            json!({
                "id": d.id.to_hex(),
                "short_id": d.id.short(),
                "time": rfc3339(d.time),
                "keep": d.keep,
                "reasons": d.reasons,
            })
        })
        .collect();
    json!({
        "group": {
            "host": key.host,
            "paths": key.paths.as_ref().map(|ps| ps.iter().map(|p| lossy(p)).collect::<Vec<_>>()),
            "tags": key.tags.as_ref().map(|ts| ts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()),
        },
        "snapshots": snapshots,
    })
}

/// Date and time in UTC, the zone the period rules bucket in.
fn utc_time(t: Timestamp) -> String {
    jiff::Timestamp::new(t.sec, 0)
        .map(|ts| ts.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| rfc3339(t))
}

fn group_title(group: &Group) -> String {
    let key = &group.key;
    let mut parts = Vec::new();
    if let Some(host) = &key.host {
        parts.push(format!("host {host}"));
    }
    if let Some(paths) = &key.paths {
        let paths: Vec<String> = paths.iter().map(|p| lossy(p)).collect();
        parts.push(format!("paths [{}]", paths.join(" ")));
    }
    if let Some(tags) = &key.tags {
        let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(format!("tags [{}]", tags.join(",")));
    }
    if parts.is_empty() {
        "all snapshots".to_owned()
    } else {
        parts.join(", ")
    }
}

fn print_table(groups: &[Group]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    for group in groups {
        writeln!(
            out,
            "{}: keep {}, remove {}",
            group_title(group),
            group.kept().count(),
            group.removed().count()
        )?;
        writeln!(
            out,
            "{:<8}  {:<19}  {:<6}  reasons",
            "id", "time (UTC)", "action"
        )?;
        for d in &group.decisions {
            let line = format!(
                "{:<8}  {:<19}  {:<6}  {}",
                d.id.short(),
                utc_time(d.time),
                if d.keep { "keep" } else { "remove" },
                d.reasons.join(", ")
            );
            writeln!(out, "{}", line.trim_end())?;
        }
        writeln!(out)?;
    }
    Ok(())
}
