//! Unix implementation of the platform layer (Linux first; anything with `lstat`,
//! `lseek(SEEK_DATA)`, `utimensat` and l*xattr calls).

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use bunker_repo_format::tree::{EntryFlags, Metadata, Node, Timestamp};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{
    FchmodatFlags, Mode, SFlag, UtimensatFlags, dev_t, fchmodat, fstatat, futimens, lstat, mknod,
    utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Group, Uid, User, Whence, fchownat, geteuid, gethostname, lseek, mkfifo};

use super::{ApplyOptions, CaptureWarning, Captured, CapturedKind, NameCache, PlatformError};

/// Permissions of a restored entry until [`apply_metadata_at`] sets its recorded mode: its
/// owner's alone. Special files are always created so, regular files unless no one else
/// can reach them before their metadata is applied.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// Reads the metadata and kind of the entry at `path` without following symlinks.
///
/// Records `st_mode & 0o7777`, owner and group (ids, and names through `names`), the three
/// timestamps with nanoseconds, device, inode, link count and every extended attribute
/// sorted by name (read with the `l*xattr` calls, so a symlink's own attributes). A
/// filesystem without extended attributes gives an empty list. Attributes that cannot be
/// read are reported in [`Captured::warnings`] and set the `INCOMPLETE` flag instead of
/// failing the capture. For a symlink, the target is read after the `lstat`.
pub fn capture(path: &Path, names: &NameCache) -> Result<Captured, PlatformError> {
    capture_knowing(path, None, names, None)
}

/// [`capture`], taking the extended attributes from `known` (an earlier capture of the
/// same path) instead of reading them when the entry is still that one and its status
/// change time has not moved: setting or removing an attribute updates the ctime, so the
/// attributes are the same. Spares a no-change backup a `llistxattr` per entry.
///
/// With `at` (the entry's directory, open, and its name), the `lstat` is made relative to
/// the directory (`fstatat`), without walking `path` again; `path` still names the entry
/// and serves the calls that have no `*at` form (attributes, symlink target).
pub fn capture_knowing(
    path: &Path,
    at: Option<(BorrowedFd<'_>, &OsStr)>,
    names: &NameCache,
    known: Option<&KnownEntry>,
) -> Result<Captured, PlatformError> {
    let stat = match at {
        Some((dir, name)) => fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
        None => lstat(path),
    }
    .map_err(|errno| PlatformError::new(path, "read metadata of", errno.into()))?;
    let file_type = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    let kind = if file_type == SFlag::S_IFREG {
        CapturedKind::File {
            size: stat.st_size.unsigned_abs(),
        }
    } else if file_type == SFlag::S_IFDIR {
        CapturedKind::Dir
    } else if file_type == SFlag::S_IFLNK {
        let target = fs::read_link(path)
            .map_err(|e| PlatformError::new(path, "read symlink target of", e))?;
        CapturedKind::Symlink {
            target: target.into_os_string().into_encoded_bytes(),
        }
    } else if file_type == SFlag::S_IFIFO {
        CapturedKind::Fifo
    } else if file_type == SFlag::S_IFSOCK {
        CapturedKind::Socket
    } else if file_type == SFlag::S_IFCHR {
        CapturedKind::CharDevice { rdev: stat.st_rdev }
    } else if file_type == SFlag::S_IFBLK {
        CapturedKind::BlockDevice { rdev: stat.st_rdev }
    } else {
        return Err(PlatformError::new(
            path,
            "recognise the file type of",
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("unknown file type (mode {:o})", stat.st_mode),
            ),
        ));
    };

    let mut warnings = Vec::new();
    let ctime = timestamp(stat.st_ctime, stat.st_ctime_nsec);
    let xattrs = match known {
        Some(known)
            if known.device == stat.st_dev
                && known.inode == stat.st_ino
                && known.ctime == ctime =>
        {
            known.xattrs.clone()
        }
        _ => read_xattrs(path, &mut warnings),
    };
    let mut meta = Metadata {
        mode: stat.st_mode & 0o7777,
        uid: stat.st_uid,
        gid: stat.st_gid,
        user: names.user(stat.st_uid),
        group: names.group(stat.st_gid),
        mtime: timestamp(stat.st_mtime, stat.st_mtime_nsec),
        atime: timestamp(stat.st_atime, stat.st_atime_nsec),
        ctime,
        device: stat.st_dev,
        inode: stat.st_ino,
        nlinks: stat.st_nlink,
        xattrs,
        flags: 0,
    };
    if !warnings.is_empty() {
        meta.flags |= EntryFlags::INCOMPLETE;
    }
    Ok(Captured {
        meta,
        kind,
        warnings,
    })
}

/// What an earlier capture found at a path, for [`capture_knowing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownEntry {
    /// The device as the system reports it now (not a recorded substitute).
    pub device: u64,
    /// The inode.
    pub inode: u64,
    /// The status change time.
    pub ctime: Timestamp,
    /// Every extended attribute, completely read.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

fn timestamp(sec: i64, nsec: i64) -> Timestamp {
    Timestamp {
        sec,
        nsec: u32::try_from(nsec.clamp(0, 999_999_999)).unwrap_or(0),
    }
}

/// True when the error means "this filesystem has no extended attributes".
fn xattrs_unsupported(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Unsupported || err.raw_os_error() == Some(Errno::EOPNOTSUPP as i32)
}

fn read_xattrs(path: &Path, warnings: &mut Vec<CaptureWarning>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let names = match xattr::list(path) {
        Ok(names) => names,
        Err(err) if xattrs_unsupported(&err) => return Vec::new(),
        Err(err) => {
            warnings.push(CaptureWarning {
                op: "list extended attributes of".into(),
                message: err.to_string(),
            });
            return Vec::new();
        }
    };
    let mut xattrs = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => xattrs.push((name.into_encoded_bytes(), value)),
            // Removed between list and get.
            Ok(None) => {}
            Err(err) => warnings.push(CaptureWarning {
                op: format!("read extended attribute {:?} of", name),
                message: err.to_string(),
            }),
        }
    }
    xattrs.sort();
    xattrs
}

/// Opens the regular file at `path` for reading its content during a backup.
///
/// Never follows a symlink (`O_NOFOLLOW`) and never blocks (`O_NONBLOCK`, so an entry
/// replaced by a fifo since [`capture`] cannot hang the backup); on Linux it asks not to
/// update the access time (`O_NOATIME`), falling back to a plain open where that is not
/// permitted (files the process does not own). Fails with `InvalidInput` when the entry is
/// no longer a regular file.
pub fn open_for_backup(path: &Path) -> io::Result<SourceFile> {
    open_for_backup_at(path, None)
}

/// [`open_for_backup`]; with `at` (the file's directory, open, and its name) the file is
/// opened relative to the directory (`openat`), without walking `path` again.
pub fn open_for_backup_at(
    path: &Path,
    at: Option<(BorrowedFd<'_>, &OsStr)>,
) -> io::Result<SourceFile> {
    let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let open = |flags: OFlag| match at {
        Some((dir, name)) => openat(dir, name, flags, Mode::empty()),
        None => openat(AT_FDCWD, path, flags, Mode::empty()),
    };
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let fd = match open(base | OFlag::O_NOATIME) {
        Err(Errno::EPERM) => open(base),
        other => other,
    }?;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let fd = open(base)?;
    let file = File::from(fd);
    let stat = file.metadata()?;
    if !stat.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no longer a regular file",
        ));
    }
    Ok(SourceFile {
        file,
        may_have_holes: stat.blocks().saturating_mul(512) < stat.len(),
    })
}

/// A regular file opened by [`open_for_backup`], at offset 0.
#[derive(Debug)]
pub struct SourceFile {
    /// The open file.
    pub file: File,
    /// False when the blocks allocated to the file (`st_blocks`, in 512-byte units) cover
    /// its size when opened: it has no holes worth looking for with [`DataRegions`], which
    /// costs several `lseek` calls per file. This is GNU tar's test for sparse files. A
    /// file whose blocks also hold metadata (an external xattr block) may hide a small hole
    /// from it; that hole is then read and stored as zeros, which compress to nearly
    /// nothing, and the restored file is exact but not sparse there.
    pub may_have_holes: bool,
}

impl SourceFile {
    /// The regions of the file's first `size` bytes to read: looked for when it
    /// [may have holes](Self::may_have_holes), else the whole of it.
    pub fn data_regions(&self, size: u64) -> DataRegions {
        if self.may_have_holes {
            DataRegions::new(size)
        } else {
            DataRegions::whole(size)
        }
    }
}

/// True when the open `file` is not the one [`capture`] described in `meta` with `size`,
/// or has changed since: its device, inode, size, modification time or status change time
/// differ. Called after reading the content, this detects files written during the backup.
pub fn changed_since(file: &File, size: u64, meta: &Metadata) -> io::Result<bool> {
    let now = file.metadata()?;
    Ok(now.dev() != meta.device
        || now.ino() != meta.inode
        || now.len() != size
        || timestamp(now.mtime(), now.mtime_nsec()) != meta.mtime
        || timestamp(now.ctime(), now.ctime_nsec()) != meta.ctime)
}

/// The data (non-hole) byte ranges of a file within `0..size`, found one at a time as the
/// caller asks for them, so that what a very fragmented file costs is up to the caller.
///
/// Uses `lseek` with `SEEK_DATA`/`SEEK_HOLE`, which moves the file's offset: a caller that
/// reads with read() seeks to each region it is given. A file that is entirely a hole has
/// no regions. Where the filesystem cannot report holes, the whole file, `0..size`, is
/// data. Ranges are whole filesystem blocks clipped to `size`, so a range may contain
/// zeros; a file that grows while being read is still reported only up to `size`.
#[derive(Debug)]
pub struct DataRegions {
    size: u64,
    /// Where the next search starts: the end of the last region found.
    position: u64,
    /// False for a file without holes worth looking for: one region, no `lseek`.
    search: bool,
}

impl DataRegions {
    /// Regions within `0..size`, from the start, looked for with `lseek`.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            position: 0,
            search: true,
        }
    }

    /// Regions within `range` (of a file at least that long), looked for with `lseek`.
    pub fn within(range: Range<u64>) -> Self {
        Self {
            size: range.end,
            position: range.start,
            search: true,
        }
    }

    /// The whole of `0..size` as one region (none when `size` is 0), for a file with no
    /// holes worth looking for: nothing is asked of the file and its offset stays put.
    pub fn whole(size: u64) -> Self {
        Self {
            search: false,
            ..Self::new(size)
        }
    }

    /// True when asking for the next region moves the file's offset.
    pub fn moves_offset(&self) -> bool {
        self.search
    }

    /// The next data region of `file`, or `None` once there is none before `size`.
    pub fn next_region(&mut self, file: &File) -> io::Result<Option<Range<u64>>> {
        let size = self.size;
        let from = self.position;
        if from >= size {
            return Ok(None);
        }
        if !self.search {
            self.position = size;
            return Ok(Some(from..size));
        }
        let to_offset =
            |pos: u64| i64::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
        let data = match lseek(file, to_offset(from)?, Whence::SeekData) {
            Ok(offset) => offset.unsigned_abs(),
            // No data at or after `from`: the rest is a hole (or the file shrank).
            Err(Errno::ENXIO) => size,
            // The filesystem cannot tell: all of it is data.
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => {
                self.position = size;
                return Ok(Some(from..size));
            }
            Err(errno) => return Err(errno.into()),
        };
        if data >= size {
            self.position = size;
            return Ok(None);
        }
        let hole = match lseek(file, to_offset(data)?, Whence::SeekHole) {
            Ok(offset) => offset.unsigned_abs().min(size),
            // Shrank between the two calls.
            Err(Errno::ENXIO) => size,
            Err(errno) => return Err(errno.into()),
        };
        if hole <= data {
            self.position = size;
            return Ok(None);
        }
        self.position = hole;
        Ok(Some(data..hole))
    }
}

/// Sets the length of `file` to `len`; growing it adds a hole rather than written zeros.
///
/// The restorer writes only a sparse file's data extents and then calls this, so trailing
/// holes take no space.
pub fn punch_hole_or_set_len(file: &File, len: u64) -> io::Result<()> {
    file.set_len(len)
}

/// Creates the special file `node` describes at `path`, which must not exist.
///
/// A fifo is made with `mkfifo`, a character or block device with `mknod` and the stored
/// device number (which needs root, or `CAP_MKNOD`; otherwise the error is returned). A
/// socket is not recreated, since it only means something while a process listens on it:
/// nothing is created and `Ok` is returned. Other kinds are an `InvalidInput` error. The
/// entry is created with mode 0o600; [`apply_metadata_at`] sets the recorded one.
pub fn create_special(path: &Path, node: &Node) -> Result<(), PlatformError> {
    let perm = Mode::from_bits_truncate(PRIVATE_FILE_MODE);
    let result = match node {
        Node::Fifo => mkfifo(path, perm),
        Node::CharDevice { rdev } => mknod(path, SFlag::S_IFCHR, perm, to_dev_t(path, *rdev)?),
        Node::BlockDevice { rdev } => mknod(path, SFlag::S_IFBLK, perm, to_dev_t(path, *rdev)?),
        Node::Socket => return Ok(()),
        Node::File { .. } | Node::Dir { .. } | Node::Symlink { .. } => {
            return Err(PlatformError::new(
                path,
                "create special file",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("a {} is not a special file", node.kind_name()),
                ),
            ));
        }
    };
    result.map_err(|errno| {
        PlatformError::new(
            path,
            format!("create {} at", node.kind_name()),
            errno.into(),
        )
    })
}

// `dev_t` is `u64` on Linux but narrower on some other Unixes.
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn to_dev_t(path: &Path, rdev: u64) -> Result<dev_t, PlatformError> {
    dev_t::try_from(rdev).map_err(|_| {
        PlatformError::new(
            path,
            "create device",
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("device number {rdev:#x} does not fit"),
            ),
        )
    })
}

/// Creates a symlink at `path` pointing to `target` (raw bytes, not resolved or checked).
pub fn create_symlink(target: &[u8], path: &Path) -> Result<(), PlatformError> {
    std::os::unix::fs::symlink(OsStr::from_bytes(target), path)
        .map_err(|e| PlatformError::new(path, "create symlink at", e))
}

/// Restores `meta` on the entry `name` of the directory open as `dir`, which the restorer
/// has just created as `node`, through `*at` system calls relative to `dir`: no directory
/// on the way is looked up by name, so none replaced by a symlink since the restore created
/// it can send the owner, mode or times elsewhere. `path` only names the entry in errors.
///
/// In this order, never following a symlink at `name`:
/// 1. owner and group by number with `lchown`, when `options.ownership` and the entry
///    does not have them already (names are informational);
/// 2. extended attributes, added or replaced (others present are left alone), before the
///    mode so that a read-only mode cannot stop them;
/// 3. the permission bits including setuid, setgid and sticky, after `lchown` because
///    changing owner clears setuid/setgid; not for symlinks, whose mode cannot change on
///    Linux, nor when the entry has them already and steps 1 and 2 changed nothing (the
///    restorer creates many files with their recorded bits: `chmod` is another inode
///    update the filesystem journals);
/// 4. access and modification times to the nanosecond, for every kind including symlinks
///    and directories (so a directory's times must be applied after its contents).
///
/// Steps 1 and 2 are best effort: each failure (a filesystem refusing an attribute, `user.`
/// attributes on a Linux symlink, an owner that cannot be set) is returned in the list of
/// warnings and the remaining steps still run. A failure in step 3 or 4 is the error.
/// A socket is not recreated by [`create_special`], so for [`Node::Socket`] nothing is done.
pub fn apply_metadata_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    path: &Path,
    meta: &Metadata,
    node: &Node,
    options: &ApplyOptions,
) -> Result<Vec<PlatformError>, PlatformError> {
    let symlink = match node {
        Node::Socket => return Ok(Vec::new()),
        Node::Symlink { .. } => true,
        _ => false,
    };
    apply(Subject::At { dir, name, symlink }, path, meta, options)
}

/// [`apply_metadata_at`] for a regular file through a descriptor open on it (for writing, as
/// the restorer holds it), with the same steps and failures: no path lookup, and nothing
/// can replace the file between the steps. `path` only names the file in errors.
pub fn apply_file_metadata(
    file: &File,
    path: &Path,
    meta: &Metadata,
    options: &ApplyOptions,
) -> Result<Vec<PlatformError>, PlatformError> {
    apply(Subject::File(file), path, meta, options)
}

/// What metadata is applied to: an entry of an open directory, or an open file.
#[derive(Clone, Copy)]
enum Subject<'a> {
    /// The entry `name` of the directory open as `dir` (a symlink when `symlink`: it has no
    /// mode of its own).
    At {
        dir: BorrowedFd<'a>,
        name: &'a OsStr,
        symlink: bool,
    },
    File(&'a File),
}

impl Subject<'_> {
    /// Owner, group and mode (`st_mode & 0o7777`) as they are; `None` when they cannot be
    /// read.
    fn ownership(self) -> Option<Ownership> {
        let (uid, gid, mode) = match self {
            Self::At { dir, name, .. } => fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .ok()
                .map(|stat| (stat.st_uid, stat.st_gid, stat.st_mode))?,
            Self::File(file) => file
                .metadata()
                .ok()
                .map(|meta| (meta.uid(), meta.gid(), meta.mode()))?,
        };
        Some(Ownership {
            owner: (uid, gid),
            mode: mode & 0o7777,
        })
    }

    /// The entry `name` of `dir` as a path (`/proc/self/fd/N/NAME`) for the calls that
    /// have no `*at` form (extended attributes, which `l*xattr` never follow).
    fn pinned(dir: BorrowedFd<'_>, name: &OsStr) -> std::path::PathBuf {
        super::fd_path(dir).join(name)
    }

    fn chown(self, uid: u32, gid: u32) -> io::Result<()> {
        match self {
            Self::At { dir, name, .. } => fchownat(
                dir,
                name,
                Some(Uid::from_raw(uid)),
                Some(Gid::from_raw(gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(io::Error::from),
            Self::File(file) => std::os::unix::fs::fchown(file, Some(uid), Some(gid)),
        }
    }

    fn set_xattr(self, name: &OsStr, value: &[u8]) -> io::Result<()> {
        match self {
            Self::At {
                dir, name: entry, ..
            } => xattr::set(Self::pinned(dir, entry), name, value),
            Self::File(file) => xattr::FileExt::set_xattr(file, name, value),
        }
    }

    fn list_xattrs(self) -> io::Result<Vec<std::ffi::OsString>> {
        match self {
            Self::At { dir, name, .. } => Ok(xattr::list(Self::pinned(dir, name))?.collect()),
            Self::File(file) => Ok(xattr::FileExt::list_xattr(file)?.collect()),
        }
    }

    fn remove_xattr(self, name: &OsStr) -> io::Result<()> {
        match self {
            Self::At {
                dir, name: entry, ..
            } => xattr::remove(Self::pinned(dir, entry), name),
            Self::File(file) => xattr::FileExt::remove_xattr(file, name),
        }
    }

    fn chmod(self, mode: u32) -> io::Result<()> {
        let permissions = fs::Permissions::from_mode(mode);
        match self {
            Self::At { symlink: true, .. } => Ok(()),
            // Refused (`EOPNOTSUPP`) if `name` became a symlink: never followed.
            Self::At { dir, name, .. } => fchmodat(
                dir,
                name,
                Mode::from_bits_truncate(mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(io::Error::from),
            Self::File(file) => file.set_permissions(permissions),
        }
    }

    fn set_times(self, atime: Timestamp, mtime: Timestamp) -> io::Result<()> {
        let (atime, mtime) = (timespec(atime), timespec(mtime));
        let result = match self {
            Self::At { dir, name, .. } => {
                utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink)
            }
            Self::File(file) => futimens(file, &atime, &mtime),
        };
        result.map_err(io::Error::from)
    }
}

/// The steps of [`apply_metadata_at`] on `subject`; `path` names it in errors.
fn apply(
    subject: Subject<'_>,
    path: &Path,
    meta: &Metadata,
    options: &ApplyOptions,
) -> Result<Vec<PlatformError>, PlatformError> {
    let mut warnings = Vec::new();
    let before = subject.ownership();
    // An owner the entry already has (root restoring root's files: the restorer creates
    // them as their owner) is not set again: `chown` is an inode update the filesystem
    // journals, where reading the owner is not. It would clear nothing the mode below does
    // not set again.
    let chown = options.ownership && before.map(|b| b.owner) != Some((meta.uid, meta.gid));
    if chown && let Err(e) = subject.chown(meta.uid, meta.gid) {
        warnings.push(PlatformError::new(
            path,
            format!("change owner to {}:{} of", meta.uid, meta.gid),
            e,
        ));
    }
    // Attributes the snapshot does not have go: those of a file already at the target, and
    // the ACL a new entry inherits from a directory's default ACL. The security label is
    // the system's to set.
    let mut xattrs_changed = !meta.xattrs.is_empty();
    let present = if options.remove_other_xattrs {
        subject.list_xattrs()
    } else {
        Ok(Vec::new())
    };
    match present {
        Ok(present) => {
            for name in present {
                let kept = name.as_bytes() == b"security.selinux"
                    || meta
                        .xattrs
                        .iter()
                        .any(|(n, _)| n.as_slice() == name.as_bytes());
                xattrs_changed |= !kept;
                if !kept && let Err(e) = subject.remove_xattr(&name) {
                    warnings.push(PlatformError::new(
                        path,
                        format!("remove extended attribute {name:?} from"),
                        e,
                    ));
                }
            }
        }
        Err(e) if xattrs_unsupported(&e) => {}
        Err(e) => warnings.push(PlatformError::new(path, "list extended attributes of", e)),
    }
    for (name, value) in &meta.xattrs {
        if let Err(e) = subject.set_xattr(OsStr::from_bytes(name), value) {
            warnings.push(PlatformError::new(
                path,
                format!(
                    "set extended attribute {:?} on",
                    String::from_utf8_lossy(name)
                ),
                e,
            ));
        }
    }
    // A mode read before the steps above still holds when they changed nothing: an owner
    // change can clear setuid and setgid, an ACL written or removed moves the group bits.
    let mode = meta.mode & 0o7777;
    let has_mode = !chown && !xattrs_changed && before.is_some_and(|b| b.mode == mode);
    if !has_mode {
        subject
            .chmod(mode)
            .map_err(|e| PlatformError::new(path, format!("set mode {mode:o} of"), e))?;
    }
    subject
        .set_times(meta.atime, meta.mtime)
        .map_err(|e| PlatformError::new(path, "set timestamps of", e))?;
    Ok(warnings)
}

/// An entry's owner and group, and its mode (`st_mode & 0o7777`).
#[derive(Clone, Copy)]
struct Ownership {
    owner: (u32, u32),
    mode: u32,
}

/// Gives the regular file open as `file` (at `path`, named in errors)
/// [`PRIVATE_FILE_MODE`]: for a restored file that lost content, which must not look as if
/// it held its recorded content, nor be open to others.
pub fn make_private(file: &File, path: &Path) -> Result<(), PlatformError> {
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .map_err(|e| PlatformError::new(path, "make private", e))
}

fn timespec(t: Timestamp) -> TimeSpec {
    TimeSpec::new(t.sec, i64::from(t.nsec))
}

/// Raises this process's soft limit on open descriptors to its hard limit (at most 2^20)
/// and returns the soft limit in effect; 1024 when it cannot be read.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 1024;
    };
    let wanted = hard.min(1 << 20);
    if wanted > soft && setrlimit(Resource::RLIMIT_NOFILE, wanted, hard).is_ok() {
        wanted
    } else {
        soft
    }
}

/// True when the process runs with effective uid 0.
pub fn is_root() -> bool {
    geteuid().is_root()
}

/// This host's name (lossily decoded), or `localhost` when it cannot be read.
pub fn hostname() -> String {
    match gethostname() {
        Ok(name) if !name.is_empty() => name.to_string_lossy().into_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The name of the effective user, or its uid as text when it has no account.
pub fn username() -> String {
    let uid = geteuid();
    match User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

pub(super) fn lookup_user(uid: u32) -> io::Result<Option<Vec<u8>>> {
    Ok(User::from_uid(Uid::from_raw(uid))?.map(|user| user.name.into_bytes()))
}

pub(super) fn lookup_group(gid: u32) -> io::Result<Option<Vec<u8>>> {
    Ok(Group::from_gid(Gid::from_raw(gid))?.map(|group| group.name.into_bytes()))
}

#[cfg(test)]
mod tests {
    // Arrays of ranges are lists of regions here, not ranges to expand.
    #![allow(clippy::unwrap_used, clippy::single_range_in_vec_init)]

    use super::*;
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::{FileExt, OpenOptionsExt, lchown, symlink};
    use std::os::unix::net::UnixListener;

    use nix::sys::stat::makedev;
    use tempfile::TempDir;

    use crate::platform::DirHandle;

    /// [`apply_metadata_at`] on the entry at `path`, through its directory opened as the
    /// restorer opens it.
    fn apply_metadata(
        path: &Path,
        meta: &Metadata,
        node: &Node,
        options: &ApplyOptions,
    ) -> Result<Vec<PlatformError>, PlatformError> {
        let parent = path.parent().unwrap();
        let dir = DirHandle::open(parent).unwrap();
        apply_metadata_at(
            dir.fd(),
            path.file_name().unwrap(),
            path,
            meta,
            node,
            options,
        )
    }

    /// The data regions of `file` within `0..size`, collected.
    fn data_regions(file: &File, size: u64) -> io::Result<Vec<Range<u64>>> {
        let mut regions = DataRegions::new(size);
        let mut found = Vec::new();
        while let Some(region) = regions.next_region(file)? {
            found.push(region);
        }
        Ok(found)
    }

    const NON_UTF8: &[u8] = &[0xff, 0x00, 0xfe, b'x', 0x80];
    const MIB: u64 = 1024 * 1024;

    fn set_times(path: &Path, atime: Timestamp, mtime: Timestamp) {
        utimensat(
            AT_FDCWD,
            path,
            &timespec(atime),
            &timespec(mtime),
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
    }

    fn ts(sec: i64, nsec: u32) -> Timestamp {
        Timestamp { sec, nsec }
    }

    /// True when `dir`'s filesystem accepts `user.` attributes on regular files.
    fn user_xattrs_work(dir: &Path) -> bool {
        let probe = dir.join(".xattr-probe");
        File::create(&probe).unwrap();
        let ok = xattr::set(&probe, "user.probe", b"1").is_ok();
        fs::remove_file(&probe).unwrap();
        if !ok {
            eprintln!(
                "skipping xattr assertions: {} does not support user. xattrs",
                dir.display()
            );
        }
        ok
    }

    /// Gives the entry at `path` the test's owner (as root), mode and odd timestamps.
    fn decorate(path: &Path, mode: Option<u32>, seed: i64) {
        if is_root() {
            lchown(path, Some(1234), Some(5678)).unwrap();
        }
        if let Some(mode) = mode {
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
        }
        set_times(
            path,
            ts(1_600_000_000 + seed, 123_456_789),
            ts(1_500_000_000 + seed, 987_654_321),
        );
    }

    /// Recreates `original` (captured from an entry) at `copy` and captures the copy.
    fn restore_and_capture(
        original: &Captured,
        copy: &Path,
        names: &NameCache,
    ) -> (Captured, Vec<PlatformError>) {
        let node = match &original.kind {
            CapturedKind::File { size } => {
                fs::write(copy, vec![b'x'; usize::try_from(*size).unwrap()]).unwrap();
                Node::File {
                    extents: Vec::new(),
                }
            }
            CapturedKind::Dir => {
                fs::create_dir(copy).unwrap();
                Node::Dir {
                    subtree: bunker_repo_format::BlobId::from_bytes([0; 32]),
                }
            }
            CapturedKind::Symlink { target } => {
                create_symlink(target, copy).unwrap();
                Node::Symlink {
                    target: target.clone(),
                }
            }
            CapturedKind::Fifo => Node::Fifo,
            CapturedKind::Socket => Node::Socket,
            CapturedKind::CharDevice { rdev } => Node::CharDevice { rdev: *rdev },
            CapturedKind::BlockDevice { rdev } => Node::BlockDevice { rdev: *rdev },
        };
        if !matches!(
            node,
            Node::File { .. } | Node::Dir { .. } | Node::Symlink { .. }
        ) {
            create_special(copy, &node).unwrap();
        }
        let options = ApplyOptions {
            ownership: is_root(),
            remove_other_xattrs: true,
        };
        let warnings = apply_metadata(copy, &original.meta, &node, &options).unwrap();
        (capture(copy, names).unwrap(), warnings)
    }

    fn assert_restored(original: &Captured, copy: &Captured) {
        let (a, b) = (&original.meta, &copy.meta);
        assert_eq!(original.kind, copy.kind);
        assert_eq!(format!("{:o}", a.mode), format!("{:o}", b.mode), "mode");
        assert_eq!((a.uid, a.gid), (b.uid, b.gid), "owner");
        assert_eq!((&a.user, &a.group), (&b.user, &b.group), "owner names");
        assert_eq!(a.mtime, b.mtime, "mtime");
        assert_eq!(a.atime, b.atime, "atime");
        assert_eq!(a.xattrs, b.xattrs, "xattrs");
        assert_eq!(a.flags, b.flags, "flags");
        assert!(original.warnings.is_empty() && copy.warnings.is_empty());
    }

    #[test]
    fn regular_files_round_trip_mode_owner_times_and_xattrs() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let xattrs = user_xattrs_work(dir.path());
        for (i, mode) in [0o644, 0o4755, 0o2755, 0o400].into_iter().enumerate() {
            let path = dir.path().join(format!("file{i}"));
            fs::write(&path, b"hello").unwrap();
            if xattrs {
                xattr::set(&path, "user.test", NON_UTF8).unwrap();
                xattr::set(&path, "user.another", b"").unwrap();
            }
            decorate(&path, Some(mode), i as i64);
            let original = capture(&path, &names).unwrap();

            assert_eq!(original.kind, CapturedKind::File { size: 5 });
            assert_eq!(original.meta.mode, mode);
            assert_eq!(
                original.meta.mtime,
                ts(1_500_000_000 + i as i64, 987_654_321)
            );
            assert_eq!(
                original.meta.atime,
                ts(1_600_000_000 + i as i64, 123_456_789)
            );
            assert_eq!(original.meta.nlinks, 1);
            assert_eq!(original.meta.flags, 0);
            if is_root() {
                assert_eq!((original.meta.uid, original.meta.gid), (1234, 5678));
            }
            if xattrs {
                let user: Vec<_> = original
                    .meta
                    .xattrs
                    .iter()
                    .filter(|(n, _)| n.starts_with(b"user."))
                    .collect();
                assert_eq!(
                    user,
                    [
                        &(b"user.another".to_vec(), Vec::new()),
                        &(b"user.test".to_vec(), NON_UTF8.to_vec())
                    ]
                );
            }
            let inode = original.meta.inode;
            assert_eq!(inode, fs::metadata(&path).unwrap().ino());

            let (copy, warnings) =
                restore_and_capture(&original, &dir.path().join(format!("copy{i}")), &names);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_restored(&original, &copy);
            assert_ne!(copy.meta.inode, inode);

            // The same through the descriptor the restorer wrote the content with.
            let by_fd = dir.path().join(format!("by-fd{i}"));
            let file = File::create_new(&by_fd).unwrap();
            file.write_all_at(b"hello", 0).unwrap();
            let options = ApplyOptions {
                ownership: is_root(),
                remove_other_xattrs: true,
            };
            let warnings = apply_file_metadata(&file, &by_fd, &original.meta, &options).unwrap();
            drop(file);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_restored(&original, &capture(&by_fd, &names).unwrap());
        }
    }

    #[test]
    fn metadata_through_a_descriptor_names_the_path_when_it_fails() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("read-only-descriptor");
        fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        let mut meta = capture(&path, &NameCache::new()).unwrap().meta;
        meta.xattrs = vec![(b"bogus.namespace".to_vec(), b"v".to_vec())];
        meta.mode = 0o640;
        let warnings = apply_file_metadata(&file, &path, &meta, &ApplyOptions::default()).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(warnings[0].path, path);
        assert!(
            warnings[0].op.contains("bogus.namespace"),
            "{}",
            warnings[0].op
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o640);
    }

    #[test]
    fn known_attributes_are_taken_only_while_device_inode_and_ctime_match() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let real = capture(&path, &names).unwrap().meta;
        let known = KnownEntry {
            device: real.device,
            inode: real.inode,
            ctime: real.ctime,
            xattrs: vec![(b"user.from-parent".to_vec(), b"v".to_vec())],
        };
        let opened = File::open(dir.path()).unwrap();
        let at = Some((std::os::fd::AsFd::as_fd(&opened), OsStr::new("f")));
        let taken = capture_knowing(&path, at, &names, Some(&known))
            .unwrap()
            .meta;
        assert_eq!(taken.xattrs, known.xattrs, "unchanged: not read again");
        assert_eq!(
            Metadata {
                xattrs: real.xattrs.clone(),
                ..taken
            },
            real
        );

        for stale in [
            KnownEntry {
                inode: real.inode + 1,
                ..known.clone()
            },
            KnownEntry {
                device: real.device + 1,
                ..known.clone()
            },
            KnownEntry {
                ctime: ts(real.ctime.sec, real.ctime.nsec ^ 1),
                ..known.clone()
            },
        ] {
            let read = capture_knowing(&path, None, &names, Some(&stale))
                .unwrap()
                .meta;
            assert_eq!(read.xattrs, real.xattrs, "{stale:?}: read from the file");
        }

        // Looked up relative to the open directory, every kind captures as by its path.
        symlink("f", dir.path().join("link")).unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        for name in ["f", "link", "sub"] {
            let path = dir.path().join(name);
            let at = Some((std::os::fd::AsFd::as_fd(&opened), OsStr::new(name)));
            let mut relative = capture_knowing(&path, at, &names, None).unwrap();
            let by_path = capture(&path, &names).unwrap();
            // Reading a symlink's target moves its access time.
            relative.meta.atime = by_path.meta.atime;
            assert_eq!(relative, by_path, "{name}");
        }
        let at = Some((std::os::fd::AsFd::as_fd(&opened), OsStr::new("missing")));
        let err = capture_knowing(&dir.path().join("missing"), at, &names, None).unwrap_err();
        assert_eq!(err.source.kind(), io::ErrorKind::NotFound);
        assert_eq!(err.path, dir.path().join("missing"));
    }

    #[test]
    fn directories_round_trip_setgid_and_sticky() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let xattrs = user_xattrs_work(dir.path());
        for (i, mode) in [0o755, 0o2755, 0o1777, 0o700].into_iter().enumerate() {
            let path = dir.path().join(format!("dir{i}"));
            fs::create_dir(&path).unwrap();
            if xattrs {
                xattr::set(&path, "user.test", NON_UTF8).unwrap();
            }
            decorate(&path, Some(mode), i as i64);
            let original = capture(&path, &names).unwrap();
            assert_eq!(original.kind, CapturedKind::Dir);
            assert_eq!(original.meta.mode, mode);
            assert_eq!(original.meta.mtime.nsec, 987_654_321);

            let (copy, warnings) =
                restore_and_capture(&original, &dir.path().join(format!("copy{i}")), &names);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_restored(&original, &copy);
        }
    }

    #[test]
    fn symlinks_are_captured_not_followed_and_round_trip() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/target"), b"0123456789").unwrap();
        let targets: [&[u8]; 3] = [b"sub/target", b"../does/not/exist", b"dangling-\xff\xfe"];
        for (i, target) in targets.into_iter().enumerate() {
            let path = dir.path().join(format!("link{i}"));
            symlink(OsStr::from_bytes(target), &path).unwrap();
            decorate(&path, None, i as i64);
            let original = capture(&path, &names).unwrap();
            assert_eq!(
                original.kind,
                CapturedKind::Symlink {
                    target: target.to_vec()
                }
            );
            assert_eq!(
                original.meta.mtime,
                ts(1_500_000_000 + i as i64, 987_654_321)
            );
            assert_eq!(original.meta.mode, 0o777);
            if is_root() {
                assert_eq!((original.meta.uid, original.meta.gid), (1234, 5678));
            }

            let copy_path = dir.path().join(format!("copy{i}"));
            let (copy, warnings) = restore_and_capture(&original, &copy_path, &names);
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_restored(&original, &copy);
            assert_eq!(
                fs::read_link(&copy_path).unwrap().as_os_str().as_bytes(),
                target
            );
        }
        // The symlink's target was not touched by restoring the link's metadata.
        let target_meta = fs::metadata(dir.path().join("sub/target")).unwrap();
        assert_ne!(target_meta.mtime(), 1_500_000_000);
        if is_root() {
            assert_eq!(target_meta.uid(), 0);
        }
    }

    #[test]
    fn fifos_and_sockets() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        // Linux allows `user.` xattrs only on regular files and directories.
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        decorate(&fifo, Some(0o640), 7);
        let original = capture(&fifo, &names).unwrap();
        assert_eq!(original.kind, CapturedKind::Fifo);
        assert_eq!(original.meta.mode, 0o640);
        let (copy, warnings) =
            restore_and_capture(&original, &dir.path().join("fifo-copy"), &names);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_restored(&original, &copy);

        let socket = dir.path().join("socket");
        let _listener = UnixListener::bind(&socket).unwrap();
        let captured = capture(&socket, &names).unwrap();
        assert_eq!(captured.kind, CapturedKind::Socket);
        let copy = dir.path().join("socket-copy");
        create_special(&copy, &Node::Socket).unwrap();
        let warnings = apply_metadata(
            &copy,
            &captured.meta,
            &Node::Socket,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert!(
            fs::symlink_metadata(&copy).is_err(),
            "sockets are not recreated"
        );
    }

    #[test]
    fn char_devices_round_trip_rdev() {
        if !is_root() {
            eprintln!("skipping: creating devices needs root");
            return;
        }
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let path = dir.path().join("null");
        let rdev = makedev(1, 3);
        if let Err(errno) = mknod(&path, SFlag::S_IFCHR, Mode::from_bits_truncate(0o666), rdev) {
            eprintln!("skipping: mknod is not permitted here ({errno})");
            return;
        }
        decorate(&path, Some(0o666), 3);
        let original = capture(&path, &names).unwrap();
        assert_eq!(original.kind, CapturedKind::CharDevice { rdev });
        assert_eq!(original.meta.mode, 0o666);
        let (copy, warnings) =
            restore_and_capture(&original, &dir.path().join("null-copy"), &names);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_restored(&original, &copy);
        assert_eq!(
            copy.kind,
            CapturedKind::CharDevice {
                rdev: makedev(1, 3)
            }
        );
    }

    #[test]
    fn create_special_rejects_regular_kinds_and_existing_paths() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("x");
        let err = create_special(
            &path,
            &Node::File {
                extents: Vec::new(),
            },
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        create_special(&path, &Node::Fifo).unwrap();
        let err = create_special(&path, &Node::Fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(
            err.to_string(),
            format!("could not create fifo at {}", path.display())
        );
        let err = create_symlink(b"anywhere", &path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
    }

    #[test]
    fn sparse_files_report_exactly_their_data() {
        let dir = TempDir::new().unwrap();
        let path = dir.path().join("sparse");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        file.write_all(&[1; 4096]).unwrap();
        file.seek(SeekFrom::Start(MIB)).unwrap();
        file.write_all(&[2; 4096]).unwrap();
        file.set_len(3 * MIB).unwrap();
        file.sync_all().unwrap();
        file.seek(SeekFrom::Start(17)).unwrap();

        let regions = data_regions(&file, 3 * MIB).unwrap();
        if regions == [0..3 * MIB] {
            eprintln!("skipping: {} does not report holes", dir.path().display());
            return;
        }
        assert_eq!(regions, [0..4096, MIB..MIB + 4096]);
        // Clipped to the size the caller saw.
        assert_eq!(data_regions(&file, 2048).unwrap(), [0..2048]);
        assert_eq!(
            data_regions(&file, MIB + 100).unwrap(),
            [0..4096, MIB..MIB + 100]
        );
        assert_eq!(data_regions(&file, 0).unwrap(), []);

        // Without the search: the whole file as one region, its offset untouched.
        file.seek(SeekFrom::Start(17)).unwrap();
        let mut whole = DataRegions::whole(3 * MIB);
        assert!(!whole.moves_offset());
        assert_eq!(whole.next_region(&file).unwrap(), Some(0..3 * MIB));
        assert_eq!(whole.next_region(&file).unwrap(), None);
        assert_eq!(file.stream_position().unwrap(), 17);
        assert_eq!(DataRegions::whole(0).next_region(&file).unwrap(), None);

        let hole = File::create(dir.path().join("hole")).unwrap();
        punch_hole_or_set_len(&hole, 5 * MIB).unwrap();
        assert_eq!(hole.metadata().unwrap().len(), 5 * MIB);
        assert_eq!(data_regions(&hole, 5 * MIB).unwrap(), []);

        // Finishing a sparse file: data then a trailing hole.
        punch_hole_or_set_len(&file, 4 * MIB).unwrap();
        assert_eq!(file.metadata().unwrap().len(), 4 * MIB);
        assert_eq!(
            data_regions(&file, 4 * MIB).unwrap(),
            [0..4096, MIB..MIB + 4096]
        );
    }

    #[test]
    fn open_for_backup_refuses_symlinks_and_fifos_and_detects_changes() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let path = dir.path().join("f");
        fs::write(&path, b"before").unwrap();
        set_times(&path, ts(1_600_000_000, 5), ts(1_500_000_000, 7));
        let captured = capture(&path, &names).unwrap();
        let CapturedKind::File { size } = captured.kind else {
            panic!("not a file")
        };
        let SourceFile {
            file,
            may_have_holes,
        } = open_for_backup(&path).unwrap();
        assert!(!may_have_holes, "a written file has its blocks");
        let sparse = dir.path().join("sparse");
        File::create(&sparse).unwrap().set_len(MIB).unwrap();
        fs::OpenOptions::new()
            .write(true)
            .open(&sparse)
            .unwrap()
            .write_all_at(b"x", MIB / 2)
            .unwrap();
        assert!(open_for_backup(&sparse).unwrap().may_have_holes);
        let mut content = Vec::new();
        io::Read::read_to_end(&mut &file, &mut content).unwrap();
        assert_eq!(content, b"before");
        assert!(!changed_since(&file, size, &captured.meta).unwrap());
        // With relatime, reading would update an atime older than a day.
        assert_eq!(
            fs::metadata(&path).unwrap().atime_nsec(),
            5,
            "reading does not touch the access time"
        );

        fs::write(&path, b"after!").unwrap();
        assert!(
            changed_since(&file, size, &captured.meta).unwrap(),
            "same size, new mtime"
        );
        let replaced = dir.path().join("g");
        fs::write(&replaced, b"before").unwrap();
        set_times(&replaced, ts(1_600_000_000, 5), ts(1_500_000_000, 7));
        let other = open_for_backup(&replaced).unwrap().file;
        assert!(
            changed_since(&other, size, &captured.meta).unwrap(),
            "different inode"
        );

        let link = dir.path().join("link");
        symlink(&path, &link).unwrap();
        assert!(open_for_backup(&link).is_err());
        let opened = File::open(dir.path()).unwrap();
        let at = |name: &'static str| Some((std::os::fd::AsFd::as_fd(&opened), OsStr::new(name)));
        assert!(
            open_for_backup_at(&link, at("link")).is_err(),
            "not followed"
        );
        let relative = open_for_backup_at(&path, at("f")).unwrap();
        assert!(!changed_since(&relative.file, 6, &capture(&path, &names).unwrap().meta).unwrap());
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = open_for_backup(&fifo).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        let err = open_for_backup_at(&fifo, at("fifo")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn failed_xattrs_are_warnings_and_the_rest_is_applied() {
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let mut meta = capture(&path, &names).unwrap().meta;
        meta.xattrs = vec![(b"nonamespace.attr".to_vec(), b"v".to_vec())];
        meta.mode = 0o4711;
        meta.mtime = ts(1_234_567_890, 1);
        meta.atime = ts(1_234_567_891, 999_999_999);
        let node = Node::File {
            extents: Vec::new(),
        };
        let warnings = apply_metadata(&path, &meta, &node, &ApplyOptions::default()).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert_eq!(
            warnings[0].to_string(),
            format!(
                "could not set extended attribute \"nonamespace.attr\" on {}",
                path.display()
            )
        );
        let after = capture(&path, &names).unwrap().meta;
        assert_eq!(
            (after.mode, after.mtime, after.atime),
            (0o4711, meta.mtime, meta.atime)
        );
    }

    #[test]
    fn ownership_is_only_applied_when_asked() {
        if !is_root() {
            eprintln!("skipping: changing ownership needs root");
            return;
        }
        let dir = TempDir::new().unwrap();
        let names = NameCache::new();
        let path = dir.path().join("f");
        fs::write(&path, b"x").unwrap();
        let mut meta = capture(&path, &names).unwrap().meta;
        assert_eq!((meta.uid, meta.user.as_slice()), (0, &b"root"[..]));
        meta.uid = 4321;
        meta.gid = 8765;
        let node = Node::File {
            extents: Vec::new(),
        };
        apply_metadata(
            &path,
            &meta,
            &node,
            &ApplyOptions {
                ownership: false,
                ..ApplyOptions::default()
            },
        )
        .unwrap();
        assert_eq!(fs::metadata(&path).unwrap().uid(), 0);
        apply_metadata(
            &path,
            &meta,
            &node,
            &ApplyOptions {
                ownership: true,
                ..ApplyOptions::default()
            },
        )
        .unwrap();
        let stat = fs::metadata(&path).unwrap();
        assert_eq!((stat.uid(), stat.gid()), (4321, 8765));

        // Through a descriptor: the owner the file already has is left as it is (no chown),
        // another one is set, and the mode comes out as recorded either way, setuid bit
        // included (a chown clears it).
        let file = File::options().write(true).open(&path).unwrap();
        meta.mode = 0o4755;
        for owner in [(4321, 8765), (0, 0), (0, 0)] {
            (meta.uid, meta.gid) = owner;
            let options = ApplyOptions {
                ownership: true,
                ..ApplyOptions::default()
            };
            assert!(
                apply_file_metadata(&file, &path, &meta, &options)
                    .unwrap()
                    .is_empty()
            );
            let stat = fs::metadata(&path).unwrap();
            assert_eq!((stat.uid(), stat.gid()), owner);
            assert_eq!(stat.mode() & 0o7777, 0o4755);
        }
    }

    #[test]
    fn errors_name_the_path_and_operation() {
        let dir = TempDir::new().unwrap();
        let missing = dir.path().join("missing");
        let err = capture(&missing, &NameCache::new()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            err.to_string(),
            format!("could not read metadata of {}", missing.display())
        );
        let node = Node::File {
            extents: Vec::new(),
        };
        let err = apply_metadata(
            &missing,
            &Metadata::default(),
            &node,
            &ApplyOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains(&*missing.to_string_lossy()));
        let io_err = io::Error::from(err);
        assert_eq!(io_err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn host_and_user_names() {
        assert!(!hostname().is_empty());
        assert_eq!(is_root(), geteuid().as_raw() == 0);
        let user = username();
        assert!(!user.is_empty());
        if is_root() {
            assert_eq!(user, "root");
        }
        let names = NameCache::new();
        assert_eq!(names.user(0), b"root");
        assert_eq!(names.user(0), b"root", "served from the cache");
        assert!(names.user(3_999_999_999).is_empty());
    }
}
