//! XChaCha20-Poly1305 with random 192-bit nonces.
//!
//! A sealed record is `nonce (24) || ciphertext || tag (16)`. The associated data binds the
//! record to its context (object header, blob id and kind, ...) so records cannot be swapped.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Nonce length of XChaCha20-Poly1305.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Bytes a sealed record adds to its plaintext.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// A 256-bit symmetric key for XChaCha20-Poly1305.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SymmetricKey([u8; 32]);

impl std::fmt::Debug for SymmetricKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SymmetricKey(..)")
    }
}

/// The tag did not verify: wrong key, wrong context or altered bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed (wrong key or altered bytes)")]
pub struct OpenError;

impl SymmetricKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Derives a key from `material` for one purpose (BLAKE3 `derive_key`).
    pub fn derive(context: &str, material: &[u8]) -> Self {
        Self(blake3::derive_key(context, material))
    }

    /// Raw key bytes (for key derivation and key-file encoding only).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.0.into())
    }

    /// Seals `plaintext`, appending `nonce || ciphertext || tag` to `out`.
    pub fn seal_into(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        self.seal_parts_into(aad, &[plaintext], out);
    }

    /// Seals the concatenation of `parts` like [`SymmetricKey::seal_into`], without
    /// concatenating them first: each is copied once, into `out`, and encrypted there.
    pub fn seal_parts_into(&self, aad: &[u8], parts: &[&[u8]], out: &mut Vec<u8>) {
        let nonce: [u8; NONCE_LEN] = super::random_array();
        out.reserve(parts.iter().map(|part| part.len()).sum::<usize>() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        let start = out.len();
        for part in parts {
            out.extend_from_slice(part);
        }
        let tag = self
            .cipher()
            .encrypt_inout_detached(&XNonce::from(nonce), aad, (&mut out[start..]).into())
            // Only fails for plaintexts beyond 256 GiB, which no record comes near.
            .unwrap_or_default();
        out.extend_from_slice(&tag);
    }

    /// Seals `plaintext` into a new vector.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
        self.seal_into(aad, plaintext, &mut out);
        out
    }

    /// Verifies and decrypts a sealed record, returning the plaintext.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let mut plaintext = Vec::new();
        self.open_into(aad, sealed, &mut plaintext)?;
        Ok(plaintext)
    }

    /// Like [`SymmetricKey::open`], into `out` (made the plaintext's length, its allocation
    /// reused). The ciphertext is decrypted from `sealed` straight into `out`, not copied
    /// there first; only the bytes by which `out` grows are zeroed, so a caller that keeps
    /// a buffer's length between records saves that pass too. On failure `out` holds
    /// nothing meaningful.
    pub fn open_into(&self, aad: &[u8], sealed: &[u8], out: &mut Vec<u8>) -> Result<(), OpenError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenError);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        out.resize(ciphertext.len(), 0);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| OpenError)?;
        let tag: [u8; TAG_LEN] = tag.try_into().map_err(|_| OpenError)?;
        let buffer = InOutBuf::new(ciphertext, out.as_mut_slice()).map_err(|_| OpenError)?;
        self.cipher()
            .decrypt_inout_detached(&XNonce::from(nonce), aad, buffer, &Tag::from(tag))
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn seal_open_round_trip(key: [u8; 32], aad in proptest::collection::vec(any::<u8>(), 0..64), msg in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let key = SymmetricKey::from_bytes(key);
            let sealed = key.seal(&aad, &msg);
            prop_assert_eq!(sealed.len(), msg.len() + SEAL_OVERHEAD);
            prop_assert_eq!(key.open(&aad, &sealed).unwrap(), msg);
        }

        #[test]
        fn any_flipped_bit_fails(key: [u8; 32], msg in proptest::collection::vec(any::<u8>(), 1..200), pos: usize, bit in 0u8..8) {
            let key = SymmetricKey::from_bytes(key);
            let mut sealed = key.seal(b"ctx", &msg);
            let pos = pos % sealed.len();
            sealed[pos] ^= 1 << bit;
            prop_assert!(key.open(b"ctx", &sealed).is_err());
        }

        /// One buffer reused for records of any lengths, as the threads that verify and
        /// restore blobs reuse theirs: each opens to exactly its own plaintext, whatever
        /// the buffer held before.
        #[test]
        fn a_reused_buffer_opens_each_record_exactly(key: [u8; 32], messages in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..6)) {
            let key = SymmetricKey::from_bytes(key);
            let mut out = vec![0xa5; 1500];
            for message in &messages {
                let sealed = key.seal(b"ctx", message);
                prop_assert!(key.open_into(b"ctx", &sealed, &mut out).is_ok());
                prop_assert_eq!(&out, message);
            }
        }
    }

    #[test]
    fn wrong_context_fails() {
        let key = SymmetricKey::from_bytes([9; 32]);
        let sealed = key.seal(b"blob A", b"secret");
        assert_eq!(key.open(b"blob B", &sealed), Err(OpenError));
        assert_eq!(key.open(b"blob A", &sealed[..10]), Err(OpenError));
    }
}
