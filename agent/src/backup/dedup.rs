//! The dedup stage: decides, on the walking thread, which chunks are new.
//!
//! Every decision is made here, in walk order, before a chunk is handed to the parallel
//! stages: a chunk is claimed by the first file that produces it, so two files sharing a
//! chunk never both store it, however the later stages interleave.

use std::collections::HashSet;

use bunker_repo_format::index::{BlobIdSet, Index};
use bunker_repo_format::{BlobId, PackId};

/// What this session stores and reuses.
pub(super) struct Dedup<'a> {
    index: &'a Index,
    excluded: HashSet<PackId>,
    claimed: BlobIdSet,
    depends_on: HashSet<PackId>,
}

impl<'a> Dedup<'a> {
    /// Deduplicates against `index`, except blobs in `excluded` packs (condemned or lost).
    pub(super) fn new(index: &'a Index, excluded: HashSet<PackId>) -> Self {
        Self {
            index,
            excluded,
            claimed: BlobIdSet::new(),
            depends_on: HashSet::new(),
        }
    }

    /// True when the blob is stored already or claimed in this session. An existing blob's
    /// pack becomes a dependency of the snapshot.
    pub(super) fn is_stored(&mut self, id: &BlobId) -> bool {
        if self.claimed.contains(id) {
            return true;
        }
        match self.index.get(id).map(|location| location.pack) {
            Some(pack) if !self.excluded.contains(&pack) => {
                self.depends_on.insert(pack);
                true
            }
            _ => false,
        }
    }

    /// True when the caller must store the blob: it is neither stored nor claimed yet.
    /// Claims it, so every later call for the same id returns false.
    pub(super) fn claim(&mut self, id: BlobId) -> bool {
        if self.is_stored(&id) {
            return false;
        }
        self.claimed.insert(&id);
        true
    }

    /// Existing packs the session deduplicated against.
    pub(super) fn into_dependencies(self) -> HashSet<PackId> {
        self.depends_on
    }
}
