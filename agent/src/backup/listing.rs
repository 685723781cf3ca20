//! What the walk needs of a directory before it archives its entries: the directory open,
//! its names listed (less those left out), each entry's metadata captured, and the
//! directory's tree in the parent snapshot.
//!
//! A listing depends only on the directory and on what the whole backup shares (the
//! repository, the excludes, the uid and gid names), never on how far the walk got, so the
//! [prefetcher](super::prefetch) makes the listings of directories the walk will come to
//! while the walk is busy elsewhere.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, EntryFlags, Metadata, Node, Tree};
use bunker_repo_format::{BlobId, Repository};

use super::Excludes;
use super::shared_work::share;
use crate::platform::{self, Captured, DirHandle, NameCache};

/// Directories with fewer entries than this are captured on the walking thread alone:
/// sharing a few with the pool costs more than it saves (waking pool threads that then spin
/// before they sleep). With 8, a no-change backup of the Linux source made 107,000
/// `sched_yield` calls; with 64 it took 0.45-0.50 s against 0.46-0.57 s and 0.5-0.6 CPU
/// seconds against 0.7-0.8, the first backup unchanged (docs/PERFORMANCE.md, session 14).
const SHARED_CAPTURE: usize = 64;

/// An entry listed: its name, its real path (for messages and the tree) and the path to
/// use in system calls (see [`DirHandle`]).
pub(super) struct Listed {
    pub name: Vec<u8>,
    pub path: PathBuf,
    pub access: PathBuf,
}

/// A directory as the walk finds it.
pub(super) struct Listing {
    /// The directory's tree in the parent snapshot; `None` without one, or when it could
    /// not be read (its files are then read again).
    pub parent: Option<Tree>,
    /// The directory, open: its entries are looked up relative to it.
    pub handle: Option<Arc<DirHandle>>,
    /// Why the directory could not be listed (it is then stored empty, flagged incomplete).
    pub error: Option<io::Error>,
    /// The entries in name order, less those excluded.
    pub listed: Vec<Listed>,
    /// Each listed entry's metadata, or why it could not be read.
    pub captured: Vec<Result<Captured, platform::PlatformError>>,
}

impl Listing {
    /// How many entries the listing holds.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Each listed entry's counterpart in the parent snapshot.
    fn parent_entries(&self) -> Vec<Option<&Entry>> {
        self.listed
            .iter()
            .map(|entry| self.parent.as_ref().and_then(|tree| tree.get(&entry.name)))
            .collect()
    }
}

/// The tree of a directory's entry in the parent snapshot; `None` without an entry, or for
/// an entry that was not a directory.
pub(super) fn subtree_of(entry: Option<&Entry>) -> Option<BlobId> {
    match entry.map(|entry| &entry.node) {
        Some(Node::Dir { subtree }) => Some(*subtree),
        _ => None,
    }
}

/// Sorts `names` and keeps each once: a name read twice (a network filesystem's readdir
/// cookies, an entry renamed over while listed) is one entry, as a tree holds each name
/// once.
fn sort_unique(names: &mut Vec<Vec<u8>>) {
    names.sort_unstable();
    names.dedup();
}

/// What listing a directory reads from, shared by the walk and the prefetcher.
#[derive(Clone)]
pub(super) struct Lister<'a> {
    pub repo: &'a Repository,
    pub index: &'a Index,
    pub excludes: &'a Excludes,
    /// The recorded path of the entry holding a filesystem snapshot being read, never
    /// listed.
    pub hidden: Option<PathBuf>,
    pub names: Arc<NameCache>,
    /// Whether what the parent snapshot recorded of an entry may spare reading its
    /// attributes again: not when reading from a filesystem snapshot, whose live device
    /// differs from the recorded one.
    pub trust_parent: bool,
    /// Whether a large directory's entries are captured with idle pool threads' help: for
    /// the walking thread, not for the threads that list ahead of it (they are several
    /// already, and a pool thread woken for a share spins before it sleeps).
    pub share_captures: bool,
}

impl Lister<'_> {
    /// Loads a tree of the parent snapshot; an unreadable one just means reading again.
    pub fn parent_tree(&self, id: Option<BlobId>) -> Option<Tree> {
        id.and_then(|id| self.repo.load_tree(self.index, &id).ok())
    }

    /// Lists the directory recorded at `path`, read through `access`, whose tree in the
    /// parent snapshot is `parent`.
    pub fn list(&self, path: &Path, access: &Path, parent: Option<BlobId>) -> Listing {
        let parent = self.parent_tree(parent);
        let mut handle = None;
        let read = DirHandle::open(access).and_then(|opened| {
            let names = opened.entry_names();
            handle = Some(Arc::new(opened));
            names
        });
        let (mut names, error) = match read {
            Ok(names) => (names, None),
            Err(e) => (Vec::new(), Some(e)),
        };
        sort_unique(&mut names);
        let mut listed = Vec::with_capacity(names.len());
        for name in names {
            let os_name = std::ffi::OsStr::from_bytes(&name);
            let child = path.join(os_name);
            if self.excludes.matches(&child) || self.hidden.as_deref() == Some(&child) {
                continue;
            }
            // Through `access`, not the recorded path: they differ when reading a snapshot.
            let through = access.join(os_name);
            let child_access = match &handle {
                Some(handle) => handle.child(&through, os_name),
                None => through,
            };
            listed.push(Listed {
                name,
                path: child,
                access: child_access,
            });
        }
        let mut listing = Listing {
            parent,
            handle,
            error,
            listed,
            captured: Vec::new(),
        };
        listing.captured = self.capture_all(&listing);
        listing
    }

    /// Captures the metadata of every listed entry, sharing the work with idle pool
    /// threads when there are enough entries to be worth it. Each is looked up relative
    /// to the directory when it is open. An entry whose counterpart in the parent snapshot
    /// is unchanged keeps its extended attributes from there
    /// ([`platform::capture_knowing`]).
    fn capture_all(&self, listing: &Listing) -> Vec<Result<Captured, platform::PlatformError>> {
        let known: Vec<Option<platform::KnownEntry>> = listing
            .parent_entries()
            .into_iter()
            .map(|parent| parent.and_then(|entry| self.known(&entry.meta)))
            .collect();
        let dir = listing.handle.clone();
        let capture = move |name: &[u8],
                            access: &Path,
                            known: Option<&platform::KnownEntry>,
                            names: &NameCache| {
            let at = dir
                .as_ref()
                .map(|dir| (dir.fd(), std::ffi::OsStr::from_bytes(name)));
            platform::capture_knowing(access, at, names, known)
        };
        if !self.share_captures || listing.len() < SHARED_CAPTURE {
            return listing
                .listed
                .iter()
                .zip(&known)
                .map(|(entry, known)| {
                    capture(&entry.name, &entry.access, known.as_ref(), &self.names)
                })
                .collect();
        }
        // Shared work owns its items.
        let items: Vec<(Vec<u8>, PathBuf, Option<platform::KnownEntry>)> = listing
            .listed
            .iter()
            .zip(known)
            .map(|(entry, known)| (entry.name.clone(), entry.access.clone(), known))
            .collect();
        let names = Arc::clone(&self.names);
        share(items, move |(name, access, known)| {
            capture(name, access, known.as_ref(), &names)
        })
    }

    /// What the parent snapshot recorded of an entry, for [`platform::capture_knowing`]:
    /// only when its attributes were read completely.
    fn known(&self, meta: &Metadata) -> Option<platform::KnownEntry> {
        let complete = meta.flags & EntryFlags::INCOMPLETE == 0;
        (complete && self.trust_parent).then(|| platform::KnownEntry {
            device: meta.device,
            inode: meta.inode,
            ctime: meta.ctime,
            xattrs: meta.xattrs.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_read_twice_is_listed_once_in_order() {
        let mut names = vec![
            b"b".to_vec(),
            b"a".to_vec(),
            b"b".to_vec(),
            b"\xff".to_vec(),
        ];
        sort_unique(&mut names);
        assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec(), b"\xff".to_vec()]);
    }
}
