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
/// A blob stored in several packs (two writers racing) keeps the first location seen; the
/// others are counted in [`Index::duplicate_count`].
#[derive(Debug, Default, Clone)]
pub struct Index {
    blobs: HashMap<BlobId, BlobLocation>,
    packs: HashMap<PackId, (BlobKind, u32)>,
    duplicates: u64,
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

    /// Records one blob's location (first location wins).
    pub fn insert(&mut self, id: BlobId, location: BlobLocation) {
        use std::collections::hash_map::Entry;
        match self.blobs.entry(id) {
            Entry::Occupied(_) => self.duplicates += 1,
            Entry::Vacant(slot) => {
                slot.insert(location);
            }
        }
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

    /// How many blob entries were seen again after their first location.
    pub fn duplicate_count(&self) -> u64 {
        self.duplicates
    }
}
