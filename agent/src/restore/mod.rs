//! Restoring a snapshot, or a path inside it, into a directory.
//!
//! Directories are created first and get their metadata last (creating entries changes a
//! directory's times); file content is written with positioned writes, blobs fetched,
//! authenticated and re-hashed in parallel; holes are never written, so sparse files stay
//! sparse; hard links are recreated; ownership is restored when running as root. A damaged
//! blob costs only the files that need it: every other file is restored, and every
//! failure is reported with the object it came from.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Timestamp};
use bunker_repo_format::{BlobId, Repository};
use rayon::prelude::*;

use crate::cancel::Cancel;
use crate::navigate::{Located, locate};
use crate::platform::{self, ApplyOptions, DirHandle};

/// How to restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Restore owner and group (only root can).
    pub ownership: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreOutcome {
    /// Regular files restored (with or without errors).
    pub files: u64,
    /// Directories restored.
    pub dirs: u64,
    /// Symlinks, devices, fifos.
    pub others: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// What failed, naming the path and the damaged object. Empty on full success.
    pub errors: Vec<String>,
    /// Metadata that could not be applied (xattrs a filesystem refuses, ...).
    pub warnings: Vec<String>,
}

/// Why a restore could not run at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// The repository could not be read (snapshot root, index).
    #[error(transparent)]
    Repository(#[from] bunker_repo_format::Error),
    /// The target cannot be created or written.
    #[error("{}: {source}", path.display())]
    Target {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The restore was cancelled; what was written so far stays.
    #[error("restore interrupted")]
    Interrupted,
}

/// Restores `path` of the snapshot whose root tree is `root` into `target`.
///
/// With `path` = `/`, every backed-up path comes back under `target` (`/srv/app` as
/// `target/srv/app`). A directory path puts that directory's contents directly into
/// `target`; any other entry is restored as `target/NAME`.
pub fn restore(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    path: &Path,
    target: &Path,
    options: &RestoreOptions,
    cancel: &Cancel,
) -> Result<RestoreOutcome, RestoreError> {
    let located = locate(repo, index, root, path)?;
    fs::create_dir_all(target).map_err(|source| RestoreError::Target {
        path: target.to_owned(),
        source,
    })?;
    let mut restorer = Restorer {
        repo,
        index,
        cancel,
        apply: ApplyOptions {
            ownership: options.ownership,
        },
        hardlinks: HashMap::new(),
        outcome: RestoreOutcome::default(),
    };
    match located {
        Located::Dir { tree, .. } => restorer.restore_tree(&tree, target, target)?,
        Located::Other(entry) => {
            let path = target.join(OsStr::from_bytes(&entry.name));
            restorer.restore_entry(&entry, &path, &path)?;
        }
    }
    Ok(restorer.outcome)
}

struct Restorer<'a> {
    repo: &'a Repository,
    index: &'a Index,
    cancel: &'a Cancel,
    apply: ApplyOptions,
    hardlinks: HashMap<(u64, u64), PathBuf>,
    outcome: RestoreOutcome,
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// Removes whatever is at `path` unless it is a directory (which is kept and merged into).
fn clear_non_dir(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

impl Restorer<'_> {
    fn error(&mut self, path: &Path, message: impl std::fmt::Display) {
        self.outcome
            .errors
            .push(format!("{}: {message}", display(path)));
    }

    /// Restores the entries of `tree` into the directory whose real path is `dir` and whose
    /// system-call path is `dir_access` (see [`DirHandle`]).
    fn restore_tree(
        &mut self,
        tree: &BlobId,
        dir: &Path,
        dir_access: &Path,
    ) -> Result<(), RestoreError> {
        let tree = match self.repo.load_tree(self.index, tree) {
            Ok(tree) => tree,
            Err(e) => {
                self.error(dir, format!("directory contents lost: {e}"));
                return Ok(());
            }
        };
        let handle = match DirHandle::open(dir_access) {
            Ok(handle) => handle,
            Err(e) => {
                self.error(dir, format!("could not open directory: {e}"));
                return Ok(());
            }
        };
        for entry in tree.entries() {
            if self.cancel.is_cancelled() {
                return Err(RestoreError::Interrupted);
            }
            let name = OsStr::from_bytes(&entry.name);
            let path = dir.join(name);
            let access = handle.child(&path, name);
            self.restore_entry(entry, &path, &access)?;
        }
        Ok(())
    }

    /// Restores one entry at `path` (real path, for messages), using `access` for system
    /// calls.
    fn restore_entry(
        &mut self,
        entry: &Entry,
        path: &Path,
        access: &Path,
    ) -> Result<(), RestoreError> {
        if matches!(entry.node, Node::Socket) {
            return Ok(());
        }
        let is_dir = matches!(entry.node, Node::Dir { .. });
        match &entry.node {
            Node::File { .. } | Node::Dir { .. } => {}
            _ => self.outcome.others += 1,
        }
        // A second name of an inode seen earlier in this restore becomes a hard link.
        let link_key =
            (!is_dir && entry.meta.nlinks > 1).then_some((entry.meta.device, entry.meta.inode));
        if let Some(first) = link_key.and_then(|key| self.hardlinks.get(&key)).cloned() {
            if matches!(entry.node, Node::File { .. }) {
                self.outcome.files += 1;
            }
            if let Err(e) = clear_non_dir(access).and_then(|()| fs::hard_link(&first, access)) {
                self.error(path, format!("could not link to {}: {e}", display(&first)));
            }
            return Ok(());
        }
        let created = match &entry.node {
            Node::Dir { subtree } => {
                let made = clear_non_dir(access).and_then(|()| match fs::create_dir(access) {
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
                    other => other,
                });
                if let Err(e) = made {
                    self.error(path, format!("could not create directory: {e}"));
                    return Ok(());
                }
                self.outcome.dirs += 1;
                self.restore_tree(subtree, path, access)?;
                true
            }
            Node::File { extents } => {
                self.outcome.files += 1;
                self.restore_file(extents, path, access)
            }
            Node::Symlink { target } => {
                let made = clear_non_dir(access)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        platform::create_symlink(target, access)
                            .map_err(|e| format!("could not {} it: {}", e.op, e.source))
                    });
                self.report(path, made)
            }
            special => {
                let made = clear_non_dir(access)
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        platform::create_special(access, special)
                            .map_err(|e| format!("could not {} it: {}", e.op, e.source))
                    });
                self.report(path, made)
            }
        };
        if !created {
            return Ok(());
        }
        if let Some(key) = link_key {
            self.hardlinks.insert(key, path.to_owned());
        }
        let unrecorded_atime;
        let meta = if entry.meta.atime == Timestamp::default() {
            // Access time not recorded: use the modification time.
            unrecorded_atime = Metadata {
                atime: entry.meta.mtime,
                ..entry.meta.clone()
            };
            &unrecorded_atime
        } else {
            &entry.meta
        };
        match platform::apply_metadata(access, meta, &entry.node, &self.apply) {
            Ok(warnings) => {
                for warning in warnings {
                    self.outcome.warnings.push(format!(
                        "{}: could not {} it: {}",
                        display(path),
                        warning.op,
                        warning.source
                    ));
                }
            }
            Err(e) => self.error(path, format!("could not {} it: {}", e.op, e.source)),
        }
        Ok(())
    }

    fn report(&mut self, path: &Path, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => true,
            Err(message) => {
                self.error(path, message);
                false
            }
        }
    }

    /// Creates a file and writes its content; returns whether it was created (so its
    /// metadata should be applied). Holes are never written: the length is set at the end.
    fn restore_file(&mut self, extents: &[Extent], path: &Path, access: &Path) -> bool {
        if let Err(e) = clear_non_dir(access) {
            self.error(path, format!("could not replace: {e}"));
            return false;
        }
        let file = match OpenOptions::new().write(true).create_new(true).open(access) {
            Ok(file) => file,
            Err(e) => {
                self.error(path, format!("could not create file: {e}"));
                return false;
            }
        };
        let mut jobs = Vec::with_capacity(extents.len());
        let mut offset = 0u64;
        for extent in extents {
            if let Extent::Chunk { id, .. } = extent {
                jobs.push((offset, *id));
            }
            offset += extent.length();
        }
        let size = offset;
        let errors = Mutex::new(Vec::new());
        let written: u64 = jobs
            .par_iter()
            .map(|(offset, id)| {
                let result = self
                    .repo
                    .read_blob(self.index, id)
                    .map_err(|e| e.to_string())
                    .and_then(|data| {
                        file.write_all_at(&data, *offset)
                            .map(|()| data.len() as u64)
                            .map_err(|e| format!("could not write at offset {offset}: {e}"))
                    });
                result.unwrap_or_else(|message| {
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((*offset, message));
                    0
                })
            })
            .sum();
        self.outcome.bytes += written;
        let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
        errors.sort();
        for (_, message) in errors {
            self.error(path, message);
        }
        if let Err(e) = platform::punch_hole_or_set_len(&file, size) {
            self.error(path, format!("could not set length: {e}"));
        }
        true
    }
}
