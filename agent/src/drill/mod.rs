//! Restore drills: restore a snapshot into a fresh target, verify it (see
//! [`crate::verify`]), run the checks its kind calls for, and report.
//!
//! Steps, each in its own module: the verification pass; for a volume, [`fsck`](self::fsck)
//! of the restored image; the [`smoke`](self::smoke) command; the [`report`] with the
//! audit record. The first failing step fails the drill and later steps do not run. The
//! target is removed at the end unless asked to keep it.

mod fsck;
pub mod report;
mod select;
mod smoke;

use std::path::PathBuf;
use std::time::Instant;

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::{Snapshot, SourceKind};
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};

use crate::cancel::Cancel;
use crate::restore::RestoreError;
use crate::verify::{Target, VerifyOptions, restore_and_verify};
pub use report::{DrillReport, Failure};
pub use select::latest_per_source;

/// What a drill does besides restoring and verifying.
#[derive(Debug, Clone, Default)]
pub struct DrillSpec {
    /// Directory to restore into (must not exist or be empty); a temporary one if `None`.
    pub target: Option<PathBuf>,
    /// Shell command run against the restored data.
    pub smoke: Option<String>,
    /// Run `fsck -n -f` on a restored volume image.
    pub fsck: bool,
    /// Leave the target in place afterwards.
    pub keep: bool,
    /// Restore and compare ownership (root only).
    pub ownership: bool,
}

impl DrillSpec {
    /// The drill a policy source asks for (its `verify` settings), into a temporary target.
    pub fn for_source(source: &crate::policy::Source) -> DrillSpec {
        let volume = matches!(source.kind, crate::policy::SourceKind::Volume { .. });
        DrillSpec {
            target: None,
            smoke: source.verify.as_ref().and_then(|v| v.smoke.clone()),
            fsck: volume,
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
            if report.passed()
                && spec.fsck
                && let Some(image) = image
                && let Some(error) = fsck::run(image)
            {
                fail(&mut report, Failure::Fsck, vec![error]);
            }
            if report.passed()
                && let Some(command) = &spec.smoke
                && let Some(error) = smoke::run(
                    command,
                    target.path(),
                    &id.to_hex(),
                    image.map(PathBuf::as_path),
                )
            {
                fail(&mut report, Failure::Smoke, vec![error]);
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

fn fail(report: &mut DrillReport, failure: Failure, mut errors: Vec<String>) {
    report.failure = Some(failure);
    if errors.len() > MAX_ERRORS {
        let more = errors.len() - MAX_ERRORS;
        errors.truncate(MAX_ERRORS);
        errors.push(format!("... and {more} more"));
    }
    report.errors = errors;
}
