//! Integrity checks: structure (every snapshot's trees and blobs are indexed, every indexed
//! pack exists and its trailer agrees with the index) and, optionally, every byte of data
//! (each pack re-hashed against its name, each blob authenticated and re-hashed).
//!
//! Problems are collected, not thrown: the report names every damaged object and the
//! snapshots it breaks.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use crate::blob::BlobKind;
use crate::error::{Error, Result};
use crate::id::{BlobId, KeySlotId, PackId, SnapshotId};
use crate::index::BlobLocation;
use crate::object::{ObjectKind, SESSION_HEADER_LEN, verify_content_hash};
use crate::pack::{PackEntry, parse_pack, trailer_location};
use crate::repository::Repository;
use crate::tree::{Extent, Node};

/// What to check.
#[derive(Debug, Clone, Copy, Default)]
pub struct CheckOptions {
    /// Read every pack in full, authenticate and re-hash every blob.
    pub read_data: bool,
    /// Threads reading packs (0 = number of CPUs, at most 8).
    pub threads: usize,
}

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
    /// Bytes read and verified.
    pub bytes_read: u64,
    /// Damage found.
    pub errors: Vec<Problem>,
    /// Harmless findings (e.g. packs an interrupted backup left unindexed).
    pub warnings: Vec<Problem>,
    /// Snapshots that the damage breaks.
    pub broken_snapshots: Vec<BrokenSnapshot>,
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
    let mut report = CheckReport::default();
    check_key_slots(repo, &mut report)?;

    let loaded = repo.load_index()?;
    report.index_segments = loaded.segments.len();
    for (id, error) in &loaded.damaged {
        report.error(ObjectKind::Index.name(&id.to_hex()), error_message(error));
    }
    let index = loaded.index;
    report.blobs = index.len();
    report.packs = index.packs().len();

    // Blobs per pack, as the index says.
    let mut by_pack: HashMap<PackId, Vec<(BlobId, BlobLocation)>> = HashMap::new();
    for (id, location) in index.iter() {
        by_pack
            .entry(location.pack)
            .or_default()
            .push((*id, *location));
    }

    let mut stored: HashMap<PackId, (ObjectKind, u64)> = HashMap::new();
    for kind in [ObjectKind::DataPack, ObjectKind::TreePack] {
        for meta in repo.backend().list(kind.prefix())? {
            match meta
                .name
                .rsplit('/')
                .next()
                .and_then(|hex| hex.parse::<PackId>().ok())
            {
                Some(id) if kind.name(&id.to_hex()) == meta.name => {
                    stored.insert(id, (kind, meta.size));
                }
                _ => report.warnings.push(Problem {
                    object: meta.name.clone(),
                    message: "not a pack name; ignored".into(),
                }),
            }
        }
    }

    let mut bad_blobs: HashMap<BlobId, String> = HashMap::new();
    let mut packs_to_read = Vec::new();
    for (pack, (kind, _)) in index.packs() {
        let name = crate::pack::pack_kind(*kind).name(&pack.to_hex());
        if stored.contains_key(pack) {
            packs_to_read.push(*pack);
        } else {
            report.error(&name, "pack is in the index but missing from storage");
            for (blob, _) in by_pack.get(pack).into_iter().flatten() {
                bad_blobs.insert(*blob, format!("{name} is missing"));
            }
        }
    }
    for (pack, (kind, _)) in &stored {
        if !index.packs().contains_key(pack) {
            report.warnings.push(Problem {
                object: kind.name(&pack.to_hex()),
                message: if loaded.damaged.is_empty() {
                    "pack is not indexed (left by an interrupted backup)".into()
                } else {
                    "pack is not indexed (left by an interrupted backup, or listed only in a damaged index segment)".into()
                },
            });
        }
    }

    packs_to_read.sort();
    let outcomes = check_packs(repo, &packs_to_read, &by_pack, &stored, options);
    for outcome in outcomes {
        report.bytes_read += outcome.bytes_read;
        if outcome.fully_read {
            report.packs_read += 1;
        }
        for problem in outcome.problems {
            report.errors.push(problem);
        }
        bad_blobs.extend(outcome.bad_blobs);
    }

    let mut walker = TreeWalker {
        repo,
        index: &index,
        bad_blobs: &bad_blobs,
        memo: HashMap::new(),
    };
    let mut snapshot_ids = repo.list_snapshot_ids()?;
    snapshot_ids.sort();
    for id in snapshot_ids {
        report.snapshots += 1;
        let name = ObjectKind::Snapshot.name(&id.to_hex());
        let snapshot = match repo.load_snapshot(&id) {
            Ok(snapshot) => snapshot,
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
        if !reasons.is_empty() {
            report.broken_snapshots.push(BrokenSnapshot {
                id,
                reasons: reasons.iter().take(MAX_REASONS).cloned().collect(),
            });
        }
    }
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
    Ok(report)
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

struct PackOutcome {
    problems: Vec<Problem>,
    bad_blobs: Vec<(BlobId, String)>,
    bytes_read: u64,
    fully_read: bool,
}

fn check_packs(
    repo: &Repository,
    packs: &[PackId],
    by_pack: &HashMap<PackId, Vec<(BlobId, BlobLocation)>>,
    stored: &HashMap<PackId, (ObjectKind, u64)>,
    options: CheckOptions,
) -> Vec<PackOutcome> {
    let threads = match options.threads {
        0 => std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(8),
        n => n,
    };
    let next = Mutex::new(0usize);
    let outcomes = Mutex::new(Vec::with_capacity(packs.len()));
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut next = next.lock().unwrap_or_else(|p| p.into_inner());
                        let i = *next;
                        *next += 1;
                        i
                    };
                    let Some(pack) = packs.get(i) else { break };
                    let Some(&(kind, size)) = stored.get(pack) else {
                        continue;
                    };
                    let expected = by_pack.get(pack).map(Vec::as_slice).unwrap_or_default();
                    let outcome =
                        check_one_pack(repo, *pack, kind, size, expected, options.read_data);
                    outcomes
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(outcome);
                }
            });
        }
    });
    outcomes.into_inner().unwrap_or_else(|p| p.into_inner())
}

fn check_one_pack(
    repo: &Repository,
    pack: PackId,
    kind: ObjectKind,
    size: u64,
    expected: &[(BlobId, BlobLocation)],
    read_data: bool,
) -> PackOutcome {
    let name = kind.name(&pack.to_hex());
    let mut outcome = PackOutcome {
        problems: Vec::new(),
        bad_blobs: Vec::new(),
        bytes_read: 0,
        fully_read: false,
    };
    let fail_all = |outcome: &mut PackOutcome, message: String| {
        outcome.problems.push(Problem {
            object: name.clone(),
            message: message.clone(),
        });
        for (blob, _) in expected {
            outcome
                .bad_blobs
                .push((*blob, format!("{name}: {message}")));
        }
    };
    let trailer = if read_data {
        let bytes = match repo.backend().get(&name) {
            Ok(bytes) => bytes,
            Err(e) => {
                fail_all(&mut outcome, e.to_string());
                return outcome;
            }
        };
        outcome.bytes_read = bytes.len() as u64;
        outcome.fully_read = true;
        if let Err(e) = verify_content_hash(&bytes, pack.as_bytes(), &name) {
            // Keep going: the trailer and blobs tell which blobs are still intact.
            outcome.problems.push(Problem {
                object: name.clone(),
                message: error_message(&e),
            });
        }
        match parse_pack(&bytes, repo.key(), &name) {
            Ok(trailer) => {
                for entry in &trailer.entries {
                    let location = BlobLocation {
                        pack,
                        kind: entry.kind,
                        offset: entry.offset,
                        length: entry.length,
                        raw_length: entry.raw_length,
                    };
                    let sealed = &bytes[entry.offset as usize..][..entry.length as usize];
                    if let Err(e) = repo.open_blob_bytes(&entry.id, &location, sealed) {
                        outcome.problems.push(Problem {
                            object: name.clone(),
                            message: format!(
                                "{} blob {}: {}",
                                entry.kind.name(),
                                entry.id,
                                error_message(&e)
                            ),
                        });
                        outcome.bad_blobs.push((
                            entry.id,
                            format!(
                                "{} blob {} in {name} is damaged",
                                entry.kind.name(),
                                entry.id
                            ),
                        ));
                    }
                }
                Ok(trailer.entries)
            }
            Err(e) => Err(e),
        }
    } else {
        read_trailer(repo, &name, size)
    };
    match trailer {
        Ok(entries) => compare_with_index(&name, pack, &entries, expected, &mut outcome),
        Err(e) => fail_all(&mut outcome, error_message(&e)),
    }
    outcome
}

fn error_message(e: &Error) -> String {
    match e {
        Error::Corrupt { reason, .. } => reason.clone(),
        Error::Unsupported { what, .. } => format!("unsupported: {what}"),
        Error::NotFound { .. } => "not found".to_owned(),
        other => other.to_string(),
    }
}

fn read_trailer(repo: &Repository, name: &str, size: u64) -> Result<Vec<PackEntry>> {
    let backend = repo.backend();
    if size < SESSION_HEADER_LEN as u64 + 4 {
        return Err(Error::corrupt(
            name,
            format!("pack of {size} bytes is truncated"),
        ));
    }
    let length_bytes = backend.get_range(name, size - 4, 4)?;
    let length_field: [u8; 4] = length_bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::corrupt(name, "short read of the trailer length"))?;
    let (offset, length) = trailer_location(size, length_field, name)?;
    let header = backend.get_range(name, 0, SESSION_HEADER_LEN as u64)?;
    let sealed = backend.get_range(name, offset, length)?;
    Ok(crate::pack::parse_trailer(&header, &sealed, offset, repo.key(), name)?.entries)
}

fn compare_with_index(
    name: &str,
    pack: PackId,
    entries: &[PackEntry],
    expected: &[(BlobId, BlobLocation)],
    outcome: &mut PackOutcome,
) {
    let in_trailer: HashMap<BlobId, &PackEntry> = entries.iter().map(|e| (e.id, e)).collect();
    for (blob, location) in expected {
        let agrees = in_trailer.get(blob).is_some_and(|entry| {
            entry.kind == location.kind
                && entry.offset == location.offset
                && entry.length == location.length
                && entry.raw_length == location.raw_length
                && location.pack == pack
        });
        if !agrees {
            outcome.problems.push(Problem {
                object: name.to_owned(),
                message: format!("index entry for blob {blob} disagrees with the pack trailer"),
            });
            outcome.bad_blobs.push((
                *blob,
                format!("index entry for blob {blob} in {name} is wrong"),
            ));
        }
    }
}

#[derive(Clone, Default)]
struct TreeDamage {
    /// What is wrong with the tree blob itself.
    own: Option<String>,
    /// Everything below it that is missing or damaged (capped).
    all: Vec<String>,
}

struct TreeWalker<'a> {
    repo: &'a Repository,
    index: &'a crate::index::Index,
    bad_blobs: &'a HashMap<BlobId, String>,
    memo: HashMap<BlobId, TreeDamage>,
}

impl TreeWalker<'_> {
    /// Damage reachable from tree `id` (empty when intact). Memoized: shared subtrees are
    /// read once.
    fn tree_damage(&mut self, id: &BlobId, depth: usize) -> Vec<String> {
        if let Some(done) = self.memo.get(id) {
            return done.all.clone();
        }
        let damage = self.compute(id, depth);
        let all = damage.all.clone();
        self.memo.insert(*id, damage);
        all
    }

    fn compute(&mut self, id: &BlobId, depth: usize) -> TreeDamage {
        let fail = |message: String| TreeDamage {
            own: Some(message.clone()),
            all: vec![format!("tree {id}: {message}")],
        };
        if depth > 4096 {
            return fail("trees nested deeper than 4096 levels".into());
        }
        if let Some(reason) = self.bad_blobs.get(id) {
            return fail(reason.clone());
        }
        match self.index.get(id) {
            None => return fail("not in the index".into()),
            Some(location) if location.kind != BlobKind::Tree => {
                return fail("indexed as a data blob".into());
            }
            Some(_) => {}
        }
        let tree = match self.repo.load_tree(self.index, id) {
            Ok(tree) => tree,
            Err(e) => return fail(error_message(&e)),
        };
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        for entry in tree.entries() {
            match &entry.node {
                Node::File { extents } => {
                    for extent in extents {
                        let Extent::Chunk { id: blob, .. } = extent else {
                            continue;
                        };
                        if !seen.insert(*blob) || all.len() >= MAX_REASONS {
                            continue;
                        }
                        let file = String::from_utf8_lossy(&entry.name);
                        if let Some(reason) = self.bad_blobs.get(blob) {
                            all.push(format!("file {file:?}: {reason}"));
                        } else if !self.index.contains(blob) {
                            all.push(format!(
                                "file {file:?}: data blob {blob} is not in the index"
                            ));
                        }
                    }
                }
                Node::Dir { subtree } => {
                    let below = self.tree_damage(subtree, depth + 1);
                    all.extend(
                        below
                            .into_iter()
                            .take(MAX_REASONS.saturating_sub(all.len())),
                    );
                }
                _ => {}
            }
        }
        TreeDamage { own: None, all }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::backend::{Backend, MemoryBackend};
    use crate::index::Index;
    use crate::keyslot::KdfParams;
    use crate::repository::InitOptions;
    use crate::snapshot::{Snapshot, Summary};
    use crate::tree::{Entry, Metadata, Timestamp, Tree};

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
        let snapshot = Snapshot {
            time: Timestamp::default(),
            host: "h".into(),
            username: "u".into(),
            paths: vec![],
            tags: vec![],
            parent: None,
            tree: tree_id,
            source_kind: Default::default(),
            consistency: Default::default(),
            consistency_detail: String::new(),
            excludes: vec![],
            summary: Summary::default(),
            errors: vec![],
            program_version: "t".into(),
        };
        let id = repo.save_snapshot(&session, &snapshot).expect("snapshot");
        (backend, repo, id, blob)
    }

    #[test]
    fn healthy_repository_passes() {
        let (_, repo, _, _) = fixture();
        for read_data in [false, true] {
            let report = check(
                &repo,
                CheckOptions {
                    read_data,
                    threads: 2,
                },
            )
            .expect("check");
            assert!(report.is_healthy(), "{report:?}");
            assert_eq!(report.snapshots, 1);
            assert_eq!(report.packs, 2);
            assert_eq!(report.packs_read, if read_data { 2 } else { 0 });
        }
    }

    #[test]
    fn flipped_byte_in_a_data_pack_names_pack_and_snapshot() {
        let (backend, repo, snapshot, blob) = fixture();
        let index = repo.load_index().expect("index").index;
        let location = *index.get(&blob).expect("indexed");
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
                read_data: true,
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
