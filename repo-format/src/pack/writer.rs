//! Building a pack in memory.

use super::{PackEntry, encode_trailer, pack_kind, trailer_aad};
use crate::blob::BlobKind;
use crate::crypto::SealingSession;
use crate::id::{PackId, content_hash};
use crate::object::ObjectKind;

/// Accumulates sealed blobs of one kind until the pack is full.
#[derive(Debug)]
pub struct PackWriter {
    kind: BlobKind,
    session: SealingSession,
    bytes: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Content hash of `bytes`.
    pub id: PackId,
    /// Data or tree pack.
    pub kind: ObjectKind,
    /// The pack's stored bytes.
    pub bytes: Vec<u8>,
    /// The blobs it holds, in order.
    pub entries: Vec<PackEntry>,
}

impl FinishedPack {
    /// The pack's object name.
    pub fn name(&self) -> String {
        self.kind.name(&self.id.to_hex())
    }
}

/// A pack that is stored, without its bytes: what a writer needs to index it.
#[derive(Debug)]
pub struct StoredPack {
    /// Content hash of the stored bytes.
    pub id: PackId,
    /// The pack's size in bytes.
    pub stored: u64,
    /// The blobs it holds, in order.
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Starts an empty pack of `kind` blobs sealed by `session`.
    pub fn new(kind: BlobKind, session: SealingSession) -> Self {
        let mut bytes = Vec::with_capacity(1 << 20);
        bytes.extend_from_slice(&pack_kind(kind).header());
        bytes.extend_from_slice(session.public());
        Self {
            kind,
            session,
            bytes,
            entries: Vec::new(),
        }
    }

    /// Appends a blob sealed by this pack's session (see [`crate::blob::seal_blob`]).
    pub fn add(&mut self, entry_id: crate::id::BlobId, sealed: &[u8], raw_length: u32) {
        self.entries.push(PackEntry {
            id: entry_id,
            kind: self.kind,
            offset: self.bytes.len() as u64,
            length: sealed.len() as u32,
            raw_length,
        });
        self.bytes.extend_from_slice(sealed);
    }

    /// Bytes so far (without the trailer).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of blobs added.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Seals the trailer and names the pack.
    pub fn finish(mut self) -> FinishedPack {
        let header_len = crate::object::SESSION_HEADER_LEN;
        let aad = trailer_aad(&self.bytes[..header_len]);
        let before = self.bytes.len();
        self.session
            .key()
            .seal_into(&aad, &encode_trailer(&self.entries), &mut self.bytes);
        let trailer_len = (self.bytes.len() - before) as u32;
        self.bytes.extend_from_slice(&trailer_len.to_le_bytes());
        FinishedPack {
            id: PackId::from_bytes(content_hash(&self.bytes)),
            kind: pack_kind(self.kind),
            bytes: self.bytes,
            entries: self.entries,
        }
    }
}
