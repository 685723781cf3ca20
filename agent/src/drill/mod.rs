//! Restore drills: restore a snapshot into a fresh target, verify it (see
//! [`crate::verify`]), run the checks its kind calls for, and report.
//!
//! Steps, each in its own module: the verification pass; for a volume, `fsck`
//! of the restored image and, if asked, a read-only `mount` of it; for a
//! database dump, the [`database`] step (a temporary server, `pg_restore`, smoke SQL); the
//! `smoke` command (run inside the mount, or while the temporary server
//! runs); the [`report`] with the audit record. The first failing step fails the drill and
//! later steps do not run. Mounts and servers are undone on every way out; the target is
//! removed at the end unless asked to keep it.

pub mod database;
mod fsck;
mod mount;
mod process;
pub mod report;
mod select;
mod smoke;

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::{Snapshot, SourceKind};
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};

use crate::cancel::Cancel;
use crate::restore::RestoreError;
use crate::verify::{Target, VerifyOptions, restore_and_verify};
pub use database::DatabaseDrill;
pub use report::{DrillReport, Failure};
pub use select::{LatestPerSource, latest_per_source};

/// What a drill does besides restoring and verifying.
#[derive(Debug, Clone, Default)]
pub struct DrillSpec {
    /// Directory to restore into (must not exist or be empty); a temporary one if `None`.
    pub target: Option<PathBuf>,
    /// Shell command run against the restored data.
    pub smoke: Option<String>,
    /// Run `fsck -n -f` on a restored volume image.
    pub fsck: bool,
    /// Mount a restored volume image read-only and run the smoke command inside it
    /// (`BUNKER_RESTORE_DIR` is the mountpoint).
    pub mount: bool,
    /// Restore the dump into a temporary database server and query it.
    pub database: Option<DatabaseDrill>,
    /// Leave the target in place afterwards.
    pub keep: bool,
    /// Restore and compare ownership (root only).
    pub ownership: bool,
}

impl DrillSpec {
    /// The drill a policy source asks for (its `verify` settings), into a temporary target:
    /// a volume gets fsck unless `fsck = false` and a mount if `mount = true`; a database
    /// source gets the database step with its `smoke_sql`.
    pub fn for_source(source: &crate::policy::Source) -> DrillSpec {
        let volume = matches!(source.kind, crate::policy::SourceKind::Volume { .. });
        let verify = source.verify.as_ref();
        let database = source.database.map(|_| DatabaseDrill {
            dump: source.name.clone(),
            name: verify
                .and_then(|v| v.database_name.clone())
                .unwrap_or_else(|| source.name.clone()),
            smoke_sql: verify.map(|v| v.smoke_sql.clone()).unwrap_or_default(),
            pg_bin: verify.and_then(|v| v.pg_bin.clone()),
        });
        DrillSpec {
            target: None,
            smoke: verify.and_then(|v| v.smoke.clone()),
            fsck: volume && verify.is_none_or(|v| v.fsck),
            mount: volume && verify.is_some_and(|v| v.mount),
            database,
            keep: false,
            ownership: crate::platform::is_root(),
        }
    }
}

/// Most differences listed in a report; the count of the rest is added.
const MAX_ERRORS: usize = 100;

/// Runs one drill of snapshot `id`. Only a target that cannot be made is an error;
/// every other problem is a failed drill in the report.
pub fn run(
    repo: &Repository,
    index: &Index,
    id: &SnapshotId,
    snapshot: &Snapshot,
    spec: &DrillSpec,
    cancel: &Cancel,
) -> Result<DrillReport, RestoreError> {
    let time = Timestamp::now();
    let started = Instant::now();
    let target = Target::fresh(spec.target.as_deref()).map_err(|source| RestoreError::Target {
        path: spec.target.clone().unwrap_or_else(std::env::temp_dir),
        source,
    })?;
    let source = snapshot
        .tags
        .iter()
        .find(|(k, _)| k == "source")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let mut report = DrillReport {
        time,
        snapshot: *id,
        source,
        kind: snapshot.source_kind.name(),
        target: target.path().to_owned(),
        kept: spec.keep,
        restore_time: Default::default(),
        verify_time: Default::default(),
        duration: Default::default(),
        files: 0,
        bytes: 0,
        checks: Vec::new(),
        failure: None,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let options = VerifyOptions {
        ownership: spec.ownership,
    };
    match restore_and_verify(repo, index, snapshot, target.path(), &options, cancel) {
        Err(RestoreError::Interrupted) => {
            let _ = target.remove();
            return Err(RestoreError::Interrupted);
        }
        Err(e) => fail(&mut report, Failure::Restore, vec![e.to_string()]),
        Ok(done) => {
            report.restore_time = done.restore_time;
            report.verify_time = done.verify_time;
            match done.verification {
                None => fail(&mut report, Failure::Restore, done.restore.errors),
                Some(verification) => {
                    report.files = verification.files;
                    report.bytes = verification.bytes;
                    let differences: Vec<String> = verification
                        .differences
                        .iter()
                        .map(ToString::to_string)
                        .collect();
                    if !differences.is_empty() {
                        fail(&mut report, Failure::Mismatch, differences);
                    }
                }
            }
            let image = (snapshot.source_kind == SourceKind::Volume).then_some(&done.restored);
            let checked = Checks {
                spec,
                snapshot: id,
                target: target.path(),
                image: image.map(PathBuf::as_path),
                cancel,
            }
            .run(&mut report);
            if checked.is_err() {
                if !spec.keep {
                    let _ = target.remove();
                }
                return Err(RestoreError::Interrupted);
            }
        }
    }
    if !spec.keep
        && let Err(e) = target.remove()
    {
        report.warnings.push(format!(
            "could not remove the drill target {}: {e}",
            report.target.display()
        ));
    }
    report.duration = started.elapsed();
    Ok(report)
}

/// The checks after the verification pass.
struct Checks<'a> {
    spec: &'a DrillSpec,
    snapshot: &'a SnapshotId,
    target: &'a Path,
    /// The restored image, for a volume snapshot.
    image: Option<&'a Path>,
    cancel: &'a Cancel,
}

/// The drill was cancelled between two steps.
struct Interrupted;

impl Checks<'_> {
    /// Runs the checks the spec asks for while the drill still passes. The mount and the
    /// temporary server live until the smoke command has run, and are undone before this
    /// returns, whatever happened.
    fn run(&self, report: &mut DrillReport) -> Result<(), Interrupted> {
        let mut mounted = None;
        let mut server = None;
        let mut environment = Vec::new();
        'checks: {
            if !report.passed() {
                break 'checks;
            }
            if self.spec.fsck
                && let Some(image) = self.image
            {
                report.checks.push("fsck");
                if let Some(error) = fsck::run(image) {
                    fail(report, Failure::Fsck, vec![error]);
                    break 'checks;
                }
            }
            if self.spec.mount
                && let Some(image) = self.image
                && !self.cancel.is_cancelled()
            {
                report.checks.push("mount");
                match mount::mount_read_only(image) {
                    Ok(m) => mounted = Some(m),
                    Err(error) => {
                        fail(report, Failure::Mount, vec![error]);
                        break 'checks;
                    }
                }
            }
            if let Some(drill) = &self.spec.database
                && !self.cancel.is_cancelled()
            {
                report.checks.push("database");
                match self.database(drill) {
                    Ok(s) => {
                        environment = s.environment(&drill.name);
                        server = Some(s);
                    }
                    Err(error) => {
                        fail(report, Failure::Database, vec![error]);
                        break 'checks;
                    }
                }
            }
            if let Some(command) = &self.spec.smoke
                && !self.cancel.is_cancelled()
            {
                report.checks.push("smoke");
                let dir = mounted.as_ref().map_or(self.target, mount::Mounted::path);
                if let Some(error) = smoke::run(
                    command,
                    dir,
                    &self.snapshot.to_hex(),
                    self.image,
                    &environment,
                    self.cancel,
                ) {
                    fail(report, Failure::Smoke, vec![error]);
                }
            }
        }
        if let Some(server) = server {
            report.warnings.extend(server.stop());
        }
        if let Some(mounted) = mounted {
            report.warnings.extend(mounted.release());
        }
        if self.cancel.is_cancelled() {
            return Err(Interrupted);
        }
        Ok(())
    }

    /// Starts a temporary server, restores the dump and runs the smoke SQL; the server
    /// is returned running, for the smoke command.
    fn database(&self, drill: &DatabaseDrill) -> Result<database::Server, String> {
        let dump = self.target.join(&drill.dump);
        if !dump.is_file() {
            return Err(format!(
                "the snapshot has no dump /{} to restore into a database",
                drill.dump
            ));
        }
        let server = database::Server::start(drill.pg_bin.as_deref())?;
        server.restore(&dump, &drill.name, self.cancel)?;
        for sql in &drill.smoke_sql {
            if self.cancel.is_cancelled() {
                return Err("interrupted".to_owned());
            }
            server.check(&drill.name, sql, self.cancel)?;
        }
        Ok(server)
    }
}

fn fail(report: &mut DrillReport, failure: Failure, mut errors: Vec<String>) {
    report.failure = Some(failure);
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(format!("... and {more} more"));
    }
    report.errors = errors;
}

/// Distinguishes the temporary directories made by one process.
static TEMP_SERIAL: AtomicU64 = AtomicU64::new(0);

/// A new private (0700) directory `bunker-drill-<kind>-<pid>-<n>` under the system
/// temporary directory, for a drill's mountpoint or database server.
fn private_temp_dir(kind: &str) -> std::io::Result<PathBuf> {
    let base = std::env::temp_dir();
    loop {
        let path = base.join(format!(
            "bunker-drill-{kind}-{}-{}",
            std::process::id(),
            TEMP_SERIAL.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}
