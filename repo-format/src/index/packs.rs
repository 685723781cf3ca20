//! The index's pack table: every pack interned to a small number.

use hashbrown::HashTable;

use crate::blob::BlobKind;
use crate::id::PackId;

/// Packs the index knows, each with a slot number that blob records use instead of the
/// 32-byte pack id.
///
/// Costs 40 bytes per pack in the slot vector plus about 5-9 bytes per pack in the hash
/// table (a `u32` slot number and a control byte per bucket), instead of the three maps
/// a plain design would need (id to number, number to id, id to kind and count).
#[derive(Debug, Default, Clone)]
pub struct PackTable {
    slots: Vec<PackSlot>,
    /// Slot numbers, hashed by their pack id.
    lookup: HashTable<u32>,
    listed: usize,
}

#[derive(Debug, Clone)]
struct PackSlot {
    id: PackId,
    /// Blobs the segments list in the pack.
    count: u32,
    kind: BlobKind,
    /// Listed by a loaded segment and not dropped by `retain`.
    listed: bool,
}

/// Slot numbers fit in 31 bits (the record's top bit holds the blob kind).
pub(super) const MAX_SLOTS: usize = (1 << 31) - 2;

fn hash(id: &PackId) -> u64 {
    // Pack ids are content hashes: their first bytes are uniformly distributed already.
    let bytes = id.as_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

impl PackTable {
    /// The slot of a pack, if it was ever interned.
    pub(super) fn slot(&self, id: &PackId) -> Option<u32> {
        self.lookup
            .find(hash(id), |slot| self.slots[*slot as usize].id == *id)
            .copied()
    }

    /// The slot of a pack, interning it when new (not listed, no blobs).
    ///
    /// Returns `None` only past [`MAX_SLOTS`] packs (two billion: more than memory holds).
    pub(super) fn intern(&mut self, id: &PackId) -> Option<u32> {
        if let Some(slot) = self.slot(id) {
            return Some(slot);
        }
        if self.slots.len() >= MAX_SLOTS {
            return None;
        }
        let slot = self.slots.len() as u32;
        self.slots.push(PackSlot {
            id: *id,
            count: 0,
            kind: BlobKind::Data,
            listed: false,
        });
        let slots = &self.slots;
        self.lookup
            .insert_unique(hash(id), slot, |s| hash(&slots[*s as usize].id));
        Some(slot)
    }

    /// Marks a pack as listed by a segment, with its kind and blob count.
    pub(super) fn list(&mut self, slot: u32, kind: BlobKind, count: u32) {
        let entry = &mut self.slots[slot as usize];
        if !entry.listed {
            self.listed += 1;
        }
        entry.listed = true;
        entry.kind = kind;
        entry.count = count;
    }

    /// The pack id in a slot.
    pub(super) fn id(&self, slot: u32) -> &PackId {
        &self.slots[slot as usize].id
    }

    /// Unlists every pack for which `keep` is false; returns, per slot, whether it is kept.
    pub(super) fn retain(&mut self, keep: impl Fn(&PackId) -> bool) -> Vec<bool> {
        let mut kept = Vec::with_capacity(self.slots.len());
        for entry in &mut self.slots {
            let keep = keep(&entry.id);
            if !keep && entry.listed {
                entry.listed = false;
                self.listed -= 1;
            }
            kept.push(keep);
        }
        kept
    }

    /// Number of listed packs.
    pub fn len(&self) -> usize {
        self.listed
    }

    /// True when no pack is listed.
    pub fn is_empty(&self) -> bool {
        self.listed == 0
    }

    /// True when a loaded segment lists the pack (and it was not dropped since).
    pub fn contains_key(&self, id: &PackId) -> bool {
        self.get(id).is_some()
    }

    /// Kind of a listed pack and how many blobs the segments list in it.
    pub fn get(&self, id: &PackId) -> Option<(BlobKind, u32)> {
        let entry = &self.slots[self.slot(id)? as usize];
        entry.listed.then_some((entry.kind, entry.count))
    }

    /// Every listed pack with its kind and blob count.
    pub fn iter(&self) -> impl Iterator<Item = (&PackId, (BlobKind, u32))> {
        self.slots
            .iter()
            .filter(|entry| entry.listed)
            .map(|entry| (&entry.id, (entry.kind, entry.count)))
    }

    /// Every listed pack.
    pub fn keys(&self) -> impl Iterator<Item = &PackId> {
        self.iter().map(|(id, _)| id)
    }

    /// Gives spare capacity back.
    pub(super) fn compact(&mut self) {
        self.slots.shrink_to_fit();
        let slots = &self.slots;
        self.lookup
            .shrink_to_fit(|slot| hash(&slots[*slot as usize].id));
    }

    /// Heap bytes held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<PackSlot>()
            + self.lookup.capacity() * (std::mem::size_of::<u32>() + 1)
    }
}
