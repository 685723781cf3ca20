//! The in-memory index: blob id to location, in 32 bytes per blob.
//!
//! # Layout
//!
//! Every blob is one fixed-width [`Record`](super::records) of 32 bytes:
//!
//! | bytes | field                                                                    |
//! |-------|--------------------------------------------------------------------------|
//! | 16    | the first 16 bytes of the blob id (the *key*)                            |
//! | 4     | pack slot (31 bits, a number for the pack id) and the tree/data kind bit |
//! | 4     | offset in the pack (`u32`; a larger one is kept in a side table)         |
//! | 4     | sealed length                                                            |
//! | 4     | plaintext length                                                         |
//!
//! Records sit in one array sorted by key, with a directory of `u32` positions on the
//! key's top bits (one bucket per ~8 records: 0.5 bytes per blob); a lookup reads the
//! two directory entries and binary-searches the ~8 records of one bucket. Loading
//! ([`IndexLoader`](super::IndexLoader)) sorts every segment's records into that array at
//! once; records added after loading go to a hash-map overlay, merged into the array (in
//! place, from the back) once it holds an eighth of it. Packs are interned in a
//! [`PackTable`]: 40 bytes plus ~7 bytes of hash table per pack, about 3 bytes per blob
//! with 16 MiB packs of ~1 MiB chunks. Total: 32 + 0.5 + pack table ≈ 36 bytes per blob
//! (measured: docs/PERFORMANCE.md, "Index memory").
//!
//! # Why 16 bytes of the id are enough
//!
//! Blob ids are keyed BLAKE3 hashes, uniformly distributed and not choosable without the
//! repository's key. A lookup of an id that is not in the index wrongly matches a stored
//! one only if their first 128 bits agree: with `n` blobs indexed, probability `n / 2^128`
//! per lookup, about `3 * 10^-32` for ten million blobs; a lifetime of 10^15 lookups in a
//! repository of 10^9 blobs stays below `3 * 10^-15`. Even then nothing is silently
//! wrong on read: [`Repository::read_blob`](crate::Repository::read_blob) re-hashes every
//! blob against the full id it was asked for and fails with `Corrupt`. (A writer that took
//! such a false match for a duplicate would leave a snapshot that fails to restore that
//! one blob, with that error.) Because the index keeps keys, not ids, it cannot list the
//! full ids of its blobs: code that needs them (`check`, `prune`) reads the segments.

use std::collections::HashMap;

use super::packs::PackTable;
use super::records::{Key, REMOVED, Record, Records, TREE_BIT, WIDE_OFFSET, key_of};
use super::segment::IndexedPack;
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
///
/// Blobs are matched on the first 16 bytes of their id (see the module documentation for
/// why that is safe and what it costs: 32 bytes per blob plus the pack table).
#[derive(Debug, Default, Clone)]
pub struct Index {
    records: Records,
    packs: PackTable,
    live: usize,
    duplicates: u64,
    /// Further distinct locations of blobs stored more than once (rare, so kept apart to
    /// keep the common record small).
    alternates: HashMap<Key, Vec<BlobLocation>>,
    /// Blobs dropped by [`Index::retain_packs`] because every pack holding them is gone,
    /// with the pack that held them first: so a reader can name what is missing.
    lost: HashMap<Key, BlobLocation>,
    /// Offsets that do not fit in a record's `u32` (packs over 4 GiB; never written by
    /// bunker, whose packs close at 1 GiB plus one blob).
    wide_offsets: HashMap<Key, u64>,
    /// Locations in packs past the pack table's two billion slots (never in practice).
    overflow: HashMap<Key, BlobLocation>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Interns a segment's pack and marks it listed, with its kind and blob count; returns
    /// its slot (`None` past the pack table's two billion slots).
    pub(super) fn list_pack(&mut self, pack: &IndexedPack) -> Option<u32> {
        let slot = self.packs.intern(&pack.id)?;
        let count = u32::try_from(pack.blobs.len()).unwrap_or(u32::MAX);
        self.packs.list(slot, pack.kind, count);
        Some(slot)
    }

    /// Adds records read in this order (their packs interned), keeping each blob's first
    /// location as [`Index::insert`] would, one record after the other: sorts them stably
    /// and compares neighbours, instead of looking every one up.
    pub(super) fn absorb(&mut self, mut batch: Vec<Record>) {
        batch.sort_by_key(|record| record.key);
        // Only records of blobs indexed before this batch need a lookup.
        let look_up = self.live > 0 || !self.overflow.is_empty();
        let mut kept = 0usize;
        for at in 0..batch.len() {
            let record = batch[at];
            let first = match kept.checked_sub(1).map(|last| batch[last]) {
                Some(previous) if previous.key == record.key => Some(self.decode(&previous)),
                _ if look_up => self.location_of(record.key),
                _ => None,
            };
            match first {
                Some(first) => self.add_duplicate(record.key, first, self.decode(&record)),
                None => {
                    if !self.wide_offsets.is_empty() {
                        self.wide_offsets.remove(&record.key);
                    }
                    batch[kept] = record;
                    kept += 1;
                    self.live += 1;
                }
            }
        }
        batch.truncate(kept);
        self.records.merge_sorted(batch);
    }

    /// Merges recent additions into the sorted array and returns spare capacity. Loading
    /// calls it; lookups work without it.
    pub fn compact(&mut self) {
        self.records.compact();
        self.packs.compact();
        self.alternates.shrink_to_fit();
    }

    /// Records one blob's location (first location wins; later ones are kept as fallbacks).
    pub fn insert(&mut self, id: BlobId, location: BlobLocation) {
        let key = key_of(id.as_bytes());
        if let Some(first) = self.location_of(key) {
            self.add_duplicate(key, first, location);
            return;
        }
        self.live += 1;
        match self.encode(key, &location) {
            Some(record) => self.records.insert_new(record),
            None => {
                self.overflow.insert(key, location);
            }
        }
    }

    /// Counts a further location of a blob whose first one is `first`, and keeps it as a
    /// fallback when it is another place.
    fn add_duplicate(&mut self, key: Key, first: BlobLocation, location: BlobLocation) {
        self.duplicates += 1;
        if first != location {
            let others = self.alternates.entry(key).or_default();
            if !others.contains(&location) {
                others.push(location);
            }
        }
    }

    /// A record for a location, or `None` when its pack has no slot left.
    fn encode(&mut self, key: Key, location: &BlobLocation) -> Option<Record> {
        let slot = self.packs.intern(&location.pack)?;
        let offset = match u32::try_from(location.offset) {
            Ok(offset) if offset != WIDE_OFFSET => {
                self.wide_offsets.remove(&key);
                offset
            }
            _ => {
                self.wide_offsets.insert(key, location.offset);
                WIDE_OFFSET
            }
        };
        let kind = match location.kind {
            BlobKind::Tree => TREE_BIT,
            BlobKind::Data => 0,
        };
        Some(Record {
            key,
            pack: slot | kind,
            offset,
            length: location.length,
            raw_length: location.raw_length,
        })
    }

    fn decode(&self, record: &Record) -> BlobLocation {
        let offset = match record.offset {
            WIDE_OFFSET => self
                .wide_offsets
                .get(&record.key)
                .copied()
                .unwrap_or(u64::from(WIDE_OFFSET)),
            offset => u64::from(offset),
        };
        BlobLocation {
            pack: *self.packs.id(record.slot()),
            kind: if record.pack & TREE_BIT == 0 {
                BlobKind::Data
            } else {
                BlobKind::Tree
            },
            offset,
            length: record.length,
            raw_length: record.raw_length,
        }
    }

    fn location_of(&self, key: Key) -> Option<BlobLocation> {
        match self.records.get(key) {
            Some(record) => Some(self.decode(record)),
            None => self.overflow.get(&key).copied(),
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
        let before = self.live;
        let kept = self.packs.retain(&keep);
        let mut records = std::mem::take(&mut self.records);
        let mut alternates = std::mem::take(&mut self.alternates);
        records.retain_mut(|record| {
            let slot = record.slot();
            if slot == REMOVED || kept[slot as usize] {
                return true;
            }
            let key = record.key;
            let first = self.decode(record);
            let fallback = alternates.get_mut(&key).and_then(|others| {
                others.retain(|other| keep(&other.pack));
                (!others.is_empty()).then(|| others.remove(0))
            });
            let replaced = fallback.and_then(|location| self.encode(key, &location));
            match replaced {
                Some(replacement) => {
                    *record = replacement;
                    true
                }
                None => {
                    self.lost.insert(key, first);
                    self.wide_offsets.remove(&key);
                    self.live -= 1;
                    false
                }
            }
        });
        self.overflow.retain(|key, location| {
            let kept = keep(&location.pack);
            if !kept {
                self.lost.insert(*key, *location);
                self.live -= 1;
            }
            kept
        });
        alternates.retain(|key, others| {
            others.retain(|other| keep(&other.pack));
            !others.is_empty() && records.get(*key).is_some()
        });
        self.records = records;
        self.alternates = alternates;
        before - self.live
    }

    /// Where a blob was before [`Index::retain_packs`] dropped it for lack of a stored pack.
    pub fn lost_location(&self, id: &BlobId) -> Option<&BlobLocation> {
        self.lost.get(&key_of(id.as_bytes()))
    }

    /// Forgets a blob (every location of it). Returns its first location.
    pub fn remove(&mut self, id: &BlobId) -> Option<BlobLocation> {
        let key = key_of(id.as_bytes());
        self.alternates.remove(&key);
        let location = match self.records.remove(key) {
            Some(record) => Some(self.decode(&record)),
            None => self.overflow.remove(&key),
        };
        if location.is_some() {
            self.live -= 1;
            self.wide_offsets.remove(&key);
        }
        location
    }

    /// The location of a blob.
    pub fn get(&self, id: &BlobId) -> Option<BlobLocation> {
        self.location_of(key_of(id.as_bytes()))
    }

    /// True when the blob is indexed.
    pub fn contains(&self, id: &BlobId) -> bool {
        let key = key_of(id.as_bytes());
        self.records.get(key).is_some() || self.overflow.contains_key(&key)
    }

    /// Number of distinct blobs.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no blob is indexed.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Every indexed pack with its blob kind and the number of blobs the index lists in it.
    pub fn packs(&self) -> &PackTable {
        &self.packs
    }

    /// Every blob's location, in no particular order (the index keeps no full blob ids).
    pub fn locations(&self) -> impl Iterator<Item = BlobLocation> + '_ {
        self.records
            .iter()
            .map(|record| self.decode(record))
            .chain(self.overflow.values().copied())
    }

    /// How many blob entries were seen again after their first location (while loading).
    pub fn duplicate_count(&self) -> u64 {
        self.duplicates
    }

    /// Heap bytes the index holds (capacities of its arrays and tables).
    pub fn heap_bytes(&self) -> usize {
        let location = std::mem::size_of::<(Key, BlobLocation)>() + 1;
        self.records.heap_bytes()
            + self.packs.heap_bytes()
            + (self.lost.capacity() + self.overflow.capacity()) * location
            + self.alternates.capacity() * (std::mem::size_of::<(Key, Vec<BlobLocation>)>() + 1)
            + self
                .alternates
                .values()
                .map(|others| others.capacity() * std::mem::size_of::<BlobLocation>())
                .sum::<usize>()
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

    /// A uniformly spread id (SplitMix64), as keyed hashes are.
    fn spread_id(n: u64) -> BlobId {
        let mut bytes = [0u8; 32];
        let mut state = n;
        for part in bytes.chunks_exact_mut(8) {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            part.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        BlobId::from_bytes(bytes)
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
        assert_eq!(index.get(&in_both), Some(location(9, 140)));

        let lost = PackId::from_bytes([9; 32]);
        let dropped = index.retain_packs(|pack| *pack != lost);
        assert_eq!(dropped, 1);
        assert!(!index.contains(&only_in_lost));
        assert_eq!(index.lost_location(&only_in_lost), Some(&location(9, 40)));
        assert_eq!(index.get(&in_both), Some(location(7, 40)));
        assert_eq!(index.get(&only_in_kept), Some(location(7, 140)));
        assert!(index.alternates.is_empty());

        assert_eq!(index.remove(&in_both), Some(location(7, 40)));
        assert!(!index.contains(&in_both));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn many_blobs_survive_merges_removals_and_compaction() {
        let mut index = Index::new();
        let count = 50_000u64;
        let at = |n: u64| BlobLocation {
            pack: PackId::from_bytes([(n % 200) as u8; 32]),
            kind: if n.is_multiple_of(3) {
                BlobKind::Tree
            } else {
                BlobKind::Data
            },
            offset: 40 + n * 1000,
            length: n as u32,
            raw_length: (n * 2) as u32,
        };
        for n in 0..count {
            index.insert(spread_id(n), at(n));
        }
        assert_eq!(index.len(), count as usize);
        for n in (0..count).step_by(7) {
            assert_eq!(index.remove(&spread_id(n)), Some(at(n)));
        }
        for n in (0..count).step_by(14) {
            index.insert(spread_id(n), at(n + 1));
        }
        index.compact();
        for n in 0..count {
            let expected = match (n % 7, n % 14) {
                (0, 0) => Some(at(n + 1)),
                (0, _) => None,
                _ => Some(at(n)),
            };
            assert_eq!(index.get(&spread_id(n)), expected, "blob {n}");
        }
        for n in count..count + 1000 {
            assert!(!index.contains(&spread_id(n)));
        }
        let expected_len = (0..count).filter(|n| n % 7 != 0 || n % 14 == 0).count();
        assert_eq!(index.len(), expected_len);
        assert_eq!(index.locations().count(), expected_len);
        // 32-byte records, the directory and 200 packs: well under 40 bytes per blob.
        assert!(
            index.heap_bytes() < 40 * expected_len,
            "{}",
            index.heap_bytes()
        );
    }

    #[test]
    fn offsets_past_four_gib_and_the_pack_table() {
        let mut index = Index::new();
        let far = BlobLocation {
            offset: 5 << 30,
            ..location(4, 0)
        };
        let edge = BlobLocation {
            offset: u64::from(u32::MAX),
            ..location(4, 0)
        };
        index.insert(BlobId::from_bytes([1; 32]), far);
        index.insert(BlobId::from_bytes([2; 32]), edge);
        index.compact();
        assert_eq!(index.get(&BlobId::from_bytes([1; 32])), Some(far));
        assert_eq!(index.get(&BlobId::from_bytes([2; 32])), Some(edge));
        // Interned by `insert`, but only segments list packs.
        assert!(index.packs().is_empty());
        index.list_pack(&IndexedPack {
            id: PackId::from_bytes([5; 32]),
            kind: BlobKind::Tree,
            blobs: Vec::new(),
        });
        assert_eq!(
            index.packs().get(&PackId::from_bytes([5; 32])),
            Some((BlobKind::Tree, 0))
        );
        assert_eq!(index.packs().len(), 1);
        index.retain_packs(|pack| pack.as_bytes()[0] != 5);
        assert!(index.packs().is_empty());
        assert_eq!(index.len(), 2);
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
            let mut reference: HashMap<BlobId, BlobLocation> = HashMap::new();
            for (blob, pack, offset) in &inserts {
                let id = BlobId::from_bytes([*blob; 32]);
                let at = location(*pack, *offset);
                index.insert(id, at);
                if keep(&at.pack) {
                    reference.entry(id).or_insert(at);
                }
            }
            let before = index.len();
            let dropped = index.retain_packs(keep);
            proptest::prop_assert_eq!(dropped, before - reference.len());
            proptest::prop_assert_eq!(index.len(), reference.len());
            for (id, at) in &reference {
                proptest::prop_assert_eq!(index.get(id), Some(*at));
            }
        }
    }
}
