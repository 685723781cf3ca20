//! Which snapshots a drill restores when none is named.

use std::collections::BTreeMap;

use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::{Repository, SnapshotId};

/// What a drill of every source starts from.
#[derive(Debug, Default)]
pub struct LatestPerSource {
    /// The newest readable snapshot of each source (its `source` tag, else its host and
    /// paths), oldest first.
    pub newest: Vec<(SnapshotId, Snapshot)>,
    /// The snapshots that cannot be read (damaged), with why: whose source they are is
    /// unknown, so each may be some source's newest.
    pub unreadable: Vec<(SnapshotId, bunker_repo_format::Error)>,
}

/// The newest snapshot of each source among those that can be read, and those that cannot.
pub fn latest_per_source(repository: &Repository) -> bunker_repo_format::Result<LatestPerSource> {
    let (readable, unreadable) = repository.load_readable_snapshots()?;
    let mut latest: BTreeMap<String, (SnapshotId, Snapshot)> = BTreeMap::new();
    for (id, snapshot) in readable {
        let newer = latest
            .get(&source_key(&snapshot))
            .is_none_or(|(old_id, old)| (snapshot.time, id) > (old.time, *old_id));
        if newer {
            latest.insert(source_key(&snapshot), (id, snapshot));
        }
    }
    let mut newest: Vec<_> = latest.into_values().collect();
    newest.sort_by_key(|(id, snapshot)| (snapshot.time, *id));
    Ok(LatestPerSource { newest, unreadable })
}

/// `source=NAME` for a policy source's snapshot, else `host=H paths=P...`.
fn source_key(snapshot: &Snapshot) -> String {
    match snapshot.tags.iter().find(|(k, _)| k == "source") {
        Some((_, source)) => format!("source={source}"),
        None => {
            let paths: Vec<String> = snapshot
                .paths
                .iter()
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect();
            format!("host={} paths={}", snapshot.host, paths.join(" "))
        }
    }
}
