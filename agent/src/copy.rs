//! Copying snapshots to another repository (`bunker copy`).
//!
//! The target shares the source's writer secret (FORMAT.md §4.5), so a blob has the same id
//! in both and trees copy unchanged: only blobs the target lacks are read from the source
//! (authenticated and re-hashed there), sealed again for the target's own data key, and
//! uploaded. The target is written like a backup writes: one heartbeat session, condemned
//! packs avoided, packs, then index segments, then each snapshot through the GC commit
//! check; every pack sent is read back and each of its blobs opened and re-hashed before
//! a snapshot that needs it is written. A snapshot already in the target (same body but
//! for the parent) is skipped, so an interrupted copy is finished by running it again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bunker_repo_format::config::Operation;
use bunker_repo_format::gc;
use bunker_repo_format::index::Index;
use bunker_repo_format::object::verify_content_hash;
use bunker_repo_format::pack::{pack_name, parse_pack};
use bunker_repo_format::session::ActiveSession;
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::tree::{Extent, Node, Tree};
use bunker_repo_format::{
    BlobId, BlobKind, BlobWriter, Error, PackId, Repository, SnapshotId, WriteStats,
};

use crate::cancel::Cancel;

/// How often a copy indexes the packs it has sent, at most.
const INDEX_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// What a copy did.
#[derive(Debug, Clone, Default)]
pub struct CopyOutcome {
    /// Snapshots written to the target: (source id, target id).
    pub copied: Vec<(SnapshotId, SnapshotId)>,
    /// Snapshots the target already had: (source id, target id).
    pub skipped: Vec<(SnapshotId, SnapshotId)>,
    /// What was stored in the target.
    pub stats: WriteStats,
    /// Packs read back from the target and verified blob by blob.
    pub verified_packs: u64,
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    /// A repository could not be read or written.
    #[error(transparent)]
    Repository(#[from] Error),
    /// The target does not share the source's writer secret, so blob ids differ.
    #[error(
        "{target} was not created by `bunker copy` from {from}: its blob ids differ, so snapshots cannot be copied into it (copy into a new location instead)"
    )]
    UnrelatedTarget {
        /// The source repository.
        from: String,
        /// The target repository.
        target: String,
    },
    /// The session was paused so long that a prune of the target may have removed data it
    /// relies on; the snapshot was not written.
    #[error(
        "the copy was paused for {}s, longer than prune's session timeout, and {lost} pack(s) of the target it relies on are gone or condemned; run it again",
        paused.as_secs()
    )]
    Stale {
        /// The longest pause.
        paused: std::time::Duration,
        /// Packs missing or condemned.
        lost: usize,
    },
    /// Cancelled: snapshots copied so far stay, blobs sent for the next one are indexed
    /// and reused by the next run.
    #[error("copy interrupted: run it again to finish (what was sent is reused)")]
    Interrupted,
}

/// True when `copy` (in the target) is the copy of `original` (in the source): equal in
/// everything but the parent, which names a snapshot of its own repository.
pub fn is_copy_of(copy: &Snapshot, original: &Snapshot) -> bool {
    copy.time == original.time
        && copy.tree == original.tree
        && copy.host == original.host
        && copy.paths == original.paths
        && Snapshot {
            parent: None,
            ..copy.clone()
        } == Snapshot {
            parent: None,
            ..original.clone()
        }
}

/// Copies `snapshots` (of `source`) into `target`, oldest first. `host` names this
/// process in the target's heartbeats.
pub fn copy(
    source: &Repository,
    target: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    host: &str,
    cancel: &Cancel,
) -> Result<CopyOutcome, CopyError> {
    source.check_features(Operation::Read)?;
    target.check_features(Operation::Write)?;
    if source.writer_key().writer_secret() != target.writer_key().writer_secret() {
        return Err(CopyError::UnrelatedTarget {
            from: source.location(),
            target: target.location(),
        });
    }
    let mut outcome = CopyOutcome::default();
    // Source id -> target id, for snapshots present in both (to map parents).
    let mut in_target: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    let existing = target.load_snapshots()?;
    let mut pending = Vec::new();
    let mut ordered: Vec<&(SnapshotId, Snapshot)> = snapshots.iter().collect();
    ordered.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
    for (id, snapshot) in ordered {
        match existing.iter().find(|(_, t)| is_copy_of(t, snapshot)) {
            Some((target_id, _)) => {
                in_target.insert(*id, *target_id);
                outcome.skipped.push((*id, *target_id));
            }
            None => pending.push((*id, snapshot.clone())),
        }
    }
    if pending.is_empty() {
        return Ok(outcome);
    }

    // As in a backup: the first beat comes before anything is read from the index.
    let heartbeat = ActiveSession::start(
        Arc::clone(target.backend()),
        target.writer_key(),
        host,
        "copy",
        true,
    )?;
    let condemned = gc::condemned_packs(target)?;
    let mut loaded = target.load_index()?;
    let stored = gc::stored_packs(target)?;
    loaded.index.retain_packs(|pack| stored.contains_key(pack));
    let source_index = source.load_index_for_reading()?.index;
    let mut writer = target.blob_writer(&loaded.index);
    writer.exclude_packs(condemned);
    writer.abandon_uploads_when(cancel.flag());
    // A killed copy loses at most this much transfer: the next run reuses indexed packs.
    writer.set_index_interval(INDEX_INTERVAL);
    let mut sender = Sender {
        source,
        source_index: &source_index,
        writer,
        walked: HashSet::new(),
        cancel,
    };

    for (source_id, snapshot) in pending {
        let sent = sender.send_tree(snapshot.tree);
        if let Err(e) = sender.writer.flush() {
            // Interrupted: the uploads to a slow store were given up; the packs stored
            // before are indexed for the next run.
            if cancel.is_cancelled() {
                let _ = sender.writer.index_uploaded();
                return Err(CopyError::Interrupted);
            }
            return Err(e.into());
        }
        outcome.verified_packs += verify_packs(target, sender.writer.take_uploaded())?;
        sent.map_err(|e| match e {
            CopyError::Repository(Error::Abandoned { .. }) => CopyError::Interrupted,
            e => e,
        })?;
        let copy = Snapshot {
            parent: snapshot.parent.and_then(|p| in_target.get(&p).copied()),
            ..snapshot
        };
        let dependencies = sender.writer.dependencies().clone();
        let target_id = gc::commit_snapshot_in_session(
            target,
            &heartbeat,
            &dependencies,
            sender.writer.session(),
            &copy,
        )?
        .map_err(|refused| CopyError::Stale {
            paused: refused.paused,
            lost: refused.lost,
        })?;
        in_target.insert(source_id, target_id);
        outcome.copied.push((source_id, target_id));
    }
    outcome.stats = sender.writer.stats();
    // Best effort, as for a backup: an unended session only delays garbage collection.
    let _ = heartbeat.end();
    Ok(outcome)
}

struct Sender<'a> {
    source: &'a Repository,
    source_index: &'a Index,
    writer: BlobWriter<'a>,
    /// Trees whose whole content this session has already sent or found in the target.
    walked: HashSet<BlobId>,
    cancel: &'a Cancel,
}

impl Sender<'_> {
    /// Makes the tree `root` and everything below it present in the target: every blob
    /// is checked by id, none is trusted because a parent tree is present (an interrupted
    /// copy may have stored a tree before all of its content was indexed).
    fn send_tree(&mut self, root: BlobId) -> Result<(), CopyError> {
        let mut pending = vec![root];
        while let Some(tree_id) = pending.pop() {
            if !self.walked.insert(tree_id) {
                continue;
            }
            let bytes = self.source.read_blob(self.source_index, &tree_id)?;
            let tree =
                Tree::decode(&bytes).map_err(|e| Error::decoding(format!("tree {tree_id}"), e))?;
            for entry in tree.entries() {
                match &entry.node {
                    Node::Dir { subtree } => pending.push(*subtree),
                    Node::File { extents } => {
                        for extent in extents {
                            if let Extent::Chunk { id, .. } = extent {
                                self.send(BlobKind::Data, id, None)?;
                            }
                        }
                    }
                    _ => {}
                }
            }
            self.send(BlobKind::Tree, &tree_id, Some(bytes))?;
        }
        Ok(())
    }

    /// Sends one blob unless the target has it; `plaintext` when already read.
    fn send(
        &mut self,
        kind: BlobKind,
        id: &BlobId,
        plaintext: Option<Vec<u8>>,
    ) -> Result<(), CopyError> {
        if self.cancel.is_cancelled() {
            return Err(CopyError::Interrupted);
        }
        if self.writer.reuse(id) {
            return Ok(());
        }
        // `read_blob` authenticates the blob and re-hashes it against its id.
        let plaintext = match plaintext {
            Some(bytes) => bytes,
            None => self.source.read_blob(self.source_index, id)?,
        };
        let (stored_as, _) = self.writer.add(kind, &plaintext)?;
        if stored_as != *id {
            return Err(Error::corrupt(
                format!("blob {id}"),
                format!("hashes to {stored_as} in the target"),
            )
            .into());
        }
        Ok(())
    }
}

/// Reads back every pack sent and opens and re-hashes each of its blobs with the target's
/// key. Returns how many packs were verified.
fn verify_packs(target: &Repository, packs: Vec<(PackId, BlobKind)>) -> Result<u64, Error> {
    let key = target.master_key("verifying copied packs")?;
    let mut verified = 0;
    for (pack, kind) in packs {
        let name = pack_name(kind, &pack);
        let bytes = target.backend().get(&name)?;
        verify_content_hash(&bytes, pack.as_bytes(), &name)?;
        let trailer = parse_pack(&bytes, key, &name)?;
        for entry in &trailer.entries {
            let location = entry.location_in(pack);
            target.open_blob_in(&entry.id, &location, &bytes, 0)?;
        }
        verified += 1;
    }
    Ok(verified)
}
