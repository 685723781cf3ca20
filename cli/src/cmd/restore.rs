//! `bunker restore`.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use bunker_agent::Cancel;
use bunker_agent::platform;
use bunker_agent::progress::Progress;
use bunker_agent::restore::{RestoreOptions, restore, restore_volume, stream_file};
use bunker_repo_format::snapshot::SourceKind;
use serde_json::json;

use super::split_snapshot_path;
use crate::args::{GlobalOptions, RestoreArgs};
use crate::output::{bytes, print_json};
use crate::progress::Display;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &RestoreArgs, cancel: &Cancel) -> Result<u8> {
    let (spec, path) = split_snapshot_path(&args.snapshot);
    let repository = repo::open(global, "restore")?;
    repository.check_features(bunker_repo_format::config::Operation::Read)?;
    let (id, snapshot) = repository.resolve_snapshot(spec)?;
    let loaded = repository.load_index_for_reading()?;
    let mut err = std::io::stderr().lock();
    for (segment, error) in &loaded.damaged {
        writeln!(
            err,
            "bunker: warning: index segment {segment} is unreadable: {error}"
        )?;
    }
    if args.stdout {
        drop(err);
        let mut out = std::io::stdout().lock();
        stream_file(
            &repository,
            &loaded.index,
            &snapshot.tree,
            &path,
            &mut out,
            cancel,
        )?;
        return Ok(exit::OK);
    }
    let started = std::time::Instant::now();
    let (outcome, target) = match (&args.volume_target, &args.target) {
        (Some(device), _) => {
            if snapshot.source_kind != SourceKind::Volume {
                anyhow::bail!(
                    "snapshot {} is not a volume snapshot; restore it with --target DIR",
                    id.short()
                );
            }
            let outcome =
                restore_volume(&repository, &loaded.index, &snapshot.tree, device, cancel)?;
            (outcome, device)
        }
        (None, Some(target)) => {
            let progress = Arc::new(Progress::new());
            let options = RestoreOptions {
                ownership: platform::is_root(),
                progress: Some(Arc::clone(&progress)),
            };
            // The display writes to stderr from its own thread: the lock must be free.
            drop(err);
            let display = Display::start("restore", progress, global.json);
            let outcome = restore(
                &repository,
                &loaded.index,
                &snapshot.tree,
                &path,
                target,
                &options,
                cancel,
            );
            display.finish();
            err = std::io::stderr().lock();
            (outcome?, target)
        }
        (None, None) => anyhow::bail!("give --target DIR, --volume-target DEVICE or --stdout"),
    };
    for warning in &outcome.warnings {
        writeln!(err, "bunker: warning: {warning}")?;
    }
    for error in &outcome.errors {
        writeln!(err, "bunker: {error}")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    if global.json {
        print_json(&json!({
            "snapshot_id": id.to_hex(),
            "target": target.to_string_lossy(),
            "files_skipped": outcome.files_skipped,
            "bytes_skipped": outcome.bytes_skipped,
            "files": outcome.files,
            "dirs": outcome.dirs,
            "others": outcome.others,
            "bytes": outcome.bytes,
            "duration_ms": (seconds * 1000.0) as u64,
            "errors": outcome.errors,
            "warnings": outcome.warnings,
        }))?;
    } else {
        writeln!(
            std::io::stdout(),
            "restored snapshot {} to {}: {} files ({}), {} directories, {} other entries in {:.2} s",
            id.short(),
            target.display(),
            outcome.files,
            bytes(outcome.bytes),
            outcome.dirs,
            outcome.others,
            seconds
        )?;
        if outcome.files_skipped > 0 {
            writeln!(
                std::io::stdout(),
                "{} files ({}) were already in place and left alone",
                outcome.files_skipped,
                bytes(outcome.bytes_skipped)
            )?;
        }
        if !outcome.errors.is_empty() {
            writeln!(
                std::io::stdout(),
                "{} entries could not be restored (listed on stderr)",
                outcome.errors.len()
            )?;
        }
    }
    Ok(if outcome.errors.is_empty() {
        exit::OK
    } else {
        exit::RESTORE_INCOMPLETE
    })
}
