//! Integrity checks: structure (every snapshot's trees and blobs are indexed, every indexed
//! pack exists and its trailer agrees with the index) and, optionally, every byte of data
//! (each pack re-hashed against its name, each blob authenticated and re-hashed).
//!
//! Problems are collected, not thrown: the report names every damaged object and the
//! snapshots it breaks.
//!
//! Reading data can be limited with [`ReadData`]: a fixed subset of the packs (running
//! `1/M` .. `M/M` reads each pack once), a random percentage, or a rolling verification
//! with a time budget that reads the packs least recently verified first and remembers in a
//! local state file ([`VerifiedPacks`]) when each pack was last found intact. Structure
//! checks always run in full; only the reading of data is limited.

mod packs;
mod selection;
mod trees;

pub use selection::{CheckOptions, ReadData, VerifiedPacks, pack_subset};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use crate::error::Result;
use crate::id::{BlobId, KeySlotId, PackId, SnapshotId};
use crate::index::{BlobLocation, Index};
use crate::object::{ObjectKind, verify_content_hash};
use crate::repository::Repository;

pub(crate) use packs::*;
pub(crate) use selection::*;
use trees::*;

/// One damaged or suspicious object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Object name (`data/ab/ab12..`, `snapshots/..`, `blob ..`).
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// A snapshot that cannot be restored completely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// What it lacks, naming the damaged objects (capped).
    pub reasons: Vec<String>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Snapshots checked.
    pub snapshots: usize,
    /// Index segments read.
    pub index_segments: usize,
    /// Packs in the index.
    pub packs: usize,
    /// Blobs in the index.
    pub blobs: usize,
    /// Packs whose every byte was read and verified.
    pub packs_read: usize,
    /// Names of the packs counted in `packs_read`, sorted.
    pub read_packs: Vec<String>,
    /// Indexed packs whose data is not verified: those this run did not read, or in
    /// rolling mode, those that no run has found intact (per the state file, after this run).
    pub packs_unverified: usize,
    /// Bytes read and verified.
    pub bytes_read: u64,
    /// Damage found.
    pub errors: Vec<Problem>,
    /// Harmless findings (e.g. packs an interrupted backup or prune left unindexed).
    pub warnings: Vec<Problem>,
    /// Snapshots that the damage breaks.
    pub broken_snapshots: Vec<BrokenSnapshot>,
    /// Damaged or missing packs (named in `errors`) none of whose lost blobs any snapshot
    /// needs: the damage costs no backup (a lost blob was stored again elsewhere, or only
    /// unreferenced blobs were hit). Sorted.
    pub unreferenced_damage: Vec<String>,
    /// The rolling state file used (rolling mode only).
    pub state_file: Option<PathBuf>,
}

impl CheckReport {
    /// True when no damage was found.
    pub fn is_healthy(&self) -> bool {
        self.errors.is_empty() && self.broken_snapshots.is_empty()
    }

    fn error(&mut self, object: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            object: object.into(),
            message: message.into(),
        });
    }
}

const MAX_REASONS: usize = 20;

/// Runs the check. Fails only when the backend itself cannot be listed or read.
pub fn check(repo: &Repository, options: CheckOptions) -> Result<CheckReport> {
    Ok(inspect(repo, &options)?.report)
}

/// A check's report with what repairs need to know.
pub(crate) struct Inspection {
    /// The report.
    pub(crate) report: CheckReport,
    /// Every blob found missing or damaged, with why.
    pub(crate) bad_blobs: HashMap<BlobId, String>,
    /// The index, restricted to the packs in storage.
    pub(crate) index: Index,
}

/// Runs a check and keeps the blob-level findings.
pub(crate) fn inspect(repo: &Repository, options: &CheckOptions) -> Result<Inspection> {
    let started = Instant::now();
    let mut report = CheckReport::default();
    check_key_slots(repo, &mut report)?;

    // The index keeps only a prefix of each blob id: keep every segment's full listing
    // (pack, blob id, location) to compare with the packs and to report lost blobs.
    let mut listed: Vec<(PackId, BlobId, BlobLocation)> = Vec::new();
    let mut listed_packs: HashSet<PackId> = HashSet::new();
    let loaded = repo.load_index_visiting(|segment| {
        for pack in &segment.packs {
            // A pack listed by two segments (a prune stopped between writing the merged
            // segment and deleting the old ones) is the same pack: list it once.
            if !listed_packs.insert(pack.id) {
                continue;
            }
            for blob in &pack.blobs {
                let location = BlobLocation {
                    pack: pack.id,
                    kind: blob.kind,
                    offset: blob.offset,
                    length: blob.length,
                    raw_length: blob.raw_length,
                };
                listed.push((pack.id, blob.id, location));
            }
        }
    })?;
    drop(listed_packs);
    report.index_segments = loaded.segments.len();
    for (id, error) in &loaded.damaged {
        report.error(ObjectKind::Index.name(&id.to_hex()), error_message(error));
    }
    let mut index = loaded.index;
    report.blobs = index.len();
    report.packs = index.packs().len();

    let stored = crate::gc::list_packs(repo)?;
    for stray in &stored.strays {
        report.warnings.push(Problem {
            object: stray.clone(),
            message: "not a pack name; ignored".into(),
        });
    }

    // Packs the index lists but storage lacks. Their blobs are lost, unless a pack that
    // is stored holds another copy (a later backup stored them again): the index then
    // falls back to that copy.
    let mut missing: Vec<(PackId, String)> = index
        .packs()
        .iter()
        .filter(|(pack, _)| !stored.packs.contains_key(*pack))
        .map(|(pack, (kind, _))| (*pack, crate::pack::pack_name(kind, pack)))
        .collect();
    missing.sort_by(|a, b| a.1.cmp(&b.1));
    let missing_names: HashMap<PackId, &str> = missing
        .iter()
        .map(|(id, name)| (*id, name.as_str()))
        .collect();
    let mut lost_in_missing: Vec<(BlobId, String)> = Vec::new();
    if !missing.is_empty() {
        for (pack, blob, location) in &listed {
            if let Some(name) = missing_names.get(pack)
                && index.get(blob) == Some(*location)
            {
                lost_in_missing.push((*blob, (*name).to_owned()));
            }
        }
    }
    index.retain_packs(|pack| stored.packs.contains_key(pack));
    let mut bad_blobs: HashMap<BlobId, String> = HashMap::new();
    // Per damaged or missing pack, the blobs it cost.
    let mut damaged_packs: HashMap<String, Vec<BlobId>> = HashMap::new();
    for (_, name) in &missing {
        report.error(name, "pack is in the index but missing from storage");
        damaged_packs.entry(name.clone()).or_default();
    }
    for (blob, name) in lost_in_missing {
        if !index.contains(&blob) {
            bad_blobs.insert(blob, format!("{name} is missing"));
            damaged_packs.entry(name).or_default().push(blob);
        }
    }

    for (pack, found) in &stored.packs {
        if !index.packs().contains_key(pack) {
            report.warnings.push(Problem {
                object: found.object_kind().name(&pack.to_hex()),
                message: if loaded.damaged.is_empty() {
                    "pack is not indexed (left by an interrupted backup or prune, or written by \
                     one still running; prune removes it once no writer can need it)"
                        .into()
                } else {
                    "pack is not indexed (left by an interrupted backup or prune, or listed only in \
                     a damaged index segment)"
                        .into()
                },
            });
        }
    }
    report.warnings.sort_by(|a, b| a.object.cmp(&b.object));

    // Blobs per pack, as the index says.
    // (Each blob once, at the location the index chose for it.)
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for (pack, id, location) in listed {
        if index.get(&id) == Some(location) {
            by_pack.entry(pack).or_default().push((id, location));
        }
    }

    let mut packs_to_read: Vec<PackId> = index
        .packs()
        .keys()
        .filter(|pack| stored.packs.contains_key(*pack))
        .copied()
        .collect();
    packs_to_read.sort();
    let mut verified = match &options.read_data {
        ReadData::Rolling { state_file, .. } => Some(VerifiedPacks::load(state_file)),
        _ => None,
    };
    let work = plan_reads(&options.read_data, &packs_to_read, verified.as_ref());
    let deadline = match &options.read_data {
        ReadData::Rolling { max_duration, .. } => Some(
            started
                .checked_add(*max_duration)
                .unwrap_or_else(|| started + Duration::from_secs(100 * 365 * 86_400)),
        ),
        _ => None,
    };
    let outcomes = check_packs(
        repo,
        &work,
        &by_pack,
        &stored.packs,
        options.threads,
        deadline,
    );
    let mut found_intact = Vec::new();
    let mut found_damaged = Vec::new();
    let mut outcomes = outcomes;
    if let Some(fatal) = outcomes.iter_mut().find_map(|o| o.fatal.take()) {
        return Err(fatal);
    }
    for outcome in outcomes {
        report.bytes_read += outcome.bytes_read;
        if outcome.fully_read {
            report.packs_read += 1;
            report.read_packs.push(outcome.name.clone());
            if outcome.problems.is_empty() {
                found_intact.push(outcome.pack);
            }
        }
        if !outcome.problems.is_empty() {
            found_damaged.push(outcome.pack);
            damaged_packs.entry(outcome.name.clone()).or_default();
        }
        report.errors.extend(outcome.problems);
        for (blob, reason) in outcome.bad_blobs {
            // A damaged copy the index does not use (a blob stored twice, by backups that
            // raced or an interrupted salvage or repack) costs nothing while the copy it
            // uses is whole: the pack's damage is reported above, the blob is not lost.
            if index
                .get(&blob)
                .is_some_and(|location| location.pack != outcome.pack)
            {
                continue;
            }
            damaged_packs
                .entry(outcome.name.clone())
                .or_default()
                .push(blob);
            bad_blobs.insert(blob, reason);
        }
    }
    report.read_packs.sort();

    match (&mut verified, &options.read_data) {
        (Some(state), ReadData::Rolling { state_file, .. }) => {
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
            // Packs no longer indexed (pruned) need no record.
            state.retain(|pack| index.packs().contains_key(pack));
            for pack in found_intact {
                state.record(pack, now);
            }
            for pack in &found_damaged {
                state.forget(pack);
            }
            report.packs_unverified = packs_to_read
                .iter()
                .filter(|pack| state.get(pack).is_none())
                .count();
            if let Err(e) = state.save(state_file) {
                report.warnings.push(Problem {
                    object: state_file.display().to_string(),
                    message: format!("could not save the rolling check state: {e}"),
                });
            }
            report.state_file = Some(state_file.clone());
        }
        _ => report.packs_unverified = packs_to_read.len().saturating_sub(report.packs_read),
    }

    let mut walker = TreeWalker {
        repo,
        index: &index,
        bad_blobs: &bad_blobs,
        memo: HashMap::new(),
        used_bad: HashSet::new(),
        fatal: None,
    };
    // A damaged forget marker hides nothing: its snapshot stays and is checked below.
    if let Ok(key) = repo.master_key("checking") {
        for (name, e) in crate::forget_marker::list(repo, key)?.unreadable {
            report.error(
                &name,
                format!("{} (the snapshot it forgets stays)", error_message(&e)),
            );
        }
    }
    let mut snapshot_ids = repo.list_snapshot_ids()?;
    snapshot_ids.sort();
    for id in snapshot_ids {
        report.snapshots += 1;
        let name = ObjectKind::Snapshot.name(&id.to_hex());
        let snapshot = match repo.load_snapshot(&id) {
            Ok(snapshot) => snapshot,
            Err(e) if !e.is_damage() => return Err(e),
            Err(e) => {
                report.error(&name, error_message(&e));
                report.broken_snapshots.push(BrokenSnapshot {
                    id,
                    reasons: vec![e.to_string()],
                });
                continue;
            }
        };
        let reasons = walker.tree_damage(&snapshot.tree, 0);
        if let Some(fatal) = walker.fatal.take() {
            return Err(fatal);
        }
        if !reasons.is_empty() {
            report.broken_snapshots.push(BrokenSnapshot {
                id,
                reasons: reasons.iter().take(MAX_REASONS).cloned().collect(),
            });
        }
    }
    let used_bad = std::mem::take(&mut walker.used_bad);
    let mut tree_problems: Vec<Problem> = walker
        .memo
        .into_iter()
        .filter_map(|(id, reasons)| {
            reasons.own.map(|message| Problem {
                object: format!("tree {id}"),
                message,
            })
        })
        .collect();
    tree_problems.sort_by(|a, b| a.object.cmp(&b.object));
    report.errors.extend(tree_problems);
    report.unreferenced_damage = damaged_packs
        .into_iter()
        .filter(|(_, blobs)| !blobs.iter().any(|blob| used_bad.contains(blob)))
        .map(|(name, _)| name)
        .collect();
    report.unreferenced_damage.sort();
    Ok(Inspection {
        report,
        bad_blobs,
        index,
    })
}

fn check_key_slots(repo: &Repository, report: &mut CheckReport) -> Result<()> {
    let prefix = ObjectKind::KeySlot.prefix();
    for meta in repo.backend().list(prefix)? {
        let Some(id) = meta
            .name
            .strip_prefix(prefix)
            .and_then(|hex| hex.parse::<KeySlotId>().ok())
        else {
            report.error(&meta.name, "not a key slot name");
            continue;
        };
        let verified = repo.backend().get(&meta.name).and_then(|bytes| {
            verify_content_hash(&bytes, id.as_bytes(), &meta.name)?;
            crate::keyslot::KeySlot::decode(&bytes, &meta.name)
        });
        if let Err(e) = verified {
            report.error(&meta.name, error_message(&e));
        }
    }
    Ok(())
}

/// The number of worker threads for `threads` (0 = number of CPUs, at most 8).
pub(crate) fn resolve_threads(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8),
        n => n,
    }
}

/// Applies `f` to every item on `threads` worker threads (see [`resolve_threads`]), taking
/// items in order; the results come back in the items' order.
pub(crate) fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let threads = resolve_threads(threads).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let results = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let result = f(item);
                    results
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(PoisonError::into_inner);
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, result)| result).collect()
}

#[cfg(test)]
mod tests {
    use crate::blob::BlobKind;
    use crate::tree::{Extent, Node};
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Backend, MemoryBackend};
    use crate::index::Index;
    use crate::keyslot::KdfParams;
    use crate::repository::InitOptions;
    use crate::snapshot::Snapshot;
    use crate::tree::{Entry, Metadata, Tree};

    fn fixture() -> (Arc<MemoryBackend>, Repository, SnapshotId, BlobId) {
        let backend = Arc::new(MemoryBackend::new());
        let repo = Repository::init(
            backend.clone() as Arc<dyn Backend>,
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..Default::default()
            },
        )
        .expect("init");
        let empty = Index::new();
        let mut writer = repo.blob_writer(&empty);
        let data = vec![42u8; 10_000];
        let (blob, _) = writer.add(BlobKind::Data, &data).expect("add");
        let tree = Tree::new(vec![Entry {
            name: b"file".to_vec(),
            meta: Metadata::default(),
            node: Node::File {
                extents: vec![Extent::Chunk {
                    id: blob,
                    length: 10_000,
                }],
            },
        }])
        .expect("tree");
        let (tree_id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("tree");
        let session = writer.session().clone();
        writer.finish().expect("finish");
        let snapshot = Snapshot::of_tree_for_tests(tree_id);
        let id = repo.save_snapshot(&session, &snapshot).expect("snapshot");
        (backend, repo, id, blob)
    }

    /// A repository with one data pack per file (`n` files, each written by its own
    /// session) and a snapshot of all of them.
    fn multi_pack_fixture(n: u8) -> (Arc<MemoryBackend>, Repository, SnapshotId, Vec<BlobId>) {
        let backend = Arc::new(MemoryBackend::new());
        let repo = Repository::init(
            backend.clone() as Arc<dyn Backend>,
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..Default::default()
            },
        )
        .expect("init");
        let empty = Index::new();
        let mut blobs = Vec::new();
        for i in 0..n {
            let mut writer = repo.blob_writer(&empty);
            let data = vec![i; 5000 + usize::from(i)];
            blobs.push(writer.add(BlobKind::Data, &data).expect("add").0);
            writer.finish().expect("finish");
        }
        let index = repo.load_index().expect("index").index;
        let mut writer = repo.blob_writer(&index);
        let entries = blobs
            .iter()
            .enumerate()
            .map(|(i, blob)| Entry {
                name: format!("f{i}").into_bytes(),
                meta: Metadata::default(),
                node: Node::File {
                    extents: vec![Extent::Chunk {
                        id: *blob,
                        length: 5000 + i as u32,
                    }],
                },
            })
            .collect();
        let tree = Tree::new(entries).expect("tree");
        let (tree_id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("tree");
        let session = writer.session().clone();
        writer.finish().expect("finish");
        let id = repo
            .save_snapshot(&session, &Snapshot::of_tree_for_tests(tree_id))
            .expect("snapshot");
        (backend, repo, id, blobs)
    }

    fn pack_names(repo: &Repository, kind: ObjectKind) -> Vec<String> {
        let mut names: Vec<String> = crate::gc::list_packs(repo)
            .expect("list")
            .packs
            .into_iter()
            .filter(|(_, found)| found.object_kind() == kind)
            .map(|(id, found)| found.object_kind().name(&id.to_hex()))
            .collect();
        names.sort();
        names
    }

    fn run(repo: &Repository, read_data: ReadData, threads: usize) -> CheckReport {
        check(repo, CheckOptions { read_data, threads }).expect("check")
    }

    #[test]
    fn subset_and_percent_specifications_parse() {
        assert_eq!(
            ReadData::parse_subset("2/7").expect("n/m"),
            ReadData::Subset { n: 2, m: 7 }
        );
        assert_eq!(
            ReadData::parse_subset(" 1/1 ").expect("n/m"),
            ReadData::Subset { n: 1, m: 1 }
        );
        assert_eq!(
            ReadData::parse_subset("12.5%").expect("p%"),
            ReadData::Percent(12.5)
        );
        assert_eq!(
            ReadData::parse_subset("100%").expect("p%"),
            ReadData::Percent(100.0)
        );
        for bad in [
            "0/3", "4/3", "1/0", "3", "a/b", "0%", "101%", "-5%", "NaN%", "%", "", "1/2/3",
        ] {
            assert!(ReadData::parse_subset(bad).is_err(), "{bad:?} accepted");
        }
        let pack = PackId::from_bytes([
            0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21,
            22, 23, 24, 25, 26, 27, 28,
        ]);
        assert_eq!(pack_subset(&pack, 4), 4);
        assert_eq!(pack_subset(&pack, 7), 1);
        assert_eq!(pack_subset(&pack, 1), 1);
    }

    #[test]
    fn verified_packs_state_round_trips_and_tolerates_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = VerifiedPacks::path(dir.path(), &[0xab; 32]);
        assert!(path.ends_with(format!("{}/verified-packs", "ab".repeat(32))));
        assert!(
            VerifiedPacks::load(&path).is_empty(),
            "missing file: nothing verified"
        );

        let mut state = VerifiedPacks::default();
        state.record(PackId::from_bytes([2; 32]), 1_700_000_002);
        state.record(PackId::from_bytes([1; 32]), 1_700_000_001);
        state.save(&path).expect("save");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!(
                "{} 1700000001\n{} 1700000002\n",
                "01".repeat(32),
                "02".repeat(32)
            )
        );
        assert_eq!(VerifiedPacks::load(&path), state);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().expect("dir"))
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("verified-packs")]);

        for corrupt in [
            "garbage\n".to_owned(),
            format!("{} notanumber\n", "01".repeat(32)),
            format!("{}1 5\n", "01".repeat(32)),
        ] {
            std::fs::write(&path, corrupt).expect("write");
            assert!(VerifiedPacks::load(&path).is_empty());
        }
        assert_eq!(VerifiedPacks::decode(""), Some(VerifiedPacks::default()));
    }

    #[test]
    fn subsets_partition_the_packs_and_structure_is_always_checked() {
        let (backend, repo, _, blobs) = multi_pack_fixture(8);
        let all = crate::gc::list_packs(&repo).expect("list").packs;
        assert_eq!(all.len(), 9, "8 data packs and a tree pack");
        let mut covered = Vec::new();
        for n in 1..=3 {
            let report = run(&repo, ReadData::Subset { n, m: 3 }, 2);
            assert!(report.is_healthy(), "{report:?}");
            for name in &report.read_packs {
                let id: PackId = name.rsplit('/').next().expect("hex").parse().expect("id");
                assert_eq!(pack_subset(&id, 3), n, "{name} read in subset {n}/3");
            }
            assert_eq!(report.packs_read, report.read_packs.len());
            assert_eq!(report.packs_unverified, all.len() - report.packs_read);
            covered.extend(report.read_packs);
        }
        covered.sort();
        let mut expected: Vec<String> = all
            .iter()
            .map(|(id, found)| found.object_kind().name(&id.to_hex()))
            .collect();
        expected.sort();
        assert_eq!(
            covered, expected,
            "1/3, 2/3 and 3/3 read every pack exactly once"
        );

        // A bit flip inside a blob is data damage: seen only by the subset that reads it.
        // A truncated pack is structural damage: seen by every subset.
        let index = repo.load_index().expect("index").index;
        let flipped = index.get(&blobs[0]).expect("indexed");
        let flipped_name = ObjectKind::DataPack.name(&flipped.pack.to_hex());
        backend.corrupt(&flipped_name, |b| b[flipped.offset as usize + 30] ^= 4);
        let truncated = index.get(&blobs[1]).expect("indexed").pack;
        let truncated_name = ObjectKind::DataPack.name(&truncated.to_hex());
        backend.corrupt(&truncated_name, |b| b.truncate(b.len() - 3));
        for n in 1..=3 {
            let report = run(&repo, ReadData::Subset { n, m: 3 }, 1);
            let named = |name: &str| report.errors.iter().any(|p| p.object == name);
            assert!(named(&truncated_name), "subset {n}: {report:?}");
            assert_eq!(
                named(&flipped_name),
                pack_subset(&flipped.pack, 3) == n,
                "subset {n}: {report:?}"
            );
        }
    }

    #[test]
    fn percent_reads_that_share_of_the_packs_at_random() {
        let (_, repo, _, _) = multi_pack_fixture(7);
        for (percent, expected) in [(100.0, 8), (50.0, 4), (0.1, 1), (25.0, 2)] {
            let report = run(&repo, ReadData::Percent(percent), 2);
            assert!(report.is_healthy());
            assert_eq!(report.packs_read, expected, "{percent}%");
            assert_eq!(report.packs_unverified, 8 - expected);
        }
    }

    #[test]
    fn rolling_check_reads_least_recently_verified_first_and_remembers() {
        let (backend, repo, _, blobs) = multi_pack_fixture(3);
        let all = pack_names(&repo, ObjectKind::DataPack).len() + 1;
        let dir = tempfile::tempdir().expect("tempdir");
        let state_file = VerifiedPacks::path(dir.path(), &[7; 32]);
        let rolling = |budget: Duration| ReadData::Rolling {
            max_duration: budget,
            state_file: state_file.clone(),
        };

        // A zero budget still reads one pack per run, each time one not read before.
        let mut seen = HashSet::new();
        for run_number in 1..=all {
            let report = run(&repo, rolling(Duration::ZERO), 2);
            assert!(report.is_healthy(), "{report:?}");
            assert_eq!(report.packs_read, 1, "{report:?}");
            assert!(seen.insert(report.read_packs[0].clone()), "{report:?}");
            assert_eq!(report.packs_unverified, all - run_number);
            assert_eq!(report.state_file.as_deref(), Some(state_file.as_path()));
        }
        let state = VerifiedPacks::load(&state_file);
        assert_eq!(state.len(), all);

        // Damage found by a rolling run is not recorded as verified: that pack is read
        // first next time.
        let index = repo.load_index().expect("index").index;
        let location = index.get(&blobs[2]).expect("indexed");
        let victim = ObjectKind::DataPack.name(&location.pack.to_hex());
        backend.corrupt(&victim, |b| b[location.offset as usize + 30] ^= 4);
        let report = run(&repo, rolling(Duration::from_secs(3600)), 2);
        assert_eq!(report.packs_read, all);
        assert!(report.errors.iter().any(|p| p.object == victim));
        assert_eq!(report.packs_unverified, 1);
        assert!(
            VerifiedPacks::load(&state_file)
                .get(&location.pack)
                .is_none()
        );
        let report = run(&repo, rolling(Duration::ZERO), 1);
        assert_eq!(report.read_packs, vec![victim.clone()]);

        // A corrupt state file means "never verified".
        std::fs::write(&state_file, "not a state file").expect("write");
        let report = run(&repo, rolling(Duration::ZERO), 1);
        assert_eq!(report.packs_read, 1);
        let read_intact = report.read_packs != vec![victim];
        assert_eq!(report.packs_unverified, all - usize::from(read_intact));
    }

    #[test]
    fn a_lost_pack_whose_blobs_were_stored_again_breaks_no_snapshot() {
        let (backend, repo, snapshot, blob) = fixture();
        let index = repo.load_index().expect("index").index;
        let lost = index.get(&blob).expect("indexed").pack;
        // Another session stores the same blob again (a backup that did not trust the
        // index), into a pack of its own.
        let empty = Index::new();
        let mut writer = repo.blob_writer(&empty);
        writer
            .add(BlobKind::Data, &vec![42u8; 10_000])
            .expect("add");
        writer.finish().expect("finish");
        let lost_name = ObjectKind::DataPack.name(&lost.to_hex());
        backend.delete(&lost_name).expect("delete");

        for read_data in [ReadData::None, ReadData::All] {
            let report = run(&repo, read_data, 2);
            assert!(report.broken_snapshots.is_empty(), "{report:?}");
            assert_eq!(report.errors.len(), 1, "{report:?}");
            assert_eq!(report.errors[0].object, lost_name);
            assert_eq!(report.unreferenced_damage, vec![lost_name.clone()]);
        }

        // Without the second copy the same loss breaks the snapshot.
        let (backend, repo, snapshot2, blob) = fixture();
        let pack = repo
            .load_index()
            .expect("index")
            .index
            .get(&blob)
            .expect("indexed")
            .pack;
        let name = ObjectKind::DataPack.name(&pack.to_hex());
        backend.delete(&name).expect("delete");
        let report = run(&repo, ReadData::None, 1);
        assert_eq!(report.broken_snapshots.len(), 1);
        assert_eq!(report.broken_snapshots[0].id, snapshot2);
        assert!(report.unreferenced_damage.is_empty(), "{report:?}");
        assert_ne!(snapshot, snapshot2);
    }

    #[test]
    fn healthy_repository_passes() {
        let (_, repo, _, _) = fixture();
        for read_data in [false, true] {
            let report = check(
                &repo,
                CheckOptions {
                    read_data: if read_data {
                        ReadData::All
                    } else {
                        ReadData::None
                    },
                    threads: 2,
                },
            )
            .expect("check");
            assert!(report.is_healthy(), "{report:?}");
            assert_eq!(report.snapshots, 1);
            assert_eq!(report.packs, 2);
            assert_eq!(report.packs_read, if read_data { 2 } else { 0 });
            assert_eq!(report.read_packs.len(), report.packs_read);
            assert_eq!(report.packs_unverified, if read_data { 0 } else { 2 });
            assert!(report.unreferenced_damage.is_empty());
        }
    }

    #[test]
    fn flipped_byte_in_a_data_pack_names_pack_and_snapshot() {
        let (backend, repo, snapshot, blob) = fixture();
        let index = repo.load_index().expect("index").index;
        let location = index.get(&blob).expect("indexed");
        let name = ObjectKind::DataPack.name(&location.pack.to_hex());
        backend.corrupt(&name, |bytes| bytes[location.offset as usize + 40] ^= 0x10);
        let structural = check(&repo, CheckOptions::default()).expect("check");
        assert!(
            structural.is_healthy(),
            "a blob flip is only visible when reading data"
        );
        let report = check(
            &repo,
            CheckOptions {
                read_data: ReadData::All,
                threads: 1,
            },
        )
        .expect("check");
        assert!(!report.is_healthy());
        assert!(report.errors.iter().any(|p| p.object == name), "{report:?}");
        assert_eq!(report.broken_snapshots.len(), 1);
        assert_eq!(report.broken_snapshots[0].id, snapshot);
        assert!(report.broken_snapshots[0].reasons[0].contains(&name));
    }

    #[test]
    fn missing_pack_index_and_snapshot_damage_are_reported() {
        let (backend, repo, snapshot, blob) = fixture();
        let index = repo.load_index().expect("index").index;
        let pack = index.get(&blob).expect("indexed").pack;
        let name = ObjectKind::DataPack.name(&pack.to_hex());
        backend.delete(&name).expect("delete");
        let report = check(&repo, CheckOptions::default()).expect("check");
        assert!(
            report
                .errors
                .iter()
                .any(|p| p.object == name && p.message.contains("missing"))
        );
        assert_eq!(report.broken_snapshots[0].id, snapshot);

        let snapshot_name = ObjectKind::Snapshot.name(&snapshot.to_hex());
        backend.corrupt(&snapshot_name, |bytes| bytes[50] ^= 1);
        let report = check(&repo, CheckOptions::default()).expect("check");
        assert!(report.errors.iter().any(|p| p.object == snapshot_name));

        let segment = repo.list_index_ids().expect("ids")[0];
        let segment_name = ObjectKind::Index.name(&segment.to_hex());
        backend.corrupt(&segment_name, |bytes| bytes[60] ^= 1);
        let report = check(&repo, CheckOptions::default()).expect("check");
        assert!(report.errors.iter().any(|p| p.object == segment_name));
    }

    /// Damage that only the index and the trees show: an index entry with a wrong offset
    /// (a segment rewritten with the pack otherwise intact), a snapshot whose root tree is
    /// not stored, and a tree whose file's data blob is not indexed. Each is an error or a
    /// broken snapshot without reading any data.
    #[test]
    fn wrong_index_offset_missing_tree_and_missing_content_are_reported() {
        let (backend, repo, snapshot, blob) = fixture();
        let segment_id = repo.list_index_ids().expect("ids")[0];
        let mut segment = repo.load_index_segment(&segment_id).expect("segment");
        let pack = segment
            .packs
            .iter_mut()
            .find(|p| p.blobs.iter().any(|b| b.id == blob))
            .expect("the data pack");
        let pack_name = ObjectKind::DataPack.name(&pack.id.to_hex());
        for entry in &mut pack.blobs {
            if entry.id == blob {
                entry.offset += 1;
            }
        }
        let session = repo.new_session();
        repo.write_index_segments(segment.packs, &session)
            .expect("write");
        backend
            .delete(&ObjectKind::Index.name(&segment_id.to_hex()))
            .expect("delete the old segment");
        let report = run(&repo, ReadData::None, 1);
        assert!(
            report
                .errors
                .iter()
                .any(|p| p.object == pack_name && p.message.contains("disagrees")),
            "{report:?}"
        );
        assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
        assert_eq!(report.broken_snapshots[0].id, snapshot);

        // A snapshot of a tree that was never stored.
        let (_, repo, _, _) = fixture();
        let session = repo.new_session();
        let ghost = BlobId::from_bytes([0x5a; 32]);
        let orphan = repo
            .save_snapshot(&session, &Snapshot::of_tree_for_tests(ghost))
            .expect("snapshot");
        let report = run(&repo, ReadData::None, 1);
        assert!(!report.is_healthy());
        assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
        assert_eq!(report.broken_snapshots[0].id, orphan);
        assert!(report.broken_snapshots[0].reasons[0].contains("not in the index"));

        // A stored tree whose file names a data blob no pack holds.
        let (_, repo, _, _) = fixture();
        let empty = Index::new();
        let mut writer = repo.blob_writer(&empty);
        let tree = Tree::new(vec![Entry {
            name: b"lost".to_vec(),
            meta: Metadata::default(),
            node: Node::File {
                extents: vec![Extent::Chunk {
                    id: BlobId::from_bytes([0x77; 32]),
                    length: 5,
                }],
            },
        }])
        .expect("tree");
        let (tree_id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("tree");
        let session = writer.session().clone();
        writer.finish().expect("finish");
        let lacking = repo
            .save_snapshot(&session, &Snapshot::of_tree_for_tests(tree_id))
            .expect("snapshot");
        let report = run(&repo, ReadData::All, 1);
        assert_eq!(report.broken_snapshots.len(), 1, "{report:?}");
        assert_eq!(report.broken_snapshots[0].id, lacking);
        assert!(report.broken_snapshots[0].reasons[0].contains("not in the index"));
    }

    #[test]
    fn truncated_pack_is_caught_structurally() {
        let (backend, repo, _, blob) = fixture();
        let index = repo.load_index().expect("index").index;
        let pack = index.get(&blob).expect("indexed").pack;
        let name = ObjectKind::DataPack.name(&pack.to_hex());
        backend.corrupt(&name, |bytes| bytes.truncate(bytes.len() - 7));
        let report = check(&repo, CheckOptions::default()).expect("check");
        assert!(report.errors.iter().any(|p| p.object == name), "{report:?}");
        assert!(!report.broken_snapshots.is_empty());
    }
}
