//! Recovering the trees of snapshots that are gone (`bunker recover`).
//!
//! A snapshot object is small and its data large: a `forget` run by mistake, a snapshot
//! object deleted from the bucket or damaged, leaves every tree and data blob in place
//! until a prune removes what no snapshot reaches. Recover finds the trees nothing reaches
//! (no other tree lists them as a directory, no readable snapshot has them as its root) and
//! writes one new snapshot whose root holds each of them as a directory named by its id.
//! Restoring it gives back every lost snapshot's files, below that directory.
//!
//! It must run before the data goes: a prune plans to delete what no snapshot reaches, and
//! deletes it once the grace period has passed. A recovered snapshot stored before then
//! keeps its packs (a plan's packs that a snapshot uses again are recovered, FORMAT.md
//! §14a). Like `repair index`, run it when no prune is executing plans: the new snapshot is
//! written in a writer session, but it refers to trees it did not store itself.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::blob::BlobKind;
use crate::config::Operation;
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::repository::Repository;
use crate::session::ActiveSession;
use crate::snapshot::{PROGRAM_VERSION, Snapshot, SourceKind, Summary};
use crate::tree::{Entry, Extent, Metadata, Node, Timestamp, Tree};

/// The path a recovered snapshot records as its source.
pub const RECOVERED_PATH: &[u8] = b"/recovered";

/// What [`plan_recover`] found.
#[derive(Debug, Clone, Default)]
pub struct RecoverPlan {
    /// Trees that nothing reaches, in id order: the recovered snapshot's directories.
    pub roots: Vec<BlobId>,
    /// Tree blobs the index lists (in packs that exist).
    pub trees: usize,
    /// Trees that could not be read, with why: what they list is not known, so a tree
    /// only they reach is recovered as a root of its own.
    pub unreadable: Vec<(BlobId, String)>,
    /// Roots below which something is gone (a data blob or tree no stored pack holds, or
    /// a tree that cannot be read), each with the first such thing found: they are
    /// recovered, but their restore lacks those files.
    pub incomplete: Vec<(BlobId, String)>,
}

/// Who writes the recovered snapshot, and how its directories look.
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    /// Host recorded in the snapshot and its writer session's heartbeat.
    pub host: String,
    /// User recorded in the snapshot.
    pub username: String,
    /// When the snapshot is taken (also the directories' times).
    pub time: Timestamp,
    /// Owner of the directories of the recovered snapshot's root.
    pub uid: u32,
    /// Group of those directories.
    pub gid: u32,
}

/// Reads every tree the index lists and finds those nothing reaches. Changes nothing.
pub fn plan_recover(repo: &Repository) -> Result<RecoverPlan> {
    repo.check_features(Operation::Read)?;
    let (snapshots, _) = repo.load_readable_snapshots()?;
    // One pass over the segments: the index, and every tree blob they list (a damaged
    // segment hides what it lists: `repair index` rebuilds it first).
    let mut trees: BTreeSet<BlobId> = BTreeSet::new();
    let mut index = repo
        .load_index_visiting(|segment| {
            let tree_packs = segment.packs.iter().filter(|p| p.kind == BlobKind::Tree);
            trees.extend(tree_packs.flat_map(|pack| pack.blobs.iter().map(|blob| blob.id)));
        })?
        .index;
    // As for reading data: only packs still in storage.
    let stored = crate::gc::stored_packs(repo)?;
    index.retain_packs(|pack| stored.contains_key(pack));
    trees.retain(|id| index.contains(id));
    let mut reached: HashSet<BlobId> = snapshots.iter().map(|(_, s)| s.tree).collect();
    let mut unreadable = Vec::new();
    // Per readable tree: its subtrees, and the first thing it lists that no stored pack
    // holds.
    let mut subtrees: HashMap<BlobId, Vec<BlobId>> = HashMap::new();
    let mut gone: HashMap<BlobId, String> = HashMap::new();
    for id in &trees {
        match repo.load_tree(&index, id) {
            Ok(tree) => {
                let mut below = Vec::new();
                for entry in tree.entries() {
                    match &entry.node {
                        Node::Dir { subtree } => {
                            below.push(*subtree);
                            if !trees.contains(subtree) {
                                gone.entry(*id)
                                    .or_insert_with(|| format!("tree {subtree} is not stored"));
                            }
                        }
                        Node::File { extents } => {
                            let missing = extents.iter().find_map(|extent| match extent {
                                Extent::Chunk { id, .. } if !index.contains(id) => Some(*id),
                                _ => None,
                            });
                            if let Some(blob) = missing {
                                gone.entry(*id)
                                    .or_insert_with(|| format!("data blob {blob} is not stored"));
                            }
                        }
                        _ => {}
                    }
                }
                reached.extend(below.iter().copied());
                subtrees.insert(*id, below);
            }
            Err(e) if e.is_damage() || e.is_not_found() => {
                gone.insert(*id, format!("tree {id} cannot be read"));
                unreadable.push((*id, e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    let unreadable_ids: HashSet<BlobId> = unreadable.iter().map(|(id, _)| *id).collect();
    let roots: Vec<BlobId> = trees
        .iter()
        .filter(|id| !reached.contains(id) && !unreadable_ids.contains(id))
        .copied()
        .collect();
    // What each root lacks: the first gone thing below it, walking its trees once each.
    let mut incomplete = Vec::new();
    for root in &roots {
        let mut seen: HashSet<BlobId> = HashSet::new();
        let mut pending = vec![*root];
        while let Some(tree) = pending.pop() {
            if !seen.insert(tree) {
                continue;
            }
            if let Some(why) = gone.get(&tree) {
                incomplete.push((*root, why.clone()));
                break;
            }
            pending.extend(subtrees.get(&tree).into_iter().flatten().copied());
        }
    }
    Ok(RecoverPlan {
        roots,
        trees: trees.len(),
        unreadable,
        incomplete,
    })
}

/// The recovered snapshot's root tree: a directory per root, named by its id in hex.
fn root_tree(roots: &[BlobId], options: &RecoverOptions) -> Result<Tree> {
    let entries = roots
        .iter()
        .map(|id| Entry {
            name: id.to_hex().into_bytes(),
            meta: Metadata {
                mode: 0o700,
                uid: options.uid,
                gid: options.gid,
                mtime: options.time,
                atime: options.time,
                ctime: options.time,
                ..Metadata::default()
            },
            node: Node::Dir { subtree: *id },
        })
        .collect();
    Tree::new(entries)
        .map_err(|e| Error::Invalid(format!("the recovered snapshot's root tree: {e}")))
}

/// Writes the snapshot holding the plan's roots; `None` when there is nothing to recover.
/// The snapshot is tagged `recovered=<number of roots>` and records [`RECOVERED_PATH`].
pub fn apply_recover(
    repo: &Repository,
    plan: &RecoverPlan,
    options: &RecoverOptions,
) -> Result<Option<SnapshotId>> {
    if plan.roots.is_empty() {
        return Ok(None);
    }
    repo.check_features(Operation::Write)?;
    let heartbeat = ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        &options.host,
        "recover",
        true,
    )?;
    let tree = root_tree(&plan.roots, options)?;
    // Read after the heartbeat started (prune's liveness rule); never deduplicated against
    // a pack a GC plan condemned.
    let condemned = crate::gc::condemned_packs(repo)?;
    let index = repo.load_index_for_reading()?.index;
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned);
    let (tree_id, _) = writer.add(BlobKind::Tree, &tree.encode())?;
    let session = writer.session().clone();
    writer.finish()?;
    let snapshot = Snapshot {
        time: options.time,
        host: options.host.clone(),
        username: options.username.clone(),
        paths: vec![RECOVERED_PATH.to_vec()],
        tags: vec![("recovered".to_owned(), plan.roots.len().to_string())],
        parent: None,
        tree: tree_id,
        source_kind: SourceKind::Files,
        consistency: crate::snapshot::ConsistencyLevel::None,
        consistency_detail: String::new(),
        excludes: Vec::new(),
        summary: Summary {
            dirs: plan.roots.len() as u64,
            ..Summary::default()
        },
        errors: plan
            .unreadable
            .iter()
            .map(|(id, why)| format!("tree {id} could not be read: {why}"))
            .chain(
                plan.incomplete
                    .iter()
                    .map(|(root, why)| format!("/{} is incomplete: {why}", root.to_hex())),
            )
            .collect(),
        program_version: PROGRAM_VERSION.to_owned(),
    };
    let id = repo.save_snapshot(&session, &snapshot)?;
    // Best effort, as for a backup: an unended session only delays garbage collection.
    let _ = heartbeat.end();
    Ok(Some(id))
}

#[cfg(test)]
mod tests;
