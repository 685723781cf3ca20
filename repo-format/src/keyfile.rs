//! Key files: a repository key kept in a local file instead of behind a password.
//!
//! A key file holds either the full key (`data_secret ‖ writer_secret`) or a put-only key
//! (`data_public ‖ writer_secret`, FORMAT.md §4.4), with the repository id it belongs to
//! and a BLAKE3 checksum. It is not sealed: like an SSH private key without a passphrase,
//! it is protected by its file mode (0600), so that an agent can back up unattended. The
//! layout is in FORMAT.md §6a.

use std::io::Write;
use std::path::Path;

use zeroize::Zeroize;

use crate::crypto::{AccessKey, MasterKey, WriterKey};
use crate::error::{Error, Result};

/// Length of a key file in bytes.
pub const KEY_FILE_LEN: usize = 137;

const MAGIC: &[u8; 4] = b"BNKR";
const KIND: u8 = b'F';
const VERSION: u8 = 1;
const ACCESS_PUT_ONLY: u8 = 1;
const ACCESS_FULL: u8 = 2;
const CHECKSUMMED: usize = KEY_FILE_LEN - 32;

/// A decoded key file: a key and the repository it opens.
#[derive(Clone, Debug)]
pub struct KeyFile {
    /// The key: full or put-only.
    pub key: AccessKey,
    /// The repository id (from its config) this key belongs to.
    pub repository_id: [u8; 32],
}

impl KeyFile {
    /// Encodes the key file (FORMAT.md §6a).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(KEY_FILE_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[KIND, VERSION, 0, 0]);
        let (access, first) = match &self.key {
            AccessKey::Full(master) => (ACCESS_FULL, *master.data_secret()),
            AccessKey::PutOnly(writer) => (ACCESS_PUT_ONLY, writer.data_public()),
        };
        out.push(access);
        out.extend_from_slice(&self.repository_id);
        out.extend_from_slice(&first);
        out.extend_from_slice(self.key.writer().writer_secret());
        let checksum = blake3::hash(&out);
        out.extend_from_slice(checksum.as_bytes());
        out
    }

    /// Decodes a key file; `file` names it in errors.
    pub fn decode(bytes: &[u8], file: &str) -> Result<Self> {
        let bad = |reason: &str| Error::KeyFile {
            file: file.to_owned(),
            reason: reason.to_owned(),
        };
        if bytes.len() != KEY_FILE_LEN {
            return Err(bad(&format!(
                "not a bunker key file ({} bytes, a key file has {KEY_FILE_LEN})",
                bytes.len()
            )));
        }
        if &bytes[..4] != MAGIC || bytes[4] != KIND || bytes[6..8] != [0, 0] {
            return Err(bad("not a bunker key file (wrong header)"));
        }
        if bytes[5] != VERSION {
            return Err(bad(&format!(
                "key file version {} is not supported by this build",
                bytes[5]
            )));
        }
        if blake3::hash(&bytes[..CHECKSUMMED]).as_bytes() != &bytes[CHECKSUMMED..] {
            return Err(bad("damaged: its checksum does not match"));
        }
        let array = |offset: usize| -> [u8; 32] {
            let mut out = [0u8; 32];
            out.copy_from_slice(&bytes[offset..offset + 32]);
            out
        };
        let repository_id = array(9);
        let mut first = array(41);
        let mut writer_secret = array(73);
        let key = match bytes[8] {
            ACCESS_FULL => AccessKey::Full(MasterKey::from_parts(first, writer_secret)),
            ACCESS_PUT_ONLY => AccessKey::PutOnly(WriterKey::from_parts(first, writer_secret)),
            other => return Err(bad(&format!("unknown access byte {other}"))),
        };
        first.zeroize();
        writer_secret.zeroize();
        Ok(Self { key, repository_id })
    }

    /// Reads and decodes a key file.
    pub fn read(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let mut bytes = std::fs::read(path).map_err(|e| Error::KeyFile {
            file: file.clone(),
            reason: format!("cannot be read: {e}"),
        })?;
        let decoded = Self::decode(&bytes, &file);
        bytes.zeroize();
        decoded
    }

    /// Writes the key file at `path` with mode 0600. Refuses to overwrite an existing file.
    pub fn write_new(&self, path: &Path) -> Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let context = format!("creating key file {}", path.display());
        let mut bytes = self.encode();
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            });
        bytes.zeroize();
        written.map_err(|e| Error::io(context, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(put_only: bool) -> KeyFile {
        let master = MasterKey::from_parts([1; 32], [2; 32]);
        KeyFile {
            key: if put_only {
                AccessKey::PutOnly(master.writer().clone())
            } else {
                AccessKey::Full(master)
            },
            repository_id: [3; 32],
        }
    }

    #[test]
    fn round_trips_both_kinds() {
        for put_only in [true, false] {
            let bytes = sample(put_only).encode();
            assert_eq!(bytes.len(), KEY_FILE_LEN);
            assert_eq!(&bytes[..8], b"BNKRF\x01\x00\x00");
            assert_eq!(bytes[8], if put_only { 1 } else { 2 });
            let decoded = KeyFile::decode(&bytes, "k").unwrap();
            assert_eq!(decoded.repository_id, [3; 32]);
            assert_eq!(decoded.key.is_put_only(), put_only);
            assert_eq!(decoded.key.writer().writer_secret(), &[2; 32]);
            assert_eq!(
                decoded.key.writer().data_public(),
                MasterKey::from_parts([1; 32], [2; 32])
                    .writer()
                    .data_public()
            );
            assert_eq!(decoded.encode(), bytes);
        }
    }

    #[test]
    fn put_only_file_holds_no_data_secret() {
        let bytes = sample(true).encode();
        assert!(!bytes.windows(32).any(|w| w == [1u8; 32]));
    }

    #[test]
    fn every_flipped_bit_and_truncation_is_refused() {
        let bytes = sample(true).encode();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            let err = KeyFile::decode(&bad, "k").unwrap_err();
            assert!(matches!(err, Error::KeyFile { .. }), "{err}");
        }
        for len in [0, 8, KEY_FILE_LEN - 1] {
            assert!(KeyFile::decode(&bytes[..len], "k").is_err());
        }
    }
}
