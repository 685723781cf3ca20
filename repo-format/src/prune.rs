//! Lock-free, two-phase garbage collection.
//!
//! A run first *executes* the plans written by earlier runs whose grace period has passed
//! on the storage's clock: each condemned pack that is still unreferenced is deleted, the
//! rest are recovered. It postpones a plan while any session that started before the plan
//! is still live (it may hold an index view from before the plan). Then it *plans*: packs
//! with no reachable blob, and packs mostly garbage (after copying their live blobs to new
//! packs), go into a new plan. Writers read plans and never deduplicate against condemned
//! packs, so nothing a snapshot written later needs can be in one. With a grace of zero a
//! run plans and executes at once (for tests and single-writer repositories).
//!
//! Deletion order keeps every crash point safe: new index segments (without the doomed
//! packs) are written first, then the old segments are removed, then the packs, then the
//! plan. A crash leaves at worst unindexed packs and a plan the next run finishes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::backend::ObjectMeta;
use crate::blob::BlobKind;
use crate::config::Operation;
use crate::error::{Error, Result};
use crate::gc::{StoredPack, StoredPlan, UsedBlobs, load_plans, stored_packs};
use crate::gc_plan::GcPlan;
use crate::id::{AuditId, BlobId, IndexId, PackId};
use crate::index::{Index, IndexLoader, IndexSegment, IndexedPack};
use crate::object::ObjectKind;
use crate::object_lock::locked_until;
use crate::repository::{Repository, parse_id};
use crate::session::{ActiveSession, SESSION_TIMEOUT, SessionView, list_sessions};
use crate::tree::Timestamp;

mod contents;
mod progress;

use contents::PackContents;
pub use progress::{PruneEvent, PruneProgress};

/// Index segments are merged once there are more than this many.
const MAX_SEGMENTS: usize = 16;

/// How aggressive a prune run is.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Time a plan waits, on the storage's clock, before its packs may be deleted.
    pub grace: Duration,
    /// Unused bytes tolerated in partly used packs, as a fraction of all pack bytes.
    pub max_unused: f64,
    /// Most bytes of packs to repack in one run.
    pub max_repack: u64,
    /// Host name recorded in the prune session's heartbeats.
    pub host: String,
    /// Audit records stored longer ago than this, on the storage's clock, are deleted
    /// (once their lock lapsed); `None` keeps every record.
    pub keep_audit: Option<Duration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(24 * 3600),
            max_unused: 0.05,
            max_repack: u64::MAX,
            host: "prune".to_owned(),
            keep_audit: None,
        }
    }
}

/// A plan due for execution, and what executing it would do.
#[derive(Debug, Clone)]
pub struct DuePlan {
    /// Object name of the plan.
    pub name: String,
    /// Every pack the plan condemns.
    pub packs: Vec<(PackId, BlobKind)>,
    /// Condemned packs still unreferenced: to delete.
    pub delete: Vec<(PackId, BlobKind, u64)>,
    /// Condemned packs referenced again (by a snapshot written since): kept.
    pub recovered: Vec<PackId>,
}

/// What a prune run will do; [`prune_plan`] computes it, [`prune`] carries it out.
#[derive(Debug)]
pub struct PrunePlan {
    /// Storage time at the start of the run.
    pub storage_now: SystemTime,
    /// Snapshots seen.
    pub snapshots: usize,
    /// Blobs reachable from them.
    pub used_blobs: usize,
    /// Packs in storage and their bytes.
    pub packs: (usize, u64),
    /// Plans due now.
    pub due: Vec<DuePlan>,
    /// Plans not executed yet, with the reason.
    pub waiting: Vec<(String, String)>,
    /// Packs to condemn now: no reachable blob.
    pub condemn: Vec<(PackId, BlobKind, u64)>,
    /// Packs to repack now (live blobs copied, then condemned): pack, kind, size, live bytes.
    pub repack: Vec<(PackId, BlobKind, u64, u64)>,
    /// Unused bytes left in partly used packs after this run.
    pub unused_bytes_left: u64,
    /// Heartbeat objects of sessions that ended, or died long ago.
    pub stale_heartbeats: Vec<String>,
    /// Temp files no running session can still be writing (a crashed writer's partial
    /// objects, [`Backend::list_temps`](crate::backend::Backend::list_temps)): removed.
    pub stale_temps: Vec<ObjectMeta>,
    /// Audit records older than [`PruneOptions::keep_audit`]: deleted, each once its lock
    /// lapsed.
    pub expired_audit: Vec<ObjectMeta>,
    /// Index segments to merge (all of them, when there are too many).
    pub merge_segments: bool,
    /// Packs of due plans whose lock has not lapsed: their deletion waits (locked
    /// repositories only).
    pub locked: Vec<(String, SystemTime)>,
    session: Option<ActiveSession>,
    /// What the decision was based on, reused to repack (no second walk).
    view: View,
    grace: Duration,
}

/// What a prune run did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Packs deleted, and their bytes.
    pub deleted_packs: usize,
    /// Bytes freed.
    pub deleted_bytes: u64,
    /// Packs recovered from plans because a snapshot uses them again.
    pub recovered_packs: usize,
    /// Packs put into a new plan.
    pub condemned_packs: usize,
    /// Packs repacked.
    pub repacked_packs: usize,
    /// Plans executed and removed.
    pub plans_executed: usize,
    /// New plan written, if any.
    pub plan_written: Option<String>,
    /// Index segments written and removed.
    pub segments_written: usize,
    /// Index segments removed.
    pub segments_removed: usize,
    /// Heartbeat objects removed.
    pub heartbeats_removed: usize,
    /// Temp files of crashed writers removed, and their bytes.
    pub temps_removed: (usize, u64),
    /// Objects due for deletion but kept because their lock has not lapsed yet, with the
    /// date it lapses; a later run deletes them.
    pub locked: Vec<(String, SystemTime)>,
    /// Locks extended for objects live snapshots need (locked repositories).
    pub locks_extended: usize,
    /// Forgotten snapshots whose objects were deleted now that their locks lapsed.
    pub forgotten_snapshots_deleted: usize,
    /// Forget markers removed (their snapshots gone).
    pub forget_markers_removed: usize,
    /// Audit records removed (older than [`PruneOptions::keep_audit`]).
    pub audit_records_removed: usize,
}

/// Looks at the repository and decides what to do. With `dry_run`, no object is written
/// (the storage time is estimated from the newest object instead of a heartbeat).
pub fn prune_plan(repo: &Repository, options: &PruneOptions, dry_run: bool) -> Result<PrunePlan> {
    prune_plan_observed(repo, options, dry_run, &mut progress::ignore)
}

/// [`prune_plan`], reporting its progress to `progress`.
///
/// Memory: the compact index (about 36 bytes per blob), every indexed pack's blob list
/// (48 bytes per blob) and the reachable blobs (32 bytes per blob, and 8 for the pack that
/// keeps each), plus per pack about 100 bytes; see docs/OPERATIONS.md, "Prune".
pub fn prune_plan_observed(
    repo: &Repository,
    options: &PruneOptions,
    dry_run: bool,
    progress: &mut dyn PruneProgress,
) -> Result<PrunePlan> {
    repo.check_features(Operation::Prune)?;
    let session = if dry_run {
        None
    } else {
        Some(ActiveSession::start(
            Arc::clone(repo.backend()),
            repo.writer_key(),
            &options.host,
            "prune",
            true,
        )?)
    };

    // The index, segment by segment: a damaged one would hide which packs hold what.
    let view = view(repo, progress)?;
    let View {
        segments,
        contents: blobs_by_pack,
        used,
        stored,
        snapshots,
        ..
    } = &view;
    progress.event(&PruneEvent::Deciding);
    let (plans, _) = load_plans(repo)?;
    let sessions = list_sessions(repo.backend().as_ref(), repo.writer_key())?;
    let storage_now = match &session {
        Some(session) => session.started(),
        None => stored
            .values()
            .map(|p| p.modified)
            .chain(plans.iter().map(|p| p.modified))
            .chain(sessions.iter().map(|s| s.last))
            .fold(SystemTime::now(), SystemTime::max),
    };
    let own = session.as_ref().map(ActiveSession::id);
    let live: Vec<&SessionView> = sessions
        .iter()
        .filter(|s| Some(s.session) != own && s.is_live(storage_now))
        .collect();

    let mut due_plans = Vec::new();
    let mut waiting = Vec::new();
    let mut condemned: HashSet<PackId> = HashSet::new();
    for plan in &plans {
        condemned.extend(plan.plan.packs.iter().map(|(pack, _)| *pack));
        match not_due(plan, storage_now, options.grace, &live) {
            Some(reason) => waiting.push((plan.name.clone(), reason)),
            None => due_plans.push((plan.name.clone(), plan.plan.packs.clone())),
        }
    }
    let due = decide(due_plans, &condemned, used, blobs_by_pack, stored);
    let mut locked = Vec::new();
    for (pack, kind, _) in due.iter().flat_map(|d| d.delete.iter()) {
        let name = crate::pack::pack_name(*kind, pack);
        if let Some(until) = locked_until(repo, &name, storage_now)? {
            locked.push((name, until));
        }
    }

    // Phase 1: what to condemn now. A used blob stored in several packs (backups that
    // wrote the same new data at once) is live in one of them only, the lowest pack id not
    // already condemned: the other copies are unused bytes, reclaimed like any. (Phase 2
    // deletes a pack only if every used blob in it is held by a pack that stays.)
    // `keeper[i]`: the rank in `by_id` of the pack that keeps the `i`th used blob (8 bytes
    // per used blob, where a map from id to pack took about 200).
    let mut by_id: Vec<&PackId> = stored.keys().filter(|p| !condemned.contains(*p)).collect();
    by_id.sort();
    let mut keeper = vec![usize::MAX; used.len()];
    for (rank, pack) in by_id.iter().enumerate() {
        for blob in blobs_by_pack.get(pack).into_iter().flatten() {
            if let Some(at) = used.position(&blob.id)
                && keeper[at] == usize::MAX
            {
                keeper[at] = rank;
            }
        }
    }
    let oldest_live_start = live.iter().map(|s| s.first).min();
    let mut condemn = Vec::new();
    let mut partly_used: Vec<(PackId, BlobKind, u64, u64)> = Vec::new();
    let mut total_bytes = 0u64;
    for (pack, found) in stored {
        total_bytes += found.size;
        if condemned.contains(pack) {
            continue;
        }
        match blobs_by_pack.get(pack) {
            None => {
                // Not indexed: a leftover of an interrupted session, or the upload of a
                // session still running. Only a pack older than every live session and
                // than the session timeout is certainly a leftover.
                if is_leftover(found.modified, storage_now, oldest_live_start) {
                    condemn.push((*pack, found.kind, found.size));
                }
            }
            Some(blobs) => {
                // Not condemned, so ranked.
                let rank = by_id.binary_search(&pack).ok();
                let mut live = 0usize;
                let mut dead_bytes = 0u64;
                for blob in blobs {
                    let keeps = used.position(&blob.id).map(|at| keeper[at]);
                    if rank.is_some() && keeps == rank {
                        live += 1;
                    } else {
                        dead_bytes += u64::from(blob.length);
                    }
                }
                if live == 0 {
                    condemn.push((*pack, found.kind, found.size));
                } else if dead_bytes > 0 {
                    let live_bytes = found.size.saturating_sub(dead_bytes);
                    partly_used.push((*pack, found.kind, found.size, live_bytes));
                }
            }
        }
    }
    let mut unused_left: u64 = partly_used
        .iter()
        .map(|(_, _, size, live)| size.saturating_sub(*live))
        .sum();
    partly_used.sort_by(|a, b| {
        let ratio =
            |p: &(PackId, BlobKind, u64, u64)| p.2.saturating_sub(p.3) as f64 / p.2.max(1) as f64;
        ratio(b).total_cmp(&ratio(a)).then(a.0.cmp(&b.0))
    });
    let allowed = (options.max_unused.clamp(0.0, 1.0) * total_bytes as f64) as u64;
    let mut repack = Vec::new();
    let mut repack_bytes = 0u64;
    for candidate in partly_used {
        if unused_left <= allowed || repack_bytes + candidate.2 > options.max_repack {
            break;
        }
        repack_bytes += candidate.2;
        unused_left = unused_left.saturating_sub(candidate.2.saturating_sub(candidate.3));
        repack.push(candidate);
    }
    condemn.sort_by_key(|c| c.0);

    let stale_heartbeats = sessions
        .iter()
        .filter(|s| {
            Some(s.session) != own
                && (s.ended
                    || storage_now.duration_since(s.last).unwrap_or_default() > 2 * SESSION_TIMEOUT)
        })
        .flat_map(|s| s.objects.iter().cloned())
        .collect();
    let mut stale_temps: Vec<ObjectMeta> = repo
        .backend()
        .list_temps()?
        .into_iter()
        .filter(|temp| is_leftover(temp.modified, storage_now, oldest_live_start))
        .collect();
    stale_temps.sort_by(|a, b| a.name.cmp(&b.name));
    let expired_audit = match options.keep_audit {
        Some(keep) => expired_audit(repo, storage_now, keep)?,
        None => Vec::new(),
    };

    Ok(PrunePlan {
        storage_now,
        snapshots: *snapshots,
        used_blobs: used.len(),
        packs: (stored.len(), total_bytes),
        due,
        waiting,
        condemn,
        repack,
        unused_bytes_left: unused_left,
        stale_heartbeats,
        stale_temps,
        expired_audit,
        merge_segments: *segments > MAX_SEGMENTS,
        locked,
        session,
        view,
        grace: options.grace,
    })
}

/// The audit records stored more than `keep` before `storage_now` (their names checked,
/// their contents not read: an old record goes whether it opens or not), oldest first.
fn expired_audit(
    repo: &Repository,
    storage_now: SystemTime,
    keep: Duration,
) -> Result<Vec<ObjectMeta>> {
    let prefix = ObjectKind::Audit.prefix();
    let mut expired: Vec<ObjectMeta> = repo
        .backend()
        .list(prefix)?
        .into_iter()
        .filter(|meta| parse_id::<AuditId>(&meta.name, prefix).is_some())
        .filter(|meta| {
            storage_now
                .duration_since(meta.modified)
                .unwrap_or_default()
                > keep
        })
        .collect();
    expired.sort_by(|a, b| (a.modified, &a.name).cmp(&(b.modified, &b.name)));
    Ok(expired)
}

/// Which condemned packs of the due plans can go. A pack is kept (recovered) when it holds
/// a blob that some snapshot uses and that no surviving pack also holds. A pack survives
/// when this run keeps it: recovered, or in no plan at all (`planned`: every pack any plan
/// condemns, due here or not). A pack another plan condemns does not count, though this
/// run keeps it: another prune, to which that plan is due, may be deleting it now.
///
/// Two prunes that find different plans due still never delete every copy of a blob:
/// where every copy is condemned, each keeps the lowest pack id among the copies it may
/// delete, and a run relies on a pack it recovered only for copies with higher ids, so no
/// chain of prunes relying on each other's recoveries can close into a cycle.
fn decide(
    due: Vec<(String, Vec<(PackId, BlobKind)>)>,
    planned: &HashSet<PackId>,
    used: &UsedBlobs,
    blobs_by_pack: &PackContents,
    stored: &HashMap<PackId, StoredPack>,
) -> Vec<DuePlan> {
    let mut doomed: HashSet<PackId> = due
        .iter()
        .flat_map(|(_, packs)| packs.iter().map(|(pack, _)| *pack))
        .filter(|pack| stored.contains_key(pack))
        .collect();
    // Where each used blob held by a doomed pack is stored (only those blobs: the map
    // stays as small as the plans).
    let mut holders: HashMap<BlobId, Vec<PackId>> = HashMap::new();
    for pack in &doomed {
        for blob in blobs_by_pack.get(pack).into_iter().flatten() {
            if used.contains(&blob.id) {
                holders.entry(blob.id).or_default();
            }
        }
    }
    if !holders.is_empty() {
        for (pack, blobs) in blobs_by_pack.iter() {
            if !stored.contains_key(pack) {
                continue;
            }
            for blob in blobs {
                if let Some(packs) = holders.get_mut(&blob.id) {
                    packs.push(*pack);
                }
            }
        }
    }
    let mut recovered: HashSet<PackId> = HashSet::new();
    let mut candidates: Vec<PackId> = doomed.iter().copied().collect();
    candidates.sort();
    for pack in candidates {
        let survives =
            |p: &PackId| recovered.contains(p) || !(doomed.contains(p) || planned.contains(p));
        let needed = blobs_by_pack.get(&pack).is_some_and(|blobs| {
            blobs.iter().any(|blob| {
                holders
                    .get(&blob.id)
                    .is_some_and(|packs| !packs.iter().any(survives))
            })
        });
        if needed {
            doomed.remove(&pack);
            recovered.insert(pack);
        }
    }
    due.into_iter()
        .map(|(name, packs)| DuePlan {
            name,
            packs: packs.clone(),
            delete: packs
                .iter()
                .filter(|(pack, _)| doomed.contains(pack))
                .filter_map(|(pack, kind)| stored.get(pack).map(|found| (*pack, *kind, found.size)))
                .collect(),
            recovered: packs
                .iter()
                .filter(|(pack, _)| recovered.contains(pack))
                .map(|(pack, _)| *pack)
                .collect(),
        })
        .collect()
}

/// A consistent picture to decide on.
#[derive(Debug)]
struct View {
    /// Index segments read.
    segments: usize,
    /// The index, without locations in packs gone from storage.
    index: Index,
    /// Every blob each indexed pack holds, as the segments list it.
    contents: PackContents,
    /// Blobs reachable from the snapshots listed.
    used: UsedBlobs,
    /// Packs in storage.
    stored: HashMap<PackId, StoredPack>,
    /// Snapshots listed.
    snapshots: usize,
}

/// Lists the snapshots *before* loading the index (so every listed snapshot's blobs are
/// indexed), then the packs in storage, then walks the snapshots (reading each tree once).
/// Segments are read one at a time and dropped once their entries are in the index and
/// the pack contents.
fn view(repo: &Repository, progress: &mut dyn PruneProgress) -> Result<View> {
    progress.event(&PruneEvent::Listing);
    let ids = repo.list_snapshot_ids()?;
    let mut loader = IndexLoader::new();
    let mut contents = PackContents::default();
    let mut segments = 0;
    read_segments(
        repo,
        1,
        |done, total| progress.event(&PruneEvent::ReadingIndex { done, total }),
        |_, segment| {
            loader.add_segment(&segment);
            contents.add_segment(&segment);
            segments += 1;
        },
    )?;
    let mut index = loader.finish();
    contents.compact();
    let stored = stored_packs(repo)?;
    index.retain_packs(|pack| stored.contains_key(pack));
    let total = ids.len();
    progress.event(&PruneEvent::WalkingSnapshots {
        done: 0,
        total,
        used_blobs: 0,
    });
    let used = crate::gc::walk_snapshots(repo, &index, &ids, |done, used_blobs| {
        progress.event(&PruneEvent::WalkingSnapshots {
            done,
            total,
            used_blobs,
        });
    })?;
    // Every blob a snapshot uses must be in a stored pack the index lists: else this view
    // is incomplete (a listing that lags behind writes) or data is already lost, and a
    // decision on it could delete the one copy of what it does not see.
    let unlocated = {
        let mut unlocated = used.iter().filter(|id| index.get(id).is_none());
        unlocated
            .next()
            .map(|first| (*first, 1 + unlocated.count()))
    };
    if let Some((first, count)) = unlocated {
        return Err(Error::Invalid(format!(
            "{count} blob(s) that snapshots use are in no stored pack the index lists \
             (blob {first}, ...): a listing that lags behind writes, or lost data; nothing \
             was deleted. Run `bunker check`, and `bunker repair index` or `bunker repair \
             snapshots` as it says, then prune again"
        )));
    }
    Ok(View {
        segments,
        index,
        contents,
        used,
        stored,
        snapshots: ids.len(),
    })
}

/// Rounds of listing the index again for segments that replaced ones deleted meanwhile.
const SEGMENT_RELISTS: usize = 8;

/// Reads every index segment, `width` at once, and hands each to `consume` once, reporting
/// `(read, listed)` to `progress`. A damaged segment stops the run. A segment listed but
/// gone when read was replaced by another prune, which writes the replacement before it
/// removes the old one: the index is listed again and the segments new in it are read,
/// until a round finds none gone, so no pack the old segment listed is missed (a decision
/// without a pack's contents would not see what it holds).
fn read_segments(
    repo: &Repository,
    width: usize,
    mut progress: impl FnMut(usize, usize),
    mut consume: impl FnMut(IndexId, IndexSegment),
) -> Result<()> {
    let mut seen: HashSet<IndexId> = HashSet::new();
    let mut ids = repo.list_index_ids()?;
    let (mut done, mut total) = (0, ids.len());
    progress(done, total);
    for _ in 0..SEGMENT_RELISTS {
        let mut vanished = false;
        crate::repository::fan_out::load_in_order(
            &ids,
            width,
            |id| repo.load_index_segment(id),
            |&id, read| {
                seen.insert(id);
                match read {
                    Ok(segment) => consume(id, segment),
                    Err(e) if e.is_not_found() => vanished = true,
                    Err(e) => {
                        return Err(Error::Invalid(format!(
                            "index segment {id} is unreadable ({e}); run `bunker repair \
                             index` before pruning"
                        )));
                    }
                }
                done += 1;
                progress(done, total);
                Ok(())
            },
        )?;
        if !vanished {
            return Ok(());
        }
        ids = repo.list_index_ids()?;
        ids.retain(|id| !seen.contains(id));
        total += ids.len();
    }
    Err(Error::Invalid(format!(
        "the index kept changing while this prune read it ({SEGMENT_RELISTS} rounds: another \
         prune rewriting it?); nothing was deleted, run prune again"
    )))
}

/// Every index segment, [`ReadHints::small_reads`] read at once (all are kept anyway).
///
/// [`ReadHints::small_reads`]: crate::backend::ReadHints::small_reads
fn load_segments(repo: &Repository) -> Result<Vec<(IndexId, IndexSegment)>> {
    let mut segments = Vec::new();
    let width = repo.backend().read_hints().small_reads;
    read_segments(
        repo,
        width,
        |_, _| {},
        |id, segment| {
            segments.push((id, segment));
        },
    )?;
    Ok(segments)
}

/// True for something written at `modified` (an unindexed pack, a temp file) that no
/// running session can have written: older than the session timeout and than the start of
/// every live session (a session writes only after it starts, and a temp file's time moves
/// with every write).
fn is_leftover(
    modified: SystemTime,
    now: SystemTime,
    oldest_live_start: Option<SystemTime>,
) -> bool {
    let old_enough = now.duration_since(modified).unwrap_or_default() > SESSION_TIMEOUT;
    let before_live = oldest_live_start.is_none_or(|start| modified < start);
    old_enough && before_live
}

/// True when storage says `pack` does not exist (asked by name, not by listing).
fn is_gone(repo: &Repository, pack: &PackId, kind: BlobKind) -> Result<bool> {
    match repo.backend().head(&crate::pack::pack_name(kind, pack)) {
        Ok(_) => Ok(false),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Why a plan cannot be executed yet, or `None` when it is due.
fn not_due(
    plan: &StoredPlan,
    now: SystemTime,
    grace: Duration,
    live: &[&SessionView],
) -> Option<String> {
    let age = now.duration_since(plan.modified).unwrap_or_default();
    if age < grace {
        return Some(format!(
            "grace period: {}s of {}s passed",
            age.as_secs(),
            grace.as_secs()
        ));
    }
    live.iter().find(|s| s.first <= plan.modified).map(|s| {
        let silent = now.duration_since(s.last).unwrap_or_default();
        let left = SESSION_TIMEOUT
            .saturating_sub(silent)
            .as_secs()
            .div_ceil(60);
        format!(
            "session {} ({} on {}) started before the plan and has not ended: it is running, \
             or it stopped without ending and counts as live for {left} more minute(s)",
            hex::encode(&s.session[..4]),
            s.purpose,
            s.host
        )
    })
}

/// Carries out a plan from [`prune_plan`].
pub fn prune(repo: &Repository, plan: PrunePlan) -> Result<PruneReport> {
    prune_observed(repo, plan, &mut progress::ignore)
}

/// [`prune`], reporting its progress to `progress`.
///
/// Repacking reuses the plan's index and reachable blobs (a snapshot written since that
/// needs a repacked pack recovers it below, or in a later run). Due plans are decided on a
/// fresh view (a second walk) only when some are due; the plan's view is dropped first.
/// Rewriting index segments then holds the segments being rewritten (about 56 bytes per
/// blob they list).
pub fn prune_observed(
    repo: &Repository,
    mut plan: PrunePlan,
    progress: &mut dyn PruneProgress,
) -> Result<PruneReport> {
    let Some(session) = plan.session.take() else {
        return Err(Error::Invalid(
            "a dry-run plan cannot be carried out".into(),
        ));
    };
    let mut report = PruneReport::default();

    // Phase 1: repack, then condemn.
    let mut new_condemned: Vec<(PackId, BlobKind)> = plan
        .condemn
        .iter()
        .map(|(pack, kind, _)| (*pack, *kind))
        .collect();
    if !plan.repack.is_empty() {
        let View {
            index,
            used,
            contents,
            ..
        } = &plan.view;
        let repacked: BTreeSet<PackId> = plan.repack.iter().map(|r| r.0).collect();
        let mut writer = repo.blob_writer(index);
        // Copies must land outside everything that may be deleted: this run's candidates
        // and every pack any plan condemns.
        writer.exclude_packs(repacked.iter().copied());
        writer.exclude_packs(plan.condemn.iter().map(|c| c.0));
        writer.exclude_packs(crate::gc::condemned_packs(repo)?);
        let total = plan.repack.len();
        let total_bytes = plan.repack.iter().map(|r| r.2).sum();
        let mut bytes = 0;
        progress.event(&PruneEvent::Repacking {
            done: 0,
            total,
            bytes,
            total_bytes,
        });
        for (done, (pack, kind, size, _)) in plan.repack.iter().enumerate() {
            for blob in contents.get(pack).into_iter().flatten() {
                if used.contains(&blob.id) && !writer.contains(&blob.id) {
                    let location = contents.location(pack, blob);
                    let data = repo.read_blob_at(&blob.id, &location)?;
                    writer.add(location.kind, &data)?;
                }
            }
            new_condemned.push((*pack, *kind));
            report.repacked_packs += 1;
            bytes += size;
            progress.event(&PruneEvent::Repacking {
                done: done + 1,
                total,
                bytes,
                total_bytes,
            });
        }
        let (_, segments) = writer.finish()?;
        report.segments_written += segments.len();
    }
    if !new_condemned.is_empty() {
        let gc_plan = GcPlan {
            client_time: Timestamp::now(),
            packs: new_condemned.clone(),
        };
        let (name, bytes) = gc_plan.encode(repo.writer_key());
        repo.put_content_named(&name, bytes)?;
        report.condemned_packs = new_condemned.len();
        report.plan_written = Some(name.clone());
        if plan.grace.is_zero() {
            // Due at once, but only if no other session that started before it is live.
            let modified = repo.backend().head(&name)?.modified;
            let sessions = list_sessions(repo.backend().as_ref(), repo.writer_key())?;
            let blocked = sessions
                .iter()
                .any(|s| s.session != session.id() && s.is_live(modified) && s.first <= modified);
            if blocked {
                plan.waiting.push((
                    name,
                    "a session that started before the plan has not ended (running, or \
                     stopped without ending: live until its last heartbeat is 15 minutes old)"
                        .into(),
                ));
            } else {
                plan.due.push(DuePlan {
                    name,
                    packs: new_condemned,
                    delete: Vec::new(),
                    recovered: Vec::new(),
                });
            }
        }
    }
    // The plan's view is no longer needed: free it before reading anything else.
    let PrunePlan {
        due,
        stale_heartbeats,
        stale_temps,
        expired_audit,
        merge_segments,
        view: planned_view,
        ..
    } = plan;
    drop(planned_view);

    // Decide every due plan together, on a fresh view: packs one plan deletes must not be
    // counted as the surviving copy of a blob another plan's pack holds, and snapshots,
    // index segments and repacked copies written since planning must all count.
    let due = if due.is_empty() {
        due
    } else {
        let View {
            contents,
            used,
            stored,
            ..
        } = view(repo, progress)?;
        progress.event(&PruneEvent::Deciding);
        // Read again: a plan written since planning (a prune that started meanwhile)
        // cannot be due while this run is live, yet its packs are no surviving copy.
        let planned = crate::gc::condemned_packs(repo)?;
        let due = due.into_iter().map(|d| (d.name, d.packs)).collect();
        decide(due, &planned, &used, &contents, &stored)
    };

    // Phase 2: execute due plans. The segments are listed afresh: one written since the
    // plan (a writer's, or `repair index`) may list a doomed pack too.
    // Segments that list a pack gone from storage (a writer that indexed a pack after a
    // prune had removed it as a leftover) are rewritten without it too.
    let current_segments = load_segments(repo)?;
    let stored_now = stored_packs(repo)?;
    let merge = merge_segments || current_segments.len() > MAX_SEGMENTS;
    let mut doomed: HashSet<PackId> = due
        .iter()
        .flat_map(|d| d.delete.iter().map(|(pack, _, _)| *pack))
        .collect();
    // A pack a listing misses is asked for by name before its entries go: a store whose
    // listings lag behind its writes would otherwise unindex a live pack, which a later
    // run would then take for a leftover.
    for (_, segment) in &current_segments {
        for pack in &segment.packs {
            if !stored_now.contains_key(&pack.id)
                && !doomed.contains(&pack.id)
                && is_gone(repo, &pack.id, pack.kind)?
            {
                doomed.insert(pack.id);
            }
        }
    }
    // In a locked repository, nothing is deleted before its lock lapses: a locked pack
    // stays doomed for a later run, and so does every pack a locked segment lists (the
    // segment cannot be replaced yet).
    let now = SystemTime::now();
    let mut held: Vec<(String, SystemTime)> = Vec::new();
    if repo.config().params.lock.is_some() {
        for plan in &due {
            for (pack, kind, _) in &plan.delete {
                let name = crate::pack::pack_name(*kind, pack);
                if let Some(until) = locked_until(repo, &name, now)? {
                    doomed.remove(pack);
                    held.push((name, until));
                }
            }
        }
    }
    let mut locked_segments: HashSet<IndexId> = HashSet::new();
    if repo.config().params.lock.is_some() {
        for (id, segment) in &current_segments {
            let touched = merge || segment.packs.iter().any(|p| doomed.contains(&p.id));
            if !touched {
                continue;
            }
            let name = ObjectKind::Index.name(&id.to_hex());
            if let Some(until) = locked_until(repo, &name, now)? {
                locked_segments.insert(*id);
                held.push((name, until));
            }
        }
        for (id, segment) in &current_segments {
            if locked_segments.contains(id) {
                for pack in &segment.packs {
                    doomed.remove(&pack.id);
                }
            }
        }
    }
    let (rewrite, _): (Vec<(IndexId, IndexSegment)>, Vec<_>) =
        current_segments.into_iter().partition(|(id, segment)| {
            !locked_segments.contains(id)
                && (merge || segment.packs.iter().any(|p| doomed.contains(&p.id)))
        });
    if !rewrite.is_empty() {
        progress.event(&PruneEvent::WritingIndex {
            segments: rewrite.len(),
        });
        let names: Vec<IndexId> = rewrite.iter().map(|(id, _)| *id).collect();
        let kept: Vec<IndexedPack> = rewrite
            .into_iter()
            .flat_map(|(_, segment)| segment.packs)
            .filter(|pack| !doomed.contains(&pack.id))
            .collect();
        report.segments_written += repo.write_index_segments(kept, &repo.new_session())?.len();
        for id in &names {
            repo.backend()
                .delete(&ObjectKind::Index.name(&id.to_hex()))?;
            report.segments_removed += 1;
        }
    }
    let total = due.iter().map(|d| d.delete.len()).sum();
    let mut done = 0;
    let mut bytes = 0;
    progress.event(&PruneEvent::Deleting { done, total, bytes });
    for plan in &due {
        let mut complete = true;
        for (pack, kind, size) in &plan.delete {
            if !doomed.contains(pack) {
                complete = false;
                continue;
            }
            repo.backend()
                .delete(&crate::pack::pack_name(*kind, pack))?;
            report.deleted_packs += 1;
            report.deleted_bytes += size;
            done += 1;
            bytes += size;
            progress.event(&PruneEvent::Deleting { done, total, bytes });
        }
        report.recovered_packs += plan.recovered.len();
        // A plan with packs still locked stays, for a later run to finish.
        if complete {
            if let Some(until) = locked_until(repo, &plan.name, now)? {
                held.push((plan.name.clone(), until));
            } else {
                repo.backend().delete(&plan.name)?;
                report.plans_executed += 1;
            }
        }
    }
    for name in &stale_heartbeats {
        if locked_until(repo, name, now)?.is_some() {
            continue; // small, and deleted by a run after its lock lapses
        }
        repo.backend().delete(name)?;
        report.heartbeats_removed += 1;
    }
    for temp in &stale_temps {
        repo.backend().remove_temp(&temp.name)?;
        report.temps_removed.0 += 1;
        report.temps_removed.1 += temp.size;
    }
    for record in &expired_audit {
        if let Some(until) = locked_until(repo, &record.name, now)? {
            held.push((record.name.clone(), until));
            continue;
        }
        repo.backend().delete(&record.name)?;
        report.audit_records_removed += 1;
    }
    let forgets = crate::forget_marker::finish(repo, now)?;
    report.forgotten_snapshots_deleted = forgets.snapshots_deleted;
    report.forget_markers_removed = forgets.markers_removed;
    held.extend(forgets.held);
    if repo.config().params.lock.is_some() {
        let extend = crate::object_lock::extend_plan(repo)?;
        report.locks_extended = crate::object_lock::extend(repo, &extend)?;
    }
    report.locked = held;
    session.end()?;
    progress.event(&PruneEvent::Done);
    Ok(report)
}

#[cfg(test)]
mod tests;
