//! `bunker find`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::backup::Excludes;
use bunker_agent::find::Finder;
use serde_json::{Value, json};

use super::ls::{entry_json, write_line};
use crate::args::{FindArgs, GlobalOptions};
use crate::output::{local_time, print_json, rfc3339};
use crate::select::chosen_snapshots;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &FindArgs) -> Result<u8> {
    let patterns = Excludes::new(&args.patterns)?;
    let filter = args.select.filter()?;
    let repository = repo::open(global, "find")?;
    let snapshots = chosen_snapshots(&repository, &filter, &args.snapshots)?;
    let index = repository.load_index_for_reading()?.index;
    let mut finder = Finder::new(&repository, &index, &patterns);

    let mut listed = Vec::new();
    let (mut total, mut with_matches, mut damaged) = (0usize, 0usize, 0usize);
    let mut out = std::io::stdout().lock();
    for (id, snapshot) in &snapshots {
        let matches = finder.search(&snapshot.tree);
        for (path, error) in &matches.unreadable {
            damaged += 1;
            eprintln!(
                "bunker: snapshot {}: {}: cannot read this directory; what is below it was not \
                 searched: {error}",
                id.short(),
                path.display()
            );
        }
        if matches.found.is_empty() {
            continue;
        }
        total += matches.found.len();
        with_matches += 1;
        if global.json {
            listed.push(json!({
                "snapshot_id": id.to_hex(),
                "time": rfc3339(snapshot.time),
                "host": snapshot.host,
                "matches": matches.found.iter()
                    .map(|found| entry_json(&found.path, &found.entry))
                    .collect::<Vec<Value>>(),
            }));
            continue;
        }
        writeln!(
            out,
            "snapshot {} of {} at {}:",
            id.short(),
            snapshot.host,
            local_time(snapshot.time)
        )?;
        for found in &matches.found {
            write_line(&mut out, &found.path, &found.entry, args.long)?;
        }
    }
    if global.json {
        print_json(&json!({
            "searched": snapshots.len(),
            "matches": total,
            "snapshots": listed,
        }))?;
    } else {
        writeln!(
            out,
            "{total} match(es) in {with_matches} of {} snapshot(s) searched",
            snapshots.len()
        )?;
    }
    Ok(if damaged == 0 {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    })
}
