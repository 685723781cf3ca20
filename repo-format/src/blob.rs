//! Blobs: chunks of file data and encoded trees, compressed and sealed one by one.
//!
//! A sealed blob is `nonce (24) || XChaCha20-Poly1305(compression byte || payload) || tag (16)`
//! under the writer session's key, with associated data `"bunker blob" || kind || blob id`,
//! so a blob cannot be passed off as another or as another kind.

use std::cell::RefCell;

use crate::compress::{self, Compression};
use crate::crypto::{SEAL_OVERHEAD, SymmetricKey, WriterKey};
use crate::error::{Error, Result};
use crate::id::BlobId;

/// Largest plaintext a blob may have (256 MiB). Readers refuse larger lengths before
/// allocating; writers never produce them (chunks are at most 16 MiB, and a tree this large
/// would need millions of entries in one directory).
pub const MAX_BLOB_LENGTH: u32 = 256 << 20;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BlobKind {
    /// File or volume content.
    Data,
    /// An encoded [`Tree`](crate::tree::Tree).
    Tree,
}

impl BlobKind {
    /// Stored byte.
    pub const fn byte(self) -> u8 {
        match self {
            BlobKind::Data => 0,
            BlobKind::Tree => 1,
        }
    }

    /// Parses the stored byte.
    pub fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            0 => Some(BlobKind::Data),
            1 => Some(BlobKind::Tree),
            _ => None,
        }
    }

    /// `data` or `tree`.
    pub const fn name(self) -> &'static str {
        match self {
            BlobKind::Data => "data",
            BlobKind::Tree => "tree",
        }
    }
}

fn blob_aad(kind: BlobKind, id: &BlobId) -> [u8; 11 + 1 + 32] {
    let mut aad = [0u8; 44];
    aad[..11].copy_from_slice(b"bunker blob");
    aad[11] = kind.byte();
    aad[12..].copy_from_slice(id.as_bytes());
    aad
}

/// Compresses (at `level`, 0 for none) and seals a blob's plaintext under a session key.
pub fn seal_blob(
    key: &SymmetricKey,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Vec<u8> {
    // The record is the compression byte, then the payload.
    compress::compress_with(level, plaintext, |compression, payload| {
        let mut sealed = Vec::with_capacity(SEAL_OVERHEAD + 1 + payload.len());
        key.seal_parts_into(
            &blob_aad(kind, id),
            &[&[compression as u8], payload],
            &mut sealed,
        );
        sealed
    })
}

/// Seals like [`seal_blob`], then proves that the result reads back: opens it again and
/// checks that the plaintext re-hashes to `id` under `id_key`. A fault in compression,
/// encryption or memory (or an id that does not belong to `plaintext`) is caught here,
/// before the blob is stored, instead of at restore time. Each thread reuses its buffers
/// for the opened record and plaintext.
pub fn seal_blob_verified(
    key: &SymmetricKey,
    id_key: &WriterKey,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &[u8],
    level: i32,
) -> Result<Vec<u8>> {
    thread_local! {
        static DECODED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    let sealed = seal_blob(key, kind, id, plaintext, level);
    DECODED.with_borrow_mut(|decoded| {
        let verified = verify_sealed(key, id_key, kind, id, &sealed, plaintext.len(), decoded);
        // A rare large blob does not keep its buffer's memory for the rest of the run.
        decoded.clear();
        decoded.shrink_to(KEPT_BUFFER);
        verified
    })?;
    Ok(sealed)
}

/// Like [`seal_blob_verified`], for a plaintext the caller is done with: the check decodes
/// the blob into `plaintext`'s own buffer, so it needs no buffer of its own (and no fresh
/// memory to fault in for a large blob). Afterwards `plaintext` holds the blob as opened:
/// the same bytes, when it verified.
pub fn seal_blob_verified_in_place(
    key: &SymmetricKey,
    id_key: &WriterKey,
    kind: BlobKind,
    id: &BlobId,
    plaintext: &mut Vec<u8>,
    level: i32,
) -> Result<Vec<u8>> {
    let sealed = seal_blob(key, kind, id, plaintext, level);
    let length = plaintext.len();
    verify_sealed(key, id_key, kind, id, &sealed, length, plaintext)?;
    Ok(sealed)
}

// Each thread reuses one buffer for the records it opens.
thread_local! {
    static RECORD: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Opens a blob sealed from `length` bytes (decoding it into `decoded`, when compressed) and
/// checks that it re-hashes to `id`.
fn verify_sealed(
    key: &SymmetricKey,
    id_key: &WriterKey,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    length: usize,
    decoded: &mut Vec<u8>,
) -> Result<()> {
    let fails = |e: Error| {
        Error::Invalid(format!(
            "a sealed {} blob does not read back: {e}",
            kind.name()
        ))
    };
    let rehashed = RECORD.with_borrow_mut(|record| {
        let compression =
            open_record(key, kind, id, sealed, "a new blob", record).map_err(fails)?;
        let payload = &record[1..];
        // A stored payload is the plaintext itself; a compressed one is decoded (and its
        // length checked) first.
        let opened: &[u8] = match compression {
            Compression::None => payload,
            Compression::Zstd => {
                compress::decompress_into(compression, payload, length, "a new blob", decoded)
                    .map_err(fails)?;
                decoded
            }
        };
        if opened.len() != length {
            return Err(fails(Error::Invalid(format!(
                "{} bytes stored for {length}",
                opened.len()
            ))));
        }
        let hash = id_key.blob_id_bytes(opened);
        keep_for_the_next(record);
        Ok(hash)
    })?;
    if rehashed != *id.as_bytes() {
        return Err(Error::Invalid(format!(
            "a sealed {} blob does not re-hash to its id {id}",
            kind.name()
        )));
    }
    Ok(())
}

/// Largest buffer a thread keeps between verifications.
const KEPT_BUFFER: usize = 2 << 20;

/// Keeps a thread's record buffer for the next record, with its length (the next record
/// overwrites those bytes, and zeroing them again would be a pass over memory for
/// nothing), unless it grew past [`KEPT_BUFFER`].
fn keep_for_the_next(record: &mut Vec<u8>) {
    if record.capacity() > KEPT_BUFFER {
        record.truncate(KEPT_BUFFER);
        record.shrink_to(KEPT_BUFFER);
    }
}

/// Authenticates and decrypts a sealed blob into `record` and reads its compression byte;
/// the payload is `record[1..]`.
fn open_record(
    key: &SymmetricKey,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    object: &str,
    record: &mut Vec<u8>,
) -> Result<Compression> {
    key.open_into(&blob_aad(kind, id), sealed, record)
        .map_err(|_| {
            Error::corrupt(
                object,
                format!("{} blob {} does not authenticate", kind.name(), id),
            )
        })?;
    let byte = *record
        .first()
        .ok_or_else(|| Error::corrupt(object, format!("blob {id} is empty")))?;
    Compression::from_byte(byte)
        .ok_or_else(|| Error::corrupt(object, format!("blob {id}: unknown compression {byte}")))
}

/// Names the blob in a decompression error, which names only the pack: every error about a
/// blob's content says which blob, so callers add no prefix of their own.
fn naming(kind: BlobKind, id: &BlobId) -> impl FnOnce(Error) -> Error + '_ {
    move |error| match error {
        Error::Corrupt { object, reason } => Error::Corrupt {
            object,
            reason: format!("{} blob {id}: {reason}", kind.name()),
        },
        other => other,
    }
}

/// The plaintext length `raw_length` that blob `id` of `object` claims, refused above
/// [`MAX_BLOB_LENGTH`]: check it before allocating that much.
pub fn plaintext_length(id: &BlobId, raw_length: u32, object: &str) -> Result<usize> {
    if raw_length > MAX_BLOB_LENGTH {
        return Err(Error::corrupt(
            object,
            format!("blob {id} claims {raw_length} bytes, above the {MAX_BLOB_LENGTH} limit"),
        ));
    }
    Ok(raw_length as usize)
}

/// Opens a sealed blob and decompresses it to `raw_length` bytes.
///
/// This authenticates the bytes; the caller must still re-hash the plaintext against `id`
/// (that needs the id key, see [`WriterKey::blob_id_bytes`](crate::crypto::WriterKey)).
pub fn open_blob(
    key: &SymmetricKey,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    raw_length: u32,
    object: &str,
) -> Result<Vec<u8>> {
    let raw_length = plaintext_length(id, raw_length, object)?;
    let mut record = Vec::new();
    let compression = open_record(key, kind, id, sealed, object, &mut record)?;
    compress::decompress(compression, &record[1..], raw_length, object).map_err(naming(kind, id))
}

/// Like [`open_blob`], into `out`, whose length is the plaintext length the blob must have
/// (see [`plaintext_length`]). The opened record goes through a buffer this thread reuses.
pub fn open_blob_to(
    key: &SymmetricKey,
    kind: BlobKind,
    id: &BlobId,
    sealed: &[u8],
    object: &str,
    out: &mut [u8],
) -> Result<()> {
    RECORD.with_borrow_mut(|record| {
        let opened = open_record(key, kind, id, sealed, object, record).and_then(|compression| {
            compress::decompress_to_slice(compression, &record[1..], object, out)
                .map_err(naming(kind, id))
        });
        keep_for_the_next(record);
        opened
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4000), level in 0i32..4, tree: bool) {
            let key = SymmetricKey::from_bytes([5; 32]);
            let kind = if tree { BlobKind::Tree } else { BlobKind::Data };
            let id = BlobId::from_bytes(*blake3::hash(&data).as_bytes());
            let sealed = seal_blob(&key, kind, &id, &data, level);
            let opened = open_blob(&key, kind, &id, &sealed, data.len() as u32, "p").unwrap();
            prop_assert_eq!(opened, data);
        }
    }

    #[test]
    fn an_error_in_a_blob_s_content_names_the_blob_once() {
        let key = SymmetricKey::from_bytes([5; 32]);
        let data = b"a compressible chunk, a compressible chunk".repeat(40);
        let id = BlobId::from_bytes(*blake3::hash(&data).as_bytes());
        let sealed = seal_blob(&key, BlobKind::Data, &id, &data, 3);
        // The index claims one byte more than the blob holds: the decompression fails.
        let claimed = data.len() as u32 + 1;
        let err = open_blob(&key, BlobKind::Data, &id, &sealed, claimed, "data/ab/pack")
            .expect_err("the length does not match");
        let mut out = vec![0; data.len() + 1];
        let err_to = open_blob_to(&key, BlobKind::Data, &id, &sealed, "data/ab/pack", &mut out)
            .expect_err("the length does not match");
        let tampered = {
            let mut bytes = sealed.clone();
            bytes[30] ^= 1;
            bytes
        };
        let err_auth = open_blob(
            &key,
            BlobKind::Data,
            &id,
            &tampered,
            claimed,
            "data/ab/pack",
        )
        .expect_err("does not authenticate");
        for err in [err, err_to, err_auth] {
            let text = err.to_string();
            assert!(
                text.starts_with("data/ab/pack: corrupt: data blob "),
                "{text}"
            );
            assert_eq!(text.matches(&id.to_string()).count(), 1, "{text}");
        }
    }

    #[test]
    fn a_verified_seal_opens_to_the_plaintext_and_refuses_an_id_that_is_not_its_hash() {
        let key = SymmetricKey::from_bytes([5; 32]);
        let master = crate::crypto::MasterKey::generate();
        let id_key = master.writer();
        let data = b"some chunk of a file, some chunk of a file".repeat(50);
        let id = BlobId::from_bytes(id_key.blob_id_bytes(&data));
        for level in [0, 3] {
            let sealed = seal_blob_verified(&key, id_key, BlobKind::Data, &id, &data, level)
                .expect("a blob whose id is its hash verifies");
            let opened = open_blob(&key, BlobKind::Data, &id, &sealed, data.len() as u32, "p")
                .expect("opens");
            assert_eq!(opened, data);
            let mut in_place = data.clone();
            let sealed_in_place = seal_blob_verified_in_place(
                &key,
                id_key,
                BlobKind::Data,
                &id,
                &mut in_place,
                level,
            )
            .expect("verifies in place");
            assert_eq!(in_place, data, "the buffer holds the opened blob");
            let opened = open_blob(
                &key,
                BlobKind::Data,
                &id,
                &sealed_in_place,
                data.len() as u32,
                "p",
            )
            .expect("opens");
            assert_eq!(opened, data);
        }
        // The id of other bytes: the blob would restore as the wrong content.
        let other = BlobId::from_bytes(id_key.blob_id_bytes(b"other bytes"));
        let err = seal_blob_verified(&key, id_key, BlobKind::Data, &other, &data, 3)
            .expect_err("a blob whose id is not its hash is refused");
        assert!(
            err.to_string().contains("does not re-hash to its id"),
            "{err}"
        );
        let err =
            seal_blob_verified_in_place(&key, id_key, BlobKind::Data, &other, &mut data.clone(), 3)
                .expect_err("refused in place too");
        assert!(
            err.to_string().contains("does not re-hash to its id"),
            "{err}"
        );
    }

    #[test]
    fn swapped_id_or_kind_fails() {
        let key = SymmetricKey::from_bytes([5; 32]);
        let id = BlobId::from_bytes([1; 32]);
        let other = BlobId::from_bytes([2; 32]);
        let sealed = seal_blob(&key, BlobKind::Data, &id, b"hello", 3);
        assert!(open_blob(&key, BlobKind::Data, &other, &sealed, 5, "p").is_err());
        assert!(open_blob(&key, BlobKind::Tree, &id, &sealed, 5, "p").is_err());
        assert!(open_blob(&key, BlobKind::Data, &id, &sealed, 4, "p").is_err());
    }

    #[test]
    fn a_blob_opens_into_a_slice_of_exactly_its_length() {
        let key = SymmetricKey::from_bytes([5; 32]);
        let id = BlobId::from_bytes([1; 32]);
        let data = b"bytes for a caller's own buffer, ".repeat(300);
        for level in [0, 3] {
            let sealed = seal_blob(&key, BlobKind::Data, &id, &data, level);
            let mut out = vec![0xa5; data.len()];
            open_blob_to(&key, BlobKind::Data, &id, &sealed, "p", &mut out).expect("opens");
            assert_eq!(out, data, "level {level}");
            for length in [data.len() - 1, data.len() + 1] {
                let err = open_blob_to(
                    &key,
                    BlobKind::Data,
                    &id,
                    &sealed,
                    "p",
                    &mut vec![0; length],
                )
                .expect_err("a slice of another length is refused");
                assert!(err.to_string().starts_with("p: corrupt"), "{err}");
            }
            let other = BlobId::from_bytes([2; 32]);
            let err = open_blob_to(&key, BlobKind::Data, &other, &sealed, "p", &mut out)
                .expect_err("another blob's id does not authenticate");
            assert!(err.to_string().contains("does not authenticate"), "{err}");
        }
        assert!(plaintext_length(&id, MAX_BLOB_LENGTH, "p").is_ok());
        let err = plaintext_length(&id, MAX_BLOB_LENGTH + 1, "p").expect_err("refused");
        assert!(err.to_string().contains("above the"), "{err}");
    }
}
