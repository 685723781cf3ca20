//! `bunker snapshots`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use bunker_repo_format::SnapshotId;
use bunker_repo_format::retention::GroupKey;
use bunker_repo_format::snapshot::Snapshot;
use serde_json::{Value, json};

use crate::args::{GlobalOptions, SnapshotsArgs};
use crate::output::{
    bytes, count, local_time, path_strings, print_json, snapshot_json, tag_strings,
};
use crate::select::readable_snapshots;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &SnapshotsArgs) -> Result<u8> {
    let filter = args.select.filter()?;
    let repository = repo::open(global, "listing snapshots")?;
    let mut snapshots: Vec<_> = readable_snapshots(&repository)?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    // Oldest first.
    snapshots.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    let Some(group_by) = args.group_by else {
        keep_latest(&mut snapshots, args.latest);
        if global.json {
            print_json(&Value::Array(list_json(&snapshots)))?;
        } else {
            print_table(&mut std::io::stdout().lock(), &snapshots)?;
        }
        return Ok(exit::OK);
    };
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, snapshot) in snapshots {
        groups
            .entry(GroupKey::of(&snapshot, group_by))
            .or_default()
            .push((id, snapshot));
    }
    for members in groups.values_mut() {
        keep_latest(members, args.latest);
    }
    if global.json {
        let list = groups
            .iter()
            .map(|(key, members)| {
                json!({
                    "group_key": {
                        "host": key.host,
                        "paths": key.paths.as_ref().map(|paths| paths
                            .iter()
                            .map(|p| String::from_utf8_lossy(p).into_owned())
                            .collect::<Vec<_>>()),
                        "tags": key.tags.as_ref().map(|tags| tags
                            .iter()
                            .map(|(k, v)| format!("{k}={v}"))
                            .collect::<Vec<_>>()),
                    },
                    "snapshots": list_json(members),
                })
            })
            .collect();
        print_json(&Value::Array(list))?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    for (n, (key, members)) in groups.iter().enumerate() {
        if n > 0 {
            writeln!(out)?;
        }
        writeln!(out, "snapshots of {}:", heading(key))?;
        print_table(&mut out, members)?;
    }
    Ok(exit::OK)
}

/// Keeps the newest `latest` of `snapshots` (oldest first), all without a limit.
fn keep_latest(snapshots: &mut Vec<(SnapshotId, Snapshot)>, latest: Option<usize>) {
    if let Some(latest) = latest {
        let skip = snapshots.len().saturating_sub(latest);
        snapshots.drain(..skip);
    }
}

fn list_json(snapshots: &[(SnapshotId, Snapshot)]) -> Vec<Value> {
    snapshots
        .iter()
        .map(|(id, s)| snapshot_json(id, s))
        .collect()
}

/// A group's fields as a heading: `host web1, paths /srv/app, tags (none)`.
fn heading(key: &GroupKey) -> String {
    let mut parts = Vec::new();
    if let Some(host) = &key.host {
        parts.push(format!("host {host}"));
    }
    if let Some(paths) = &key.paths {
        let paths: Vec<_> = paths.iter().map(|p| String::from_utf8_lossy(p)).collect();
        parts.push(format!("paths {}", paths.join(" ")));
    }
    if let Some(tags) = &key.tags {
        let tags: Vec<_> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
        parts.push(if tags.is_empty() {
            "tags (none)".to_owned()
        } else {
            format!("tags {}", tags.join(","))
        });
    }
    if parts.is_empty() {
        "every host, path and tag".to_owned()
    } else {
        parts.join(", ")
    }
}

fn print_table(out: &mut impl Write, snapshots: &[(SnapshotId, Snapshot)]) -> Result<()> {
    writeln!(
        out,
        "{:<8}  {:<19}  {:<16}  {:>10}  {:<24}  paths",
        "id", "time", "host", "size", "tags"
    )?;
    for (id, s) in snapshots {
        writeln!(
            out,
            "{:<8}  {:<19}  {:<16}  {:>10}  {:<24}  {}",
            id.short(),
            local_time(s.time),
            s.host,
            bytes(s.summary.bytes),
            tag_strings(s).join(","),
            path_strings(s).join(" ")
        )?;
    }
    writeln!(
        out,
        "{}",
        count(snapshots.len() as u64, "snapshot", "snapshots")
    )?;
    Ok(())
}
