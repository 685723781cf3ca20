//! What snapshots hold and what they cost in the repository (`bunker stats`).
//!
//! A snapshot's files and bytes come from its summary: what a restore of it brings back.
//! What the snapshots cost is the unique blobs reachable from their trees, each counted
//! once however many files and snapshots share it, with its plaintext and stored lengths
//! from the index. Restore size over unique plaintext is what deduplication saves,
//! plaintext over stored what compression saves. The storage side lists every object.

use bunker_repo_format::gc::{self, Unreadable};
use bunker_repo_format::index::{BlobLocation, Index};
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::{BlobKind, Repository, Result, SnapshotId};

/// A number of blobs and their lengths.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlobTotals {
    /// Blobs.
    pub blobs: u64,
    /// Plaintext bytes (before compression).
    pub raw_bytes: u64,
    /// Stored bytes (compressed and sealed).
    pub stored_bytes: u64,
}

impl BlobTotals {
    fn add(&mut self, location: &BlobLocation) {
        self.blobs += 1;
        self.raw_bytes += u64::from(location.raw_length);
        self.stored_bytes += u64::from(location.length);
    }

    /// `self` less `other` (saturating: a blob of `other` that `self` lacks takes nothing).
    pub fn less(&self, other: &BlobTotals) -> BlobTotals {
        BlobTotals {
            blobs: self.blobs.saturating_sub(other.blobs),
            raw_bytes: self.raw_bytes.saturating_sub(other.raw_bytes),
            stored_bytes: self.stored_bytes.saturating_sub(other.stored_bytes),
        }
    }
}

/// What a set of snapshots holds and what it costs.
#[derive(Debug, Default)]
pub struct SnapshotStats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Regular files, summed over the snapshots (a file in two snapshots counts twice).
    pub files: u64,
    /// Bytes of file content a restore of every snapshot writes, summed likewise.
    pub restore_bytes: u64,
    /// Unique data blobs reachable from the snapshots.
    pub data: BlobTotals,
    /// Unique tree blobs reachable from the snapshots.
    pub trees: BlobTotals,
    /// Reachable blobs the index does not locate in a stored pack (damage that `check`
    /// names).
    pub missing: u64,
    /// Snapshots and trees that could not be read: what lies below them is not counted.
    pub unreadable: Vec<String>,
}

impl SnapshotStats {
    /// Restore size over unique plaintext data: how many times deduplication shrinks the
    /// snapshots (`None` without data).
    pub fn deduplication_ratio(&self) -> Option<f64> {
        ratio(self.restore_bytes, self.data.raw_bytes)
    }

    /// Plaintext over stored bytes of the unique data blobs (`None` without data).
    pub fn compression_ratio(&self) -> Option<f64> {
        ratio(self.data.raw_bytes, self.data.stored_bytes)
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Counts `snapshots`: their summaries, and the unique blobs reachable from them (each tree
/// read once). Unreadable snapshots and trees are named in the result, not errors;
/// storage errors are.
pub fn snapshot_stats(
    repo: &Repository,
    index: &Index,
    snapshots: &[(SnapshotId, Snapshot)],
) -> Result<SnapshotStats> {
    let mut stats = SnapshotStats {
        snapshots: snapshots.len(),
        ..SnapshotStats::default()
    };
    for (_, snapshot) in snapshots {
        stats.files += snapshot.summary.files;
        stats.restore_bytes += snapshot.summary.bytes;
    }
    let ids: Vec<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
    let mut unreadable = Vec::new();
    let reachable = gc::walk_reachable(
        repo,
        index,
        &ids,
        |_, _| {},
        |found| {
            match found {
                Unreadable::Snapshot { error, .. } | Unreadable::Tree { error, .. }
                    if !error.is_damage() =>
                {
                    return Err(error);
                }
                Unreadable::Snapshot { id, error } => {
                    unreadable.push(format!("snapshot {}: {error}", id.short()));
                }
                Unreadable::Tree {
                    snapshot,
                    tree,
                    error,
                } => unreadable.push(format!(
                    "snapshot {}: tree {}: {error}",
                    snapshot.short(),
                    tree.short()
                )),
            }
            Ok(())
        },
    )?;
    stats.unreadable = unreadable;
    for id in reachable.iter() {
        match index.get(id) {
            Some(location) if location.kind == BlobKind::Tree => stats.trees.add(&location),
            Some(location) => stats.data.add(&location),
            None => stats.missing += 1,
        }
    }
    Ok(stats)
}

/// Objects of one kind in storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectTotals {
    /// The kind.
    pub kind: ObjectKind,
    /// Objects.
    pub count: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// What the repository stores.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Objects per kind, in [`STORAGE_KINDS`] order.
    pub objects: Vec<ObjectTotals>,
    /// Every data blob the index locates.
    pub indexed_data: BlobTotals,
    /// Every tree blob the index locates.
    pub indexed_trees: BlobTotals,
    /// Blobs stored in more than one pack (each extra copy counted once).
    pub duplicate_blobs: u64,
}

impl StorageStats {
    /// Bytes of every object.
    pub fn total_bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }

    /// Number of objects.
    pub fn total_objects(&self) -> u64 {
        self.objects.iter().map(|o| o.count).sum()
    }
}

/// The kinds of object [`storage_stats`] counts: all but `config`, which is one object.
pub const STORAGE_KINDS: [ObjectKind; 9] = [
    ObjectKind::DataPack,
    ObjectKind::TreePack,
    ObjectKind::Index,
    ObjectKind::Snapshot,
    ObjectKind::KeySlot,
    ObjectKind::Audit,
    ObjectKind::Heartbeat,
    ObjectKind::GcPlan,
    ObjectKind::ForgetMarker,
];

/// Lists every object (one listing per kind) and sums the index's blobs.
pub fn storage_stats(repo: &Repository, index: &Index) -> Result<StorageStats> {
    let mut stats = StorageStats::default();
    for kind in STORAGE_KINDS {
        let listed = repo.backend().list(kind.prefix())?;
        stats.objects.push(ObjectTotals {
            kind,
            count: listed.len() as u64,
            bytes: listed.iter().map(|meta| meta.size).sum(),
        });
    }
    for location in index.locations() {
        match location.kind {
            BlobKind::Tree => stats.indexed_trees.add(&location),
            BlobKind::Data => stats.indexed_data.add(&location),
        }
    }
    stats.duplicate_blobs = index.duplicate_count();
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_a_denominator() {
        let stats = SnapshotStats {
            restore_bytes: 300,
            data: BlobTotals {
                blobs: 2,
                raw_bytes: 100,
                stored_bytes: 40,
            },
            ..SnapshotStats::default()
        };
        assert_eq!(stats.deduplication_ratio(), Some(3.0));
        assert_eq!(stats.compression_ratio(), Some(2.5));
        assert_eq!(SnapshotStats::default().deduplication_ratio(), None);
    }

    #[test]
    fn less_never_underflows() {
        let a = BlobTotals {
            blobs: 3,
            raw_bytes: 30,
            stored_bytes: 20,
        };
        let b = BlobTotals {
            blobs: 1,
            raw_bytes: 40,
            stored_bytes: 5,
        };
        assert_eq!(
            a.less(&b),
            BlobTotals {
                blobs: 2,
                raw_bytes: 0,
                stored_bytes: 15
            }
        );
    }
}
