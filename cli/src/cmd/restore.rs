//! `bunker restore`.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use bunker_agent::Cancel;
use bunker_agent::lease::{LEASE_VERSION, Lease, LeaseError, new_lease_id};
use bunker_agent::navigate::{Located, locate};
use bunker_agent::platform;
use bunker_agent::progress::Progress;
use bunker_agent::restore::{
    Overwrite, RestoreFilter, RestoreOptions, RestoreOutcome, restore, restore_volume,
    stream_located, stream_tar,
};
use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::{Snapshot, SourceKind};
use bunker_repo_format::{Repository, SnapshotId};
use serde_json::json;

use super::{restores, split_snapshot_path};
use crate::args::{GlobalOptions, RestoreArgs};
use crate::output::{bytes, count, entries, print_json};
use crate::progress::Display;
use crate::{audit, exit, repo};

/// `--stdout`: one file's content, or a volume's, in order; a directory as a tar archive.
fn stream(
    repository: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    path: &Path,
    cancel: &Cancel,
) -> Result<u8> {
    // Large writes: a pipe takes them whole, and tar's 512-byte headers do not each cost
    // a system call.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    match locate(repository, index, &snapshot.tree, path)? {
        Located::Dir { tree, entry } if snapshot.source_kind != SourceKind::Volume => {
            let archived = stream_tar(repository, index, &tree, entry.as_ref(), &mut out, cancel)?;
            for warning in &archived.warnings {
                eprintln!("bunker: warning: {warning}");
            }
        }
        located => {
            stream_located(
                repository,
                index,
                &snapshot.tree,
                path,
                located,
                &mut out,
                cancel,
            )?;
            out.flush().context("writing to stdout")?;
        }
    }
    Ok(exit::OK)
}

pub fn run(global: &GlobalOptions, args: &RestoreArgs, cancel: &Cancel) -> Result<u8> {
    let (spec, path) = split_snapshot_path(&args.snapshot)?;
    let policy = restores::policy_in_effect(&args.policy)?;
    let expire = args.expire;
    let repository = repo::open(global, "restore")?;
    repository.check_features(bunker_repo_format::config::Operation::Read)?;
    // Checked after opening, so a refused restore is audited too.
    let resolved = match (&args.volume_target, &args.target) {
        (Some(device), _) if is_device(device) => {
            // Restore roots govern directories and image files, not block devices.
            if expire.is_some() {
                return Err(LeaseError::Unleasable {
                    target: device.clone(),
                    reason: "it is a device".to_owned(),
                }
                .into());
            }
            Some(device.clone())
        }
        (Some(target), _) | (None, Some(target)) if !args.stdout => {
            let roots = restores::restore_roots(policy.as_ref())?;
            let resolved = roots.check(target)?;
            if expire.is_some() {
                roots.check_leasable(&resolved)?;
                check_fresh(&resolved)?;
            }
            Some(resolved)
        }
        _ => None,
    };
    let (id, snapshot) = args.select.filter()?.resolve(&repository, spec)?;
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
        return stream(&repository, &loaded.index, &snapshot, &path, cancel);
    }
    let started = std::time::Instant::now();
    // The progress display writes to stderr from its own thread: the lock must be free.
    drop(err);
    let progress = Arc::new(Progress::new());
    // Counting what a restore will write reads every tree once more: not when unseen.
    let shown = Display::shows(global.json);
    let display = || Display::start("restore", Arc::clone(&progress), global.json);
    let (outcome, target) = match (&args.volume_target, resolved.as_ref()) {
        (Some(_), Some(device)) => {
            if snapshot.source_kind != SourceKind::Volume {
                anyhow::bail!(
                    "snapshot {} is not a volume snapshot; restore it with --target DIR",
                    id.short()
                );
            }
            let display = display();
            let outcome = restore_volume(
                &repository,
                &loaded.index,
                &snapshot.tree,
                device,
                shown.then_some(&progress),
                cancel,
            );
            display.finish();
            let mut outcome = outcome?;
            if args.verify && outcome.errors.is_empty() {
                let found = bunker_agent::verify::verify_volume(
                    &repository,
                    &loaded.index,
                    &snapshot.tree,
                    device,
                )?;
                if found.differences.is_empty() {
                    outcome.files_verified = found.files;
                    outcome.bytes_verified = found.bytes;
                }
                let differences = found.differences.iter();
                outcome.errors.extend(
                    differences.map(|d| format!("{}: verification: {}", d.path.display(), d.what)),
                );
            }
            (outcome, device)
        }
        (None, Some(target)) => {
            let options = RestoreOptions {
                ownership: platform::is_root(),
                progress: shown.then(|| Arc::clone(&progress)),
                filter: RestoreFilter::new(&args.includes, &args.excludes)?,
                delete: args.delete,
                backed_up: snapshot
                    .paths
                    .iter()
                    .map(|p| std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p)))
                    .collect(),
                dry_run: args.dry_run,
                overwrite: args.overwrite.into(),
                verify: args.verify,
            };
            let display = display();
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
            (outcome?, target)
        }
        _ => anyhow::bail!("give --target DIR, --volume-target DEVICE or --stdout"),
    };
    let mut err = std::io::stderr().lock();
    for warning in &outcome.warnings {
        writeln!(err, "bunker: warning: {warning}")?;
    }
    for error in &outcome.errors {
        writeln!(err, "bunker: {error}")?;
    }
    if outcome.sockets_not_restored > 0 {
        writeln!(
            err,
            "bunker: {} socket(s) not restored: a socket is made by the program that listens \
             on it",
            outcome.sockets_not_restored
        )?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let lease = match expire {
        Some(period) => {
            let kind = if args.volume_target.is_some() {
                "volume"
            } else {
                "files"
            };
            let lease = record_lease(
                policy.as_ref(),
                args,
                (&id, &snapshot),
                &path,
                target,
                kind,
                &outcome,
                period,
            )?;
            audit::note_detail("expires", restores::time_text(lease.expires));
            audit::note_detail("lease", lease.id.clone());
            Some(lease)
        }
        None => None,
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "lease": lease.as_ref().map(|l| l.id.clone()),
            "expires": lease.as_ref().map(|l| restores::time_text(l.expires)),
            "snapshot_id": id.to_hex(),
            "target": target.to_string_lossy(),
            "files_skipped": outcome.files_skipped,
            "bytes_skipped": outcome.bytes_skipped,
            "kept": outcome.kept,
            "files_kept": outcome.files_kept,
            "files_verified": outcome.files_verified,
            "bytes_verified": outcome.bytes_verified,
            "files": outcome.files,
            "files_failed": outcome.files_failed,
            "dirs": outcome.dirs,
            "others": outcome.others,
            "bytes": outcome.bytes,
            "bytes_direct": outcome.bytes_direct,
            "duration_ms": (seconds * 1000.0) as u64,
            "errors": outcome.errors,
            "warnings": outcome.warnings,
            "sockets_not_restored": outcome.sockets_not_restored,
            "deleted": outcome.deleted.as_ref().map(|d| json!({
                "entries": d.entries,
                "bytes": d.bytes,
                "paths": d.paths.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>(),
            })),
        }))?;
    } else if args.dry_run {
        print_preview(&id, target, &outcome, args.overwrite.into())?;
    } else {
        writeln!(
            std::io::stdout(),
            "restored snapshot {} to {}: {} in {:.2} s",
            id.short(),
            target.display(),
            entries(outcome.files, outcome.bytes, outcome.dirs, outcome.others),
            seconds
        )?;
        if let Some(lease) = &lease {
            writeln!(
                std::io::stdout(),
                "lease {} for {}: {} is removed after {}",
                lease.id,
                lease.owner,
                lease.target.display(),
                restores::time_text(lease.expires)
            )?;
        }
        if outcome.files_skipped > 0 {
            writeln!(
                std::io::stdout(),
                "{} ({}) already in place and left alone",
                count(outcome.files_skipped, "file", "files"),
                bytes(outcome.bytes_skipped)
            )?;
        }
        if args.verify {
            writeln!(
                std::io::stdout(),
                "read back and verified {} ({})",
                count(outcome.files_verified, "file", "files"),
                bytes(outcome.bytes_verified)
            )?;
        }
        if outcome.kept > 0 {
            writeln!(
                std::io::stdout(),
                "{} existing entries kept as they were (--overwrite {})",
                outcome.kept,
                Overwrite::from(args.overwrite).name()
            )?;
        }
        if let Some(deleted) = &outcome.deleted {
            writeln!(
                std::io::stdout(),
                "deleted {} entries not in the snapshot ({} in files)",
                deleted.entries,
                bytes(deleted.bytes)
            )?;
        }
        if !outcome.errors.is_empty() {
            writeln!(
                std::io::stdout(),
                "not everything could be restored: {} of the files incomplete (left without \
                 their metadata), {} problem(s), each on stderr with the files it affects",
                outcome.files_failed,
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

/// What a `--dry-run` restore found it would do.
fn print_preview(
    id: &SnapshotId,
    target: &Path,
    outcome: &RestoreOutcome,
    overwrite: Overwrite,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "dry run: restoring snapshot {} to {} would write {} of {} ({}); {} ({}) in place \
         already; {}, {}",
        id.short(),
        target.display(),
        outcome
            .files
            .saturating_sub(outcome.files_skipped + outcome.files_kept),
        count(outcome.files, "file", "files"),
        bytes(outcome.bytes),
        count(outcome.files_skipped, "file", "files"),
        bytes(outcome.bytes_skipped),
        count(outcome.dirs, "directory", "directories"),
        count(outcome.others, "other entry", "other entries"),
    )?;
    if outcome.kept > 0 {
        writeln!(
            out,
            "{} existing entries would be kept as they are (--overwrite {})",
            outcome.kept,
            overwrite.name()
        )?;
    }
    if let Some(deleted) = &outcome.deleted {
        for path in &deleted.paths {
            writeln!(out, "would delete {}", path.display())?;
        }
        writeln!(
            out,
            "--delete would delete {} entries ({} in files)",
            deleted.entries,
            bytes(deleted.bytes)
        )?;
    }
    if !outcome.errors.is_empty() {
        writeln!(
            out,
            "the restore would not be complete: {} of the files, {} problem(s), each on stderr",
            outcome.files_failed,
            outcome.errors.len()
        )?;
    }
    Ok(())
}

/// True for a block or character device (also through a symlink like /dev/vg/data).
fn is_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
        .unwrap_or(false)
}

/// A restore that expires owns its target: it must be new (or an empty directory), so the
/// expiry never removes anything that was there before.
fn check_fresh(target: &Path) -> Result<(), LeaseError> {
    let refuse = |reason: &str| LeaseError::Unleasable {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    match std::fs::symlink_metadata(target) {
        Err(_) => Ok(()),
        Ok(meta) if meta.is_dir() => match std::fs::read_dir(target).map(|mut e| e.next()) {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(refuse("it is not empty (restore into a new directory)")),
            Err(_) => Err(refuse("it cannot be read")),
        },
        Ok(_) => Err(refuse("it already exists (restore into a new path)")),
    }
}

/// Records the lease of a finished restore.
#[allow(clippy::too_many_arguments)]
fn record_lease(
    policy: Option<&bunker_agent::policy::Policy>,
    args: &RestoreArgs,
    (id, snapshot): (&SnapshotId, &Snapshot),
    path: &Path,
    target: &Path,
    kind: &str,
    outcome: &RestoreOutcome,
    period: std::time::Duration,
) -> Result<Lease> {
    let created = restores::now()?;
    let target = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_owned());
    let lease = Lease {
        version: LEASE_VERSION,
        id: new_lease_id(&target),
        owner: args.owner.clone().unwrap_or_else(restores::invoking_user),
        host: platform::hostname(),
        source: snapshot.tag("source").unwrap_or_default().to_owned(),
        snapshot: id.to_hex(),
        path: path.display().to_string(),
        target,
        kind: kind.to_owned(),
        bytes: outcome.bytes.saturating_add(outcome.bytes_skipped),
        created,
        expires: created.saturating_add(i64::try_from(period.as_secs()).unwrap_or(i64::MAX)),
    };
    let dir = restores::lease_dir(policy)?;
    dir.create(&lease).with_context(|| {
        format!(
            "restored, but the lease was not recorded; remove {} yourself when done",
            lease.target.display()
        )
    })?;
    Ok(lease)
}
