//! Reading a pack's trailer.

use super::{PackEntry, decode_trailer, trailer_aad};
use crate::blob::MAX_BLOB_LENGTH;
use crate::crypto::{MasterKey, SEAL_OVERHEAD, SESSION_PUBLIC_LEN};
use crate::error::{Error, Result};
use crate::object::{ObjectKind, SESSION_HEADER_LEN};

/// A pack's header fields and its decrypted trailer.
#[derive(Debug, Clone)]
pub struct PackTrailer {
    /// Data or tree pack.
    pub kind: ObjectKind,
    /// Public key of the session that wrote it.
    pub session_public: [u8; SESSION_PUBLIC_LEN],
    /// The blobs, in order.
    pub entries: Vec<PackEntry>,
}

/// Offset and length of the sealed trailer in a pack of `pack_size` bytes whose last four
/// bytes are `length_field`.
pub fn trailer_location(pack_size: u64, length_field: [u8; 4], object: &str) -> Result<(u64, u64)> {
    let length = u64::from(u32::from_le_bytes(length_field));
    let min = SESSION_HEADER_LEN as u64 + 4;
    if pack_size < min || length > pack_size - min {
        return Err(Error::corrupt(
            object,
            format!("trailer length {length} does not fit a pack of {pack_size} bytes"),
        ));
    }
    Ok((pack_size - 4 - length, length))
}

/// Parses the header (first [`SESSION_HEADER_LEN`] bytes) and sealed trailer of a pack.
///
/// Checks that every listed blob lies between the header and the trailer, in order and
/// without overlap.
pub fn parse_trailer(
    header: &[u8],
    sealed_trailer: &[u8],
    trailer_offset: u64,
    key: &MasterKey,
    object: &str,
) -> Result<PackTrailer> {
    let kind = match header.get(4) {
        Some(b'D') => ObjectKind::DataPack,
        Some(b'T') => ObjectKind::TreePack,
        _ => return Err(Error::corrupt(object, "not a pack")),
    };
    let mut dec = kind.check_header(header, object)?;
    let session_public: [u8; SESSION_PUBLIC_LEN] = dec
        .array("session public key")
        .map_err(|e| Error::corrupt(object, e.to_string()))?;
    let session_key = key.session_key(&session_public, object)?;
    let plaintext = session_key
        .open(&trailer_aad(&header[..SESSION_HEADER_LEN]), sealed_trailer)
        .map_err(|_| Error::corrupt(object, "pack trailer does not authenticate"))?;
    let entries =
        decode_trailer(&plaintext).map_err(|e| Error::decoding_in(object, "trailer: ", e))?;
    let mut next = SESSION_HEADER_LEN as u64;
    for entry in &entries {
        if pack_kind_of(entry.kind) != kind {
            return Err(Error::corrupt(
                object,
                format!("blob {} has the wrong kind for this pack", entry.id),
            ));
        }
        let end = entry.offset.checked_add(u64::from(entry.length));
        if entry.offset < next
            || end.is_none_or(|end| end > trailer_offset)
            || (entry.length as usize) <= SEAL_OVERHEAD
            || entry.raw_length > MAX_BLOB_LENGTH
        {
            return Err(Error::corrupt(
                object,
                format!(
                    "blob {} at {}+{} (plaintext {}) overlaps, lies outside the pack body or has an impossible length",
                    entry.id, entry.offset, entry.length, entry.raw_length
                ),
            ));
        }
        next = end.unwrap_or(u64::MAX);
    }
    Ok(PackTrailer {
        kind,
        session_public,
        entries,
    })
}

fn pack_kind_of(kind: crate::blob::BlobKind) -> ObjectKind {
    super::pack_kind(kind)
}

/// Parses a whole pack held in memory.
pub fn parse_pack(bytes: &[u8], key: &MasterKey, object: &str) -> Result<PackTrailer> {
    let size = bytes.len() as u64;
    if bytes.len() < SESSION_HEADER_LEN + 4 {
        return Err(Error::corrupt(
            object,
            format!("pack of {size} bytes is truncated"),
        ));
    }
    let mut length_field = [0u8; 4];
    length_field.copy_from_slice(&bytes[bytes.len() - 4..]);
    let (offset, length) = trailer_location(size, length_field, object)?;
    let trailer = &bytes[offset as usize..(offset + length) as usize];
    parse_trailer(&bytes[..SESSION_HEADER_LEN], trailer, offset, key, object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blob::{BlobKind, open_blob, seal_blob};
    use crate::id::BlobId;
    use crate::pack::PackWriter;

    proptest::proptest! {
        #[test]
        fn any_pack_round_trips(blobs in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 0..6), tree: bool) {
            let master = MasterKey::from_parts([3; 32], [4; 32]);
            let session = master.writer().new_session();
            let kind = if tree { BlobKind::Tree } else { BlobKind::Data };
            let mut writer = PackWriter::new(kind, session.clone());
            for blob in &blobs {
                let id = BlobId::from_bytes(master.writer().blob_id_bytes(blob));
                writer.add(id, &seal_blob(session.key(), kind, &id, blob, 1), blob.len() as u32).unwrap();
            }
            let pack = writer.finish().unwrap();
            let parsed = parse_pack(pack.bytes().unwrap(), &master, "p").unwrap();
            proptest::prop_assert_eq!(&parsed.entries, &pack.entries);
            let decoded = crate::pack::decode_trailer(&crate::pack::encode_trailer(&pack.entries)).unwrap();
            proptest::prop_assert_eq!(decoded, pack.entries);
        }
    }

    /// Found by the `pack_trailer` fuzz target: an entry whose offset + length overflows
    /// `u64` must be refused, not wrapped around and accepted.
    #[test]
    fn regression_fuzz_trailer_offset_overflow_is_rejected() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let mut bytes = ObjectKind::DataPack.header().to_vec();
        bytes.extend_from_slice(session.public());
        let entries = [crate::pack::PackEntry {
            id: BlobId::from_bytes([1; 32]),
            kind: BlobKind::Data,
            offset: u64::MAX - 10,
            length: 100,
            raw_length: 10,
        }];
        let aad = super::trailer_aad(&bytes);
        let sealed = session
            .key()
            .seal(&aad, &crate::pack::encode_trailer(&entries));
        bytes.extend_from_slice(&sealed);
        bytes.extend_from_slice(&(sealed.len() as u32).to_le_bytes());
        let err = parse_pack(&bytes, &master, "p").expect_err("overflowing entry refused");
        assert!(err.to_string().contains("outside the pack body"), "{err}");
    }

    #[test]
    fn pack_round_trip_and_corruption() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let mut writer = PackWriter::new(BlobKind::Data, session.clone());
        let blobs: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; 1000 * (i as usize + 1)]).collect();
        for blob in &blobs {
            let id = BlobId::from_bytes(master.writer().blob_id_bytes(blob));
            let sealed = seal_blob(session.key(), BlobKind::Data, &id, blob, 3);
            writer.add(id, &sealed, blob.len() as u32).expect("add");
        }
        let pack = writer.finish().expect("finish");
        let bytes = pack.bytes().expect("built in memory");
        let parsed = parse_pack(bytes, &master, "p").expect("valid pack");
        assert_eq!(parsed.entries, pack.entries);
        assert_eq!(parsed.kind, ObjectKind::DataPack);
        let key = master
            .session_key(&parsed.session_public, "p")
            .expect("key");
        for (entry, blob) in parsed.entries.iter().zip(&blobs) {
            let sealed = &bytes[entry.offset as usize..][..entry.length as usize];
            let opened = open_blob(&key, entry.kind, &entry.id, sealed, entry.raw_length, "p")
                .expect("opens");
            assert_eq!(&opened, blob);
        }
        for pos in [0, 5, 20, bytes.len() - 10, bytes.len() - 1] {
            let mut broken = bytes.to_vec();
            broken[pos] ^= 0x40;
            assert!(
                parse_pack(&broken, &master, "p").is_err(),
                "flip at {pos} not caught"
            );
        }
        for cut in [0, 10, 40, bytes.len() - 1] {
            assert!(parse_pack(&bytes[..cut], &master, "p").is_err());
        }
        let other = MasterKey::generate();
        assert!(parse_pack(bytes, &other, "p").is_err());
    }
}
