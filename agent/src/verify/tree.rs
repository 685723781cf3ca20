//! The independent verification pass over a restored tree.
//!
//! Walks the snapshot's trees and the restored directory side by side, reading every entry
//! back from disk with `lstat` and the `l*xattr` calls (never following symlinks): kind,
//! size, mode, modification time, symlink target, device number, extended attributes,
//! hard links, and owner when checked as root; entries missing from or extra in the target.
//! Regular files are collected in batches and their content checked on the rayon pool (see
//! [`super::content`]), so memory is bounded by the batch, not by the tree.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node};
use bunker_repo_format::{BlobId, Repository};
use rayon::prelude::*;

use super::{Difference, Verification, VerifyOptions};
use crate::platform::{self, CapturedKind, DirHandle, NameCache};

/// Files whose content is checked together.
const BATCH: usize = 1024;

/// Walks one snapshot against one restored directory.
pub(super) struct TreeVerifier<'a> {
    repo: &'a Repository,
    index: &'a Index,
    options: &'a VerifyOptions,
    names: NameCache,
    /// Snapshot (device, inode) of a hard-linked file to the restored (device, inode) of
    /// its first name, and that name.
    links: HashMap<(u64, u64), ((u64, u64), PathBuf)>,
    /// Files whose content is still to check: the path shown, the path for system calls
    /// (see [`DirHandle::child`]), the content.
    batch: Vec<(PathBuf, PathBuf, Vec<Extent>)>,
    result: Verification,
}

impl<'a> TreeVerifier<'a> {
    pub fn new(repo: &'a Repository, index: &'a Index, options: &'a VerifyOptions) -> Self {
        Self {
            repo,
            index,
            options,
            names: NameCache::new(),
            links: HashMap::new(),
            batch: Vec::new(),
            result: Verification::default(),
        }
    }

    /// Verifies the entries of tree `tree` against the directory `dir`.
    pub fn run(mut self, tree: &BlobId, dir: &Path) -> Verification {
        self.walk(tree, dir, dir);
        self.flush();
        self.result
    }

    fn differ(&mut self, path: &Path, what: impl Into<String>) {
        self.result.differences.push(Difference {
            path: path.to_owned(),
            what: what.into(),
        });
    }

    /// Verifies the directory shown as `dir` (`access`: its path for system calls) against
    /// the snapshot tree `tree`. Entries are named through an open handle of the directory
    /// when their path is longer than the kernel takes.
    fn walk(&mut self, tree: &BlobId, dir: &Path, access: &Path) {
        let tree = match self.repo.load_tree(self.index, tree) {
            Ok(tree) => tree,
            Err(e) => return self.differ(dir, format!("snapshot tree {tree} unreadable: {e}")),
        };
        let handle = match DirHandle::open(access) {
            Ok(handle) => handle,
            Err(e) => return self.differ(dir, format!("cannot open: {e}")),
        };
        let mut expected = BTreeSet::new();
        let mut through_handle = false;
        for entry in tree.entries() {
            let name = OsStr::from_bytes(&entry.name);
            let path = dir.join(name);
            let child = handle.child(&path, name);
            through_handle |= child != path;
            // Sockets are recorded but never restored.
            if !matches!(entry.node, Node::Socket) {
                expected.insert(entry.name.clone());
            }
            self.entry(entry, &path, &child);
        }
        // Batched files named through the handle are checked before it closes.
        if through_handle {
            self.flush();
        }
        match fs::read_dir(access) {
            Ok(listing) => {
                for item in listing {
                    match item {
                        Ok(item) => {
                            let name = item.file_name();
                            if !expected.contains(name.as_bytes()) {
                                self.differ(&dir.join(name), "not in the snapshot");
                            }
                        }
                        Err(e) => self.differ(dir, format!("cannot list: {e}")),
                    }
                }
            }
            Err(e) => self.differ(dir, format!("cannot list: {e}")),
        }
    }

    /// Verifies one entry, shown as `path`, found at `access`.
    fn entry(&mut self, entry: &Entry, path: &Path, access: &Path) {
        if matches!(entry.node, Node::Socket) {
            return;
        }
        let captured = match platform::capture(access, &self.names) {
            Ok(captured) => captured,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.differ(
                    path,
                    format!("missing ({} expected)", entry.node.kind_name()),
                );
            }
            Err(e) => return self.differ(path, format!("could not {} it: {}", e.op, e.source)),
        };
        self.result.entries += 1;
        let found = kind_name(&captured.kind);
        if found != entry.node.kind_name() {
            return self.differ(
                path,
                format!(
                    "is a {found}, the snapshot has a {}",
                    entry.node.kind_name()
                ),
            );
        }
        match (&entry.node, &captured.kind) {
            (Node::File { extents }, CapturedKind::File { size }) => {
                let expected = entry.size();
                if *size != expected {
                    self.differ(path, format!("size {size}, the snapshot has {expected}"));
                } else {
                    self.result.files += 1;
                    self.result.bytes += expected;
                    if self.hard_link(entry, &captured.meta, path) {
                        self.batch
                            .push((path.to_owned(), access.to_owned(), extents.clone()));
                        if self.batch.len() >= BATCH {
                            self.flush();
                        }
                    }
                }
            }
            (Node::Symlink { target }, CapturedKind::Symlink { target: found })
                if target != found =>
            {
                self.differ(
                    path,
                    format!(
                        "symlink target {:?}, the snapshot has {:?}",
                        String::from_utf8_lossy(found),
                        String::from_utf8_lossy(target)
                    ),
                );
            }
            (Node::CharDevice { rdev }, CapturedKind::CharDevice { rdev: found })
            | (Node::BlockDevice { rdev }, CapturedKind::BlockDevice { rdev: found })
                if rdev != found =>
            {
                self.differ(
                    path,
                    format!("device number {found:#x}, the snapshot has {rdev:#x}"),
                );
            }
            _ => {}
        }
        self.metadata(entry, &captured.meta, path);
        if let Node::Dir { subtree } = &entry.node {
            self.walk(subtree, path, access);
        }
    }

    /// Checks that a second name of a hard-linked file is the same inode as its first;
    /// true when the content still needs checking (first name, or not hard-linked).
    fn hard_link(&mut self, entry: &Entry, found: &Metadata, path: &Path) -> bool {
        if entry.meta.nlinks <= 1 {
            return true;
        }
        let key = (entry.meta.device, entry.meta.inode);
        let restored = (found.device, found.inode);
        match self.links.get(&key) {
            None => {
                self.links.insert(key, (restored, path.to_owned()));
                true
            }
            Some((first, _)) if *first == restored => false,
            Some((_, first)) => {
                let message = format!("not hard-linked to {} as in the snapshot", first.display());
                self.differ(path, message);
                true
            }
        }
    }

    fn metadata(&mut self, entry: &Entry, found: &Metadata, path: &Path) {
        let want = &entry.meta;
        let symlink = matches!(entry.node, Node::Symlink { .. });
        if !symlink && found.mode & 0o7777 != want.mode & 0o7777 {
            self.differ(
                path,
                format!(
                    "mode {:o}, the snapshot has {:o}",
                    found.mode & 0o7777,
                    want.mode & 0o7777
                ),
            );
        }
        if found.mtime != want.mtime {
            self.differ(
                path,
                format!(
                    "mtime {}.{:09}, the snapshot has {}.{:09}",
                    found.mtime.sec, found.mtime.nsec, want.mtime.sec, want.mtime.nsec
                ),
            );
        }
        if self.options.ownership && (found.uid != want.uid || found.gid != want.gid) {
            self.differ(
                path,
                format!(
                    "owner {}:{}, the snapshot has {}:{}",
                    found.uid, found.gid, want.uid, want.gid
                ),
            );
        }
        if found.xattrs != want.xattrs {
            let names = |x: &[(Vec<u8>, Vec<u8>)]| {
                x.iter()
                    .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let differing: Vec<String> = want
                .xattrs
                .iter()
                .filter(|x| !found.xattrs.contains(x))
                .chain(found.xattrs.iter().filter(|x| !want.xattrs.contains(x)))
                .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            self.differ(
                path,
                format!(
                    "extended attributes differ ({}): found [{}], the snapshot has [{}]",
                    differing.join(","),
                    names(&found.xattrs),
                    names(&want.xattrs)
                ),
            );
        }
    }

    /// Checks the content of the batched files in parallel.
    fn flush(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        let repo = self.repo;
        let found: Vec<Difference> = batch
            .par_iter()
            .filter_map(|(path, access, extents)| {
                let what = match OpenOptions::new()
                    .read(true)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(access)
                {
                    Err(e) => Some(format!("cannot open: {e}")),
                    Ok(file) => match super::content::first_difference(repo, &file, extents) {
                        Ok(found) => found,
                        Err(e) => Some(format!("cannot read: {e}")),
                    },
                };
                what.map(|what| Difference {
                    path: path.clone(),
                    what,
                })
            })
            .collect();
        self.result.differences.extend(found);
    }
}

/// The tree's name for a captured kind.
fn kind_name(kind: &CapturedKind) -> &'static str {
    match kind {
        CapturedKind::File { .. } => "file",
        CapturedKind::Dir => "dir",
        CapturedKind::Symlink { .. } => "symlink",
        CapturedKind::Fifo => "fifo",
        CapturedKind::Socket => "socket",
        CapturedKind::CharDevice { .. } => "chardev",
        CapturedKind::BlockDevice { .. } => "blockdev",
    }
}
