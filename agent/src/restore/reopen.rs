//! Opening again, by path, a file the restore created and closed (a batch keeps only so
//! many descriptors open), so that nothing put in its place since is written, read or
//! given metadata instead.
//!
//! While a restore runs into a directory others can write to, a directory on a file's path
//! may be replaced by a symlink to elsewhere, or the file by another. The path is opened
//! with `O_PATH | O_NOFOLLOW` (no permission needed, no device or FIFO opened, no final
//! symlink followed), the inode found is checked against the one created, and only then is
//! it opened for reading or writing, through that descriptor.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;

/// A file's device and inode numbers.
pub(super) type Identity = (u64, u64);

/// The identity of an open file; `None` when it cannot be read.
pub(super) fn identity_of(file: &File) -> Option<Identity> {
    file.metadata().ok().map(|meta| (meta.dev(), meta.ino()))
}

/// Opens the regular file at `path` again, for writing when `write` (else for reading),
/// provided it is still `identity` (when known); fails naming the reason otherwise.
pub(super) fn reopen(path: &Path, identity: Option<Identity>, write: bool) -> io::Result<File> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let pinned = File::from(openat(AT_FDCWD, path, flags, Mode::empty())?);
    let meta = pinned.metadata()?;
    if !meta.is_file() || identity.is_some_and(|known| known != (meta.dev(), meta.ino())) {
        return Err(io::Error::other(
            "replaced while the restore ran: not the file it created",
        ));
    }
    OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(crate::platform::fd_path(pinned.as_fd()))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn only_the_file_created_is_opened_again() {
        let temp = tempfile::tempdir().expect("tempdir");
        let (dir, path) = (temp.path().join("dir"), temp.path().join("dir/f"));
        fs::create_dir(&dir).expect("mkdir");
        let created = File::create(&path).expect("create");
        let identity = identity_of(&created);
        drop(created);

        reopen(&path, identity, true)
            .and_then(|mut file| file.write_all(b"restored"))
            .expect("the same file");
        let mut read = String::new();
        reopen(&path, identity, false)
            .and_then(|mut file| file.read_to_string(&mut read))
            .expect("read back");
        assert_eq!(read, "restored");

        // Its directory replaced by a symlink to another tree holding a file of that name.
        let elsewhere = temp.path().join("elsewhere");
        fs::create_dir(&elsewhere).expect("mkdir");
        fs::write(elsewhere.join("f"), b"not the restore's").expect("write");
        fs::rename(&dir, temp.path().join("moved")).expect("rename");
        std::os::unix::fs::symlink(&elsewhere, &dir).expect("symlink");
        let refused = reopen(&path, identity, true).expect_err("another file");
        assert!(refused.to_string().contains("replaced"), "{refused}");
        assert_eq!(
            fs::read(elsewhere.join("f")).expect("read"),
            b"not the restore's"
        );

        // The file itself replaced by a symlink: never followed.
        fs::remove_file(&dir).expect("unlink");
        fs::rename(temp.path().join("moved"), &dir).expect("rename back");
        fs::remove_file(&path).expect("remove");
        std::os::unix::fs::symlink(elsewhere.join("f"), &path).expect("symlink");
        assert!(reopen(&path, identity, true).is_err());
        assert!(
            reopen(&path, None, true).is_err(),
            "a symlink, whatever its target"
        );
    }
}
