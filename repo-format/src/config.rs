//! The repository `config`: the only object with a plaintext part.
//!
//! Layout: header (8) || repository id (32) || feature flags: read, write, prune (3 x `u64`) ||
//! default KDF parameters (algorithm `u8`, memory KiB `u32`, iterations `u32`, parallelism
//! `u32`) || body sealed with the config key (associated data `"bunker config"` || every
//! byte before it). The body holds the chunker and pack parameters.

use crate::backend::lock::{LockMode, LockPolicy};
use crate::chunker::ChunkerParams;
use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::WriterKey;
use crate::error::{Error, Result};
use crate::keyslot::KdfParams;
use crate::object::ObjectKind;

const BODY_VERSION: u8 = 1;
/// Body version of a config with an Object Lock policy: version 1's fields, then the lock.
const BODY_VERSION_LOCK: u8 = 2;
/// Write and prune feature bit: objects are locked; writers lock every object they write
/// and prune deletes an object only once its lock has lapsed.
pub const FEATURE_OBJECT_LOCK: u64 = 1;
/// Name of the config object.
pub const CONFIG_NAME: &str = "config";

/// Feature flags this build understands, per operation. A repository that sets a bit this
/// build does not know refuses that operation instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FeatureFlags {
    /// Needed to read (restore, ls, check).
    pub read: u64,
    /// Needed to write (backup).
    pub write: u64,
    /// Needed to delete (forget, prune).
    pub prune: u64,
}

impl FeatureFlags {
    /// Bits known to this build.
    pub const KNOWN: FeatureFlags = FeatureFlags {
        read: 0,
        write: FEATURE_OBJECT_LOCK,
        prune: FEATURE_OBJECT_LOCK,
    };

    /// The flags a repository with these parameters sets.
    pub fn for_params(params: &RepositoryParams) -> Self {
        let lock = if params.lock.is_some() {
            FEATURE_OBJECT_LOCK
        } else {
            0
        };
        FeatureFlags {
            read: 0,
            write: lock,
            prune: lock,
        }
    }
}

/// Operations gated by feature flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reading.
    Read,
    /// Writing.
    Write,
    /// Deleting.
    Prune,
}

/// Parameters in the sealed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RepositoryParams {
    /// FastCDC bounds for files.
    pub chunker: ChunkerParams,
    /// Target size of data packs in bytes.
    pub pack_size: u32,
    /// Fixed chunk size for volumes and disk images.
    pub volume_chunk_size: u32,
    /// zstd level for new blobs (0 stores raw).
    pub compression_level: i32,
    /// Object Lock policy: every object is written locked (body version 2).
    pub lock: Option<LockPolicy>,
}

impl Default for RepositoryParams {
    fn default() -> Self {
        Self {
            chunker: ChunkerParams::default(),
            pack_size: 16 << 20,
            volume_chunk_size: 1 << 20,
            compression_level: 3,
            lock: None,
        }
    }
}

impl RepositoryParams {
    /// Checks the parameters are usable.
    pub fn validate(&self) -> Result<()> {
        self.chunker.validate()?;
        if !(1 << 20..=1 << 30).contains(&self.pack_size) {
            return Err(Error::Invalid(format!(
                "pack size {} must be 1 MiB..1 GiB",
                self.pack_size
            )));
        }
        if !(4096..=64 << 20).contains(&self.volume_chunk_size)
            || !self.volume_chunk_size.is_power_of_two()
        {
            return Err(Error::Invalid(format!(
                "volume chunk size {} must be a power of two in 4 KiB..64 MiB",
                self.volume_chunk_size
            )));
        }
        if !(0..=22).contains(&self.compression_level) {
            return Err(Error::Invalid(format!(
                "compression level {} must be 0..22",
                self.compression_level
            )));
        }
        if let Some(lock) = &self.lock {
            lock.validate()?;
        }
        Ok(())
    }
}

/// The plaintext part of the config, readable without a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigHeader {
    /// Random id of the repository (key slots are bound to it).
    pub repository_id: [u8; 32],
    /// Feature flags.
    pub features: FeatureFlags,
    /// KDF parameters for new key slots.
    pub kdf: KdfParams,
}

/// The whole config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The plaintext part.
    pub header: ConfigHeader,
    /// The sealed part.
    pub params: RepositoryParams,
}

fn encode_header(header: &ConfigHeader) -> Vec<u8> {
    let mut enc = Encoder::with_buffer(ObjectKind::Config.header().to_vec());
    enc.raw(&header.repository_id)
        .u64(header.features.read)
        .u64(header.features.write)
        .u64(header.features.prune);
    header.kdf.encode(&mut enc);
    enc.finish()
}

fn aad(header_bytes: &[u8]) -> Vec<u8> {
    let mut aad = b"bunker config".to_vec();
    aad.extend_from_slice(header_bytes);
    aad
}

impl Config {
    /// Encodes and seals the config.
    pub fn encode(&self, writer: &WriterKey) -> Vec<u8> {
        let mut out = encode_header(&self.header);
        let mut body = Encoder::new();
        let p = &self.params;
        let version = if p.lock.is_some() {
            BODY_VERSION_LOCK
        } else {
            BODY_VERSION
        };
        body.u8(version)
            .u32(p.chunker.min_size)
            .u32(p.chunker.avg_size)
            .u32(p.chunker.max_size)
            .u32(p.pack_size)
            .u32(p.volume_chunk_size)
            .i64(i64::from(p.compression_level));
        if let Some(lock) = &p.lock {
            body.u8(lock.mode.code()).u64(lock.period.as_secs());
        }
        let sealed = writer.config_key().seal(&aad(&out), &body.finish());
        out.extend_from_slice(&sealed);
        out
    }

    /// Decodes the plaintext header; returns it and the offset of the sealed body.
    pub fn decode_header(bytes: &[u8]) -> Result<(ConfigHeader, usize)> {
        let mut dec = ObjectKind::Config.check_header(bytes, CONFIG_NAME)?;
        let corrupt = |e: DecodeError| Error::corrupt(CONFIG_NAME, e.to_string());
        let repository_id = dec.array("repository id").map_err(corrupt)?;
        let features = FeatureFlags {
            read: dec.u64("read features").map_err(corrupt)?,
            write: dec.u64("write features").map_err(corrupt)?,
            prune: dec.u64("prune features").map_err(corrupt)?,
        };
        let kdf = KdfParams::decode(&mut dec).map_err(corrupt)?;
        Ok((
            ConfigHeader {
                repository_id,
                features,
                kdf,
            },
            dec.position(),
        ))
    }

    /// Decodes the config, opening its body with the writer key.
    pub fn decode(bytes: &[u8], writer: &WriterKey) -> Result<Self> {
        let (header, body_offset) = Self::decode_header(bytes)?;
        let body = writer
            .config_key()
            .open(&aad(&bytes[..body_offset]), &bytes[body_offset..])
            .map_err(|_| {
                Error::corrupt(
                    CONFIG_NAME,
                    "config body does not authenticate with this key",
                )
            })?;
        let corrupt = |e: DecodeError| Error::corrupt(CONFIG_NAME, e.to_string());
        let mut dec = Decoder::new(&body);
        let version = dec.u8("config body version").map_err(corrupt)?;
        if version != BODY_VERSION && version != BODY_VERSION_LOCK {
            return Err(Error::Unsupported {
                object: CONFIG_NAME.into(),
                what: format!("config body version {version}"),
            });
        }
        let chunker = ChunkerParams {
            min_size: dec.u32("chunker min").map_err(corrupt)?,
            avg_size: dec.u32("chunker avg").map_err(corrupt)?,
            max_size: dec.u32("chunker max").map_err(corrupt)?,
        };
        let pack_size = dec.u32("pack size").map_err(corrupt)?;
        let volume_chunk_size = dec.u32("volume chunk size").map_err(corrupt)?;
        let level = dec.i64("compression level").map_err(corrupt)?;
        let lock = if version == BODY_VERSION_LOCK {
            let code = dec.u8("lock mode").map_err(corrupt)?;
            let mode = LockMode::from_code(code)
                .ok_or_else(|| Error::corrupt(CONFIG_NAME, format!("unknown lock mode {code}")))?;
            let period = std::time::Duration::from_secs(dec.u64("lock period").map_err(corrupt)?);
            Some(LockPolicy { mode, period })
        } else {
            None
        };
        dec.finish().map_err(corrupt)?;
        if lock.is_some() != (header.features.write & FEATURE_OBJECT_LOCK != 0) {
            return Err(Error::corrupt(
                CONFIG_NAME,
                "the object-lock feature flag and the lock parameters disagree",
            ));
        }
        let params = RepositoryParams {
            chunker,
            pack_size,
            volume_chunk_size,
            compression_level: i32::try_from(level).unwrap_or(i32::MAX),
            lock,
        };
        params
            .validate()
            .map_err(|e| Error::corrupt(CONFIG_NAME, e.to_string()))?;
        Ok(Config { header, params })
    }

    /// Fails with [`Error::Unsupported`] when the repository needs a feature for `operation`
    /// that this build does not know.
    pub fn check_features(&self, operation: Operation) -> Result<()> {
        let (have, known) = match operation {
            Operation::Read => (self.header.features.read, FeatureFlags::KNOWN.read),
            Operation::Write => (self.header.features.write, FeatureFlags::KNOWN.write),
            Operation::Prune => (self.header.features.prune, FeatureFlags::KNOWN.prune),
        };
        let unknown = have & !known;
        if unknown == 0 {
            Ok(())
        } else {
            Err(Error::Unsupported {
                object: CONFIG_NAME.into(),
                what: format!(
                    "the repository needs {operation:?} features {unknown:#x} that this version of bunker does not know; upgrade bunker"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::MasterKey;

    fn config() -> Config {
        Config {
            header: ConfigHeader {
                repository_id: [4; 32],
                features: FeatureFlags::default(),
                kdf: KdfParams::default(),
            },
            params: RepositoryParams::default(),
        }
    }

    #[test]
    fn config_round_trips_and_detects_tampering() {
        let master = MasterKey::generate();
        let bytes = config().encode(master.writer());
        assert_eq!(
            Config::decode(&bytes, master.writer()).expect("decodes"),
            config()
        );
        for pos in [9, 45, bytes.len() - 1] {
            let mut broken = bytes.clone();
            broken[pos] ^= 1;
            assert!(
                Config::decode(&broken, master.writer()).is_err(),
                "flip at {pos}"
            );
        }
        let other = MasterKey::generate();
        assert!(Config::decode(&bytes, other.writer()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_valid_config_round_trips(
            repository_id: [u8; 32],
            features: (u64, u64, u64),
            memory_kib in 8u32..1 << 20,
            iterations in 1u32..10,
            min_exp in 6u32..20,
            level in 0i32..22,
        ) {
            let min_size = 1u32 << min_exp;
            let config = Config {
                header: ConfigHeader {
                    repository_id,
                    // The lock bit must match the body version: no lock here.
                    features: FeatureFlags {
                        read: features.0,
                        write: features.1 & !FEATURE_OBJECT_LOCK,
                        prune: features.2,
                    },
                    kdf: KdfParams { memory_kib, iterations, parallelism: 1 },
                },
                params: RepositoryParams {
                    chunker: ChunkerParams { min_size, avg_size: min_size * 4, max_size: min_size * 16 },
                    compression_level: level,
                    ..RepositoryParams::default()
                },
            };
            let master = MasterKey::from_parts([1; 32], [2; 32]);
            let bytes = config.encode(master.writer());
            proptest::prop_assert_eq!(Config::decode(&bytes, master.writer()).unwrap(), config);
        }
    }

    #[test]
    fn a_lock_policy_round_trips_in_body_version_2() {
        let master = MasterKey::generate();
        let mut config = config();
        config.params.lock = Some(LockPolicy {
            mode: LockMode::Compliance,
            period: std::time::Duration::from_secs(30 * 86400),
        });
        config.header.features = FeatureFlags::for_params(&config.params);
        let bytes = config.encode(master.writer());
        assert_eq!(bytes.len(), config_len_unlocked() + 9);
        assert_eq!(Config::decode(&bytes, master.writer()).unwrap(), config);
        assert!(config.check_features(Operation::Write).is_ok());
        // The flag without the parameters (or the reverse) is refused.
        config.header.features = FeatureFlags::default();
        let bytes = config.encode(master.writer());
        assert!(matches!(
            Config::decode(&bytes, master.writer()),
            Err(Error::Corrupt { .. })
        ));
    }

    fn config_len_unlocked() -> usize {
        config().encode(MasterKey::generate().writer()).len()
    }

    #[test]
    fn unknown_feature_refuses_the_operation() {
        let mut config = config();
        config.header.features.prune = 1 << 3;
        assert!(config.check_features(Operation::Read).is_ok());
        assert!(matches!(
            config.check_features(Operation::Prune),
            Err(Error::Unsupported { .. })
        ));
    }
}
