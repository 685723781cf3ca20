//! Rebuilding a damaged or missing `config` (`bunker repair config`).
//!
//! The config is one small object every command reads first: damaged, it makes the whole
//! repository unreadable although nothing else is lost. Everything a reader needs from it
//! can be had again. A key slot's sealed secret holds the repository id beside the master
//! key, so the password opens a slot without the config; the config key derives from the
//! master key (FORMAT.md §4.2); the plaintext header, when it still decodes, keeps the
//! feature flags and KDF defaults, else the opened slot gives its KDF parameters. The
//! parameters in the sealed body steer only how new data is written (chunker bounds, pack
//! size, volume chunk size, zstd level, Object Lock), never how stored data is read: the
//! caller gives them as `init` took them.
//!
//! The new config replaces the old one (delete, then a create-only put); a config that
//! opens with the password is never replaced.

use std::sync::Arc;

use crate::backend::Backend;
use crate::config::{CONFIG_NAME, Config, ConfigHeader, FeatureFlags, RepositoryParams};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::KeySlotId;
use crate::keyslot::KeySlot;
use crate::object::{ObjectKind, verify_content_hash};
use crate::repository::Repository;

/// What [`rebuild_config`] found and did.
#[derive(Debug, Clone)]
pub struct ConfigRebuild {
    /// Why the old config could not be used (`config: missing`, or the decoding error).
    pub damage: String,
    /// The old header decoded and was kept (repository id, feature flags, KDF defaults);
    /// else they came from the key slot and the parameters given.
    pub header_kept: bool,
    /// The key slot the password opened.
    pub slot: KeySlotId,
    /// The config written (or, for a dry run, that would be).
    pub config: Config,
}

/// Writes a new config for the repository in `backend`, from the key slot `password`
/// opens and `params` (see the module documentation). Refuses when the config there opens
/// with that password; with `dry_run`, works everything out and writes nothing.
pub fn rebuild_config(
    backend: Arc<dyn Backend>,
    password: &[u8],
    params: RepositoryParams,
    dry_run: bool,
) -> Result<ConfigRebuild> {
    params.validate()?;
    let old = match backend.get(CONFIG_NAME) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.is_not_found() => None,
        Err(e) => return Err(e),
    };
    let old_header = old
        .as_deref()
        .and_then(|bytes| Config::decode_header(bytes).ok())
        .map(|(header, _)| header);
    let (key, repository_id, slot) = open_slot(backend.as_ref(), password, old_header.as_ref())?;
    let damage = match &old {
        None => format!("{CONFIG_NAME}: missing"),
        Some(bytes) => match Config::decode(bytes, key.writer()) {
            Ok(_) => {
                return Err(Error::Invalid(format!(
                    "{}/{CONFIG_NAME} is intact: it opens with this password, nothing to repair",
                    backend.location()
                )));
            }
            Err(e) if e.is_damage() => e.to_string(),
            Err(e) => return Err(e),
        },
    };
    let features = FeatureFlags::for_params(&params);
    let header = match &old_header {
        Some(header) if header.repository_id == repository_id => {
            if header.features != features {
                return Err(Error::Invalid(format!(
                    "the config's header sets the feature flags {:?}; the parameters given \
                     set {features:?}: give the Object Lock mode and period the repository \
                     was created with (or none)",
                    header.features
                )));
            }
            header.clone()
        }
        _ => ConfigHeader {
            repository_id,
            features,
            kdf: slot.kdf,
        },
    };
    let config = Config { header, params };
    check_key_reads_the_repository(&backend, &config, &key)?;
    let rebuild = ConfigRebuild {
        damage,
        header_kept: old_header.is_some_and(|h| h.repository_id == repository_id),
        slot: slot.id,
        config,
    };
    if dry_run {
        return Ok(rebuild);
    }
    if let Some(lock) = params.lock {
        backend.enable_lock(lock)?;
    }
    if old.is_some() {
        backend.delete(CONFIG_NAME)?;
    }
    backend.put_if_absent(CONFIG_NAME, &rebuild.config.encode(key.writer()))?;
    // Proof that it opens as any command will.
    Repository::open(backend, password)?;
    Ok(rebuild)
}

/// Refuses a key that does not read what the repository stores: one index segment and one
/// snapshot, when there are any. A slot left by another repository (an `init` that lost a
/// race for this location) would otherwise bind the repository to a key that opens none
/// of its data.
fn check_key_reads_the_repository(
    backend: &Arc<dyn Backend>,
    config: &Config,
    key: &MasterKey,
) -> Result<()> {
    let repo = Repository::with_config(Arc::clone(backend), config.clone(), key.clone())?;
    let refuse = |what: &str, e: Error| {
        Error::Invalid(format!(
            "the key slot's key does not read this repository's {what} ({e}): it is not \
             this repository's key; try another password"
        ))
    };
    if let Some(id) = repo.list_index_ids()?.first() {
        match repo.load_index_segment(id) {
            Err(e) if e.is_damage() => return Err(refuse(&format!("index segment {id}"), e)),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    if let Some(id) = repo.list_snapshot_ids()?.first() {
        match repo.load_snapshot(id) {
            Err(e) if e.is_damage() => return Err(refuse(&format!("snapshot {id}"), e)),
            Err(e) => return Err(e),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// The master key and repository id from the first key slot `password` opens (one of the
/// repository `header` names, when the old header still decodes), and the slot.
fn open_slot(
    backend: &dyn Backend,
    password: &[u8],
    header: Option<&ConfigHeader>,
) -> Result<(MasterKey, [u8; 32], KeySlot)> {
    let prefix = ObjectKind::KeySlot.prefix();
    let mut tried = 0;
    let mut other = None;
    for meta in backend.list(prefix)? {
        let bytes = backend.get(&meta.name)?;
        let Some(id) = meta
            .name
            .strip_prefix(prefix)
            .and_then(|hex| hex.parse::<KeySlotId>().ok())
        else {
            continue;
        };
        // A damaged slot is passed over: another may open.
        if verify_content_hash(&bytes, id.as_bytes(), &meta.name).is_err() {
            continue;
        }
        let Ok(slot) = KeySlot::decode(&bytes, &meta.name) else {
            continue;
        };
        tried += 1;
        if let Some((key, repository_id)) = slot.open(password)? {
            if header.is_some_and(|h| h.repository_id != repository_id) {
                // The header's id may be what is damaged, or this is the slot of another
                // repository (an `init` that lost a race here): a slot that agrees with
                // the header wins; else the key must prove it reads the stored data.
                other.get_or_insert((key, repository_id, slot));
                continue;
            }
            return Ok((key, repository_id, slot));
        }
    }
    if let Some(found) = other {
        return Ok(found);
    }
    if tried == 0 {
        return Err(Error::corrupt(
            format!("{}/{prefix}", backend.location()),
            "no readable key slot: without one the config cannot be rebuilt",
        ));
    }
    Err(Error::WrongPassword {
        location: backend.location(),
        slots: tried,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::backend::{LockMode, LockPolicy};
    use crate::keyslot::KdfParams;
    use crate::repository::InitOptions;

    fn params() -> RepositoryParams {
        RepositoryParams {
            compression_level: 7,
            volume_chunk_size: 256 << 10,
            ..RepositoryParams::default()
        }
    }

    #[test]
    fn a_damaged_body_is_rebuilt_under_the_same_header_and_an_intact_one_is_refused() {
        let backend = Arc::new(MemoryBackend::new());
        let options = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            params: params(),
            ..InitOptions::default()
        };
        let before = Repository::init(backend.clone(), b"pw", options).unwrap();
        let intact = rebuild_config(backend.clone(), b"pw", params(), false).unwrap_err();
        assert!(intact.to_string().contains("is intact"), "{intact}");

        let last = backend.get(CONFIG_NAME).unwrap().len() - 1;
        backend.corrupt(CONFIG_NAME, |bytes| bytes[last] ^= 1);
        assert!(Repository::open(backend.clone(), b"pw").is_err());
        // A lock the header does not record is refused, nothing written.
        let locked = RepositoryParams {
            lock: Some(LockPolicy {
                mode: LockMode::Governance,
                period: std::time::Duration::from_secs(86_400),
            }),
            ..params()
        };
        let mismatch = rebuild_config(backend.clone(), b"pw", locked, false).unwrap_err();
        assert!(mismatch.to_string().contains("feature flags"), "{mismatch}");
        let rebuilt = rebuild_config(backend.clone(), b"pw", params(), false).unwrap();
        assert!(rebuilt.header_kept);
        let after = Repository::open(backend, b"pw").unwrap();
        assert_eq!(after.config(), before.config());
    }
}
