//! Fixed-width blob records: a sorted array with a bucket directory, and a small overlay
//! for records added since the last merge.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// The part of a blob id the index keeps: its first 16 bytes, big-endian (so the order
/// of keys is the order of ids).
pub(super) type Key = u128;

/// The key of a blob id.
pub(super) fn key_of(id: &[u8; 32]) -> Key {
    let mut first = [0u8; 16];
    first.copy_from_slice(&id[..16]);
    u128::from_be_bytes(first)
}

/// One blob: 32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) key: Key,
    /// Pack slot in the low 31 bits ([`REMOVED`] for a removed record); the top bit is
    /// set for tree blobs.
    pub(super) pack: u32,
    /// Offset in the pack; [`WIDE_OFFSET`] when it does not fit (kept aside).
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) raw_length: u32,
}

/// Top bit of [`Record::pack`]: the blob is a tree.
pub(super) const TREE_BIT: u32 = 1 << 31;
/// Pack slot of a removed record (left in place until the next merge).
pub(super) const REMOVED: u32 = TREE_BIT - 1;
/// Offset marking a record whose offset is kept in the index's side table.
pub(super) const WIDE_OFFSET: u32 = u32::MAX;

impl Record {
    pub(super) fn slot(&self) -> u32 {
        self.pack & !TREE_BIT
    }

    pub(super) fn is_removed(&self) -> bool {
        self.slot() == REMOVED
    }
}

/// Hashes a key by its low 64 bits: keys are prefixes of keyed BLAKE3 hashes, uniformly
/// spread and not choosable without the repository key, so no further mixing is needed.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, key: u128) {
        self.0 = key as u64;
    }
}

/// A hash map keyed by [`Key`]s.
pub(super) type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

/// Average records per directory bucket: the directory then costs 4 / 8 = 0.5 bytes per
/// blob, and a lookup searches about 8 records (two or three cache lines).
const BUCKET_TARGET: usize = 8;
/// The overlay is merged once it holds more than this many records or an eighth of the
/// sorted array, whichever is more.
const OVERLAY_MIN: usize = 4096;

/// Every record, sorted by key, plus recent ones in a hash map.
#[derive(Debug, Default, Clone)]
pub(super) struct Records {
    sorted: Vec<Record>,
    /// `directory[b]` is the first position whose key's top `bits` bits are `>= b`; one
    /// more entry holds the length.
    directory: Vec<u32>,
    bits: u32,
    removed_in_sorted: usize,
    overlay: KeyMap<Record>,
}

impl Records {
    fn bucket(&self, key: Key) -> usize {
        key.checked_shr(128 - self.bits).unwrap_or(0) as usize
    }

    /// Position of a key in the sorted array (live or removed).
    fn position(&self, key: Key) -> Option<usize> {
        if self.sorted.is_empty() {
            return None;
        }
        let bucket = self.bucket(key);
        let start = self.directory[bucket] as usize;
        let end = self.directory[bucket + 1] as usize;
        self.sorted[start..end]
            .binary_search_by(|record| record.key.cmp(&key))
            .ok()
            .map(|at| start + at)
    }

    /// The live record of a key.
    pub(super) fn get(&self, key: Key) -> Option<&Record> {
        if let Some(at) = self.position(key) {
            let record = &self.sorted[at];
            if !record.is_removed() {
                return Some(record);
            }
        }
        self.overlay.get(&key)
    }

    /// Adds a record whose key has no live record.
    pub(super) fn insert_new(&mut self, record: Record) {
        self.overlay.insert(record.key, record);
        if self.overlay.len() > OVERLAY_MIN.max(self.sorted.len() / 8) {
            self.merge();
        }
    }

    /// Removes the live record of a key; returns it.
    pub(super) fn remove(&mut self, key: Key) -> Option<Record> {
        if let Some(at) = self.position(key) {
            let record = self.sorted[at];
            if !record.is_removed() {
                self.sorted[at].pack = REMOVED;
                self.removed_in_sorted += 1;
                return Some(record);
            }
        }
        self.overlay.remove(&key)
    }

    /// Changes or drops every live record; `f` returns false to drop one.
    pub(super) fn retain_mut(&mut self, mut f: impl FnMut(&mut Record) -> bool) {
        self.merge();
        self.sorted.retain_mut(|record| f(record));
        self.rebuild_directory();
    }

    /// Every live record, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Record> {
        self.sorted
            .iter()
            .filter(|record| !record.is_removed())
            .chain(self.overlay.values())
    }

    /// Moves the overlay into the sorted array, drops removed records and rebuilds the
    /// directory. Merges in place from the back: no second copy of the array.
    pub(super) fn merge(&mut self) {
        if self.overlay.is_empty() && self.removed_in_sorted == 0 {
            return;
        }
        if self.removed_in_sorted > 0 {
            self.sorted.retain(|record| !record.is_removed());
            self.removed_in_sorted = 0;
        }
        let mut added: Vec<Record> = self.overlay.drain().map(|(_, record)| record).collect();
        self.overlay.shrink_to_fit();
        added.sort_unstable_by_key(|record| record.key);
        merge_from_back(&mut self.sorted, &added);
        self.rebuild_directory();
    }

    /// Adds records sorted by key, none of whose keys has a live record.
    pub(super) fn merge_sorted(&mut self, added: Vec<Record>) {
        self.merge();
        if self.sorted.is_empty() {
            // The whole index loaded at once: the records become the array.
            self.sorted = added;
        } else {
            merge_from_back(&mut self.sorted, &added);
        }
        self.rebuild_directory();
    }

    fn rebuild_directory(&mut self) {
        let target = (self.sorted.len() / BUCKET_TARGET).max(1);
        self.bits = target.ilog2().min(32);
        let buckets = 1usize << self.bits;
        self.directory.clear();
        self.directory.reserve_exact(buckets + 1);
        let mut at = 0usize;
        for bucket in 0..buckets {
            while at < self.sorted.len() && self.bucket(self.sorted[at].key) < bucket {
                at += 1;
            }
            self.directory.push(at as u32);
        }
        self.directory.push(self.sorted.len() as u32);
        self.directory.shrink_to_fit();
    }

    /// Merges and gives spare capacity back.
    pub(super) fn compact(&mut self) {
        self.merge();
        self.sorted.shrink_to_fit();
    }

    /// Heap bytes held (capacity, not just length).
    pub(super) fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<Record>()
            + self.directory.capacity() * std::mem::size_of::<u32>()
            + self.overlay.capacity() * (std::mem::size_of::<(Key, Record)>() + 1)
    }
}

/// Merges `added` (sorted by key) into `sorted` in place, from the back: `sorted` grows
/// by `added.len()` and no second copy of it is made.
fn merge_from_back(sorted: &mut Vec<Record>, added: &[Record]) {
    let old = sorted.len();
    if let Some(first) = added.first() {
        sorted.resize(old + added.len(), *first);
    }
    let (mut i, mut j, mut k) = (old, added.len(), sorted.len());
    while j > 0 {
        k -= 1;
        if i > 0 && sorted[i - 1].key > added[j - 1].key {
            sorted[k] = sorted[i - 1];
            i -= 1;
        } else {
            sorted[k] = added[j - 1];
            j -= 1;
        }
    }
}
