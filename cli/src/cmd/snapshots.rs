//! `bunker snapshots`.

use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::args::{GlobalOptions, SnapshotsArgs};
use crate::output::{bytes, local_time, path_strings, print_json, snapshot_json, tag_strings};
use crate::select::readable_snapshots;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &SnapshotsArgs) -> Result<u8> {
    let filter = args.select.filter()?;
    let repository = repo::open(global, "listing snapshots")?;
    let mut snapshots: Vec<_> = readable_snapshots(&repository)?
        .into_iter()
        .filter(|(_, s)| filter.matches(s))
        .collect();
    if let Some(latest) = args.latest {
        // Oldest first: keep the tail.
        snapshots.sort_by_key(|(_, s)| s.time);
        let skip = snapshots.len().saturating_sub(latest);
        snapshots.drain(..skip);
    }
    if global.json {
        let list: Vec<Value> = snapshots
            .iter()
            .map(|(id, s)| snapshot_json(id, s))
            .collect();
        print_json(&Value::Array(list))?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<8}  {:<19}  {:<16}  {:>10}  {:<24}  paths",
        "id", "time", "host", "size", "tags"
    )?;
    for (id, s) in &snapshots {
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
    writeln!(out, "{} snapshots", snapshots.len())?;
    Ok(exit::OK)
}
