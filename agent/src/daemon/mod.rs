//! `bunker-agent run`: the scheduler that runs policy sources on their schedules.
//!
//! - A source runs when its next schedule slot (after the last slot it ran) plus its jitter
//!   has passed. The jitter is a fixed offset per host and source, so a fleet spreads out
//!   the same way every hour.
//! - A slot missed while the agent was down is caught up **once** at start, however many
//!   slots were missed. On the very first start nothing is caught up.
//! - A source never overlaps itself: a slot that comes while its previous run is still going
//!   is skipped and counted.
//! - On shutdown no new run starts; running jobs get `shutdown_timeout` to finish, then are
//!   cancelled at their next safe point (no snapshot is written; a freeze is thawed).
//!
//! After every run the state file, the journal (`jobs.jsonl`) and the metrics are updated.
//!
//! Sources with `verify` settings are also drilled on their own schedule ([`drills`]); a
//! drill and a backup of the same source never overlap.
//!
//! Self-service restores: at start and every 15 seconds (and on every `run --once`) the
//! agent removes the targets of expired leases in `<state_dir>/restores`
//! ([`Agent::expire_leases`]), writes an audit record for each, and exports the active and
//! expired lease counts.

pub mod drills;
pub mod metrics;
pub mod state;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bunker_repo_format::Repository;
use jiff::Zoned;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

use crate::cancel::Cancel;
use crate::deep_stack;
use crate::job::{JobContext, JobOutcome, JobReport, run_job};
use crate::lease::{self, Expiry, LeaseDir, RestoreRoots};
use crate::policy::{Policy, Source};
use crate::schedule::Schedule;
use state::{AgentState, append_journal};

/// Opens the repository for a job (a fresh handle per run sees the newest index).
pub type OpenRepository = dyn Fn() -> Result<Repository, String> + Send + Sync;

/// Where log lines go (stderr under systemd, captured by the journal).
pub type Log = dyn Fn(&str) + Send + Sync;

/// Everything the scheduler needs.
pub struct Agent {
    /// The policy.
    pub policy: Policy,
    /// Host, user and watchdog for jobs.
    pub context: JobContext,
    /// Opens the repository.
    pub open_repository: Arc<OpenRepository>,
    /// Logs a line.
    pub log: Arc<Log>,
    /// The text the metrics endpoint serves ([`new_metrics_text`]).
    pub metrics_text: metrics::Shared,
}

/// What `run --once` did.
#[derive(Debug, Clone)]
pub struct OnceReport {
    /// The backups, in the order they ran.
    pub jobs: Vec<JobReport>,
    /// The drills that were due, run after the backups.
    pub drills: Vec<drills::DrillRun>,
}

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory is unusable.
    #[error("state directory {}: {source}", path.display())]
    State {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A named source does not exist.
    #[error("no source named {0:?} in the policy")]
    UnknownSource(String),
    /// The metrics endpoint could not listen.
    #[error("metrics cannot listen on {address}: {source}")]
    Metrics {
        /// The address.
        address: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The configured time zone is unknown.
    #[error("time zone: {0}")]
    TimeZone(String),
}

impl Agent {
    fn time_zone(&self) -> Result<TimeZone, AgentError> {
        match &self.policy.agent.time_zone {
            Some(name) => TimeZone::get(name).map_err(|e| AgentError::TimeZone(e.to_string())),
            None => Ok(TimeZone::system()),
        }
    }

    fn state_dir(&self) -> Result<PathBuf, AgentError> {
        let dir = self.policy.agent.state_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| AgentError::State {
            path: dir.clone(),
            source,
        })?;
        Ok(dir)
    }

    /// The policy's sources with these names, in this order; an unknown name is an error.
    fn sources_named(&self, names: &[String]) -> Result<Vec<&Source>, AgentError> {
        names
            .iter()
            .map(|name| {
                self.policy
                    .source(name)
                    .ok_or_else(|| AgentError::UnknownSource(name.clone()))
            })
            .collect()
    }

    /// Runs the named sources now (all sources that are due, or never ran, when `names`
    /// is empty), one after another; then the due drills of those sources (or of every
    /// source), see [`drills`]. Returns their reports.
    pub fn run_once(&self, names: &[String], cancel: &Cancel) -> Result<OnceReport, AgentError> {
        let dir = self.state_dir()?;
        let tz = self.time_zone()?;
        let mut state = AgentState::load(&dir);
        let now = Zoned::now().with_time_zone(tz);
        self.expire_leases(now.timestamp().as_second());
        let chosen: Vec<&Source> = if names.is_empty() {
            self.policy
                .sources
                .iter()
                .filter(|s| {
                    let last = state.sources.get(&s.name).and_then(|st| st.last_slot);
                    due_now(&s.schedule, last, &now)
                })
                .collect()
        } else {
            self.sources_named(names)?
        };
        let mut reports = Vec::new();
        for source in chosen {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(latest) = latest_slot(&source.schedule, None, &now) {
                state.source(&source.name).last_slot = Some(latest);
            }
            let report = self.run_source(source, cancel);
            self.finish(&dir, &mut state, &report, &[]);
            reports.push(report);
        }
        let drill_sources: Vec<&Source> = if names.is_empty() {
            self.policy.sources.iter().collect()
        } else {
            names.iter().filter_map(|n| self.policy.source(n)).collect()
        };
        let drills = self.run_due_drills(&dir, &mut state, &drill_sources, &now, cancel);
        Ok(OnceReport {
            jobs: reports,
            drills,
        })
    }

    fn run_source(&self, source: &Source, cancel: &Cancel) -> JobReport {
        (self.log)(&format!(
            "{}: starting ({})",
            source.name,
            source.kind.name()
        ));
        // Held until the job ends: another agent process on this state directory (`run
        // --once` beside the daemon) must not run the source at the same time.
        let _lock = match lock_source(&self.policy.agent.state_dir, &source.name) {
            Ok(lock) => lock,
            Err(reason) => return not_run(source, reason),
        };
        match (self.open_repository)() {
            Ok(repo) => {
                let report = run_job(&repo, source, &self.context, cancel);
                if let Err(e) = repo.save_audit(&audit_record(&self.context, &report)) {
                    (self.log)(&format!(
                        "{}: warning: the audit record was not stored: {e}",
                        source.name
                    ));
                }
                report
            }
            Err(e) => not_run(source, format!("cannot open the repository: {e}")),
        }
    }

    /// Records a finished job: state, journal, metrics, log.
    fn finish(
        &self,
        dir: &std::path::Path,
        state: &mut AgentState,
        report: &JobReport,
        running: &[String],
    ) {
        let finished = jiff::Timestamp::now().as_second();
        state.record(report, finished);
        (self.log)(&describe(report));
        for warning in &report.warnings {
            (self.log)(&format!("{}: warning: {warning}", report.source));
        }
        if let Err(e) = state.save(dir) {
            (self.log)(&format!(
                "cannot save the agent state in {}: {e}",
                dir.display()
            ));
        }
        if let Err(e) = append_journal(dir, &report_json(report)) {
            (self.log)(&format!(
                "cannot append to the job journal in {}: {e}",
                dir.display()
            ));
        }
        self.publish(state, running);
    }

    fn publish(&self, state: &AgentState, running: &[String]) {
        let rpo: std::collections::BTreeMap<String, Duration> = self
            .policy
            .sources
            .iter()
            .filter_map(|s| s.rpo.map(|r| (s.name.clone(), r)))
            .collect();
        let now = jiff::Timestamp::now().as_second();
        let mut text = metrics::render(state, running, &rpo, now);
        let covered = drills::coverage(&self.policy.sources, state, now);
        text.push_str(&metrics::render_drills(state, &covered));
        match self.lease_dir().counts(now) {
            Ok((active, expired)) => text.push_str(&metrics::render_leases(active, expired)),
            Err(e) => (self.log)(&format!("restore leases: {e}")),
        }
        if let Some(path) = &self.policy.metrics.textfile
            && let Err(e) = metrics::write_textfile(path, &text)
        {
            (self.log)(&format!("cannot write metrics to {}: {e}", path.display()));
        }
        if let Ok(mut shared) = self.metrics_text.lock() {
            *shared = text;
        }
    }
}

impl Agent {
    /// Where self-service restores on this host keep their leases.
    pub fn lease_dir(&self) -> LeaseDir {
        LeaseDir::new(self.policy.agent.state_dir.join("restores"))
    }

    /// Removes the targets of the leases expired at `now` (Unix seconds) with
    /// [`lease::expire`], logs each and stores its audit record in the repository.
    pub fn expire_leases(&self, now: i64) -> Vec<Expiry> {
        let done = RestoreRoots::new(&self.policy.agent.restore_roots).and_then(|roots| {
            lease::expire(&self.lease_dir(), &roots, now, &|l| l.is_expired(now))
        });
        let done = match done {
            Ok(done) => done,
            Err(e) => {
                (self.log)(&format!("restore leases: {e}"));
                return Vec::new();
            }
        };
        if done.is_empty() {
            return done;
        }
        let repository = (self.open_repository)();
        for expiry in &done {
            let lease = &expiry.lease;
            (self.log)(&format!(
                "restore lease {} of {} ({}): {}{}",
                lease.id,
                lease.owner,
                lease.target.display(),
                expiry.action.outcome(),
                expiry
                    .action
                    .error()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            ));
            let record = lease::audit_record(expiry, &self.context.host, &self.context.username);
            let stored = match &repository {
                Ok(repo) => repo
                    .save_audit(&record)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            if let Err(e) = stored {
                (self.log)(&format!(
                    "restore lease {}: warning: the audit record was not stored: {e}",
                    lease.id
                ));
            }
        }
        done
    }
}

impl Agent {
    /// Runs until `shutdown` is set, then shuts down gracefully.
    pub fn run(self: &Arc<Self>, shutdown: &Cancel) -> Result<(), AgentError> {
        let dir = self.state_dir()?;
        let tz = self.time_zone()?;
        if let Some(address) = self.policy.metrics.listen {
            let bound = metrics::serve(address, Arc::clone(&self.metrics_text))
                .map_err(|source| AgentError::Metrics { address, source })?;
            (self.log)(&format!("metrics on http://{bound}/metrics"));
        }
        let mut state = AgentState::load(&dir);
        self.seed_drills(&mut state);
        self.expire_leases(jiff::Timestamp::now().as_second());
        self.publish(&state, &[]);
        let jobs_cancel = Cancel::new();
        let mut running: HashMap<String, JoinHandle<JobReport>> = HashMap::new();
        let mut drilling: HashMap<String, JoinHandle<drills::DrillRun>> = HashMap::new();
        let mut waiting = drills::Waiting::default();
        let mut last_publish = Instant::now();
        (self.log)(&format!(
            "bunker-agent running {} source(s); state in {}",
            self.policy.sources.len(),
            dir.display()
        ));
        while !shutdown.is_cancelled() {
            self.reap(&dir, &mut state, &mut running, false);
            let names: Vec<String> = running.keys().cloned().collect();
            self.reap_drills(&dir, &mut state, &mut drilling, &names, false);
            let now = Zoned::now().with_time_zone(tz.clone());
            if last_publish.elapsed() >= Duration::from_secs(15) {
                // Ages in the metrics move with the clock; leases expire with it.
                self.expire_leases(now.timestamp().as_second());
                self.publish(&state, &names);
                last_publish = Instant::now();
            }
            let busy: HashSet<String> = running.keys().cloned().collect();
            let drilled: HashSet<String> = drilling.keys().cloned().collect();
            for tick in plan_tick(
                &self.policy.sources,
                &mut state,
                &busy,
                &self.context.host,
                &now,
            ) {
                match tick {
                    Tick::Skip(name) => (self.log)(&format!(
                        "{name}: slot skipped, the previous run is still going"
                    )),
                    Tick::Start(name) => {
                        if drilled.contains(&name) {
                            (self.log)(&format!("{name}: backup waits for the running drill"));
                        }
                        waiting.backup(&name);
                    }
                }
            }
            for tick in drills::plan_drills(
                &self.policy.sources,
                &mut state,
                &drilled,
                &self.context.host,
                &now,
            ) {
                match tick {
                    Tick::Skip(name) => (self.log)(&format!(
                        "{name}: drill slot skipped, the previous drill is still going"
                    )),
                    Tick::Start(name) => {
                        if busy.contains(&name) || waiting.has_backup(&name) {
                            (self.log)(&format!(
                                "{name}: drill waits for the backup of its source"
                            ));
                        }
                        waiting.drill(&name);
                    }
                }
            }
            let (backups, drill_names) = waiting.ready(&busy, &drilled);
            for name in backups {
                let Some(source) = self.policy.source(&name) else {
                    continue;
                };
                let agent = Arc::clone(self);
                let source = source.clone();
                let cancel = jobs_cancel.clone();
                running.insert(
                    name,
                    thread::spawn(move || {
                        deep_stack::run("bunker-backup", || agent.run_source(&source, &cancel))
                    }),
                );
                let names: Vec<String> = running.keys().cloned().collect();
                self.publish(&state, &names);
            }
            for name in drill_names {
                let Some(source) = self.policy.source(&name) else {
                    continue;
                };
                let agent = Arc::clone(self);
                let source = source.clone();
                let cancel = jobs_cancel.clone();
                drilling.insert(
                    name,
                    thread::spawn(move || {
                        deep_stack::run("bunker-drill", || agent.drill_source(&source, &cancel))
                    }),
                );
            }
            if let Err(e) = state.save(&dir) {
                (self.log)(&format!(
                    "cannot save the agent state in {}: {e}",
                    dir.display()
                ));
            }
            thread::sleep(Duration::from_millis(250));
        }
        // Graceful shutdown: let jobs finish for a while, then cancel them cleanly.
        // Waiting jobs do not start.
        if !running.is_empty() || !drilling.is_empty() {
            let grace = self.policy.agent.shutdown_timeout;
            (self.log)(&format!(
                "shutting down: waiting up to {grace:?} for {} running job(s)",
                running.len() + drilling.len()
            ));
            let waited = Instant::now();
            while (!running.is_empty() || !drilling.is_empty()) && waited.elapsed() < grace {
                self.reap(&dir, &mut state, &mut running, false);
                self.reap_drills(&dir, &mut state, &mut drilling, &[], false);
                thread::sleep(Duration::from_millis(100));
            }
            if !running.is_empty() || !drilling.is_empty() {
                (self.log)("cancelling the jobs still running");
                jobs_cancel.cancel();
                self.reap(&dir, &mut state, &mut running, true);
                self.reap_drills(&dir, &mut state, &mut drilling, &[], true);
            }
        }
        (self.log)("bunker-agent stopped");
        Ok(())
    }

    /// Collects finished jobs (all of them, waiting, when `wait`).
    fn reap(
        &self,
        dir: &std::path::Path,
        state: &mut AgentState,
        running: &mut HashMap<String, JoinHandle<JobReport>>,
        wait: bool,
    ) {
        let done: Vec<String> = running
            .iter()
            .filter(|(_, handle)| wait || handle.is_finished())
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            let Some(handle) = running.remove(&name) else {
                continue;
            };
            let still: Vec<String> = running.keys().cloned().collect();
            match handle.join() {
                Ok(report) => self.finish(dir, state, &report, &still),
                Err(_) => (self.log)(&format!("{name}: the job thread panicked")),
            }
        }
    }
}

/// The report of a job of `source` that did not start, and why.
fn not_run(source: &Source, reason: String) -> JobReport {
    JobReport {
        source: source.name.clone(),
        kind: source.kind.name(),
        started: bunker_repo_format::tree::Timestamp::now(),
        duration: Duration::ZERO,
        outcome: JobOutcome::Failed(reason),
        snapshot: None,
        summary: None,
        consistency: bunker_repo_format::snapshot::ConsistencyLevel::None,
        consistency_detail: String::new(),
        hooks: Vec::new(),
        forgotten: Vec::new(),
        warnings: Vec::new(),
    }
}

/// Directory of the per-source job locks, inside the state directory.
const LOCK_DIR: &str = "locks";

/// Takes the lock of source `name` in `state_dir` (an exclusive `flock` on
/// `locks/NAME.lock`, released when the returned file is closed, by the kernel if the
/// process dies), or says why it cannot: held by another run of the source.
fn lock_source(state_dir: &std::path::Path, name: &str) -> Result<std::fs::File, String> {
    let dir = state_dir.join(LOCK_DIR);
    let path = dir.join(format!("{name}.lock"));
    let file = std::fs::create_dir_all(&dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|e| format!("cannot take the lock {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "source {name} is already being backed up by another bunker-agent process (it \
             holds {}); not run",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("cannot take the lock {}: {e}", path.display()))
        }
    }
}

/// What the scheduler does with a source at one tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tick {
    /// Start a run now.
    Start(String),
    /// A slot passed while the previous run is still going: skipped.
    Skip(String),
}

/// One scheduler decision at time `now`: which sources start, which skip a slot. Updates
/// each due source's last slot to the newest slot at or before `now`, so however many slots
/// were missed, one run catches them up. A source without a last slot starts counting at
/// `now`. Pure apart from `state`: the tests drive it with their own clock.
pub fn plan_tick(
    sources: &[Source],
    state: &mut AgentState,
    running: &HashSet<String>,
    host: &str,
    now: &Zoned,
) -> Vec<Tick> {
    plan_slots(
        sources,
        state,
        running,
        host,
        now,
        |source| Some(&source.schedule),
        |entry| Slots {
            last: &mut entry.last_slot,
            runs: &mut entry.runs,
        },
    )
}

/// The decisions of one tick for one kind of job: each source with a schedule
/// (`schedule_of`) takes its due slot from its bookkeeping (`slots_of`); a source in
/// `running` skips it.
fn plan_slots(
    sources: &[Source],
    state: &mut AgentState,
    running: &HashSet<String>,
    host: &str,
    now: &Zoned,
    schedule_of: fn(&Source) -> Option<&Schedule>,
    slots_of: for<'a> fn(&'a mut state::SourceState) -> Slots<'a>,
) -> Vec<Tick> {
    let mut ticks = Vec::new();
    for source in sources {
        let Some(schedule) = schedule_of(source) else {
            continue;
        };
        let busy = running.contains(&source.name);
        let slots = slots_of(state.source(&source.name));
        match slots.take_due(schedule, busy, host, source, now) {
            Some(Due::Start) => ticks.push(Tick::Start(source.name.clone())),
            Some(Due::Skip) => ticks.push(Tick::Skip(source.name.clone())),
            None => {}
        }
    }
    ticks
}

/// What a due slot asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Start the job.
    Start,
    /// The previous job still runs: the slot is skipped (and counted).
    Skip,
}

/// The schedule bookkeeping of one kind of job of a source (its backups, or its drills).
struct Slots<'a> {
    /// The last slot taken; `None` before the first tick.
    last: &'a mut Option<i64>,
    /// Run counters by outcome; a skipped slot counts as `skipped`.
    runs: &'a mut std::collections::BTreeMap<String, u64>,
}

impl Slots<'_> {
    /// Takes the slot of `schedule` due at `now`, if any: records it as the last slot (a
    /// job without one starts counting at `now`), and says whether to start or, when the
    /// previous job is still `busy`, to skip it.
    fn take_due(
        self,
        schedule: &Schedule,
        busy: bool,
        host: &str,
        source: &Source,
        now: &Zoned,
    ) -> Option<Due> {
        let now_second = now.timestamp().as_second();
        // A slot is recorded at or before the clock, so one ahead of it means the clock was
        // set back (after running ahead, e.g. a bad RTC at boot): count from now, or
        // nothing would run until the clock caught up with it, possibly years later.
        let last = match *self.last {
            Some(last) if last <= now_second => last,
            _ => now_second,
        };
        *self.last = Some(last);
        let slot = due_slot(schedule, last, host, source, now)?;
        *self.last = Some(slot);
        if busy {
            *self.runs.entry("skipped".into()).or_default() += 1;
            Some(Due::Skip)
        } else {
            Some(Due::Start)
        }
    }
}

/// The slot to record when `schedule` is due at `now` for a source (`host`'s jitter
/// included) whose last slot was `last`: the newest slot at or before `now`, so however
/// many slots were missed, one run catches them up. `None` when nothing is due.
fn due_slot(
    schedule: &Schedule,
    last: i64,
    host: &str,
    source: &Source,
    now: &Zoned,
) -> Option<i64> {
    let slot = next_slot(schedule, last, now)?;
    let offset = i64::try_from(jitter_offset(host, source).as_secs()).unwrap_or(i64::MAX);
    if slot.saturating_add(offset) > now.timestamp().as_second() {
        return None;
    }
    Some(latest_slot(schedule, Some(slot), now).unwrap_or(slot))
}

/// True when `schedule` has a slot after `last` at or before `now`, or `last` is unknown
/// or ahead of the clock (which was set back: see [`Slots::take_due`]).
fn due_now(schedule: &Schedule, last: Option<i64>, now: &Zoned) -> bool {
    let now_second = now.timestamp().as_second();
    match last {
        None => true,
        Some(last) if last > now_second => true,
        Some(last) => next_slot(schedule, last, now).is_some_and(|slot| slot <= now_second),
    }
}

/// The first slot of `schedule` after the Unix second `last`, as a Unix second.
fn next_slot(schedule: &Schedule, last: i64, now: &Zoned) -> Option<i64> {
    let after = jiff::Timestamp::from_second(last)
        .ok()?
        .to_zoned(now.time_zone().clone());
    schedule
        .next_after(&after)
        .map(|z| z.timestamp().as_second())
}

/// The newest slot of `schedule` at or before `now`, searching from the Unix second `from`
/// (or a year back, whichever is later).
fn latest_slot(schedule: &Schedule, from: Option<i64>, now: &Zoned) -> Option<i64> {
    let year_ago = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * 366))
        .ok()?;
    let mut at = match from {
        Some(second) if second > year_ago.timestamp().as_second() => {
            jiff::Timestamp::from_second(second - 1)
                .ok()?
                .to_zoned(now.time_zone().clone())
        }
        _ => year_ago,
    };
    let mut latest = None;
    // Step forward slot by slot; bounded so a minutely schedule costs at most ~half a
    // million steps once, after a year of downtime.
    for _ in 0..600_000 {
        match schedule.next_after(&at) {
            Some(next) if next.timestamp() <= now.timestamp() => {
                latest = Some(next.timestamp().as_second());
                at = next;
            }
            _ => break,
        }
    }
    latest
}

/// A fixed per-host, per-source delay below the source's jitter.
pub fn jitter_offset(host: &str, source: &Source) -> Duration {
    let jitter = source.jitter.as_secs();
    if jitter == 0 {
        return Duration::ZERO;
    }
    let hash = blake3::hash(format!("{host}\0{}", source.name).as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    Duration::from_secs(u64::from_le_bytes(first) % jitter)
}

/// One log line for a finished job.
pub fn describe(report: &JobReport) -> String {
    match &report.outcome {
        JobOutcome::Succeeded => format!(
            "{}: snapshot {} written in {:.1}s ({}, {})",
            report.source,
            report.snapshot.map(|id| id.short()).unwrap_or_default(),
            report.duration.as_secs_f64(),
            report.consistency.name(),
            report.consistency_detail
        ),
        JobOutcome::Failed(e) => format!("{}: FAILED: {e}", report.source),
        JobOutcome::Cancelled(e) => format!("{}: cancelled: {e}", report.source),
    }
}

/// The repository audit record of one job (FORMAT.md §13a).
pub fn audit_record(
    context: &JobContext,
    report: &JobReport,
) -> bunker_repo_format::audit::AuditRecord {
    let (outcome, error) = match &report.outcome {
        JobOutcome::Succeeded => ("succeeded", None),
        JobOutcome::Failed(e) => ("failed", Some(e.clone())),
        JobOutcome::Cancelled(e) => ("cancelled", Some(e.clone())),
    };
    let mut details = vec![
        ("source".to_owned(), report.source.clone()),
        ("kind".to_owned(), report.kind.to_owned()),
        (
            "consistency".to_owned(),
            report.consistency.name().to_owned(),
        ),
        (
            "consistency_detail".to_owned(),
            report.consistency_detail.clone(),
        ),
    ];
    if let Some(error) = error {
        details.push(("error".to_owned(), error));
    }
    bunker_repo_format::audit::AuditRecord {
        time: report.started,
        host: context.host.clone(),
        user: context.username.clone(),
        operation: "backup".to_owned(),
        target: format!("source {}", report.source),
        outcome: outcome.to_owned(),
        duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
        snapshot: report.snapshot,
        details,
    }
}

/// The audit record of one job, as JSON.
pub fn report_json(report: &JobReport) -> Value {
    let (outcome, error) = match &report.outcome {
        JobOutcome::Succeeded => ("succeeded", None),
        JobOutcome::Failed(e) => ("failed", Some(e.as_str())),
        JobOutcome::Cancelled(e) => ("cancelled", Some(e.as_str())),
    };
    json!({
        "source": report.source,
        "kind": report.kind,
        "started": report.started.sec,
        "duration_s": report.duration.as_secs_f64(),
        "outcome": outcome,
        "error": error,
        "snapshot_id": report.snapshot.map(|id| id.to_hex()),
        "bytes": report.summary.as_ref().map(|s| s.bytes),
        "bytes_added": report.summary.as_ref().map(|s| s.bytes_added),
        "consistency": report.consistency.name(),
        "consistency_detail": report.consistency_detail,
        "hooks": report.hooks.iter().map(|h| json!({
            "command": h.command,
            "exit_code": h.code,
            "timed_out": h.timed_out,
            "cancelled": h.cancelled,
            "duration_s": h.duration.as_secs_f64(),
            "output": h.output,
        })).collect::<Vec<_>>(),
        "forgotten": report.forgotten.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
        "warnings": report.warnings,
    })
}

/// A shared metrics text for [`Agent`], empty until the first publish.
pub fn new_metrics_text() -> Arc<Mutex<String>> {
    Arc::new(Mutex::new(String::new()))
}

#[cfg(test)]
mod tests;
