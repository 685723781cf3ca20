//! Key slots: the repository secret wrapped by a password through Argon2id.
//!
//! Layout: header (8) || KDF parameters (algorithm `u8` = 1 for Argon2id, memory KiB `u32`,
//! iterations `u32`, parallelism `u32`) || salt (16) || created (`i64` seconds) || host ||
//! user name || label (length-prefixed UTF-8) || sealed secret: XChaCha20-Poly1305 under the
//! Argon2id output, associated data `"bunker key slot"` || every byte before it, plaintext
//! data secret (32) || writer secret (32) || repository id (32).
//!
//! The metadata is plaintext so that `key list` can show every slot, and authenticated so it
//! cannot be altered unnoticed by a password holder.

use argon2::{Algorithm, Argon2, Block, Params, Version};
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::{MasterKey, SymmetricKey};
use crate::error::{Error, Result};
use crate::id::{KeySlotId, content_hash};
use crate::object::ObjectKind;

const ALGORITHM_ARGON2ID: u8 = 1;
const SECRET_LEN: usize = 96;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over memory.
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 48 MiB, 4 passes, 4 lanes. An attacker pays memory × passes per guess: 192 MiB
    /// passes, as with RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes);
    /// §4 trades memory for passes this way when memory is scarce. Every command unlocks,
    /// and the Argon2 memory is its peak when little else happens (a backup of an
    /// unchanged tree), so 16 MiB less memory there is worth one more pass: it costs the
    /// same time. The lanes are filled on the rayon pool, so unlocking takes half the time
    /// on two cores as with one lane.
    fn default() -> Self {
        Self {
            memory_kib: 48 * 1024,
            iterations: 4,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// The cheapest parameters Argon2 accepts; for tests only.
    pub const fn insecure_for_tests() -> Self {
        Self {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        }
    }

    /// What a derivation costs, in KiB filled: memory times passes.
    pub fn cost(&self) -> u64 {
        u64::from(self.memory_kib) * u64::from(self.iterations)
    }

    pub(crate) fn encode(&self, enc: &mut Encoder) {
        enc.u8(ALGORITHM_ARGON2ID)
            .u32(self.memory_kib)
            .u32(self.iterations)
            .u32(self.parallelism);
    }

    pub(crate) fn decode(dec: &mut Decoder<'_>) -> Result<Self, DecodeError> {
        let algorithm = dec.u8("kdf algorithm")?;
        if algorithm != ALGORITHM_ARGON2ID {
            return Err(DecodeError::invalid(
                "kdf algorithm",
                format!("unknown algorithm {algorithm}"),
            ));
        }
        let params = Self {
            memory_kib: dec.u32("kdf memory")?,
            iterations: dec.u32("kdf iterations")?,
            parallelism: dec.u32("kdf parallelism")?,
        };
        params
            .validate()
            .map_err(|e| DecodeError::invalid("kdf parameters", e.to_string()))?;
        Ok(params)
    }

    /// Bounds that keep a forged slot from making us allocate or spin without limit:
    /// memory 8 KiB..4 GiB, 1..=64 iterations, 1..=64 lanes.
    pub fn validate(&self) -> Result<()> {
        let lanes = self.parallelism;
        let least_memory = 8u32.saturating_mul(lanes.max(1));
        let problem = if !(1..=64).contains(&lanes) {
            format!("{lanes} lanes (1 to 64)")
        } else if !(1..=64).contains(&self.iterations) {
            format!("{} iterations (1 to 64)", self.iterations)
        } else if !(least_memory..=4 << 20).contains(&self.memory_kib) {
            format!(
                "{} KiB of memory ({least_memory} KiB, 8 per lane, to 4 GiB)",
                self.memory_kib
            )
        } else {
            return Ok(());
        };
        Err(Error::Invalid(format!(
            "Argon2id parameters out of bounds: {problem}"
        )))
    }

    fn derive(&self, password: &[u8], salt: &[u8; 16]) -> Result<SymmetricKey> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Invalid(format!("KDF parameters: {e}")))?;
        let memory = kdf_memory(params.block_count())?;
        let mut out = Zeroizing::new([0u8; 32]);
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_into_with_memory(password, salt, out.as_mut(), memory)
            .map_err(|e| Error::Invalid(format!("Argon2id: {e}")))?;
        Ok(SymmetricKey::from_bytes(*out))
    }
}

/// Argon2's memory of `blocks` KiB, zeroed on the rayon pool, a part per thread. argon2
/// zeroes the memory it allocates itself on the calling thread alone (`alloc_zeroed` of
/// its 64-byte aligned blocks is an allocation and a `memset`), and faulting in 48 MiB
/// page by page held every command for 20-25 ms before the lanes were filled side by side
/// (docs/PERFORMANCE.md, session 36).
fn kdf_memory(blocks: usize) -> Result<Vec<Block>> {
    let mut memory = Vec::new();
    memory
        .try_reserve_exact(blocks)
        .map_err(|_| Error::Invalid(format!("Argon2id: cannot allocate {blocks} KiB of memory")))?;
    memory.par_extend((0..blocks).into_par_iter().map(|_| Block::new()));
    Ok(memory)
}

/// Who made a slot and when; stored in plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeySlotInfo {
    /// Unix seconds.
    pub created: i64,
    /// Host that created it.
    pub host: String,
    /// User that created it.
    pub username: String,
    /// Free text.
    pub label: String,
}

/// A decoded (still sealed) key slot.
#[derive(Debug, Clone)]
pub struct KeySlot {
    /// Content hash of the stored bytes.
    pub id: KeySlotId,
    /// KDF parameters.
    pub kdf: KdfParams,
    /// Plaintext metadata.
    pub info: KeySlotInfo,
    salt: [u8; 16],
    aad_len: usize,
    bytes: Vec<u8>,
}

fn aad(prefix: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker key slot".to_vec();
    aad.extend_from_slice(prefix);
    aad
}

impl KeySlot {
    /// Wraps `key` (bound to `repository_id`) under `password`; returns the stored bytes.
    pub fn seal(
        key: &MasterKey,
        repository_id: &[u8; 32],
        password: &[u8],
        kdf: KdfParams,
        info: &KeySlotInfo,
    ) -> Result<(KeySlotId, Vec<u8>)> {
        kdf.validate()?;
        let salt: [u8; 16] = crate::crypto::random_array();
        let mut enc = Encoder::with_buffer(ObjectKind::KeySlot.header().to_vec());
        kdf.encode(&mut enc);
        enc.raw(&salt)
            .i64(info.created)
            .str(&info.host)
            .str(&info.username)
            .str(&info.label);
        let mut out = enc.finish();
        let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
        secret[..32].copy_from_slice(key.data_secret());
        secret[32..64].copy_from_slice(key.writer().writer_secret());
        secret[64..].copy_from_slice(repository_id);
        let wrapping = kdf.derive(password, &salt)?;
        let sealed = wrapping.seal(&aad(&out), secret.as_ref());
        out.extend_from_slice(&sealed);
        Ok((KeySlotId::from_bytes(content_hash(&out)), out))
    }

    /// Parses a stored slot without opening it.
    pub fn decode(bytes: &[u8], object: &str) -> Result<Self> {
        let mut dec = ObjectKind::KeySlot.check_header(bytes, object)?;
        let corrupt = |e: DecodeError| Error::corrupt(object, e.to_string());
        let kdf = KdfParams::decode(&mut dec).map_err(corrupt)?;
        let salt = dec.array("salt").map_err(corrupt)?;
        let info = KeySlotInfo {
            created: dec.i64("created").map_err(corrupt)?,
            host: dec.string("host").map_err(corrupt)?,
            username: dec.string("user").map_err(corrupt)?,
            label: dec.string("label").map_err(corrupt)?,
        };
        let aad_len = dec.position();
        if dec.remaining() != SECRET_LEN + crate::crypto::SEAL_OVERHEAD {
            return Err(Error::corrupt(object, "sealed secret has the wrong length"));
        }
        Ok(Self {
            id: KeySlotId::from_bytes(content_hash(bytes)),
            kdf,
            info,
            salt,
            aad_len,
            bytes: bytes.to_vec(),
        })
    }

    /// Opens the slot with `password`. `Ok(None)` means the password does not fit.
    ///
    /// Returns the master key and the repository id it is bound to.
    pub fn open(&self, password: &[u8]) -> Result<Option<(MasterKey, [u8; 32])>> {
        let wrapping = self.kdf.derive(password, &self.salt)?;
        let Ok(secret) = wrapping.open(
            &aad(&self.bytes[..self.aad_len]),
            &self.bytes[self.aad_len..],
        ) else {
            return Ok(None);
        };
        let secret = Zeroizing::new(secret);
        let mut data_secret = [0u8; 32];
        let mut writer_secret = [0u8; 32];
        let mut repository_id = [0u8; 32];
        data_secret.copy_from_slice(&secret[..32]);
        writer_secret.copy_from_slice(&secret[32..64]);
        repository_id.copy_from_slice(&secret[64..]);
        Ok(Some((
            MasterKey::from_parts(data_secret, writer_secret),
            repository_id,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_opens_with_its_password_only() {
        let master = MasterKey::generate();
        let info = KeySlotInfo {
            created: 1_700_000_000,
            host: "h".into(),
            username: "u".into(),
            label: "first".into(),
        };
        let (id, bytes) = KeySlot::seal(
            &master,
            &[1; 32],
            b"pw",
            KdfParams::insecure_for_tests(),
            &info,
        )
        .expect("seals");
        let slot = KeySlot::decode(&bytes, "keys/x").expect("decodes");
        assert_eq!(slot.id, id);
        assert_eq!(slot.info, info);
        let (opened, repo) = slot.open(b"pw").expect("kdf ok").expect("password fits");
        assert_eq!(repo, [1; 32]);
        assert_eq!(opened.data_secret(), master.data_secret());
        assert!(slot.open(b"wrong").expect("kdf ok").is_none());

        let mut tampered = bytes.clone();
        let label_pos = bytes.len() - SECRET_LEN - crate::crypto::SEAL_OVERHEAD - 1;
        tampered[label_pos] ^= 1;
        let slot = KeySlot::decode(&tampered, "keys/x").expect("still parses");
        assert!(
            slot.open(b"pw").expect("kdf ok").is_none(),
            "altered metadata must not open"
        );
        assert!(KeySlot::decode(&bytes[..bytes.len() - 1], "keys/x").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        #[test]
        fn any_slot_round_trips(password in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..40), created: i64, host in ".{0,20}", label in ".{0,20}", repository_id: [u8; 32]) {
            let master = MasterKey::generate();
            let info = KeySlotInfo { created, host, username: "u".into(), label };
            let (id, bytes) = KeySlot::seal(&master, &repository_id, &password, KdfParams::insecure_for_tests(), &info).unwrap();
            let slot = KeySlot::decode(&bytes, "keys/x").unwrap();
            proptest::prop_assert_eq!(slot.id, id);
            proptest::prop_assert_eq!(&slot.info, &info);
            let (opened, repo) = slot.open(&password).unwrap().unwrap();
            proptest::prop_assert_eq!(repo, repository_id);
            proptest::prop_assert_eq!(opened.data_secret(), master.data_secret());
            proptest::prop_assert_eq!(opened.writer().writer_secret(), master.writer().writer_secret());
        }
    }

    /// The default asks an attacker for at least the memory × passes of RFC 9106's second
    /// recommended option (64 MiB × 3) while peaking below 64 MiB, and unlocks in the same
    /// time (Argon2 time grows with memory × passes).
    #[test]
    fn default_costs_as_much_as_rfc_9106_option_two_in_less_memory() {
        let default = KdfParams::default();
        let rfc_option_two = 64 * 1024 * 3;
        assert!(u64::from(default.memory_kib) * u64::from(default.iterations) >= rfc_option_two);
        assert!(
            u64::from(default.memory_kib) * u64::from(default.iterations) <= rfc_option_two * 9 / 8
        );
        assert!(default.memory_kib < 64 * 1024);
        assert!(default.validate().is_ok());
    }

    /// New slots fill four lanes on the rayon pool (argon2's `parallel` feature). RFC 9106's
    /// Argon2id vector (§5.3: 4 lanes, 32 KiB, 3 passes) proves that path gives the standard
    /// output, so slots made here open anywhere Argon2id is implemented.
    #[test]
    fn four_lanes_filled_in_parallel_give_rfc_9106_output() {
        assert_eq!(KdfParams::default().parallelism, 4);
        let params = argon2::ParamsBuilder::new()
            .m_cost(32)
            .t_cost(3)
            .p_cost(4)
            .data(argon2::AssociatedData::new(&[0x04; 12]).expect("12 bytes"))
            .build()
            .expect("params");
        let argon =
            Argon2::new_with_secret(&[0x03; 8], Algorithm::Argon2id, Version::V0x13, params)
                .expect("secret");
        let mut tag = [0u8; 32];
        argon
            .hash_password_into(&[0x01; 32], &[0x02; 16], &mut tag)
            .expect("argon2");
        assert_eq!(
            hex::encode(tag),
            "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
        );
    }

    /// Found by the `key_slot` and `config` fuzz targets: a huge parallelism overflowed the
    /// memory bound check before any key was needed.
    #[test]
    fn regression_fuzz_parallelism_overflow_is_an_error() {
        let slot = hex::decode("424e4b524b01000001080000000100000000000020").expect("hex");
        assert!(KeySlot::decode(&slot, "keys/x").is_err());
        let mut config = hex::decode("424e4b5243010000").expect("hex");
        config.extend_from_slice(&[0u8; 56]);
        config.extend_from_slice(&hex::decode("01080000000100000000000020").expect("hex"));
        assert!(crate::config::Config::decode_header(&config).is_err());
    }

    #[test]
    fn absurd_kdf_parameters_are_refused() {
        let huge = KdfParams {
            memory_kib: u32::MAX,
            iterations: 1,
            parallelism: 1,
        };
        let problem = |params: KdfParams| match params.validate() {
            Err(Error::Invalid(message)) => message,
            other => panic!("{params:?} passed: {other:?}"),
        };
        assert!(problem(huge).ends_with("4294967295 KiB of memory (8 KiB, 8 per lane, to 4 GiB)"));
        let lanes = KdfParams {
            memory_kib: 8192,
            iterations: 1,
            parallelism: 81,
        };
        assert!(problem(lanes).ends_with(": 81 lanes (1 to 64)"));
        let passes = KdfParams {
            iterations: 0,
            ..lanes
        };
        assert!(
            problem(KdfParams {
                parallelism: 4,
                ..passes
            })
            .ends_with(": 0 iterations (1 to 64)")
        );
    }
}
