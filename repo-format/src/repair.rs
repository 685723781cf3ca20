//! Repairs: rebuilding the index from the packs' trailers, and rewriting snapshots without
//! what is lost.
//!
//! Both are split into a plan, which only reads (so `--dry-run` shows exactly what would
//! happen), and an apply step. Both write before they delete, in the format's commit order:
//! - [`apply_index_repair`] stores its new index segments before it deletes a segment
//!   they replace, and deletes no other segment;
//! - [`apply_snapshot_repair`] packs and indexes the rewritten trees, then writes each
//!   replacement snapshot, and only then deletes the snapshot it replaces.
//!
//! An interruption therefore leaves duplicates (extra segments, an old snapshot next to its
//! replacement), never less than before.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::blob::BlobKind;
use crate::check::{
    CheckOptions, Problem, ReadData, error_message, inspect, parallel_map, read_trailer,
};
use crate::config::Operation;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId, SnapshotId};
use crate::index::{Index, IndexSegment, IndexedPack};
use crate::object::ObjectKind;
use crate::pack::PackEntry;
use crate::replace::{ReplaceOptions, replace_snapshots};
use crate::repository::Repository;
use crate::snapshot::{PROGRAM_VERSION, Snapshot};
use crate::tree::{EntryFlags, Extent, Node, Tree};

/// Most entries a repaired snapshot's `errors` list keeps (as a backup does).
const MAX_SNAPSHOT_ERRORS: usize = 10_000;

// ----- index -----

/// What an index repair did (or, from a plan, would do).
#[derive(Debug, Clone, Default)]
pub struct RepairIndexReport {
    /// Packs in storage.
    pub packs: usize,
    /// Packs written into new index segments, sorted by name: packs no segment listed,
    /// packs listed wrongly, and the packs of replaced segments that no other segment lists.
    pub packs_reindexed: Vec<String>,
    /// Blobs in those packs.
    pub blobs_reindexed: usize,
    /// Packs whose trailer cannot be read, with why. They cannot be indexed from storage;
    /// whatever the index says about them is left as it is.
    pub packs_unreadable: Vec<Problem>,
    /// Packs that replaced segments listed but storage lacks: no longer indexed.
    pub packs_dropped: Vec<String>,
    /// Index segments replaced (deleted once their replacement was stored), with why:
    /// damaged, listing a pack wrongly, or listing a pack that is gone.
    pub segments_replaced: Vec<Problem>,
    /// Index segments written (empty for a plan).
    pub segments_written: Vec<IndexId>,
    /// Unreadable segments left alone because this build does not support their version.
    pub segments_kept: Vec<Problem>,
}

/// What [`apply_index_repair`] will do; build it with [`plan_index_repair`].
#[derive(Debug, Clone)]
pub struct IndexRepairPlan {
    new_packs: Vec<IndexedPack>,
    replace: Vec<IndexId>,
    report: RepairIndexReport,
}

impl IndexRepairPlan {
    /// The report of what applying the plan does.
    pub fn report(&self) -> &RepairIndexReport {
        &self.report
    }

    /// True when the index needs no repair.
    pub fn is_empty(&self) -> bool {
        self.new_packs.is_empty() && self.replace.is_empty()
    }
}

/// Rebuilds what is missing or wrong in the index from the packs' trailers: plans and
/// applies at once (see [`plan_index_repair`]).
pub fn repair_index(repo: &Repository) -> Result<RepairIndexReport> {
    let plan = plan_index_repair(repo, 0)?;
    apply_index_repair(repo, plan)
}

/// Reads every index segment and every pack's trailer (three range reads per pack, on
/// `threads` threads; 0 = one per CPU, at most 8) and works out:
/// - segments to replace: those that do not load (damaged), and those that list a pack
///   differently from its trailer or list a pack that storage lacks (segments from a newer
///   format version are left alone);
/// - packs to index: every pack with a readable trailer that no segment kept lists.
///
/// Packs whose trailer is unreadable are reported and keep whatever entries the index has.
pub fn plan_index_repair(repo: &Repository, threads: usize) -> Result<IndexRepairPlan> {
    repo.check_features(Operation::Read)?;
    let mut report = RepairIndexReport::default();
    let mut segments: Vec<(IndexId, IndexSegment)> = Vec::new();
    let mut replace: BTreeMap<IndexId, String> = BTreeMap::new();
    repo.for_each_index_segment(|id, result| {
        let name = ObjectKind::Index.name(&id.to_hex());
        match result {
            Ok(segment) => segments.push((id, segment)),
            // Deleted since it was listed (by a concurrent repair or prune).
            Err(Error::NotFound { .. }) => {}
            Err(e @ Error::Unsupported { .. }) => report.segments_kept.push(Problem {
                object: name,
                message: format!("{}; left alone", error_message(&e)),
            }),
            Err(e @ Error::Corrupt { .. }) => {
                replace.insert(id, error_message(&e));
            }
            Err(e) => return Err(e),
        }
        Ok(())
    })?;

    let stored = crate::gc::list_packs(repo)?;
    report.packs = stored.packs.len();
    let mut listed: Vec<(PackId, ObjectKind, u64)> = stored
        .packs
        .iter()
        .map(|(id, found)| (*id, found.object_kind(), found.size))
        .collect();
    listed.sort_by_key(|(pack, _, _)| *pack);
    let trailers = parallel_map(&listed, threads, |(pack, kind, size)| {
        read_trailer(repo, &kind.name(&pack.to_hex()), *size)
    });
    let mut readable: HashMap<PackId, (BlobKind, Vec<PackEntry>)> = HashMap::new();
    for ((pack, kind, _), trailer) in listed.iter().zip(trailers) {
        let blob_kind = match kind {
            ObjectKind::TreePack => BlobKind::Tree,
            _ => BlobKind::Data,
        };
        match trailer {
            Ok(entries) => {
                readable.insert(*pack, (blob_kind, entries));
            }
            // A pack that could not be reached is not a pack without blobs.
            Err(e) if !e.is_damage() => return Err(e),
            Err(e) => report.packs_unreadable.push(Problem {
                object: kind.name(&pack.to_hex()),
                message: error_message(&e),
            }),
        }
    }

    let name_of = |pack: &IndexedPack| crate::pack::pack_name(pack.kind, &pack.id);
    let mut dropped = Vec::new();
    for (id, segment) in &segments {
        let mut why = Vec::new();
        let mut gone = Vec::new();
        for pack in &segment.packs {
            match readable.get(&pack.id) {
                Some((kind, entries)) if pack.kind != *kind || pack.blobs != *entries => {
                    why.push(format!("lists {} wrongly", name_of(pack)));
                }
                Some(_) => {}
                None if !stored.packs.contains_key(&pack.id) => {
                    why.push(format!(
                        "lists {}, which is missing from storage",
                        name_of(pack)
                    ));
                    gone.push(name_of(pack));
                }
                // The trailer is unreadable: the index may hold the only usable record.
                None => {}
            }
        }
        if !why.is_empty() {
            replace.insert(*id, why.join("; "));
            dropped.extend(gone);
        }
    }
    dropped.sort();
    dropped.dedup();
    report.packs_dropped = dropped;

    // Segments that stay list every readable pack of theirs correctly (else they would be
    // replaced); every other readable pack goes into the new segments.
    let kept: HashSet<PackId> = segments
        .iter()
        .filter(|(id, _)| !replace.contains_key(id))
        .flat_map(|(_, segment)| segment.packs.iter().map(|pack| pack.id))
        .collect();
    // A replaced segment's entries for a pack that is stored but whose trailer cannot be
    // read go into the new segments as listed: the index may hold the only record of where
    // that pack's blobs are, and dropping them would lose every blob of it.
    let mut carried: BTreeMap<PackId, IndexedPack> = BTreeMap::new();
    for (id, segment) in &segments {
        if !replace.contains_key(id) {
            continue;
        }
        for pack in &segment.packs {
            if stored.packs.contains_key(&pack.id)
                && !readable.contains_key(&pack.id)
                && !kept.contains(&pack.id)
            {
                carried.entry(pack.id).or_insert_with(|| pack.clone());
            }
        }
    }
    let mut new_packs: Vec<IndexedPack> = readable
        .into_iter()
        .filter(|(pack, _)| !kept.contains(pack))
        .map(|(id, (kind, blobs))| IndexedPack { id, kind, blobs })
        .collect();
    new_packs.sort_by_key(|pack| pack.id);
    report.packs_reindexed = new_packs.iter().map(name_of).collect();
    report.packs_reindexed.sort();
    report.blobs_reindexed = new_packs.iter().map(|pack| pack.blobs.len()).sum();
    new_packs.extend(carried.into_values());
    report.segments_replaced = replace
        .iter()
        .map(|(id, why)| Problem {
            object: ObjectKind::Index.name(&id.to_hex()),
            message: why.clone(),
        })
        .collect();
    report
        .packs_unreadable
        .sort_by(|a, b| a.object.cmp(&b.object));
    Ok(IndexRepairPlan {
        new_packs,
        replace: replace.into_keys().collect(),
        report,
    })
}

/// Writes the planned segments, then deletes the segments they replace. If writing fails,
/// nothing is deleted.
pub fn apply_index_repair(repo: &Repository, plan: IndexRepairPlan) -> Result<RepairIndexReport> {
    repo.check_features(Operation::Write)?;
    if !plan.replace.is_empty() {
        repo.check_features(Operation::Prune)?;
    }
    let mut report = plan.report;
    report.segments_written = repo.write_index_segments(plan.new_packs, &repo.new_session())?;
    for id in &plan.replace {
        repo.backend()
            .delete(&ObjectKind::Index.name(&id.to_hex()))?;
    }
    Ok(report)
}

// ----- snapshots -----

/// Options for [`plan_snapshot_repair`].
#[derive(Debug, Clone)]
pub struct RepairSnapshotsOptions {
    /// Read every pack to find damaged blobs too. Without it only missing packs, blobs
    /// the index lacks and unreadable trees are found; a bit flipped inside a data pack
    /// goes unnoticed.
    pub read_data: bool,
    /// Threads reading packs (0 = one per CPU, at most 8).
    pub threads: usize,
    /// Host named in the session heartbeat written while repairing.
    pub host: String,
}

impl Default for RepairSnapshotsOptions {
    fn default() -> Self {
        Self {
            read_data: true,
            threads: 0,
            host: String::new(),
        }
    }
}

/// One broken snapshot and its replacement.
#[derive(Debug, Clone)]
pub struct SnapshotRepair {
    /// The broken snapshot (deleted once the replacement is stored).
    pub old: SnapshotId,
    /// The replacement, as it will be written: same time, host, paths and parent; a new
    /// root tree; a `repaired=<old short id>` tag; the removed paths added to `errors`.
    pub snapshot: Snapshot,
    /// Every path removed, with why (`/srv/app/db.bin: data/ab/ab12.. is missing`).
    pub removed: Vec<String>,
}

/// What [`apply_snapshot_repair`] will do; build it with [`plan_snapshot_repair`].
#[derive(Debug)]
pub struct SnapshotRepairPlan {
    /// Snapshots to replace.
    pub repairs: Vec<SnapshotRepair>,
    /// Broken snapshots that cannot be repaired (the snapshot object or its root tree is
    /// unreadable), with why. They are left alone.
    pub unrepairable: Vec<(SnapshotId, String)>,
    /// Snapshots found intact: never touched.
    pub intact: usize,
    /// The check that found the damage.
    pub check: crate::check::CheckReport,
    new_trees: Vec<(BlobId, Vec<u8>)>,
    /// Blobs the check found damaged.
    damaged: HashSet<BlobId>,
    host: String,
}

/// A snapshot replaced by [`apply_snapshot_repair`].
#[derive(Debug, Clone)]
pub struct RepairedSnapshot {
    /// The broken snapshot, now deleted.
    pub old: SnapshotId,
    /// Its replacement.
    pub new: SnapshotId,
    /// The paths left out, with why.
    pub removed: Vec<String>,
}

/// What [`apply_snapshot_repair`] did.
#[derive(Debug, Clone, Default)]
pub struct RepairSnapshotsReport {
    /// Snapshots replaced.
    pub repaired: Vec<RepairedSnapshot>,
    /// Broken snapshots left alone, with why.
    pub unrepairable: Vec<(SnapshotId, String)>,
    /// Intact snapshots (untouched).
    pub intact: usize,
}

/// Finds the snapshots a check finds broken and works out their replacements: each tree is
/// rewritten without the files whose data is missing or damaged and without the
/// directories whose tree cannot be read; directories that lost entries are flagged
/// [`EntryFlags::INCOMPLETE`]. Intact snapshots are not touched.
///
/// Damaged blobs are found only with [`RepairSnapshotsOptions::read_data`]. Run
/// [`repair_index`] first: a blob the index misses is treated as lost.
pub fn plan_snapshot_repair(
    repo: &Repository,
    options: &RepairSnapshotsOptions,
) -> Result<SnapshotRepairPlan> {
    repo.check_features(Operation::Read)?;
    let inspection = inspect(
        repo,
        &CheckOptions {
            read_data: if options.read_data {
                ReadData::All
            } else {
                ReadData::None
            },
            threads: options.threads,
        },
    )?;
    let mut index = inspection.index;
    // Never deduplicate a rewritten tree against a damaged copy.
    for blob in inspection.bad_blobs.keys() {
        index.remove(blob);
    }
    let report = inspection.report;
    let mut rewriter = Rewriter {
        repo,
        index: &index,
        bad: &inspection.bad_blobs,
        memo: HashMap::new(),
        new_trees: Vec::new(),
        queued: HashSet::new(),
        fatal: None,
    };
    let mut repairs = Vec::new();
    let mut unrepairable = Vec::new();
    for broken in &report.broken_snapshots {
        let old = broken.id;
        let snapshot = match repo.load_snapshot(&old) {
            Ok(snapshot) => snapshot,
            Err(e) if !e.is_damage() => return Err(e),
            Err(e) => {
                unrepairable.push((old, format!("the snapshot cannot be read: {e}")));
                continue;
            }
        };
        let rewritten = rewriter.rewrite(&snapshot.tree, 0);
        if let Some(fatal) = rewriter.fatal.take() {
            return Err(fatal);
        }
        match rewritten {
            Rewritten::Unreadable(why) => {
                unrepairable.push((old, format!("its root tree cannot be read: {why}")));
            }
            Rewritten::Intact => unrepairable.push((
                old,
                format!(
                    "nothing to leave out, yet check finds it broken: {}",
                    broken.reasons.join("; ")
                ),
            )),
            Rewritten::Changed {
                id,
                removed,
                lost_files,
                lost_bytes,
            } => {
                let removed: Vec<String> = removed.iter().map(|r| format!("/{r}")).collect();
                let mut replacement = snapshot.clone();
                replacement.tree = id;
                replacement
                    .tags
                    .push((crate::snapshot::REPAIRED_TAG.into(), old.short()));
                replacement.summary.errors += removed.len() as u64;
                // What the snapshot now holds (listings show its size).
                let summary = &mut replacement.summary;
                summary.files = summary.files.saturating_sub(lost_files);
                summary.bytes = summary.bytes.saturating_sub(lost_bytes);
                replacement.errors.extend(
                    removed
                        .iter()
                        .map(|path| format!("removed by repair: {path}")),
                );
                replacement.errors.truncate(MAX_SNAPSHOT_ERRORS);
                replacement.program_version = PROGRAM_VERSION.to_owned();
                repairs.push(SnapshotRepair {
                    old,
                    snapshot: replacement,
                    removed,
                });
            }
        }
    }
    let new_trees = std::mem::take(&mut rewriter.new_trees);
    Ok(SnapshotRepairPlan {
        intact: report.snapshots - report.broken_snapshots.len(),
        repairs,
        unrepairable,
        check: report,
        new_trees,
        damaged: inspection.bad_blobs.keys().copied().collect(),
        host: options.host.clone(),
    })
}

/// Stores the rewritten trees, then for each repair writes the replacement snapshot and
/// forgets the old one ([`replace_snapshots`]: one writer session, with a heartbeat so a
/// concurrent prune waits for it). The damaged copies the check found are never
/// deduplicated against.
pub fn apply_snapshot_repair(
    repo: &Repository,
    plan: SnapshotRepairPlan,
) -> Result<RepairSnapshotsReport> {
    let done = replace_snapshots(
        repo,
        &plan.new_trees,
        plan.repairs.iter().map(|r| (r.old, &r.snapshot)),
        &ReplaceOptions {
            purpose: "repair",
            host: &plan.host,
            forget_old: true,
            avoid: &plan.damaged,
        },
    )?;
    Ok(RepairSnapshotsReport {
        repaired: plan
            .repairs
            .into_iter()
            .zip(done)
            .map(|(repair, (_, new))| RepairedSnapshot {
                old: repair.old,
                new,
                removed: repair.removed,
            })
            .collect(),
        unrepairable: plan.unrepairable,
        intact: plan.intact,
    })
}

/// A tree after leaving out what is lost.
#[derive(Debug, Clone)]
enum Rewritten {
    /// Nothing below it is lost: keep it as it is.
    Intact,
    /// Entries were left out: its replacement, the removed paths (relative to it, each
    /// with why), and the files and bytes of the removed files (those of unreadable
    /// directories are not known).
    Changed {
        id: BlobId,
        removed: Vec<String>,
        lost_files: u64,
        lost_bytes: u64,
    },
    /// The tree itself cannot be read.
    Unreadable(String),
}

struct Rewriter<'a> {
    repo: &'a Repository,
    index: &'a Index,
    bad: &'a HashMap<BlobId, String>,
    memo: HashMap<BlobId, Rewritten>,
    new_trees: Vec<(BlobId, Vec<u8>)>,
    queued: HashSet<BlobId>,
    /// The first error that was not damage (the storage could not be reached): the repair
    /// stops with it, having written nothing, rather than leave out what it could not read.
    fatal: Option<Error>,
}

impl Rewriter<'_> {
    /// Memoized: a subtree shared by several snapshots or directories is rewritten once.
    fn rewrite(&mut self, id: &BlobId, depth: usize) -> Rewritten {
        if let Some(done) = self.memo.get(id) {
            return done.clone();
        }
        let result = self.rewrite_tree(id, depth);
        self.memo.insert(*id, result.clone());
        result
    }

    /// Why a file's content is lost, if it is.
    fn lost_content(&self, extents: &[Extent]) -> Option<String> {
        extents.iter().find_map(|extent| match extent {
            Extent::Chunk { id, .. } => match self.bad.get(id) {
                Some(reason) => Some(reason.clone()),
                None if !self.index.contains(id) => {
                    Some(format!("data blob {id} is not in the index"))
                }
                None => None,
            },
            Extent::Hole { .. } => None,
        })
    }

    fn rewrite_tree(&mut self, id: &BlobId, depth: usize) -> Rewritten {
        // The same conditions the checker applies, so that what it calls broken is left out.
        if depth > crate::tree::MAX_TREE_DEPTH {
            return Rewritten::Unreadable(format!(
                "trees nested deeper than {} levels",
                crate::tree::MAX_TREE_DEPTH
            ));
        }
        if let Some(reason) = self.bad.get(id) {
            return Rewritten::Unreadable(reason.clone());
        }
        match self.index.get(id) {
            None => return Rewritten::Unreadable(format!("tree {id} is not in the index")),
            Some(location) if location.kind != BlobKind::Tree => {
                return Rewritten::Unreadable(format!("tree {id} is indexed as a data blob"));
            }
            Some(_) => {}
        }
        let tree = match self.repo.load_tree(self.index, id) {
            Ok(tree) => tree,
            Err(e) if !e.is_damage() => {
                let why = e.to_string();
                self.fatal.get_or_insert(e);
                return Rewritten::Unreadable(why);
            }
            Err(e) => return Rewritten::Unreadable(e.to_string()),
        };
        let mut entries = Vec::with_capacity(tree.entries().len());
        let mut removed = Vec::new();
        let (mut lost_files, mut lost_bytes) = (0u64, 0u64);
        let mut changed = false;
        for mut entry in tree.into_entries() {
            let name = String::from_utf8_lossy(&entry.name).into_owned();
            match entry.node {
                Node::File { ref extents } => {
                    if let Some(why) = self.lost_content(extents) {
                        removed.push(format!("{name}: {why}"));
                        lost_files += 1;
                        lost_bytes += extents.iter().map(Extent::length).sum::<u64>();
                        changed = true;
                        continue;
                    }
                }
                Node::Dir { subtree } => match self.rewrite(&subtree, depth + 1) {
                    Rewritten::Intact => {}
                    Rewritten::Unreadable(why) => {
                        removed.push(format!("{name}/: {why}"));
                        changed = true;
                        continue;
                    }
                    Rewritten::Changed {
                        id,
                        removed: below,
                        lost_files: files_below,
                        lost_bytes: bytes_below,
                    } => {
                        removed.extend(below.into_iter().map(|path| format!("{name}/{path}")));
                        lost_files += files_below;
                        lost_bytes += bytes_below;
                        entry.node = Node::Dir { subtree: id };
                        entry.meta.flags |= EntryFlags::INCOMPLETE;
                        changed = true;
                    }
                },
                _ => {}
            }
            entries.push(entry);
        }
        if !changed {
            return Rewritten::Intact;
        }
        // Entries of a valid tree, some left out: still valid.
        let tree = match Tree::new(entries) {
            Ok(tree) => tree,
            Err(e) => return Rewritten::Unreadable(format!("cannot rebuild tree {id}: {e}")),
        };
        let bytes = tree.encode();
        let new_id = self.repo.blob_id(&bytes);
        if self.queued.insert(new_id) {
            self.new_trees.push((new_id, bytes));
        }
        Rewritten::Changed {
            id: new_id,
            removed,
            lost_files,
            lost_bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Backend, MemoryBackend};
    use crate::check::{CheckReport, check};
    use crate::id::content_hash;
    use crate::index::encode_segment;
    use crate::keyslot::KdfParams;
    use crate::repository::InitOptions;
    use crate::snapshot::Summary;
    use crate::tree::{Entry, Metadata, Timestamp};

    fn new_repo() -> (Arc<MemoryBackend>, Repository) {
        let backend = Arc::new(MemoryBackend::new());
        let repo = init_on(backend.clone());
        (backend, repo)
    }

    fn init_on(backend: Arc<dyn Backend>) -> Repository {
        Repository::init(
            backend,
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..Default::default()
            },
        )
        .expect("init")
    }

    #[test]
    fn an_unreachable_storage_is_an_error_for_check_and_repair_not_damage() {
        use crate::backend::fault::{FaultRates, FaultyBackend};
        // Range reads (pack trailers, blobs) fail as on an unreachable storage.
        let backend = Arc::new(FaultyBackend::new(MemoryBackend::new(), 5));
        let repo = init_on(backend.clone());
        let files = store_files(&repo, &[("a", 1)]);
        let id = save(&repo, store_tree(&repo, files), "h");
        let repo = Repository::open(backend.clone() as Arc<dyn Backend>, b"pw").expect("open");
        backend.set_rates(FaultRates {
            get_range: 1.0,
            ..FaultRates::NONE
        });
        for read_data in [ReadData::None, ReadData::All] {
            let checked = check(
                &repo,
                CheckOptions {
                    read_data,
                    threads: 2,
                },
            );
            assert!(
                matches!(checked, Err(Error::Io { .. })),
                "{:?}",
                checked.map(|r| r.errors)
            );
        }
        let planned = plan_snapshot_repair(&repo, &RepairSnapshotsOptions::default());
        assert!(matches!(planned, Err(Error::Io { .. })), "{planned:?}");
        let rebuilt = repair_index(&repo);
        assert!(matches!(rebuilt, Err(Error::Io { .. })), "{rebuilt:?}");

        // Nothing was changed: with the storage back, all is well.
        backend.set_rates(FaultRates::NONE);
        assert_eq!(repo.list_snapshot_ids().expect("list"), vec![id]);
        assert!(check_with(&repo, ReadData::All).is_healthy());
    }

    fn content(seed: u8) -> Vec<u8> {
        (0..6000u32)
            .map(|i| (i.wrapping_mul(31) as u8) ^ seed)
            .collect()
    }

    /// Stores each file's content as one data blob, all in one session (one data pack,
    /// one index segment), and returns the files' entries.
    fn store_files(repo: &Repository, files: &[(&str, u8)]) -> Vec<Entry> {
        let index = repo.load_index().expect("index").index;
        let mut writer = repo.blob_writer(&index);
        let mut entries = Vec::new();
        for (name, seed) in files {
            let data = content(*seed);
            let (id, _) = writer.add(BlobKind::Data, &data).expect("add");
            entries.push(Entry {
                name: name.as_bytes().to_vec(),
                meta: Metadata::default(),
                node: Node::File {
                    extents: vec![Extent::Chunk {
                        id,
                        length: data.len() as u32,
                    }],
                },
            });
        }
        writer.finish().expect("finish");
        entries
    }

    fn dir(name: &str, subtree: BlobId) -> Entry {
        Entry {
            name: name.as_bytes().to_vec(),
            meta: Metadata::default(),
            node: Node::Dir { subtree },
        }
    }

    /// Stores a tree in a session of its own (its own tree pack).
    fn store_tree(repo: &Repository, entries: Vec<Entry>) -> BlobId {
        let index = repo.load_index().expect("index").index;
        let mut writer = repo.blob_writer(&index);
        let tree = Tree::new(entries).expect("tree");
        let (id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("add");
        writer.finish().expect("finish");
        id
    }

    fn save(repo: &Repository, tree: BlobId, host: &str) -> SnapshotId {
        let snapshot = Snapshot {
            time: Timestamp {
                sec: 1_700_000_000,
                nsec: 0,
            },
            host: host.into(),
            username: "u".into(),
            paths: vec![b"/src".to_vec()],
            tags: vec![("env".into(), "test".into())],
            parent: None,
            tree,
            source_kind: Default::default(),
            consistency: Default::default(),
            consistency_detail: String::new(),
            excludes: vec![],
            // Three files of 6,000 bytes, as the tests store them.
            summary: Summary {
                files: 3,
                bytes: 18_000,
                ..Summary::default()
            },
            errors: vec![],
            program_version: "t".into(),
        };
        repo.save_snapshot(&repo.new_session(), &snapshot)
            .expect("snapshot")
    }

    fn check_with(repo: &Repository, read_data: ReadData) -> CheckReport {
        check(
            repo,
            CheckOptions {
                read_data,
                threads: 2,
            },
        )
        .expect("check")
    }

    fn chunk_of(entry: &Entry) -> BlobId {
        match &entry.node {
            Node::File { extents } => match extents[0] {
                Extent::Chunk { id, .. } => id,
                Extent::Hole { .. } => panic!("hole"),
            },
            _ => panic!("not a file"),
        }
    }

    fn pack_name(repo: &Repository, blob: &BlobId) -> String {
        let index = repo.load_index().expect("index").index;
        let location = index.get(blob).expect("indexed");
        crate::pack::pack_name(location.kind, &location.pack)
    }

    fn segment_names(backend: &MemoryBackend) -> Vec<String> {
        backend
            .object_names()
            .into_iter()
            .filter(|name| name.starts_with("index/"))
            .collect()
    }

    /// Flips a byte inside the sealed blob `blob`.
    fn damage_blob(backend: &MemoryBackend, repo: &Repository, blob: &BlobId) -> String {
        let index = repo.load_index().expect("index").index;
        let location = index.get(blob).expect("indexed");
        let name = crate::pack::pack_name(location.kind, &location.pack);
        backend.corrupt(&name, |bytes| bytes[location.offset as usize + 30] ^= 0x20);
        name
    }

    #[test]
    fn repair_index_rebuilds_deleted_segments_from_trailers() {
        let (backend, repo) = new_repo();
        let files = store_files(&repo, &[("a", 1), ("b", 2)]);
        let root = store_tree(&repo, files.clone());
        save(&repo, root, "h");
        let data_pack = pack_name(&repo, &chunk_of(&files[0]));
        let tree_pack = pack_name(&repo, &root);
        for name in segment_names(&backend) {
            backend.delete(&name).expect("delete");
        }
        let report = check_with(&repo, ReadData::None);
        assert_eq!(report.broken_snapshots.len(), 1);
        let unindexed: Vec<&str> = report
            .warnings
            .iter()
            .filter(|w| w.message.contains("not indexed"))
            .map(|w| w.object.as_str())
            .collect();
        assert_eq!(unindexed.len(), 2, "{report:?}");

        let before = backend.object_names();
        let plan = plan_index_repair(&repo, 2).expect("plan");
        assert_eq!(backend.object_names(), before, "planning writes nothing");
        let mut expected = vec![data_pack, tree_pack];
        expected.sort();
        assert_eq!(plan.report().packs_reindexed, expected);
        assert_eq!(plan.report().blobs_reindexed, 3);
        assert!(plan.report().segments_replaced.is_empty());
        let report = apply_index_repair(&repo, plan).expect("apply");
        assert_eq!(report.segments_written.len(), 1);
        assert_eq!(segment_names(&backend).len(), 1);

        let report = check_with(&repo, ReadData::All);
        assert!(report.is_healthy(), "{report:?}");
        assert!(report.warnings.is_empty(), "{report:?}");
        let index = repo.load_index().expect("index").index;
        assert_eq!(
            repo.read_blob(&index, &chunk_of(&files[1])).expect("read"),
            content(2)
        );
        assert!(plan_index_repair(&repo, 1).expect("plan").is_empty());
    }

    #[test]
    fn repair_index_replaces_a_damaged_segment_and_keeps_the_others() {
        let (backend, repo) = new_repo();
        let first = store_files(&repo, &[("a", 1)]);
        let first_segments = segment_names(&backend);
        let second = store_files(&repo, &[("b", 2)]);
        let damaged = segment_names(&backend)
            .into_iter()
            .find(|name| !first_segments.contains(name))
            .expect("second segment");
        let root = store_tree(&repo, vec![first[0].clone(), second[0].clone()]);
        save(&repo, root, "h");
        backend.corrupt(&damaged, |bytes| bytes[70] ^= 1);
        let report = check_with(&repo, ReadData::None);
        assert!(report.errors.iter().any(|p| p.object == damaged));
        assert_eq!(report.broken_snapshots.len(), 1);

        let untouched: Vec<String> = segment_names(&backend)
            .into_iter()
            .filter(|name| *name != damaged)
            .collect();
        let plan = plan_index_repair(&repo, 0).expect("plan");
        let report = plan.report().clone();
        assert_eq!(report.segments_replaced.len(), 1);
        assert_eq!(report.segments_replaced[0].object, damaged);
        let second_pack = {
            // The damaged segment cannot be loaded: find the pack through its trailer.
            let stored = crate::gc::list_packs(&repo).expect("list");
            let indexed = repo.load_index().expect("index").index;
            stored
                .packs
                .iter()
                .find(|(id, _)| !indexed.packs().contains_key(id))
                .map(|(id, found)| found.object_kind().name(&id.to_hex()))
                .expect("the unindexed pack")
        };
        assert_eq!(report.packs_reindexed, vec![second_pack]);
        let report = apply_index_repair(&repo, plan).expect("apply");
        let names = segment_names(&backend);
        assert!(!names.contains(&damaged), "the damaged segment is deleted");
        for name in &untouched {
            assert!(
                names.contains(name),
                "{name} was not replaced and must stay"
            );
        }
        assert_eq!(names.len(), untouched.len() + 1);
        assert!(names.contains(&ObjectKind::Index.name(&report.segments_written[0].to_hex())));
        assert!(check_with(&repo, ReadData::All).is_healthy());
    }

    #[test]
    fn repair_index_fixes_wrong_entries_and_drops_packs_that_are_gone() {
        let (backend, repo) = new_repo();
        let before = segment_names(&backend);
        let files = store_files(&repo, &[("a", 1), ("b", 2)]);
        let data_segment = segment_names(&backend)
            .into_iter()
            .find(|name| !before.contains(name))
            .expect("segment");
        let root = store_tree(&repo, files.clone());
        save(&repo, root, "h");

        // Rewrite the data pack's segment with one wrong offset.
        let id: IndexId = data_segment["index/".len()..].parse().expect("id");
        let mut segment = repo.load_index_segment(&id).expect("load");
        segment.packs[0].blobs[0].offset += 1;
        let bytes = encode_segment(&segment, repo.writer_key(), &repo.new_session());
        let wrong = ObjectKind::Index.name(&hex::encode(content_hash(&bytes)));
        backend.put_if_absent(&wrong, &bytes).expect("put");
        backend.delete(&data_segment).expect("delete");
        let report = check_with(&repo, ReadData::None);
        assert!(
            report
                .errors
                .iter()
                .any(|p| p.message.contains("disagrees with the pack trailer")),
            "{report:?}"
        );

        let report = repair_index(&repo).expect("repair");
        assert_eq!(report.segments_replaced.len(), 1);
        assert_eq!(report.segments_replaced[0].object, wrong);
        assert!(report.segments_replaced[0].message.contains("wrongly"));
        let data_pack = pack_name(&repo, &chunk_of(&files[0]));
        assert_eq!(report.packs_reindexed, vec![data_pack.clone()]);
        assert!(!segment_names(&backend).contains(&wrong));
        assert!(check_with(&repo, ReadData::All).is_healthy());

        // The data pack is lost: the segment listing it is replaced by nothing (it listed
        // nothing else), so the index no longer claims blobs that are gone.
        let listing = ObjectKind::Index.name(&report.segments_written[0].to_hex());
        backend.delete(&data_pack).expect("delete");
        let report = repair_index(&repo).expect("repair");
        assert_eq!(report.packs_dropped, vec![data_pack.clone()]);
        assert_eq!(report.segments_replaced[0].object, listing);
        assert!(report.segments_written.is_empty());
        assert!(report.packs_reindexed.is_empty());
        assert!(!segment_names(&backend).contains(&listing));
        let report = check_with(&repo, ReadData::None);
        assert!(
            !report.errors.iter().any(|p| p.object == data_pack),
            "{report:?}"
        );
        assert_eq!(report.broken_snapshots.len(), 1, "the data is still lost");
        assert!(report.broken_snapshots[0].reasons[0].contains("not in the index"));
    }

    #[test]
    fn repair_index_reports_unreadable_packs_and_leaves_unsupported_segments() {
        let (backend, repo) = new_repo();
        let files = store_files(&repo, &[("a", 1)]);
        let root = store_tree(&repo, files.clone());
        save(&repo, root, "h");
        let data_pack = pack_name(&repo, &chunk_of(&files[0]));
        let tree_pack = pack_name(&repo, &root);
        // A segment from a future version: unreadable here, and not ours to delete.
        let tree_segment = segment_names(&backend)
            .into_iter()
            .find(|name| {
                let id: IndexId = name["index/".len()..].parse().expect("id");
                repo.load_index_segment(&id).expect("load").packs[0].kind == BlobKind::Tree
            })
            .expect("tree segment");
        let mut future = backend.get(&tree_segment).expect("get");
        future[5] = 2;
        let future_name = ObjectKind::Index.name(&hex::encode(content_hash(&future)));
        backend.put_if_absent(&future_name, &future).expect("put");
        for name in segment_names(&backend) {
            if name != future_name {
                backend.delete(&name).expect("delete");
            }
        }
        backend.corrupt(&data_pack, |bytes| bytes.truncate(bytes.len() - 2));

        let report = repair_index(&repo).expect("repair");
        assert_eq!(report.packs_unreadable.len(), 1);
        assert_eq!(report.packs_unreadable[0].object, data_pack);
        assert_eq!(report.packs_reindexed, vec![tree_pack]);
        assert_eq!(report.segments_kept.len(), 1);
        assert_eq!(report.segments_kept[0].object, future_name);
        assert!(report.segments_replaced.is_empty());
        assert!(segment_names(&backend).contains(&future_name));
    }

    #[test]
    fn repair_index_leaves_segments_whose_sections_are_a_newer_version() {
        for (ids_version, locations_version) in [(2, 1), (1, 2)] {
            let (backend, repo) = new_repo();
            let files = store_files(&repo, &[("a", 1)]);
            let root = store_tree(&repo, files);
            save(&repo, root, "h");
            let segments = segment_names(&backend);
            // The tree pack's segment, as a newer format would write it: its header is this
            // build's, one section inside is not.
            let tree_segment = segments
                .iter()
                .find(|name| {
                    let id: IndexId = name["index/".len()..].parse().expect("id");
                    repo.load_index_segment(&id).expect("load").packs[0].kind == BlobKind::Tree
                })
                .expect("tree segment")
                .clone();
            let id: IndexId = tree_segment["index/".len()..].parse().expect("id");
            let segment = repo.load_index_segment(&id).expect("load");
            let future = crate::index::encode_segment_with_versions(
                &segment,
                repo.writer_key(),
                &repo.new_session(),
                ids_version,
                locations_version,
            );
            let future_name = ObjectKind::Index.name(&hex::encode(content_hash(&future)));
            backend.put_if_absent(&future_name, &future).expect("put");
            backend.delete(&tree_segment).expect("delete");

            let report = repair_index(&repo).expect("repair");
            let case = format!("sections {ids_version}, {locations_version}");
            assert_eq!(report.segments_kept.len(), 1, "{case}: {report:?}");
            assert_eq!(report.segments_kept[0].object, future_name, "{case}");
            assert!(
                report.segments_kept[0]
                    .message
                    .contains("version 2 is not supported"),
                "{case}: {report:?}"
            );
            assert!(report.segments_replaced.is_empty(), "{case}: {report:?}");
            assert!(segment_names(&backend).contains(&future_name), "{case}");
        }
    }

    #[test]
    fn repair_snapshots_leaves_out_only_the_damaged_files() {
        let (backend, repo) = new_repo();
        let a = store_files(&repo, &[("a", 1)]);
        let b = store_files(&repo, &[("b", 2)]);
        let c = store_files(&repo, &[("c", 3)]);
        let sub = store_tree(&repo, vec![b[0].clone(), c[0].clone()]);
        let root = store_tree(&repo, vec![a[0].clone(), dir("d", sub)]);
        let broken = save(&repo, root, "h");
        let other_root = store_tree(&repo, vec![a[0].clone()]);
        let intact = save(&repo, other_root, "h2");
        let victim = damage_blob(&backend, &repo, &chunk_of(&b[0]));

        let structural = plan_snapshot_repair(
            &repo,
            &RepairSnapshotsOptions {
                read_data: false,
                ..Default::default()
            },
        )
        .expect("plan");
        assert!(
            structural.repairs.is_empty(),
            "a flipped bit needs --read-data"
        );

        let before = backend.object_names();
        let plan = plan_snapshot_repair(&repo, &RepairSnapshotsOptions::default()).expect("plan");
        assert_eq!(backend.object_names(), before, "planning writes nothing");
        assert_eq!(plan.intact, 1);
        assert!(plan.unrepairable.is_empty());
        assert_eq!(plan.repairs.len(), 1);
        assert_eq!(plan.repairs[0].old, broken);
        assert_eq!(plan.repairs[0].removed.len(), 1);
        assert!(plan.repairs[0].removed[0].starts_with("/d/b: "));
        assert!(plan.repairs[0].removed[0].contains(&victim));

        let report = apply_snapshot_repair(&repo, plan).expect("apply");
        assert_eq!(report.repaired.len(), 1);
        let new = report.repaired[0].new;
        let mut ids = repo.list_snapshot_ids().expect("list");
        ids.sort();
        let mut expected = vec![intact, new];
        expected.sort();
        assert_eq!(
            ids, expected,
            "the broken one is replaced, the intact one kept"
        );

        let snapshot = repo.load_snapshot(&new).expect("load");
        assert!(
            snapshot
                .tags
                .contains(&("repaired".to_owned(), broken.short()))
        );
        assert!(
            snapshot
                .tags
                .contains(&("env".to_owned(), "test".to_owned()))
        );
        assert!(
            snapshot
                .errors
                .iter()
                .any(|e| e.starts_with("removed by repair: /d/b"))
        );
        assert_eq!(snapshot.host, "h");
        assert_eq!(
            (snapshot.summary.files, snapshot.summary.bytes),
            (2, 12_000),
            "the summary counts what the snapshot still holds"
        );
        let index = repo.load_index().expect("index").index;
        let new_root = repo.load_tree(&index, &snapshot.tree).expect("root");
        assert_eq!(new_root.get(b"a"), Some(&a[0]));
        let d = new_root.get(b"d").expect("d kept");
        assert_ne!(d.meta.flags & EntryFlags::INCOMPLETE, 0);
        let Node::Dir { subtree } = d.node else {
            panic!("d is a directory")
        };
        let new_sub = repo.load_tree(&index, &subtree).expect("sub");
        assert_eq!(new_sub.entries(), &c[..]);
        assert_eq!(
            repo.read_blob(&index, &chunk_of(&c[0])).expect("c"),
            content(3)
        );

        let report = check_with(&repo, ReadData::All);
        assert!(report.broken_snapshots.is_empty(), "{report:?}");
        assert!(!report.errors.is_empty());
        assert!(
            report.errors.iter().all(|p| p.object == victim),
            "{report:?}"
        );
        assert_eq!(report.unreferenced_damage, vec![victim]);
        let again = plan_snapshot_repair(&repo, &RepairSnapshotsOptions::default()).expect("plan");
        assert!(again.repairs.is_empty() && again.unrepairable.is_empty());
    }

    #[test]
    fn repair_snapshots_drops_unreadable_subtrees_and_leaves_unreadable_roots() {
        let (backend, repo) = new_repo();
        let a = store_files(&repo, &[("a", 1)]);
        let b = store_files(&repo, &[("b", 2)]);
        let sub = store_tree(&repo, vec![b[0].clone()]);
        let root = store_tree(&repo, vec![a[0].clone(), dir("d", sub)]);
        let broken = save(&repo, root, "h");
        let rootless = save(&repo, sub, "h2");
        let victim = damage_blob(&backend, &repo, &sub);

        let report = apply_snapshot_repair(
            &repo,
            plan_snapshot_repair(&repo, &RepairSnapshotsOptions::default()).expect("plan"),
        )
        .expect("apply");
        assert_eq!(report.repaired.len(), 1);
        assert_eq!(report.repaired[0].old, broken);
        assert_eq!(report.repaired[0].removed.len(), 1);
        assert!(report.repaired[0].removed[0].starts_with("/d/: "));
        assert_eq!(report.unrepairable.len(), 1);
        assert_eq!(report.unrepairable[0].0, rootless);
        assert!(repo.list_snapshot_ids().expect("list").contains(&rootless));

        let snapshot = repo.load_snapshot(&report.repaired[0].new).expect("load");
        let index = repo.load_index().expect("index").index;
        let new_root = repo.load_tree(&index, &snapshot.tree).expect("root");
        assert_eq!(new_root.entries(), &a[..]);
        let report = check_with(&repo, ReadData::All);
        assert_eq!(report.broken_snapshots.len(), 1);
        assert_eq!(report.broken_snapshots[0].id, rootless);
        assert!(report.errors.iter().any(|p| p.object == victim));
    }

    /// A blob stored twice (two backups that raced, an interrupted salvage or repack): the
    /// copy the index does not use is damaged, the one it uses is intact. Nothing is lost,
    /// so no snapshot is broken and `repair snapshots` must not take the file out (the
    /// original would be forgotten, and a prune would then delete the intact copy).
    #[test]
    fn a_damaged_duplicate_costs_nothing_while_the_indexed_copy_is_intact() {
        let (backend, repo) = new_repo();
        let files = store_files(&repo, &[("a", 1), ("b", 2)]);
        let a = chunk_of(&files[0]);
        save(&repo, store_tree(&repo, files), "h");
        // The same content again in a pack of its own, written without deduplication.
        let empty = Index::default();
        let mut writer = repo.blob_writer(&empty);
        assert_eq!(writer.add(BlobKind::Data, &content(1)).expect("add").0, a);
        writer.finish().expect("finish");
        let index = repo.load_index().expect("index").index;
        let used = index.get(&a).expect("indexed").pack;
        let data_packs: Vec<String> = backend
            .list(ObjectKind::DataPack.prefix())
            .expect("list")
            .into_iter()
            .map(|meta| meta.name)
            .collect();
        assert_eq!(data_packs.len(), 2);
        let duplicate = data_packs
            .iter()
            .find(|name| **name != crate::pack::pack_name(BlobKind::Data, &used))
            .expect("the other pack")
            .clone();
        let bytes = backend.get(&duplicate).expect("get");
        let key = repo.master_key("test").expect("key");
        let trailer = crate::pack::parse_pack(&bytes, key, &duplicate).expect("trailer");
        let entry = trailer
            .entries
            .iter()
            .find(|e| e.id == a)
            .expect("a in the duplicate");
        let at = entry.offset as usize + entry.length as usize / 2;
        backend.corrupt(&duplicate, |bytes| bytes[at] ^= 0x55);

        let report = check_with(&repo, ReadData::All);
        assert!(
            report.broken_snapshots.is_empty(),
            "{:?}",
            report.broken_snapshots
        );
        let plan = plan_snapshot_repair(&repo, &RepairSnapshotsOptions::default()).expect("plan");
        assert!(
            plan.repairs.is_empty(),
            "{:?}",
            plan.repairs.iter().map(|r| &r.removed).collect::<Vec<_>>()
        );
    }
}
