//! Which snapshots a command means: `--host`, `--tag` and `--path` narrow the snapshots that
//! `latest` picks from (and that `snapshots` and `verify` list), so that `latest` names the
//! newest backup of one source in a repository that many hosts and sources share;
//! `latest~N` names the Nth before it (`latest~1`: the one before the newest).

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::{Result, anyhow, bail};
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::{Repository, SnapshotId};
use clap::Args;

use crate::values;

/// The snapshot filters of a command's arguments.
#[derive(Debug, Args, Clone, Default)]
pub struct SelectArgs {
    /// Only snapshots of this host.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Only snapshots with this tag (repeatable; all must match).
    #[arg(long = "tag", value_name = "KEY=VALUE", value_parser = values::tag)]
    pub tags: Vec<(String, String)>,
    /// Only snapshots that backed up this path, as given to `backup` (made absolute; a
    /// stream or volume snapshot's path is `/NAME`). Repeatable; all must be among the
    /// snapshot's paths.
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

impl SelectArgs {
    /// The filters, paths made absolute as `backup` records them ([`source_path`]).
    ///
    /// [`source_path`]: bunker_agent::backup::source_path
    pub fn filter(&self) -> Result<SnapshotFilter> {
        let paths = self
            .paths
            .iter()
            .map(|path| {
                let absolute = bunker_agent::backup::source_path(path)
                    .map_err(|e| anyhow::anyhow!("--path {}: {e}", path.display()))?;
                Ok(absolute.as_os_str().as_bytes().to_vec())
            })
            .collect::<Result<_>>()?;
        Ok(SnapshotFilter {
            host: self.host.clone(),
            tags: self.tags.clone(),
            paths,
        })
    }
}

/// Snapshots of one host, with some tags, of some paths: each part that is given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotFilter {
    host: Option<String>,
    tags: Vec<(String, String)>,
    paths: Vec<Vec<u8>>,
}

impl SnapshotFilter {
    /// True when nothing narrows the choice.
    pub fn is_empty(&self) -> bool {
        self.host.is_none() && self.tags.is_empty() && self.paths.is_empty()
    }

    /// Whether `snapshot` passes every filter.
    pub fn matches(&self, snapshot: &Snapshot) -> bool {
        self.host.as_ref().is_none_or(|host| &snapshot.host == host)
            && self.tags.iter().all(|tag| snapshot.tags.contains(tag))
            && self.paths.iter().all(|path| snapshot.paths.contains(path))
    }

    /// The filters as they would be given on the command line.
    pub fn describe(&self) -> String {
        let host = self.host.iter().map(|host| format!("--host {host}"));
        let tags = self.tags.iter().map(|(k, v)| format!("--tag {k}={v}"));
        let paths = self
            .paths
            .iter()
            .map(|path| format!("--path {}", String::from_utf8_lossy(path)));
        host.chain(tags).chain(paths).collect::<Vec<_>>().join(" ")
    }

    /// The snapshot `spec` names among those that match: `latest` is the newest of them that
    /// can be read (each unreadable one is named on stderr), `latest~N` the Nth before it;
    /// an id prefix must name one that matches.
    pub fn resolve(&self, repository: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if let Some(back) = latest_offset(spec)? {
            let (readable, unreadable) = repository.load_readable_snapshots()?;
            warn_left_out(&unreadable);
            let matching: Vec<_> = readable
                .into_iter()
                .filter(|(_, snapshot)| self.matches(snapshot))
                .collect();
            let count = matching.len();
            return match matching.into_iter().rev().nth(back) {
                Some(found) => Ok(found),
                None if count > 0 => {
                    let which = if self.is_empty() {
                        "can be read".to_owned()
                    } else {
                        format!("match {}", self.describe())
                    };
                    bail!(
                        "{spec} needs {} snapshots and only {count} {which}",
                        back + 1
                    )
                }
                None if !self.is_empty() => bail!("no snapshot matches {}", self.describe()),
                None if unreadable.is_empty() => bail!("the repository has no snapshots"),
                None => bail!("the repository has no readable snapshots"),
            };
        }
        let (id, snapshot) = repository.resolve_snapshot(spec)?;
        if !self.matches(&snapshot) {
            bail!("snapshot {} does not match {}", id.short(), self.describe());
        }
        Ok((id, snapshot))
    }
}

/// True when `spec` is `latest` or `latest~N` (a malformed N included, for its error)
/// rather than an id prefix.
pub fn names_latest(spec: &str) -> bool {
    !matches!(latest_offset(spec), Ok(None))
}

/// How many snapshots before the newest `spec` names: 0 for `latest`, N for `latest~N`;
/// `None` for an id prefix.
fn latest_offset(spec: &str) -> Result<Option<usize>> {
    if spec == "latest" {
        return Ok(Some(0));
    }
    spec.strip_prefix("latest~")
        .map(|n| {
            n.parse::<usize>().map_err(|_| {
                anyhow!(
                    "{spec:?}: write latest~N with N a number (latest~1 is the one before latest)"
                )
            })
        })
        .transpose()
}

/// The snapshot `spec` names, `latest`, `latest~N` or an id prefix, with no filter: `latest`
/// is the newest snapshot that can be read (each unreadable one is named on stderr).
pub fn resolve(repository: &Repository, spec: &str) -> Result<(SnapshotId, Snapshot)> {
    SnapshotFilter::default().resolve(repository, spec)
}

/// Every snapshot that can be read, oldest first; each one that cannot is named on stderr
/// (`check` reports the damage; `forget ID` removes it).
pub fn readable_snapshots(repository: &Repository) -> Result<Vec<(SnapshotId, Snapshot)>> {
    let (readable, unreadable) = repository.load_readable_snapshots()?;
    warn_left_out(&unreadable);
    Ok(readable)
}

/// The snapshots a command works on, oldest first: those `specs` name (`latest` or id
/// prefixes, each once), or with none every readable snapshot; all must match `filter`.
pub fn chosen_snapshots(
    repository: &Repository,
    filter: &SnapshotFilter,
    specs: &[String],
) -> Result<Vec<(SnapshotId, Snapshot)>> {
    if specs.is_empty() {
        return Ok(readable_snapshots(repository)?
            .into_iter()
            .filter(|(_, snapshot)| filter.matches(snapshot))
            .collect());
    }
    let mut chosen: Vec<(SnapshotId, Snapshot)> = Vec::new();
    for spec in specs {
        let found = filter.resolve(repository, spec)?;
        if !chosen.iter().any(|(id, _)| *id == found.0) {
            chosen.push(found);
        }
    }
    chosen.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    Ok(chosen)
}

/// Names on stderr each snapshot that cannot be read, and so is left out.
pub fn warn_left_out(unreadable: &[(SnapshotId, bunker_repo_format::Error)]) {
    for (id, error) in unreadable {
        eprintln!(
            "bunker: warning: snapshot {} cannot be read and is left out (`bunker forget {}` \
             removes it): {error}",
            id.short(),
            id.short()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(host: &str, tags: &[(&str, &str)], paths: &[&str]) -> Snapshot {
        Snapshot {
            host: host.into(),
            paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..crate::test_support::snapshot()
        }
    }

    #[test]
    fn every_given_filter_must_match() {
        let web = snapshot(
            "web1",
            &[("source", "app"), ("env", "prod")],
            &["/srv", "/etc"],
        );
        let filter = |host: Option<&str>, tags: &[(&str, &str)], paths: &[&str]| SnapshotFilter {
            host: host.map(str::to_owned),
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            paths: paths.iter().map(|p| p.as_bytes().to_vec()).collect(),
        };
        assert!(filter(None, &[], &[]).matches(&web));
        assert!(filter(Some("web1"), &[("env", "prod")], &["/etc"]).matches(&web));
        assert!(
            filter(
                None,
                &[("source", "app"), ("env", "prod")],
                &["/srv", "/etc"]
            )
            .matches(&web)
        );
        assert!(!filter(Some("web2"), &[], &[]).matches(&web));
        assert!(!filter(None, &[("env", "dev")], &[]).matches(&web));
        assert!(!filter(None, &[("source", "app"), ("env", "dev")], &[]).matches(&web));
        assert!(!filter(None, &[], &["/srv/app"]).matches(&web));
        assert_eq!(
            filter(Some("web1"), &[("env", "prod")], &["/etc"]).describe(),
            "--host web1 --tag env=prod --path /etc"
        );
    }
}
