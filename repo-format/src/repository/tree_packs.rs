//! Whole tree packs kept in memory while trees are read from a remote store.
//!
//! Walking a snapshot reads its trees one at a time, in walk order, and a backup writes them
//! in that order into a few tree packs. Over S3 a read per tree is a round trip per
//! directory; reading the pack whole on its first tree and answering the next ones from
//! memory turns thousands of requests into one per pack. Only stores whose
//! [`ReadHints::whole_tree_packs`](crate::backend::ReadHints::whole_tree_packs) asks for it
//! use this; a local directory reads each tree's range from the page cache.
//!
//! The packs are kept as stored (sealed): every tree read from them is still authenticated
//! and re-hashed, so a damaged pack fails the trees it damages and no others.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::Result;
use crate::id::PackId;

/// Recently read tree packs, oldest first, at most `limit` bytes together.
#[derive(Debug)]
pub(super) struct TreePackCache {
    limit: usize,
    packs: Mutex<Packs>,
}

#[derive(Debug, Default)]
struct Packs {
    kept: VecDeque<(PackId, Arc<Vec<u8>>)>,
    /// Packs found larger than the limit: their trees are read as ranges.
    oversized: HashSet<PackId>,
}

impl TreePackCache {
    /// Keeps at most `limit` bytes of packs (at least the newest pack, if it fits alone).
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            packs: Mutex::default(),
        }
    }

    /// The stored bytes of `pack`: from memory, or from `read` (then kept). `None` for a
    /// pack once found larger than the limit: read its trees as ranges. Two threads that
    /// miss the same pack at once both read it; no lock is held across a read.
    pub(super) fn get_or_read(
        &self,
        pack: &PackId,
        read: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Option<Arc<Vec<u8>>>> {
        {
            let packs = self.lock();
            if packs.oversized.contains(pack) {
                return Ok(None);
            }
            if let Some((_, bytes)) = packs.kept.iter().find(|(id, _)| id == pack) {
                return Ok(Some(Arc::clone(bytes)));
            }
        }
        let bytes = Arc::new(read()?);
        let mut packs = self.lock();
        if bytes.len() > self.limit {
            packs.oversized.insert(*pack);
        } else if !packs.kept.iter().any(|(id, _)| id == pack) {
            packs.kept.push_back((*pack, Arc::clone(&bytes)));
            let mut total: usize = packs.kept.iter().map(|(_, b)| b.len()).sum();
            while total > self.limit {
                let Some((_, oldest)) = packs.kept.pop_front() else {
                    break;
                };
                total -= oldest.len();
            }
        }
        Ok(Some(bytes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Packs> {
        self.packs.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn pack(n: u8) -> PackId {
        PackId::from_bytes([n; 32])
    }

    #[test]
    fn a_pack_is_read_once_and_the_oldest_goes_first_when_full() {
        let cache = TreePackCache::new(250);
        let reads = Cell::new(0);
        let read = |len: usize| {
            reads.set(reads.get() + 1);
            Ok(vec![7u8; len])
        };
        let bytes = |got: Result<Option<Arc<Vec<u8>>>>| got.expect("read").expect("kept").len();
        assert_eq!(bytes(cache.get_or_read(&pack(1), || read(100))), 100);
        assert_eq!(bytes(cache.get_or_read(&pack(1), || read(100))), 100);
        assert_eq!(reads.get(), 1, "the second tree of a pack costs no read");
        cache.get_or_read(&pack(2), || read(100)).expect("read");
        cache.get_or_read(&pack(3), || read(100)).expect("read");
        assert_eq!(reads.get(), 3);
        // 300 bytes > 250: pack 1 (the oldest) was dropped, 2 and 3 stay.
        cache.get_or_read(&pack(3), || read(100)).expect("kept");
        cache.get_or_read(&pack(2), || read(100)).expect("kept");
        assert_eq!(reads.get(), 3);
        cache
            .get_or_read(&pack(1), || read(100))
            .expect("read again");
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn a_pack_larger_than_the_limit_is_read_whole_once_and_errors_are_not_kept() {
        let cache = TreePackCache::new(50);
        let reads = Cell::new(0);
        let read = || {
            reads.set(reads.get() + 1);
            Ok(vec![1u8; 51])
        };
        let first = cache.get_or_read(&pack(1), read).expect("read");
        assert_eq!(first.expect("the bytes read are used").len(), 51);
        let second = cache.get_or_read(&pack(1), read).expect("no read");
        assert!(second.is_none(), "its next trees are read as ranges");
        assert_eq!(reads.get(), 1);
        let failed = cache.get_or_read(&pack(2), || {
            Err(crate::error::Error::NotFound {
                object: "tree/x".into(),
            })
        });
        assert!(failed.is_err());
        let bytes = cache
            .get_or_read(&pack(2), || Ok(vec![2u8; 10]))
            .expect("a failed read is tried again");
        assert_eq!(bytes.as_deref(), Some(&vec![2u8; 10]));
    }
}
