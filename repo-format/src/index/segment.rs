//! The index segment object.
//!
//! Layout: object header (8) || session public key (32) || id-section length (`u32`) ||
//! id section || locations section.
//! - The id section is sealed with the index key, which writers hold: pack ids, blob kinds
//!   and blob ids, enough to deduplicate and to avoid condemned packs.
//! - The locations section is sealed with the session key, which only master-key holders can
//!   derive: offsets and lengths of every blob, in the same order.

use crate::blob::BlobKind;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::{MasterKey, SESSION_PUBLIC_LEN, SealingSession, WriterKey};
use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::object::{ObjectKind, SESSION_HEADER_LEN};
use crate::pack::PackEntry;

const SECTION_VERSION: u8 = 1;

/// One pack and the blobs it holds, as recorded in an index segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedPack {
    /// The pack.
    pub id: PackId,
    /// Kind of every blob in the pack.
    pub kind: BlobKind,
    /// The blobs, in pack order.
    pub blobs: Vec<PackEntry>,
}

/// The decoded content of an index segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IndexSegment {
    /// The packs it lists.
    pub packs: Vec<IndexedPack>,
}

/// What a writer can read from a segment: which blobs exist in which pack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriterView {
    /// `(pack, kind, blob ids)` for each listed pack.
    pub packs: Vec<(PackId, BlobKind, Vec<BlobId>)>,
}

fn ids_aad(header: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker index ids".to_vec();
    aad.extend_from_slice(header);
    aad
}

fn locations_aad(header: &[u8], sealed_ids: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker index locations".to_vec();
    aad.extend_from_slice(header);
    aad.extend_from_slice(blake3::hash(sealed_ids).as_bytes());
    aad
}

/// Encodes and seals a segment.
pub fn encode_segment(
    segment: &IndexSegment,
    writer: &WriterKey,
    session: &SealingSession,
) -> Vec<u8> {
    let (ids, locations) = section_plaintexts(segment);
    seal_sections(&ids, &locations, writer, session)
}

/// Like [`encode_segment`], with the given section versions in place of this build's: a
/// segment as a newer format would write it.
#[cfg(test)]
pub(crate) fn encode_segment_with_versions(
    segment: &IndexSegment,
    writer: &WriterKey,
    session: &SealingSession,
    ids_version: u8,
    locations_version: u8,
) -> Vec<u8> {
    let (mut ids, mut locations) = section_plaintexts(segment);
    ids[0] = ids_version;
    locations[0] = locations_version;
    seal_sections(&ids, &locations, writer, session)
}

/// The plaintexts of the id and locations sections.
fn section_plaintexts(segment: &IndexSegment) -> (Vec<u8>, Vec<u8>) {
    let mut ids = Encoder::new();
    let mut locations = Encoder::new();
    let blob_count: usize = segment.packs.iter().map(|p| p.blobs.len()).sum();
    ids.u8(SECTION_VERSION).count(segment.packs.len());
    locations.u8(SECTION_VERSION).count(blob_count);
    for pack in &segment.packs {
        ids.raw(pack.id.as_bytes())
            .u8(pack.kind.byte())
            .count(pack.blobs.len());
        for blob in &pack.blobs {
            ids.raw(blob.id.as_bytes());
            locations
                .u64(blob.offset)
                .u32(blob.length)
                .u32(blob.raw_length);
        }
    }
    (ids.finish(), locations.finish())
}

/// The segment object: header, session key, sealed id section, sealed locations section.
fn seal_sections(
    ids: &[u8],
    locations: &[u8],
    writer: &WriterKey,
    session: &SealingSession,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&ObjectKind::Index.header());
    out.extend_from_slice(session.public());
    let header = out.clone();
    let sealed_ids = writer.index_key().seal(&ids_aad(&header), ids);
    out.extend_from_slice(&(sealed_ids.len() as u32).to_le_bytes());
    out.extend_from_slice(&sealed_ids);
    session
        .key()
        .seal_into(&locations_aad(&header, &sealed_ids), locations, &mut out);
    out
}

struct Split<'a> {
    header: &'a [u8],
    session_public: [u8; SESSION_PUBLIC_LEN],
    sealed_ids: &'a [u8],
    sealed_locations: &'a [u8],
}

fn split<'a>(bytes: &'a [u8], object: &str) -> Result<Split<'a>> {
    let mut dec = ObjectKind::Index.check_header(bytes, object)?;
    let corrupt = |e: DecodeError| Error::corrupt(object, e.to_string());
    let session_public = dec.array("session public key").map_err(corrupt)?;
    let ids_len = dec.u32("id section length").map_err(corrupt)? as usize;
    let sealed_ids = dec.take(ids_len, "id section").map_err(corrupt)?;
    let sealed_locations = dec.take(dec.remaining(), "locations").map_err(corrupt)?;
    Ok(Split {
        header: &bytes[..SESSION_HEADER_LEN],
        session_public,
        sealed_ids,
        sealed_locations,
    })
}

fn decode_ids(plaintext: &[u8]) -> Result<Vec<(PackId, BlobKind, Vec<BlobId>)>, DecodeError> {
    let mut dec = Decoder::new(plaintext);
    dec.version("id section version", SECTION_VERSION)?;
    let pack_count = dec.count(32 + 1 + 4, "pack count")?;
    let mut packs = Vec::with_capacity(pack_count);
    for _ in 0..pack_count {
        let id = PackId::from_bytes(dec.array("pack id")?);
        let kind_byte = dec.u8("blob kind")?;
        let kind = BlobKind::from_byte(kind_byte).ok_or_else(|| {
            DecodeError::invalid("blob kind", format!("unknown kind {kind_byte}"))
        })?;
        let count = dec.count(32, "blob count")?;
        let mut blobs = Vec::with_capacity(count);
        for _ in 0..count {
            blobs.push(BlobId::from_bytes(dec.array("blob id")?));
        }
        packs.push((id, kind, blobs));
    }
    dec.finish()?;
    Ok(packs)
}

/// Decodes the writer-visible part of a segment (needs only the writer key).
pub fn decode_segment_ids(bytes: &[u8], writer: &WriterKey, object: &str) -> Result<WriterView> {
    let parts = split(bytes, object)?;
    let ids = writer
        .index_key()
        .open(&ids_aad(parts.header), parts.sealed_ids)
        .map_err(|_| Error::corrupt(object, "index id section does not authenticate"))?;
    let packs = decode_ids(&ids).map_err(|e| Error::decoding_in(object, "id section: ", e))?;
    Ok(WriterView { packs })
}

/// Decodes a whole segment (needs the master key).
pub fn decode_segment(bytes: &[u8], key: &MasterKey, object: &str) -> Result<IndexSegment> {
    let parts = split(bytes, object)?;
    let view = decode_segment_ids(bytes, key.writer(), object)?;
    let session_key = key.session_key(&parts.session_public, object)?;
    let locations = session_key
        .open(
            &locations_aad(parts.header, parts.sealed_ids),
            parts.sealed_locations,
        )
        .map_err(|_| Error::corrupt(object, "index locations section does not authenticate"))?;
    let corrupt = |e: DecodeError| Error::corrupt(object, format!("locations section: {e}"));
    let mut dec = Decoder::new(&locations);
    dec.version("locations version", SECTION_VERSION)
        .map_err(|e| Error::decoding_in(object, "locations section: ", e))?;
    let total = dec.count(16, "location count").map_err(corrupt)?;
    let expected: usize = view.packs.iter().map(|p| p.2.len()).sum();
    if total != expected {
        return Err(Error::corrupt(
            object,
            format!("{total} locations for {expected} blobs"),
        ));
    }
    let mut packs = Vec::with_capacity(view.packs.len());
    for (id, kind, blob_ids) in view.packs {
        let mut blobs = Vec::with_capacity(blob_ids.len());
        for blob_id in blob_ids {
            blobs.push(PackEntry {
                id: blob_id,
                kind,
                offset: dec.u64("offset").map_err(corrupt)?,
                length: dec.u32("length").map_err(corrupt)?,
                raw_length: dec.u32("raw length").map_err(corrupt)?,
            });
        }
        packs.push(IndexedPack { id, kind, blobs });
    }
    dec.finish().map_err(corrupt)?;
    Ok(IndexSegment { packs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn segment_strategy() -> impl Strategy<Value = IndexSegment> {
        let blob = (any::<[u8; 32]>(), any::<u64>(), any::<u32>(), any::<u32>());
        let pack = (
            any::<[u8; 32]>(),
            any::<bool>(),
            proptest::collection::vec(blob, 0..6),
        );
        proptest::collection::vec(pack, 0..4).prop_map(|packs| IndexSegment {
            packs: packs
                .into_iter()
                .map(|(id, tree, blobs)| {
                    let kind = if tree { BlobKind::Tree } else { BlobKind::Data };
                    IndexedPack {
                        id: PackId::from_bytes(id),
                        kind,
                        blobs: blobs
                            .into_iter()
                            .map(|(id, offset, length, raw_length)| PackEntry {
                                id: BlobId::from_bytes(id),
                                kind,
                                offset,
                                length,
                                raw_length,
                            })
                            .collect(),
                    }
                })
                .collect(),
        })
    }

    #[test]
    fn a_newer_section_version_is_unsupported_not_corrupt() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let segment = IndexSegment { packs: Vec::new() };
        let unsupported = |result: Result<()>| match result {
            Err(Error::Unsupported { object, what }) => {
                assert_eq!(object, "i");
                what
            }
            other => panic!("expected unsupported, got {other:?}"),
        };

        let newer_ids = encode_segment_with_versions(&segment, master.writer(), &session, 2, 1);
        let what = unsupported(decode_segment(&newer_ids, &master, "i").map(drop));
        assert_eq!(
            what,
            "id section: id section version 2 is not supported (this build reads 1)"
        );
        unsupported(decode_segment_ids(&newer_ids, master.writer(), "i").map(drop));

        let newer_locations =
            encode_segment_with_versions(&segment, master.writer(), &session, 1, 2);
        let what = unsupported(decode_segment(&newer_locations, &master, "i").map(drop));
        assert!(
            what.starts_with("locations section: locations version 2"),
            "{what}"
        );
        // A writer reads only the id section, which this build still understands.
        assert!(decode_segment_ids(&newer_locations, master.writer(), "i").is_ok());

        let current = encode_segment_with_versions(&segment, master.writer(), &session, 1, 1);
        assert_eq!(decode_segment(&current, &master, "i").unwrap(), segment);
    }

    proptest! {
        #[test]
        fn segment_round_trips(segment in segment_strategy()) {
            let master = MasterKey::generate();
            let session = master.writer().new_session();
            let bytes = encode_segment(&segment, master.writer(), &session);
            let decoded = decode_segment(&bytes, &master, "i").unwrap();
            prop_assert_eq!(&decoded, &segment);
            let view = decode_segment_ids(&bytes, master.writer(), "i").unwrap();
            prop_assert_eq!(view.packs.len(), segment.packs.len());
        }

        #[test]
        fn flipped_bit_is_caught(segment in segment_strategy(), pos: usize, bit in 0u8..8) {
            let master = MasterKey::generate();
            let session = master.writer().new_session();
            let mut bytes = encode_segment(&segment, master.writer(), &session);
            let pos = pos % bytes.len();
            bytes[pos] ^= 1 << bit;
            prop_assert!(decode_segment(&bytes, &master, "i").is_err());
        }
    }
}
