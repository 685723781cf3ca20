//! Cryptography: XChaCha20-Poly1305 sealing, the repository's key hierarchy and writer
//! sessions.
//!
//! The repository secret is a [`MasterKey`]: an X25519 secret for reading data and a
//! writer secret from which the chunk-id key, the chunker seed, the index id-list key and the
//! config key are derived. Writers hold only a [`WriterKey`] (the X25519 *public* key plus the
//! writer secret). Each writer session draws an ephemeral X25519 pair; its session key comes
//! from Diffie-Hellman with the repository's public key, so only a master-key holder can
//! derive it again later.

mod aead;
mod key;

pub use aead::{NONCE_LEN, SEAL_OVERHEAD, SymmetricKey, TAG_LEN};
pub use key::{AccessKey, MasterKey, SESSION_PUBLIC_LEN, SealingSession, WriterKey};

/// Fills `buf` with bytes from the operating system's CSPRNG.
///
/// # Panics
/// If the operating system has no randomness to give, which leaves no safe way to go on.
pub fn random_bytes(buf: &mut [u8]) {
    #[allow(clippy::expect_used)]
    getrandom::fill(buf).expect("the operating system's random number generator failed");
}

/// Returns `N` random bytes.
pub fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    random_bytes(&mut out);
    out
}
