//! Paths longer than the kernel's `PATH_MAX`.
//!
//! Deep trees with long names easily pass 4096 bytes, and every path-based system call then
//! fails with `ENAMETOOLONG`. A [`DirHandle`] keeps a directory open while its entries are
//! processed and names each child either by its real path (when short enough) or through
//! the open descriptor as `/proc/self/fd/N/NAME`, which the kernel resolves relative to the
//! directory without walking the long path. `lstat`, `l*xattr`, `open(O_NOFOLLOW)`,
//! `mknod`, `symlink` and `utimensat(AT_SYMLINK_NOFOLLOW)` all act on the final component
//! itself, so they behave exactly as with the real path.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};

/// Longest path handed to the kernel as is (`PATH_MAX` is 4096 including the NUL).
const SHORT_PATH_MAX: usize = 4000;

/// An open directory whose children can be named with short paths.
#[derive(Debug)]
pub struct DirHandle {
    dir: File,
}

impl DirHandle {
    /// Opens the directory at `access` (a path usable in system calls: short, or one given
    /// by another handle's [`DirHandle::child`]).
    pub fn open(access: &Path) -> io::Result<Self> {
        Ok(Self {
            dir: File::open(access)?,
        })
    }

    /// Creates the regular file `name` in this directory with the permission bits
    /// `permissions` (less the umask), open for writing, relative to the open descriptor
    /// (no path walked). Fails when anything is there already (`O_EXCL`: an existing
    /// entry, symlink or not, is never followed or replaced).
    ///
    /// Pass [`PRIVATE_FILE_MODE`](super::PRIVATE_FILE_MODE) unless no one else can reach
    /// the directory: a file restored as `0600` (a private key) must never be open to
    /// others while its content is written, since a descriptor opened then keeps its
    /// access after the mode changes.
    pub fn create_file(&self, name: &OsStr, permissions: u32) -> io::Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.dir,
            name,
            flags,
            Mode::from_bits_truncate(permissions),
        )?;
        Ok(File::from(fd))
    }

    /// Creates the directory `name` in this directory, relative to the open descriptor.
    /// Fails when anything is there already.
    ///
    /// The directory is open to its owner only until its recorded mode is applied, after
    /// everything in it: its entries may be restored with modes (a `0644` file in a `0700`
    /// home) that rely on the directory to keep others out.
    pub fn create_dir(&self, name: &OsStr) -> io::Result<()> {
        mkdirat(&self.dir, name, Mode::S_IRWXU)?;
        Ok(())
    }

    /// Opens the directory `name` in this directory, relative to the open descriptor and
    /// never through a symlink (`O_NOFOLLOW`): a name replaced by a link since it was
    /// looked at fails (`ELOOP`, `ENOTDIR`) instead of leading elsewhere.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Self> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.dir, name, flags, Mode::empty())?;
        Ok(Self {
            dir: File::from(fd),
        })
    }

    /// The open directory, for `*at` system calls on its entries.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// The open directory, for system calls on the directory itself.
    pub fn file(&self) -> &File {
        &self.dir
    }

    /// A path for system calls on the entry `name` of this directory that reaches it
    /// through the open descriptor, `/proc/self/fd/N/NAME`, whatever the length of its
    /// real path: no directory on the way is looked up by name again, so none replaced by
    /// a symlink meanwhile can lead elsewhere. Valid while this handle is open.
    pub fn pinned_child(&self, name: &OsStr) -> PathBuf {
        fd_path(self.fd()).join(name)
    }

    /// The names in this directory, without `.` and `..`, read through its descriptor (no
    /// path walked, nothing opened by name).
    pub fn entry_names(&self) -> io::Result<Vec<Vec<u8>>> {
        let names = entry_names(self.fd()).map_err(io::Error::from)?;
        Ok(names.into_iter().map(CString::into_bytes).collect())
    }

    /// A path for system calls on the entry `name` of this directory, whose real path is
    /// `real`: `real` itself when it is short enough, else `/proc/self/fd/N/NAME`. Valid
    /// while this handle is open.
    pub fn child(&self, real: &Path, name: &OsStr) -> PathBuf {
        if real.as_os_str().as_bytes().len() <= SHORT_PATH_MAX {
            real.to_owned()
        } else {
            self.pinned_child(name)
        }
    }
}

/// `/proc/self/fd/N`: a path to what the descriptor `fd` has open, which the kernel
/// resolves to that very file or directory (opening it again gives the same inode, with
/// new flags), whatever its name is by now. Valid while `fd` is open.
pub fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    Path::new("/proc/self/fd").join(fd.as_raw_fd().to_string())
}

/// The names in the directory open as `dir`, without `.` and `..`, read through a
/// duplicate descriptor. The duplicate shares `dir`'s position, which the reading rewinds
/// when done, so the directory can be listed again.
pub(super) fn entry_names(dir: BorrowedFd<'_>) -> Result<Vec<CString>, Errno> {
    let duplicate = dir.try_clone_to_owned().map_err(|e| {
        e.raw_os_error()
            .map(Errno::from_raw)
            .unwrap_or(Errno::EBADF)
    })?;
    let mut listing = Dir::from_fd(duplicate)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restore holds directories open while it works in them; one renamed away and
    /// replaced by a symlink meanwhile must not send it elsewhere.
    #[test]
    fn a_directory_replaced_by_a_symlink_is_not_followed() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (dir, elsewhere) = (temp.path().join("dir"), temp.path().join("elsewhere"));
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::create_dir_all(elsewhere.join("sub")).expect("mkdir");
        let root = DirHandle::open(temp.path()).expect("open");
        let handle = root.open_dir(OsStr::new("dir")).expect("open dir");

        std::fs::rename(&dir, temp.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(&elsewhere, &dir).expect("symlink");
        // The pinned path reaches the directory held open, not the link's target.
        std::fs::write(handle.pinned_child(OsStr::new("f")), b"x").expect("write");
        assert!(temp.path().join("moved/f").exists());
        assert!(!elsewhere.join("f").exists());
        // Opening by name refuses the symlink now where the directory was.
        let refused = root.open_dir(OsStr::new("dir")).expect_err("a symlink");
        assert!(
            matches!(
                refused.raw_os_error(),
                Some(nix::libc::ELOOP | nix::libc::ENOTDIR)
            ),
            "{refused}"
        );
        // Below the handle, names resolve in the directory held open.
        assert!(handle.open_dir(OsStr::new("sub")).is_ok());
    }

    #[test]
    fn children_of_a_deep_directory_get_usable_paths() {
        let temp = tempfile::tempdir().expect("tempdir");
        let name = "n".repeat(250);
        let mut real = temp.path().to_owned();
        let mut access = real.clone();
        let mut handles = Vec::new();
        for _ in 0..20 {
            let handle = DirHandle::open(&access).expect("open level");
            real.push(&name);
            access = handle.child(&real, OsStr::new(&name));
            std::fs::create_dir(&access).expect("mkdir through the short path");
            handles.push(handle);
        }
        assert!(real.as_os_str().len() > 4096);
        let handle = DirHandle::open(&access).expect("open deepest");
        let file_real = real.join("f");
        let file_access = handle.child(&file_real, OsStr::new("f"));
        assert!(file_access.as_os_str().len() < 100);
        std::fs::write(&file_access, b"deep").expect("write");
        assert_eq!(std::fs::read(&file_access).expect("read"), b"deep");
        // Listed through the descriptors, a level and the deepest directory.
        assert_eq!(handle.entry_names().expect("list"), [b"f".to_vec()]);
        let level = handles.last().expect("a level");
        assert_eq!(
            level.entry_names().expect("list"),
            [name.as_bytes().to_vec()]
        );
        assert_eq!(
            std::fs::read(&file_real).map_err(|e| e.raw_os_error()),
            Err(Some(nix::libc::ENAMETOOLONG)),
            "the real path really is too long for the kernel"
        );
    }

    #[test]
    fn a_file_is_created_relative_to_the_handle_and_nothing_there_is_replaced() {
        use std::io::Write;
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().expect("tempdir");
        let handle = DirHandle::open(temp.path()).expect("open");
        let mut file = handle
            .create_file(OsStr::new("new"), crate::platform::PRIVATE_FILE_MODE)
            .expect("create");
        file.write_all(b"content").expect("write");
        let mode = file.metadata().expect("stat").permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "no one but the owner until the mode is applied"
        );
        assert_eq!(
            std::fs::read(temp.path().join("new")).expect("read"),
            b"content"
        );

        std::fs::write(temp.path().join("taken"), b"old").expect("write");
        std::os::unix::fs::symlink("elsewhere", temp.path().join("dangling")).expect("symlink");
        for name in ["new", "taken", "dangling"] {
            let err = handle.create_file(OsStr::new(name), 0o644).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{name}");
        }
        assert_eq!(
            std::fs::read(temp.path().join("taken")).expect("read"),
            b"old"
        );
        assert!(
            !temp.path().join("elsewhere").exists(),
            "the symlink was not followed"
        );
    }

    #[test]
    fn a_directory_is_created_owner_only_and_nothing_there_is_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let temp = tempfile::tempdir().expect("tempdir");
        let handle = DirHandle::open(temp.path()).expect("open");
        handle.create_dir(OsStr::new("sub")).expect("create");
        let meta = std::fs::symlink_metadata(temp.path().join("sub")).expect("stat");
        assert!(meta.is_dir());
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            0o700,
            "no one but the owner until the mode is applied"
        );

        std::os::unix::fs::symlink("elsewhere", temp.path().join("dangling")).expect("symlink");
        for name in ["sub", "dangling"] {
            let err = handle.create_dir(OsStr::new(name)).expect_err(name);
            assert_eq!(err.kind(), io::ErrorKind::AlreadyExists, "{name}");
        }
        assert!(!temp.path().join("elsewhere").exists());
    }
}
