//! Building an [`Index`] from whole index segments.
//!
//! Inserting blob by blob looks every id up before adding it (to keep the first location of
//! a blob stored twice), and with millions of blobs each lookup misses the CPU caches. The
//! loader instead appends every record to one array in the order the segments list them,
//! sorts it once (stably: a blob's locations stay in the order they were read) and resolves
//! blobs stored more than once in that sorted pass, as [`Index::insert`] would have, one by
//! one in the same order.

use super::lookup::Index;
use super::records::{Record, TREE_BIT, WIDE_OFFSET, key_of};
use super::segment::IndexSegment;
use crate::blob::BlobKind;
use crate::index::BlobLocation;

/// Collects index segments, then gives the [`Index`] they make (the same one adding their
/// blobs one by one with [`Index::insert`] would give).
#[derive(Debug, Default)]
pub struct IndexLoader {
    index: Index,
    /// Records not yet in the index, in the order they were read.
    pending: Vec<Record>,
}

impl IndexLoader {
    /// A loader with nothing loaded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every pack and blob of a segment.
    pub fn add_segment(&mut self, segment: &IndexSegment) {
        for pack in &segment.packs {
            let slot = self.index.list_pack(pack);
            for blob in &pack.blobs {
                let location = blob.location_in(pack.id);
                match slot.and_then(|slot| plain_record(blob.id.as_bytes(), slot, &location)) {
                    Some(record) => self.pending.push(record),
                    None => {
                        // An offset past 4 GiB or a pack past the table's slots (neither
                        // ever written by bunker): everything read before it goes in
                        // first, so that it is resolved in its place.
                        self.settle();
                        self.index.insert(blob.id, location);
                    }
                }
            }
        }
    }

    /// The index of every segment added.
    pub fn finish(mut self) -> Index {
        self.settle();
        self.index.compact();
        self.index
    }

    fn settle(&mut self) {
        if !self.pending.is_empty() {
            self.index.absorb(std::mem::take(&mut self.pending));
        }
    }
}

/// The record of a location whose offset fits a record and whose pack has `slot`.
fn plain_record(id: &[u8; 32], slot: u32, location: &BlobLocation) -> Option<Record> {
    let offset = u32::try_from(location.offset)
        .ok()
        .filter(|offset| *offset != WIDE_OFFSET)?;
    let kind = match location.kind {
        BlobKind::Tree => TREE_BIT,
        BlobKind::Data => 0,
    };
    Some(Record {
        key: key_of(id),
        pack: slot | kind,
        offset,
        length: location.length,
        raw_length: location.raw_length,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::id::{BlobId, PackId};
    use crate::index::IndexedPack;
    use crate::pack::PackEntry;

    /// `(blob, pack, offset, tree)`: offsets past 4 GiB among them.
    fn entry() -> impl Strategy<Value = (u8, u8, u64, bool)> {
        (
            0u8..24,
            0u8..6,
            prop::sample::select(vec![40u64, 900, 5 << 30]),
            any::<bool>(),
        )
    }

    /// A segment per inner list: `(blob, pack, offset, tree)` entries, grouped into packs
    /// as they come (a new pack entry whenever the pack changes).
    fn segments(lists: &[Vec<(u8, u8, u64, bool)>]) -> Vec<IndexSegment> {
        lists
            .iter()
            .map(|entries| {
                let mut segment = IndexSegment::default();
                for &(blob, pack, offset, tree) in entries {
                    let kind = if tree { BlobKind::Tree } else { BlobKind::Data };
                    let id = PackId::from_bytes([pack; 32]);
                    if segment.packs.last().is_none_or(|last| last.id != id) {
                        segment.packs.push(IndexedPack {
                            id,
                            kind,
                            blobs: Vec::new(),
                        });
                    }
                    if let Some(last) = segment.packs.last_mut() {
                        last.blobs.push(PackEntry {
                            id: BlobId::from_bytes([blob; 32]),
                            kind,
                            offset,
                            length: u32::from(blob) + 100,
                            raw_length: u32::from(pack) + 7,
                        });
                    }
                }
                segment
            })
            .collect()
    }

    /// Every blob, pack and counter the two indexes hold, as comparable values.
    fn summary(index: &Index, blobs: u8) -> impl PartialEq + std::fmt::Debug {
        let located: Vec<_> = (0..=blobs)
            .map(|blob| index.get(&BlobId::from_bytes([blob; 32])))
            .collect();
        let mut packs: Vec<_> = index.packs().iter().map(|(id, v)| (*id, v)).collect();
        packs.sort_by_key(|(id, _)| *id);
        (located, packs, index.len(), index.duplicate_count())
    }

    proptest! {
        /// Loading gives the index that inserting blob by blob gives: first locations,
        /// duplicate counts, packs, and the fallbacks `retain_packs` finds, with offsets
        /// past 4 GiB mixed in.
        #[test]
        fn loading_equals_inserting_one_by_one(
            lists in prop::collection::vec(prop::collection::vec(entry(), 0..30), 0..5),
            lost in 0u8..6,
        ) {
            let segments = segments(&lists);
            let mut loader = IndexLoader::new();
            let mut one_by_one = Index::new();
            for segment in &segments {
                loader.add_segment(segment);
                for pack in &segment.packs {
                    one_by_one.list_pack(pack);
                    for blob in &pack.blobs {
                        one_by_one.insert(blob.id, blob.location_in(pack.id));
                    }
                }
            }
            let mut loaded = loader.finish();
            one_by_one.compact();
            prop_assert_eq!(summary(&loaded, 24), summary(&one_by_one, 24));
            let lost = PackId::from_bytes([lost; 32]);
            prop_assert_eq!(
                loaded.retain_packs(|pack| *pack != lost),
                one_by_one.retain_packs(|pack| *pack != lost)
            );
            prop_assert_eq!(summary(&loaded, 24), summary(&one_by_one, 24));
        }
    }

    #[test]
    fn a_blob_listed_twice_keeps_its_first_location() {
        let segments = segments(&[
            vec![(1, 1, 40, false), (2, 1, 900, false)],
            vec![(2, 2, 40, false), (1, 2, 900, false), (1, 1, 40, false)],
        ]);
        let mut loader = IndexLoader::new();
        for segment in &segments {
            loader.add_segment(segment);
        }
        let mut index = loader.finish();
        let first = |blob: u8, pack: u8, offset| BlobLocation {
            pack: PackId::from_bytes([pack; 32]),
            kind: BlobKind::Data,
            offset,
            length: u32::from(blob) + 100,
            raw_length: u32::from(pack) + 7,
        };
        assert_eq!(index.len(), 2);
        assert_eq!(index.duplicate_count(), 3);
        assert_eq!(
            index.get(&BlobId::from_bytes([1; 32])),
            Some(first(1, 1, 40))
        );
        assert_eq!(
            index.get(&BlobId::from_bytes([2; 32])),
            Some(first(2, 1, 900))
        );
        // Pack 1 lost: both fall back to their copies in pack 2.
        assert_eq!(index.retain_packs(|pack| pack.as_bytes()[0] != 1), 0);
        assert_eq!(
            index.get(&BlobId::from_bytes([1; 32])),
            Some(first(1, 2, 900))
        );
        assert_eq!(
            index.get(&BlobId::from_bytes([2; 32])),
            Some(first(2, 2, 40))
        );
    }
}
