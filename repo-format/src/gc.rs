//! What garbage collection and writers share: reachability, stored packs, and the packs
//! condemned by GC plans.

use std::collections::{HashMap, HashSet};
use std::time::SystemTime;

use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::gc_plan::GcPlan;
use crate::id::{BlobId, PackId, SnapshotId};
use crate::index::Index;
use crate::object::ObjectKind;
use crate::repository::Repository;
use crate::session::{ActiveSession, SESSION_TIMEOUT};
use crate::tree::{Extent, Node};

/// A pack as found in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPack {
    /// Data or tree pack.
    pub kind: BlobKind,
    /// Size in bytes.
    pub size: u64,
    /// Storage time it was written.
    pub modified: SystemTime,
}

/// The packs in storage, and objects under the pack prefixes that are not packs.
#[derive(Debug, Default)]
pub struct PackListing {
    /// Every pack, by id.
    pub packs: HashMap<PackId, StoredPack>,
    /// Names under `data/` or `tree/` that are not pack names, sorted.
    pub strays: Vec<String>,
}

/// Lists the packs in storage (one listing of `data/` and one of `tree/`).
pub fn list_packs(repo: &Repository) -> Result<PackListing> {
    let mut listing = PackListing::default();
    for (object_kind, kind) in [
        (ObjectKind::DataPack, BlobKind::Data),
        (ObjectKind::TreePack, BlobKind::Tree),
    ] {
        for meta in repo.backend().list(object_kind.prefix())? {
            let id = meta
                .name
                .rsplit('/')
                .next()
                .and_then(|hex| hex.parse::<PackId>().ok())
                .filter(|id| object_kind.name(&id.to_hex()) == meta.name);
            match id {
                Some(id) => {
                    listing.packs.insert(
                        id,
                        StoredPack {
                            kind,
                            size: meta.size,
                            modified: meta.modified,
                        },
                    );
                }
                None => listing.strays.push(meta.name),
            }
        }
    }
    listing.strays.sort();
    Ok(listing)
}

impl StoredPack {
    /// The object kind: data or tree pack.
    pub fn object_kind(&self) -> ObjectKind {
        crate::pack::pack_kind(self.kind)
    }
}

/// Every pack in storage.
pub fn stored_packs(repo: &Repository) -> Result<HashMap<PackId, StoredPack>> {
    Ok(list_packs(repo)?.packs)
}

/// A GC plan as stored.
#[derive(Debug, Clone)]
pub struct StoredPlan {
    /// Object name (`gc/<hex>`).
    pub name: String,
    /// Storage time it was written: its grace period runs from here.
    pub modified: SystemTime,
    /// Its content.
    pub plan: GcPlan,
}

/// Names of GC plans that could not be read, with the reason.
pub type UnreadablePlans = Vec<(String, Error)>;

/// Every readable GC plan, and the names of unreadable ones. An unreadable plan condemns
/// nothing: prune cannot execute it either.
pub fn load_plans(repo: &Repository) -> Result<(Vec<StoredPlan>, UnreadablePlans)> {
    let mut plans = Vec::new();
    let mut unreadable = Vec::new();
    // Every writer reads the plans as it starts.
    crate::repository::fan_out::read_listed(
        repo.backend().as_ref(),
        ObjectKind::GcPlan.prefix(),
        |meta, read| {
            match GcPlan::decode(&read?, repo.writer_key(), &meta.name) {
                Ok(plan) => plans.push(StoredPlan {
                    name: meta.name.clone(),
                    modified: meta.modified,
                    plan,
                }),
                Err(e) => unreadable.push((meta.name.clone(), e)),
            }
            Ok(())
        },
    )?;
    plans.sort_by_key(|p| p.modified);
    Ok((plans, unreadable))
}

/// Packs condemned by any readable plan: writers must not deduplicate against them.
pub fn condemned_packs(repo: &Repository) -> Result<HashSet<PackId>> {
    let (plans, _) = load_plans(repo)?;
    Ok(plans
        .iter()
        .flat_map(|p| p.plan.packs.iter().map(|(pack, _)| *pack))
        .collect())
}

/// Every blob (tree and data) reachable from any snapshot.
///
/// Fails if a snapshot or a tree cannot be read: garbage collection must never decide on
/// an incomplete picture.
pub fn used_blobs(repo: &Repository, index: &Index) -> Result<HashSet<BlobId>> {
    used_blobs_of(repo, index, &repo.list_snapshot_ids()?)
}

/// Every blob reachable from the snapshots `ids` (those deleted meanwhile are skipped).
///
/// List the snapshots *before* loading `index`: writers index their blobs before they
/// write their snapshot, so every listed snapshot's blobs are then in the index.
pub fn used_blobs_of(
    repo: &Repository,
    index: &Index,
    ids: &[SnapshotId],
) -> Result<HashSet<BlobId>> {
    let used = walk_snapshots(repo, index, ids, |_, _| {})?;
    Ok(used.ids.into_iter().collect())
}

/// A set of blob ids in a sorted array: 32 bytes per blob.
#[derive(Debug, Default, Clone)]
pub struct UsedBlobs {
    ids: Vec<BlobId>,
}

impl UsedBlobs {
    /// True when the blob is in the set.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.ids.binary_search(id).is_ok()
    }

    /// The blob's place in the set's order (`0..len`), when it is in the set: for
    /// per-blob values kept beside the set.
    pub fn position(&self, id: &BlobId) -> Option<usize> {
        self.ids.binary_search(id).ok()
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The ids, in order.
    pub fn iter(&self) -> impl Iterator<Item = &BlobId> {
        self.ids.iter()
    }
}

/// Data blob ids are collected in a vector and sorted and deduplicated whenever it has
/// doubled since the last time (at least this many): the walk needs no hash set for
/// them, only for trees (which it must not walk twice).
const DEDUP_MIN: usize = 1 << 16;

/// Walks the snapshots `ids` (those deleted meanwhile are skipped) and returns every blob
/// reachable from them, reporting `(snapshots walked, blobs found so far)` after each
/// snapshot (the count may include repeats not yet merged). Each tree is read once.
///
/// List the snapshots *before* loading `index`: writers index their blobs before they
/// write their snapshot, so every listed snapshot's blobs are then in the index.
/// Fails if a snapshot or a tree cannot be read.
pub fn walk_snapshots(
    repo: &Repository,
    index: &Index,
    ids: &[SnapshotId],
    walked: impl FnMut(usize, usize),
) -> Result<UsedBlobs> {
    walk_reachable(repo, index, ids, walked, |unreadable| {
        Err(Error::Invalid(match unreadable {
            Unreadable::Snapshot { id, error } => format!(
                "snapshot {id} is unreadable ({error}); refusing to collect garbage until `check` and `repair snapshots` deal with it"
            ),
            Unreadable::Tree {
                snapshot,
                tree,
                error,
            } => format!(
                "tree {tree} of snapshot {} is unreadable ({error}); refusing to collect garbage",
                snapshot.short()
            ),
        }))
    })
}

/// A snapshot or tree that a walk could not read.
#[derive(Debug)]
pub enum Unreadable {
    /// The snapshot object.
    Snapshot {
        /// Its id.
        id: SnapshotId,
        /// Why.
        error: Error,
    },
    /// A tree of a snapshot (the first snapshot found to hold it): nothing below it was
    /// walked.
    Tree {
        /// The snapshot being walked.
        snapshot: SnapshotId,
        /// The tree blob.
        tree: BlobId,
        /// Why.
        error: Error,
    },
}

/// [`walk_snapshots`], handing each snapshot or tree it cannot read to `unreadable`: an
/// error returned from it ends the walk with that error, `Ok` walks on without what lies
/// below (so the blobs returned are then only those that could be reached).
pub fn walk_reachable(
    repo: &Repository,
    index: &Index,
    ids: &[SnapshotId],
    mut walked: impl FnMut(usize, usize),
    mut unreadable: impl FnMut(Unreadable) -> Result<()>,
) -> Result<UsedBlobs> {
    let mut trees: HashSet<BlobId> = HashSet::new();
    let mut data: Vec<BlobId> = Vec::new();
    let mut deduplicated = 0;
    for (done, &id) in ids.iter().enumerate() {
        let snapshot = match repo.load_snapshot(&id) {
            Ok(snapshot) => Some(snapshot),
            // Deleted by a concurrent forget: it no longer holds anything.
            Err(e) if e.is_not_found() => None,
            Err(error) => {
                unreadable(Unreadable::Snapshot { id, error })?;
                None
            }
        };
        let mut pending: Vec<BlobId> = snapshot.map(|s| s.tree).into_iter().collect();
        while let Some(tree_id) = pending.pop() {
            if !trees.insert(tree_id) {
                continue;
            }
            let tree = match repo.load_tree(index, &tree_id) {
                Ok(tree) => tree,
                Err(error) => {
                    unreadable(Unreadable::Tree {
                        snapshot: id,
                        tree: tree_id,
                        error,
                    })?;
                    continue;
                }
            };
            for entry in tree.entries() {
                match &entry.node {
                    Node::Dir { subtree } => pending.push(*subtree),
                    Node::File { extents } => {
                        for extent in extents {
                            if let Extent::Chunk { id, .. } = extent {
                                data.push(*id);
                            }
                        }
                    }
                    _ => {}
                }
            }
            if data.len() >= DEDUP_MIN.max(2 * deduplicated) {
                data.sort_unstable();
                data.dedup();
                deduplicated = data.len();
            }
        }
        walked(done + 1, trees.len() + data.len());
    }
    data.extend(trees);
    data.sort_unstable();
    data.dedup();
    data.shrink_to_fit();
    Ok(UsedBlobs { ids: data })
}

/// Why a writer session refused to commit its snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitRefused {
    /// Packs it depends on that are gone or condemned.
    pub lost: usize,
    /// The longest pause seen (between heartbeats, or between the last heartbeat and the
    /// snapshot write).
    pub paused: std::time::Duration,
}

fn count_lost(repo: &Repository, dependencies: &HashSet<PackId>) -> Result<usize> {
    let stored = stored_packs(repo)?;
    let condemned = condemned_packs(repo)?;
    Ok(dependencies
        .iter()
        .filter(|pack| !stored.contains_key(pack) || condemned.contains(pack))
        .count())
}

/// The commit-time guard of a writer session. If the session went without a heartbeat for
/// long enough that a prune may have taken it for dead (a suspended laptop, a stalled
/// mount), every pack it depends on (deduplicated against, or uploaded itself) must still
/// exist and not be condemned; otherwise its snapshot could point at data a prune is
/// deleting.
///
/// Writes a heartbeat first. Returns the number of lost dependencies (0: safe to commit)
/// and the longest gap between heartbeats.
pub fn lost_dependencies(
    repo: &Repository,
    session: &ActiveSession,
    dependencies: &HashSet<PackId>,
) -> Result<(usize, std::time::Duration)> {
    session.beat()?;
    let gap = session.longest_gap();
    if gap < SESSION_TIMEOUT / 2 {
        return Ok((0, gap));
    }
    Ok((count_lost(repo, dependencies)?, gap))
}

/// Commits a writer session: the commit-time guard ([`lost_dependencies`]), the snapshot
/// write, and the session's final heartbeat. If the process was paused between the guard
/// and the write for long enough to look dead, the guard runs again after the write and a
/// snapshot that lost what it needs is deleted again, so no broken snapshot stays.
pub fn commit_snapshot(
    repo: &Repository,
    session: ActiveSession,
    dependencies: &HashSet<PackId>,
    sealing: &crate::crypto::SealingSession,
    snapshot: &crate::snapshot::Snapshot,
) -> Result<std::result::Result<crate::id::SnapshotId, CommitRefused>> {
    let committed = commit_snapshot_in_session(repo, &session, dependencies, sealing, snapshot)?;
    if committed.is_ok() {
        // Best effort: a session that cannot write its last beat just looks live until it
        // times out, which only delays garbage collection.
        let _ = session.end();
    }
    Ok(committed)
}

/// Like [`commit_snapshot`], but the session goes on: for a writer that commits several
/// snapshots in one session (`copy`). Its dependencies accumulate over the session; the
/// caller ends the session after its last commit.
pub fn commit_snapshot_in_session(
    repo: &Repository,
    session: &ActiveSession,
    dependencies: &HashSet<PackId>,
    sealing: &crate::crypto::SealingSession,
    snapshot: &crate::snapshot::Snapshot,
) -> Result<std::result::Result<crate::id::SnapshotId, CommitRefused>> {
    let (lost, paused) = lost_dependencies(repo, session, dependencies)?;
    if lost > 0 {
        return Ok(Err(CommitRefused { lost, paused }));
    }
    let id = repo.save_snapshot(sealing, snapshot)?;
    let written = repo
        .backend()
        .head(&ObjectKind::Snapshot.name(&id.to_hex()))?
        .modified;
    let pause = written
        .duration_since(session.last_beat())
        .unwrap_or_default();
    if pause >= SESSION_TIMEOUT / 2 {
        let lost = count_lost(repo, dependencies)?;
        if lost > 0 {
            take_back(repo, &id, lost)?;
            return Ok(Err(CommitRefused {
                lost,
                paused: pause,
            }));
        }
    }
    Ok(Ok(id))
}

/// Removes a snapshot its own writer just committed but found broken: a full key forgets it
/// (a marker, while it is locked); a put-only key can only try to delete it, and when the
/// storage refuses, the error says what to do.
fn take_back(repo: &Repository, id: &crate::id::SnapshotId, lost: usize) -> Result<()> {
    let taken = if repo.is_put_only() {
        repo.delete_snapshot(id)
    } else {
        repo.forget_snapshot(id).map(|_| ())
    };
    taken.map_err(|e| {
        Error::Invalid(format!(
            "snapshot {id} was written but {lost} packs it uses were removed while this writer \
             was paused, and it could not be taken back ({e}); `bunker check` reports it, and \
             `bunker forget {id}` with a full key removes it"
        ))
    })
}
