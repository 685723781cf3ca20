//! Proving a snapshot restores: restore into a fresh, isolated target, then read the
//! restored data back from disk in an independent pass and compare it with the snapshot.
//!
//! - `target`: the fresh directory a drill restores into, and its removal;
//! - `tree`: the verification pass over a restored tree (every entry's kind,
//!   size, mode, mtime, symlink target, device number, extended attributes, hard links and,
//!   as root, owner; entries missing or extra);
//! - `content`: every chunk of a file or image re-read and hashed with the
//!   repository's keyed hash against its blob id, holes read as zeros.
//!
//! The pass shares nothing with the restorer but the snapshot: it does not trust what the
//! restore reported. [`restore_and_verify`] runs both and times them separately (the
//! restore time is the RTO). The smoke step and the other drill steps are in
//! [`crate::drill`].

mod content;
mod target;
mod tree;

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::{Snapshot, SourceKind};
use bunker_repo_format::tree::Node;
use bunker_repo_format::{BlobId, Repository};

use crate::cancel::Cancel;
use crate::restore::{
    RestoreError, RestoreOptions, RestoreOutcome, restore, restore_volume, volume_entry,
};
pub(crate) use content::first_difference;
pub use target::Target;

/// Name of the image a volume snapshot is restored to, inside the target directory.
pub const VOLUME_IMAGE: &str = "volume.img";

/// How to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Compare owner and group (only meaningful when the restore could set them: root).
    pub ownership: bool,
}

/// One way the restored data differs from the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The restored path.
    pub path: PathBuf,
    /// What differs ("mode 600, the snapshot has 644").
    pub what: String,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.what)
    }
}

/// What the verification pass found.
#[derive(Debug, Clone, Default)]
pub struct Verification {
    /// Entries read back (files, directories, symlinks, ...).
    pub entries: u64,
    /// Regular files (or the image) whose content was checked, each hard-link name counted.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Every difference, in walk order; empty when the restore is exact.
    pub differences: Vec<Difference>,
}

/// Verifies the directory `dir` against the snapshot tree `tree` (the entries of `tree`
/// must be the entries of `dir`).
pub fn verify_tree(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    dir: &Path,
    options: &VerifyOptions,
) -> Verification {
    tree::TreeVerifier::new(repo, index, options).run(tree, dir)
}

/// Verifies the image (or device) `image` against the volume of the snapshot whose root
/// tree is `root`: its size (an image must be exactly the volume's size, a device at least)
/// and every chunk.
pub fn verify_volume(
    repo: &Repository,
    index: &Index,
    root: &BlobId,
    image: &Path,
) -> Result<Verification, RestoreError> {
    let entry = volume_entry(repo, index, root)?;
    let Node::File { extents } = &entry.node else {
        return Err(RestoreError::Unsuitable("not a volume".into()));
    };
    let size = entry.size();
    let mut result = Verification {
        entries: 1,
        files: 1,
        bytes: size,
        differences: Vec::new(),
    };
    let mut differ = |what: String| {
        result.differences.push(Difference {
            path: image.to_owned(),
            what,
        });
    };
    let file = match OpenOptions::new().read(true).open(image) {
        Ok(file) => file,
        Err(e) => {
            differ(format!("cannot open: {e}"));
            return Ok(result);
        }
    };
    let meta = file.metadata().map_err(|source| RestoreError::Target {
        path: image.to_owned(),
        source,
    })?;
    // An image file holds the volume and nothing else; a device may be larger.
    if meta.is_file() && meta.len() != size {
        differ(format!("size {}, the volume has {size}", meta.len()));
        return Ok(result);
    }
    let found = if meta.len() == 0 {
        device_size(&file).unwrap_or(0)
    } else {
        meta.len()
    };
    if found < size {
        differ(format!("size {found}, the volume has {size}"));
        return Ok(result);
    }
    match content::first_difference(repo, &file, extents) {
        Ok(Some(what)) => differ(what),
        Ok(None) => {}
        Err(e) => differ(format!("cannot read: {e}")),
    }
    Ok(result)
}

/// A block device's size (its metadata length is 0).
fn device_size(file: &std::fs::File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = file;
    file.seek(SeekFrom::End(0))
}

/// A restore into a fresh target followed by the verification pass.
#[derive(Debug, Clone)]
pub struct RestoreAndVerify {
    /// What was restored: the target directory, or the image for a volume snapshot.
    pub restored: PathBuf,
    /// What the restore did (its errors name the damaged objects).
    pub restore: RestoreOutcome,
    /// Time to restore: the recovery time.
    pub restore_time: Duration,
    /// The verification pass; `None` when the restore failed (nothing worth comparing).
    pub verification: Option<Verification>,
    /// Time the verification pass took.
    pub verify_time: Duration,
}

/// Restores `snapshot` into the (fresh, empty) directory `target` and verifies it: a
/// files or stream snapshot as a tree, a volume snapshot as the image
/// `target/`[`VOLUME_IMAGE`].
pub fn restore_and_verify(
    repo: &Repository,
    index: &Index,
    snapshot: &Snapshot,
    target: &Path,
    options: &VerifyOptions,
    cancel: &Cancel,
) -> Result<RestoreAndVerify, RestoreError> {
    let started = Instant::now();
    let (restored, outcome) = if snapshot.source_kind == SourceKind::Volume {
        let image = target.join(VOLUME_IMAGE);
        let outcome = restore_volume(repo, index, &snapshot.tree, &image, None, cancel)?;
        (image, outcome)
    } else {
        let restore_options = RestoreOptions {
            ownership: options.ownership,
            ..RestoreOptions::default()
        };
        let outcome = restore(
            repo,
            index,
            &snapshot.tree,
            Path::new("/"),
            target,
            &restore_options,
            cancel,
        )?;
        (target.to_owned(), outcome)
    };
    let restore_time = started.elapsed();
    let started = Instant::now();
    let verification = if !outcome.errors.is_empty() {
        None
    } else if snapshot.source_kind == SourceKind::Volume {
        Some(verify_volume(repo, index, &snapshot.tree, &restored)?)
    } else {
        Some(verify_tree(repo, index, &snapshot.tree, target, options))
    };
    Ok(RestoreAndVerify {
        restored,
        restore: outcome,
        restore_time,
        verification,
        verify_time: started.elapsed(),
    })
}

#[cfg(test)]
mod tests;
