//! The files cache: a local file (under the user's cache directory) mapping each file
//! backed up last time to its identity (size, mtime, ctime, inode, device) and chunk list,
//! so an unchanged file is not read again even when the parent snapshot's trees cannot be
//! read (put-only keys) or there is no parent.
//!
//! The cache is only a hint: entries are trusted only when every chunk is still stored
//! (checked by the caller against the index), it is replaced atomically (temp file +
//! rename), and a missing, truncated or corrupt cache is ignored.
//!
//! Layout: the magic `bunker files cache v1\n`, a `u32` entry count, the entries (path,
//! size, mtime, ctime, inode, device, extents), then the BLAKE3 hash of all that.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use bunker_repo_format::codec::{DecodeError, Decoder, Encoder};
use bunker_repo_format::tree::{Extent, Metadata, Timestamp};
use bunker_repo_format::{BlobId, content_hash};

const MAGIC: &[u8] = b"bunker files cache v1\n";
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
}

/// One file as cached, and whether this backup saw it again unchanged.
#[derive(Debug)]
struct Cached {
    key: FileKey,
    extents: Vec<Extent>,
    kept: bool,
}

/// The cache read at the start of a backup and the one written at its end: the entries
/// seen again unchanged plus the new ones. When nothing differs, nothing is written, so a
/// no-change backup costs one read of the cache.
#[derive(Debug, Default)]
pub(super) struct FilesCache {
    dir: Option<PathBuf>,
    old: HashMap<Vec<u8>, Cached>,
    kept: usize,
    new: Vec<(Vec<u8>, FileKey, Vec<Extent>)>,
}

impl FilesCache {
    /// Loads the cache in `dir`; `None` disables it. Unreadable means empty.
    pub(super) fn load(dir: Option<&Path>) -> Self {
        let old = dir
            .and_then(|dir| fs::read(dir.join(FILE_NAME)).ok())
            .and_then(|bytes| decode(&bytes).ok())
            .unwrap_or_default();
        Self {
            dir: dir.map(Path::to_owned),
            old,
            kept: 0,
            new: Vec::new(),
        }
    }

    /// The chunk list recorded for `path` if the file still has the identity `key`.
    pub(super) fn lookup(&self, path: &[u8], key: &FileKey) -> Option<&[Extent]> {
        match self.old.get(path) {
            Some(cached) if cached.key == *key => Some(&cached.extents),
            _ => None,
        }
    }

    /// Records a file stored completely in this backup.
    pub(super) fn record(&mut self, path: &[u8], key: FileKey, extents: &[Extent]) {
        if self.dir.is_none() {
            return;
        }
        if let Some(cached) = self.old.get_mut(path)
            && cached.key == key
            && cached.extents == extents
        {
            if !cached.kept {
                cached.kept = true;
                self.kept += 1;
            }
            return;
        }
        self.new.push((path.to_vec(), key, extents.to_vec()));
    }

    /// Replaces the cache file with this backup's entries (temp file + rename), unless
    /// they are exactly the ones it holds.
    pub(super) fn save(self) -> io::Result<()> {
        let Some(dir) = self.dir else {
            return Ok(());
        };
        if self.new.is_empty() && self.kept == self.old.len() && !self.old.is_empty() {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut entries = self.new;
        entries.extend(
            self.old
                .into_iter()
                .filter(|(_, cached)| cached.kept)
                .map(|(path, cached)| (path, cached.key, cached.extents)),
        );
        let bytes = encode(&entries);
        let temp = dir.join(format!(".{FILE_NAME}.tmp-{}", std::process::id()));
        let written = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(&bytes)?;
                file.sync_all()
            })
            .and_then(|()| fs::rename(&temp, dir.join(FILE_NAME)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written
    }
}

fn encode(entries: &[(Vec<u8>, FileKey, Vec<Extent>)]) -> Vec<u8> {
    let mut enc = Encoder::new();
    enc.raw(MAGIC).count(entries.len());
    for (path, key, extents) in entries {
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
    let mut bytes = enc.finish();
    let hash = content_hash(&bytes);
    bytes.extend_from_slice(&hash);
    bytes
}

type Entries = HashMap<Vec<u8>, Cached>;

fn decode(bytes: &[u8]) -> Result<Entries, DecodeError> {
    let split = bytes
        .len()
        .checked_sub(32)
        .ok_or_else(|| DecodeError::invalid("files cache", "truncated"))?;
    let (body, hash) = bytes.split_at(split);
    if content_hash(body) != hash {
        return Err(DecodeError::invalid("files cache", "hash mismatch"));
    }
    let mut dec = Decoder::new(body);
    if dec.take(MAGIC.len(), "magic")? != MAGIC {
        return Err(DecodeError::invalid("magic", "not a files cache"));
    }
    let count = dec.count(4 + 8 + 12 + 12 + 8 + 8 + 4, "entries")?;
    let mut entries = HashMap::with_capacity(count);
    for _ in 0..count {
        let path = dec.bytes("path")?.to_vec();
        let key = FileKey {
            size: dec.u64("size")?,
            mtime: Timestamp {
                sec: dec.i64("mtime")?,
                nsec: dec.u32("mtime")?,
            },
            ctime: Timestamp {
                sec: dec.i64("ctime")?,
                nsec: dec.u32("ctime")?,
            },
            inode: dec.u64("inode")?,
            device: dec.u64("device")?,
        };
        let n = dec.count(9, "extents")?;
        let mut extents = Vec::with_capacity(n);
        for _ in 0..n {
            extents.push(match dec.u8("extent")? {
                0 => Extent::Chunk {
                    id: BlobId::from_bytes(dec.array("chunk id")?),
                    length: dec.u32("chunk length")?,
                },
                1 => Extent::Hole {
                    length: dec.u64("hole length")?,
                },
                _ => return Err(DecodeError::invalid("extent", "unknown kind")),
            });
        }
        entries.insert(
            path,
            Cached {
                key,
                extents,
                kept: false,
            },
        );
    }
    dec.finish()?;
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(loaded.lookup(b"/a/b", &key(150)), Some(&extents[..]));
        assert_eq!(loaded.lookup(b"/a/b", &key(151)), None);
        let mut other_inode = key(150);
        other_inode.inode = 11;
        assert_eq!(loaded.lookup(b"/a/b", &other_inode), None);
        let mut other_ctime = key(150);
        other_ctime.ctime.nsec = 9;
        assert_eq!(loaded.lookup(b"/a/b", &other_ctime), None);
        assert_eq!(loaded.lookup(b"/a/c", &key(150)), None);
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
        assert_eq!(loaded.lookup(b"/keep", &key(1)), Some(&hole[..]));
        assert_eq!(loaded.lookup(b"/new", &key(2)), Some(&hole[..]));
        assert_eq!(loaded.lookup(b"/gone", &key(1)), None);
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
            FilesCache::load(Some(dir.path())).lookup(b"/x", &key(1)),
            None
        );
        fs::write(&path, &bytes[..10]).unwrap();
        assert_eq!(
            FilesCache::load(Some(dir.path())).lookup(b"/x", &key(1)),
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
