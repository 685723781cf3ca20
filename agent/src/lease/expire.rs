//! Removing the targets of expired leases: the one function `bunker restores expire` and
//! the agent daemon share.

use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

use bunker_repo_format::audit::AuditRecord;
use bunker_repo_format::tree::Timestamp;

use super::{Lease, LeaseDir, LeaseError, RestoreRoots};
use crate::platform::remove_tree_nofollow;

/// What happened to one expired lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpiryAction {
    /// The target was removed, then the lease.
    Removed,
    /// The target was already gone; the lease was dropped.
    AlreadyGone,
    /// The target may not be removed (outside the roots, a root itself, `/`, a device);
    /// the lease stays so an operator sees it.
    Refused(String),
    /// Removing the target or the lease failed; the lease stays and is retried later.
    Failed(String),
}

impl ExpiryAction {
    /// The audit outcome: `removed`, `already-gone`, `refused` or `failed`.
    pub fn outcome(&self) -> &'static str {
        match self {
            ExpiryAction::Removed => "removed",
            ExpiryAction::AlreadyGone => "already-gone",
            ExpiryAction::Refused(_) => "refused",
            ExpiryAction::Failed(_) => "failed",
        }
    }

    /// The reason of a refusal or failure.
    pub fn error(&self) -> Option<&str> {
        match self {
            ExpiryAction::Refused(e) | ExpiryAction::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// One lease that [`expire`] acted on.
#[derive(Debug, Clone)]
pub struct Expiry {
    /// The lease.
    pub lease: Lease,
    /// What was done.
    pub action: ExpiryAction,
    /// When (Unix seconds, the caller's `now`).
    pub time: i64,
    /// How long the removal took.
    pub duration: Duration,
}

/// For every readable lease in `dir` that `due` picks (usually "expired at `now`"):
/// removes exactly the leased target, without following symlinks in its path or inside
/// it, then drops the lease. A target already gone just drops its lease. A target that is
/// `/`, a restore root itself, or (when `roots` is not empty) no longer under a root is
/// refused and keeps its lease; so does a device node. Unreadable lease files are skipped.
pub fn expire(
    dir: &LeaseDir,
    roots: &RestoreRoots,
    now: i64,
    due: &dyn Fn(&Lease) -> bool,
) -> Result<Vec<Expiry>, LeaseError> {
    let mut done = Vec::new();
    for listed in dir.list()? {
        let Ok(lease) = listed.lease else {
            continue;
        };
        if !due(&lease) {
            continue;
        }
        let started = Instant::now();
        let action = remove_target(dir, roots, &lease);
        done.push(Expiry {
            lease,
            action,
            time: now,
            duration: started.elapsed(),
        });
    }
    Ok(done)
}

fn remove_target(dir: &LeaseDir, roots: &RestoreRoots, lease: &Lease) -> ExpiryAction {
    if let Err(e) = roots.check_leasable(&lease.target) {
        return ExpiryAction::Refused(e.to_string());
    }
    if let Ok(meta) = std::fs::symlink_metadata(&lease.target) {
        let kind = meta.file_type();
        if kind.is_block_device() || kind.is_char_device() {
            return ExpiryAction::Refused(format!(
                "{} is a device, not a restored image or tree",
                lease.target.display()
            ));
        }
    }
    let action = match remove_tree_nofollow(&lease.target) {
        Ok(true) => ExpiryAction::Removed,
        Ok(false) => ExpiryAction::AlreadyGone,
        Err(e) => return ExpiryAction::Failed(format!("{e}: {}", e.source)),
    };
    match dir.remove(&lease.id) {
        Ok(()) => action,
        Err(e) => ExpiryAction::Failed(e.to_string()),
    }
}

/// The audit record of one expiry (`operation = "restore-expire"`, FORMAT.md §13a).
pub fn audit_record(expiry: &Expiry, host: &str, user: &str) -> AuditRecord {
    let lease = &expiry.lease;
    let expires = jiff::Timestamp::from_second(lease.expires)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let mut details = vec![
        ("lease".to_owned(), lease.id.clone()),
        ("owner".to_owned(), lease.owner.clone()),
        ("source".to_owned(), lease.source.clone()),
        ("path".to_owned(), lease.path.clone()),
        ("kind".to_owned(), lease.kind.clone()),
        ("expires".to_owned(), expires),
    ];
    if let Some(error) = expiry.action.error() {
        details.push(("error".to_owned(), error.to_owned()));
    }
    AuditRecord {
        time: Timestamp {
            sec: expiry.time,
            nsec: 0,
        },
        host: host.to_owned(),
        user: user.to_owned(),
        operation: "restore-expire".to_owned(),
        target: lease.target.display().to_string(),
        outcome: expiry.action.outcome().to_owned(),
        duration_ms: u64::try_from(expiry.duration.as_millis()).unwrap_or(u64::MAX),
        snapshot: lease.snapshot.parse().ok(),
        details,
    }
}
