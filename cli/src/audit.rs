//! Audit trail of the commands that change or prove the repository: each run of backup,
//! restore, forget, prune and check leaves an audit record in the repository (FORMAT.md
//! §13a) and a JSON line in a local log. Writing the trail never fails the command: a
//! record that cannot be stored is reported on stderr.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bunker_repo_format::audit::{AuditRecord, store};
use bunker_repo_format::backend::Backend;
use bunker_repo_format::crypto::WriterKey;
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};
use serde_json::json;

use crate::args::Command;
use crate::exit;
use crate::output::rfc3339;

/// The repository the running command opened: where its record goes.
static OPENED: Mutex<Option<(Arc<dyn Backend>, WriterKey)>> = Mutex::new(None);
/// The snapshot the running command wrote, if any.
static SNAPSHOT: Mutex<Option<SnapshotId>> = Mutex::new(None);

/// Details the running command adds to its record (a restore's lease and expiry).
static DETAILS: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());

/// Adds a key/value detail to the running command's record.
pub fn note_detail(key: &str, value: String) {
    if let Ok(mut details) = DETAILS.lock() {
        details.push((key.to_owned(), value));
    }
}

/// Stores a record made by the command itself (one per expired restore) in `repository`
/// when there is one, and appends it to the local log; failures are warnings on stderr.
pub fn write(repository: Option<&Repository>, record: &AuditRecord) {
    let stored = repository.map(|r| r.save_audit(record));
    if let Some(Err(e)) = &stored {
        eprintln!("bunker: warning: the audit record was not stored: {e}");
    }
    let location = repository
        .map(|r| r.backend().location())
        .unwrap_or_default();
    let id = stored.and_then(|s| s.ok()).map(|id| id.to_hex());
    if let Some(path) = local_log()
        && let Err(e) = append(&path, record, &location, id)
    {
        eprintln!(
            "bunker: warning: could not append to the audit log {}: {e}",
            path.display()
        );
    }
}

/// Remembers the repository a command opened.
pub fn remember(repository: &Repository) {
    if let Ok(mut opened) = OPENED.lock() {
        *opened = Some((
            Arc::clone(repository.backend()),
            repository.writer_key().clone(),
        ));
    }
}

/// Remembers the snapshot a command wrote.
pub fn note_snapshot(id: SnapshotId) {
    if let Ok(mut snapshot) = SNAPSHOT.lock() {
        *snapshot = Some(id);
    }
}

/// The operation and target of an audited command; `None` for the others.
pub fn audited(command: &Command) -> Option<(&'static str, String)> {
    let lossy = |p: &std::path::Path| p.display().to_string();
    match command {
        Command::Backup(args) if args.dry_run => None,
        Command::Backup(args) => Some((
            "backup",
            if let Some(volume) = &args.volume {
                lossy(volume)
            } else if args.stdin || args.stdin_from_command.is_some() {
                format!("/{}", args.stdin_filename)
            } else {
                args.paths
                    .iter()
                    .map(|p| lossy(p))
                    .collect::<Vec<_>>()
                    .join(" ")
            },
        )),
        Command::Restore(args) if args.dry_run => None,
        Command::Restore(args) => Some((
            "restore",
            match (&args.target, &args.volume_target) {
                (Some(target), _) => {
                    format!("{} -> {}", args.snapshot.to_string_lossy(), lossy(target))
                }
                (None, Some(volume)) => {
                    format!("{} -> {}", args.snapshot.to_string_lossy(), lossy(volume))
                }
                (None, None) => format!("{} -> stdout", args.snapshot.to_string_lossy()),
            },
        )),
        // It reads backed-up data, as a restore does.
        Command::Mount(args) => Some(("mount", lossy(&args.mountpoint))),
        // A dry run changes nothing, as for backups and restores.
        Command::Forget(args) if args.dry_run => None,
        Command::Forget(_) => Some(("forget", String::new())),
        // It writes snapshots again and forgets the old ones.
        Command::Tag(args) => Some(("tag", args.snapshots.join(" "))),
        Command::Rewrite(args) if args.dry_run => None,
        Command::Rewrite(args) => Some(("rewrite", args.snapshots.join(" "))),
        Command::Prune(args) if args.dry_run => None,
        Command::Recover(args) if args.dry_run => None,
        Command::Recover(_) => Some(("recover", String::new())),
        Command::Prune(_) => Some(("prune", String::new())),
        Command::Check(_) => Some(("check", String::new())),
        _ => None,
    }
}

/// Writes the record of a finished command, if it opened a repository.
pub fn record(
    operation: &str,
    target: String,
    time: Timestamp,
    duration: Duration,
    result: &anyhow::Result<u8>,
) {
    let Some((backend, writer)) = OPENED.lock().ok().and_then(|mut o| o.take()) else {
        return;
    };
    let (outcome, error) = match result {
        Ok(code) => (
            match *code {
                exit::OK => "succeeded",
                exit::PARTIAL_BACKUP => "partial",
                exit::DAMAGE_FOUND => "damage-found",
                exit::RESTORE_INCOMPLETE => "incomplete",
                exit::INTERRUPTED => "interrupted",
                _ => "failed",
            },
            None,
        ),
        Err(e) => ("failed", Some(crate::exit::message(e))),
    };
    let mut details: Vec<(String, String)> = DETAILS
        .lock()
        .map(|mut d| std::mem::take(&mut *d))
        .unwrap_or_default();
    if let Some(error) = &error {
        details.push(("error".to_owned(), error.clone()));
    }
    let record = AuditRecord {
        time,
        host: bunker_agent::platform::hostname(),
        user: bunker_agent::platform::username(),
        operation: operation.to_owned(),
        target,
        outcome: outcome.to_owned(),
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
        snapshot: SNAPSHOT.lock().ok().and_then(|mut s| s.take()),
        details,
    };
    let stored = store(backend.as_ref(), &writer, &record);
    if let Err(e) = &stored {
        eprintln!("bunker: warning: the audit record was not stored: {e}");
    }
    if let Some(path) = local_log()
        && let Err(e) = append(
            &path,
            &record,
            &backend.location(),
            stored.ok().map(|id| id.to_hex()),
        )
    {
        eprintln!(
            "bunker: warning: could not append to the audit log {}: {e}",
            path.display()
        );
    }
}

/// Stores a record the command built itself (one per drill for `verify`) and appends it
/// to the local log; failures are warnings on stderr.
pub fn record_own(repository: &Repository, record: &AuditRecord) {
    let stored = store(
        repository.backend().as_ref(),
        repository.writer_key(),
        record,
    );
    if let Err(e) = &stored {
        eprintln!("bunker: warning: the audit record was not stored: {e}");
    }
    if let Some(path) = local_log()
        && let Err(e) = append(
            &path,
            record,
            &repository.location(),
            stored.ok().map(|id| id.to_hex()),
        )
    {
        eprintln!(
            "bunker: warning: could not append to the audit log {}: {e}",
            path.display()
        );
    }
}

/// `BUNKER_AUDIT_LOG`, else `$XDG_STATE_HOME/bunker/audit.jsonl`, else
/// `$HOME/.local/state/bunker/audit.jsonl`.
pub fn local_log() -> Option<PathBuf> {
    let absolute = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    absolute("BUNKER_AUDIT_LOG")
        .or_else(|| absolute("XDG_STATE_HOME").map(|d| d.join("bunker/audit.jsonl")))
        .or_else(|| absolute("HOME").map(|h| h.join(".local/state/bunker/audit.jsonl")))
}

fn append(
    path: &std::path::Path,
    record: &AuditRecord,
    repository: &str,
    id: Option<String>,
) -> std::io::Result<()> {
    bunker_agent::json_lines::append(path, &record_json(record, id.as_deref(), Some(repository)))
}

/// A record as JSON (for `bunker audit --json` and the local log).
pub fn record_json(
    record: &AuditRecord,
    id: Option<&str>,
    repository: Option<&str>,
) -> serde_json::Value {
    json!({
        "id": id,
        "repository": repository,
        "time": rfc3339(record.time),
        "host": record.host,
        "user": record.user,
        "operation": record.operation,
        "target": record.target,
        "outcome": record.outcome,
        "duration_ms": record.duration_ms,
        "snapshot_id": record.snapshot.map(|s| s.to_hex()),
        "details": record.details.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
    })
}
