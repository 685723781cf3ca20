//! `bunker stats`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::stats::{BlobTotals, SnapshotStats, StorageStats, snapshot_stats, storage_stats};
use serde_json::{Value, json};

use crate::args::{GlobalOptions, StatsArgs};
use crate::output::{bytes, print_json};
use crate::select::chosen_snapshots;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &StatsArgs) -> Result<u8> {
    let filter = args.select.filter()?;
    let repository = repo::open(global, "stats")?;
    // Snapshots are listed before the index is loaded: every blob of a listed snapshot is
    // then in the index (writers index their blobs before they write their snapshot).
    let snapshots = chosen_snapshots(&repository, &filter, &args.snapshots)?;
    let stored_snapshots = repository.list_snapshot_ids()?.len();
    let loaded = repository.load_index_for_reading()?;
    for (segment, error) in &loaded.damaged {
        eprintln!("bunker: warning: index segment {segment} cannot be read: {error}");
    }
    let counted = snapshot_stats(&repository, &loaded.index, &snapshots)?;
    let storage = storage_stats(&repository, &loaded.index)?;
    for problem in &counted.unreadable {
        eprintln!("bunker: {problem}; what is below it is not counted");
    }
    if counted.missing > 0 {
        eprintln!(
            "bunker: {} blob(s) the snapshots use are missing from the repository (`bunker \
             check` names them)",
            counted.missing
        );
    }
    // The blobs no snapshot uses are known only when every snapshot was counted whole.
    let whole = snapshots.len() == stored_snapshots
        && counted.unreadable.is_empty()
        && loaded.damaged.is_empty();
    let unreferenced = whole.then(|| Unreferenced::of(&storage, &counted));
    if global.json {
        print_json(&stats_json(&counted, &storage, unreferenced.as_ref()))?;
    } else {
        print_text(&counted, &storage, unreferenced.as_ref())?;
    }
    let damaged = !counted.unreadable.is_empty() || counted.missing > 0;
    Ok(if damaged {
        exit::DAMAGE_FOUND
    } else {
        exit::OK
    })
}

/// Indexed blobs that no snapshot uses.
struct Unreferenced {
    data: BlobTotals,
    trees: BlobTotals,
}

impl Unreferenced {
    fn of(storage: &StorageStats, counted: &SnapshotStats) -> Unreferenced {
        Unreferenced {
            data: storage.indexed_data.less(&counted.data),
            trees: storage.indexed_trees.less(&counted.trees),
        }
    }

    fn blobs(&self) -> u64 {
        self.data.blobs + self.trees.blobs
    }

    fn stored_bytes(&self) -> u64 {
        self.data.stored_bytes + self.trees.stored_bytes
    }
}

fn print_text(
    counted: &SnapshotStats,
    storage: &StorageStats,
    unreferenced: Option<&Unreferenced>,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let blobs = |totals: &BlobTotals| {
        format!(
            "{} blob(s): {}, {} stored",
            totals.blobs,
            bytes(totals.raw_bytes),
            bytes(totals.stored_bytes)
        )
    };
    let times = |ratio: Option<f64>| ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}x"));
    writeln!(out, "snapshots      {}", counted.snapshots)?;
    writeln!(
        out,
        "restore size   {} in {} file(s)",
        bytes(counted.restore_bytes),
        counted.files
    )?;
    writeln!(out, "unique data    {}", blobs(&counted.data))?;
    writeln!(out, "trees          {}", blobs(&counted.trees))?;
    writeln!(
        out,
        "deduplication  {} (restore size / unique data)",
        times(counted.deduplication_ratio())
    )?;
    writeln!(
        out,
        "compression    {} (unique data / stored)",
        times(counted.compression_ratio())
    )?;
    writeln!(
        out,
        "repository     {} in {} object(s)",
        bytes(storage.total_bytes()),
        storage.total_objects()
    )?;
    for kind in storage.objects.iter().filter(|o| o.count > 0) {
        writeln!(
            out,
            "  {:<12} {} object(s), {}",
            kind_name(kind.kind),
            kind.count,
            bytes(kind.bytes)
        )?;
    }
    if let Some(unreferenced) = unreferenced {
        writeln!(
            out,
            "unreferenced   {} blob(s), {} stored (`bunker prune` removes them)",
            unreferenced.blobs(),
            bytes(unreferenced.stored_bytes())
        )?;
    }
    if storage.duplicate_blobs > 0 {
        writeln!(
            out,
            "duplicates     {} blob(s) stored twice (`bunker prune` keeps one)",
            storage.duplicate_blobs
        )?;
    }
    Ok(())
}

/// `data`, `tree`, `index`, `snapshots`, ...: the kind's directory in the repository.
fn kind_name(kind: bunker_repo_format::object::ObjectKind) -> &'static str {
    kind.prefix().trim_end_matches('/')
}

fn totals_json(totals: &BlobTotals) -> Value {
    json!({
        "blobs": totals.blobs,
        "raw_bytes": totals.raw_bytes,
        "stored_bytes": totals.stored_bytes,
    })
}

fn stats_json(
    counted: &SnapshotStats,
    storage: &StorageStats,
    unreferenced: Option<&Unreferenced>,
) -> Value {
    let objects: serde_json::Map<String, Value> = storage
        .objects
        .iter()
        .map(|o| {
            (
                kind_name(o.kind).to_owned(),
                json!({ "objects": o.count, "bytes": o.bytes }),
            )
        })
        .collect();
    json!({
        "snapshots": counted.snapshots,
        "files": counted.files,
        "restore_bytes": counted.restore_bytes,
        "data": totals_json(&counted.data),
        "trees": totals_json(&counted.trees),
        "deduplication_ratio": counted.deduplication_ratio(),
        "compression_ratio": counted.compression_ratio(),
        "missing_blobs": counted.missing,
        "unreadable": counted.unreadable,
        "repository": {
            "bytes": storage.total_bytes(),
            "objects": storage.total_objects(),
            "by_kind": objects,
            "indexed_data": totals_json(&storage.indexed_data),
            "indexed_trees": totals_json(&storage.indexed_trees),
            "duplicate_blobs": storage.duplicate_blobs,
            "unreferenced": unreferenced.map(|u| json!({
                "data": totals_json(&u.data),
                "trees": totals_json(&u.trees),
            })),
        },
    })
}
