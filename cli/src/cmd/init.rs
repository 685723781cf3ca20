//! `bunker init`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::platform;
use bunker_repo_format::backend::LockPolicy;
use bunker_repo_format::config::RepositoryParams;
use bunker_repo_format::keyslot::{KdfParams, KeySlotInfo};
use bunker_repo_format::{InitOptions, Repository};
use serde_json::json;

use crate::args::{GlobalOptions, InitArgs, RepositoryParamArgs};
use crate::output::print_json;
use crate::{exit, password, repo};

/// The repository parameters of `args` (validated).
pub fn repository_params(args: &RepositoryParamArgs) -> Result<RepositoryParams> {
    let lock = match (&args.lock_mode, &args.lock_period) {
        (Some(mode), Some(period)) => Some(LockPolicy {
            mode: mode.parse()?,
            period: *period,
        }),
        _ => None,
    };
    let params = RepositoryParams {
        compression_level: args.compression,
        volume_chunk_size: args.volume_chunk_kib.saturating_mul(1024),
        lock,
        ..RepositoryParams::default()
    };
    params.validate()?;
    Ok(params)
}

pub fn run(global: &GlobalOptions, args: &InitArgs) -> Result<u8> {
    let kdf = KdfParams {
        memory_kib: args.kdf_memory_kib,
        iterations: args.kdf_iterations,
        parallelism: args.kdf_lanes,
    };
    kdf.validate()?;
    let params = repository_params(&args.params)?;
    if let Some(key_file) = &global.key_file {
        anyhow::bail!(
            "init creates the first key slot from a password; --key-file / BUNKER_KEY_FILE ({}) cannot be used",
            key_file.display()
        );
    }
    let backend = repo::create_backend(global)?;
    let password = password::repository_password(global, true)?;
    if password.is_empty() {
        anyhow::bail!("refusing an empty password");
    }
    let options = InitOptions {
        params,
        kdf,
        slot_info: KeySlotInfo {
            created: bunker_agent::backup::now().sec,
            host: platform::hostname(),
            username: platform::username(),
            label: "initial".into(),
        },
    };
    let repository = Repository::init(backend, password.as_bytes(), options)?;
    let id = hex::encode(repository.config().header.repository_id);
    if global.json {
        print_json(&json!({ "repository": repository.location(), "id": id }))?;
    } else {
        writeln!(
            std::io::stdout(),
            "created bunker repository {} at {}",
            &id[..8],
            repository.location()
        )?;
    }
    Ok(exit::OK)
}
