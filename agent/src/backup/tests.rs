//! Tests of the backup pipeline's stages against an in-memory store.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bunker_repo_format::Result;
use bunker_repo_format::backend::{Backend, MemoryBackend, ObjectMeta, ReadHints};
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::{InitOptions, Repository};

use super::{BackupOptions, backup};
use crate::cancel::Cancel;
use crate::restore::{RestoreOptions, restore};

/// A store that asks for `concurrency` puts at once and records how many packs it was
/// given at the same time (each pack put takes a while, like a PUT over a network).
#[derive(Debug)]
struct SlowPuts {
    inner: MemoryBackend,
    concurrency: usize,
    in_flight: AtomicUsize,
    most: AtomicUsize,
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

/// Pseudo-random, incompressible bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn packs_are_uploaded_as_many_at_once_as_the_store_asks_and_restore_exactly() {
    for concurrency in [1, 3] {
        let store = Arc::new(SlowPuts {
            inner: MemoryBackend::new(),
            concurrency,
            in_flight: AtomicUsize::new(0),
            most: AtomicUsize::new(0),
        });
        let backend: Arc<dyn Backend> = store.clone();
        let mut options = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        options.params.pack_size = 1 << 20;
        let repo = Repository::init(backend, b"pw", options).expect("init");

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
    }
}
