//! The only place that talks to the operating system about file metadata.
//!
//! Backup side: [`capture`] reads an entry's [`Metadata`] and kind with `lstat` (never
//! following symlinks), resolving owner names through a shared [`NameCache`];
//! [`open_for_backup`] opens a file's content without following symlinks, [`DataRegions`]
//! finds its non-hole parts and [`changed_since`] tells whether it changed while read.
//!
//! Restore side: [`create_special`] and [`create_symlink`] recreate non-regular entries,
//! [`apply_metadata_at`] restores ownership, extended attributes, permissions and
//! timestamps (relative to an open directory, or [`apply_file_metadata`] through an open
//! file),
//! and [`punch_hole_or_set_len`] finishes a sparse file.
//!
//! Expired restores: [`remove_tree_nofollow`] deletes a restore target without following
//! any symlink in its path or inside it.
//!
//! Functions given a path fail with a [`PlatformError`] naming the path and the operation;
//! those given an open file return a plain [`io::Error`] for the caller to attach the path
//! to. Only Unix is supported; all platform conditionals live in this module.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{PoisonError, RwLock};

use bunker_repo_format::tree::Metadata;

#[cfg(target_os = "linux")]
mod long_paths;
#[cfg(unix)]
mod remove;
#[cfg(unix)]
mod unix;

#[cfg(target_os = "linux")]
pub use long_paths::{DirHandle, fd_path};

#[cfg(unix)]
pub use remove::remove_tree_nofollow;
#[cfg(unix)]
pub use unix::{
    DataRegions, KnownEntry, PRIVATE_FILE_MODE, SourceFile, apply_file_metadata, apply_metadata_at,
    capture, capture_knowing, changed_since, create_special, create_symlink, hostname, is_root,
    make_private, open_for_backup, open_for_backup_at, punch_hole_or_set_len,
    raise_open_files_limit, username,
};

/// A failed operation on a path.
///
/// `Display` names the operation and the path ("could not change mode of /a/b"); the
/// operating system's reason is the [`source`](std::error::Error::source), so print the
/// chain (`{:#}` with anyhow) to see both.
#[derive(Debug, thiserror::Error)]
#[error("could not {op} {}", path.display())]
pub struct PlatformError {
    /// The path the operation was applied to.
    pub path: PathBuf,
    /// What was attempted, phrased to precede the path ("set timestamps of").
    pub op: Cow<'static, str>,
    /// The operating system's error.
    #[source]
    pub source: io::Error,
}

impl PlatformError {
    /// Builds an error for `op` on `path`.
    pub fn new(
        path: impl Into<PathBuf>,
        op: impl Into<Cow<'static, str>>,
        source: io::Error,
    ) -> Self {
        Self {
            path: path.into(),
            op: op.into(),
            source,
        }
    }

    /// The kind of the underlying I/O error (`NotFound`, `PermissionDenied`, ...).
    pub fn kind(&self) -> io::ErrorKind {
        self.source.kind()
    }
}

impl From<PlatformError> for io::Error {
    fn from(err: PlatformError) -> Self {
        io::Error::new(err.source.kind(), err)
    }
}

/// An entry as found on disk: its metadata and its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Kind-independent metadata, ready to store in a tree entry.
    pub meta: Metadata,
    /// What the entry is.
    pub kind: CapturedKind,
    /// Parts of the metadata that could not be read (currently: extended attributes).
    ///
    /// When this is not empty, `meta.flags` has
    /// [`EntryFlags::INCOMPLETE`](bunker_repo_format::tree::EntryFlags::INCOMPLETE) set and
    /// the caller should record these errors with the snapshot.
    pub warnings: Vec<CaptureWarning>,
}

/// A part of an entry's metadata that could not be read; the rest was captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureWarning {
    /// What could not be read ("read extended attribute \"user.x\" of").
    pub op: String,
    /// The operating system's reason.
    pub message: String,
}

/// The kind of a captured entry, with what only that kind has.
///
/// Unlike [`Node`](bunker_repo_format::tree::Node), a file carries its size rather than its
/// extents: the content is read and chunked later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapturedKind {
    /// A regular file.
    File {
        /// Size in bytes at the time of `lstat`.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink {
        /// The link's target, raw bytes as stored in the filesystem.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix domain socket.
    Socket,
    /// A character device.
    CharDevice {
        /// Device number (`st_rdev`).
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number (`st_rdev`).
        rdev: u64,
    },
}

/// What [`apply_metadata_at`] restores beyond permissions, extended attributes and timestamps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyOptions {
    /// Restore owner and group (by number). Only root can give files away, so this is
    /// normally [`is_root()`].
    pub ownership: bool,
    /// Remove the extended attributes an entry has and the snapshot does not: needed where
    /// entries were there before the restore, or inherit a directory's default ACL. One
    /// more system call per entry, so off for a new target without a default ACL.
    pub remove_other_xattrs: bool,
}

/// Thread-safe cache of user and group names by numeric id.
///
/// A backup stats millions of files owned by a handful of accounts; the cache makes each
/// account lookup (`getpwuid_r`, `getgrgid_r`, possibly over NSS) happen once. Ids without
/// an account are cached as an empty name; lookups that fail are retried next time.
#[derive(Debug, Default)]
pub struct NameCache {
    users: RwLock<HashMap<u32, Vec<u8>>>,
    groups: RwLock<HashMap<u32, Vec<u8>>>,
}

impl NameCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// The name of user `uid`, empty when there is no such account.
    pub fn user(&self, uid: u32) -> Vec<u8> {
        Self::cached(&self.users, uid, unix::lookup_user)
    }

    /// The name of group `gid`, empty when there is no such group.
    pub fn group(&self, gid: u32) -> Vec<u8> {
        Self::cached(&self.groups, gid, unix::lookup_group)
    }

    fn cached(
        map: &RwLock<HashMap<u32, Vec<u8>>>,
        id: u32,
        lookup: fn(u32) -> io::Result<Option<Vec<u8>>>,
    ) -> Vec<u8> {
        if let Some(name) = map.read().unwrap_or_else(PoisonError::into_inner).get(&id) {
            return name.clone();
        }
        match lookup(id) {
            Ok(name) => {
                let name = name.unwrap_or_default();
                map.write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(id, name.clone());
                name
            }
            // Transient (e.g. a directory service timing out): do not cache the failure.
            Err(_) => Vec::new(),
        }
    }
}
