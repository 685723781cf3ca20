//! What changed between two snapshots, or two paths in them: each entry added, removed or
//! changed (content, metadata only, or kind), and the data blobs each side holds that the
//! other does not.
//!
//! Trees are compared side by side in name order; a directory whose tree blob is the same
//! on both sides is identical below it and is not compared. The data counts read each
//! distinct tree of the two sides once. Metadata means what a restore
//! brings back and a person changes: mode, owner and group (ids and names), mtime,
//! extended attributes. Access and change times, device, inode and link count are left
//! out: they move without anyone changing the file.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node};
use bunker_repo_format::{BlobId, Error, Repository, Result};

use crate::navigate::Located;

/// How one path differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    /// Only the new side has it.
    Added,
    /// Only the old side has it.
    Removed,
    /// Same kind, different content (a file's bytes, a symlink's target, a device number).
    Content,
    /// Same kind and content, different metadata.
    Metadata,
    /// A different kind of entry (a file became a directory, ...).
    Kind,
}

impl Change {
    /// One character, as the listing shows it: `+`, `-`, `M`, `U`, `T`.
    pub fn code(self) -> char {
        match self {
            Change::Added => '+',
            Change::Removed => '-',
            Change::Content => 'M',
            Change::Metadata => 'U',
            Change::Kind => 'T',
        }
    }

    /// `added`, `removed`, `content`, `metadata` or `kind` (the JSON value).
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Content => "content",
            Change::Metadata => "metadata",
            Change::Kind => "kind",
        }
    }
}

/// One changed path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The path, below the prefix given to [`diff`].
    pub path: PathBuf,
    /// How it changed.
    pub change: Change,
    /// The entry's kind (`file`, `dir`, ...): the new one's, the old one's if removed.
    pub kind: &'static str,
}

/// Data blobs (file content) on one side only: how many, and their plaintext bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlobDelta {
    /// Distinct data blobs.
    pub blobs: u64,
    /// Their plaintext bytes, each blob counted once.
    pub bytes: u64,
}

/// What [`diff`] found besides the differences it passed on.
#[derive(Debug, Default)]
pub struct DiffSummary {
    /// Differences per kind of change.
    pub changes: HashMap<Change, u64>,
    /// Data blobs the new side has and the old one does not.
    pub data_added: BlobDelta,
    /// Data blobs the old side has and the new one does not.
    pub data_removed: BlobDelta,
    /// Directories that could not be read, with why: what is below them is not compared.
    pub unreadable: Vec<(PathBuf, Error)>,
}

impl DiffSummary {
    /// How many differences of kind `change` there were.
    pub fn count(&self, change: Change) -> u64 {
        self.changes.get(&change).copied().unwrap_or(0)
    }
}

/// Compares `old` with `new` (each a directory tree or a single entry, as
/// [`crate::navigate::locate`] finds them), passing each difference to `found` in path
/// order; paths are `prefix` joined with the names below.
pub fn diff(
    repo: &Repository,
    index: &Index,
    old: &Located,
    new: &Located,
    prefix: &Path,
    found: &mut dyn FnMut(&Difference) -> Result<()>,
) -> Result<DiffSummary> {
    let mut differ = Differ {
        repo,
        index,
        found,
        summary: DiffSummary::default(),
    };
    match (old, new) {
        (Located::Dir { tree: a, .. }, Located::Dir { tree: b, .. }) => {
            differ.trees(a, b, prefix)?;
        }
        _ => {
            let (a, b) = (as_entry(old, prefix), as_entry(new, prefix));
            differ.entries(&a, &b, prefix)?;
        }
    }
    let mut contents = TreeContents::new();
    let old_blobs = differ.data_blobs(old, &mut contents);
    let new_blobs = differ.data_blobs(new, &mut contents);
    differ.summary.data_added = delta(&new_blobs, &old_blobs);
    differ.summary.data_removed = delta(&old_blobs, &new_blobs);
    Ok(differ.summary)
}

/// A located root as an entry: a directory root becomes a directory entry named after the
/// prefix's last component.
fn as_entry(located: &Located, prefix: &Path) -> Entry {
    match located {
        Located::Other(entry)
        | Located::Dir {
            entry: Some(entry), ..
        } => entry.clone(),
        Located::Dir { tree, entry: None } => Entry {
            name: prefix
                .file_name()
                .map_or_else(|| b"/".to_vec(), |n| n.as_bytes().to_vec()),
            meta: Metadata::default(),
            node: Node::Dir { subtree: *tree },
        },
    }
}

fn delta(side: &HashMap<BlobId, u64>, other: &HashMap<BlobId, u64>) -> BlobDelta {
    side.iter().filter(|(id, _)| !other.contains_key(id)).fold(
        BlobDelta::default(),
        |total, (_, length)| BlobDelta {
            blobs: total.blobs + 1,
            bytes: total.bytes.saturating_add(*length),
        },
    )
}

struct Differ<'a> {
    repo: &'a Repository,
    index: &'a Index,
    found: &'a mut dyn FnMut(&Difference) -> Result<()>,
    summary: DiffSummary,
}

impl Differ<'_> {
    fn report(&mut self, path: &Path, change: Change, entry: &Entry) -> Result<()> {
        *self.summary.changes.entry(change).or_default() += 1;
        (self.found)(&Difference {
            path: path.to_owned(),
            change,
            kind: entry.node.kind_name(),
        })
    }

    /// The tree blob `id`, or `None` after recording why it cannot be read.
    fn load(&mut self, id: &BlobId, path: &Path) -> Option<Vec<Entry>> {
        match self.repo.load_tree(self.index, id) {
            Ok(tree) => Some(tree.into_entries()),
            Err(e) => {
                self.summary.unreadable.push((path.to_owned(), e));
                None
            }
        }
    }

    fn trees(&mut self, old: &BlobId, new: &BlobId, path: &Path) -> Result<()> {
        if old == new {
            return Ok(());
        }
        let (Some(old), Some(new)) = (self.load(old, path), self.load(new, path)) else {
            return Ok(());
        };
        let (mut old, mut new) = (old.into_iter().peekable(), new.into_iter().peekable());
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => return Ok(()),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some(a), Some(b)) => a.name.cmp(&b.name),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let Some(entry) = old.next() else { continue };
                    self.one_side(
                        &entry,
                        &path.join(OsStr::from_bytes(&entry.name)),
                        Change::Removed,
                    )?;
                }
                std::cmp::Ordering::Greater => {
                    let Some(entry) = new.next() else { continue };
                    self.one_side(
                        &entry,
                        &path.join(OsStr::from_bytes(&entry.name)),
                        Change::Added,
                    )?;
                }
                std::cmp::Ordering::Equal => {
                    let (Some(a), Some(b)) = (old.next(), new.next()) else {
                        continue;
                    };
                    self.entries(&a, &b, &path.join(OsStr::from_bytes(&a.name)))?;
                }
            }
        }
    }

    fn entries(&mut self, old: &Entry, new: &Entry, path: &Path) -> Result<()> {
        match (&old.node, &new.node) {
            (Node::Dir { subtree: a }, Node::Dir { subtree: b }) => {
                if metadata_differs(&old.meta, &new.meta) {
                    self.report(path, Change::Metadata, new)?;
                }
                self.trees(a, b, path)
            }
            (a, b) if a.kind_name() != b.kind_name() => {
                self.report(path, Change::Kind, new)?;
                self.below(old, path, Change::Removed)?;
                self.below(new, path, Change::Added)
            }
            (a, b) if a != b => self.report(path, Change::Content, new),
            _ if metadata_differs(&old.meta, &new.meta) => self.report(path, Change::Metadata, new),
            _ => Ok(()),
        }
    }

    /// An entry on one side only, and everything below it.
    fn one_side(&mut self, entry: &Entry, path: &Path, change: Change) -> Result<()> {
        self.report(path, change, entry)?;
        self.below(entry, path, change)
    }

    /// Everything below a directory entry on one side only.
    fn below(&mut self, entry: &Entry, path: &Path, change: Change) -> Result<()> {
        let Node::Dir { subtree } = &entry.node else {
            return Ok(());
        };
        let Some(entries) = self.load(subtree, path) else {
            return Ok(());
        };
        for child in &entries {
            self.one_side(child, &path.join(OsStr::from_bytes(&child.name)), change)?;
        }
        Ok(())
    }

    /// Every data blob below `root` with its length; unreadable trees add nothing (the
    /// comparison has already named them). `contents` remembers each tree read, so a
    /// tree both sides hold is read once.
    fn data_blobs(&self, root: &Located, contents: &mut TreeContents) -> HashMap<BlobId, u64> {
        let mut blobs = HashMap::new();
        let mut seen = HashSet::new();
        let mut pending = Vec::new();
        match root {
            Located::Dir { tree, .. } => pending.push(*tree),
            Located::Other(entry) => {
                let (chunks, _) = entry_content(entry);
                blobs.extend(chunks);
            }
        }
        while let Some(tree) = pending.pop() {
            if !seen.insert(tree) {
                continue;
            }
            let content = contents.entry(tree).or_insert_with(|| {
                let mut content = (Vec::new(), Vec::new());
                if let Ok(loaded) = self.repo.load_tree(self.index, &tree) {
                    for entry in loaded.entries() {
                        let (chunks, subtree) = entry_content(entry);
                        content.0.extend(chunks);
                        content.1.extend(subtree);
                    }
                }
                content
            });
            blobs.extend(content.0.iter().copied());
            pending.extend(content.1.iter().copied());
        }
        blobs
    }
}

/// Per tree blob: the data blobs (with lengths) of its files and its subtrees.
type TreeContents = HashMap<BlobId, (Vec<(BlobId, u64)>, Vec<BlobId>)>;

/// An entry's data blobs with their lengths, and its subtree if it is a directory.
fn entry_content(entry: &Entry) -> (Vec<(BlobId, u64)>, Option<BlobId>) {
    match &entry.node {
        Node::File { extents } => (
            extents
                .iter()
                .filter_map(|extent| match extent {
                    Extent::Chunk { id, length } => Some((*id, u64::from(*length))),
                    Extent::Hole { .. } => None,
                })
                .collect(),
            None,
        ),
        Node::Dir { subtree } => (Vec::new(), Some(*subtree)),
        _ => (Vec::new(), None),
    }
}

/// Whether what a restore sets and a person changes differs (see the module doc).
fn metadata_differs(old: &Metadata, new: &Metadata) -> bool {
    (
        old.mode,
        old.uid,
        old.gid,
        &old.user,
        &old.group,
        old.mtime,
        &old.xattrs,
    ) != (
        new.mode,
        new.uid,
        new.gid,
        &new.user,
        &new.group,
        new.mtime,
        &new.xattrs,
    )
}
