//! `bunker cat config|snapshot`.

use anyhow::Result;
use serde_json::json;

use crate::args::{CatCommand, GlobalOptions};
use crate::output::{print_json, snapshot_json};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, command: CatCommand) -> Result<u8> {
    let repository = repo::open(global, "cat")?;
    match command {
        CatCommand::Config => {
            let config = repository.config();
            let header = &config.header;
            let params = &config.params;
            print_json(&json!({
                "repository_id": hex::encode(header.repository_id),
                "version": 1,
                "features": {
                    "read": header.features.read,
                    "write": header.features.write,
                    "prune": header.features.prune,
                },
                "kdf": {
                    "algorithm": "argon2id",
                    "memory_kib": header.kdf.memory_kib,
                    "iterations": header.kdf.iterations,
                    "parallelism": header.kdf.parallelism,
                },
                "chunker": {
                    "min_size": params.chunker.min_size,
                    "avg_size": params.chunker.avg_size,
                    "max_size": params.chunker.max_size,
                },
                "pack_size": params.pack_size,
                "volume_chunk_size": params.volume_chunk_size,
                "compression_level": params.compression_level,
            }))?;
        }
        CatCommand::Snapshot { id } => {
            let (id, snapshot) = crate::select::resolve(&repository, &id)?;
            print_json(&snapshot_json(&id, &snapshot))?;
        }
    }
    Ok(exit::OK)
}
