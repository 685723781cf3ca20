//! Typed 32-byte identifiers: one type per kind of thing named, so that a pack id can never
//! be passed where a blob id belongs.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// Length in bytes of every identifier.
pub const ID_LEN: usize = 32;

macro_rules! define_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; ID_LEN]);

        impl $name {
            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: [u8; ID_LEN]) -> Self {
                Self(bytes)
            }

            /// The raw bytes.
            pub const fn as_bytes(&self) -> &[u8; ID_LEN] {
                &self.0
            }

            /// Lower-case hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first 8 hex characters, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self, Error> {
                let mut bytes = [0u8; ID_LEN];
                hex::decode_to_slice(s, &mut bytes).map_err(|_| {
                    Error::Invalid(format!(
                        "{s:?} is not a {}: expected 64 hex digits",
                        stringify!($name)
                    ))
                })?;
                Ok(Self(bytes))
            }
        }
    };
}

define_id!(
    /// Id of a blob (a chunk of file data or a tree): keyed BLAKE3 of its plaintext.
    BlobId
);
define_id!(
    /// Id of a pack file: BLAKE3 of its stored bytes.
    PackId
);
define_id!(
    /// Id of an index segment: BLAKE3 of its stored bytes.
    IndexId
);
define_id!(
    /// Id of a snapshot: BLAKE3 of its stored bytes.
    SnapshotId
);
define_id!(
    /// Id of a key slot: BLAKE3 of its stored bytes.
    KeySlotId
);
define_id!(
    /// Id of an audit record: BLAKE3 of its stored bytes.
    AuditId
);

/// BLAKE3 (unkeyed) of stored bytes: the name of every content-named object.
pub fn content_hash(bytes: &[u8]) -> [u8; ID_LEN] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = PackId::from_bytes(content_hash(b"abc"));
        let parsed: PackId = id.to_hex().parse().expect("valid hex");
        assert_eq!(parsed, id);
        assert_eq!(id.short().len(), 8);
        assert!("zz".parse::<PackId>().is_err());
        assert!(id.to_hex()[..63].parse::<PackId>().is_err());
    }
}
