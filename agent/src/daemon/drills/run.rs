//! One drill of a policy source by the agent: how it ended, its audit record, its journal
//! line and its log line.

use std::time::Duration;

use bunker_repo_format::SnapshotId;
use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

use crate::drill::{self, DrillReport, Failure};

/// How a drill ended.
#[derive(Debug, Clone)]
pub enum DrillOutcome {
    /// The snapshot was restored and checked: the report says whether it passed.
    Ran(Box<DrillReport>),
    /// Nothing could be restored, and why (no snapshot of the source, no repository, ...).
    Failed(String),
    /// Stopped by a shutdown or a signal: neither a pass nor a failure.
    Cancelled,
}

/// One drill of a policy source by the agent.
#[derive(Debug, Clone)]
pub struct DrillRun {
    /// The policy source.
    pub source: String,
    /// When it started.
    pub started: Timestamp,
    /// The whole drill.
    pub duration: Duration,
    /// How it ended.
    pub outcome: DrillOutcome,
}

impl DrillRun {
    /// True when the snapshot restored and every check passed.
    pub fn passed(&self) -> bool {
        matches!(&self.outcome, DrillOutcome::Ran(report) if report.passed())
    }

    /// `passed`, `failed` or `cancelled`.
    pub fn outcome_name(&self) -> &'static str {
        match &self.outcome {
            DrillOutcome::Cancelled => "cancelled",
            _ if self.passed() => "passed",
            _ => "failed",
        }
    }

    /// The step that failed (`restore` when nothing could be restored).
    pub fn failure(&self) -> Option<Failure> {
        match &self.outcome {
            DrillOutcome::Ran(report) => report.failure,
            DrillOutcome::Failed(_) => Some(Failure::Restore),
            DrillOutcome::Cancelled => None,
        }
    }

    /// Every problem found, each naming the path or the damaged object.
    pub fn errors(&self) -> Vec<String> {
        match &self.outcome {
            DrillOutcome::Ran(report) => report.errors.clone(),
            DrillOutcome::Failed(error) => vec![error.clone()],
            DrillOutcome::Cancelled => Vec::new(),
        }
    }

    /// The first problem found.
    pub fn first_error(&self) -> Option<&str> {
        match &self.outcome {
            DrillOutcome::Ran(report) => report.errors.first().map(String::as_str),
            DrillOutcome::Failed(error) => Some(error),
            DrillOutcome::Cancelled => None,
        }
    }

    /// The snapshot restored.
    pub fn snapshot(&self) -> Option<SnapshotId> {
        match &self.outcome {
            DrillOutcome::Ran(report) => Some(report.snapshot),
            _ => None,
        }
    }

    /// Time to restore (RTO); zero when nothing was restored.
    pub fn restore_time(&self) -> Duration {
        match &self.outcome {
            DrillOutcome::Ran(report) => report.restore_time,
            _ => Duration::ZERO,
        }
    }

    /// The repository audit record (`operation = verify`, `drill = agent`), as
    /// `bunker verify` writes it; `None` for a cancelled drill.
    pub fn audit_record(&self, host: &str, user: &str) -> Option<AuditRecord> {
        let (host, user) = (host.to_owned(), user.to_owned());
        match &self.outcome {
            DrillOutcome::Ran(report) => Some(report.audit_record("agent", host, user)),
            DrillOutcome::Failed(error) => Some(drill::report::unrestored_audit_record(
                &self.source,
                self.started,
                self.duration,
                error,
                "agent",
                host,
                user,
            )),
            DrillOutcome::Cancelled => None,
        }
    }

    /// The journal line (`"kind": "drill"`), also `bunker-agent drill --json`.
    pub fn json(&self) -> Value {
        let report = match &self.outcome {
            DrillOutcome::Ran(report) => Some(report),
            _ => None,
        };
        json!({
            "kind": "drill",
            "source": self.source,
            "started": self.started.sec,
            "duration_s": self.duration.as_secs_f64(),
            "outcome": self.outcome_name(),
            "failure": self.failure().map(Failure::name),
            "error": self.first_error(),
            "errors": self.errors(),
            "snapshot_id": self.snapshot().map(|id| id.to_hex()),
            "snapshot_kind": report.map(|r| r.kind),
            "restore_s": report.map(|r| r.restore_time.as_secs_f64()),
            "verify_s": report.map(|r| r.verify_time.as_secs_f64()),
            "files": report.map(|r| r.files),
            "bytes": report.map(|r| r.bytes),
            "warnings": report.map(|r| r.warnings.clone()).unwrap_or_default(),
        })
    }

    /// One log line.
    pub fn describe(&self) -> String {
        match &self.outcome {
            DrillOutcome::Ran(report) if report.passed() => format!(
                "{}: drill of snapshot {} passed: RTO {:.2}s, {} files, {} bytes",
                self.source,
                report.snapshot.short(),
                report.restore_time.as_secs_f64(),
                report.files,
                report.bytes
            ),
            DrillOutcome::Ran(report) => format!(
                "{}: drill of snapshot {} FAILED ({}): {}",
                self.source,
                report.snapshot.short(),
                report.failure.map_or("", Failure::name),
                self.first_error().unwrap_or_default()
            ),
            DrillOutcome::Failed(error) => format!("{}: drill FAILED: {error}", self.source),
            DrillOutcome::Cancelled => format!("{}: drill cancelled", self.source),
        }
    }
}
