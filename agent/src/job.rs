//! One run of a policy source: hooks, quiesce, backup, release, retention.
//!
//! The order is fixed:
//! 1. the `pre` hook; if it fails nothing is backed up (the `post` hook still runs);
//! 2. the quiesce step (freeze, a read-only btrfs snapshot to read from, or the
//!    application's own commands); if it fails the backup still runs (from the live files),
//!    recorded as crash-consistent with the reason;
//! 3. the backup, cancelled when the source's timeout passes (a command source's standard
//!    error goes on to the agent's, each line after the source's name, and its last lines
//!    end the failure message when the command fails);
//! 4. the release (thaw, snapshot deletion, or the quiesce `post` command), whatever
//!    happened in 3;
//! 5. the `post` hook, whatever happened before;
//! 6. retention (`forget` of this source's snapshots), only when the policy asks for it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bunker_repo_format::retention::{self, GroupBy};
use bunker_repo_format::snapshot::{ConsistencyLevel, Summary};
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};

use crate::backup::{
    BackupOptions, LineSink, ReadFrom, StreamOptions, VolumeOptions, backup, backup_command,
    backup_volume,
};
use crate::cache_dirs;
use crate::cancel::{Cancel, Deadline};
use crate::policy::{Quiesce, Source, SourceKind};
use crate::quiesce::{self, HookRun, WatchdogCommand};

/// Who runs the job and with what.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Host name for snapshots.
    pub host: String,
    /// User name for snapshots.
    pub username: String,
    /// How to start a thaw watchdog (none: rely on the in-process thaw only).
    pub watchdog: Option<WatchdogCommand>,
    /// Root of the files caches (one directory per repository id); `None`: no files cache.
    pub cache_root: Option<std::path::PathBuf>,
    /// Where the agent keeps its state and journal (written while a job runs); `None` for
    /// a run that keeps none.
    pub state_dir: Option<std::path::PathBuf>,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// A snapshot was written.
    Succeeded,
    /// No snapshot: the reason.
    Failed(String),
    /// Stopped by a shutdown or its timeout before the snapshot was written.
    Cancelled(String),
}

/// What a job did: the audit record of one run.
#[derive(Debug, Clone)]
pub struct JobReport {
    /// The source's name.
    pub source: String,
    /// `paths`, `volume` or `command`.
    pub kind: &'static str,
    /// When it started.
    pub started: Timestamp,
    /// How long it took, hooks included.
    pub duration: Duration,
    /// How it ended.
    pub outcome: JobOutcome,
    /// The snapshot written, if any.
    pub snapshot: Option<SnapshotId>,
    /// Its summary.
    pub summary: Option<Summary>,
    /// The consistency recorded.
    pub consistency: ConsistencyLevel,
    /// What the quiesce step did.
    pub consistency_detail: String,
    /// Every hook and quiesce command run, in order.
    pub hooks: Vec<HookRun>,
    /// Snapshots removed by retention.
    pub forgotten: Vec<SnapshotId>,
    /// Problems that did not fail the job (post hook, retention, unreadable files).
    pub warnings: Vec<String>,
}

impl JobReport {
    /// True when a snapshot was written.
    pub fn succeeded(&self) -> bool {
        self.outcome == JobOutcome::Succeeded
    }
}

/// Environment every hook gets.
fn hook_env(source: &Source, phase: &str) -> Vec<(String, String)> {
    vec![
        ("BUNKER_SOURCE".into(), source.name.clone()),
        ("BUNKER_PHASE".into(), phase.into()),
    ]
}

/// What the quiesce step left to undo.
enum Quiesced {
    Nothing,
    Frozen(quiesce::Frozen),
    Snapshot(quiesce::BtrfsSnapshot),
    Commands {
        post: Option<String>,
        timeout: Duration,
    },
}

/// Runs `source` once into `repo`. Never panics on a failing step: the report says what
/// happened. `cancel` is the agent's shutdown flag.
pub fn run_job(
    repo: &Repository,
    source: &Source,
    context: &JobContext,
    cancel: &Cancel,
) -> JobReport {
    let clock = Instant::now();
    let mut report = JobReport {
        source: source.name.clone(),
        kind: source.kind.name(),
        started: Timestamp::now(),
        duration: Duration::ZERO,
        outcome: JobOutcome::Failed(String::new()),
        snapshot: None,
        summary: None,
        consistency: ConsistencyLevel::Crash,
        consistency_detail: String::new(),
        hooks: Vec::new(),
        forgotten: Vec::new(),
        warnings: Vec::new(),
    };
    // The job's own flag: set by the shutdown flag or by the timeout.
    let deadline = Deadline::start(cancel, source.timeout);
    let job_cancel = deadline.cancel().clone();
    let outcome = run_steps(repo, source, context, &job_cancel, &mut report);
    let timed_out = deadline.finish();
    report.outcome = match outcome {
        Ok(()) => JobOutcome::Succeeded,
        Err(reason) if job_cancel.is_cancelled() => JobOutcome::Cancelled(if timed_out {
            format!("timed out after {:?}: {reason}", source.timeout)
        } else {
            format!("shut down: {reason}")
        }),
        Err(reason) => JobOutcome::Failed(reason),
    };
    if report.succeeded() && source.forget {
        forget(repo, source, context, &mut report);
    }
    report.duration = clock.elapsed();
    report
}

fn run_steps(
    repo: &Repository,
    source: &Source,
    context: &JobContext,
    cancel: &Cancel,
    report: &mut JobReport,
) -> Result<(), String> {
    if let Some(pre) = &source.hooks.pre {
        let run = quiesce::run_hook(pre, &hook_env(source, "pre"), source.hooks.timeout, cancel);
        let ok = run.succeeded();
        let described = run.describe();
        report.hooks.push(run);
        if !ok {
            run_post_hook(source, report);
            return Err(format!("pre {described}; nothing was backed up"));
        }
    }
    let quiesce_started = Timestamp::now();
    let quiesced = begin_quiesce(repo, source, context, cancel, report);
    let read_from = match &quiesced {
        Quiesced::Snapshot(snapshot) => Some(ReadFrom {
            live: snapshot.subvolume().to_path_buf(),
            snapshot: snapshot.path().to_path_buf(),
            device: snapshot.subvolume_device(),
            taken: quiesce_started,
        }),
        _ => None,
    };
    let result = back_up(repo, source, context, read_from, cancel, report);
    end_quiesce(quiesced, source, report);
    run_post_hook(source, report);
    result
}

/// The post hook runs even when the job was cancelled (it undoes what the pre hook did),
/// within its own timeout.
fn run_post_hook(source: &Source, report: &mut JobReport) {
    if let Some(post) = &source.hooks.post {
        let env = hook_env(source, "post");
        let run = quiesce::run_hook(post, &env, source.hooks.timeout, &Cancel::new());
        if !run.succeeded() {
            report.warnings.push(format!("post {}", run.describe()));
        }
        report.hooks.push(run);
    }
}

fn begin_quiesce(
    repo: &Repository,
    source: &Source,
    context: &JobContext,
    cancel: &Cancel,
    report: &mut JobReport,
) -> Quiesced {
    match &source.quiesce {
        Quiesce::None => {
            if let SourceKind::Command { .. } = source.kind {
                report.consistency = ConsistencyLevel::Application;
                report.consistency_detail = "the application's own dump".into();
            } else {
                report.consistency_detail = "no quiesce step configured".into();
            }
            Quiesced::Nothing
        }
        Quiesce::Fsfreeze(mount) => {
            // What the agent writes while the filesystem is frozen must live elsewhere, or
            // the backup would wait for the thaw that only its end brings.
            let location = repo.location();
            let writes: Vec<std::path::PathBuf> = (!location.contains("://"))
                .then(|| std::path::PathBuf::from(location))
                .into_iter()
                .chain(context.cache_root.clone())
                .chain(context.state_dir.clone())
                .collect();
            let frozen = quiesce::check_freezable(mount, &writes)
                .and_then(|()| quiesce::freeze(mount, source.timeout, context.watchdog.as_ref()));
            match frozen {
                Ok(frozen) => {
                    report.consistency = ConsistencyLevel::Application;
                    report.consistency_detail = format!("fsfreeze {}", mount.display());
                    Quiesced::Frozen(frozen)
                }
                Err(e) => {
                    report.consistency_detail = format!("quiesce failed: {e}");
                    report.warnings.push(report.consistency_detail.clone());
                    Quiesced::Nothing
                }
            }
        }
        Quiesce::BtrfsSnapshot(subvolume) => match quiesce::btrfs_snapshot(subvolume, &source.name)
        {
            Ok(snapshot) => {
                report.consistency = ConsistencyLevel::Application;
                report.consistency_detail =
                    format!("read-only btrfs snapshot of {}", subvolume.display());
                Quiesced::Snapshot(snapshot)
            }
            Err(e) => {
                report.consistency_detail = format!("quiesce failed: {e}");
                report.warnings.push(report.consistency_detail.clone());
                Quiesced::Nothing
            }
        },
        Quiesce::Commands { pre, post, timeout } => {
            let run = quiesce::run_hook(pre, &hook_env(source, "quiesce"), *timeout, cancel);
            let ok = run.succeeded();
            report.consistency_detail = if ok {
                format!("quiesce command {pre:?}")
            } else {
                format!("quiesce failed: {}", run.describe())
            };
            if !ok {
                report.warnings.push(report.consistency_detail.clone());
            }
            report.hooks.push(run);
            if ok {
                report.consistency = ConsistencyLevel::Application;
            }
            // Release even after a failed quiesce command: it may have half-succeeded.
            Quiesced::Commands {
                post: post.clone(),
                timeout: *timeout,
            }
        }
    }
}

fn end_quiesce(quiesced: Quiesced, source: &Source, report: &mut JobReport) {
    match quiesced {
        Quiesced::Nothing => {}
        Quiesced::Frozen(frozen) => {
            if let Err(e) = frozen.thaw() {
                report.warnings.push(e.to_string());
            }
        }
        Quiesced::Snapshot(snapshot) => {
            if let Err(e) = snapshot.delete() {
                report.warnings.push(e.to_string());
            }
        }
        Quiesced::Commands { post, timeout } => {
            if let Some(post) = post {
                // Like the post hook, the release runs even after a cancellation.
                let env = hook_env(source, "release");
                let run = quiesce::run_hook(&post, &env, timeout, &Cancel::new());
                if !run.succeeded() {
                    report.warnings.push(format!("release {}", run.describe()));
                }
                report.hooks.push(run);
            }
        }
    }
}

/// The last lines a command source wrote to its standard error, kept for its failure
/// message while every line goes on to the agent's own standard error (its journal under
/// systemd), as the command's own would have.
#[derive(Default)]
struct StderrTail {
    lines: Mutex<VecDeque<String>>,
}

impl StderrTail {
    /// Lines kept.
    const LINES: usize = 3;
    /// Characters kept of each line.
    const CHARS: usize = 300;

    /// A sink for the command of source `name`.
    fn sink(self: &Arc<Self>, name: &str) -> LineSink {
        let tail = Arc::clone(self);
        let name = name.to_owned();
        LineSink::new(move |line| {
            let line = String::from_utf8_lossy(line);
            eprintln!("{name}: {line}");
            tail.push(line.trim());
        })
    }

    /// Keeps `line` as the newest, dropping the oldest beyond [`Self::LINES`]; a blank
    /// line says nothing about a failure and does not take the place of one that does.
    fn push(&self, line: &str) {
        if line.is_empty() {
            return;
        }
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == Self::LINES {
            lines.pop_front();
        }
        lines.push_back(line.chars().take(Self::CHARS).collect());
    }

    /// The lines kept, oldest first.
    fn lines(&self) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().cloned().collect()
    }
}

fn back_up(
    repo: &Repository,
    source: &Source,
    context: &JobContext,
    read_from: Option<ReadFrom>,
    cancel: &Cancel,
    report: &mut JobReport,
) -> Result<(), String> {
    let tags: Vec<(String, String)> = source
        .tags
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A command source's last lines on standard error, which say why it failed.
    let mut stderr_tail = None;
    let outcome = match &source.kind {
        SourceKind::Paths {
            paths,
            excludes,
            one_file_system,
            exclude_if_present,
            exclude_larger_than,
            fixed_chunks,
            images_by_content,
            change_detection,
        } => {
            let options = BackupOptions {
                paths: paths.clone(),
                one_file_system: *one_file_system,
                exclude_if_present: exclude_if_present.clone(),
                exclude_larger_than: *exclude_larger_than,
                fixed_chunks: *fixed_chunks,
                images_by_content: *images_by_content,
                change_detection: *change_detection,
                host: context.host.clone(),
                username: context.username.clone(),
                tags,
                excludes: excludes.clone(),
                consistency: report.consistency,
                consistency_detail: report.consistency_detail.clone(),
                cache_dir: context.cache_root.as_ref().map(|root| {
                    cache_dirs::repository_dir(root, &repo.config().header.repository_id)
                }),
                read_from,
                ..BackupOptions::default()
            };
            backup(repo, &options, cancel)
        }
        SourceKind::Command { command, env } => {
            let tail = Arc::new(StderrTail::default());
            stderr_tail = Some(Arc::clone(&tail));
            let options = StreamOptions {
                name: source.name.clone(),
                host: context.host.clone(),
                username: context.username.clone(),
                tags,
                time: None,
                consistency: report.consistency,
                consistency_detail: report.consistency_detail.clone(),
                command_stderr: Some(tail.sink(&source.name)),
                ..StreamOptions::default()
            };
            let env: Vec<(String, String)> =
                env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            backup_command(repo, command, &env, &options, cancel)
        }
        SourceKind::Volume { device } => {
            let options = VolumeOptions {
                device: device.clone(),
                name: Some(source.name.clone()),
                host: context.host.clone(),
                username: context.username.clone(),
                tags,
                time: None,
                parent: None,
                consistency: report.consistency,
                consistency_detail: report.consistency_detail.clone(),
                ..VolumeOptions::default()
            };
            backup_volume(repo, &options, cancel)
        }
    };
    match outcome {
        Ok(outcome) => {
            for entry in &outcome.unreadable {
                report.warnings.push(format!("could not read {entry}"));
            }
            report.snapshot = Some(outcome.id);
            report.summary = Some(outcome.snapshot.summary);
            Ok(())
        }
        Err(e) => match stderr_tail.map(|tail| tail.lines()) {
            Some(lines) if !lines.is_empty() => Err(format!(
                "{e}; its standard error ended with: {}",
                lines.join(" / ")
            )),
            _ => Err(e.to_string()),
        },
    }
}

/// Applies the source's retention to its own snapshots of this host.
fn forget(repo: &Repository, source: &Source, context: &JobContext, report: &mut JobReport) {
    let Some(policy) = &source.retention else {
        return;
    };
    let tag = ("source".to_owned(), source.name.clone());
    let result = (|| -> Result<Vec<SnapshotId>, bunker_repo_format::Error> {
        repo.check_features(bunker_repo_format::config::Operation::Prune)?;
        let mut mine = Vec::new();
        for id in repo.list_snapshot_ids()? {
            // Unreadable snapshots are left alone; `check` reports them.
            if let Ok(snapshot) = repo.load_snapshot(&id)
                && snapshot.host == context.host
                && snapshot.tags.contains(&tag)
            {
                mine.push((id, snapshot));
            }
        }
        let by_host = GroupBy {
            host: true,
            paths: false,
            tags: false,
        };
        let groups = retention::apply(&mine, policy, by_host, Timestamp::now())?;
        let mut removed = Vec::new();
        for decision in groups.iter().flat_map(|g| g.removed()) {
            repo.forget_snapshot(&decision.id)?;
            removed.push(decision.id);
        }
        Ok(removed)
    })();
    match result {
        Ok(removed) => report.forgotten = removed,
        Err(e) => report
            .warnings
            .push(format!("retention was not applied: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_last_lines_that_say_something() {
        let tail = StderrTail::default();
        for line in ["first", "second", "", "third", "", ""] {
            tail.push(line);
        }
        // The blank lines after "third" take no place: "first" is still there.
        assert_eq!(tail.lines(), ["first", "second", "third"]);
        tail.push(&"x".repeat(1000));
        assert_eq!(
            tail.lines(),
            [
                "second".to_owned(),
                "third".to_owned(),
                "x".repeat(StderrTail::CHARS)
            ]
        );
    }
}
