//! What the fuzz targets share: the golden test key (`repo-format/tests/golden/README.md`),
//! so the golden vectors are seeds, and sealing a fuzzer's bytes as a writer would, so the
//! decoders behind each AEAD check are reached too.

use std::fmt::Debug;
use std::sync::LazyLock;

use bunker_repo_format::Error;
use bunker_repo_format::codec::DecodeError;
use bunker_repo_format::crypto::{MasterKey, SealingSession, SymmetricKey, WriterKey};
use bunker_repo_format::object::ObjectKind;

/// 32 bytes counting up from `start` (wrapping).
pub fn pattern(start: u8) -> [u8; 32] {
    std::array::from_fn(|i| start.wrapping_add(i as u8))
}

/// The golden master key: data secret `00 01 .. 1f`, writer secret `20 21 .. 3f`.
pub static MASTER: LazyLock<MasterKey> =
    LazyLock::new(|| MasterKey::from_parts(pattern(0x00), pattern(0x20)));

/// The golden master key's writer key.
pub fn writer() -> &'static WriterKey {
    MASTER.writer()
}

/// One writer session of the golden key, for the whole run.
pub static SESSION: LazyLock<SealingSession> = LazyLock::new(|| MASTER.writer().new_session());

/// `header ‖ Seal(key, context ‖ header, body)`: an object sealed under a repository key
/// (the index key, the forget key) rather than a writer session.
pub fn sealed_under(key: &SymmetricKey, context: &[u8], header: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = header.to_vec();
    key.seal_into(&[context, header].concat(), body, &mut bytes);
    bytes
}

/// For an object sealed under the index key (heartbeats, GC plans): `data` is opened as a
/// whole stored object, then sealed as a body after `kind`'s header; a body that `decode`
/// accepts must `encode` (sealing again) to the same plaintext.
pub fn index_key_object<T, E>(
    data: &[u8],
    kind: ObjectKind,
    context: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> Vec<u8>,
) {
    let _ = decode(data);
    let header = kind.header();
    let key = writer().index_key();
    if let Ok(decoded) = decode(&sealed_under(key, context, &header, data)) {
        let again = encode(&decoded);
        let body = key
            .open(&[context, &header].concat(), &again[header.len()..])
            .expect("an object bunker sealed opens");
        assert_eq!(body, data, "{kind:?} encoding is not canonical");
    }
}

/// `kind's header ‖ session public ‖ Seal(session key, context ‖ those 40 bytes, body)`: an
/// object sealed by [`SESSION`] (snapshots, audit records).
pub fn sealed_by_session(kind: ObjectKind, context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut bytes = kind.header().to_vec();
    bytes.extend_from_slice(SESSION.public());
    let aad = [context, &bytes].concat();
    SESSION.key().seal_into(&aad, body, &mut bytes);
    bytes
}

/// Decoding a body plaintext and opening it sealed must succeed or fail together, and agree:
/// on the value, or on the kind of failure (a newer version is *unsupported*, anything else
/// *corrupt*).
pub fn assert_agree<T: PartialEq + Debug>(
    decoded: &Result<T, DecodeError>,
    opened: &Result<T, Error>,
) {
    match (decoded, opened) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(DecodeError::UnsupportedVersion { .. }), Err(Error::Unsupported { .. })) => {}
        (Err(DecodeError::UnsupportedVersion { .. }), Err(other)) => {
            panic!("a newer version opened as {other:?}, not unsupported")
        }
        (Err(_), Err(Error::Corrupt { .. })) => {}
        (Err(decode), Err(other)) => panic!("{decode} opened as {other:?}, not corrupt"),
        _ => panic!(
            "open and decode_body disagree: {:?} vs {:?}",
            decoded.is_ok(),
            opened.is_ok()
        ),
    }
}
