//! Restore drills in the agent: each source with `verify` settings is drilled on its
//! `verify.schedule`, with the backup scheduler's slot, jitter and catch-up-once rules
//! ([`plan_drills`]).
//!
//! - A drill restores the newest snapshot of its source (the `source` tag) into a
//!   temporary target with [`DrillSpec::for_source`], proves it byte for byte and runs the
//!   smoke command (and `fsck` for a volume). A source with no snapshot fails its drill
//!   ("no snapshot of source X"): it is never skipped silently.
//! - A drill never overlaps a backup of its source, nor another drill of it. A drill due
//!   while the source backs up waits for the backup, then drills the snapshot just made; a
//!   backup slot that comes while the source is drilled waits for the drill ([`Waiting`]).
//!   A drill slot that comes while the previous drill still runs is skipped and counted.
//! - Every drill leaves an audit record in the repository (the form `bunker verify`
//!   writes, with `drill = agent`), a `"kind": "drill"` line in the journal, and its state
//!   and metrics: last pass, and coverage (a pass within `verify.window` and no failure
//!   since, [`coverage`]).
//! - At start, a source whose state lacks a passing drill takes it from the newest passing
//!   `verify` audit record of that source in the repository ([`seed_last_pass`]), so
//!   coverage survives a lost state file.

mod run;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Instant;

use bunker_repo_format::Repository;
use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::tree::Timestamp;
use jiff::Zoned;

use super::state::{AgentState, append_journal};
use super::{Agent, AgentError, Slots, Tick, due_now, latest_slot, plan_slots};
use crate::cancel::{Cancel, Deadline};
use crate::drill::{self, DrillSpec};
use crate::policy::Source;
use crate::restore::RestoreError;
pub use run::{DrillOutcome, DrillRun};

/// One drill-scheduling decision at `now`, with the backup scheduler's rules
/// ([`plan_tick`](super::plan_tick)) applied to each source's `verify.schedule` and its
/// `drill.last_slot`: a source's first tick starts counting, missed slots are caught up
/// once, the jitter offset is the source's. A [`Tick::Start`] drill waits until nothing
/// else of its source runs (see [`Waiting`]). Pure apart from `state`.
pub fn plan_drills(
    sources: &[Source],
    state: &mut AgentState,
    drilling: &HashSet<String>,
    host: &str,
    now: &Zoned,
) -> Vec<Tick> {
    plan_slots(
        sources,
        state,
        drilling,
        host,
        now,
        |source| source.verify.as_ref().map(|verify| &verify.schedule),
        |entry| Slots {
            last: &mut entry.drill.last_slot,
            runs: &mut entry.drill.runs,
        },
    )
}

/// Backups and drills that are due but wait for the other kind of job of their source.
#[derive(Debug, Default)]
pub struct Waiting {
    backups: BTreeSet<String>,
    drills: BTreeSet<String>,
}

impl Waiting {
    /// A backup of `source` is due.
    pub fn backup(&mut self, source: &str) {
        self.backups.insert(source.to_owned());
    }

    /// A drill of `source` is due.
    pub fn drill(&mut self, source: &str) {
        self.drills.insert(source.to_owned());
    }

    /// True when a backup of `source` is due and waiting.
    pub fn has_backup(&self, source: &str) -> bool {
        self.backups.contains(source)
    }

    /// Takes the jobs that may start now, `(backups, drills)`: a backup of a source that
    /// is neither backing up nor being drilled; then a drill of a source that is neither
    /// drilled, backing up, nor about to (so a drill due with a backup drills its snapshot).
    /// The others keep waiting.
    pub fn ready(
        &mut self,
        backing_up: &HashSet<String>,
        drilling: &HashSet<String>,
    ) -> (Vec<String>, Vec<String>) {
        let backups: Vec<String> = self
            .backups
            .iter()
            .filter(|s| !backing_up.contains(*s) && !drilling.contains(*s))
            .cloned()
            .collect();
        let drills: Vec<String> = self
            .drills
            .iter()
            .filter(|s| {
                !backing_up.contains(*s) && !drilling.contains(*s) && !self.backups.contains(*s)
            })
            .cloned()
            .collect();
        for name in &backups {
            self.backups.remove(name);
        }
        for name in &drills {
            self.drills.remove(name);
        }
        (backups, drills)
    }
}

/// For each source with `verify` settings, in policy order: whether it is covered at `now`
/// (Unix seconds): a drill passed within its `verify.window`, and no drill failed since.
pub fn coverage(sources: &[Source], state: &AgentState, now: i64) -> Vec<(String, bool)> {
    sources
        .iter()
        .filter_map(|source| {
            let verify = source.verify.as_ref()?;
            let window = i64::try_from(verify.window.as_secs()).unwrap_or(i64::MAX);
            let drill = state.sources.get(&source.name).map(|s| &s.drill);
            let pass = drill.and_then(|d| d.last_pass);
            let failed = drill.is_some_and(|d| d.last_outcome.as_deref() == Some("failed"));
            let covered = !failed && pass.is_some_and(|t| now.saturating_sub(t) <= window);
            Some((source.name.clone(), covered))
        })
        .collect()
}

/// Sets the last passing drill of each source with `verify` settings whose state has none
/// from the newest passing `verify` record of that source (its `source` detail) among
/// `records`: the time it finished. Returns the sources seeded.
pub fn seed_last_pass(
    state: &mut AgentState,
    sources: &[Source],
    records: &[AuditRecord],
) -> Vec<String> {
    let mut seeded = Vec::new();
    for source in sources.iter().filter(|s| s.verify.is_some()) {
        if state
            .sources
            .get(&source.name)
            .is_some_and(|s| s.drill.last_pass.is_some())
        {
            continue;
        }
        let newest = records
            .iter()
            .filter(|r| r.operation == "verify" && r.outcome == "passed")
            .filter(|r| {
                r.details
                    .iter()
                    .any(|(k, v)| k == "source" && *v == source.name)
            })
            .map(|r| {
                let seconds = i64::try_from(r.duration_ms / 1000).unwrap_or(0);
                r.time.sec.saturating_add(seconds)
            })
            .max();
        if let Some(time) = newest {
            state.source(&source.name).drill.last_pass = Some(time);
            seeded.push(source.name.clone());
        }
    }
    seeded
}

impl Agent {
    /// Drills the named sources now (every source with `verify` settings when `names` is
    /// empty), one after another, and records each like a scheduled drill: audit record,
    /// journal, state, metrics. Does not move the drill schedule.
    pub fn drill_now(
        &self,
        names: &[String],
        cancel: &Cancel,
    ) -> Result<Vec<DrillRun>, AgentError> {
        let chosen: Vec<&Source> = if names.is_empty() {
            self.policy
                .sources
                .iter()
                .filter(|s| s.verify.is_some())
                .collect()
        } else {
            self.sources_named(names)?
        };
        let dir = self.state_dir()?;
        let mut state = AgentState::load(&dir);
        self.seed_drills(&mut state);
        let mut runs = Vec::new();
        for source in chosen {
            if cancel.is_cancelled() {
                break;
            }
            let run = self.drill_source(source, cancel);
            self.finish_drill(&dir, &mut state, &run, &[]);
            runs.push(run);
        }
        self.publish(&state, &[]);
        Ok(runs)
    }

    /// The drills `run --once` runs after its backups: those of `sources` that have
    /// `verify` settings and are due at `now` (or never ran). Moves their drill slot.
    pub(super) fn run_due_drills(
        &self,
        dir: &Path,
        state: &mut AgentState,
        sources: &[&Source],
        now: &Zoned,
        cancel: &Cancel,
    ) -> Vec<DrillRun> {
        self.seed_drills(state);
        let mut runs = Vec::new();
        for source in sources {
            let Some(verify) = &source.verify else {
                continue;
            };
            let last = state
                .sources
                .get(&source.name)
                .and_then(|s| s.drill.last_slot);
            if cancel.is_cancelled() || !due_now(&verify.schedule, last, now) {
                continue;
            }
            if let Some(latest) = latest_slot(&verify.schedule, None, now) {
                state.source(&source.name).drill.last_slot = Some(latest);
            }
            let run = self.drill_source(source, cancel);
            self.finish_drill(dir, state, &run, &[]);
            runs.push(run);
        }
        runs
    }

    /// Drills the newest snapshot of `source` and stores the drill's audit record.
    pub(super) fn drill_source(&self, source: &Source, cancel: &Cancel) -> DrillRun {
        (self.log)(&format!("{}: drill starting", source.name));
        let started = Timestamp::now();
        let clock = Instant::now();
        // A drill proves what the store holds: no copy kept on this host stands in for it.
        let repository = (self.open_repository)().map(Repository::bypassing_cache);
        // A drill has the source's timeout too: a hung smoke command must not hold the
        // source's backups (which wait for its drill) for ever.
        let deadline = Deadline::start(cancel, source.timeout);
        let outcome = match &repository {
            Err(e) => DrillOutcome::Failed(format!("cannot open the repository: {e}")),
            Ok(repo) => self.drill_newest(repo, source, deadline.cancel()),
        };
        let timed_out = deadline.finish();
        let outcome = match outcome {
            DrillOutcome::Cancelled if timed_out => DrillOutcome::Failed(format!(
                "timed out after {:?} (the source's timeout) and was stopped",
                source.timeout
            )),
            outcome => outcome,
        };
        let run = DrillRun {
            source: source.name.clone(),
            started,
            duration: clock.elapsed(),
            outcome,
        };
        if let Ok(repo) = &repository
            && let Some(record) = run.audit_record(&self.context.host, &self.context.username)
            && let Err(e) = repo.save_audit(&record)
        {
            (self.log)(&format!(
                "{}: warning: the drill's audit record was not stored: {e}",
                source.name
            ));
        }
        run
    }

    fn drill_newest(
        &self,
        repo: &bunker_repo_format::Repository,
        source: &Source,
        cancel: &Cancel,
    ) -> DrillOutcome {
        let (readable, unreadable) = match repo.load_readable_snapshots() {
            Ok(found) => found,
            Err(e) => return DrillOutcome::Failed(format!("cannot list the snapshots: {e}")),
        };
        // Whose an unreadable snapshot is cannot be told: if it is this source's newest, the
        // drill runs the newest one that can be read. `check` reports the damage.
        for (id, error) in &unreadable {
            (self.log)(&format!(
                "{}: warning: snapshot {} cannot be read and is left out of the drill: {error}",
                source.name,
                id.short()
            ));
        }
        // This host's own backups of the source: another host may have a source of the
        // same name in a shared repository. `readable` is oldest first.
        let Some((id, snapshot)) = readable.into_iter().rfind(|(_, snapshot)| {
            snapshot.host == self.context.host
                && snapshot
                    .tags
                    .iter()
                    .any(|(k, v)| k == "source" && *v == source.name)
        }) else {
            return DrillOutcome::Failed(format!(
                "no snapshot of source {} from host {}",
                source.name, self.context.host
            ));
        };
        let loaded = match repo.load_index_for_reading() {
            Ok(loaded) => loaded,
            Err(e) => return DrillOutcome::Failed(format!("cannot load the index: {e}")),
        };
        for (segment, error) in &loaded.damaged {
            (self.log)(&format!(
                "{}: warning: index segment {segment} is unreadable: {error}",
                source.name
            ));
        }
        let spec = DrillSpec::for_source(source);
        match drill::run(repo, &loaded.index, &id, &snapshot, &spec, cancel) {
            Ok(report) => DrillOutcome::Ran(Box::new(report)),
            Err(RestoreError::Interrupted) => DrillOutcome::Cancelled,
            Err(e) => DrillOutcome::Failed(e.to_string()),
        }
    }

    /// Records a finished drill: state, journal, metrics, log.
    pub(super) fn finish_drill(
        &self,
        dir: &Path,
        state: &mut AgentState,
        run: &DrillRun,
        running: &[String],
    ) {
        state.record_drill(run, jiff::Timestamp::now().as_second());
        (self.log)(&run.describe());
        if let DrillOutcome::Ran(report) = &run.outcome {
            for warning in &report.warnings {
                (self.log)(&format!("{}: warning: {warning}", run.source));
            }
        }
        if let Err(e) = state.save(dir) {
            (self.log)(&format!(
                "cannot save the agent state in {}: {e}",
                dir.display()
            ));
        }
        if let Err(e) = append_journal(dir, &run.json()) {
            (self.log)(&format!(
                "cannot append to the job journal in {}: {e}",
                dir.display()
            ));
        }
        self.publish(state, running);
    }

    /// Seeds missing last passing drills from the repository's audit records (only when
    /// a source with `verify` settings lacks one; reading them needs a full key).
    pub(super) fn seed_drills(&self, state: &mut AgentState) {
        let lacking = self.policy.sources.iter().any(|s| {
            s.verify.is_some()
                && state
                    .sources
                    .get(&s.name)
                    .is_none_or(|st| st.drill.last_pass.is_none())
        });
        if !lacking {
            return;
        }
        let records =
            (self.open_repository)().and_then(|repo| repo.load_audit().map_err(|e| e.to_string()));
        match records {
            Ok((records, _)) => {
                let records: Vec<AuditRecord> = records.into_iter().map(|(_, r)| r).collect();
                for name in seed_last_pass(state, &self.policy.sources, &records) {
                    (self.log)(&format!(
                        "{name}: last passing drill taken from the repository's audit records"
                    ));
                }
            }
            Err(e) => (self.log)(&format!(
                "cannot read the audit records for the last passing drills: {e}"
            )),
        }
    }

    /// Collects finished drills (all of them, waiting, when `wait`).
    pub(super) fn reap_drills(
        &self,
        dir: &Path,
        state: &mut AgentState,
        drilling: &mut HashMap<String, JoinHandle<DrillRun>>,
        backing_up: &[String],
        wait: bool,
    ) {
        let done: Vec<String> = drilling
            .iter()
            .filter(|(_, handle)| wait || handle.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            let Some(handle) = drilling.remove(&name) else {
                continue;
            };
            match handle.join() {
                Ok(run) => self.finish_drill(dir, state, &run, backing_up),
                Err(_) => (self.log)(&format!("{name}: the drill thread panicked")),
            }
        }
    }
}
