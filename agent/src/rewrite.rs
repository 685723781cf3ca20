//! Rewriting snapshots without what matches exclude patterns (`bunker rewrite`): the way to
//! take a file that was backed up by mistake (a secret, a huge scratch file) out of the
//! snapshots that hold it.
//!
//! Each files snapshot's tree is walked with the patterns of `backup --exclude`
//! ([`Excludes`]); a matching entry is left out (a directory with everything below it) and
//! every directory above it gets a new tree. A directory at the same path with the same tree
//! in several snapshots is rewritten once, so rewriting a long history of a mostly unchanged
//! tree costs little more than one snapshot. The new snapshot keeps the original's time,
//! host, paths, parent and tags, and gains a `rewritten=<original's short id>` tag, the
//! patterns in its `excludes`, and the figures of what it still holds. Nothing is written
//! for a snapshot where nothing matches. The originals stay unless asked to be forgotten;
//! the left-out bytes leave the repository only when no snapshot uses them and `prune`
//! runs.

use std::collections::{HashMap, HashSet, hash_map};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::replace::{ReplaceOptions, replace_snapshots};
use bunker_repo_format::snapshot::{PROGRAM_VERSION, Snapshot, SourceKind};
use bunker_repo_format::tree::{Extent, Node, Tree};
use bunker_repo_format::{BlobId, Error, Repository, Result, SnapshotId};

use crate::backup::Excludes;

/// One snapshot to rewrite and its replacement.
#[derive(Debug, Clone)]
pub struct SnapshotRewrite {
    /// The original.
    pub old: SnapshotId,
    /// Its replacement, as it will be written.
    pub snapshot: Snapshot,
    /// The absolute paths left out, in tree order (a directory stands for what is below it).
    pub removed: Vec<PathBuf>,
    /// What the left-out entries held.
    pub removed_figures: Figures,
}

/// Why a selected snapshot is not rewritten although something may match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skipped {
    /// A volume or stream snapshot: it holds one image or stream, not a tree of files.
    NotFiles(SourceKind),
    /// Every file it holds matches: an empty replacement would keep nothing worth a
    /// snapshot. Forget it instead.
    WouldBeEmpty,
    /// A directory's tree cannot be read, so what below it matches is unknown; the
    /// snapshot is left as it is. `check` names the damage.
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What [`apply_rewrite`] will do; build it with [`plan_rewrite`].
#[derive(Debug)]
pub struct RewritePlan {
    /// Snapshots to rewrite, in the order given.
    pub rewrites: Vec<SnapshotRewrite>,
    /// Snapshots where nothing matches (left as they are).
    pub unchanged: usize,
    /// Snapshots left alone, with why.
    pub skipped: Vec<(SnapshotId, Skipped)>,
    new_trees: Vec<(BlobId, Vec<u8>)>,
}

/// Entries and bytes a subtree holds, counted as a backup's summary counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks, devices, fifos, sockets.
    pub others: u64,
    /// Bytes of file content.
    pub bytes: u64,
}

impl Figures {
    fn add(&mut self, other: Figures) {
        self.files += other.files;
        self.dirs += other.dirs;
        self.others += other.others;
        self.bytes += other.bytes;
    }
}

/// Works out the replacements of `snapshots` without the entries `excludes` matches; reads
/// only. Fails on an error that is not damage (the storage cannot be reached).
pub fn plan_rewrite(
    repo: &Repository,
    snapshots: &[(SnapshotId, Snapshot)],
    excludes: &Excludes,
) -> Result<RewritePlan> {
    let index = repo.load_index()?.index;
    let mut walker = Walker {
        repo,
        index: &index,
        excludes,
        memo: HashMap::new(),
        counted: HashMap::new(),
        new_trees: Vec::new(),
        new_children: HashMap::new(),
        holds: HashMap::new(),
    };
    let mut plan = RewritePlan {
        rewrites: Vec::new(),
        unchanged: 0,
        skipped: Vec::new(),
        new_trees: Vec::new(),
    };
    for (old, snapshot) in snapshots {
        if snapshot.source_kind != SourceKind::Files {
            plan.skipped
                .push((*old, Skipped::NotFiles(snapshot.source_kind)));
            continue;
        }
        let changed = match walker.directory(&snapshot.tree, Path::new("/")) {
            Ok(Outcome::Same) => {
                plan.unchanged += 1;
                continue;
            }
            Ok(Outcome::Changed(changed)) => changed,
            Err(Walk::Fatal(e)) => return Err(e),
            Err(Walk::Unreadable { path, reason }) => {
                plan.skipped
                    .push((*old, Skipped::Unreadable { path, reason }));
                continue;
            }
        };
        let Changed {
            id,
            removed,
            figures,
        } = *changed;
        let mut replacement = snapshot.clone();
        let summary = &mut replacement.summary;
        summary.files = summary.files.saturating_sub(figures.files);
        summary.dirs = summary.dirs.saturating_sub(figures.dirs);
        summary.others = summary.others.saturating_sub(figures.others);
        summary.bytes = summary.bytes.saturating_sub(figures.bytes);
        // The summary is a backup's count: a snapshot `recover` wrote counts no files, and
        // one a repair replaced may count wrongly. Its word that nothing is left is checked
        // against the tree, since the advice that follows is to forget the snapshot.
        if summary.files == 0 && summary.others == 0 && !walker.holds_entries(&id) {
            plan.skipped.push((*old, Skipped::WouldBeEmpty));
            continue;
        }
        replacement.tree = id;
        let before = replacement.errors.len();
        replacement
            .errors
            .retain(|error| !about_removed(error, &removed));
        let dropped = (before - replacement.errors.len()) as u64;
        replacement.summary.errors = replacement.summary.errors.saturating_sub(dropped);
        let tag = (
            bunker_repo_format::snapshot::REWRITTEN_TAG.to_owned(),
            old.short(),
        );
        if !replacement.tags.contains(&tag) {
            replacement.tags.push(tag);
        }
        for pattern in excludes.patterns() {
            if !replacement.excludes.contains(pattern) {
                replacement.excludes.push(pattern.clone());
            }
        }
        replacement.program_version = PROGRAM_VERSION.to_owned();
        plan.rewrites.push(SnapshotRewrite {
            old: *old,
            snapshot: replacement,
            removed,
            removed_figures: figures,
        });
    }
    // Only the trees the replacements use (a skipped snapshot's are not written).
    let roots: Vec<BlobId> = plan.rewrites.iter().map(|r| r.snapshot.tree).collect();
    plan.new_trees = walker.trees_used_by(&roots);
    Ok(plan)
}

/// True when a backup's error message (`PATH: reason`, or `changed during backup: PATH`)
/// is about an entry at or below one of `removed`: the rewritten snapshot does not hold it.
fn about_removed(error: &str, removed: &[PathBuf]) -> bool {
    let text = error
        .strip_prefix(crate::backup::CHANGED_DURING_BACKUP)
        .unwrap_or(error);
    removed.iter().any(|path| {
        let path = path.to_string_lossy();
        text.strip_prefix(path.as_ref())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with(": "))
    })
}

/// A snapshot [`apply_rewrite`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The original (forgotten when asked).
    pub old: SnapshotId,
    /// Its replacement.
    pub new: SnapshotId,
}

/// Stores the plan's new trees and replacement snapshots, then, with `forget_old`, forgets
/// each original (see [`replace_snapshots`] for the order that keeps every byte
/// reachable). `host` names this machine in the writer session.
pub fn apply_rewrite(
    repo: &Repository,
    plan: &RewritePlan,
    host: &str,
    forget_old: bool,
) -> Result<Vec<Rewritten>> {
    let done = replace_snapshots(
        repo,
        &plan.new_trees,
        plan.rewrites.iter().map(|r| (r.old, &r.snapshot)),
        &ReplaceOptions {
            purpose: "rewrite",
            host,
            forget_old,
            avoid: &HashSet::new(),
        },
    )?;
    Ok(done
        .into_iter()
        .map(|(old, new)| Rewritten { old, new })
        .collect())
}

/// A directory after leaving out what matches.
#[derive(Debug, Clone)]
enum Outcome {
    /// Nothing below it matches.
    Same,
    /// Boxed: most directories come back [`Outcome::Same`].
    Changed(Box<Changed>),
}

#[derive(Debug, Clone)]
struct Changed {
    /// Its new tree.
    id: BlobId,
    /// The absolute paths left out.
    removed: Vec<PathBuf>,
    /// What they held.
    figures: Figures,
}

/// Why a walk stopped.
enum Walk {
    /// A tree is damaged or missing: the snapshot is skipped.
    Unreadable { path: PathBuf, reason: String },
    /// The storage could not be reached: the whole rewrite stops.
    Fatal(Error),
}

impl Walk {
    fn from_error(path: &Path, error: Error) -> Walk {
        if error.is_damage() {
            Walk::Unreadable {
                path: path.to_owned(),
                reason: error.to_string(),
            }
        } else {
            Walk::Fatal(error)
        }
    }
}

struct Walker<'a> {
    repo: &'a Repository,
    index: &'a Index,
    excludes: &'a Excludes,
    /// Directories already walked, by (tree, absolute path): patterns with `/` make the
    /// outcome depend on where a tree sits.
    memo: HashMap<(BlobId, PathBuf), Outcome>,
    /// Figures of whole subtrees left out, by tree.
    counted: HashMap<BlobId, Figures>,
    /// New trees in the order made (children before parents), each once.
    new_trees: Vec<(BlobId, Vec<u8>)>,
    /// The new trees made so far, each with the new trees of its subdirectories.
    new_children: HashMap<BlobId, Vec<BlobId>>,
    /// Whether a tree holds anything but directories, by tree.
    holds: HashMap<BlobId, bool>,
}

impl Walker<'_> {
    fn directory(&mut self, tree: &BlobId, path: &Path) -> std::result::Result<Outcome, Walk> {
        let key = (*tree, path.to_owned());
        if let Some(done) = self.memo.get(&key) {
            return Ok(done.clone());
        }
        let outcome = self.rewrite_directory(tree, path)?;
        self.memo.insert(key, outcome.clone());
        Ok(outcome)
    }

    fn rewrite_directory(
        &mut self,
        tree: &BlobId,
        path: &Path,
    ) -> std::result::Result<Outcome, Walk> {
        let loaded = self
            .repo
            .load_tree(self.index, tree)
            .map_err(|e| Walk::from_error(path, e))?;
        let mut entries = Vec::with_capacity(loaded.entries().len());
        let mut removed = Vec::new();
        let mut figures = Figures::default();
        let mut changed = false;
        let mut new_subtrees = Vec::new();
        for mut entry in loaded.into_entries() {
            let child = path.join(OsStr::from_bytes(&entry.name));
            if self.excludes.matches(&child) {
                figures.add(self.figures_of(&entry.node, &child)?);
                removed.push(child);
                changed = true;
                continue;
            }
            if let Node::Dir { subtree } = entry.node
                && let Outcome::Changed(below) = self.directory(&subtree, &child)?
            {
                entry.node = Node::Dir { subtree: below.id };
                new_subtrees.push(below.id);
                removed.extend(below.removed);
                figures.add(below.figures);
                changed = true;
            }
            entries.push(entry);
        }
        if !changed {
            return Ok(Outcome::Same);
        }
        // The entries of a valid tree, some left out: still valid.
        let rebuilt = Tree::new(entries).map_err(|e| Walk::Unreadable {
            path: path.to_owned(),
            reason: format!("cannot rebuild tree {tree}: {e}"),
        })?;
        let bytes = rebuilt.encode();
        let id = self.repo.blob_id(&bytes);
        if let hash_map::Entry::Vacant(slot) = self.new_children.entry(id) {
            slot.insert(new_subtrees);
            self.new_trees.push((id, bytes));
        }
        Ok(Outcome::Changed(Box::new(Changed {
            id,
            removed,
            figures,
        })))
    }

    /// What a left-out entry held. A directory below it that cannot be read is counted as
    /// nothing: it is left out anyway.
    fn figures_of(&mut self, node: &Node, path: &Path) -> std::result::Result<Figures, Walk> {
        Ok(match node {
            Node::File { extents } => Figures {
                files: 1,
                bytes: extents.iter().map(Extent::length).sum(),
                ..Figures::default()
            },
            Node::Dir { subtree } => self.subtree_figures(subtree, path)?,
            _ => Figures {
                others: 1,
                ..Figures::default()
            },
        })
    }

    fn subtree_figures(
        &mut self,
        tree: &BlobId,
        path: &Path,
    ) -> std::result::Result<Figures, Walk> {
        if let Some(figures) = self.counted.get(tree) {
            return Ok(*figures);
        }
        let mut figures = Figures {
            dirs: 1,
            ..Figures::default()
        };
        match self.repo.load_tree(self.index, tree) {
            Ok(loaded) => {
                for entry in loaded.entries() {
                    let child = path.join(OsStr::from_bytes(&entry.name));
                    figures.add(self.figures_of(&entry.node, &child)?);
                }
            }
            Err(e) => match Walk::from_error(path, e) {
                Walk::Fatal(e) => return Err(Walk::Fatal(e)),
                Walk::Unreadable { .. } => {}
            },
        }
        self.counted.insert(*tree, figures);
        Ok(figures)
    }

    /// True when the tree `id` (new or stored) holds an entry other than a directory, at
    /// any depth. A tree that cannot be read counts as holding something: what it holds is
    /// not known.
    fn holds_entries(&mut self, id: &BlobId) -> bool {
        if let Some(&known) = self.holds.get(id) {
            return known;
        }
        let tree = match self.new_trees.iter().find(|(new, _)| new == id) {
            Some((_, bytes)) => Tree::decode(bytes).ok(),
            None => self.repo.load_tree(self.index, id).ok(),
        };
        let holds = match tree {
            None => true,
            Some(tree) => tree.entries().iter().any(|entry| match &entry.node {
                Node::Dir { subtree } => self.holds_entries(subtree),
                _ => true,
            }),
        };
        self.holds.insert(*id, holds);
        holds
    }

    /// The new trees reachable from `roots`, children before parents.
    fn trees_used_by(self, roots: &[BlobId]) -> Vec<(BlobId, Vec<u8>)> {
        let mut used = HashSet::new();
        let mut pending = roots.to_vec();
        while let Some(id) = pending.pop() {
            if let Some(subtrees) = self.new_children.get(&id)
                && used.insert(id)
            {
                pending.extend(subtrees);
            }
        }
        self.new_trees
            .into_iter()
            .filter(|(id, _)| used.contains(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_about_removed_entries_are_recognised_by_path() {
        let removed = [PathBuf::from("/srv/app/secrets"), PathBuf::from("/x.pem")];
        for error in [
            "/srv/app/secrets: Permission denied (os error 13)",
            "/srv/app/secrets/key: Permission denied (os error 13)",
            "changed during backup: /srv/app/secrets/db",
            "changed during backup: /x.pem",
        ] {
            assert!(about_removed(error, &removed), "{error}");
        }
        for error in [
            "/srv/app/secrets-old: Permission denied (os error 13)",
            "/srv/app: could not list it",
            "changed during backup: /x.pem.bak",
        ] {
            assert!(!about_removed(error, &removed), "{error}");
        }
    }
}
