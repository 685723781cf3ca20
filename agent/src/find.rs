//! Finding entries by name or path pattern across snapshots (`bunker find`).
//!
//! Patterns are those of `backup --exclude` ([`Excludes`]): without `/` they match an
//! entry's name at any depth, with `/` its absolute path. A directory that sits at the same
//! path with the same tree blob in several snapshots and nothing matching below it is
//! opened once, which makes a search over many backups of a mostly unchanged tree cost
//! little more than one.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Node};
use bunker_repo_format::{BlobId, Error, Repository};

use crate::backup::Excludes;

/// One entry that matched, with its absolute path in the snapshot.
#[derive(Debug, Clone)]
pub struct Found {
    /// The path.
    pub path: PathBuf,
    /// The entry.
    pub entry: Entry,
}

/// What one snapshot's search found.
#[derive(Debug, Default)]
pub struct SnapshotMatches {
    /// Matching entries, in path order.
    pub found: Vec<Found>,
    /// Directories that could not be read (what is below them was not searched), with why.
    pub unreadable: Vec<(PathBuf, Error)>,
}

/// Searches snapshots' trees, remembering the directories where nothing matches.
pub struct Finder<'a> {
    repo: &'a Repository,
    index: &'a Index,
    patterns: &'a Excludes,
    /// Directories (tree blob, path) with no match and nothing unreadable below them.
    barren: HashSet<(BlobId, PathBuf)>,
}

impl<'a> Finder<'a> {
    /// A finder for `patterns` in `repo`.
    pub fn new(repo: &'a Repository, index: &'a Index, patterns: &'a Excludes) -> Self {
        Finder {
            repo,
            index,
            patterns,
            barren: HashSet::new(),
        }
    }

    /// Every entry below the snapshot tree `root` that matches.
    pub fn search(&mut self, root: &BlobId) -> SnapshotMatches {
        let mut matches = SnapshotMatches::default();
        self.directory(root, Path::new("/"), &mut matches);
        matches
    }

    /// Adds what matches below `tree` at `path`; false when nothing was added.
    fn directory(&mut self, tree: &BlobId, path: &Path, matches: &mut SnapshotMatches) -> bool {
        let key = (*tree, path.to_owned());
        if self.barren.contains(&key) {
            return false;
        }
        let before = (matches.found.len(), matches.unreadable.len());
        match self.repo.load_tree(self.index, tree) {
            Ok(loaded) => {
                for entry in loaded.into_entries() {
                    let child = path.join(OsStr::from_bytes(&entry.name));
                    if let Node::Dir { subtree } = &entry.node {
                        let subtree = *subtree;
                        if self.patterns.matches(&child) {
                            matches.found.push(Found {
                                path: child.clone(),
                                entry,
                            });
                        }
                        self.directory(&subtree, &child, matches);
                    } else if self.patterns.matches(&child) {
                        matches.found.push(Found { path: child, entry });
                    }
                }
            }
            Err(e) => matches.unreadable.push((path.to_owned(), e)),
        }
        let added = (matches.found.len(), matches.unreadable.len()) != before;
        if !added {
            self.barren.insert(key);
        }
        added
    }
}
