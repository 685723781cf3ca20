//! Read-only btrfs snapshots: an atomic, point-in-time view of a subvolume to back up from.
//!
//! A snapshot of subvolume `S` for source `NAME` is made at `S/.bunker-snapshots/NAME.<time>`
//! with `btrfs subvolume snapshot -r` (btrfs-progs) and deleted with `btrfs subvolume delete`
//! when the backup is done, whatever its outcome. A snapshot left behind by an agent that
//! died is deleted before the next one is made. The backup reads files from the snapshot but
//! records them under their paths in `S` (see [`crate::backup::ReadFrom`]).

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory, inside the subvolume, that holds the agent's snapshots of it.
pub const SNAPSHOT_DIR: &str = ".bunker-snapshots";

/// Why a snapshot could not be made or deleted.
#[derive(Debug, thiserror::Error)]
pub enum BtrfsError {
    /// The subvolume (or its snapshot directory) cannot be examined or created.
    #[error("btrfs snapshot of {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `btrfs` could not be run (btrfs-progs missing?).
    #[error("btrfs snapshot of {}: cannot run `btrfs` (is btrfs-progs installed?): {source}", subvolume.display())]
    Spawn {
        /// The subvolume.
        subvolume: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// `btrfs` ran and refused.
    #[error("`btrfs {}` failed: {message}", args.join(" "))]
    Command {
        /// The arguments given to `btrfs`.
        args: Vec<String>,
        /// Its standard error, trimmed.
        message: String,
    },
}

/// A read-only snapshot that exists until [`BtrfsSnapshot::delete`] (or drop) removes it.
#[derive(Debug)]
pub struct BtrfsSnapshot {
    subvolume: PathBuf,
    path: PathBuf,
    device: u64,
    deleted: bool,
}

impl BtrfsSnapshot {
    /// The subvolume the snapshot is of.
    pub fn subvolume(&self) -> &Path {
        &self.subvolume
    }

    /// Where the snapshot is mounted: the same tree as the subvolume, frozen in time.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subvolume's device number, stable from one backup to the next (each snapshot has
    /// its own): recorded instead of the snapshot's, so unchanged files stay recognisable.
    pub fn subvolume_device(&self) -> u64 {
        self.device
    }

    /// Deletes the snapshot.
    pub fn delete(mut self) -> Result<(), BtrfsError> {
        self.deleted = true;
        delete_subvolume(&self.path)
    }
}

impl Drop for BtrfsSnapshot {
    fn drop(&mut self) {
        if !self.deleted {
            // Best effort: the next run deletes a leftover too.
            let _ = delete_subvolume(&self.path);
        }
    }
}

/// Makes a read-only snapshot of `subvolume` for the source `name`, deleting leftovers of
/// earlier runs of the same source first.
pub fn snapshot(subvolume: &Path, name: &str) -> Result<BtrfsSnapshot, BtrfsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BtrfsError::Io { path, source }
    };
    let device = fs::metadata(subvolume).map_err(io(subvolume))?.dev();
    let dir = subvolume.join(SNAPSHOT_DIR);
    match fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(&dir)(e)),
    }
    check_snapshot_dir(&dir)?;
    let prefix = format!("{name}.");
    for entry in fs::read_dir(&dir).map_err(io(&dir))? {
        let entry = entry.map_err(io(&dir))?;
        let file_name = entry.file_name();
        // Only what this source's own snapshots are called, `NAME.<seconds>`: source `db`
        // must not take `db.prod.<seconds>`, the snapshot another source is reading.
        let ours = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(&prefix))
            .is_some_and(|stamp| !stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit()));
        // And only a subvolume itself: `btrfs subvolume delete` follows a symlink.
        if ours && is_subvolume_root(&entry.path()) {
            delete_subvolume(&entry.path())?;
        }
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!("{prefix}{stamp}"));
    run_btrfs(
        subvolume,
        &[
            "subvolume".into(),
            "snapshot".into(),
            "-r".into(),
            subvolume.as_os_str().to_owned(),
            path.as_os_str().to_owned(),
        ],
    )?;
    Ok(BtrfsSnapshot {
        subvolume: subvolume.to_path_buf(),
        path,
        device,
        deleted: false,
    })
}

/// The snapshot directory must be a real directory (not a symlink) of this user's that no
/// one else can write to: what is in it gets deleted with `btrfs subvolume delete`, and what
/// is made in it is read as the source.
fn check_snapshot_dir(dir: &Path) -> Result<(), BtrfsError> {
    let meta = fs::symlink_metadata(dir).map_err(|source| BtrfsError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let refused = |why: &str| BtrfsError::Io {
        path: dir.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{why}; the agent makes and deletes its snapshots only in a directory of its own"
            ),
        ),
    };
    if !meta.file_type().is_dir() {
        return Err(refused("not a directory (a symlink?)"));
    }
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(refused("owned by another user"));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(refused("writable by other users"));
    }
    Ok(())
}

/// True when `path` itself (not what a symlink points to) is the root of a btrfs subvolume:
/// a directory with inode number 256.
fn is_subvolume_root(path: &Path) -> bool {
    /// `BTRFS_FIRST_FREE_OBJECTID`: the inode number of every subvolume's root directory.
    const SUBVOLUME_ROOT_INODE: u64 = 256;
    fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_dir() && m.ino() == SUBVOLUME_ROOT_INODE)
}

fn delete_subvolume(path: &Path) -> Result<(), BtrfsError> {
    run_btrfs(
        path,
        &[
            "subvolume".into(),
            "delete".into(),
            path.as_os_str().to_owned(),
        ],
    )
}

fn run_btrfs(subvolume: &Path, args: &[OsString]) -> Result<(), BtrfsError> {
    let output = Command::new("btrfs")
        .args(args)
        .output()
        .map_err(|source| BtrfsError::Spawn {
            subvolume: subvolume.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(BtrfsError::Command {
        args: args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}
