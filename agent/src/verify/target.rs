//! The isolated target a drill restores into, and its removal.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh, empty directory to restore into.
#[derive(Debug)]
pub struct Target {
    path: PathBuf,
}

/// Distinguishes temporary directories made by one process.
static SERIAL: AtomicU64 = AtomicU64::new(0);

impl Target {
    /// `given` when it does not exist (it is created) or is an empty directory; otherwise
    /// a new private directory under the system temporary directory.
    pub fn fresh(given: Option<&Path>) -> io::Result<Self> {
        let Some(given) = given else {
            return Self::temporary();
        };
        match fs::symlink_metadata(given) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::DirBuilder::new().mode(0o700).create(given)?;
            }
            Err(e) => return Err(e),
            Ok(meta) if !meta.is_dir() => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a directory", given.display()),
                ));
            }
            Ok(_) => {
                if fs::read_dir(given)?.next().is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!(
                            "{} is not empty: a drill restores into a fresh target",
                            given.display()
                        ),
                    ));
                }
            }
        }
        Ok(Self {
            path: given.to_owned(),
        })
    }

    fn temporary() -> io::Result<Self> {
        let base = std::env::temp_dir();
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let path = base.join(format!(
                "bunker-verify-{}-{}-{nanos:08x}",
                std::process::id(),
                SERIAL.fetch_add(1, Ordering::Relaxed)
            ));
            match fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(Self { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything restored into it (making directories the
    /// snapshot left without write permission writable first).
    pub fn remove(self) -> io::Result<()> {
        if fs::remove_dir_all(&self.path).is_ok() {
            return Ok(());
        }
        make_writable(&self.path);
        match fs::remove_dir_all(&self.path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

/// Gives every directory below `dir` owner rwx, best effort.
fn make_writable(dir: &Path) {
    let Ok(meta) = fs::symlink_metadata(dir) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mode = meta.permissions().mode() | 0o700;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(mode));
    if let Ok(listing) = fs::read_dir(dir) {
        for item in listing.flatten() {
            make_writable(&item.path());
        }
    }
}
