//! The 8-byte header every stored object starts with, and where each kind of object is
//! stored.
//!
//! Header: magic `BNKR`, one kind byte, one version byte, two zero bytes reserved.

use crate::codec::Decoder;
use crate::crypto::SESSION_PUBLIC_LEN;
use crate::error::{Error, Result};

/// Magic bytes at the start of every object.
pub const MAGIC: &[u8; 4] = b"BNKR";
/// Length of the object header.
pub const HEADER_LEN: usize = 8;
/// Length of the header of a sealed object: the object header plus the session public key.
pub const SESSION_HEADER_LEN: usize = HEADER_LEN + SESSION_PUBLIC_LEN;

/// The kinds of stored object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    /// The repository `config`.
    Config,
    /// A key slot under `keys/`.
    KeySlot,
    /// A pack of data blobs under `data/`.
    DataPack,
    /// A pack of tree blobs under `tree/`.
    TreePack,
    /// An index segment under `index/`.
    Index,
    /// A snapshot under `snapshots/`.
    Snapshot,
    /// A writer session's heartbeat under `sessions/`.
    Heartbeat,
    /// A garbage-collection plan under `gc/`.
    GcPlan,
    /// An audit record under `audit/`.
    Audit,
    /// A forget marker under `forgotten/`: a snapshot forgotten while still locked.
    ForgetMarker,
}

/// Seals `body` as an object of `kind` written by a writer session: header ‖ session
/// public key ‖ `Seal(session key, context ‖ header ‖ session public, body)` (snapshots,
/// audit records). Only master-key holders can open it again.
pub fn seal_session_object(
    kind: ObjectKind,
    context: &[u8],
    session: &crate::crypto::SealingSession,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&kind.header());
    out.extend_from_slice(session.public());
    let aad = [context, out.as_slice()].concat();
    session.key().seal_into(&aad, body, &mut out);
    out
}

/// Opens an object sealed by [`seal_session_object`]; returns the body plaintext.
/// `what` names the kind in the error when it does not authenticate.
pub fn open_session_object(
    kind: ObjectKind,
    context: &[u8],
    bytes: &[u8],
    key: &crate::crypto::MasterKey,
    object: &str,
    what: &str,
) -> Result<Vec<u8>> {
    let mut dec = kind.check_header(bytes, object)?;
    let session_public = dec
        .array("session public key")
        .map_err(|e| Error::corrupt(object, e.to_string()))?;
    let session_key = key.session_key(&session_public, object)?;
    let aad = [context, &bytes[..SESSION_HEADER_LEN]].concat();
    session_key
        .open(&aad, &bytes[SESSION_HEADER_LEN..])
        .map_err(|_| Error::corrupt(object, format!("{what} does not authenticate")))
}

impl ObjectKind {
    /// The kind byte in the header.
    pub const fn byte(self) -> u8 {
        match self {
            ObjectKind::Config => b'C',
            ObjectKind::KeySlot => b'K',
            ObjectKind::DataPack => b'D',
            ObjectKind::TreePack => b'T',
            ObjectKind::Index => b'I',
            ObjectKind::Snapshot => b'S',
            ObjectKind::Heartbeat => b'H',
            ObjectKind::GcPlan => b'G',
            ObjectKind::Audit => b'A',
            ObjectKind::ForgetMarker => b'F',
        }
    }

    /// The current format version of this kind of object.
    pub const fn version(self) -> u8 {
        1
    }

    /// Directory prefix of objects of this kind (`config` has none).
    pub const fn prefix(self) -> &'static str {
        match self {
            ObjectKind::Config => "",
            ObjectKind::KeySlot => "keys/",
            ObjectKind::DataPack => "data/",
            ObjectKind::TreePack => "tree/",
            ObjectKind::Index => "index/",
            ObjectKind::Snapshot => "snapshots/",
            ObjectKind::Heartbeat => "sessions/",
            ObjectKind::GcPlan => "gc/",
            ObjectKind::Audit => "audit/",
            ObjectKind::ForgetMarker => "forgotten/",
        }
    }

    /// The object name of an object of this kind with content hash `hex`.
    ///
    /// Packs fan out into 256 directories by their first two hex digits.
    pub fn name(self, hex: &str) -> String {
        match self {
            ObjectKind::Config => "config".to_owned(),
            ObjectKind::DataPack | ObjectKind::TreePack => {
                format!("{}{}/{hex}", self.prefix(), &hex[..2.min(hex.len())])
            }
            _ => format!("{}{hex}", self.prefix()),
        }
    }

    /// The header bytes of a new object of this kind.
    pub const fn header(self) -> [u8; HEADER_LEN] {
        [
            MAGIC[0],
            MAGIC[1],
            MAGIC[2],
            MAGIC[3],
            self.byte(),
            self.version(),
            0,
            0,
        ]
    }

    /// Checks the header at the start of `bytes` and returns a decoder positioned after it.
    pub fn check_header<'a>(self, bytes: &'a [u8], object: &str) -> Result<Decoder<'a>> {
        if bytes.len() < HEADER_LEN || &bytes[..4] != MAGIC {
            return Err(Error::corrupt(object, "not a bunker object (bad magic)"));
        }
        if bytes[4] != self.byte() {
            return Err(Error::corrupt(
                object,
                format!(
                    "object kind {:?}, expected {:?}",
                    char::from(bytes[4]),
                    char::from(self.byte())
                ),
            ));
        }
        if bytes[5] != self.version() {
            return Err(Error::Unsupported {
                object: object.to_owned(),
                what: format!(
                    "{self:?} version {} (this build reads version {})",
                    bytes[5],
                    self.version()
                ),
            });
        }
        if bytes[6..8] != [0, 0] {
            return Err(Error::corrupt(object, "reserved header bytes are not zero"));
        }
        let mut dec = Decoder::new(bytes);
        dec.take(HEADER_LEN, "header")
            .map_err(|e| Error::corrupt(object, e.to_string()))?;
        Ok(dec)
    }
}

/// Verifies that `bytes` hash to the content id in the object's name.
pub fn verify_content_hash(bytes: &[u8], expected: &[u8; 32], object: &str) -> Result<()> {
    if crate::id::content_hash(bytes) == *expected {
        Ok(())
    } else {
        Err(Error::corrupt(
            object,
            "content does not match its name (BLAKE3 mismatch)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_names() {
        let header = ObjectKind::Snapshot.header();
        assert_eq!(&header, b"BNKRS\x01\0\0");
        assert!(ObjectKind::Snapshot.check_header(&header, "s").is_ok());
        assert!(ObjectKind::Index.check_header(&header, "s").is_err());
        let mut future = header;
        future[5] = 2;
        assert!(matches!(
            ObjectKind::Snapshot.check_header(&future, "s"),
            Err(Error::Unsupported { .. })
        ));
        assert_eq!(ObjectKind::DataPack.name("abcd"), "data/ab/abcd");
        assert_eq!(ObjectKind::Index.name("abcd"), "index/abcd");
    }
}
