//! The in-memory index: blob id to location.

use std::collections::HashMap;

use super::segment::IndexSegment;
use crate::blob::BlobKind;
use crate::id::{BlobId, PackId};

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack holding it.
    pub pack: PackId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the sealed blob in the pack.
    pub offset: u64,
    /// Length of the sealed blob.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
}

/// Every blob the loaded index segments know, with one location each.
///
/// A blob stored in several packs (two writers racing, or a blob stored again after its
/// pack was lost) keeps the first location seen; the others are counted in
/// [`Index::duplicate_count`] and kept aside, so that [`Index::retain_packs`] can fall back
/// to one of them when the first location's pack is gone.
#[derive(Debug, Default, Clone)]
pub struct Index {
    blobs: HashMap<BlobId, BlobLocation>,
    packs: HashMap<PackId, (BlobKind, u32)>,
    duplicates: u64,
    /// Further distinct locations of blobs stored more than once (rare, so kept apart to
    /// keep the common entry small).
    alternates: HashMap<BlobId, Vec<BlobLocation>>,
    /// Blobs dropped by [`Index::retain_packs`] because every pack holding them is gone,
    /// with the pack that held them first: so a reader can name what is missing.
    lost: HashMap<BlobId, BlobLocation>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every pack and blob of a segment.
    pub fn add_segment(&mut self, segment: &IndexSegment) {
        for pack in &segment.packs {
            self.packs
                .insert(pack.id, (pack.kind, pack.blobs.len() as u32));
            for blob in &pack.blobs {
                self.insert(
                    blob.id,
                    BlobLocation {
                        pack: pack.id,
                        kind: blob.kind,
                        offset: blob.offset,
                        length: blob.length,
                        raw_length: blob.raw_length,
                    },
                );
            }
        }
    }

    /// Records one blob's location (first location wins; later ones are kept as fallbacks).
    pub fn insert(&mut self, id: BlobId, location: BlobLocation) {
        use std::collections::hash_map::Entry;
        match self.blobs.entry(id) {
            Entry::Occupied(first) => {
                self.duplicates += 1;
                if *first.get() != location {
                    let others = self.alternates.entry(id).or_default();
                    if !others.contains(&location) {
                        others.push(location);
                    }
                }
            }
            Entry::Vacant(slot) => {
                slot.insert(location);
            }
        }
    }

    /// Keeps only locations in packs for which `keep` is true, and forgets the other packs.
    ///
    /// A blob whose first location is dropped falls back to the earliest other location
    /// that is kept (the one loading only the kept packs would have chosen);
    /// a blob with none left is no longer in the index. Returns how many blobs were dropped.
    /// Writers call this with the packs that exist in storage, so a blob whose pack was lost
    /// is stored again instead of trusted.
    pub fn retain_packs(&mut self, keep: impl Fn(&PackId) -> bool) -> usize {
        self.packs.retain(|pack, _| keep(pack));
        let before = self.blobs.len();
        let alternates = &mut self.alternates;
        let lost = &mut self.lost;
        self.blobs.retain(|id, location| {
            if keep(&location.pack) {
                return true;
            }
            let Some(others) = alternates.get_mut(id) else {
                lost.insert(*id, *location);
                return false;
            };
            others.retain(|other| keep(&other.pack));
            if others.is_empty() {
                lost.insert(*id, *location);
                return false;
            }
            // The earliest location loaded that is kept, as if the dropped ones never were.
            *location = others.remove(0);
            true
        });
        self.alternates.retain(|id, others| {
            others.retain(|other| keep(&other.pack));
            !others.is_empty() && self.blobs.contains_key(id)
        });
        before - self.blobs.len()
    }

    /// Where a blob was before [`Index::retain_packs`] dropped it for lack of a stored pack.
    pub fn lost_location(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.lost.get(id)
    }

    /// Forgets a blob (every location of it). Returns its first location.
    pub fn remove(&mut self, id: &BlobId) -> Option<BlobLocation> {
        self.alternates.remove(id);
        self.blobs.remove(id)
    }

    /// The location of a blob.
    pub fn get(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.blobs.get(id)
    }

    /// True when the blob is indexed.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.blobs.contains_key(id)
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// True when no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.blobs.is_empty()
    }

    /// Every indexed pack with its blob kind and the number of blobs the index lists in it.
    pub fn packs(&self) -> &HashMap<PackId, (BlobKind, u32)> {
        &self.packs
    }

    /// Every blob and its location.
    pub fn iter(&self) -> impl Iterator<Item = (&BlobId, &BlobLocation)> {
        self.blobs.iter()
    }

    /// How many blob entries were seen again after their first location (while loading).
    pub fn duplicate_count(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(pack: u8, offset: u64) -> BlobLocation {
        BlobLocation {
            pack: PackId::from_bytes([pack; 32]),
            kind: BlobKind::Data,
            offset,
            length: 100,
            raw_length: 60,
        }
    }

    #[test]
    fn retain_packs_falls_back_to_a_surviving_copy() {
        let mut index = Index::new();
        let only_in_lost = BlobId::from_bytes([1; 32]);
        let in_both = BlobId::from_bytes([2; 32]);
        let only_in_kept = BlobId::from_bytes([3; 32]);
        index.insert(only_in_lost, location(9, 40));
        index.insert(in_both, location(9, 140));
        index.insert(in_both, location(9, 140)); // same place listed twice: no fallback
        index.insert(in_both, location(7, 40));
        index.insert(only_in_kept, location(7, 140));
        assert_eq!(index.duplicate_count(), 2);
        assert_eq!(index.get(&in_both), Some(&location(9, 140)));

        let lost = PackId::from_bytes([9; 32]);
        let dropped = index.retain_packs(|pack| *pack != lost);
        assert_eq!(dropped, 1);
        assert!(!index.contains(&only_in_lost));
        assert_eq!(index.get(&in_both), Some(&location(7, 40)));
        assert_eq!(index.get(&only_in_kept), Some(&location(7, 140)));
        assert!(index.alternates.is_empty());

        assert_eq!(index.remove(&in_both), Some(location(7, 40)));
        assert!(!index.contains(&in_both));
        assert_eq!(index.len(), 1);
    }

    proptest::proptest! {
        /// Retaining gives what loading only the kept packs' locations would have given.
        #[test]
        fn retain_packs_equals_loading_only_kept_packs(
            inserts in proptest::collection::vec((0u8..6, 0u8..5, 0u64..3), 0..40),
            kept in proptest::collection::vec(proptest::prelude::any::<bool>(), 5),
        ) {
            let keep = |pack: &PackId| kept[usize::from(pack.as_bytes()[0])];
            let mut index = Index::new();
            let mut reference = Index::new();
            for (blob, pack, offset) in &inserts {
                let id = BlobId::from_bytes([*blob; 32]);
                let at = location(*pack, *offset);
                index.insert(id, at);
                if keep(&at.pack) {
                    reference.insert(id, at);
                }
            }
            let before = index.len();
            let dropped = index.retain_packs(keep);
            proptest::prop_assert_eq!(dropped, before - reference.len());
            proptest::prop_assert_eq!(index.len(), reference.len());
            for (id, at) in reference.iter() {
                proptest::prop_assert_eq!(index.get(id), Some(at));
            }
        }
    }
}
