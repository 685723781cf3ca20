//! Finding paths inside a snapshot and walking its trees.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Node};
use bunker_repo_format::{BlobId, Error, Repository, Result};

/// What a path inside a snapshot names.
#[derive(Debug, Clone)]
pub enum Located {
    /// A directory: its tree, and its entry (none for the snapshot's root).
    Dir {
        /// The directory's tree.
        tree: BlobId,
        /// The directory's own entry; `None` for the root.
        entry: Option<Entry>,
    },
    /// Anything that is not a directory.
    Other(Entry),
}

/// Finds `path` (absolute or relative to the snapshot root, `/` for the root) in the tree
/// rooted at `root`.
pub fn locate(repo: &Repository, index: &Index, root: &BlobId, path: &Path) -> Result<Located> {
    let mut current = Located::Dir {
        tree: *root,
        entry: None,
    };
    let mut walked = PathBuf::from("/");
    for component in path.components() {
        let name = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => name,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::Invalid(format!(
                    "{}: `..` is not allowed in a snapshot path",
                    path.display()
                )));
            }
        };
        let Located::Dir { tree, .. } = &current else {
            return Err(Error::Invalid(format!(
                "{} is not a directory in the snapshot",
                walked.display()
            )));
        };
        let tree = repo.load_tree(index, tree)?;
        walked.push(name);
        let entry = tree.get(name.as_bytes()).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "{} does not exist in the snapshot",
                walked.display()
            ))
        })?;
        current = match entry.node {
            Node::Dir { subtree } => Located::Dir {
                tree: subtree,
                entry: Some(entry),
            },
            _ => Located::Other(entry),
        };
    }
    Ok(current)
}

/// What [`walk`] calls for each entry, or for a subtree it could not read.
pub type Visitor<'a> = dyn FnMut(&Path, std::result::Result<&Entry, &Error>) -> Result<()> + 'a;

/// Calls `visit` with every entry below `tree`, depth first in name order, with its path
/// (`prefix` joined with the names on the way). Unreadable subtrees are passed to `visit`
/// as errors and skipped.
pub fn walk(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    prefix: &Path,
    visit: &mut Visitor<'_>,
) -> Result<()> {
    let tree = match repo.load_tree(index, tree) {
        Ok(tree) => tree,
        Err(e) => return visit(prefix, Err(&e)),
    };
    for entry in tree.entries() {
        let path = prefix.join(OsStr::from_bytes(&entry.name));
        visit(&path, Ok(entry))?;
        if let Node::Dir { subtree } = &entry.node {
            walk(repo, index, subtree, &path, visit)?;
        }
    }
    Ok(())
}
