//! Packs: immutable files of sealed blobs with an encrypted trailer listing them.
//!
//! Layout: object header (8) || session public key (32) || sealed blobs, back to back ||
//! sealed trailer || trailer length (`u32` LE). The trailer lets a master-key holder rebuild
//! the index from packs alone. A pack is named by the BLAKE3 hash of all its bytes.

mod reader;
mod writer;

pub use reader::{PackTrailer, parse_pack, parse_trailer, trailer_location};
pub use writer::{FinishedPack, PackContents, PackWriter, StoredPack};

use crate::blob::BlobKind;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::id::{BlobId, PackId};
use crate::object::ObjectKind;

/// Version byte of the trailer plaintext.
pub const TRAILER_VERSION: u8 = 1;
/// Bytes of one encoded trailer entry.
pub const TRAILER_ENTRY_LEN: usize = 1 + 32 + 8 + 4 + 4;

/// Where one blob sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The blob.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Offset of the sealed blob from the start of the pack.
    pub offset: u64,
    /// Length of the sealed blob (nonce, ciphertext, tag).
    pub length: u32,
    /// Length of the blob's plaintext.
    pub raw_length: u32,
}

impl PackEntry {
    /// Where the blob is, as the index records it, when the entry is in pack `pack`.
    pub fn location_in(&self, pack: PackId) -> crate::index::BlobLocation {
        crate::index::BlobLocation {
            pack,
            kind: self.kind,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
        }
    }
}

/// The object kind of packs that hold blobs of `kind`.
pub fn pack_kind(kind: BlobKind) -> ObjectKind {
    match kind {
        BlobKind::Data => ObjectKind::DataPack,
        BlobKind::Tree => ObjectKind::TreePack,
    }
}

/// The object name of pack `pack`, which holds blobs of `kind`.
pub fn pack_name(kind: BlobKind, pack: &PackId) -> String {
    pack_kind(kind).name(&pack.to_hex())
}

fn trailer_aad(pack_header: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker pack trailer".to_vec();
    aad.extend_from_slice(pack_header);
    aad
}

/// Encodes the trailer plaintext.
pub fn encode_trailer(entries: &[PackEntry]) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.u8(TRAILER_VERSION).count(entries.len());
    for entry in entries {
        enc.u8(entry.kind.byte())
            .raw(entry.id.as_bytes())
            .u64(entry.offset)
            .u32(entry.length)
            .u32(entry.raw_length);
    }
    enc.finish()
}

/// Decodes the trailer plaintext.
pub fn decode_trailer(bytes: &[u8]) -> Result<Vec<PackEntry>, DecodeError> {
    let mut dec = Decoder::new(bytes);
    dec.version("trailer version", TRAILER_VERSION)?;
    let count = dec.count(TRAILER_ENTRY_LEN, "trailer entry count")?;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let kind_byte = dec.u8("blob kind")?;
        let kind = BlobKind::from_byte(kind_byte).ok_or_else(|| {
            DecodeError::invalid("blob kind", format!("unknown kind {kind_byte}"))
        })?;
        entries.push(PackEntry {
            kind,
            id: BlobId::from_bytes(dec.array("blob id")?),
            offset: dec.u64("blob offset")?,
            length: dec.u32("blob length")?,
            raw_length: dec.u32("blob raw length")?,
        });
    }
    dec.finish()?;
    Ok(entries)
}
