//! Replacing snapshots with rewritten ones: the write step that `repair snapshots`, `tag`
//! and `rewrite` share.
//!
//! Snapshots are immutable, so changing one means writing another. The order keeps every
//! byte reachable at every step: the new trees are packed and indexed, each replacement
//! snapshot is stored, and only then is the snapshot it replaces forgotten (a forget marker
//! where Object Lock keeps the object). An interruption leaves an old snapshot next to its
//! replacement, never neither; run again, it finds that replacement and stores no second. All of it runs inside a writer session with a heartbeat,
//! started before the index is read, so a prune running meanwhile counts it as a live
//! writer and removes nothing it relies on.

use std::collections::HashSet;
use std::sync::Arc;

use crate::blob::BlobKind;
use crate::config::Operation;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;
use crate::session::ActiveSession;
use crate::snapshot::Snapshot;

/// How [`replace_snapshots`] writes.
#[derive(Debug, Clone)]
pub struct ReplaceOptions<'a> {
    /// What the writer session's heartbeat says it is doing (`repair`, `tag`, `rewrite`).
    pub purpose: &'a str,
    /// This machine's name, for the heartbeat.
    pub host: &'a str,
    /// Forget each replaced snapshot once its replacement is stored; without, both stay.
    pub forget_old: bool,
    /// Blobs never to deduplicate a new tree against (copies known to be damaged).
    pub avoid: &'a HashSet<BlobId>,
}

/// Stores `new_trees` (each with the id it must hash to), then writes each replacement
/// (the id of the snapshot it replaces, and the snapshot to write) and, with
/// [`ReplaceOptions::forget_old`], forgets the snapshot it replaces. Returns the (old, new)
/// id pairs in the order given.
pub fn replace_snapshots<'s>(
    repo: &Repository,
    new_trees: &[(BlobId, Vec<u8>)],
    replacements: impl IntoIterator<Item = (SnapshotId, &'s Snapshot)>,
    options: &ReplaceOptions<'_>,
) -> Result<Vec<(SnapshotId, SnapshotId)>> {
    let replacements: Vec<(SnapshotId, &Snapshot)> = replacements.into_iter().collect();
    if replacements.is_empty() {
        return Ok(Vec::new());
    }
    repo.check_features(Operation::Write)?;
    if options.forget_old {
        repo.check_features(Operation::Prune)?;
    }
    let heartbeat = ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        options.host,
        options.purpose,
        true,
    )?;
    let session = if new_trees.is_empty() {
        repo.new_session()
    } else {
        // Read after the heartbeat started: what prune's liveness rule relies on. A tree
        // is deduplicated only against packs that exist and no GC plan condemned.
        let condemned = crate::gc::condemned_packs(repo)?;
        let mut index = repo.load_index_for_reading()?.index;
        for blob in options.avoid {
            index.remove(blob);
        }
        let mut writer = repo.blob_writer(&index);
        writer.exclude_packs(condemned);
        for (id, bytes) in new_trees {
            let (stored, _) = writer.add(BlobKind::Tree, bytes)?;
            if stored != *id {
                return Err(Error::Invalid(format!(
                    "rewritten tree {id} hashed to {stored} when stored"
                )));
            }
        }
        let session = writer.session().clone();
        writer.finish()?;
        session
    };
    // A replacement an earlier run stored already (it stopped before forgetting the old
    // snapshot, or did not forget it) is not stored again.
    let stored = repo.load_readable_snapshots()?.0;
    let mut done = Vec::with_capacity(replacements.len());
    for (old, snapshot) in replacements {
        let earlier = stored
            .iter()
            .find(|(id, s)| *id != old && same_content(s, snapshot))
            .map(|(id, _)| *id);
        let new = match earlier {
            Some(id) => id,
            None => repo.save_snapshot(&session, snapshot)?,
        };
        if options.forget_old {
            repo.forget_snapshot(&old)?;
        }
        done.push((old, new));
    }
    // Best effort, as for a backup: an unended session only delays garbage collection.
    let _ = heartbeat.end();
    Ok(done)
}

/// True when `a` and `b` say the same, whichever program version wrote them.
fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    let versionless = |s: &Snapshot| Snapshot {
        program_version: String::new(),
        ..s.clone()
    };
    a.time == b.time && a.tree == b.tree && versionless(a) == versionless(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::keyslot::KdfParams;
    use crate::tree::Timestamp;
    use crate::{InitOptions, Repository};

    fn snapshot(tags: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            time: Timestamp { sec: 100, nsec: 0 },
            paths: vec![b"/src".to_vec()],
            tags: tags
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Snapshot::of_tree_for_tests(BlobId::from_bytes([7; 32]))
        }
    }

    /// A rerun (after a run that stopped before its forget, or ran without one) finds the
    /// replacement it stored and does not store a second; a replacement that says what its
    /// original says is still stored, not taken for the original.
    #[test]
    fn a_replacement_stored_by_an_earlier_run_is_not_stored_again() {
        let options = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let repo = Repository::init(Arc::new(MemoryBackend::new()), b"pw", options).expect("init");
        let original = snapshot(&[]);
        let old = repo
            .save_snapshot(&repo.new_session(), &original)
            .expect("save");
        let replacement = snapshot(&[("tag", "x")]);
        let keep = ReplaceOptions {
            purpose: "tag",
            host: "h",
            forget_old: false,
            avoid: &HashSet::new(),
        };
        let first = replace_snapshots(&repo, &[], [(old, &replacement)], &keep).expect("first");
        let again = replace_snapshots(&repo, &[], [(old, &replacement)], &keep).expect("again");
        assert_eq!(first, again);
        assert_eq!(repo.load_snapshots().expect("load").len(), 2);

        let forget = ReplaceOptions {
            forget_old: true,
            ..keep.clone()
        };
        let last = replace_snapshots(&repo, &[], [(old, &replacement)], &forget).expect("last");
        assert_eq!(last, first);
        let left = repo.load_snapshots().expect("load");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, first[0].1);

        // Replaced by its own likeness: stored anew, then the original goes.
        let (id, same) = left[0].clone();
        let done = replace_snapshots(&repo, &[], [(id, &same)], &forget).expect("same");
        assert_ne!(done[0].1, id);
        let left = repo.load_snapshots().expect("load");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].0, done[0].1);
    }
}
