//! Which blobs each indexed pack holds, as the index segments list them: what prune
//! decides on, in 48 bytes per blob.

use std::collections::HashMap;

use crate::blob::BlobKind;
use crate::id::{BlobId, PackId};
use crate::index::{BlobLocation, IndexSegment};

/// One blob of a pack (its kind is the pack's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PackBlob {
    pub(super) id: BlobId,
    pub(super) offset: u64,
    pub(super) length: u32,
    pub(super) raw_length: u32,
}

#[derive(Debug, Clone)]
struct Listed {
    kind: BlobKind,
    /// Range of the pack's blobs in [`PackContents::blobs`].
    start: usize,
    end: usize,
}

/// Every indexed pack's blob list, all in one array (no allocation per pack). A pack
/// listed by several segments (a prune stopped between writing a merged segment and
/// deleting the old ones) is the same pack: the first listing counts.
#[derive(Debug, Default)]
pub(super) struct PackContents {
    packs: HashMap<PackId, Listed>,
    blobs: Vec<PackBlob>,
}

impl PackContents {
    /// Adds the packs of a segment that no earlier segment listed.
    pub(super) fn add_segment(&mut self, segment: &IndexSegment) {
        for pack in &segment.packs {
            if self.packs.contains_key(&pack.id) {
                continue;
            }
            let start = self.blobs.len();
            self.blobs.extend(pack.blobs.iter().map(|blob| PackBlob {
                id: blob.id,
                offset: blob.offset,
                length: blob.length,
                raw_length: blob.raw_length,
            }));
            self.packs.insert(
                pack.id,
                Listed {
                    kind: pack.kind,
                    start,
                    end: self.blobs.len(),
                },
            );
        }
    }

    /// Gives spare capacity back.
    pub(super) fn compact(&mut self) {
        self.blobs.shrink_to_fit();
        self.packs.shrink_to_fit();
    }

    /// The blobs of a pack, in pack order.
    pub(super) fn get(&self, pack: &PackId) -> Option<&[PackBlob]> {
        self.packs
            .get(pack)
            .map(|listed| &self.blobs[listed.start..listed.end])
    }

    /// Every pack with its blobs.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&PackId, &[PackBlob])> {
        self.packs
            .iter()
            .map(|(pack, listed)| (pack, &self.blobs[listed.start..listed.end]))
    }

    /// Where a blob of `pack` is.
    pub(super) fn location(&self, pack: &PackId, blob: &PackBlob) -> BlobLocation {
        BlobLocation {
            pack: *pack,
            kind: self
                .packs
                .get(pack)
                .map_or(BlobKind::Data, |listed| listed.kind),
            offset: blob.offset,
            length: blob.length,
            raw_length: blob.raw_length,
        }
    }
}
