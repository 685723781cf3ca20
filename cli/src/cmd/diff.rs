//! `bunker diff`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Result;
use bunker_agent::diff::{BlobDelta, Change, DiffSummary, Difference, diff};
use bunker_agent::navigate::locate;
use serde_json::{Value, json};

use super::split_snapshot_path;
use crate::args::{DiffArgs, GlobalOptions};
use crate::output::{bytes, print_json, set_bytes};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &DiffArgs) -> Result<u8> {
    let filter = args.select.filter()?;
    let repository = repo::open(global, "diff")?;
    let (old_spec, old_path) = split_snapshot_path(&args.old)?;
    let (new_spec, new_path) = split_snapshot_path(&args.new)?;
    let (old_id, old_snapshot) = filter.resolve(&repository, old_spec)?;
    let (new_id, new_snapshot) = filter.resolve(&repository, new_spec)?;
    let index = repository.load_index_for_reading()?.index;
    let old = locate(&repository, &index, &old_snapshot.tree, &old_path)?;
    let new = locate(&repository, &index, &new_snapshot.tree, &new_path)?;
    // Paths are shown below the new side's path, as `ls` shows them.
    let prefix = Path::new("/").join(&new_path);

    let mut listed: Vec<Value> = Vec::new();
    let mut out = std::io::stdout().lock();
    let summary = diff(&repository, &index, &old, &new, &prefix, &mut |found| {
        if found.change == Change::Metadata && !args.metadata {
            return Ok(());
        }
        if global.json {
            let mut change = json!({
                "change": found.change.name(),
                "type": found.kind,
            });
            set_bytes(&mut change, "path", found.path.as_os_str().as_bytes());
            listed.push(change);
            return Ok(());
        }
        write_line(&mut out, found)
            .map_err(|e| bunker_repo_format::Error::io("writing the differences", e))
    })?;
    drop(out);
    for (path, error) in &summary.unreadable {
        eprintln!(
            "bunker: {}: cannot read this directory; what is below it is not compared: {error}",
            path.display()
        );
    }

    if global.json {
        let delta = |d: &BlobDelta| json!({ "blobs": d.blobs, "bytes": d.bytes });
        print_json(&json!({
            "old": old_id.to_hex(),
            "new": new_id.to_hex(),
            "changes": listed,
            "added": summary.count(Change::Added),
            "removed": summary.count(Change::Removed),
            "content_changed": summary.count(Change::Content),
            "metadata_changed": summary.count(Change::Metadata),
            "kind_changed": summary.count(Change::Kind),
            "data_added": delta(&summary.data_added),
            "data_removed": delta(&summary.data_removed),
            "unreadable": summary.unreadable.iter()
                .map(|(path, _)| path.to_string_lossy().into_owned())
                .collect::<Vec<_>>(),
        }))?;
    } else {
        print_summary(&summary, &old_id.short(), &new_id.short())?;
    }
    Ok(if summary.unreadable.is_empty() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}

/// `CODE PATH`, a directory's path ending in `/`.
fn write_line(out: &mut impl Write, found: &Difference) -> std::io::Result<()> {
    write!(out, "{}    ", found.change.code())?;
    out.write_all(found.path.as_os_str().as_bytes())?;
    if found.kind == "dir" && found.path != Path::new("/") {
        out.write_all(b"/")?;
    }
    out.write_all(b"\n")
}

/// `OLD -> NEW: counts of each change; the data on one side only`.
fn print_summary(summary: &DiffSummary, old: &str, new: &str) -> Result<()> {
    writeln!(
        std::io::stdout().lock(),
        "{old} -> {new}: {} added, {} removed, {} changed, {} changed kind, {} changed metadata \
         only; data: {} blob(s) of {} added, {} blob(s) of {} removed",
        summary.count(Change::Added),
        summary.count(Change::Removed),
        summary.count(Change::Content),
        summary.count(Change::Kind),
        summary.count(Change::Metadata),
        summary.data_added.blobs,
        bytes(summary.data_added.bytes),
        summary.data_removed.blobs,
        bytes(summary.data_removed.bytes),
    )?;
    Ok(())
}
