//! The files cache: a local file (under the user's cache directory) mapping each file
//! backed up last time to its identity (size, mtime, ctime, inode, device) and chunk list,
//! so an unchanged file is not read again even when the parent snapshot's trees cannot be
//! read (put-only keys) or there is no parent.
//!
//! The cache is only a hint: entries are trusted only when every chunk is still stored
//! (checked by the caller against the index), it is replaced atomically (temp file +
//! rename), and a missing, truncated or corrupt cache is ignored.
//!
//! It holds only files whose last write was settled when they were recorded (`racy.rs`).
//! Version 1 caches, written before that rule, are read as empty.
//!
//! Layout: the magic `bunker files cache v2\n`, a `u32` entry count, the entries (path,
//! size, mtime, ctime, inode, device, extents), then the BLAKE3 hash of all that.
//!
//! Loading checks the hash and every entry's framing but leaves the entries encoded,
//! indexed by a hash of their path; an entry is decoded when the walk asks for its path,
//! and one seen again unchanged is written back as it was read. The Linux-source tree's
//! cache (78,579 entries, 14 MB) made a no-change backup 0.70-0.77 s instead of 0.78-0.88
//! s when every entry was decoded into a map at the start (docs/PERFORMANCE.md, session 20).

use std::collections::HashMap;
use std::fs;
use std::hash::{DefaultHasher, Hasher};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bunker_repo_format::codec::{DecodeError, Decoder, Encoder};
use bunker_repo_format::tree::{Extent, Metadata, Timestamp};
use bunker_repo_format::{BlobId, content_hash};

use super::ChangeDetection;

const MAGIC: &[u8] = b"bunker files cache v2\n";
const FILE_NAME: &str = "files";

/// What identifies an unchanged file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileKey {
    size: u64,
    mtime: Timestamp,
    ctime: Timestamp,
    inode: u64,
    device: u64,
}

impl FileKey {
    pub(super) fn new(meta: &Metadata, size: u64) -> Self {
        Self {
            size,
            mtime: meta.mtime,
            ctime: meta.ctime,
            inode: meta.inode,
            device: meta.device,
        }
    }

    /// True when a file with identity `now` counts as unchanged since it had this one,
    /// leaving out what `detection` ignores.
    pub(super) fn unchanged_as(&self, now: &FileKey, detection: ChangeDetection) -> bool {
        let same_place =
            detection.ignore_inode || (self.inode == now.inode && self.device == now.device);
        let same_ctime =
            detection.ignore_inode || detection.ignore_ctime || self.ctime == now.ctime;
        !detection.read_all
            && self.size == now.size
            && self.mtime == now.mtime
            && same_place
            && same_ctime
    }
}

/// The cache read at the start of a backup and the one written at its end: the entries
/// seen again unchanged plus the new ones. When nothing differs, nothing is written, so a
/// no-change backup costs one read of the cache.
#[derive(Debug, Default)]
pub(super) struct FilesCache {
    dir: Option<PathBuf>,
    old: Loaded,
    /// The entries this backup recorded anew, encoded as the file holds them: about 130
    /// bytes for a small file, against about 400 for the path, identity and chunk list kept
    /// apart and then encoded again at the end (a first backup of a million small files
    /// peaked 65 MB higher so: docs/PERFORMANCE.md, session 33).
    new: Vec<u8>,
    new_count: usize,
}

impl FilesCache {
    /// Loads the cache in `dir`; `None` disables it. Unreadable means empty.
    pub(super) fn load(dir: Option<&Path>) -> Self {
        if let Some(dir) = dir {
            // Only a stamp for `bunker cache`: a failure to set it changes no backup.
            let _ = crate::cache_dirs::mark_used(dir);
        }
        let old = dir
            .and_then(|dir| fs::read(dir.join(FILE_NAME)).ok())
            .and_then(|bytes| Loaded::parse(bytes).ok())
            .unwrap_or_default();
        Self {
            dir: dir.map(Path::to_owned),
            old,
            new: Vec::new(),
            new_count: 0,
        }
    }

    /// The chunk list recorded for `path` if the file still has the identity `key`, as
    /// far as `detection` compares identities.
    pub(super) fn lookup(
        &self,
        path: &[u8],
        key: &FileKey,
        detection: ChangeDetection,
    ) -> Option<Vec<Extent>> {
        let (_, stored) = self.old.find(path)?;
        if !stored.key.unchanged_as(key, detection) {
            return None;
        }
        stored.extents().ok()
    }

    /// Records a file stored completely in this backup.
    pub(super) fn record(&mut self, path: &[u8], key: FileKey, extents: &[Extent]) {
        if self.dir.is_none() {
            return;
        }
        if let Some((number, stored)) = self.old.find(path)
            && stored.key == key
            && stored.holds(extents)
        {
            self.old.keep(number);
            return;
        }
        let mut enc = Encoder::with_buffer(std::mem::take(&mut self.new));
        encode_entry(&mut enc, path, &key, extents);
        self.new = enc.finish();
        self.new_count += 1;
    }

    /// Replaces the cache file with this backup's entries (temp file + rename), unless
    /// they are exactly the ones it holds.
    pub(super) fn save(self) -> io::Result<()> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        if self.new_count == 0 && self.old.all_kept() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let temp = dir.join(format!(".{FILE_NAME}.tmp-{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|file| {
                let mut out = io::BufWriter::with_capacity(1 << 20, file);
                write_cache(&mut out, &self.new, self.new_count, &self.old)?;
                out.into_inner().map_err(|e| e.into_error())?.sync_all()
            })
            .and_then(|()| fs::rename(&temp, dir.join(FILE_NAME)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

/// Bytes of an entry's identity: size, mtime, ctime, inode, device.
const KEY_BYTES: usize = 8 + 12 + 12 + 8 + 8;

/// The cache file as read, its entries left encoded: an entry is decoded only when a
/// lookup or a record asks for its path, so loading a large cache costs a hash per entry
/// rather than building every path and chunk list.
#[derive(Debug, Default)]
struct Loaded {
    /// The file without its trailing hash (checked).
    bytes: Vec<u8>,
    /// Where each entry starts in `bytes`, in file order, then where the last one ends.
    bounds: Vec<usize>,
    /// Entry numbers by [`path_hash`]. Of two paths with the same hash only the first is
    /// found; the other is then read again, which the cache, a hint, allows.
    by_path: HashMap<u64, usize>,
    /// The entries this backup saw again unchanged.
    kept: Vec<bool>,
}

impl Loaded {
    /// Checks the hash and the framing of every entry, and indexes them by path.
    fn parse(mut bytes: Vec<u8>) -> Result<Self, DecodeError> {
        let body_length = bytes
            .len()
            .checked_sub(32)
            .ok_or_else(|| DecodeError::invalid("files cache", "truncated"))?;
        let (body, hash) = bytes.split_at(body_length);
        if content_hash(body) != hash {
            return Err(DecodeError::invalid("files cache", "hash mismatch"));
        }
        let mut dec = Decoder::new(body);
        if dec.take(MAGIC.len(), "magic")? != MAGIC {
            return Err(DecodeError::invalid("magic", "not a files cache"));
        }
        let count = dec.count(4 + KEY_BYTES + 4, "entries")?;
        let mut bounds = Vec::with_capacity(count + 1);
        let mut by_path = HashMap::with_capacity(count);
        for number in 0..count {
            bounds.push(dec.position());
            let path = dec.bytes("path")?;
            dec.take(KEY_BYTES, "identity")?;
            for _ in 0..dec.count(9, "extents")? {
                decode_extent(&mut dec)?;
            }
            by_path.entry(path_hash(path)).or_insert(number);
        }
        bounds.push(dec.position());
        dec.finish()?;
        bytes.truncate(body_length);
        Ok(Self {
            bytes,
            bounds,
            by_path,
            kept: vec![false; count],
        })
    }

    /// The entry recorded for `path`, and its number.
    fn find(&self, path: &[u8]) -> Option<(usize, Stored<'_>)> {
        let number = *self.by_path.get(&path_hash(path))?;
        let entry = &self.bytes[self.bounds[number]..self.bounds[number + 1]];
        let mut dec = Decoder::new(entry);
        // The framing was checked when loaded.
        if dec.bytes("path").ok()? != path {
            return None;
        }
        let key = FileKey {
            size: dec.u64("size").ok()?,
            mtime: Timestamp {
                sec: dec.i64("mtime").ok()?,
                nsec: dec.u32("mtime").ok()?,
            },
            ctime: Timestamp {
                sec: dec.i64("ctime").ok()?,
                nsec: dec.u32("ctime").ok()?,
            },
            inode: dec.u64("inode").ok()?,
            device: dec.u64("device").ok()?,
        };
        let count = dec.count(9, "extents").ok()?;
        Some((
            number,
            Stored {
                key,
                count,
                extents: &entry[dec.position()..],
            },
        ))
    }

    fn keep(&mut self, number: usize) {
        self.kept[number] = true;
    }

    /// True when there were entries and this backup saw every one again unchanged.
    fn all_kept(&self) -> bool {
        !self.kept.is_empty() && self.kept.iter().all(|&kept| kept)
    }

    /// The encoded entries seen again unchanged.
    fn kept_entries(&self) -> impl Iterator<Item = &[u8]> {
        self.bounds
            .windows(2)
            .zip(&self.kept)
            .filter(|(_, kept)| **kept)
            .map(|(bounds, _)| &self.bytes[bounds[0]..bounds[1]])
    }
}

/// An entry of the loaded cache, its chunk list still encoded.
struct Stored<'a> {
    key: FileKey,
    count: usize,
    extents: &'a [u8],
}

impl Stored<'_> {
    fn extents(&self) -> Result<Vec<Extent>, DecodeError> {
        let mut dec = Decoder::new(self.extents);
        (0..self.count).map(|_| decode_extent(&mut dec)).collect()
    }

    /// True when the chunk list is `extents`.
    fn holds(&self, extents: &[Extent]) -> bool {
        let mut dec = Decoder::new(self.extents);
        self.count == extents.len()
            && extents
                .iter()
                .all(|extent| decode_extent(&mut dec).is_ok_and(|stored| stored == *extent))
    }
}

/// A path's key in [`Loaded::by_path`]: SipHash with fixed keys, so the same in every run.
fn path_hash(path: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    hasher.write(path);
    hasher.finish()
}

fn decode_extent(dec: &mut Decoder<'_>) -> Result<Extent, DecodeError> {
    match dec.u8("extent")? {
        0 => Ok(Extent::Chunk {
            id: BlobId::from_bytes(dec.array("chunk id")?),
            length: dec.u32("chunk length")?,
        }),
        1 => Ok(Extent::Hole {
            length: dec.u64("hole length")?,
        }),
        _ => Err(DecodeError::invalid("extent", "unknown kind")),
    }
}

/// Appends one entry: path, identity, chunk list.
fn encode_entry(enc: &mut Encoder, path: &[u8], key: &FileKey, extents: &[Extent]) {
    enc.bytes(path)
        .u64(key.size)
        .i64(key.mtime.sec)
        .u32(key.mtime.nsec)
        .i64(key.ctime.sec)
        .u32(key.ctime.nsec)
        .u64(key.inode)
        .u64(key.device)
        .count(extents.len());
    for extent in extents {
        match extent {
            Extent::Chunk { id, length } => enc.u8(0).raw(id.as_bytes()).u32(*length),
            Extent::Hole { length } => enc.u8(1).u64(*length),
        };
    }
}

/// Writes the cache file: the `count` entries encoded in `new`, then the loaded ones seen
/// again, as they were, then the BLAKE3 hash of all that, hashed as it is written.
fn write_cache(out: &mut impl Write, new: &[u8], count: usize, old: &Loaded) -> io::Result<()> {
    let mut hasher = blake3::Hasher::new();
    let mut put = |bytes: &[u8]| {
        hasher.update(bytes);
        out.write_all(bytes)
    };
    let mut header = Encoder::new();
    header.raw(MAGIC).count(count + old.kept_entries().count());
    put(&header.finish())?;
    put(new)?;
    for entry in old.kept_entries() {
        put(entry)?;
    }
    out.write_all(hasher.finalize().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXACT: ChangeDetection = ChangeDetection {
        read_all: false,
        ignore_inode: false,
        ignore_ctime: false,
    };

    fn key(size: u64) -> FileKey {
        FileKey {
            size,
            mtime: Timestamp { sec: 5, nsec: 6 },
            ctime: Timestamp { sec: 7, nsec: 8 },
            inode: 9,
            device: 10,
        }
    }

    #[test]
    fn saved_entries_load_back_and_only_match_the_same_identity() {
        let dir = tempfile::tempdir().unwrap();
        let extents = vec![
            Extent::Chunk {
                id: BlobId::from_bytes([3; 32]),
                length: 100,
            },
            Extent::Hole { length: 50 },
        ];
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/a/b", key(150), &extents);
        cache.save().unwrap();
        let loaded = FilesCache::load(Some(dir.path()));
        assert_eq!(
            loaded.lookup(b"/a/b", &key(150), EXACT),
            Some(extents.clone())
        );
        assert_eq!(loaded.lookup(b"/a/b", &key(151), EXACT), None);
        let mut other_inode = key(150);
        other_inode.inode = 11;
        assert_eq!(loaded.lookup(b"/a/b", &other_inode, EXACT), None);
        let mut other_ctime = key(150);
        other_ctime.ctime.nsec = 9;
        assert_eq!(loaded.lookup(b"/a/b", &other_ctime, EXACT), None);
        assert_eq!(loaded.lookup(b"/a/c", &key(150), EXACT), None);
        let ignore_ctime = ChangeDetection {
            ignore_ctime: true,
            ..EXACT
        };
        let ignore_inode = ChangeDetection {
            ignore_inode: true,
            ..EXACT
        };
        assert_eq!(
            loaded.lookup(b"/a/b", &other_ctime, ignore_ctime),
            Some(extents.clone())
        );
        assert_eq!(loaded.lookup(b"/a/b", &other_inode, ignore_ctime), None);
        let mut elsewhere = other_inode;
        elsewhere.device = 12;
        elsewhere.ctime.sec = 70;
        assert_eq!(
            loaded.lookup(b"/a/b", &elsewhere, ignore_inode),
            Some(extents.clone())
        );
    }

    #[test]
    fn size_and_mtime_always_count_and_read_all_trusts_nothing() {
        let was = key(150);
        let all_ignored = ChangeDetection {
            read_all: false,
            ignore_inode: true,
            ignore_ctime: true,
        };
        assert!(was.unchanged_as(&was, EXACT));
        assert!(was.unchanged_as(&was, all_ignored));
        let mut bigger = was;
        bigger.size += 1;
        let mut newer = was;
        newer.mtime.nsec += 1;
        for now in [bigger, newer] {
            assert!(!was.unchanged_as(&now, all_ignored), "{now:?}");
        }
        let mut other_device = was;
        other_device.device += 1;
        assert!(!was.unchanged_as(&other_device, EXACT));
        let read_all = ChangeDetection {
            read_all: true,
            ..all_ignored
        };
        assert!(!was.unchanged_as(&was, read_all));
    }

    #[test]
    fn entries_seen_again_are_kept_and_vanished_ones_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let hole = [Extent::Hole { length: 1 }];
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/keep", key(1), &hole);
        cache.record(b"/gone", key(1), &hole);
        cache.save().unwrap();
        let path = dir.path().join(FILE_NAME);
        let first = fs::read(&path).unwrap();

        // Everything seen again unchanged: the file is not rewritten.
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/gone", key(1), &hole);
        cache.record(b"/keep", key(1), &hole);
        fs::write(&path, &first).unwrap();
        let before = fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.save().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), before);

        // One file vanished, one is new: both show in the next cache.
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/keep", key(1), &hole);
        cache.record(b"/new", key(2), &hole);
        cache.save().unwrap();
        let loaded = FilesCache::load(Some(dir.path()));
        assert_eq!(loaded.lookup(b"/keep", &key(1), EXACT), Some(hole.to_vec()));
        assert_eq!(loaded.lookup(b"/new", &key(2), EXACT), Some(hole.to_vec()));
        assert_eq!(loaded.lookup(b"/gone", &key(1), EXACT), None);
    }

    #[test]
    fn a_file_recorded_with_other_chunks_replaces_its_entry() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = |byte: u8, length: u32| Extent::Chunk {
            id: BlobId::from_bytes([byte; 32]),
            length,
        };
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/f", key(10), &[chunk(1, 10)]);
        cache.record(b"/g", key(10), &[chunk(2, 4), chunk(3, 6)]);
        cache.save().unwrap();

        // Same identity, other chunks (a different chunker, say); and one chunk fewer.
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/f", key(10), &[chunk(4, 10)]);
        cache.record(b"/g", key(10), &[chunk(2, 4)]);
        cache.save().unwrap();
        let loaded = FilesCache::load(Some(dir.path()));
        assert_eq!(
            loaded.lookup(b"/f", &key(10), EXACT),
            Some(vec![chunk(4, 10)])
        );
        assert_eq!(
            loaded.lookup(b"/g", &key(10), EXACT),
            Some(vec![chunk(2, 4)])
        );
        assert_eq!(loaded.old.kept.len(), 2, "each path once");
    }

    #[test]
    fn a_corrupt_or_truncated_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = FilesCache::load(Some(dir.path()));
        cache.record(b"/x", key(1), &[Extent::Hole { length: 1 }]);
        cache.save().unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = fs::read(&path).unwrap();
        bytes[MAGIC.len() + 6] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(
            FilesCache::load(Some(dir.path())).lookup(b"/x", &key(1), EXACT),
            None
        );
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(
            FilesCache::load(Some(dir.path())).lookup(b"/x", &key(1), EXACT),
            None
        );
        // Saving over a corrupt cache works and leaves no temp file.
        FilesCache::load(Some(dir.path())).save().unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
    }
}
