//! Walking snapshots' trees to find what damage breaks which snapshot.

use std::collections::{HashMap, HashSet};

use crate::blob::BlobKind;
use crate::id::BlobId;
use crate::index::Index;
use crate::pack::pack_name;
use crate::repository::Repository;
use crate::tree::{Extent, MAX_TREE_DEPTH, Node};

use super::*;

#[derive(Clone, Default)]
pub(crate) struct TreeDamage {
    /// What is wrong with the tree blob itself.
    pub(crate) own: Option<String>,
    /// Everything below it that is missing or damaged (capped).
    pub(crate) all: Vec<String>,
}

pub(crate) struct TreeWalker<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) index: &'a Index,
    pub(crate) bad_blobs: &'a HashMap<BlobId, String>,
    pub(crate) memo: HashMap<BlobId, TreeDamage>,
    /// Bad blobs that some snapshot needs.
    pub(crate) used_bad: HashSet<BlobId>,
    /// The first error that was not damage (the storage could not be reached): the check
    /// stops with it.
    pub(crate) fatal: Option<crate::error::Error>,
}

impl TreeWalker<'_> {
    /// Damage reachable from tree `id` (empty when intact). Memoized: shared subtrees are
    /// read once.
    pub(crate) fn tree_damage(&mut self, id: &BlobId, depth: usize) -> Vec<String> {
        if let Some(done) = self.memo.get(id) {
            return done.all.clone();
        }
        let damage = self.compute(id, depth);
        let all = damage.all.clone();
        self.memo.insert(*id, damage);
        all
    }

    fn compute(&mut self, id: &BlobId, depth: usize) -> TreeDamage {
        let fail = |message: String| TreeDamage {
            own: Some(message.clone()),
            all: vec![format!("tree {id}: {message}")],
        };
        if depth > MAX_TREE_DEPTH {
            return fail(format!("trees nested deeper than {MAX_TREE_DEPTH} levels"));
        }
        if let Some(reason) = self.bad_blobs.get(id) {
            self.used_bad.insert(*id);
            return fail(reason.clone());
        }
        match self.index.get(id) {
            None => return fail("not in the index".into()),
            Some(location) if location.kind != BlobKind::Tree => {
                return fail("indexed as a data blob".into());
            }
            Some(_) => {}
        }
        let tree = match self.repo.load_tree(self.index, id) {
            Ok(tree) => tree,
            Err(e) if !e.is_damage() => {
                let message = e.to_string();
                self.fatal.get_or_insert(e);
                // Not memoized as damage: the check stops before it reports anything.
                return TreeDamage {
                    own: None,
                    all: vec![message],
                };
            }
            // Named with its pack, which `repair packs` takes.
            Err(e) => {
                let message = error_message(&e);
                return fail(match self.index.get(id) {
                    Some(at) => format!("{message} (in {})", pack_name(at.kind, &at.pack)),
                    None => message,
                });
            }
        };
        let mut all = Vec::new();
        let mut seen = HashSet::new();
        for entry in tree.entries() {
            match &entry.node {
                Node::File { extents } => {
                    for extent in extents {
                        let Extent::Chunk { id: blob, .. } = extent else {
                            continue;
                        };
                        if !seen.insert(*blob) {
                            continue;
                        }
                        let bad = self.bad_blobs.get(blob);
                        if bad.is_some() {
                            self.used_bad.insert(*blob);
                        }
                        if all.len() >= MAX_REASONS {
                            continue;
                        }
                        let file = String::from_utf8_lossy(&entry.name);
                        let reason = if let Some(reason) = bad {
                            format!("file {file:?}: {reason}")
                        } else if !self.index.contains(blob) {
                            format!("file {file:?}: data blob {blob} is not in the index")
                        } else {
                            continue;
                        };
                        // A file with several chunks in one damaged pack is named once.
                        if !all.contains(&reason) {
                            all.push(reason);
                        }
                    }
                }
                Node::Dir { subtree } => {
                    let below = self.tree_damage(subtree, depth + 1);
                    all.extend(
                        below
                            .into_iter()
                            .take(MAX_REASONS.saturating_sub(all.len())),
                    );
                }
                _ => {}
            }
        }
        TreeDamage { own: None, all }
    }
}
