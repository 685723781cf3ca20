//! `bunker backup`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use bunker_agent::Cancel;
use bunker_agent::backup::{
    BackupError, BackupOptions, ChangeDetection, FileSink, StreamOptions, TagFile, VolumeOptions,
    backup, backup_command, backup_stream, backup_volume,
};
use bunker_agent::platform;
use bunker_agent::progress::Progress;
use serde_json::json;

use crate::args::{BackupArgs, GlobalOptions};
use crate::lists::{self, ListFormat};
use crate::output::{bytes, count, entries, print_json, summary_json};
use crate::progress::Display;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &BackupArgs, cancel: &Cancel) -> Result<u8> {
    let repository = if args.dry_run {
        repo::open_dry_run_writer(global)?
    } else {
        repo::open_writer(global)?
    };
    let parent = match &args.parent {
        Some(spec) => Some(crate::select::resolve(&repository, spec)?.0),
        None => None,
    };
    let progress = Arc::new(Progress::new());
    let display = Display::start("backup", Arc::clone(&progress), global.json);
    let stream = StreamOptions {
        name: args.stdin_filename.clone(),
        host: host(args),
        username: platform::username(),
        tags: args.tags.clone(),
        time: args.time,
        progress: Some(Arc::clone(&progress)),
        skip_verify: args.skip_verify,
        command_stderr: display.line_sink(),
        ..StreamOptions::default()
    };
    let outcome = if args.stdin {
        backup_stream(&repository, std::io::stdin().lock(), &stream, cancel)
    } else if let Some(command) = &args.stdin_from_command {
        backup_command(&repository, command, &[], &stream, cancel)
    } else {
        let files_read = args.verbose.then(|| display.file_sink(global.json));
        backup_paths(
            global,
            &repository,
            args,
            parent,
            progress,
            files_read,
            cancel,
        )
    };
    display.finish();
    report(global, &outcome?, args.dry_run)
}

/// The host the snapshot is recorded for: --host, else this machine's name.
fn host(args: &BackupArgs) -> String {
    args.host.clone().unwrap_or_else(platform::hostname)
}

fn backup_paths(
    global: &GlobalOptions,
    repository: &bunker_repo_format::Repository,
    args: &BackupArgs,
    parent: Option<bunker_repo_format::SnapshotId>,
    progress: Arc<Progress>,
    files_read: Option<FileSink>,
    cancel: &Cancel,
) -> Result<bunker_agent::backup::BackupOutcome, BackupError> {
    match &args.volume {
        Some(device) => {
            let options = VolumeOptions {
                device: device.clone(),
                name: args.name.clone(),
                host: host(args),
                username: platform::username(),
                tags: args.tags.clone(),
                time: args.time,
                parent,
                progress: Some(progress),
                skip_verify: args.skip_verify,
                ..VolumeOptions::default()
            };
            backup_volume(repository, &options, cancel)
        }
        None => {
            let cache_dir = repo::repository_cache_dir(global, repository);
            let mut paths = args.paths.clone();
            let listed = [
                (&args.files_from, ListFormat::Lines),
                (&args.files_from_verbatim, ListFormat::Verbatim),
                (&args.files_from_raw, ListFormat::Raw),
            ];
            for (files, format) in listed {
                for list in files {
                    let entries = lists::entries(list, format).map_err(source_error)?;
                    paths.extend(entries.into_iter().map(PathBuf::from));
                }
            }
            let excludes = lists::exclude_patterns(&args.excludes, &args.exclude_file)
                .map_err(source_error)?;
            let exclude_if_present = TagFile::list(&args.exclude_if_present, args.exclude_caches);
            let options = BackupOptions {
                paths,
                excludes,
                exclude_if_present,
                host: host(args),
                username: platform::username(),
                tags: args.tags.clone(),
                time: args.time,
                parent,
                with_atime: args.with_atime,
                cache_dir,
                progress: Some(progress),
                skip_verify: args.skip_verify,
                one_file_system: args.one_file_system,
                exclude_larger_than: args.exclude_larger_than,
                fixed_chunks: args.fixed_chunks,
                images_by_content: args.images_by_content,
                dry_run: args.dry_run,
                skip_if_unchanged: args.skip_if_unchanged,
                files_read,
                change_detection: ChangeDetection {
                    read_all: args.force,
                    ignore_inode: args.ignore_inode,
                    ignore_ctime: args.ignore_ctime,
                },
                ..BackupOptions::default()
            };
            backup(repository, &options, cancel)
        }
    }
}

/// A list file that cannot be used, as the backup reports a path it cannot use.
fn source_error(error: lists::ListError) -> BackupError {
    BackupError::Source {
        path: error.path,
        source: error.source,
    }
}

/// Prints what the backup did (with `dry_run`, what it would have done: its snapshot was
/// not stored, so it has no id to give).
fn report(
    global: &GlobalOptions,
    outcome: &bunker_agent::backup::BackupOutcome,
    dry_run: bool,
) -> Result<u8> {
    if !dry_run && !outcome.skipped {
        crate::audit::note_snapshot(outcome.id);
    }
    let mut err = std::io::stderr().lock();
    if let Some(warning) = &outcome.cache_warning {
        writeln!(err, "bunker: warning: {warning}")?;
    }
    for entry in &outcome.unreadable {
        writeln!(err, "bunker: could not read {entry}")?;
    }
    for path in &outcome.changed {
        writeln!(
            err,
            "bunker: warning: {path} changed while it was read; stored as read"
        )?;
    }
    if !outcome.mount_points.is_empty() {
        writeln!(
            err,
            "bunker: not crossed into other filesystems (--one-file-system), recorded empty: {}",
            outcome.mount_points.join(", ")
        )?;
    }
    let s = &outcome.snapshot.summary;
    if global.json {
        let id = (!dry_run && !outcome.skipped).then_some(outcome.id);
        print_json(&json!({
            "dry_run": dry_run,
            "skipped": outcome.skipped,
            "snapshot_id": id.map(|id| id.to_hex()),
            "short_id": id.map(|id| id.short()),
            "parent": outcome.snapshot.parent.map(|p| p.to_hex()),
            "summary": summary_json(s),
            "dedup_ratio": dedup_ratio(s.bytes_read, outcome.data_bytes_added),
            "unreadable": outcome.unreadable,
            "changed": outcome.changed,
            "disk_images": outcome.disk_images,
            "mount_points_not_crossed": outcome.mount_points,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        if dry_run {
            writeln!(out, "dry run: nothing stored; the snapshot would hold")?;
        } else if outcome.skipped {
            writeln!(
                out,
                "no snapshot written: nothing changed since snapshot {} (--skip-if-unchanged)",
                outcome.id.short()
            )?;
        } else {
            writeln!(out, "snapshot {} saved", outcome.id.short())?;
        }
        writeln!(out, "  {}", entries(s.files, s.bytes, s.dirs, s.others))?;
        writeln!(
            out,
            "  files {} new, {} changed, {} unchanged; read {}, {} {} ({} stored, dedup {}), {}, in {:.2} s",
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            bytes(s.bytes_read),
            if dry_run { "would add" } else { "added" },
            bytes(s.bytes_added),
            bytes(s.bytes_stored),
            dedup_ratio(s.bytes_read, outcome.data_bytes_added)
                .map_or("n/a".to_owned(), |r| format!("{r:.2}x")),
            count(
                s.data_blobs_added + s.tree_blobs_added,
                "new blob",
                "new blobs"
            ),
            s.duration_ms as f64 / 1000.0
        )?;
        if !outcome.disk_images.is_empty() {
            writeln!(
                out,
                "  cut as disk images, at the volume chunk size: {}",
                outcome.disk_images.join(", ")
            )?;
        }
        if !outcome.unreadable.is_empty() {
            writeln!(
                out,
                "  {} entries could not be read (listed above)",
                outcome.unreadable.len()
            )?;
        }
    }
    Ok(if outcome.unreadable.is_empty() {
        exit::OK
    } else {
        exit::PARTIAL_BACKUP
    })
}

/// File bytes read per byte of new data stored (before compression): 1.00x when every
/// chunk read was new. The trees a backup adds are left out, so a first backup of small
/// files does not come out below one. `None` when no data was added or nothing was read
/// (a backup that read no file but stored a changed directory is not "0.00x").
fn dedup_ratio(bytes_read: u64, data_bytes_added: u64) -> Option<f64> {
    (data_bytes_added > 0 && bytes_read > 0).then(|| bytes_read as f64 / data_bytes_added as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ratio_needs_bytes_read_and_added() {
        assert_eq!(dedup_ratio(300, 100), Some(3.0));
        assert_eq!(dedup_ratio(300, 0), None);
        assert_eq!(dedup_ratio(0, 282), None);
    }
}
