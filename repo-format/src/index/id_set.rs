//! A set of blob ids kept as the index keeps them: by the first 16 bytes of each id.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use super::records::{Key, KeyHasher, key_of};
use crate::id::BlobId;

/// Blob ids, 16 bytes each (about 19-37 bytes per id with the hash table's spare room,
/// against 38-75 for whole ids): for sets that grow with every blob a session stores.
///
/// Two ids count as the same when their first 16 bytes agree, the rule the [`Index`]
/// matches by (its module documentation says why that is safe: for keyed BLAKE3 ids a
/// false match has probability `n / 2^128` per lookup among `n` ids).
///
/// [`Index`]: super::Index
#[derive(Debug, Default, Clone)]
pub struct BlobIdSet {
    keys: HashSet<Key, BuildHasherDefault<KeyHasher>>,
}

impl BlobIdSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an id; returns false when it was in the set already.
    pub fn insert(&mut self, id: &BlobId) -> bool {
        self.keys.insert(key_of(id.as_bytes()))
    }

    /// True when the id is in the set.
    pub fn contains(&self, id: &BlobId) -> bool {
        self.keys.contains(&key_of(id.as_bytes()))
    }

    /// How many ids the set holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the set holds no id.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_told_apart_by_their_first_sixteen_bytes() {
        let mut set = BlobIdSet::new();
        let id = |first: u8, last: u8| {
            let mut bytes = [first; 32];
            bytes[31] = last;
            BlobId::from_bytes(bytes)
        };
        assert!(set.is_empty());
        assert!(set.insert(&id(1, 1)));
        assert!(!set.insert(&id(1, 1)));
        assert!(set.insert(&id(2, 1)));
        assert!(set.contains(&id(1, 1)) && set.contains(&id(2, 1)));
        assert!(!set.contains(&id(3, 1)));
        // Differing only past the 16th byte: the same key.
        assert!(set.contains(&id(1, 9)));
        assert_eq!(set.len(), 2);
    }
}
