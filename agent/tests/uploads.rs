//! Pack uploads against a slow in-memory store: how many run at once, and what a failed
//! stream or a failed upload leaves behind.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bunker_repo_format::Result;
use bunker_repo_format::backend::{Backend, MemoryBackend, ObjectMeta, ReadHints};
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::object::SESSION_HEADER_LEN;
use bunker_repo_format::{InitOptions, Repository};

use bunker_agent::Cancel;
use bunker_agent::backup::{
    BackupOptions, StreamOptions, VolumeOptions, backup, backup_stream, backup_volume,
};
use bunker_agent::restore::{RestoreOptions, restore, restore_volume};
use common::noise;

/// A store that asks for `concurrency` puts at once and records how many packs it was
/// given at the same time (each pack put takes a while, like a PUT over a network), and
/// counts the reads of a data pack's header alone.
#[derive(Debug)]
struct SlowPuts {
    inner: MemoryBackend,
    concurrency: usize,
    in_flight: AtomicUsize,
    most: AtomicUsize,
    header_reads: AtomicUsize,
    /// Data pack puts so far.
    pack_puts: AtomicUsize,
    /// Data pack puts from this one on fail, like a full disk.
    failing_from: AtomicUsize,
}

impl Backend for SlowPuts {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read_hints(&self) -> ReadHints {
        self.inner.read_hints()
    }
    fn put_concurrency(&self) -> usize {
        self.concurrency
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        if !name.starts_with("data/") {
            return self.inner.put_if_absent(name, bytes);
        }
        if self.pack_puts.fetch_add(1, Ordering::SeqCst) >= self.failing_from.load(Ordering::SeqCst)
        {
            return Err(bunker_repo_format::Error::Io {
                context: format!("writing {name}"),
                source: std::io::Error::from(std::io::ErrorKind::StorageFull),
            });
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(40));
        let result = self.inner.put_if_absent(name, bytes);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        if name.starts_with("data/") && offset == 0 && length == SESSION_HEADER_LEN as u64 {
            self.header_reads.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_range(name, offset, length)
    }
    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }
}

/// A repository with 1 MiB packs on a store that takes `concurrency` pack puts at once.
fn slow_repository(concurrency: usize) -> (Arc<SlowPuts>, Repository) {
    let store = Arc::new(SlowPuts {
        inner: MemoryBackend::new(),
        concurrency,
        in_flight: AtomicUsize::new(0),
        most: AtomicUsize::new(0),
        header_reads: AtomicUsize::new(0),
        pack_puts: AtomicUsize::new(0),
        failing_from: AtomicUsize::new(usize::MAX),
    });
    let backend: Arc<dyn Backend> = store.clone();
    let mut options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    options.params.pack_size = 1 << 20;
    let repo = Repository::init(backend, b"pw", options).expect("init");
    (store, repo)
}

#[test]
fn a_volume_is_packed_while_its_earlier_packs_upload() {
    let (store, repo) = slow_repository(2);
    let dir = tempfile::tempdir().expect("temp dir");
    let image = dir.path().join("disk.img");
    // 12 MiB of data with a 4 MiB hole in the middle.
    let mut bytes = noise(12 << 20, 7);
    bytes[4 << 20..8 << 20].fill(0);
    std::fs::write(&image, &bytes).expect("write image");
    let outcome = backup_volume(
        &repo,
        &VolumeOptions {
            device: image.clone(),
            host: "h".into(),
            ..VolumeOptions::default()
        },
        &Cancel::new(),
    )
    .expect("volume backup");
    assert_eq!(store.most.load(Ordering::SeqCst), 2);
    // The 8 MiB of data and the small tree: the hole is stored as nothing.
    let added = outcome.snapshot.summary.bytes_added;
    assert!((8 << 20..(8 << 20) + 4096).contains(&added), "{added}");

    let index = repo.load_index_for_reading().expect("index").index;
    let target = dir.path().join("restored.img");
    restore_volume(
        &repo,
        &index,
        &outcome.snapshot.tree,
        &target,
        None,
        &Cancel::new(),
    )
    .expect("volume restore");
    assert!(std::fs::read(&target).expect("restored image") == bytes);
}

/// Gives `data`, then fails.
struct FailingAfter {
    data: std::io::Cursor<Vec<u8>>,
}

impl std::io::Read for FailingAfter {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.data.read(buf)? {
            0 => Err(std::io::Error::other("the dump command died")),
            n => Ok(n),
        }
    }
}

#[test]
fn a_failed_stream_leaves_its_stored_packs_indexed_for_the_next_run() {
    let (_store, repo) = slow_repository(2);
    // Chunking reads up to two maximal chunks (16 MiB) ahead of the chunks it cuts.
    let dump = noise(40 << 20, 11);
    let options = StreamOptions {
        name: "db.dump".into(),
        host: "h".into(),
        ..StreamOptions::default()
    };
    let failing = FailingAfter {
        data: std::io::Cursor::new(dump[..30 << 20].to_vec()),
    };
    let err = backup_stream(&repo, failing, &options, &Cancel::new())
        .expect_err("a stream that fails is no snapshot");
    assert!(err.to_string().contains("the dump command died"), "{err}");
    assert!(repo.list_snapshot_ids().expect("list").is_empty());
    let indexed = repo.load_index().expect("index").index.len();
    assert!(indexed >= 5, "only {indexed} blobs were indexed");

    // The next run stores only what the failed one had not.
    let outcome =
        backup_stream(&repo, dump.as_slice(), &options, &Cancel::new()).expect("stream backup");
    assert!(
        outcome.snapshot.summary.bytes_added <= 30 << 20,
        "{:?}",
        outcome.snapshot.summary
    );
}

/// Data blobs in the repository's index.
fn indexed_data_blobs(repo: &Repository) -> usize {
    let index = repo.load_index().expect("index").index;
    index.len()
}

#[test]
fn a_backup_whose_upload_fails_leaves_the_packs_it_stored_indexed_for_files_volumes_and_streams() {
    let (store, repo) = slow_repository(1);
    let source = tempfile::tempdir().expect("temp dir");
    let image = source.path().join("disk.img");
    // 12 incompressible MiB: about 12 packs of 1 MiB.
    std::fs::write(&image, noise(12 << 20, 5)).expect("write");
    let files = BackupOptions {
        paths: vec![source.path().to_path_buf()],
        host: "h".into(),
        ..BackupOptions::default()
    };
    let volume = VolumeOptions {
        device: image.clone(),
        host: "h".into(),
        ..VolumeOptions::default()
    };
    store.failing_from.store(4, Ordering::SeqCst);
    let err = backup(&repo, &files, &Cancel::new()).expect_err("the fifth pack fails");
    assert!(err.to_string().contains("writing data/"), "{err}");
    assert!(repo.list_snapshot_ids().expect("list").is_empty());
    let after_files = indexed_data_blobs(&repo);
    assert!(after_files >= 4, "only {after_files} blobs were indexed");

    // A volume backup of the same bytes (1 MiB chunks, other cuts) fails the same way.
    store.pack_puts.store(0, Ordering::SeqCst);
    let err = backup_volume(&repo, &volume, &Cancel::new()).expect_err("the fifth pack fails");
    assert!(err.to_string().contains("writing data/"), "{err}");
    let after_volume = indexed_data_blobs(&repo);
    assert!(
        after_volume >= after_files + 4,
        "{after_volume} blobs indexed after {after_files}"
    );

    // A stream of other bytes (chunked like a file) fails the same way.
    let dump = noise(12 << 20, 6);
    let stream = StreamOptions {
        name: "db.dump".into(),
        host: "h".into(),
        ..StreamOptions::default()
    };
    store.pack_puts.store(0, Ordering::SeqCst);
    let err = backup_stream(&repo, dump.as_slice(), &stream, &Cancel::new())
        .expect_err("the fifth pack fails");
    assert!(err.to_string().contains("writing data/"), "{err}");
    assert!(repo.list_snapshot_ids().expect("list").is_empty());
    let after_stream = indexed_data_blobs(&repo);
    assert!(
        after_stream >= after_volume + 4,
        "{after_stream} blobs indexed after {after_volume}"
    );

    // The next runs store only what the failed ones had not.
    store.failing_from.store(usize::MAX, Ordering::SeqCst);
    let done = backup_stream(&repo, dump.as_slice(), &stream, &Cancel::new()).expect("stream");
    let added = done.snapshot.summary.bytes_added;
    assert!(added <= (10 << 20) + 4096, "{added} bytes added again");
    let done = backup_volume(&repo, &volume, &Cancel::new()).expect("volume backup");
    let added = done.snapshot.summary.bytes_added;
    assert!(added <= (8 << 20) + 4096, "{added} bytes added again");
    // The file's chunks are at least 512 KiB: four of them were kept.
    let done = backup(&repo, &files, &Cancel::new()).expect("backup");
    let added = done.snapshot.summary.bytes_added;
    assert!(added <= (10 << 20) + 4096, "{added} bytes added again");
}

#[test]
fn packs_are_uploaded_as_many_at_once_as_the_store_asks_and_restore_exactly() {
    for concurrency in [1, 3] {
        let (store, repo) = slow_repository(concurrency);

        let source = tempfile::tempdir().expect("temp dir");
        let files: Vec<(String, Vec<u8>)> = (0..12u64)
            .map(|i| (format!("f{i}"), noise(900 << 10, i)))
            .collect();
        for (name, data) in &files {
            std::fs::write(source.path().join(name), data).expect("write");
        }
        let outcome = backup(
            &repo,
            &BackupOptions {
                paths: vec![source.path().to_path_buf()],
                host: "h".into(),
                ..BackupOptions::default()
            },
            &Cancel::new(),
        )
        .expect("backup");
        // 12 incompressible files of 900 KiB in 1 MiB packs: about 11 data packs.
        assert!(
            outcome.snapshot.summary.bytes_stored > 10 << 20,
            "{:?}",
            outcome.snapshot.summary
        );
        assert_eq!(store.most.load(Ordering::SeqCst), concurrency);

        // A fresh handle: no pack key is known yet.
        let repo = Repository::open(store.clone(), b"pw").expect("open");
        let index = repo.load_index_for_reading().expect("index").index;
        let target = tempfile::tempdir().expect("temp dir");
        let restored = restore(
            &repo,
            &index,
            &outcome.snapshot.tree,
            std::path::Path::new("/"),
            target.path(),
            &RestoreOptions::default(),
            &Cancel::new(),
        )
        .expect("restore");
        assert!(restored.errors.is_empty(), "{:?}", restored.errors);
        let copy = target
            .path()
            .join(source.path().strip_prefix("/").expect("absolute"));
        for (name, data) in &files {
            let back = std::fs::read(copy.join(name)).expect("restored file");
            assert!(back == *data, "{name} differs after restore");
        }
        // Each pack's header came with its first blobs, not in a request of its own.
        assert_eq!(store.header_reads.load(Ordering::SeqCst), 0);
    }
}
