//! The repository's key hierarchy and writer sessions.

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::aead::SymmetricKey;
use crate::error::{Error, Result};

/// Length of a session's public key as stored in packs, index segments and snapshots.
pub const SESSION_PUBLIC_LEN: usize = 32;

const CONTEXT_ID_KEY: &str = "bunker v1 2026 chunk id key";
const CONTEXT_CHUNKER_SEED: &str = "bunker v1 2026 chunker seed";
const CONTEXT_INDEX_KEY: &str = "bunker v1 2026 index id-list key";
const CONTEXT_CONFIG_KEY: &str = "bunker v1 2026 config key";
const CONTEXT_SESSION_KEY: &str = "bunker v1 2026 session key";
const CONTEXT_FORGET_KEY: &str = "bunker v1 2026 forget marker key";

/// What a writer needs: the repository's public key and the writer secret.
///
/// It can chunk, name, seal and deduplicate, and read the config body and the id lists of
/// index segments, but it cannot open blobs, trees, pack trailers, index locations or
/// snapshots: those need the [`MasterKey`].
#[derive(Clone)]
pub struct WriterKey {
    data_public: PublicKey,
    writer_secret: [u8; 32],
    id_key: [u8; 32],
    chunker_seed: [u8; 32],
    index_key: SymmetricKey,
    config_key: SymmetricKey,
}

impl Drop for WriterKey {
    fn drop(&mut self) {
        self.writer_secret.zeroize();
        self.id_key.zeroize();
        self.chunker_seed.zeroize();
    }
}

impl std::fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterKey(..)")
    }
}

impl WriterKey {
    /// Builds the writer key from its two stored parts.
    pub fn from_parts(data_public: [u8; 32], writer_secret: [u8; 32]) -> Self {
        Self {
            data_public: PublicKey::from(data_public),
            id_key: blake3::derive_key(CONTEXT_ID_KEY, &writer_secret),
            chunker_seed: blake3::derive_key(CONTEXT_CHUNKER_SEED, &writer_secret),
            index_key: SymmetricKey::derive(CONTEXT_INDEX_KEY, &writer_secret),
            config_key: SymmetricKey::derive(CONTEXT_CONFIG_KEY, &writer_secret),
            writer_secret,
        }
    }

    /// The repository's X25519 public key.
    pub fn data_public(&self) -> [u8; 32] {
        self.data_public.to_bytes()
    }

    /// The writer secret (stored in key slots and key files).
    pub fn writer_secret(&self) -> &[u8; 32] {
        &self.writer_secret
    }

    /// Keyed BLAKE3 of a chunk's plaintext: its blob id bytes.
    pub fn blob_id_bytes(&self, plaintext: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, plaintext).as_bytes()
    }

    /// The secret seed from which the FastCDC gear table is derived.
    pub fn chunker_seed(&self) -> &[u8; 32] {
        &self.chunker_seed
    }

    /// Key that seals the id lists of index segments.
    pub fn index_key(&self) -> &SymmetricKey {
        &self.index_key
    }

    /// Key that seals the config body.
    pub fn config_key(&self) -> &SymmetricKey {
        &self.config_key
    }

    /// Starts a writer session: a fresh ephemeral X25519 pair whose shared secret with the
    /// repository's public key gives the session's sealing key.
    pub fn new_session(&self) -> SealingSession {
        let ephemeral = StaticSecret::from(super::random_array::<32>());
        let public = PublicKey::from(&ephemeral).to_bytes();
        let shared = ephemeral.diffie_hellman(&self.data_public);
        SealingSession {
            public,
            key: session_key(shared.as_bytes(), &public, self.data_public.as_bytes()),
        }
    }
}

fn session_key(
    shared: &[u8; 32],
    session_public: &[u8; 32],
    data_public: &[u8; 32],
) -> SymmetricKey {
    let mut material = [0u8; 96];
    material[..32].copy_from_slice(shared);
    material[32..64].copy_from_slice(session_public);
    material[64..].copy_from_slice(data_public);
    let key = SymmetricKey::derive(CONTEXT_SESSION_KEY, &material);
    material.zeroize();
    key
}

/// A writer session: everything it writes is sealed under `key`, and every object it writes
/// carries `public` so that a master-key holder can derive `key` again.
#[derive(Clone, Debug)]
pub struct SealingSession {
    public: [u8; SESSION_PUBLIC_LEN],
    key: SymmetricKey,
}

impl SealingSession {
    /// The session's ephemeral public key.
    pub fn public(&self) -> &[u8; SESSION_PUBLIC_LEN] {
        &self.public
    }

    /// The session's sealing key.
    pub fn key(&self) -> &SymmetricKey {
        &self.key
    }
}

/// The full repository secret: reads and writes everything.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    data_secret: [u8; 32],
    #[zeroize(skip)]
    writer: WriterKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Draws a new random repository secret.
    pub fn generate() -> Self {
        Self::from_parts(super::random_array(), super::random_array())
    }

    /// A new master key with a fresh data key pair but the writer secret of `writer`: the
    /// key of a repository initialised by `copy`, so that blob ids and chunk boundaries
    /// agree with the source and deduplication carries over (FORMAT.md §4.5).
    pub fn generate_sharing_writer(writer: &WriterKey) -> Self {
        Self::from_parts(super::random_array(), writer.writer_secret)
    }

    /// Rebuilds the master key from its two stored secrets.
    pub fn from_parts(data_secret: [u8; 32], writer_secret: [u8; 32]) -> Self {
        let public = PublicKey::from(&StaticSecret::from(data_secret)).to_bytes();
        Self {
            data_secret,
            writer: WriterKey::from_parts(public, writer_secret),
        }
    }

    /// The X25519 data secret (stored in key slots).
    pub fn data_secret(&self) -> &[u8; 32] {
        &self.data_secret
    }

    /// The writer part of the key.
    pub fn writer(&self) -> &WriterKey {
        &self.writer
    }

    /// The key that seals forget markers (FORMAT.md §13b). It derives from the data secret,
    /// so only full-key holders can write or read a marker: a put-only writer cannot make
    /// prune delete a snapshot.
    pub fn forget_key(&self) -> SymmetricKey {
        SymmetricKey::derive(CONTEXT_FORGET_KEY, &self.data_secret)
    }

    /// Derives the sealing key of the session whose public key is `session_public`.
    ///
    /// Fails for a low-order public key (a forged object), whose shared secret would be zero.
    pub fn session_key(&self, session_public: &[u8; 32], object: &str) -> Result<SymmetricKey> {
        let secret = StaticSecret::from(self.data_secret);
        let shared = secret.diffie_hellman(&PublicKey::from(*session_public));
        if !shared.was_contributory() {
            return Err(Error::corrupt(object, "session public key is of low order"));
        }
        Ok(session_key(
            shared.as_bytes(),
            session_public,
            self.writer.data_public.as_bytes(),
        ))
    }
}

/// The key a repository was opened with: the full key, or a put-only writer key.
#[derive(Clone, Debug)]
pub enum AccessKey {
    /// Reads and writes everything.
    Full(MasterKey),
    /// Writes and deduplicates, reads nothing that a backup holds (FORMAT.md §4.4).
    PutOnly(WriterKey),
}

impl AccessKey {
    /// The writer part, which every key has.
    pub fn writer(&self) -> &WriterKey {
        match self {
            AccessKey::Full(master) => master.writer(),
            AccessKey::PutOnly(writer) => writer,
        }
    }

    /// The master key, or [`Error::KeyLacksReadAccess`] naming `operation` for a put-only key.
    pub fn master(&self, operation: &'static str) -> Result<&MasterKey> {
        match self {
            AccessKey::Full(master) => Ok(master),
            AccessKey::PutOnly(_) => Err(Error::KeyLacksReadAccess { operation }),
        }
    }

    /// True for a put-only key.
    pub fn is_put_only(&self) -> bool {
        matches!(self, AccessKey::PutOnly(_))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_derives_the_writers_session_key() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let sealed = session.key().seal(b"ctx", b"hello");
        let key = master
            .session_key(session.public(), "test")
            .expect("contributory");
        assert_eq!(key.open(b"ctx", &sealed).expect("opens"), b"hello");

        let other = MasterKey::generate();
        let wrong = other
            .session_key(session.public(), "test")
            .expect("contributory");
        assert!(wrong.open(b"ctx", &sealed).is_err());
    }

    #[test]
    fn low_order_session_key_is_rejected() {
        let master = MasterKey::generate();
        assert!(master.session_key(&[0u8; 32], "obj").is_err());
    }

    #[test]
    fn writer_parts_rebuild_the_same_derived_keys() {
        let master = MasterKey::generate();
        let writer = WriterKey::from_parts(
            master.writer().data_public(),
            *master.writer().writer_secret(),
        );
        assert_eq!(
            writer.blob_id_bytes(b"x"),
            master.writer().blob_id_bytes(b"x")
        );
        assert_eq!(writer.chunker_seed(), master.writer().chunker_seed());
        assert_ne!(writer.blob_id_bytes(b"x"), *blake3::hash(b"x").as_bytes());
    }
}
