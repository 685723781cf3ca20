//! What the agent remembers between runs, per source: the last schedule slot it ran, and
//! how the last runs went. Kept as JSON in the state directory, replaced atomically; a
//! missing or unreadable file means a fresh start (nothing is caught up), never a crash.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drills::{DrillOutcome, DrillRun};
use crate::job::{JobOutcome, JobReport};

/// The state file's name inside the state directory.
pub const STATE_FILE: &str = "state.json";
/// One JSON line per finished job, appended: the local audit log.
pub const JOURNAL_FILE: &str = "jobs.jsonl";

/// Per-source memory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceState {
    /// The last schedule slot that was run (or skipped), Unix seconds.
    pub last_slot: Option<i64>,
    /// When the last run started, Unix seconds.
    pub last_started: Option<i64>,
    /// When the last run finished, Unix seconds.
    pub last_finished: Option<i64>,
    /// `succeeded`, `failed` or `cancelled`.
    pub last_outcome: Option<String>,
    /// Why the last run failed.
    pub last_error: Option<String>,
    /// When a run last succeeded, Unix seconds.
    pub last_success: Option<i64>,
    /// The snapshot of the last success.
    pub last_snapshot: Option<String>,
    /// Duration of the last run, seconds.
    pub last_duration: f64,
    /// Bytes in the last successful snapshot.
    pub last_bytes: u64,
    /// New bytes the last successful run added.
    pub last_bytes_added: u64,
    /// Files in the last successful snapshot.
    pub last_files: u64,
    /// Bytes the last successful run read from the source.
    pub last_bytes_read: u64,
    /// Consistency level of the last successful snapshot.
    pub last_consistency: Option<String>,
    /// Runs that failed or were cancelled since the last success.
    pub consecutive_failures: u64,
    /// Runs by outcome since the state was created.
    pub runs: BTreeMap<String, u64>,
    /// Restore drills of the source (absent from state files written before drills).
    pub drill: DrillState,
}

/// Per-source memory of restore drills.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DrillState {
    /// The last drill schedule slot that was run (or skipped), Unix seconds.
    pub last_slot: Option<i64>,
    /// When the last drill started, Unix seconds.
    pub last_started: Option<i64>,
    /// When the last drill finished, Unix seconds.
    pub last_finished: Option<i64>,
    /// `passed`, `failed` or `cancelled`.
    pub last_outcome: Option<String>,
    /// The step that failed the last drill (`restore`, `mismatch`, `smoke`, ...).
    pub last_failure: Option<String>,
    /// The first problem the last drill found.
    pub last_error: Option<String>,
    /// The snapshot the last drill restored (hex).
    pub last_snapshot: Option<String>,
    /// Time to restore (RTO) in the last drill, seconds.
    pub last_restore_seconds: f64,
    /// When a drill last passed, Unix seconds (seeded from the repository's audit records
    /// when the state has none).
    pub last_pass: Option<i64>,
    /// Drills that failed since the state was created.
    pub failures: u64,
    /// Drills by outcome since the state was created.
    pub runs: BTreeMap<String, u64>,
}

/// Everything, by source name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentState {
    /// Per source.
    pub sources: BTreeMap<String, SourceState>,
}

impl AgentState {
    /// Reads the state in `dir`; anything unreadable gives an empty state.
    pub fn load(dir: &Path) -> AgentState {
        let (state, warning) = Self::load_checked(dir);
        if let Some(warning) = warning {
            eprintln!("bunker-agent: warning: {warning}");
        }
        state
    }

    /// [`AgentState::load`], saying why a state file that exists could not be used: it is
    /// then set aside as `state.json.unreadable` (kept for a look, not overwritten by the
    /// next save) and the agent starts from an empty state.
    pub fn load_checked(dir: &Path) -> (AgentState, Option<String>) {
        let path = dir.join(STATE_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return (AgentState::default(), None),
            Err(e) => {
                let warning = format!("{}: {e}; starting from an empty state", path.display());
                return (AgentState::default(), Some(warning));
            }
        };
        match serde_json::from_slice(&bytes) {
            Ok(state) => (state, None),
            Err(e) => {
                let aside = dir.join(format!("{STATE_FILE}.unreadable"));
                let kept = match std::fs::rename(&path, &aside) {
                    Ok(()) => format!("kept as {}", aside.display()),
                    Err(rename) => format!("could not be set aside ({rename})"),
                };
                let warning = format!(
                    "{} is unreadable ({e}), {kept}; starting from an empty state (missed \
                     slots are not caught up, drills are seeded from the audit records)",
                    path.display()
                );
                (AgentState::default(), Some(warning))
            }
        }
    }

    /// Replaces the state file atomically.
    pub fn save(&self, dir: &Path) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        write_atomically(&dir.join(STATE_FILE), &bytes)
    }

    /// The source's entry, created when missing.
    pub fn source(&mut self, name: &str) -> &mut SourceState {
        self.sources.entry(name.to_owned()).or_default()
    }

    /// Records a finished job.
    pub fn record(&mut self, report: &JobReport, finished: i64) {
        let state = self.source(&report.source);
        let (outcome, error) = match &report.outcome {
            JobOutcome::Succeeded => ("succeeded", None),
            JobOutcome::Failed(e) => ("failed", Some(e.clone())),
            JobOutcome::Cancelled(e) => ("cancelled", Some(e.clone())),
        };
        state.last_started = Some(report.started.sec);
        state.last_finished = Some(finished);
        state.last_outcome = Some(outcome.to_owned());
        state.last_error = error;
        state.last_duration = report.duration.as_secs_f64();
        *state.runs.entry(outcome.to_owned()).or_default() += 1;
        if report.succeeded() {
            state.consecutive_failures = 0;
        } else {
            state.consecutive_failures += 1;
        }
        if report.succeeded() {
            state.last_success = Some(finished);
            state.last_snapshot = report.snapshot.map(|id| id.to_hex());
            state.last_consistency = Some(report.consistency.name().to_owned());
            if let Some(summary) = &report.summary {
                state.last_bytes = summary.bytes;
                state.last_bytes_added = summary.bytes_added;
                state.last_files = summary.files;
                state.last_bytes_read = summary.bytes_read;
            }
        }
    }
}

impl AgentState {
    /// Records a finished drill.
    pub fn record_drill(&mut self, run: &DrillRun, finished: i64) {
        let drill = &mut self.source(&run.source).drill;
        let outcome = run.outcome_name();
        drill.last_started = Some(run.started.sec);
        drill.last_finished = Some(finished);
        drill.last_outcome = Some(outcome.to_owned());
        drill.last_failure = run.failure().map(|f| f.name().to_owned());
        drill.last_error = run.first_error().map(str::to_owned);
        drill.last_snapshot = run.snapshot().map(|id| id.to_hex());
        drill.last_restore_seconds = run.restore_time().as_secs_f64();
        *drill.runs.entry(outcome.to_owned()).or_default() += 1;
        match &run.outcome {
            DrillOutcome::Cancelled => {}
            _ if run.passed() => drill.last_pass = Some(finished),
            _ => drill.failures += 1,
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile_in(dir, path)?;
    temp.1.write_all(bytes)?;
    temp.1.sync_all()?;
    std::fs::rename(&temp.0, path)
}

fn tempfile_in(dir: &Path, path: &Path) -> io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let file = std::fs::File::create(&temp)?;
    Ok((temp, file))
}

/// Appends one JSON line to the journal (see [`crate::json_lines`]).
pub fn append_journal(dir: &Path, line: &serde_json::Value) -> io::Result<()> {
    crate::json_lines::append(&dir.join(JOURNAL_FILE), line)
}
