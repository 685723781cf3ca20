//! Keeping what live snapshots need locked: `bunker lock extend` (also run by prune).
//!
//! Every object of a locked repository is written with a retain-until date `period` after
//! the write. Left alone, the locks of old packs lapse while snapshots still use them. A
//! live snapshot's **expiry** is `now + period`: whatever it needs must stay locked at least
//! that long, so that it is restorable for a whole lock period after any maintenance run.
//! An object it needs whose lock would lapse before that is extended to `now + period +
//! period / 4`; the quarter of headroom means runs closer together than that extend
//! nothing. Objects no snapshot needs are never extended (their locks lapse and prune can
//! delete them).
//!
//! Needed objects: `config`, the key slots, every snapshot, and the packs holding a blob
//! reachable from a snapshot. Index segments are not extended: they are rewritten by prune
//! and can be rebuilt from the packs (`bunker repair index`); heartbeats and GC plans are
//! transient.

use std::collections::BTreeSet;
use std::time::SystemTime;

use crate::backend::LockPolicy;
use crate::config::CONFIG_NAME;
use crate::error::{Error, Result};
use crate::object::ObjectKind;
use crate::repository::Repository;

/// What [`extend_plan`] found and [`extend`] carries out.
#[derive(Debug, Clone)]
pub struct ExtendPlan {
    /// The repository's lock policy.
    pub policy: LockPolicy,
    /// Every needed object must stay locked at least until here (`now + period`).
    pub expiry: SystemTime,
    /// Locks that lapse before `expiry` are moved to here.
    pub extend_to: SystemTime,
    /// Objects checked.
    pub checked: usize,
    /// Objects to extend, with their current retain-until date.
    pub extend: Vec<(String, Option<SystemTime>)>,
}

/// The repository's lock policy, or an error naming the repository when it has none.
pub fn policy(repo: &Repository) -> Result<LockPolicy> {
    repo.config().params.lock.ok_or_else(|| {
        Error::Invalid(format!(
            "{} is not a locked repository (it was created without --lock-mode)",
            repo.location()
        ))
    })
}

/// Every object live snapshots need, sorted.
pub fn needed_objects(repo: &Repository) -> Result<Vec<String>> {
    let mut needed = BTreeSet::new();
    needed.insert(CONFIG_NAME.to_owned());
    for meta in repo.backend().list(ObjectKind::KeySlot.prefix())? {
        needed.insert(meta.name);
    }
    // Snapshots before the index: every listed snapshot's blobs are then indexed.
    let ids = repo.list_snapshot_ids()?;
    let loaded = repo.load_index()?;
    if let Some((id, e)) = loaded.damaged.first() {
        return Err(Error::Invalid(format!(
            "index segment {id} is unreadable ({e}); run `bunker repair index` first"
        )));
    }
    let used = crate::gc::used_blobs_of(repo, &loaded.index, &ids)?;
    for id in &ids {
        needed.insert(ObjectKind::Snapshot.name(&id.to_hex()));
    }
    for blob in &used {
        if let Some(location) = loaded.index.get(blob) {
            needed.insert(crate::pack::pack_name(location.kind, &location.pack));
        }
    }
    Ok(needed.into_iter().collect())
}

/// Finds the needed objects whose locks lapse before `now + period`.
pub fn extend_plan(repo: &Repository) -> Result<ExtendPlan> {
    let policy = policy(repo)?;
    let now = SystemTime::now();
    let expiry = now + policy.period;
    let extend_to = expiry + policy.period / 4;
    let needed = needed_objects(repo)?;
    let mut extend = Vec::new();
    for name in &needed {
        let until = match repo.backend().retained_until(name) {
            Ok(until) => until,
            // Deleted meanwhile (a snapshot by forget): nothing to keep.
            Err(e) if e.is_not_found() => continue,
            Err(e) => return Err(e),
        };
        if until.is_none_or(|until| until < expiry) {
            extend.push((name.clone(), until));
        }
    }
    Ok(ExtendPlan {
        policy,
        expiry,
        extend_to,
        checked: needed.len(),
        extend,
    })
}

/// Extends the locks `plan` lists; returns how many were extended.
pub fn extend(repo: &Repository, plan: &ExtendPlan) -> Result<usize> {
    let mut extended = 0;
    for (name, _) in &plan.extend {
        match repo.backend().extend_retention(name, plan.extend_to) {
            Ok(()) => extended += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(extended)
}

/// Until when `name` is still locked, if its lock has not lapsed at `now`; `None` for an
/// unlocked repository (no request is made) or a lapsed or missing lock.
pub fn locked_until(repo: &Repository, name: &str, now: SystemTime) -> Result<Option<SystemTime>> {
    if repo.config().params.lock.is_none() {
        return Ok(None);
    }
    match repo.backend().retained_until(name) {
        Ok(until) => Ok(until.filter(|until| *until > now)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}
