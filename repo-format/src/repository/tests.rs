use std::sync::Arc;

use super::*;
use crate::backend::MemoryBackend;
use crate::tree::{Entry, Extent, Metadata, Node, Timestamp};

pub(crate) fn test_options() -> InitOptions {
    InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    }
}

#[test]
fn init_open_and_wrong_password() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"secret", test_options()).expect("init");
    assert!(matches!(
        Repository::init(backend.clone(), b"x", test_options()),
        Err(Error::RepositoryExists { .. })
    ));
    let reopened = Repository::open(backend.clone(), b"secret").expect("open");
    assert_eq!(reopened.config(), repo.config());
    assert_eq!(reopened.blob_id(b"abc"), repo.blob_id(b"abc"));
    assert!(matches!(
        Repository::open(backend.clone(), b"nope"),
        Err(Error::WrongPassword { slots: 1, .. })
    ));
    let empty: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    assert!(matches!(
        Repository::open(empty, b"secret"),
        Err(Error::RepositoryNotFound { .. })
    ));
}

#[test]
fn a_repository_without_key_slots_is_damaged_not_a_wrong_password() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), b"secret", test_options()).expect("init");
    for slot in backend.list(ObjectKind::KeySlot.prefix()).expect("list") {
        backend.delete(&slot.name).expect("delete the slot");
    }
    match Repository::open(backend, b"secret") {
        Err(Error::Corrupt { object, reason }) => {
            assert!(object.ends_with("keys/"), "{object}");
            assert!(reason.contains("no key slots"), "{reason}");
        }
        other => panic!("expected damage, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn write_blobs_index_and_snapshot_then_read_back() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let empty = Index::new();
    let mut writer = repo.blob_writer(&empty);
    let data = b"hello world".repeat(1000);
    let (data_id, new) = writer.add(BlobKind::Data, &data).expect("add");
    assert!(new);
    assert!(!writer.add(BlobKind::Data, &data).expect("add again").1);
    let tree = Tree::new(vec![Entry {
        name: b"f".to_vec(),
        meta: Metadata::default(),
        node: Node::File {
            extents: vec![Extent::Chunk {
                id: data_id,
                length: data.len() as u32,
            }],
        },
    }])
    .expect("tree");
    let (tree_id, _) = writer
        .add(BlobKind::Tree, &tree.encode())
        .expect("tree blob");
    let session = writer.session().clone();
    let (stats, segments) = writer.finish().expect("finish");
    assert_eq!(stats.data_blobs, 1);
    assert_eq!(stats.tree_blobs, 1);
    assert_eq!(stats.packs, 2);
    assert_eq!(segments.len(), 1);

    let snapshot = Snapshot {
        time: Timestamp { sec: 1, nsec: 2 },
        paths: vec![b"/x".to_vec()],
        ..Snapshot::of_tree_for_tests(tree_id)
    };
    let snapshot_id = repo.save_snapshot(&session, &snapshot).expect("save");

    let repo = Repository::open(backend.clone(), b"pw").expect("open");
    let loaded = repo.load_index().expect("index");
    assert!(loaded.damaged.is_empty());
    assert_eq!(loaded.index.len(), 2);
    let (found, snap) = repo.resolve_snapshot("latest").expect("latest");
    assert_eq!(found, snapshot_id);
    assert_eq!(snap, snapshot);
    let prefix = &snapshot_id.to_hex()[..6];
    assert_eq!(
        repo.resolve_snapshot(prefix).expect("prefix").0,
        snapshot_id
    );
    assert!(repo.resolve_snapshot("zz").is_err());
    let tree_back = repo.load_tree(&loaded.index, &snap.tree).expect("tree");
    assert_eq!(tree_back, tree);
    assert_eq!(repo.read_blob(&loaded.index, &data_id).expect("blob"), data);

    // A second writer deduplicates against the index.
    let mut writer = repo.blob_writer(&loaded.index);
    assert!(!writer.add(BlobKind::Data, &data).expect("dedup").1);
    let (stats, segments) = writer.finish().expect("finish");
    assert_eq!(stats, WriteStats::default());
    assert!(segments.is_empty());
}

#[test]
fn index_interval_indexes_each_pack_as_it_is_uploaded() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let mut options = test_options();
    options.params.pack_size = 1 << 20;
    options.params.compression_level = 0;
    let repo = Repository::init(backend.clone(), b"pw", options).expect("init");
    let empty = Index::new();
    let mut writer = repo.blob_writer(&empty);
    writer.set_index_interval(std::time::Duration::ZERO);
    let mut ids = Vec::new();
    for i in 0..3u8 {
        let blob: Vec<u8> = (0..600_000u32)
            .map(|j| (j as u8) ^ i.wrapping_mul(31))
            .collect();
        ids.push(writer.add(BlobKind::Data, &blob).expect("add").0);
    }
    // The pack of the first two blobs filled up and was uploaded, and is indexed already.
    assert_eq!(writer.stats().packs, 1);
    let indexed = repo.load_index().expect("index").index;
    assert!(indexed.contains(&ids[0]) && indexed.contains(&ids[1]));
    assert!(!indexed.contains(&ids[2]));
    let (_, segments) = writer.finish().expect("finish");
    assert_eq!(segments.len(), 2);
}

#[test]
fn key_slots_add_list_remove() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"one", test_options()).expect("init");
    let info = KeySlotInfo {
        label: "second".into(),
        ..KeySlotInfo::default()
    };
    let second = repo.add_key_slot(b"two", &info).expect("add");
    assert_eq!(repo.key_slots().expect("list").len(), 2);
    let via_two = Repository::open(backend.clone(), b"two").expect("open with second");
    assert_eq!(via_two.current_key_slot(), Some(second));
    assert!(
        repo.remove_key_slot(&repo.current_key_slot().unwrap())
            .is_err()
    );
    repo.remove_key_slot(&second).expect("remove");
    assert!(matches!(
        Repository::open(backend.clone(), b"two"),
        Err(Error::WrongPassword { .. })
    ));
    assert!(Repository::open(backend, b"one").is_ok());
}

#[test]
fn flipped_bit_in_a_pack_is_reported_with_its_name() {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let empty = Index::new();
    let mut writer = repo.blob_writer(&empty);
    let (id, _) = writer.add(BlobKind::Data, &[7u8; 5000]).expect("add");
    writer.finish().expect("finish");
    let loaded = repo.load_index().expect("index");
    let location = loaded.index.get(&id).expect("indexed");
    let name = ObjectKind::DataPack.name(&location.pack.to_hex());
    backend.corrupt(&name, |bytes| bytes[location.offset as usize + 30] ^= 1);
    let err = repo
        .read_blob(&loaded.index, &id)
        .expect_err("corruption caught");
    assert!(err.to_string().contains(&name), "{err}");
}

/// A memory store with chosen read hints that counts the reads of tree packs.
#[derive(Debug)]
struct CountingStore {
    inner: MemoryBackend,
    hints: crate::backend::ReadHints,
    tree_reads: std::sync::atomic::AtomicUsize,
}

impl CountingStore {
    fn count(&self, name: &str) {
        if name.starts_with("tree/") {
            self.tree_reads
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn take_tree_reads(&self) -> usize {
        self.tree_reads
            .swap(0, std::sync::atomic::Ordering::Relaxed)
    }
}

impl Backend for CountingStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn read_hints(&self) -> crate::backend::ReadHints {
        self.hints
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.count(name);
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.count(name);
        self.inner.get_range(name, offset, length)
    }
    fn head(&self, name: &str) -> Result<crate::backend::ObjectMeta> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<crate::backend::ObjectMeta>> {
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }
}

#[test]
fn a_remote_store_reads_each_tree_pack_once_and_a_damaged_tree_fails_alone() {
    use crate::backend::ReadHints;
    // Remote: the pack whole (its header gives the key). Local: the header, then one range
    // per tree.
    for (hints, reads_for_20_trees) in [(ReadHints::REMOTE, 1), (ReadHints::LOCAL, 21)] {
        let store = Arc::new(CountingStore {
            inner: MemoryBackend::new(),
            hints,
            tree_reads: Default::default(),
        });
        let repo = Repository::init(store.clone(), b"pw", test_options()).expect("init");
        let empty = Index::new();
        let mut writer = repo.blob_writer(&empty);
        let trees: Vec<(BlobId, Tree)> = (0..20u8)
            .map(|i| {
                let tree = Tree::new(vec![Entry {
                    name: vec![b'a' + i],
                    meta: Metadata::default(),
                    node: Node::File { extents: vec![] },
                }])
                .expect("tree");
                let (id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("add");
                (id, tree)
            })
            .collect();
        writer.finish().expect("finish");
        let index = repo.load_index().expect("index").index;

        let repo = Repository::open(store.clone(), b"pw").expect("open");
        store.take_tree_reads();
        for (id, tree) in &trees {
            assert_eq!(&repo.load_tree(&index, id).expect("tree"), tree);
        }
        assert_eq!(store.take_tree_reads(), reads_for_20_trees, "{hints:?}");

        let damaged = index.get(&trees[5].0).expect("indexed");
        let name = ObjectKind::TreePack.name(&damaged.pack.to_hex());
        store
            .inner
            .corrupt(&name, |bytes| bytes[damaged.offset as usize + 20] ^= 1);
        let repo = Repository::open(store.clone(), b"pw").expect("open");
        for (i, (id, tree)) in trees.iter().enumerate() {
            match repo.load_tree(&index, id) {
                Ok(loaded) => assert!(i != 5 && &loaded == tree, "{hints:?}: tree {i}"),
                Err(e) => assert!(i == 5 && e.to_string().contains(&name), "{e}"),
            }
        }
    }
}

#[test]
fn names_below_a_kinds_directory_are_not_its_objects() {
    // An object store's listing is recursive: a repository made inside this one's
    // namespace (`p/snapshots` under `p`) leaves names such as `snapshots/keys/ID`.
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let nested = format!("snapshots/keys/{}", "ab".repeat(32));
    backend.put_if_absent(&nested, b"a key slot").expect("put");
    let nested_index = format!("index/sub/{}", "cd".repeat(32));
    backend.put_if_absent(&nested_index, b"x").expect("put");
    assert!(repo.list_snapshot_ids().expect("list").is_empty());
    assert!(repo.list_index_ids().expect("list").is_empty());
}

#[test]
fn a_key_slot_of_another_repository_opens_nothing_and_is_a_wrong_password() {
    // What an `init` that lost a race for the same location leaves behind.
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), b"winner", test_options()).expect("init");
    let other: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(other.clone(), b"loser", test_options()).expect("init");
    for meta in other.list(ObjectKind::KeySlot.prefix()).expect("list") {
        let bytes = other.get(&meta.name).expect("get");
        backend.put_if_absent(&meta.name, &bytes).expect("put");
    }
    assert!(matches!(
        Repository::open(backend.clone(), b"loser"),
        Err(Error::WrongPassword { slots: 2, .. })
    ));
    Repository::open(backend, b"winner").expect("the winner's password opens it");
}

#[test]
fn audit_records_load_in_time_order_past_a_damaged_one_whatever_the_width() {
    use crate::audit::AuditRecord;
    use crate::backend::ReadHints;
    // Remote stores read eight records at once, local ones two: 20 records span batches.
    for hints in [ReadHints::REMOTE, ReadHints::LOCAL] {
        let store = Arc::new(CountingStore {
            inner: MemoryBackend::new(),
            hints,
            tree_reads: Default::default(),
        });
        let repo = Repository::init(store.clone(), b"pw", test_options()).expect("init");
        let mut ids = Vec::new();
        for i in 0..20i64 {
            let record = AuditRecord {
                time: crate::tree::Timestamp {
                    sec: 1_700_000_000 + (i * 7) % 20,
                    nsec: 0,
                },
                host: "h".into(),
                user: "u".into(),
                operation: format!("op{i}"),
                target: "t".into(),
                outcome: "succeeded".into(),
                duration_ms: 1,
                snapshot: None,
                details: Vec::new(),
            };
            ids.push(
                crate::audit::store(store.as_ref(), repo.writer_key(), &record).expect("store"),
            );
        }
        let damaged = ObjectKind::Audit.name(&ids[3].to_hex());
        store.inner.corrupt(&damaged, |bytes| bytes[50] ^= 1);

        let (records, unreadable) = repo.load_audit().expect("listing");
        assert_eq!(unreadable, vec![damaged.clone()], "{hints:?}");
        assert_eq!(records.len(), 19, "{hints:?}");
        assert!(
            records.windows(2).all(|w| w[0].1.time <= w[1].1.time),
            "{hints:?}"
        );
        assert!(records.iter().all(|(id, _)| *id != ids[3]), "{hints:?}");
        for (id, record) in &records {
            let i = ids
                .iter()
                .position(|stored| stored == id)
                .expect("a stored record");
            assert_eq!(record.operation, format!("op{i}"), "{hints:?}");
        }
    }
}

/// A memory store whose config read and key-slot listing each wait (up to a few seconds)
/// for the other to have started: an `open` that makes them one after the other stalls.
#[derive(Debug)]
struct RendezvousStore {
    inner: Arc<MemoryBackend>,
    started: std::sync::Mutex<(bool, bool)>,
    changed: std::sync::Condvar,
}

impl RendezvousStore {
    /// Marks one side started and waits for the other; true when both met in time.
    fn meet(&self, config_side: bool) -> bool {
        let mut started = self.started.lock().expect("lock");
        if config_side {
            started.0 = true;
        } else {
            started.1 = true;
        }
        self.changed.notify_all();
        let (started, _) = self
            .changed
            .wait_timeout_while(started, std::time::Duration::from_secs(5), |s| {
                !(s.0 && s.1)
            })
            .expect("lock");
        started.0 && started.1
    }
}

impl Backend for RendezvousStore {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        if name == CONFIG_NAME && !self.meet(true) {
            return Err(Error::Invalid("the config was read alone".into()));
        }
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.inner.get_range(name, offset, length)
    }
    fn head(&self, name: &str) -> Result<crate::backend::ObjectMeta> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<crate::backend::ObjectMeta>> {
        if prefix == ObjectKind::KeySlot.prefix() && !self.meet(false) {
            return Err(Error::Invalid("the key slots were listed alone".into()));
        }
        self.inner.list(prefix)
    }
    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }
}

#[test]
fn open_reads_the_config_and_lists_the_key_slots_side_by_side() {
    let inner = Arc::new(MemoryBackend::new());
    let made = Repository::init(inner.clone(), b"secret", test_options()).expect("init");
    let store = RendezvousStore {
        inner,
        started: std::sync::Mutex::new((false, false)),
        changed: std::sync::Condvar::new(),
    };
    let opened = Repository::open(Arc::new(store), b"secret").expect("open");
    assert_eq!(opened.config(), made.config());
}

/// A config whose sealed body is damaged, opened with this repository's own key file: the
/// error names the config (which `repair config` rebuilds), not the key file, and is not
/// the key file's error (exit 14, "write a new key file").
#[test]
fn a_damaged_config_opened_with_a_key_file_names_the_config() {
    let backend = Arc::new(MemoryBackend::new());
    let repo =
        Repository::init(backend.clone() as Arc<dyn Backend>, b"pw", test_options()).expect("init");
    let key_file = repo.key_file(false).expect("key file");
    let config_len = backend.get(CONFIG_NAME).expect("config").len();
    backend.corrupt(CONFIG_NAME, |bytes| bytes[config_len - 20] ^= 1);
    match Repository::open_with_key_file(backend.clone() as Arc<dyn Backend>, &key_file, "k") {
        Err(Error::Corrupt { object, .. }) => assert_eq!(object, CONFIG_NAME),
        other => panic!(
            "expected the config named as damaged, got {:?}",
            other.map(|_| ())
        ),
    }
}

/// With a key file (no slot in use) every password slot could be removed, although the
/// last one "cannot be removed": the repository is then closed to every password.
#[test]
fn the_last_key_slot_cannot_be_removed_with_a_key_file_either() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let only = repo.current_key_slot().expect("slot");
    let key_file = repo.key_file(false).expect("key file");
    let via_file =
        Repository::open_with_key_file(backend.clone(), &key_file, "k").expect("open with file");
    assert!(via_file.remove_key_slot(&only).is_err());
    assert!(Repository::open(backend.clone(), b"pw").is_ok());

    // With a second slot, either one can go.
    let second = via_file
        .add_key_slot(b"two", &KeySlotInfo::default())
        .expect("add");
    via_file.remove_key_slot(&only).expect("remove the first");
    assert!(via_file.remove_key_slot(&second).is_err());
    assert!(Repository::open(backend, b"two").is_ok());
}

/// A repository whose `config` was lost still holds its key slots, index and snapshots
/// (`repair config` rebuilds the config from a slot). `init` must not take that for an
/// empty location and write a new config with a new key over it: every stored object would
/// then belong to a key the new config does not know.
#[test]
fn init_refuses_a_repository_that_only_lost_its_config() {
    let backend = Arc::new(MemoryBackend::new());
    let store = backend.clone() as Arc<dyn Backend>;
    let repo = Repository::init(store.clone(), b"pw", test_options()).expect("init");
    let empty = Index::new();
    let mut writer = repo.blob_writer(&empty);
    writer.add(BlobKind::Data, b"kept data").expect("add");
    writer.finish().expect("finish");
    store.delete(CONFIG_NAME).expect("lose the config");
    match Repository::init(store.clone(), b"other", test_options()) {
        Err(Error::RepositoryExists { .. }) => {}
        other => panic!(
            "init over a repository without config: {:?}",
            other.map(|r| r.config().header.repository_id)
        ),
    }
    assert!(matches!(
        store.get(CONFIG_NAME),
        Err(Error::NotFound { .. })
    ));

    // A location with only the key slot of an init that stopped before its config is
    // still free for `init`.
    let half = Arc::new(MemoryBackend::new()) as Arc<dyn Backend>;
    Repository::init(half.clone(), b"pw", test_options()).expect("init");
    half.delete(CONFIG_NAME)
        .expect("as if init stopped before the config");
    Repository::init(half.clone(), b"pw", test_options()).expect("init again");
}

/// `change_password` replaces the slot in use, whatever the new password (the same one
/// included): one slot before, one after, and it opens with the new password.
#[test]
fn change_password_replaces_the_slot_in_use() {
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let mut current: &[u8] = b"pw";
    for (round, new) in [b"pw".as_slice(), b"pw", b"new", b"new", b"pw"]
        .into_iter()
        .enumerate()
    {
        let repo = Repository::open(backend.clone(), current).expect("open");
        let before = repo.current_key_slot().expect("slot");
        let after = repo
            .change_password(new, &KeySlotInfo::default())
            .expect("change");
        let slots: Vec<KeySlotId> = repo
            .key_slots()
            .expect("list")
            .iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(slots, vec![after], "round {round}");
        assert_ne!(before, after);
        let reopened = Repository::open(backend.clone(), new).expect("new password opens");
        assert_eq!(reopened.current_key_slot(), Some(after));
        current = new;
    }
    let via_file = Repository::open_with_key_file(
        backend.clone(),
        &Repository::open(backend, current)
            .expect("open")
            .key_file(false)
            .expect("key file"),
        "k",
    )
    .expect("open with a key file");
    assert!(
        via_file
            .change_password(b"x", &KeySlotInfo::default())
            .is_err()
    );
}

/// Whoever can write to the storage can plant a slot demanding the most memory and passes
/// the format allows: open tries the cheapest slot first, whatever the names' order, so
/// such a slot costs only the passwords no other slot opens.
#[test]
fn open_tries_the_cheapest_key_slot_first() {
    let backend = Arc::new(MemoryBackend::new());
    let repo = Repository::init(backend.clone(), b"pw", test_options()).expect("init");
    let cheap = repo.current_key_slot().expect("a slot in use");
    let costly_kdf = KdfParams {
        memory_kib: 64,
        iterations: 2,
        parallelism: 1,
    };
    assert!(costly_kdf.cost() > test_options().kdf.cost());
    // Sealed until its name sorts before the cheap slot's (a fresh salt each time), so
    // that the listing offers it first.
    let (costly, bytes) = (0..64)
        .map(|_| {
            let master = repo.key.master("test").expect("full key");
            let id = &repo.config().header.repository_id;
            KeySlot::seal(master, id, b"pw", costly_kdf, &KeySlotInfo::default()).expect("seal")
        })
        .find(|(id, _)| id.to_hex() < cheap.to_hex())
        .expect("a name sorting first");
    backend
        .put_if_absent(&ObjectKind::KeySlot.name(&costly.to_hex()), &bytes)
        .expect("plant");
    let listed = backend.list(ObjectKind::KeySlot.prefix()).expect("list");
    assert!(listed[0].name.ends_with(&costly.to_hex()), "{listed:?}");

    let opened = Repository::open(backend, b"pw").expect("open");
    assert_eq!(opened.current_key_slot(), Some(cheap));
}

/// A key slot listed but gone when read (removed meanwhile by a `key passwd` on another
/// host) is not a slot: the open goes on with the others.
#[test]
fn a_key_slot_removed_since_the_listing_is_skipped() {
    #[derive(Debug)]
    struct ListsAGoneSlot(Arc<MemoryBackend>);
    const GONE: &str = "00000000000000000000000000000000000000000000000000000000000000aa";
    impl Backend for ListsAGoneSlot {
        fn location(&self) -> String {
            self.0.location()
        }
        fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
            self.0.put_if_absent(name, bytes)
        }
        fn get(&self, name: &str) -> Result<Vec<u8>> {
            self.0.get(name)
        }
        fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
            self.0.get_range(name, offset, length)
        }
        fn head(&self, name: &str) -> Result<crate::backend::ObjectMeta> {
            self.0.head(name)
        }
        fn list(&self, prefix: &str) -> Result<Vec<crate::backend::ObjectMeta>> {
            let mut listed = self.0.list(prefix)?;
            if prefix == ObjectKind::KeySlot.prefix() {
                let mut gone = listed[0].clone();
                gone.name = ObjectKind::KeySlot.name(GONE);
                listed.insert(0, gone);
            }
            Ok(listed)
        }
        fn delete(&self, name: &str) -> Result<()> {
            self.0.delete(name)
        }
    }
    let inner = Arc::new(MemoryBackend::new());
    let made = Repository::init(inner.clone(), b"pw", test_options()).expect("init");
    let opened = Repository::open(Arc::new(ListsAGoneSlot(inner)), b"pw").expect("open");
    assert_eq!(opened.current_key_slot(), made.current_key_slot());
}
