//! A copy of a remote repository's metadata kept on this host, so that commands stop
//! fetching the same objects from the store every time.
//!
//! [`MetadataCache`] wraps a store and keeps, in a local directory, every snapshot, index
//! segment, tree pack and forget marker it reads or writes, and every audit record,
//! heartbeat and GC plan it reads. These are what nearly every command reads (a backup
//! loads the index, every snapshot to choose its parent and the parent's trees; a prune
//! every heartbeat), and a store reached over a network pays a round trip for each of
//! them. Data packs, key slots and `config` always go to the store.
//!
//! **A copy proves itself.** Every object is named by the BLAKE3 hash of its bytes
//! (FORMAT.md §2), so a copy is used only when its bytes hash to its name; a damaged or
//! truncated copy is fetched again and replaced. Nothing is trusted that the store did not
//! hold, and a wrong copy can cost a fetch, never a wrong answer.
//!
//! **The store decides what exists.** Whole and ranged reads are answered from a copy,
//! everything else goes to the store: listings, heads, deletes, locks. A listing of a whole
//! kind (`snapshots/`, `index/`, ...) removes the copies of objects it no longer lists
//! (another host's prune or forget deleted them), so the directory stays the size of the
//! repository's metadata; tree packs, which commands read by name without listing them,
//! are listed with the index once a day. Objects are named by what the store lists, so a
//! copy of a deleted object is not read again.
//!
//! **Garbage collection is unchanged by it.** A copy of a listed object answers exactly
//! what a read at the time of that listing would have: writers still read GC plans before
//! they list the index, and a prune still deletes index segments before the plan that
//! condemns their packs (FORMAT.md §14a), so a segment a writer reads, from the store or
//! from a copy, either lists no condemned pack or was listed while the writer could see the
//! plan. Pack heads and listings, which the commit-time guard relies on, go to the store.
//!
//! **Nothing in the directory is needed.** Any error reading or writing it falls back to
//! the store; copies are written to a temp file and renamed, so a reader never sees half
//! of one and a crash leaves at most a temp file (removed by a later listing, once old).
//! Hosts and processes may share the directory: copies of one name hold the same bytes.
//!
//! What it does not do: prove that the store still holds what was copied. `check`,
//! `verify` and drills read through the store itself (see
//! [`Repository::bypassing_cache`](crate::Repository::bypassing_cache)).

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use super::{Backend, LockPolicy, ObjectMeta, ReadBytes, ReadHints, StagedFile};
use crate::error::Result;

/// How old a temp file in the directory must be before a listing removes it: a process
/// writing a copy renames it within moments, so an hour-old one was left by a crash.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// The prefix of temp files in the directory (never an object name's segment: FORMAT.md §2).
const TEMP_PREFIX: &str = ".tmp-";

/// How often the copies of tree packs are compared with the store's listing. Tree packs are
/// read by name, never listed by the commands that read them, so the copies of those a
/// prune elsewhere deleted would stay for ever: a listing of the index (which every
/// command reading trees makes) lists the tree packs too once this long has passed.
const TREE_LISTING_EVERY: Duration = Duration::from_secs(24 * 3600);

/// The file whose modification time says when the tree packs were last listed.
const TREE_LISTING_STAMP: &str = ".tree-packs-listed";

/// What the cache keeps of an object, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// Never copied: read from the store each time.
    Nothing,
    /// Copied when read.
    WhenRead,
    /// Copied when read and when written (what this host writes, it reads next: its next
    /// backup's index, parent snapshot and parent trees).
    WhenReadOrWritten,
}

/// The kinds kept, by the prefix of their names, and how.
const KINDS: [(&str, Keep); 7] = [
    ("snapshots/", Keep::WhenReadOrWritten),
    ("index/", Keep::WhenReadOrWritten),
    ("tree/", Keep::WhenReadOrWritten),
    ("forgotten/", Keep::WhenReadOrWritten),
    // One per command run anywhere, read only by `audit` and `report`.
    ("audit/", Keep::WhenRead),
    // Several per writer session, read by prune (and its GC plans by every backup).
    ("sessions/", Keep::WhenRead),
    ("gc/", Keep::WhenRead),
];

/// How `name` is kept: only names of the kinds above whose last segment is a content hash
/// (64 lower-case hex digits) in the place the format puts it.
fn keep(name: &str) -> Keep {
    for (prefix, keep) in KINDS {
        if let Some(rest) = name.strip_prefix(prefix) {
            let hex = match (prefix, rest.split_once('/')) {
                // `tree/<hh>/<hex>`, `<hh>` the first two digits of `<hex>`.
                ("tree/", Some((fan, hex))) if hex.starts_with(fan) && fan.len() == 2 => hex,
                ("tree/", _) | (_, Some(_)) => return Keep::Nothing,
                (_, None) => rest,
            };
            let is_hash = hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            return if is_hash { keep } else { Keep::Nothing };
        }
    }
    Keep::Nothing
}

/// Whether `bytes` are the object named `name`: the BLAKE3 hash its name ends with.
fn hashes_to_name(name: &str, bytes: &[u8]) -> bool {
    let hex = name.rsplit('/').next().unwrap_or(name);
    blake3::hash(bytes).to_hex().as_str() == hex
}

/// A store whose metadata objects are read from a local copy when one is there (see the
/// module documentation).
pub struct MetadataCache {
    store: Arc<dyn Backend>,
    dir: PathBuf,
    /// Names whose copy this process found whole (hashed to its name): ranges of them are
    /// read from the copy without hashing it again.
    whole: Mutex<HashSet<String>>,
    /// Makes this process's temp file names distinct.
    temps: AtomicU64,
}

impl MetadataCache {
    /// Wraps `store`, keeping copies below `dir` (created when the first copy is written).
    pub fn new(store: Arc<dyn Backend>, dir: PathBuf) -> Self {
        Self {
            store,
            dir,
            whole: Mutex::new(HashSet::new()),
            temps: AtomicU64::new(0),
        }
    }

    /// The directory holding the copies.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The copy of `name`, if there is one that hashes to its name (a wrong one is
    /// removed). Reads nothing from the store.
    pub fn copy_of(&self, name: &str) -> Option<Vec<u8>> {
        if keep(name) == Keep::Nothing {
            return None;
        }
        self.read_copy(name)
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The copy of `name`, if there is one and it hashes to its name; a wrong one is
    /// removed.
    fn read_copy(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.path_of(name);
        let bytes = fs::read(&path).ok()?;
        if hashes_to_name(name, &bytes) {
            self.whole_names().insert(name.to_owned());
            Some(bytes)
        } else {
            let _ = fs::remove_file(&path);
            None
        }
    }

    /// `length` bytes at `offset` of the copy of `name`, when this process has found that
    /// copy whole before, or finds it whole now.
    fn read_copy_range(&self, name: &str, offset: u64, length: u64) -> Option<Vec<u8>> {
        if !self.whole_names().contains(name) {
            let bytes = self.read_copy(name)?;
            let start = usize::try_from(offset).ok()?;
            let end = start.checked_add(usize::try_from(length).ok()?)?;
            return bytes.get(start..end).map(<[u8]>::to_vec);
        }
        let mut file = fs::File::open(self.path_of(name)).ok()?;
        // Past the end: the store's answer (an error naming the object), and no buffer of
        // a length the copy cannot fill.
        let size = file.metadata().ok()?.len();
        if offset.checked_add(length)? > size {
            return None;
        }
        let mut bytes = vec![0; usize::try_from(length).ok()?];
        file.seek(SeekFrom::Start(offset)).ok()?;
        file.read_exact(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Keeps `bytes` as the copy of `name` when they hash to it. Failures are ignored: the
    /// copy only saves a later fetch.
    fn write_copy(&self, name: &str, bytes: &[u8]) {
        if !hashes_to_name(name, bytes) {
            return;
        }
        if let Ok(temp) = self.write_temp(name, bytes) {
            self.publish_temp(&temp, name);
        }
    }

    /// Stores `bytes` as `name` with `put`, keeping a copy when `name` is one written
    /// through. The copy is written first so that the bytes can go to the store without
    /// being copied, and named only once the store holds them.
    fn put_through(
        &self,
        name: &str,
        bytes: Vec<u8>,
        put: impl FnOnce(Vec<u8>) -> Result<()>,
    ) -> Result<()> {
        if keep(name) != Keep::WhenReadOrWritten || !hashes_to_name(name, &bytes) {
            return put(bytes);
        }
        let temp = self.write_temp(name, &bytes).ok();
        let stored = put(bytes);
        match (&stored, temp) {
            (Ok(()), Some(temp)) => self.publish_temp(&temp, name),
            (Err(_), Some(temp)) => {
                let _ = fs::remove_file(temp);
            }
            (_, None) => {}
        }
        stored
    }

    /// Writes `bytes` into a new temp file beside where the copy of `name` goes.
    fn write_temp(&self, name: &str, bytes: &[u8]) -> io::Result<PathBuf> {
        let path = self.path_of(name);
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent)?;
        let temp = parent.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            self.temps.fetch_add(1, Ordering::Relaxed)
        ));
        let written = fs::File::create(&temp).and_then(|mut file| file.write_all(bytes));
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(e);
        }
        Ok(temp)
    }

    /// Renames a temp file into place as the copy of `name`.
    fn publish_temp(&self, temp: &Path, name: &str) {
        if fs::rename(temp, self.path_of(name)).is_err() {
            let _ = fs::remove_file(temp);
        }
    }

    fn remove_copy(&self, name: &str) {
        self.whole_names().remove(name);
        let _ = fs::remove_file(self.path_of(name));
    }

    /// Removes the copies below `prefix` (a whole kind) of objects `listed` does not name,
    /// and temp files there older than [`STALE_TEMP`].
    fn forget_unlisted(&self, prefix: &str, listed: &[ObjectMeta]) {
        let listed: HashSet<&str> = listed.iter().map(|meta| meta.name.as_str()).collect();
        let mut stack = vec![self.dir.join(prefix)];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Ok(file_type) = entry.file_type() else {
                    continue;
                };
                if file_type.is_dir() {
                    stack.push(path);
                    continue;
                }
                let file_name = entry.file_name();
                let file_name = file_name.to_string_lossy();
                let unwanted = if file_name.starts_with(TEMP_PREFIX) {
                    age(&path).is_some_and(|age| age > STALE_TEMP)
                } else {
                    let name = path
                        .strip_prefix(&self.dir)
                        .ok()
                        .and_then(Path::to_str)
                        .map(|name| name.replace(std::path::MAIN_SEPARATOR, "/"));
                    match name {
                        Some(name) if listed.contains(name.as_str()) => false,
                        Some(name) => {
                            self.whole_names().remove(&name);
                            true
                        }
                        None => true,
                    }
                };
                if unwanted {
                    let _ = fs::remove_file(&path);
                }
            }
        }
    }

    /// Lists the store's tree packs and forgets the copies of those it lacks, when copies
    /// exist and [`TREE_LISTING_EVERY`] has passed since the last time. A failed listing
    /// is left for the next command.
    fn list_tree_packs_when_due(&self) {
        if !self.dir.join("tree").is_dir() {
            return;
        }
        let stamp = self.dir.join(TREE_LISTING_STAMP);
        let due = age(&stamp).is_none_or(|age| age >= TREE_LISTING_EVERY);
        if !due {
            return;
        }
        if let Ok(listed) = self.store.list("tree/") {
            self.forget_unlisted("tree/", &listed);
            let _ = fs::write(&stamp, b"");
        }
    }

    fn whole_names(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.whole.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// How long ago the file at `path` (not a symlink's target) was last modified; `None` when
/// that is not known or lies in the future.
fn age(path: &Path) -> Option<Duration> {
    let modified = fs::symlink_metadata(path)
        .and_then(|meta| meta.modified())
        .ok()?;
    SystemTime::now().duration_since(modified).ok()
}

impl fmt::Debug for MetadataCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetadataCache")
            .field("store", &self.store)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Backend for MetadataCache {
    fn location(&self) -> String {
        self.store.location()
    }

    fn read_hints(&self) -> ReadHints {
        self.store.read_hints()
    }

    fn put_concurrency(&self) -> usize {
        self.store.put_concurrency()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.store.put_if_absent(name, bytes)?;
        if keep(name) == Keep::WhenReadOrWritten {
            self.write_copy(name, bytes);
        }
        Ok(())
    }

    fn put_if_absent_owned(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_through(name, bytes, |bytes| {
            self.store.put_if_absent_owned(name, bytes)
        })
    }

    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        self.put_through(name, bytes, |bytes| {
            self.store.put_if_absent_abandoning(name, bytes, abandon)
        })
    }

    fn stage(&self, prefix: &str) -> Result<Option<StagedFile>> {
        self.store.stage(prefix)
    }

    fn publish(&self, staged: StagedFile, name: &str) -> Result<()> {
        self.store.publish(staged, name)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        if keep(name) == Keep::Nothing {
            return self.store.get(name);
        }
        if let Some(bytes) = self.read_copy(name) {
            return Ok(bytes);
        }
        let bytes = self.store.get(name)?;
        self.write_copy(name, &bytes);
        Ok(bytes)
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        if keep(name) != Keep::Nothing
            && let Some(bytes) = self.read_copy_range(name, offset, length)
        {
            return Ok(bytes);
        }
        self.store.get_range(name, offset, length)
    }

    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        if keep(name) != Keep::Nothing
            && let Some(bytes) = self.read_copy_range(name, offset, length)
        {
            return Ok(ReadBytes::from(bytes));
        }
        self.store.get_range_to_read(name, offset, length)
    }

    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        if keep(name) != Keep::Nothing
            && let Some(bytes) = self.read_copy_range(name, offset, length)
        {
            return Ok(ReadBytes::from(bytes));
        }
        self.store
            .get_range_to_read_abandoning(name, offset, length, abandon)
    }

    fn will_read(&self, name: &str, offset: u64, length: u64) {
        self.store.will_read(name, offset, length);
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.store.head(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let listed = self.store.list(prefix)?;
        if KINDS.iter().any(|(kind, _)| *kind == prefix) {
            self.forget_unlisted(prefix, &listed);
        }
        if prefix == "index/" {
            self.list_tree_packs_when_due();
        }
        Ok(listed)
    }

    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        self.store.list_temps()
    }

    fn remove_temp(&self, name: &str) -> Result<()> {
        self.store.remove_temp(name)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.store.delete(name)?;
        if keep(name) != Keep::Nothing {
            self.remove_copy(name);
        }
        Ok(())
    }

    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        self.store.enable_lock(policy)
    }

    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        self.store.retained_until(name)
    }

    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        self.store.extend_retention(name, until)
    }
}

#[cfg(test)]
mod tests;
