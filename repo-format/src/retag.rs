//! Changing the tags of snapshots (`bunker tag`).
//!
//! Snapshots are immutable objects: a snapshot with other tags is a new snapshot (same
//! tree, time, host, paths, parent and summary, so a new id), written before the old one
//! is forgotten (a forget marker where Object Lock keeps the old object), by
//! [`replace_snapshots`] as `repair snapshots` and `rewrite` do.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::SnapshotId;
use crate::replace::{ReplaceOptions, replace_snapshots};
use crate::repository::Repository;
use crate::snapshot::Snapshot;

/// What to do to each snapshot's tags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagChange {
    /// Replace all tags with these (before `add` and `remove`).
    pub set: Option<Vec<(String, String)>>,
    /// Tags to add (a tag already there stays once).
    pub add: Vec<(String, String)>,
    /// Tags to remove.
    pub remove: Vec<(String, String)>,
}

impl TagChange {
    /// True when the change does nothing to any snapshot.
    pub fn is_empty(&self) -> bool {
        self.set.is_none() && self.add.is_empty() && self.remove.is_empty()
    }

    /// `tags` after the change, in their order, each tag once.
    pub fn apply(&self, tags: &[(String, String)]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        let start = self.set.as_deref().unwrap_or(tags);
        for tag in start.iter().chain(&self.add) {
            if !out.contains(tag) && !self.remove.contains(tag) {
                out.push(tag.clone());
            }
        }
        out
    }
}

/// A snapshot whose tags changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retagged {
    /// The snapshot forgotten.
    pub old: SnapshotId,
    /// The snapshot written in its place.
    pub new: SnapshotId,
    /// Its tags.
    pub tags: Vec<(String, String)>,
}

/// Applies `change` to `snapshots`: each whose tags change is written again with the new
/// tags and the old one forgotten; those the change leaves as they are are not touched.
/// `host` names this machine in the writer session.
pub fn retag(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    change: &TagChange,
    host: &str,
) -> Result<Vec<Retagged>> {
    let changed: Vec<(SnapshotId, Snapshot)> = snapshots
        .iter()
        .filter_map(|(id, snapshot)| {
            let tags = change.apply(&snapshot.tags);
            (tags != snapshot.tags).then(|| {
                let mut retagged = snapshot.clone();
                retagged.tags = tags;
                (*id, retagged)
            })
        })
        .collect();
    let done = replace_snapshots(
        repo,
        &[],
        changed.iter().map(|(old, snapshot)| (*old, snapshot)),
        &ReplaceOptions {
            purpose: "tag",
            host,
            forget_old: true,
            avoid: &HashSet::new(),
        },
    )?;
    Ok(done
        .into_iter()
        .zip(changed)
        .map(|((old, new), (_, snapshot))| Retagged {
            old,
            new,
            tags: snapshot.tags,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn set_then_add_then_remove_each_tag_once() {
        let before = tags(&[("env", "prod"), ("service", "db")]);
        let change = TagChange {
            set: None,
            add: tags(&[("keep", "yes"), ("env", "prod")]),
            remove: tags(&[("service", "db")]),
        };
        assert_eq!(
            change.apply(&before),
            tags(&[("env", "prod"), ("keep", "yes")])
        );
        let change = TagChange {
            set: Some(tags(&[("a", "1")])),
            add: tags(&[("b", "2")]),
            remove: tags(&[("a", "1")]),
        };
        assert_eq!(change.apply(&before), tags(&[("b", "2")]));
        assert!(TagChange::default().is_empty());
        assert_eq!(TagChange::default().apply(&before), before);
    }
}
