//! What a drill found, and its audit record.

use std::path::PathBuf;
use std::time::Duration;

use bunker_repo_format::SnapshotId;
use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::tree::Timestamp;

/// The step that failed a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The restore could not bring everything back.
    Restore,
    /// The restored data differs from the snapshot.
    Mismatch,
    /// The smoke command failed.
    Smoke,
    /// The restored filesystem image failed `fsck`.
    Fsck,
    /// The restored filesystem image could not be mounted read-only.
    Mount,
    /// The database step failed: the temporary server, `pg_restore` or a smoke statement.
    Database,
}

impl Failure {
    /// `restore`, `mismatch`, `smoke`, `fsck`, `mount` or `database` (the audit `failure`
    /// value).
    pub fn name(self) -> &'static str {
        match self {
            Failure::Restore => "restore",
            Failure::Mismatch => "mismatch",
            Failure::Smoke => "smoke",
            Failure::Fsck => "fsck",
            Failure::Mount => "mount",
            Failure::Database => "database",
        }
    }
}

/// The result of one drill.
#[derive(Debug, Clone)]
pub struct DrillReport {
    /// When it started.
    pub time: Timestamp,
    /// The snapshot drilled.
    pub snapshot: SnapshotId,
    /// The policy source (the snapshot's `source` tag), empty if none.
    pub source: String,
    /// `files`, `volume` or `stream`.
    pub kind: &'static str,
    /// The directory restored into.
    pub target: PathBuf,
    /// Whether the target was left in place.
    pub kept: bool,
    /// Time to restore (RTO).
    pub restore_time: Duration,
    /// Time of the verification pass.
    pub verify_time: Duration,
    /// The whole drill.
    pub duration: Duration,
    /// Files verified.
    pub files: u64,
    /// Bytes verified.
    pub bytes: u64,
    /// The checks that ran after the verification pass, in order (`fsck`, `mount`,
    /// `database`, `smoke`); the last one is the failed step when the drill failed there.
    pub checks: Vec<&'static str>,
    /// The step that failed, if one did.
    pub failure: Option<Failure>,
    /// Every problem found, each naming the path or the damaged object; the first is the
    /// audit record's `error`.
    pub errors: Vec<String>,
    /// Problems that do not fail the drill (target not removed, ...).
    pub warnings: Vec<String>,
}

impl DrillReport {
    /// True when every step passed.
    pub fn passed(&self) -> bool {
        self.failure.is_none()
    }

    /// The audit record of the drill (`operation = verify`); `drill` is `cli` or `agent`.
    pub fn audit_record(&self, drill: &str, host: String, user: String) -> AuditRecord {
        let mut details = vec![
            ("source".to_owned(), self.source.clone()),
            ("kind".to_owned(), self.kind.to_owned()),
            ("drill".to_owned(), drill.to_owned()),
            (
                "restore_ms".to_owned(),
                millis(self.restore_time).to_string(),
            ),
            ("verify_ms".to_owned(), millis(self.verify_time).to_string()),
            ("files".to_owned(), self.files.to_string()),
            ("bytes".to_owned(), self.bytes.to_string()),
        ];
        if !self.checks.is_empty() {
            details.push(("checks".to_owned(), self.checks.join(",")));
        }
        if let Some(failure) = self.failure {
            push_failure(
                &mut details,
                failure,
                self.errors.first().map_or("", String::as_str),
            );
        }
        AuditRecord {
            time: self.time,
            host,
            user,
            operation: "verify".to_owned(),
            target: self.target.display().to_string(),
            outcome: if self.passed() { "passed" } else { "failed" }.to_owned(),
            duration_ms: millis(self.duration),
            snapshot: Some(self.snapshot),
            details,
        }
    }
}

/// The audit record of a drill of `source` that failed before anything was restored (no
/// snapshot of the source, no readable index): the same form as
/// [`DrillReport::audit_record`], with no snapshot and failure `restore`.
pub fn unrestored_audit_record(
    source: &str,
    time: Timestamp,
    duration: Duration,
    error: &str,
    drill: &str,
    host: String,
    user: String,
) -> AuditRecord {
    let mut details = vec![
        ("source".to_owned(), source.to_owned()),
        ("drill".to_owned(), drill.to_owned()),
    ];
    push_failure(&mut details, Failure::Restore, error);
    AuditRecord {
        time,
        host,
        user,
        operation: "verify".to_owned(),
        target: format!("source {source}"),
        outcome: "failed".to_owned(),
        duration_ms: millis(duration),
        snapshot: None,
        details,
    }
}

/// Adds `failure` and the first line of `error` to a record's details.
fn push_failure(details: &mut Vec<(String, String)>, failure: Failure, error: &str) {
    details.push(("failure".to_owned(), failure.name().to_owned()));
    let line = error.lines().next().unwrap_or_default();
    details.push(("error".to_owned(), line.to_owned()));
}

/// Whole milliseconds.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
