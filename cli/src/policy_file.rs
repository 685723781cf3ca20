//! The agent policy a command follows, and the policy source of a snapshot: one lookup for
//! `bunker verify`, `report`, `restore` and `restores`.

use std::path::{Path, PathBuf};

use anyhow::Result;
use bunker_agent::policy::{DEFAULT_POLICY_PATH, Policy, Source};
use bunker_repo_format::snapshot::Snapshot;

use crate::args::PolicyFileArg;

/// A loaded policy and the file it came from.
#[derive(Debug)]
pub(crate) struct PolicyFile {
    /// The policy, checked.
    pub policy: Policy,
    /// The file, as given (or the default path).
    pub path: PathBuf,
}

impl PolicyFile {
    /// The policy in effect: `--policy FILE` (or `BUNKER_POLICY`), else
    /// /etc/bunker/agent.toml when it exists, else none. A policy that is named or exists
    /// but cannot be read or is invalid is an error, never silently ignored.
    pub(crate) fn in_effect(arg: &PolicyFileArg) -> Result<Option<PolicyFile>> {
        let path = match &arg.file {
            Some(path) => path.clone(),
            None if Path::new(DEFAULT_POLICY_PATH).exists() => PathBuf::from(DEFAULT_POLICY_PATH),
            None => return Ok(None),
        };
        let policy = Policy::load(&path)?;
        Ok(Some(PolicyFile { policy, path }))
    }

    /// The policy source whose snapshot this is (by its `source` tag), if the policy has it.
    pub(crate) fn source_of(&self, snapshot: &Snapshot) -> Option<&Source> {
        let (_, name) = snapshot.tags.iter().find(|(k, _)| k == "source")?;
        self.policy.source(name)
    }
}
