//! A repository in a local directory.
//!
//! Object `a/b/c` is the file `<root>/a/b/c`. A write goes to a temp file in the object's
//! directory (a staged object, written before its full name is known: in the directory of
//! its prefix, `data/`), which is written, made read-only and fsynced, then published with
//! `link(2)`: unlike `rename(2)`, linking fails instead of replacing an object that already
//! exists, so racing writers cannot clobber each other and readers only ever see whole
//! objects. Temp files are named `.tmp-*`; they are never listed, and a crash may leave them
//! behind harmlessly.
//!
//! Object Lock bookkeeping: with a lock policy enabled, each object `a/b/c` gets a sidecar
//! `a/b/.lock-c` holding its retain-until date (decimal seconds since the Unix epoch),
//! written before the object is published. `delete` refuses an object whose date has not
//! passed, whether or not this instance has a policy; `.lock-*` names are never listed.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{OFlag, PosixFadviseAdvice, posix_fadvise};

use super::{Backend, LockPolicy, ObjectMeta, ReadBytes, ReadHints, StagedFile, validate_name};
use crate::chunker::{READ_ALIGN, read_front};
use crate::error::{Error, Result};

/// The object whose presence marks a directory as a repository.
const CONFIG: &str = "config";

/// Prefix of in-flight temp files. Name segments starting with it are reserved.
const TEMP_PREFIX: &str = ".tmp-";

/// Prefix of lock sidecar files. Name segments starting with it are reserved.
const LOCK_PREFIX: &str = ".lock-";

/// Makes temp file names unique within this process; the process id separates processes.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A repository stored as a directory tree of read-only files.
///
/// Besides the [`Backend`] contracts, it guarantees that a published object file is
/// read-only (mode `0o444`) and that `put_if_absent` and `delete` return only after the
/// file and its directory entry have been fsynced. Names with a segment starting with
/// `.tmp-` are rejected with [`Error::Invalid`]: that namespace belongs to temp files.
#[derive(Debug)]
pub struct LocalBackend {
    root: PathBuf,
    lock: RwLock<Option<LockPolicy>>,
}

impl LocalBackend {
    /// Prepares `root` to hold a new repository, creating the directory (and its missing
    /// ancestors, durably) if needed.
    ///
    /// Fails with [`Error::RepositoryExists`] if `root` already holds a `config` object. It
    /// does not write `config` itself: the repository layer does that, with `put_if_absent`,
    /// so two racing `init`s cannot both succeed.
    pub fn create(root: impl AsRef<Path>) -> Result<Self> {
        let backend = Self {
            root: root.as_ref().to_path_buf(),
            lock: RwLock::new(None),
        };
        match fs::symlink_metadata(backend.root.join(CONFIG)) {
            Ok(_) => {
                return Err(Error::RepositoryExists {
                    location: backend.location(),
                });
            }
            Err(e) if is_missing(&e) => {}
            Err(e) => {
                return Err(Error::io(
                    format!("checking for a repository in {}", backend.location()),
                    e,
                ));
            }
        }
        let context = || format!("creating repository directory {}", backend.location());
        create_dirs(&backend.root, None).map_err(|e| Error::io(context(), e))?;
        let meta = fs::metadata(&backend.root).map_err(|e| Error::io(context(), e))?;
        if !meta.is_dir() {
            return Err(Error::Invalid(format!(
                "{} exists and is not a directory",
                backend.location()
            )));
        }
        Ok(backend)
    }

    /// Opens the repository in `root`.
    ///
    /// Fails with [`Error::RepositoryNotFound`] when `root` or its `config` object is missing.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let backend = Self {
            root: root.as_ref().to_path_buf(),
            lock: RwLock::new(None),
        };
        let missing = || Error::RepositoryNotFound {
            location: backend.location(),
        };
        match fs::metadata(backend.root.join(CONFIG)) {
            Ok(meta) if meta.is_file() => Ok(backend),
            Ok(_) => Err(missing()),
            Err(e) if is_missing(&e) => Err(missing()),
            Err(e) => Err(Error::io(
                format!("opening repository {}", backend.location()),
                e,
            )),
        }
    }

    /// The directory holding the repository.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Validates `name` and returns the path of its file.
    fn object_path(&self, name: &str) -> Result<PathBuf> {
        validate_name(name)?;
        if name.split('/').any(is_reserved) {
            return Err(Error::Invalid(format!(
                "invalid object name {name:?}: segments starting with {TEMP_PREFIX:?} or \
                 {LOCK_PREFIX:?} are reserved"
            )));
        }
        Ok(self.root.join(name))
    }

    /// Maps an error from reading `name`: missing means [`Error::NotFound`].
    fn read_error(&self, what: &str, name: &str, e: io::Error) -> Error {
        if is_missing(&e) {
            not_found(name)
        } else {
            self.io_error(what, name, e)
        }
    }

    /// An [`Error::Io`] saying what was done to which object where.
    fn io_error(&self, what: &str, name: &str, e: io::Error) -> Error {
        Error::io(format!("{what} {name} in {}", self.root.display()), e)
    }

    /// Opens an object for reading and returns it with its size.
    fn open_object(&self, name: &str) -> Result<(File, u64)> {
        let path = self.object_path(name)?;
        let file = File::open(&path).map_err(|e| self.read_error("opening", name, e))?;
        let meta = file
            .metadata()
            .map_err(|e| self.read_error("reading metadata of", name, e))?;
        if !meta.is_file() {
            // A directory holding longer names, not an object.
            return Err(not_found(name));
        }
        Ok((file, meta.len()))
    }

    /// Path of the lock sidecar of the object at `path`.
    fn lock_path(path: &Path) -> PathBuf {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default();
        parent_dir(path).join(format!("{LOCK_PREFIX}{file}"))
    }

    /// The retain-until date recorded for the object at `path`, if any.
    fn read_lock(&self, name: &str, path: &Path) -> Result<Option<SystemTime>> {
        match fs::read_to_string(Self::lock_path(path)) {
            Ok(text) => {
                let secs: u64 = text.trim().parse().map_err(|_| {
                    Error::corrupt(
                        name,
                        format!("lock sidecar holds {:?}, not a date", text.trim()),
                    )
                })?;
                Ok(Some(UNIX_EPOCH + Duration::from_secs(secs)))
            }
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(self.io_error("reading the lock of", name, e)),
        }
    }

    /// Records `until` as the retain-until date of the object at `path`, unless a later
    /// date is recorded already. The sidecar is replaced atomically and fsynced.
    fn write_lock(&self, name: &str, path: &Path, until: SystemTime) -> Result<()> {
        if self
            .read_lock(name, path)?
            .is_some_and(|current| current >= until)
        {
            return Ok(());
        }
        let secs = until
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // Round up: a lock never ends before the asked date.
        let secs = if UNIX_EPOCH + Duration::from_secs(secs) < until {
            secs + 1
        } else {
            secs
        };
        let dir = parent_dir(path);
        let written = (|| {
            create_dirs(dir, Some(&self.root))?;
            let (temp, mut file) = create_temp(dir)?;
            let result = file
                .write_all(secs.to_string().as_bytes())
                .and_then(|()| file.sync_all())
                .and_then(|()| fs::rename(&temp, Self::lock_path(path)));
            if result.is_err() {
                let _ = fs::remove_file(&temp);
            }
            result?;
            sync_dir(dir)
        })();
        written.map_err(|e| self.io_error("writing the lock of", name, e))
    }

    /// A new temp file in `dir`, creating the directory (durably) if it is missing; errors
    /// name `what` the file is for.
    fn create_temp_in(&self, dir: &Path, what: &str) -> Result<(PathBuf, File)> {
        match create_temp(dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_dirs(dir, Some(&self.root))
                    .map_err(|e| self.io_error("creating the directory for", what, e))?;
                create_temp(dir)
            }
            other => other,
        }
        .map_err(|e| self.io_error("creating a temp file for", what, e))
    }

    /// The first half of a put: `name`'s path, once it is known to be free (a cheap early
    /// exit; the link in [`Self::link_object`] is what guarantees no overwrite) and its
    /// lock, under a lock policy, is written.
    fn prepare_put(&self, name: &str) -> Result<PathBuf> {
        let path = self.object_path(name)?;
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                return Err(Error::Invalid(format!(
                    "cannot store {name} in {}: a directory of that name holds other objects",
                    self.location()
                )));
            }
            Ok(_) => return Err(already_exists(name)),
            Err(_) => {}
        }
        let policy = *self.lock.read().unwrap_or_else(|e| e.into_inner());
        if let Some(policy) = policy {
            self.write_lock(name, &path, SystemTime::now() + policy.period)?;
        }
        Ok(path)
    }

    /// The second half of a put: the filled temp file becomes the object at `path`,
    /// durably, or `AlreadyExists`. The caller removes the temp name.
    fn link_object(&self, file: File, temp_path: &Path, path: &Path, name: &str) -> Result<()> {
        let dir = parent_dir(path);
        let linked = make_durable(file).and_then(|()| match fs::hard_link(temp_path, path) {
            // A staged file's object directory may not exist yet.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                create_dirs(dir, Some(&self.root))?;
                fs::hard_link(temp_path, path)
            }
            other => other,
        });
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(already_exists(name)),
            Err(e) => return Err(self.io_error("writing", name, e)),
        }
        sync_dir(dir).map_err(|e| self.io_error("syncing the directory of", name, e))
    }

    /// Walks the tree under the root for the files `what` asks for: the objects whose names
    /// start with `prefix`, or the temp files (`prefix` then narrows the directories read).
    fn scan(&self, prefix: &str, what: Scan) -> Result<Vec<ObjectMeta>> {
        let mut found = Vec::new();
        // Directories still to read, each with the name prefix of its objects ("data/ab/").
        let mut pending = vec![(self.root.clone(), String::new())];
        // Directories entered, by device and inode.
        let mut visited = std::collections::HashSet::new();
        if let Ok(meta) = fs::metadata(&self.root) {
            visited.insert((meta.dev(), meta.ino()));
        }
        while let Some((dir, dir_name)) = pending.pop() {
            let shown = if dir_name.is_empty() { "/" } else { &dir_name };
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                // A subdirectory removed while we list holds nothing any more; a missing
                // root, though, is an error rather than an empty repository.
                Err(e) if is_missing(&e) && !dir_name.is_empty() => continue,
                Err(e) => return Err(self.io_error("listing", shown, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_error("listing", shown, e))?;
                let file_name = entry.file_name();
                let Some(segment) = file_name.to_str() else {
                    continue; // not UTF-8: neither an object nor one of our temp files
                };
                // A valid object name may be an object or a directory of them.
                let is_name = !is_reserved(segment) && validate_name(segment).is_ok();
                let name = format!("{dir_name}{segment}");
                let wanted = match what {
                    Scan::Temps => segment.starts_with(TEMP_PREFIX),
                    Scan::Objects => is_name && name.starts_with(prefix),
                };
                if !(is_name || wanted) {
                    continue;
                }
                let mut file_type = entry
                    .file_type()
                    .map_err(|e| self.io_error("listing", &name, e))?;
                // A symlink counts as what it leads to, as for `get` and `head` (a kind's
                // directory, `data/`, may be a symlink to another disk).
                let mut target = None;
                if file_type.is_symlink() {
                    match fs::metadata(entry.path()) {
                        Ok(meta) => {
                            file_type = meta.file_type();
                            target = Some(meta);
                        }
                        Err(e) if is_missing(&e) => continue, // leads nowhere
                        Err(e) => return Err(self.io_error("reading metadata of", &name, e)),
                    }
                }
                if file_type.is_dir() && is_name {
                    let sub = name + "/";
                    // Descend only where names matching the prefix can be, and into each
                    // directory once (a symlink may lead back up).
                    if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                        let meta = match target {
                            Some(meta) => meta,
                            None => entry
                                .metadata()
                                .map_err(|e| self.io_error("listing", &sub, e))?,
                        };
                        if visited.insert((meta.dev(), meta.ino())) {
                            pending.push((entry.path(), sub));
                        }
                    }
                } else if file_type.is_file() && wanted {
                    match target.map_or_else(|| entry.metadata(), Ok) {
                        Ok(meta) => found.push(ObjectMeta {
                            name,
                            size: meta.len(),
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        }),
                        Err(e) if is_missing(&e) => {} // deleted while we list
                        Err(e) => return Err(self.io_error("reading metadata of", &name, e)),
                    }
                }
            }
        }
        Ok(found)
    }

    /// Opens an object for a read of `length` bytes at `offset`, which must lie within it.
    fn open_range(&self, name: &str, offset: u64, length: u64) -> Result<File> {
        let (file, size) = self.open_object(name)?;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::corrupt(
                name,
                format!(
                    "range of {length} bytes at offset {offset} runs past the end of the \
                     {size}-byte object"
                ),
            ));
        }
        Ok(file)
    }

    /// Reads exactly `length` bytes at `offset` with a positioned read.
    fn read_at(&self, file: &File, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let mut buf = vec![0; buffer_length(name, length)?];
        file.read_exact_at(&mut buf, offset)
            .map_err(|e| self.io_error("reading", name, e))?;
        Ok(buf)
    }
}

impl Backend for LocalBackend {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn read_hints(&self) -> ReadHints {
        ReadHints::LOCAL
    }

    fn put_concurrency(&self) -> usize {
        1
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.prepare_put(name)?;
        let (temp_path, mut file) = self.create_temp_in(parent_dir(&path), name)?;
        let result = match file.write_all(bytes) {
            Ok(()) => self.link_object(file, &temp_path, &path, name),
            Err(e) => Err(self.io_error("writing", name, e)),
        };
        // The temp name was only for staging. Failing to remove it leaves a harmless,
        // never-listed file, which is no reason to fail a write that succeeded.
        let _ = fs::remove_file(&temp_path);
        result
    }

    /// A temp file in `prefix`'s directory (so that it is on the filesystem of the objects
    /// it is linked among, should that directory be a mount or a symlink), linked into its
    /// object's directory when published. A crash leaves it behind, never listed, like any
    /// temp file.
    fn stage(&self, prefix: &str) -> Result<Option<StagedFile>> {
        let segments = prefix.trim_end_matches('/');
        let dir = if segments.is_empty() {
            self.root.clone()
        } else {
            self.object_path(segments)?
        };
        let (path, file) = self.create_temp_in(&dir, &format!("objects under {prefix}"))?;
        // Where the filesystem refuses direct I/O (tmpfs), the writes are buffered.
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(&path)
            .ok();
        Ok(Some(StagedFile::new(path, file, direct)))
    }

    fn publish(&self, staged: StagedFile, name: &str) -> Result<()> {
        let Some(parts) = staged.into_parts() else {
            return Err(Error::Invalid(format!(
                "{name}: the staged file was already published"
            )));
        };
        let (temp_path, file) = parts.map_err(|e| self.io_error("writing", name, e))?;
        let result = self
            .prepare_put(name)
            .and_then(|path| self.link_object(file, &temp_path, &path, name));
        let _ = fs::remove_file(&temp_path);
        result
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        let (file, size) = self.open_object(name)?;
        self.read_at(&file, name, 0, size)
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        let file = self.open_range(name, offset, length)?;
        self.read_at(&file, name, offset, length)
    }

    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        let file = self.open_range(name, offset, length)?;
        let len = buffer_length(name, length)?;
        let mut storage = vec![0; len + READ_ALIGN];
        let front = read_front(&storage, 0, offset);
        file.read_exact_at(&mut storage[front..front + len], offset)
            .map_err(|e| self.io_error("reading", name, e))?;
        storage.truncate(front + len);
        Ok(ReadBytes::new(storage, front))
    }

    fn will_read(&self, name: &str, offset: u64, length: u64) {
        // The kernel reads the pages in the background. Each range read opens the object
        // anew, and so starts without the kernel's readahead: without this hint, every read
        // of an object not in the page cache (a pack this store wrote around the cache)
        // waits for the disk.
        let (Ok(path), Ok(offset), Ok(length)) = (
            self.object_path(name),
            i64::try_from(offset),
            i64::try_from(length),
        ) else {
            return;
        };
        if let Ok(file) = File::open(path) {
            let _ = posix_fadvise(
                &file,
                offset,
                length,
                PosixFadviseAdvice::POSIX_FADV_WILLNEED,
            );
        }
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        let path = self.object_path(name)?;
        let meta =
            fs::metadata(&path).map_err(|e| self.read_error("reading metadata of", name, e))?;
        if !meta.is_file() {
            return Err(not_found(name));
        }
        Ok(ObjectMeta {
            name: name.to_owned(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.scan(prefix, Scan::Objects)
    }

    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        self.scan("", Scan::Temps)
    }

    fn remove_temp(&self, name: &str) -> Result<()> {
        let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
        let is_temp = file.starts_with(TEMP_PREFIX)
            && file.len() > TEMP_PREFIX.len()
            && (dir.is_empty() || validate_name(dir).is_ok());
        if !is_temp {
            return Err(Error::Invalid(format!(
                "{name} is not a temp file of {}",
                self.location()
            )));
        }
        let path = self.root.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => return Ok(()),
            Err(e) => return Err(self.io_error("removing the temp file", name, e)),
        }
        sync_dir(parent_dir(&path)).map_err(|e| self.io_error("syncing the directory of", name, e))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.object_path(name)?;
        if let Some(until) = self.read_lock(name, &path)?
            && until > SystemTime::now()
            && fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
        {
            return Err(Error::Locked {
                object: name.to_owned(),
                location: self.location(),
                until: jiff::Timestamp::try_from(until)
                    .map_or_else(|_| "unknown".to_owned(), |t| t.to_string()),
            });
        }
        match fs::remove_file(&path) {
            Ok(()) => {}
            // A directory of that name holds longer names; there is no such object.
            Err(e) if is_missing(&e) || e.kind() == ErrorKind::IsADirectory => return Ok(()),
            Err(e) => return Err(self.io_error("deleting", name, e)),
        }
        match fs::remove_file(Self::lock_path(&path)) {
            Ok(()) => {}
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(self.io_error("deleting the lock of", name, e)),
        }
        sync_dir(parent_dir(&path)).map_err(|e| self.io_error("syncing the directory of", name, e))
    }

    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        policy.validate()?;
        *self.lock.write().unwrap_or_else(|e| e.into_inner()) = Some(policy);
        Ok(())
    }

    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        let path = self.object_path(name)?;
        self.head(name)?;
        self.read_lock(name, &path)
    }

    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        let path = self.object_path(name)?;
        self.head(name)?;
        self.write_lock(name, &path, until)
    }
}

/// What [`LocalBackend::scan`] collects.
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Object files.
    Objects,
    /// Temp files (`.tmp-*`) in any directory of the store.
    Temps,
}

/// True for name segments reserved for temp and lock files.
fn is_reserved(segment: &str) -> bool {
    segment.starts_with(TEMP_PREFIX) || segment.starts_with(LOCK_PREFIX)
}

/// True when an io error means the path does not exist (or a parent is not a directory).
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn not_found(name: &str) -> Error {
    Error::NotFound {
        object: name.to_owned(),
    }
}

fn already_exists(name: &str) -> Error {
    Error::AlreadyExists {
        object: name.to_owned(),
    }
}

/// The directory containing `path` (`.` for a bare relative name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

/// Fsyncs a directory, making the entries created or removed in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing ancestors, stopping at `base` (which must exist), and
/// fsyncs the parent of each so the new directories survive a crash.
///
/// A directory that already exists counts as created: a concurrent writer may have just
/// made it and not yet synced its parent, and our object must not outlive its directory.
fn create_dirs(dir: &Path, base: Option<&Path>) -> io::Result<()> {
    if base == Some(dir) {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) else {
                return Err(e);
            };
            create_dirs(parent, base)?;
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    }
    sync_dir(parent_dir(dir))
}

/// Creates a new, uniquely named temp file in `dir`.
fn create_temp(dir: &Path) -> io::Result<(PathBuf, File)> {
    loop {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(file) => return Ok((path, file)),
            // Left behind by a crashed process that had our pid: try the next name.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
}

/// Makes a filled temp file read-only and durable, ready to be linked under its final name
/// (linking fails with `AlreadyExists` rather than replacing an existing object).
fn make_durable(file: File) -> io::Result<()> {
    // Change the mode before the fsync so the read-only mode is durable too.
    file.set_permissions(Permissions::from_mode(0o444))?;
    file.sync_all()?;
    // The object is durable: drop its pages from the page cache. Nothing reads a new pack
    // back soon, so keeping them would only evict the host's own working set; and freeing
    // them lets the next object reuse warm pages (on a VM whose free memory goes back to
    // the hypervisor, writing into fresh pages cost backups about 15% of their CPU). Only a
    // hint: where it is not supported, nothing changes.
    let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED);
    drop(file);
    Ok(())
}

/// `length` bytes of `name` as the length of a buffer.
fn buffer_length(name: &str, length: u64) -> Result<usize> {
    usize::try_from(length)
        .map_err(|_| Error::Invalid(format!("{name}: {length} bytes do not fit in memory")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::testing::conformance;

    fn new_backend() -> (tempfile::TempDir, LocalBackend) {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = LocalBackend::create(dir.path().join("repo")).expect("create");
        (dir, backend)
    }

    /// Every file under `dir`, relative, with `/` separators.
    fn files_under(dir: &Path) -> Vec<String> {
        let mut files = Vec::new();
        let mut pending = vec![(dir.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            for entry in fs::read_dir(&dir).expect("read_dir") {
                let entry = entry.expect("entry");
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if entry.file_type().expect("file type").is_dir() {
                    pending.push((entry.path(), name + "/"));
                } else {
                    files.push(name);
                }
            }
        }
        files
    }

    #[test]
    fn passes_conformance() {
        let (_dir, backend) = new_backend();
        conformance(&backend);
    }

    #[test]
    fn ranges_to_read_land_where_memory_agrees_with_the_offset() {
        let (_dir, backend) = new_backend();
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 31 % 251) as u8).collect();
        backend.put_if_absent("data/ab/ab13", &bytes).expect("put");
        for (offset, length) in [(0, 300_000), (1, 1000), (17, 200_000), (4095, 63), (64, 0)] {
            let read = backend
                .get_range_to_read("data/ab/ab13", offset, length)
                .expect("range");
            assert_eq!(&*read, &bytes[offset as usize..(offset + length) as usize]);
            let memory = read.as_ptr() as usize;
            assert_eq!(
                memory.wrapping_sub(offset as usize) % READ_ALIGN,
                0,
                "{offset}+{length}"
            );
        }
    }

    #[test]
    fn objects_are_read_only_files_at_their_name() {
        let (_dir, backend) = new_backend();
        backend
            .put_if_absent("data/ab/ab12", b"hello")
            .expect("put");
        let path = backend.root().join("data").join("ab").join("ab12");
        let meta = fs::metadata(&path).expect("object file");
        assert_eq!(
            meta.permissions().mode() & 0o222,
            0,
            "object file is writable"
        );
        assert_eq!(fs::read(&path).expect("read"), b"hello");
    }

    #[test]
    fn puts_leave_no_temp_files() {
        let (_dir, backend) = new_backend();
        conformance(&backend);
        for i in 0..20 {
            backend
                .put_if_absent(&format!("data/{:02x}/obj{i}", i % 4), &[i; 100])
                .expect("put");
        }
        assert!(backend.put_if_absent("data/00/obj0", b"again").is_err());
        let leftovers = temp_files(&backend);
        assert!(
            leftovers.is_empty(),
            "temp files left behind: {leftovers:?}"
        );
    }

    /// Names of the temp files left anywhere in the repository.
    fn temp_files(backend: &LocalBackend) -> Vec<String> {
        files_under(backend.root())
            .into_iter()
            .filter(|f| {
                f.rsplit('/')
                    .next()
                    .is_some_and(|s| s.starts_with(TEMP_PREFIX))
            })
            .collect()
    }

    /// A staged object holding `parts`, written one after another.
    fn staged_with(backend: &LocalBackend, parts: &[&[u8]]) -> StagedFile {
        let mut staged = backend
            .stage("data/")
            .expect("stage")
            .expect("a local store stages");
        for part in parts {
            staged.write_all(part).expect("write");
        }
        staged
    }

    #[test]
    fn a_staged_object_is_published_whole_read_only_and_locked_without_temp_files() {
        let (_dir, backend) = new_backend();
        backend
            .enable_lock(LockPolicy {
                mode: super::super::LockMode::Governance,
                period: Duration::from_secs(2 * 86_400),
            })
            .expect("lock policy");
        let staged = staged_with(&backend, &[b"first part, ", b"second part"]);
        assert!(
            staged.path().starts_with(backend.root().join("data")),
            "staged in its prefix's directory: {}",
            staged.path().display()
        );
        assert_eq!(staged.len(), 23);
        assert!(
            temp_files(&backend).len() == 1,
            "the staged file is a temp file"
        );
        backend.publish(staged, "data/cd/cd34").expect("publish");

        assert_eq!(
            backend.get("data/cd/cd34").expect("get"),
            b"first part, second part"
        );
        let meta = fs::metadata(backend.root().join("data/cd/cd34")).expect("object file");
        assert_eq!(
            meta.permissions().mode() & 0o222,
            0,
            "object file is writable"
        );
        let until = backend.retained_until("data/cd/cd34").expect("lock");
        assert!(until.is_some_and(|u| u > SystemTime::now()), "{until:?}");
        assert!(
            temp_files(&backend).is_empty(),
            "{:?}",
            temp_files(&backend)
        );
        let listed: Vec<_> = backend
            .list("")
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(listed, ["data/cd/cd34"]);
    }

    #[test]
    fn a_staged_object_never_replaces_one_and_an_abandoned_one_leaves_nothing() {
        let (_dir, backend) = new_backend();
        backend
            .put_if_absent("data/ab/ab12", b"original")
            .expect("put");
        let staged = staged_with(&backend, &[b"impostor"]);
        let err = backend
            .publish(staged, "data/ab/ab12")
            .expect_err("name taken");
        assert!(matches!(err, Error::AlreadyExists { .. }), "{err}");
        assert_eq!(backend.get("data/ab/ab12").expect("get"), b"original");

        let abandoned = staged_with(&backend, &[b"never published"]);
        let path = abandoned.path().to_path_buf();
        assert!(path.exists());
        drop(abandoned);
        assert!(!path.exists(), "an abandoned staged file is removed");
        assert!(
            temp_files(&backend).is_empty(),
            "{:?}",
            temp_files(&backend)
        );
    }

    #[test]
    fn stray_temp_files_are_not_listed_and_temp_names_are_reserved() {
        let (_dir, backend) = new_backend();
        backend.put_if_absent("data/x", b"x").expect("put");
        fs::write(backend.root().join("data").join(".tmp-1-1"), b"partial").expect("write");
        let names: Vec<_> = backend
            .list("")
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["data/x"]);
        assert!(matches!(
            backend.put_if_absent("data/.tmp-2", b"y"),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn temp_files_are_listed_apart_from_objects_and_only_they_can_be_removed_as_temps() {
        let (_dir, backend) = new_backend();
        backend.put_if_absent("data/ab/x", b"x").expect("put");
        backend.put_if_absent("config", b"c").expect("put");
        let root = backend.root();
        fs::write(root.join(".tmp-1-1"), b"a").expect("write");
        fs::write(root.join("data").join(".tmp-1-2"), b"bb").expect("write");
        fs::write(root.join("data/ab").join(".tmp-1-3"), b"ccc").expect("write");
        fs::create_dir(root.join("tree")).expect("mkdir");
        fs::write(root.join("tree").join(".lock-y"), b"1").expect("write");
        let mut temps: Vec<(String, u64)> = backend
            .list_temps()
            .expect("list temps")
            .into_iter()
            .map(|m| (m.name, m.size))
            .collect();
        temps.sort();
        assert_eq!(
            temps,
            [
                (".tmp-1-1".to_owned(), 1),
                ("data/.tmp-1-2".to_owned(), 2),
                ("data/ab/.tmp-1-3".to_owned(), 3)
            ]
        );

        for not_a_temp in [
            "data/ab/x",
            "config",
            "tree/.lock-y",
            "../.tmp-1-1",
            ".tmp-",
        ] {
            assert!(
                matches!(backend.remove_temp(not_a_temp), Err(Error::Invalid(_))),
                "{not_a_temp}"
            );
        }
        for (name, _) in &temps {
            backend.remove_temp(name).expect("remove temp");
        }
        backend
            .remove_temp("data/.tmp-1-2")
            .expect("removing twice succeeds");
        assert!(backend.list_temps().expect("list temps").is_empty());
        assert_eq!(backend.get("data/ab/x").expect("object kept"), b"x");
        assert!(root.join("tree").join(".lock-y").exists());
    }

    #[test]
    fn objects_under_a_symlinked_directory_are_listed() {
        // `stage` keeps temp files in their prefix's directory because `data/` may be a
        // mount or a symlink of its own: what `get` and `head` find there, `list` must too.
        let (dir, backend) = new_backend();
        backend.put_if_absent("data/ab/ab12", b"pack").expect("put");
        backend.put_if_absent("config", b"c").expect("put");
        let elsewhere = dir.path().join("other-disk");
        fs::rename(backend.root().join("data"), &elsewhere).expect("move data/");
        std::os::unix::fs::symlink(&elsewhere, backend.root().join("data")).expect("symlink");
        assert_eq!(backend.get("data/ab/ab12").expect("get"), b"pack");
        backend
            .put_if_absent("data/cd/cd34", b"new")
            .expect("put via the symlink");
        for prefix in ["", "data/", "data/ab/"] {
            let mut names: Vec<String> = backend
                .list(prefix)
                .expect("list")
                .into_iter()
                .map(|m| m.name)
                .filter(|n| n.starts_with("data/"))
                .collect();
            names.sort();
            let expected: Vec<&str> = ["data/ab/ab12", "data/cd/cd34"]
                .into_iter()
                .filter(|n| n.starts_with(prefix))
                .collect();
            assert_eq!(names, expected, "list {prefix:?}");
        }
    }

    #[test]
    fn a_symlink_leading_back_up_is_listed_once_not_for_ever() {
        let (_dir, backend) = new_backend();
        backend.put_if_absent("data/ab/ab12", b"pack").expect("put");
        std::os::unix::fs::symlink("..", backend.root().join("data/ab/up")).expect("symlink");
        std::os::unix::fs::symlink("nowhere", backend.root().join("data/ab/ab99"))
            .expect("symlink");
        let names: Vec<String> = backend
            .list("data/")
            .expect("list")
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["data/ab/ab12"]);
    }

    #[test]
    fn open_finds_a_created_repository() {
        let (_dir, backend) = new_backend();
        backend.put_if_absent(CONFIG, b"cfg").expect("put config");
        let opened = LocalBackend::open(backend.root()).expect("open");
        assert_eq!(opened.get(CONFIG).expect("get"), b"cfg");
        assert_eq!(opened.location(), backend.root().display().to_string());
    }

    #[test]
    fn open_without_a_repository_is_repository_not_found() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = LocalBackend::open(dir.path().join("nope"));
        assert!(matches!(missing, Err(Error::RepositoryNotFound { .. })));
        let no_config = LocalBackend::open(dir.path());
        assert!(matches!(no_config, Err(Error::RepositoryNotFound { .. })));
    }

    #[test]
    fn create_over_an_existing_repository_is_repository_exists() {
        let (_dir, backend) = new_backend();
        backend.put_if_absent(CONFIG, b"cfg").expect("put config");
        let again = LocalBackend::create(backend.root());
        assert!(matches!(again, Err(Error::RepositoryExists { .. })));
        assert_eq!(backend.get(CONFIG).expect("get"), b"cfg");
    }

    #[test]
    fn create_accepts_an_existing_empty_directory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = LocalBackend::create(dir.path()).expect("create");
        assert!(backend.list("").expect("list").is_empty());
    }
}
