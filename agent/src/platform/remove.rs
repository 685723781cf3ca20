//! Removing a restore target without ever following a symlink.
//!
//! [`remove_tree_nofollow`] walks from `/` to the target's parent one directory at a time
//! with `openat(O_NOFOLLOW | O_DIRECTORY)`, so a symlink anywhere in the path fails the call
//! instead of redirecting it; inside the tree every entry is named relative to its open
//! parent directory (`fstatat(AT_SYMLINK_NOFOLLOW)`, `unlinkat`), so a symlink is removed,
//! never entered, and no later path lookup can be redirected by swapping a directory for a
//! symlink. The walk never crosses into another filesystem (a mount point inside the tree
//! fails the call) and makes read-only directories it owns writable before emptying them.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use super::PlatformError;
use super::long_paths::entry_names;

/// Removes the entry at the absolute, normalized `path` (a file, a symlink, or a directory
/// and everything in it) without following any symlink, in the path or in the tree.
///
/// Returns `Ok(false)` when nothing is at `path` (or its parent is gone). Fails, naming
/// the entry, when a parent of `path` is a symlink, when `path` is not absolute or holds
/// `.`/`..`, when the tree holds a mount point, or when an entry cannot be removed.
pub fn remove_tree_nofollow(path: &Path) -> Result<bool, PlatformError> {
    let fail = |op: &'static str, errno: Errno| PlatformError::new(path, op, errno.into());
    let mut parts = Vec::new();
    for (at, component) in path.components().enumerate() {
        match component {
            Component::RootDir if at == 0 => {}
            Component::Normal(name) if at > 0 => parts.push(name),
            _ => {
                return Err(PlatformError::new(
                    path,
                    "remove (not an absolute, normalized path)",
                    io::ErrorKind::InvalidInput.into(),
                ));
            }
        }
    }
    let Some((name, parents)) = parts.split_last() else {
        return Err(PlatformError::new(
            path,
            "remove",
            io::ErrorKind::InvalidInput.into(),
        ));
    };
    let mut dir = openat(AT_FDCWD, "/", dir_flags(), Mode::empty())
        .map_err(|e| fail("open the root directory to remove", e))?;
    for part in parents {
        dir = match openat(&dir, *part, dir_flags(), Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(false),
            Err(e @ (Errno::ELOOP | Errno::ENOTDIR)) => {
                return Err(fail("remove (a parent directory is a symlink)", e));
            }
            Err(e) => return Err(fail("open a parent directory of", e)),
        };
    }
    let stat = match fstatat(&dir, *name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) => stat,
        Err(Errno::ENOENT) => return Ok(false),
        Err(e) => return Err(fail("inspect", e)),
    };
    remove_entry(&dir, name, &stat, stat.st_dev, path)?;
    Ok(true)
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

fn is_dir(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Removes `name` in `parent` (whose stat is `stat`); `device` is the target's filesystem.
fn remove_entry(
    parent: &OwnedFd,
    name: &OsStr,
    stat: &FileStat,
    device: u64,
    shown: &Path,
) -> Result<(), PlatformError> {
    let fail = |op: &'static str, errno: Errno| PlatformError::new(shown, op, errno.into());
    if !is_dir(stat) {
        return unlinkat(parent, name, UnlinkatFlags::NoRemoveDir).map_err(|e| fail("remove", e));
    }
    if stat.st_dev != device {
        return Err(PlatformError::new(
            shown,
            "remove (a mount point; not crossing filesystems)",
            io::ErrorKind::Unsupported.into(),
        ));
    }
    let dir = openat(parent, name, dir_flags(), Mode::empty())
        .map_err(|e| fail("open the directory to remove", e))?;
    empty_directory(&dir, device, shown)?;
    unlinkat(parent, name, UnlinkatFlags::RemoveDir).map_err(|e| fail("remove directory", e))
}

/// Removes everything inside the open directory `dir` (shown as `shown`).
fn empty_directory(dir: &OwnedFd, device: u64, shown: &Path) -> Result<(), PlatformError> {
    let fail = |op: &'static str, errno: Errno| PlatformError::new(shown, op, errno.into());
    let own = fstat(dir).map_err(|e| fail("inspect", e))?;
    if own.st_mode & 0o700 != 0o700 {
        // A restored read-only directory: its entries can only go once it is writable.
        // Failing here is fine; the unlink below then reports the real problem.
        let _ = fchmod(
            dir,
            Mode::from_bits_truncate((own.st_mode & 0o7777) | 0o700),
        );
    }
    for name in entry_names(dir.as_fd()).map_err(|e| fail("list", e))? {
        let name = OsStr::from_bytes(name.as_bytes());
        let child: PathBuf = shown.join(name);
        let stat = match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(PlatformError::new(&child, "inspect", e.into())),
        };
        remove_entry(dir, name, &stat, device, &child)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    #[test]
    fn removes_a_tree_but_not_what_its_symlinks_point_to() {
        let temp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(temp.path()).unwrap();
        let outside = base.join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"keep").unwrap();
        let target = base.join("target");
        fs::create_dir_all(target.join("a/b")).unwrap();
        fs::write(target.join("a/b/f"), b"x").unwrap();
        symlink(&outside, target.join("a/link")).unwrap();
        symlink(outside.join("keep"), target.join("file-link")).unwrap();
        fs::set_permissions(target.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(target.join("a"), fs::Permissions::from_mode(0o500)).unwrap();
        assert!(remove_tree_nofollow(&target).unwrap());
        assert!(!target.exists());
        assert_eq!(fs::read(outside.join("keep")).unwrap(), b"keep");
        // Already gone.
        assert!(!remove_tree_nofollow(&target).unwrap());
    }

    #[test]
    fn refuses_a_symlinked_parent_and_relative_paths() {
        let temp = tempfile::tempdir().unwrap();
        let base = fs::canonicalize(temp.path()).unwrap();
        fs::create_dir_all(base.join("real/victim")).unwrap();
        symlink(base.join("real"), base.join("link")).unwrap();
        let err = remove_tree_nofollow(&base.join("link/victim")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(base.join("real/victim").is_dir());
        assert!(remove_tree_nofollow(Path::new("relative/x")).is_err());
        assert!(remove_tree_nofollow(&base.join("real/../real/victim")).is_err());
        assert!(remove_tree_nofollow(Path::new("/")).is_err());
        // A symlink as the target itself is removed as a link.
        symlink(base.join("real"), base.join("target-link")).unwrap();
        assert!(remove_tree_nofollow(&base.join("target-link")).unwrap());
        assert!(base.join("real/victim").is_dir());
    }
}
