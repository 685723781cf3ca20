//! The cache against a store in memory whose calls are counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::*;
use crate::backend::MemoryBackend;
use crate::backend::fault::{FaultRates, FaultyBackend};
use crate::error::Error;

/// A store in memory that counts calls, the cache over it, and the cache's directory.
struct Setup {
    store: Arc<FaultyBackend<MemoryBackend>>,
    cache: MetadataCache,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(FaultyBackend::new(MemoryBackend::new(), 1));
    let cache = MetadataCache::new(
        Arc::clone(&store) as Arc<dyn Backend>,
        dir.path().join("objects"),
    );
    Setup {
        store,
        cache,
        _dir: dir,
    }
}

/// Bytes and the name of an object of kind `prefix` holding them (`tree/` fans out).
fn object(prefix: &str, seed: u8) -> (String, Vec<u8>) {
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i as u8) ^ seed).collect();
    let hex = blake3::hash(&bytes).to_hex().to_string();
    let name = match prefix {
        "tree/" | "data/" => format!("{prefix}{}/{hex}", &hex[..2]),
        _ => format!("{prefix}{hex}"),
    };
    (name, bytes)
}

impl Setup {
    fn copy_path(&self, name: &str) -> std::path::PathBuf {
        self.cache.dir().join(name)
    }

    /// Runs `read` and returns what it returned and how many store calls it made.
    fn calls<T>(&self, read: impl FnOnce(&MetadataCache) -> T) -> (T, u64) {
        let before = self.store.operations();
        let value = read(&self.cache);
        (value, self.store.operations() - before)
    }
}

/// Moves the modification time of the file at `path` to `ago` before now.
fn last_written(path: &std::path::Path, ago: Duration) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(SystemTime::now() - ago)
        .unwrap();
}

#[test]
fn which_names_are_kept() {
    let hex = "ab".to_owned() + &"0123456789".repeat(6) + "cd";
    assert_eq!(keep(&format!("snapshots/{hex}")), Keep::WhenReadOrWritten);
    assert_eq!(keep(&format!("index/{hex}")), Keep::WhenReadOrWritten);
    assert_eq!(keep(&format!("tree/ab/{hex}")), Keep::WhenReadOrWritten);
    assert_eq!(keep(&format!("forgotten/{hex}")), Keep::WhenReadOrWritten);
    assert_eq!(keep(&format!("audit/{hex}")), Keep::WhenRead);
    assert_eq!(keep(&format!("sessions/{hex}")), Keep::WhenRead);
    assert_eq!(keep(&format!("gc/{hex}")), Keep::WhenRead);
    for name in [
        format!("data/ab/{hex}"),
        format!("keys/{hex}"),
        "config".to_owned(),
        // Not where the format puts these kinds, or not a content hash.
        format!("tree/cd/{hex}"),
        format!("tree/{hex}"),
        format!("snapshots/x/{hex}"),
        format!("snapshots/{}", hex.to_uppercase()),
        format!("snapshots/{}", &hex[1..]),
        "snapshots/".to_owned(),
    ] {
        assert_eq!(keep(&name), Keep::Nothing, "{name}");
    }
}

#[test]
fn a_read_keeps_a_copy_that_later_reads_use() {
    let s = setup();
    let (snapshot, bytes) = object("snapshots/", 1);
    let (pack, pack_bytes) = object("data/", 2);
    s.store.put_if_absent(&snapshot, &bytes).unwrap();
    s.store.put_if_absent(&pack, &pack_bytes).unwrap();

    let (read, calls) = s.calls(|c| c.get(&snapshot).unwrap());
    assert_eq!((read, calls), (bytes.clone(), 1));
    assert_eq!(fs::read(s.copy_path(&snapshot)).unwrap(), bytes);
    let (read, calls) = s.calls(|c| c.get(&snapshot).unwrap());
    assert_eq!(
        (read, calls),
        (bytes, 0),
        "the second read comes from the copy"
    );

    // Data packs always come from the store.
    for _ in 0..2 {
        let (read, calls) = s.calls(|c| c.get(&pack).unwrap());
        assert_eq!((read, calls), (pack_bytes.clone(), 1));
    }
    assert!(!s.copy_path(&pack).exists());
}

#[test]
fn a_damaged_or_truncated_copy_is_fetched_again() {
    let s = setup();
    let (index, bytes) = object("index/", 3);
    s.store.put_if_absent(&index, &bytes).unwrap();
    s.cache.get(&index).unwrap();
    let copy = s.copy_path(&index);

    let mut damaged = bytes.clone();
    damaged[100] ^= 1;
    fs::write(&copy, &damaged).unwrap();
    let (read, calls) = s.calls(|c| c.get(&index).unwrap());
    assert_eq!((read, calls), (bytes.clone(), 1));
    assert_eq!(fs::read(&copy).unwrap(), bytes, "the copy was replaced");

    fs::write(&copy, &bytes[..10]).unwrap();
    let (read, calls) = s.calls(|c| c.get(&index).unwrap());
    assert_eq!((read, calls), (bytes.clone(), 1));
    let (read, calls) = s.calls(|c| c.get(&index).unwrap());
    assert_eq!((read, calls), (bytes, 0));
}

#[test]
fn a_store_answering_other_bytes_leaves_no_copy() {
    let s = setup();
    let (snapshot, bytes) = object("snapshots/", 4);
    // The store holds bytes that do not hash to the name (damaged in storage).
    let mut damaged = bytes.clone();
    damaged[0] ^= 1;
    s.store.put_if_absent(&snapshot, &damaged).unwrap();
    assert_eq!(s.cache.get(&snapshot).unwrap(), damaged);
    assert!(!s.copy_path(&snapshot).exists());
    let (_, calls) = s.calls(|c| c.get(&snapshot).unwrap());
    assert_eq!(calls, 1);
}

#[test]
fn writes_keep_copies_once_the_store_holds_them() {
    let s = setup();
    let (tree, tree_bytes) = object("tree/", 5);
    let (index, index_bytes) = object("index/", 6);
    let (audit, audit_bytes) = object("audit/", 7);
    s.cache
        .put_if_absent_owned(&tree, tree_bytes.clone())
        .unwrap();
    s.cache.put_if_absent(&index, &index_bytes).unwrap();
    s.cache.put_if_absent(&audit, &audit_bytes).unwrap();
    assert_eq!(fs::read(s.copy_path(&tree)).unwrap(), tree_bytes);
    assert_eq!(fs::read(s.copy_path(&index)).unwrap(), index_bytes);
    assert!(
        !s.copy_path(&audit).exists(),
        "audit records are copied when read"
    );
    assert_eq!(s.store.get(&tree).unwrap(), tree_bytes);

    // A put the store refuses leaves neither a copy nor a temp file.
    let (snapshot, bytes) = object("snapshots/", 8);
    s.store.set_rates(FaultRates {
        put: 1.0,
        ..FaultRates::NONE
    });
    assert!(
        s.cache
            .put_if_absent_owned(&snapshot, bytes.clone())
            .is_err()
    );
    assert!(s.cache.put_if_absent(&snapshot, &bytes).is_err());
    s.store.set_rates(FaultRates::NONE);
    let entries: Vec<_> = fs::read_dir(s.cache.dir().join("snapshots"))
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "{entries:?}");
    assert!(matches!(
        s.cache.get(&snapshot),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn an_abandoned_pack_put_reaches_the_store_and_leaves_no_copy() {
    let s = setup();
    let abandon = std::sync::atomic::AtomicBool::new(false);
    let (tree, tree_bytes) = object("tree/", 9);
    s.cache
        .put_if_absent_abandoning(&tree, tree_bytes.clone(), &abandon)
        .unwrap();
    assert_eq!(fs::read(s.copy_path(&tree)).unwrap(), tree_bytes);
    // Given up: the store's own abandoning put is the one called, and nothing is kept.
    abandon.store(true, std::sync::atomic::Ordering::SeqCst);
    let (later, later_bytes) = object("tree/", 10);
    let (data, data_bytes) = object("data/", 11);
    for (name, bytes) in [(&later, later_bytes), (&data, data_bytes)] {
        assert!(matches!(
            s.cache.put_if_absent_abandoning(name, bytes, &abandon),
            Err(Error::Abandoned { .. })
        ));
        assert!(matches!(s.store.get(name), Err(Error::NotFound { .. })));
    }
    let parent = s.copy_path(&later);
    let entries: Vec<_> = fs::read_dir(parent.parent().unwrap())
        .map(|dir| dir.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(entries.is_empty(), "{entries:?}");

    // Reads too: a data pack's range goes to the store, which gives it up; a tree pack's
    // comes from its copy.
    let (stored, stored_bytes) = object("data/", 12);
    s.store.put_if_absent(&stored, &stored_bytes).unwrap();
    assert!(matches!(
        s.cache
            .get_range_to_read_abandoning(&stored, 0, 10, &abandon),
        Err(Error::Abandoned { .. })
    ));
    let (range, calls) = s.calls(|cache| {
        cache
            .get_range_to_read_abandoning(&tree, 10, 20, &abandon)
            .map(|bytes| bytes.to_vec())
    });
    assert_eq!((range.unwrap(), calls), (tree_bytes[10..30].to_vec(), 0));
}

#[test]
fn a_listing_removes_copies_of_objects_it_does_not_name() {
    let s = setup();
    let (kept, kept_bytes) = object("tree/", 9);
    let (gone, gone_bytes) = object("tree/", 10);
    s.cache.put_if_absent(&kept, &kept_bytes).unwrap();
    s.cache.put_if_absent(&gone, &gone_bytes).unwrap();
    // Another host's prune deletes one from the store.
    s.store.delete(&gone).unwrap();
    let fan = s.copy_path(&kept).parent().unwrap().to_owned();
    let old_temp = fan.join(".tmp-1-0");
    let new_temp = fan.join(".tmp-1-1");
    fs::write(&old_temp, b"left by a crash").unwrap();
    fs::write(&new_temp, b"being written").unwrap();
    last_written(&old_temp, Duration::from_secs(7200));

    let listed = s.cache.list("tree/").unwrap();
    assert_eq!(listed.len(), 1);
    assert!(s.copy_path(&kept).exists());
    assert!(!s.copy_path(&gone).exists());
    assert!(!old_temp.exists());
    assert!(new_temp.exists());
    assert!(matches!(s.cache.get(&gone), Err(Error::NotFound { .. })));

    // A listing of part of a kind removes nothing.
    s.store.delete(&kept).unwrap();
    s.cache.list("tree/0").unwrap();
    assert!(s.copy_path(&kept).exists());
}

#[test]
fn a_listing_of_the_index_lists_tree_packs_once_a_day() {
    let s = setup();
    let (kept, kept_bytes) = object("tree/", 14);
    let (gone, gone_bytes) = object("tree/", 15);
    s.cache.put_if_absent(&kept, &kept_bytes).unwrap();
    s.cache.put_if_absent(&gone, &gone_bytes).unwrap();
    s.store.delete(&gone).unwrap();

    let (_, calls) = s.calls(|c| c.list("index/").unwrap());
    assert_eq!(
        calls, 2,
        "the index and, never listed before, the tree packs"
    );
    assert!(s.copy_path(&kept).exists());
    assert!(!s.copy_path(&gone).exists());

    s.cache.put_if_absent(&gone, &gone_bytes).unwrap();
    s.store.delete(&gone).unwrap();
    let (_, calls) = s.calls(|c| c.list("index/").unwrap());
    assert_eq!(calls, 1, "listed less than a day ago");
    assert!(s.copy_path(&gone).exists());

    let stamp = s.cache.dir().join(TREE_LISTING_STAMP);
    last_written(&stamp, TREE_LISTING_EVERY);
    let (_, calls) = s.calls(|c| c.list("index/").unwrap());
    assert_eq!(calls, 2);
    assert!(!s.copy_path(&gone).exists());
}

#[test]
fn ranges_come_from_a_whole_copy() {
    let s = setup();
    let (tree, bytes) = object("tree/", 11);
    s.store.put_if_absent(&tree, &bytes).unwrap();
    // No copy yet: the range comes from the store, and no copy is made of a range.
    let (read, calls) = s.calls(|c| c.get_range(&tree, 10, 20).unwrap());
    assert_eq!((read.as_slice(), calls), (&bytes[10..30], 1));
    assert!(!s.copy_path(&tree).exists());

    s.cache.get(&tree).unwrap();
    for (offset, length) in [(0, 0), (10, 20), (4990, 10), (0, 5000)] {
        let range = offset as usize..(offset + length) as usize;
        let (read, calls) = s.calls(|c| c.get_range(&tree, offset, length).unwrap());
        assert_eq!((read.as_slice(), calls), (&bytes[range.clone()], 0));
        let (read, calls) = s.calls(|c| c.get_range_to_read(&tree, offset, length).unwrap());
        assert_eq!((&*read, calls), (&bytes[range], 0));
    }
    // Past the end: the store's answer (its error names the object).
    let err = s.cache.get_range(&tree, 4990, 11).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // A copy damaged before this process found it whole is not used for ranges.
    let fresh = MetadataCache::new(
        Arc::clone(&s.store) as Arc<dyn Backend>,
        s.cache.dir().to_owned(),
    );
    let mut damaged = bytes.clone();
    damaged[15] ^= 1;
    fs::write(s.copy_path(&tree), &damaged).unwrap();
    assert_eq!(fresh.get_range(&tree, 10, 20).unwrap(), &bytes[10..30]);
}

#[test]
fn a_delete_removes_the_copy() {
    let s = setup();
    let (marker, bytes) = object("forgotten/", 12);
    s.cache.put_if_absent(&marker, &bytes).unwrap();
    assert!(s.copy_path(&marker).exists());
    s.cache.delete(&marker).unwrap();
    assert!(!s.copy_path(&marker).exists());
    assert!(matches!(s.cache.get(&marker), Err(Error::NotFound { .. })));
}

#[test]
fn a_directory_that_cannot_be_written_only_costs_fetches() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-directory");
    fs::write(&blocker, b"").unwrap();
    let store = Arc::new(MemoryBackend::new());
    let cache = MetadataCache::new(Arc::clone(&store) as Arc<dyn Backend>, blocker.join("x"));
    let (snapshot, bytes) = object("snapshots/", 13);
    cache.put_if_absent_owned(&snapshot, bytes.clone()).unwrap();
    assert_eq!(cache.get(&snapshot).unwrap(), bytes);
    assert_eq!(cache.list("snapshots/").unwrap().len(), 1);
    cache.delete(&snapshot).unwrap();
    assert!(store.list("").unwrap().is_empty());
}

#[test]
fn passes_the_conformance_suite() {
    let s = setup();
    crate::backend::testing::conformance(&s.cache);
}
