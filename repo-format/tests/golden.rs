//! Golden vectors for repository format v1 (`docs/FORMAT.md`).
//!
//! `tests/golden/repo/` is a small repository generated once and checked in: a key slot for
//! the password `golden-password`, the `config`, a data pack with two blobs (one
//! compressible, one not), a tree pack with the root tree and an empty subtree, an index
//! segment listing both packs and a snapshot. `tests/golden/tree.bin` is the root tree's
//! plaintext. Sealing draws random nonces, so these are *decoding* vectors: the tests below
//! decode the stored bytes and compare them with values written out here. Every later
//! version of bunker must still read them.
//!
//! Two readers check the files: the crate's own decoders, and [`spec_reader`], which follows
//! `docs/FORMAT.md` with nothing but BLAKE3, X25519, Argon2id, XChaCha20-Poly1305 and zstd,
//! so the spec and the code cannot drift apart unnoticed.
//!
//! Regenerating the files is allowed **only together with a format version bump**:
//!
//! ```text
//! cargo test -p bunker-repo-format --test golden -- --ignored regenerate
//! ```
//!
//! then paste the object names it prints into [`GOLDEN_OBJECTS`].

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunker_repo_format::backend::{Backend, LocalBackend, LockMode, LockPolicy};
use bunker_repo_format::blob::{open_blob, seal_blob};
use bunker_repo_format::chunker::{ChunkerParams, gear_table};
use bunker_repo_format::config::{Config, ConfigHeader, FeatureFlags, Operation, RepositoryParams};
use bunker_repo_format::crypto::MasterKey;
use bunker_repo_format::index::{
    IndexSegment, IndexedPack, decode_segment, decode_segment_ids, encode_segment,
};
use bunker_repo_format::keyslot::{KdfParams, KeySlot, KeySlotInfo};
use bunker_repo_format::object::ObjectKind;
use bunker_repo_format::pack::{PackEntry, PackTrailer, PackWriter, parse_pack};
use bunker_repo_format::snapshot::{ConsistencyLevel, Snapshot, SourceKind, Summary};
use bunker_repo_format::tree::{Entry, EntryFlags, Extent, Metadata, Node, Timestamp, Tree};
use bunker_repo_format::{BlobId, BlobKind, PackId, Repository, SnapshotId, content_hash};

/// Every object of the golden repository. [`regenerate`] prints this list.
const GOLDEN_OBJECTS: &[&str] = &[
    "config",
    "data/33/33c1d7260fcb3d7543e572281067484d2ada48661b22ddc7bf84ed73686513a2",
    "index/c87365375b614f6fb0cdf1bb8fb599a6cb724fd5c74da119fccdfd3ce54fc8a0",
    "keys/cb4dc7151243017370d75f0d3a953612ec721648c076b3d687d0911aae4766ae",
    "snapshots/5e3e6336cd613f04b652b8f5f35e67e6a5219c15f69149f07b61c98072069893",
    "tree/1c/1c8d65fbd6bc4f92ffecdba54226c1107ac4a30224a861c9e2c14dc98b6e3859",
];

const PASSWORD: &[u8] = b"golden-password";

const fn pattern(start: u8) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = start.wrapping_add(i as u8);
        i += 1;
    }
    out
}

/// The golden master key's X25519 data secret: bytes 0x00..=0x1f.
const DATA_SECRET: [u8; 32] = pattern(0x00);
/// The golden writer secret: bytes 0x20..=0x3f.
const WRITER_SECRET: [u8; 32] = pattern(0x20);
/// The golden repository id: bytes 0x40..=0x5f.
const REPOSITORY_ID: [u8; 32] = pattern(0x40);
/// The (fictitious) parent of the golden snapshot.
const PARENT: [u8; 32] = pattern(0xe0);
/// 2026-01-01T00:00:00Z.
const NEW_YEAR_2026: i64 = 1_767_225_600;

// ----- expected values -----

fn golden_master() -> MasterKey {
    MasterKey::from_parts(DATA_SECRET, WRITER_SECRET)
}

fn slot_info() -> KeySlotInfo {
    KeySlotInfo {
        created: NEW_YEAR_2026,
        host: "golden-host".into(),
        username: "golden-user".into(),
        label: "golden slot".into(),
    }
}

fn golden_config() -> Config {
    Config {
        header: ConfigHeader {
            repository_id: REPOSITORY_ID,
            features: FeatureFlags::default(),
            kdf: KdfParams::insecure_for_tests(),
        },
        params: RepositoryParams {
            chunker: ChunkerParams {
                min_size: 64 * 1024,
                avg_size: 256 * 1024,
                max_size: 1024 * 1024,
            },
            pack_size: 4 << 20,
            volume_chunk_size: 64 * 1024,
            compression_level: 5,
            lock: None,
        },
    }
}

/// The golden config with an Object Lock policy (compliance, 30 days): body version 2.
fn golden_locked_config() -> Config {
    let mut config = golden_config();
    config.params.lock = Some(LockPolicy {
        mode: LockMode::Compliance,
        period: std::time::Duration::from_secs(30 * 86400),
    });
    config.header.features = FeatureFlags::for_params(&config.params);
    config
}

/// Writes `tests/golden/config-locked`, the sealed [`golden_locked_config`]. Like the
/// repository, it may be regenerated only with a format version bump.
#[test]
#[ignore = "writes the golden locked config; run only with a format change"]
fn regenerate_locked_config() {
    let bytes = golden_locked_config().encode(golden_master().writer());
    fs::write(golden_dir().join("config-locked"), bytes).expect("write config-locked");
}

#[test]
fn locked_config_decodes_with_body_version_2_and_the_lock_flags() {
    let bytes = read_golden("config-locked");
    let (header, body_offset) = Config::decode_header(&bytes).expect("header");
    assert_eq!(body_offset, 77);
    assert_eq!(bytes.len(), 77 + 24 + 38 + 16);
    assert_eq!(
        (
            header.features.read,
            header.features.write,
            header.features.prune
        ),
        (0, 1, 1)
    );
    let config = Config::decode(&bytes, golden_master().writer()).expect("decodes");
    assert_eq!(config, golden_locked_config());
    let lock = config.params.lock.expect("a lock policy");
    assert_eq!(
        (lock.mode, lock.period.as_secs()),
        (LockMode::Compliance, 2_592_000)
    );
    for operation in [Operation::Read, Operation::Write, Operation::Prune] {
        config
            .check_features(operation)
            .expect("the lock flag is known");
    }
}

/// 4 KiB of text that zstd shrinks well.
fn compressible() -> Vec<u8> {
    b"bunker golden vector: this line repeats, so zstd shrinks it.\n"
        .iter()
        .copied()
        .cycle()
        .take(4096)
        .collect()
}

/// 3000 bytes of BLAKE3 output, which zstd cannot shrink.
fn incompressible() -> Vec<u8> {
    let mut out = vec![0u8; 3000];
    blake3::Hasher::new()
        .update(b"bunker golden incompressible")
        .finalize_xof()
        .fill(&mut out);
    out
}

fn blob_id(master: &MasterKey, plaintext: &[u8]) -> BlobId {
    BlobId::from_bytes(master.writer().blob_id_bytes(plaintext))
}

fn empty_tree() -> Tree {
    Tree::new(Vec::new()).expect("empty tree")
}

const HOLE: u64 = (1 << 20) + 3;

/// The root directory: every kind of entry, with odd metadata.
fn root_tree(master: &MasterKey) -> Tree {
    let compressible = compressible();
    let incompressible = incompressible();
    let meta = |mode: u32| Metadata {
        mode,
        uid: 1000,
        gid: 1000,
        user: b"alice".to_vec(),
        group: b"staff".to_vec(),
        mtime: Timestamp {
            sec: NEW_YEAR_2026,
            nsec: 123_456_789,
        },
        atime: Timestamp {
            sec: -1,
            nsec: 999_999_999,
        },
        ctime: Timestamp {
            sec: NEW_YEAR_2026 + 1,
            nsec: 0,
        },
        device: 0x0803,
        inode: 42,
        nlinks: 1,
        xattrs: Vec::new(),
        flags: 0,
    };
    let file = Node::File {
        extents: vec![
            Extent::Chunk {
                id: blob_id(master, &compressible),
                length: compressible.len() as u32,
            },
            Extent::Hole { length: HOLE },
            Extent::Chunk {
                id: blob_id(master, &incompressible),
                length: incompressible.len() as u32,
            },
        ],
    };
    let hard_linked = Metadata {
        uid: u32::MAX - 1,
        gid: 0,
        user: Vec::new(),
        group: b"gr\xfcppe".to_vec(),
        nlinks: 2,
        xattrs: vec![
            (
                b"security.capability".to_vec(),
                vec![1, 0, 0, 2, 0x20, 0, 0, 0],
            ),
            (b"user.comment".to_vec(), b"golden \xff".to_vec()),
            (b"user.empty".to_vec(), Vec::new()),
        ],
        flags: EntryFlags::CHANGED_DURING_BACKUP,
        ..meta(0o4755)
    };
    let entries = vec![
        // Given out of order on purpose: `Tree::new` sorts by raw bytes.
        Entry {
            name: b"sub".to_vec(),
            meta: meta(0o1777),
            node: Node::Dir {
                subtree: blob_id(master, &empty_tree().encode()),
            },
        },
        Entry {
            name: b"caf\xe9".to_vec(),
            meta: hard_linked.clone(),
            node: file.clone(),
        },
        Entry {
            name: b"caf\xe9.hardlink".to_vec(),
            meta: hard_linked,
            node: file,
        },
        Entry {
            name: b"dev-null".to_vec(),
            meta: meta(0o666),
            node: Node::CharDevice { rdev: 0x0103 },
        },
        Entry {
            name: b"disk".to_vec(),
            meta: meta(0o660),
            node: Node::BlockDevice { rdev: 0x0800 },
        },
        Entry {
            name: b"empty".to_vec(),
            meta: meta(0o644),
            node: Node::File {
                extents: Vec::new(),
            },
        },
        Entry {
            name: b"fifo".to_vec(),
            meta: meta(0o600),
            node: Node::Fifo,
        },
        Entry {
            name: b"link".to_vec(),
            meta: meta(0o777),
            node: Node::Symlink {
                target: b"../caf\xe9".to_vec(),
            },
        },
        Entry {
            name: b"sock".to_vec(),
            meta: Metadata {
                flags: EntryFlags::INCOMPLETE,
                ..meta(0o755)
            },
            node: Node::Socket,
        },
        Entry {
            name: b"Zebra".to_vec(),
            meta: meta(0),
            node: Node::Fifo,
        },
    ];
    Tree::new(entries).expect("valid tree")
}

fn golden_snapshot(tree: BlobId) -> Snapshot {
    Snapshot {
        time: Timestamp {
            sec: NEW_YEAR_2026,
            nsec: 500,
        },
        host: "golden-host".into(),
        username: "golden-user".into(),
        paths: vec![b"/srv/golden".to_vec(), b"/home/caf\xe9".to_vec()],
        tags: vec![
            ("service".into(), "golden".into()),
            ("env".into(), "test".into()),
            ("commit".into(), "0123abc".into()),
        ],
        parent: Some(SnapshotId::from_bytes(PARENT)),
        tree,
        source_kind: SourceKind::Files,
        consistency: ConsistencyLevel::Crash,
        consistency_detail: "fsfreeze /srv/golden".into(),
        excludes: vec!["*.tmp".into(), "/srv/golden/cache".into()],
        // Distinct values, so any reordering of the fields is caught; one above 2^32.
        summary: Summary {
            files: 1,
            dirs: 2,
            others: 3,
            bytes: 5_000_000_004,
            files_new: 5,
            files_changed: 6,
            files_unchanged: 7,
            bytes_read: 8,
            bytes_added: 9,
            bytes_stored: 10,
            data_blobs_added: 11,
            tree_blobs_added: 12,
            duration_ms: 13,
            errors: 14,
        },
        errors: vec!["/srv/golden/locked: permission denied".into()],
        program_version: "bunker 0.1.0 golden".into(),
    }
}

// ----- reading the files -----

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn repo_dir() -> PathBuf {
    golden_dir().join("repo")
}

fn read(name: &str) -> Vec<u8> {
    let path = repo_dir().join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn read_golden(name: &str) -> Vec<u8> {
    let path = golden_dir().join(name);
    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Names of every file under `tests/golden/repo`, `/`-separated.
fn list_objects() -> BTreeSet<String> {
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in fs::read_dir(dir).expect("read golden dir") {
            let entry = entry.expect("dir entry");
            let name = format!(
                "{prefix}{}",
                entry.file_name().to_str().expect("UTF-8 name")
            );
            if entry.file_type().expect("file type").is_dir() {
                walk(&entry.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&repo_dir(), "", &mut out);
    out
}

/// The one golden object under `prefix`.
fn the_object(prefix: &str) -> String {
    let names: Vec<&&str> = GOLDEN_OBJECTS
        .iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert_eq!(names.len(), 1, "one object under {prefix}");
    (*names[0]).to_owned()
}

fn id_of(name: &str) -> [u8; 32] {
    let hex = name.rsplit('/').next().expect("name");
    let mut id = [0u8; 32];
    hex::decode_to_slice(hex, &mut id).expect("hex name");
    id
}

fn data_pack_name() -> String {
    the_object("data/")
}

fn tree_pack_name() -> String {
    the_object("tree/")
}

fn parse(name: &str, master: &MasterKey) -> PackTrailer {
    parse_pack(&read(name), master, name).expect("golden pack parses")
}

// ----- the tests -----

#[test]
fn objects_are_named_by_their_content_and_carry_version_1_headers() {
    let expected: BTreeSet<String> = GOLDEN_OBJECTS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        list_objects(),
        expected,
        "tests/golden/repo holds exactly GOLDEN_OBJECTS"
    );
    for name in GOLDEN_OBJECTS {
        let bytes = read(name);
        let (kind, header) = match name.split('/').next() {
            Some("config") => (ObjectKind::Config, b"BNKRC\x01\0\0"),
            Some("keys") => (ObjectKind::KeySlot, b"BNKRK\x01\0\0"),
            Some("data") => (ObjectKind::DataPack, b"BNKRD\x01\0\0"),
            Some("tree") => (ObjectKind::TreePack, b"BNKRT\x01\0\0"),
            Some("index") => (ObjectKind::Index, b"BNKRI\x01\0\0"),
            Some("snapshots") => (ObjectKind::Snapshot, b"BNKRS\x01\0\0"),
            other => panic!("unexpected object {other:?}"),
        };
        assert_eq!(&bytes[..8], header, "{name}");
        assert_eq!(kind.header(), *header);
        if kind != ObjectKind::Config {
            let hash = content_hash(&bytes);
            assert_eq!(hash, id_of(name), "{name} is named by BLAKE3 of its bytes");
            assert_eq!(kind.name(&hex::encode(hash)), *name);
        }
    }
    assert!(
        data_pack_name()[5..7] == data_pack_name()[8..10],
        "packs fan out by 2 hex digits"
    );
}

#[test]
fn key_slot_opens_with_the_golden_password() {
    let name = the_object("keys/");
    let bytes = read(&name);
    let slot = KeySlot::decode(&bytes, &name).expect("slot decodes");
    assert_eq!(slot.id.as_bytes(), &id_of(&name));
    assert_eq!(slot.kdf, KdfParams::insecure_for_tests());
    assert_eq!(
        slot.kdf,
        KdfParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1
        }
    );
    assert_eq!(slot.info, slot_info());
    let (master, repository_id) = slot
        .open(PASSWORD)
        .expect("KDF runs")
        .expect("golden password opens the slot");
    assert_eq!(repository_id, REPOSITORY_ID);
    assert_eq!(master.data_secret(), &DATA_SECRET);
    assert_eq!(master.writer().writer_secret(), &WRITER_SECRET);
    assert!(slot.open(b"golden-passwort").expect("KDF runs").is_none());
}

#[test]
fn config_decodes_under_the_master_key_of_the_slot() {
    let name = the_object("keys/");
    let slot = KeySlot::decode(&read(&name), &name).expect("slot decodes");
    let (master, _) = slot.open(PASSWORD).expect("KDF").expect("opens");
    let bytes = read("config");
    let (header, body_offset) =
        Config::decode_header(&bytes).expect("header decodes without a key");
    assert_eq!(body_offset, 77);
    assert_eq!(bytes.len(), 77 + 24 + 29 + 16);
    assert_eq!(header, golden_config().header);
    let config = Config::decode(&bytes, master.writer()).expect("config decodes");
    assert_eq!(config, golden_config());
    assert_eq!(config.params.chunker.min_size, 65_536);
    assert_eq!(config.params.chunker.avg_size, 262_144);
    assert_eq!(config.params.chunker.max_size, 1_048_576);
    assert_eq!(config.params.pack_size, 4_194_304);
    assert_eq!(config.params.volume_chunk_size, 65_536);
    assert_eq!(config.params.compression_level, 5);
    for operation in [Operation::Read, Operation::Write, Operation::Prune] {
        config
            .check_features(operation)
            .expect("no unknown feature flags");
    }
    let other = MasterKey::from_parts(DATA_SECRET, pattern(0x21));
    assert!(Config::decode(&bytes, other.writer()).is_err());
}

#[test]
fn tree_plaintext_decodes_and_re_encodes_to_the_same_bytes() {
    let master = golden_master();
    let bytes = fs::read(golden_dir().join("tree.bin")).expect("tree.bin");
    let tree = Tree::decode(&bytes).expect("tree decodes");
    assert_eq!(tree, root_tree(&master));
    assert_eq!(tree.encode(), bytes);
    let names: Vec<&[u8]> = tree.entries().iter().map(|e| e.name.as_slice()).collect();
    let expected: [&[u8]; 10] = [
        b"Zebra",
        b"caf\xe9",
        b"caf\xe9.hardlink",
        b"dev-null",
        b"disk",
        b"empty",
        b"fifo",
        b"link",
        b"sock",
        b"sub",
    ];
    assert_eq!(names, expected, "sorted by raw bytes");
    let kinds: Vec<&str> = tree.entries().iter().map(|e| e.node.kind_name()).collect();
    assert_eq!(
        kinds,
        [
            "fifo", "file", "file", "chardev", "blockdev", "file", "fifo", "symlink", "socket",
            "dir"
        ]
    );
    let cafe = tree.get(b"caf\xe9").expect("non-UTF-8 name");
    assert_eq!(cafe.size(), 4096 + HOLE + 3000);
    assert_eq!(cafe.meta.mode, 0o4755);
    assert_eq!(cafe.meta.xattrs.len(), 3);
    assert_eq!(
        cafe.meta.atime,
        Timestamp {
            sec: -1,
            nsec: 999_999_999
        }
    );
    assert_eq!(tree.get(b"link").expect("symlink").size(), 7);
    // Version byte, then the entry count.
    assert_eq!(&bytes[..5], &[1, 10, 0, 0, 0]);
    assert_eq!(empty_tree().encode(), [1, 0, 0, 0, 0]);
}

#[test]
fn data_pack_trailer_and_blobs_decode() {
    let master = golden_master();
    let name = data_pack_name();
    let bytes = read(&name);
    let trailer = parse(&name, &master);
    assert_eq!(trailer.kind, ObjectKind::DataPack);
    let key = master
        .session_key(&trailer.session_public, &name)
        .expect("session key");
    let plaintexts = [compressible(), incompressible()];
    assert_eq!(trailer.entries.len(), 2);
    let mut offset = 40;
    for (entry, plaintext) in trailer.entries.iter().zip(&plaintexts) {
        assert_eq!(entry.kind, BlobKind::Data);
        assert_eq!(entry.offset, offset, "blobs follow the header back to back");
        assert_eq!(entry.raw_length as usize, plaintext.len());
        let sealed = &bytes[entry.offset as usize..][..entry.length as usize];
        let opened = open_blob(&key, entry.kind, &entry.id, sealed, entry.raw_length, &name)
            .expect("blob opens");
        assert_eq!(&opened, plaintext);
        assert_eq!(master.writer().blob_id_bytes(&opened), *entry.id.as_bytes());
        offset += u64::from(entry.length);
    }
    // The compressible blob is stored as zstd, the other raw (1 compression byte + 40).
    assert!(trailer.entries[0].length < 1000);
    assert_eq!(trailer.entries[1].length, 1 + 3000 + 40);
    let trailer_length = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().expect("4 bytes"));
    assert_eq!(offset + u64::from(trailer_length) + 4, bytes.len() as u64);
    assert_eq!(trailer_length as usize, 1 + 4 + 2 * 49 + 40);
}

#[test]
fn tree_pack_holds_the_root_tree_and_the_empty_subtree() {
    let master = golden_master();
    let name = tree_pack_name();
    let bytes = read(&name);
    let trailer = parse(&name, &master);
    assert_eq!(trailer.kind, ObjectKind::TreePack);
    let key = master
        .session_key(&trailer.session_public, &name)
        .expect("key");
    let root = fs::read(golden_dir().join("tree.bin")).expect("tree.bin");
    let expected = [empty_tree().encode(), root];
    assert_eq!(trailer.entries.len(), 2);
    for (entry, plaintext) in trailer.entries.iter().zip(&expected) {
        assert_eq!(entry.kind, BlobKind::Tree);
        let sealed = &bytes[entry.offset as usize..][..entry.length as usize];
        let opened = open_blob(
            &key,
            BlobKind::Tree,
            &entry.id,
            sealed,
            entry.raw_length,
            &name,
        )
        .expect("opens");
        assert_eq!(&opened, plaintext);
        assert_eq!(master.writer().blob_id_bytes(&opened), *entry.id.as_bytes());
        // The same bytes do not open as a data blob: the kind is authenticated.
        assert!(
            open_blob(
                &key,
                BlobKind::Data,
                &entry.id,
                sealed,
                entry.raw_length,
                &name
            )
            .is_err()
        );
    }
}

#[test]
fn index_segment_lists_both_packs() {
    let master = golden_master();
    let name = the_object("index/");
    let bytes = read(&name);
    let data = parse(&data_pack_name(), &master);
    let tree = parse(&tree_pack_name(), &master);
    let expected = IndexSegment {
        packs: vec![
            IndexedPack {
                id: PackId::from_bytes(id_of(&data_pack_name())),
                kind: BlobKind::Data,
                blobs: data.entries.clone(),
            },
            IndexedPack {
                id: PackId::from_bytes(id_of(&tree_pack_name())),
                kind: BlobKind::Tree,
                blobs: tree.entries.clone(),
            },
        ],
    };
    assert_eq!(
        decode_segment(&bytes, &master, &name).expect("segment decodes"),
        expected
    );
    // A writer reads the id section only.
    let view = decode_segment_ids(&bytes, master.writer(), &name).expect("ids decode");
    let ids = |entries: &[PackEntry]| entries.iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        view.packs,
        vec![
            (expected.packs[0].id, BlobKind::Data, ids(&data.entries)),
            (expected.packs[1].id, BlobKind::Tree, ids(&tree.entries)),
        ]
    );
    // One session wrote the packs, the index and the snapshot.
    assert_eq!(&bytes[8..40], &data.session_public);
    assert_eq!(data.session_public, tree.session_public);
}

#[test]
fn snapshot_decodes() {
    let master = golden_master();
    let name = the_object("snapshots/");
    let bytes = read(&name);
    let snapshot = Snapshot::open(&bytes, &master, &name).expect("snapshot opens");
    let root_id = blob_id(&master, &root_tree(&master).encode());
    assert_eq!(snapshot, golden_snapshot(root_id));
    assert_eq!(snapshot.tag("commit"), Some("0123abc"));
    assert_eq!(snapshot.parent, Some(SnapshotId::from_bytes(PARENT)));
    let data = parse(&data_pack_name(), &master);
    assert_eq!(&bytes[8..40], &data.session_public);
}

#[test]
fn golden_repository_opens_and_reads_end_to_end() {
    let backend: Arc<dyn Backend> =
        Arc::new(LocalBackend::open(repo_dir()).expect("local backend"));
    let repo = Repository::open(backend, PASSWORD).expect("repository opens");
    assert_eq!(repo.config(), &golden_config());
    assert_eq!(
        repo.current_key_slot().unwrap().as_bytes(),
        &id_of(&the_object("keys/"))
    );
    for operation in [Operation::Read, Operation::Write, Operation::Prune] {
        repo.check_features(operation).expect("features known");
    }
    let loaded = repo.load_index().expect("index loads");
    assert!(loaded.damaged.is_empty(), "{:?}", loaded.damaged);
    assert_eq!(loaded.index.len(), 4);
    let snapshots = repo.load_snapshots().expect("snapshots load");
    assert_eq!(snapshots.len(), 1);
    let (id, snapshot) = &snapshots[0];
    assert_eq!(id.as_bytes(), &id_of(&the_object("snapshots/")));
    let root = repo
        .load_tree(&loaded.index, &snapshot.tree)
        .expect("root tree");
    assert_eq!(root, root_tree(repo.master_key("test").unwrap()));
    let Node::Dir { subtree } = &root.get(b"sub").expect("sub").node else {
        panic!("sub is a directory");
    };
    assert_eq!(
        repo.load_tree(&loaded.index, subtree).expect("subtree"),
        empty_tree()
    );
    let Node::File { extents } = &root.get(b"caf\xe9").expect("file").node else {
        panic!("a file");
    };
    let mut content = Vec::new();
    for extent in extents {
        match *extent {
            Extent::Chunk { id, length } => {
                let chunk = repo.read_blob(&loaded.index, &id).expect("chunk reads");
                assert_eq!(chunk.len(), length as usize);
                content.extend_from_slice(&chunk);
            }
            Extent::Hole { length } => content.resize(content.len() + length as usize, 0),
        }
    }
    let mut expected = compressible();
    expected.resize(expected.len() + HOLE as usize, 0);
    expected.extend_from_slice(&incompressible());
    assert_eq!(content, expected);
}

#[test]
fn gear_table_blob_ids_and_chunker_constants_are_pinned() {
    // The gear table of the all-zero seed (the seed is secret in a real repository).
    let gear = gear_table(&[0u8; 32]);
    assert_eq!(
        gear[..4],
        [
            0x8846_2322_415a_8c33,
            0x3536_4833_bd29_e928,
            0x65a2_3509_9fed_99c4,
            0x4fc9_772d_135e_ae54,
        ]
    );
    let master = golden_master();
    assert_eq!(
        hex::encode(master.writer().data_public()),
        "8f40c5adb68f25624ae5b214ea767a6ec94d829d3d7b5e1ad1ba6f3e2138285f",
        "X25519 public key of the data secret"
    );
    assert_eq!(
        hex::encode(master.writer().blob_id_bytes(b"bunker golden vector")),
        "d6508661d8059131e7a79e0731f281cc995f63a33b1033245e2024a79cb0c366",
        "blob id of a fixed input under the golden key"
    );
    assert_eq!(
        hex::encode(master.writer().chunker_seed()),
        "5a7e33a79fb78cc4a3d3e3d354153b730315ecb59363e58ac44519af592ab8a4"
    );
    assert_eq!(
        ChunkerParams::default(),
        ChunkerParams {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024
        }
    );
    use fastcdc::v2020::{Normalization, select_masks};
    assert_eq!(
        select_masks(1 << 20, Normalization::Level1),
        (0x0000_d917_6753_7000, 0x0000_d917_0753_7000)
    );
    assert_eq!(
        select_masks(256 * 1024, Normalization::Level1),
        (0x0000_d917_0753_7000, 0x0000_d907_0353_7000)
    );
}

// ----- an independent reader that follows docs/FORMAT.md -----

/// Reads little-endian fields front to back, as FORMAT.md describes them.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1)[0]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
    fn id(&mut self) -> [u8; 32] {
        self.take(32).try_into().expect("32 bytes")
    }
    fn bytes(&mut self) -> &'a [u8] {
        let n = self.u32() as usize;
        self.take(n)
    }
}

/// Writes fields as FORMAT.md describes them.
#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.0.extend_from_slice(v);
        self
    }
    fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(v.len() as u32).raw(v)
    }
    fn time(&mut self, t: Timestamp) -> &mut Self {
        self.i64(t.sec).u32(t.nsec)
    }
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// XChaCha20-Poly1305 open of `nonce (24) || ciphertext || tag (16)`, straight from the
/// cipher crate.
fn aead_open(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Vec<u8> {
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
    let (nonce, rest) = sealed.split_at(24);
    let (ciphertext, tag) = rest.split_at(rest.len() - 16);
    let nonce: [u8; 24] = nonce.try_into().expect("nonce");
    let tag: [u8; 16] = tag.try_into().expect("tag");
    let mut plaintext = ciphertext.to_vec();
    XChaCha20Poly1305::new(&(*key).into())
        .decrypt_inout_detached(
            &XNonce::from(nonce),
            aad,
            plaintext.as_mut_slice().into(),
            &Tag::from(tag),
        )
        .expect("record authenticates with the spec's key and associated data");
    plaintext
}

fn session_key(data_secret: &[u8; 32], session_public: &[u8; 32]) -> [u8; 32] {
    use x25519_dalek::{PublicKey, StaticSecret};
    let secret = StaticSecret::from(*data_secret);
    let data_public = PublicKey::from(&secret);
    let shared = secret.diffie_hellman(&PublicKey::from(*session_public));
    assert!(shared.was_contributory());
    let material = concat(&[shared.as_bytes(), session_public, data_public.as_bytes()]);
    blake3::derive_key("bunker v1 2026 session key", &material)
}

fn spec_entries(trailer: &[u8]) -> Vec<(u8, [u8; 32], u64, u32, u32)> {
    let mut c = Cursor(trailer);
    assert_eq!(c.u8(), 1, "trailer version");
    let count = c.u32() as usize;
    let entries = (0..count)
        .map(|_| (c.u8(), c.id(), c.u64(), c.u32(), c.u32()))
        .collect();
    assert!(c.0.is_empty());
    entries
}

/// Decodes every golden object following FORMAT.md, without the crate's decoders.
#[test]
fn spec_reader() {
    // Key slot: Argon2id(password, salt) wraps data secret || writer secret || repository id.
    let slot = read(&the_object("keys/"));
    let mut c = Cursor(&slot[8..]);
    assert_eq!(c.u8(), 1, "Argon2id");
    let (m, t, p) = (c.u32(), c.u32(), c.u32());
    assert_eq!((m, t, p), (8, 1, 1));
    let salt = c.take(16);
    assert_eq!(c.i64(), NEW_YEAR_2026);
    assert_eq!(c.bytes(), b"golden-host");
    assert_eq!(c.bytes(), b"golden-user");
    assert_eq!(c.bytes(), b"golden slot");
    assert_eq!(c.0.len(), 24 + 96 + 16);
    let prefix = &slot[..slot.len() - c.0.len()];
    let mut wrapping = [0u8; 32];
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(m, t, p, Some(32)).expect("params"),
    )
    .hash_password_into(PASSWORD, salt, &mut wrapping)
    .expect("argon2");
    let secret = aead_open(&wrapping, &concat(&[b"bunker key slot", prefix]), c.0);
    assert_eq!(
        secret,
        concat(&[&DATA_SECRET, &WRITER_SECRET, &REPOSITORY_ID])
    );

    // Keys derived from the writer secret.
    let derive = |context: &str| blake3::derive_key(context, &WRITER_SECRET);
    let master = golden_master();
    let id_key = derive("bunker v1 2026 chunk id key");
    assert_eq!(
        *blake3::keyed_hash(&id_key, b"bunker golden vector").as_bytes(),
        master.writer().blob_id_bytes(b"bunker golden vector")
    );
    let seed = derive("bunker v1 2026 chunker seed");
    assert_eq!(&seed, master.writer().chunker_seed());
    let mut gear_bytes = [0u8; 2048];
    blake3::Hasher::new_keyed(&seed)
        .update(b"bunker gear table")
        .finalize_xof()
        .fill(&mut gear_bytes);
    let gear = gear_table(&seed);
    for (i, word) in gear_bytes.chunks_exact(8).enumerate() {
        assert_eq!(
            gear[i],
            u64::from_le_bytes(word.try_into().expect("8 bytes"))
        );
    }
    let data_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(DATA_SECRET));
    assert_eq!(data_public.to_bytes(), master.writer().data_public());

    // Config: plaintext header, body sealed with the config key.
    let config = read("config");
    let mut c = Cursor(&config[8..]);
    assert_eq!(c.id(), REPOSITORY_ID);
    assert_eq!((c.u64(), c.u64(), c.u64()), (0, 0, 0), "feature flags");
    assert_eq!(
        (c.u8(), c.u32(), c.u32(), c.u32()),
        (1, 8, 1, 1),
        "KDF parameters"
    );
    let header = &config[..77];
    let body = aead_open(
        &derive("bunker v1 2026 config key"),
        &concat(&[b"bunker config", header]),
        &config[77..],
    );
    let mut c = Cursor(&body);
    assert_eq!(c.u8(), 1, "body version");
    assert_eq!((c.u32(), c.u32(), c.u32()), (65_536, 262_144, 1_048_576));
    assert_eq!((c.u32(), c.u32(), c.i64()), (4 << 20, 65_536, 5));
    assert!(c.0.is_empty());

    // Packs: header, session public key, blobs, sealed trailer, trailer length.
    let mut trailers = Vec::new();
    for (name, kind_byte, plaintexts) in [
        (
            data_pack_name(),
            b'D',
            vec![compressible(), incompressible()],
        ),
        (
            tree_pack_name(),
            b'T',
            vec![empty_tree().encode(), spec_tree(&master)],
        ),
    ] {
        let pack = read(&name);
        assert_eq!(&pack[..8], &[b'B', b'N', b'K', b'R', kind_byte, 1, 0, 0]);
        let session_public: [u8; 32] = pack[8..40].try_into().expect("32 bytes");
        let key = session_key(&DATA_SECRET, &session_public);
        let length = u32::from_le_bytes(pack[pack.len() - 4..].try_into().expect("4")) as usize;
        let sealed_trailer = &pack[pack.len() - 4 - length..pack.len() - 4];
        let trailer = aead_open(
            &key,
            &concat(&[b"bunker pack trailer", &pack[..40]]),
            sealed_trailer,
        );
        let entries = spec_entries(&trailer);
        assert_eq!(entries.len(), plaintexts.len());
        for ((kind, id, offset, length, raw_length), plaintext) in entries.iter().zip(&plaintexts) {
            assert_eq!(
                *kind,
                u8::from(kind_byte == b'T'),
                "blob kind 0 data, 1 tree"
            );
            let sealed = &pack[*offset as usize..][..*length as usize];
            let record = aead_open(&key, &concat(&[b"bunker blob", &[*kind], id]), sealed);
            let decoded = match record[0] {
                0 => record[1..].to_vec(),
                1 => zstd::decode_all(&record[1..]).expect("one zstd frame"),
                other => panic!("compression byte {other}"),
            };
            assert_eq!(&decoded, plaintext);
            assert_eq!(*raw_length as usize, decoded.len());
            assert_eq!(
                blake3::keyed_hash(&id_key, &decoded).as_bytes(),
                id,
                "blob id re-hash"
            );
        }
        trailers.push((content_hash(&pack), session_public, key, entries));
    }
    let data_record_kinds: Vec<u8> = {
        let pack = read(&data_pack_name());
        let (_, _, key, entries) = &trailers[0];
        entries
            .iter()
            .map(|(kind, id, offset, length, _)| {
                let sealed = &pack[*offset as usize..][..*length as usize];
                aead_open(key, &concat(&[b"bunker blob", &[*kind], id]), sealed)[0]
            })
            .collect()
    };
    assert_eq!(
        data_record_kinds,
        [1, 0],
        "compressible blob is zstd, the other raw"
    );

    // Index segment: ids sealed with the index key, locations with the session key.
    let index = read(&the_object("index/"));
    assert_eq!(&index[..8], b"BNKRI\x01\0\0");
    let session_public: [u8; 32] = index[8..40].try_into().expect("32");
    let ids_len = u32::from_le_bytes(index[40..44].try_into().expect("4")) as usize;
    let sealed_ids = &index[44..44 + ids_len];
    let ids = aead_open(
        &derive("bunker v1 2026 index id-list key"),
        &concat(&[b"bunker index ids", &index[..40]]),
        sealed_ids,
    );
    let locations = aead_open(
        &session_key(&DATA_SECRET, &session_public),
        &concat(&[
            b"bunker index locations",
            &index[..40],
            blake3::hash(sealed_ids).as_bytes(),
        ]),
        &index[44 + ids_len..],
    );
    let mut ids = Cursor(&ids);
    let mut locations = Cursor(&locations);
    assert_eq!(ids.u8(), 1);
    assert_eq!(locations.u8(), 1);
    assert_eq!(ids.u32(), 2, "pack count");
    assert_eq!(locations.u32(), 4, "location count");
    for (pack_id, pack_public, _, entries) in &trailers {
        assert_eq!(pack_public, &session_public);
        assert_eq!(&ids.id(), pack_id);
        let kind = ids.u8();
        assert_eq!(ids.u32() as usize, entries.len());
        for (entry_kind, id, offset, length, raw_length) in entries {
            assert_eq!(kind, *entry_kind);
            assert_eq!(&ids.id(), id);
            assert_eq!(
                (locations.u64(), locations.u32(), locations.u32()),
                (*offset, *length, *raw_length)
            );
        }
    }
    assert!(ids.0.is_empty() && locations.0.is_empty());

    // Snapshot: body sealed with the session key.
    let snapshot = read(&the_object("snapshots/"));
    assert_eq!(&snapshot[..8], b"BNKRS\x01\0\0");
    let session_public: [u8; 32] = snapshot[8..40].try_into().expect("32");
    let body = aead_open(
        &session_key(&DATA_SECRET, &session_public),
        &concat(&[b"bunker snapshot", &snapshot[..40]]),
        &snapshot[40..],
    );
    let root_id = *blake3::keyed_hash(&id_key, &spec_tree(&master)).as_bytes();
    assert_eq!(body, spec_snapshot_body(&root_id));
}

/// The root tree encoded field by field as FORMAT.md lists them.
fn spec_tree(master: &MasterKey) -> Vec<u8> {
    let tree = root_tree(master);
    let mut out = Out::default();
    out.u8(1).u32(tree.entries().len() as u32);
    for entry in tree.entries() {
        let m = &entry.meta;
        let tag = match entry.node {
            Node::File { .. } => 1,
            Node::Dir { .. } => 2,
            Node::Symlink { .. } => 3,
            Node::Fifo => 4,
            Node::Socket => 5,
            Node::CharDevice { .. } => 6,
            Node::BlockDevice { .. } => 7,
        };
        out.bytes(&entry.name)
            .u8(tag)
            .u32(m.mode)
            .u32(m.uid)
            .u32(m.gid);
        out.bytes(&m.user)
            .bytes(&m.group)
            .time(m.mtime)
            .time(m.atime)
            .time(m.ctime);
        out.u64(m.device)
            .u64(m.inode)
            .u64(m.nlinks)
            .u8(m.flags)
            .u32(m.xattrs.len() as u32);
        for (name, value) in &m.xattrs {
            out.bytes(name).bytes(value);
        }
        match &entry.node {
            Node::File { extents } => {
                out.u32(extents.len() as u32);
                for extent in extents {
                    match *extent {
                        Extent::Chunk { id, length } => out.u8(0).raw(id.as_bytes()).u32(length),
                        Extent::Hole { length } => out.u8(1).u64(length),
                    };
                }
            }
            Node::Dir { subtree } => {
                out.raw(subtree.as_bytes());
            }
            Node::Symlink { target } => {
                out.bytes(target);
            }
            Node::Fifo | Node::Socket => {}
            Node::CharDevice { rdev } | Node::BlockDevice { rdev } => {
                out.u64(*rdev);
            }
        }
    }
    let bytes = out.0;
    assert_eq!(
        bytes,
        fs::read(golden_dir().join("tree.bin")).expect("tree.bin")
    );
    bytes
}

/// The snapshot body encoded field by field as FORMAT.md lists them.
fn spec_snapshot_body(root: &[u8; 32]) -> Vec<u8> {
    let mut out = Out::default();
    out.u8(1).i64(NEW_YEAR_2026).u32(500);
    out.bytes(b"golden-host").bytes(b"golden-user");
    out.u32(2).bytes(b"/srv/golden").bytes(b"/home/caf\xe9");
    out.u32(3);
    for (key, value) in [
        ("service", "golden"),
        ("env", "test"),
        ("commit", "0123abc"),
    ] {
        out.bytes(key.as_bytes()).bytes(value.as_bytes());
    }
    out.u8(1).raw(&PARENT).raw(root);
    out.u8(0).u8(1).bytes(b"fsfreeze /srv/golden");
    out.u32(2).bytes(b"*.tmp").bytes(b"/srv/golden/cache");
    for value in [1, 2, 3, 5_000_000_004, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14] {
        out.u64(value);
    }
    out.u32(1).bytes(b"/srv/golden/locked: permission denied");
    out.bytes(b"bunker 0.1.0 golden");
    out.0
}

// ----- generating the files (only with a format version bump) -----

/// Writes `tests/golden/`. Run only together with a format version bump; see the module
/// documentation.
#[test]
#[ignore = "rewrites tests/golden: only allowed together with a format version bump"]
fn regenerate() {
    let master = golden_master();
    let config = golden_config();
    let mut objects: Vec<(String, Vec<u8>)> = Vec::new();

    let (slot_id, slot) = KeySlot::seal(
        &master,
        &REPOSITORY_ID,
        PASSWORD,
        KdfParams::insecure_for_tests(),
        &slot_info(),
    )
    .expect("slot seals");
    objects.push((ObjectKind::KeySlot.name(&slot_id.to_hex()), slot));
    objects.push(("config".to_owned(), config.encode(master.writer())));

    // One writer session, in commit order: packs, index segment, snapshot.
    let session = master.writer().new_session();
    let level = config.params.compression_level;
    let mut packs = Vec::new();
    for (kind, plaintexts) in [
        (BlobKind::Data, vec![compressible(), incompressible()]),
        (
            BlobKind::Tree,
            vec![empty_tree().encode(), root_tree(&master).encode()],
        ),
    ] {
        let mut writer = PackWriter::new(kind, session.clone());
        for plaintext in &plaintexts {
            let id = blob_id(&master, plaintext);
            let sealed = seal_blob(session.key(), kind, &id, plaintext, level);
            writer
                .add(id, &sealed, plaintext.len() as u32)
                .expect("add to a pack in memory");
        }
        let pack = writer.finish().expect("finish a pack in memory");
        let bytes = pack.bytes().expect("built in memory").to_vec();
        objects.push((pack.name(), bytes));
        packs.push(IndexedPack {
            id: pack.id,
            kind,
            blobs: pack.entries,
        });
    }
    let index = encode_segment(&IndexSegment { packs }, master.writer(), &session);
    objects.push((
        ObjectKind::Index.name(&hex::encode(content_hash(&index))),
        index,
    ));
    let root = root_tree(&master).encode();
    let (snapshot_id, snapshot) = golden_snapshot(blob_id(&master, &root)).seal(&session);
    objects.push((ObjectKind::Snapshot.name(&snapshot_id.to_hex()), snapshot));

    let repo = repo_dir();
    if repo.exists() {
        fs::remove_dir_all(&repo).expect("remove the old golden repository");
    }
    for (name, bytes) in &objects {
        let path = repo.join(name);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, bytes).expect("write object");
    }
    fs::write(golden_dir().join("tree.bin"), &root).expect("write tree.bin");

    let mut names: Vec<&String> = objects.iter().map(|(name, _)| name).collect();
    names.sort();
    println!("const GOLDEN_OBJECTS: &[&str] = &[");
    for name in names {
        println!("    {name:?},");
    }
    println!("];");
}

// ----- key files (FORMAT.md §6a) -----

/// The golden repository's key files, built from the spec with nothing but BLAKE3 and
/// X25519: `access` 1 (put-only, `data_public`) or 2 (full, `data_secret`).
fn spec_key_file(access: u8) -> Vec<u8> {
    let data_key = match access {
        1 => {
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(DATA_SECRET)).to_bytes()
        }
        _ => DATA_SECRET,
    };
    let mut out = b"BNKRF\x01\x00\x00".to_vec();
    out.push(access);
    out.extend_from_slice(&REPOSITORY_ID);
    out.extend_from_slice(&data_key);
    out.extend_from_slice(&WRITER_SECRET);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

fn key_file_path(access: u8) -> PathBuf {
    golden_dir().join(if access == 1 {
        "put-only.key"
    } else {
        "full.key"
    })
}

/// Writes the two golden key files (encoding vectors: no randomness is involved).
#[test]
#[ignore = "writes the golden key files; only with a format version bump"]
fn regenerate_key_files() {
    for access in [1, 2] {
        fs::write(key_file_path(access), spec_key_file(access)).expect("write key file");
    }
}

#[test]
fn golden_key_files_match_the_spec_and_open_the_golden_repository() {
    use bunker_repo_format::Error;
    use bunker_repo_format::crypto::AccessKey;
    use bunker_repo_format::keyfile::KeyFile;
    for access in [1u8, 2] {
        let path = key_file_path(access);
        let stored = fs::read(&path).expect("golden key file");
        assert_eq!(stored, spec_key_file(access), "{}", path.display());
        let key_file = KeyFile::read(&path).expect("decodes");
        assert_eq!(key_file.encode(), stored);
        assert_eq!(key_file.repository_id, REPOSITORY_ID);
        let backend: Arc<dyn Backend> =
            Arc::new(LocalBackend::open(repo_dir()).expect("local backend"));
        let repo = Repository::open_with_key_file(backend, &key_file, "golden").expect("opens");
        assert_eq!(repo.config(), &golden_config());
        assert_eq!(repo.current_key_slot(), None);
        let mut blob_ids = Vec::new();
        let loaded = repo
            .load_index_visiting(|segment| {
                for pack in &segment.packs {
                    blob_ids.extend(pack.blobs.iter().map(|entry| entry.id));
                }
            })
            .expect("index loads");
        assert_eq!(loaded.index.len(), 4);
        assert_eq!(blob_ids.len(), 4);
        let snapshot = id_of(&the_object("snapshots/"));
        let snapshot = SnapshotId::from_bytes(snapshot);
        match &key_file.key {
            AccessKey::PutOnly(_) => {
                assert!(matches!(
                    repo.load_snapshot(&snapshot),
                    Err(Error::KeyLacksReadAccess { .. })
                ));
                for id in &blob_ids {
                    assert!(matches!(
                        repo.read_blob(&loaded.index, id),
                        Err(Error::KeyLacksReadAccess { .. })
                    ));
                }
            }
            AccessKey::Full(_) => {
                let read = repo.load_snapshot(&snapshot).expect("snapshot opens");
                assert_eq!(read.tree, golden_snapshot(read.tree).tree);
                assert_eq!(
                    repo.load_tree(&loaded.index, &read.tree).expect("tree"),
                    root_tree(&golden_master())
                );
            }
        }
    }
}

/// The golden audit record (FORMAT.md §13a).
fn golden_audit_record() -> bunker_repo_format::audit::AuditRecord {
    bunker_repo_format::audit::AuditRecord {
        time: Timestamp {
            sec: 1_704_067_200,
            nsec: 7,
        },
        host: "golden".into(),
        user: "ops".into(),
        operation: "verify".into(),
        target: "/tmp/drill".into(),
        outcome: "passed".into(),
        duration_ms: 1500,
        snapshot: Some(SnapshotId::from_bytes(PARENT)),
        details: vec![("restore_ms".into(), "900".into())],
    }
}

#[test]
fn audit_record_body_encodes_as_the_spec_says() {
    // FORMAT.md §13a, field by field: u8 version, time (i64 seconds, u32 nanoseconds), str
    // host, user, operation, target, outcome (u32 length + UTF-8), u64 duration, u8 flag +
    // 32-byte snapshot id, count + (str, str) details. Little-endian throughout.
    let mut expected = vec![1u8];
    expected.extend(1_704_067_200i64.to_le_bytes());
    expected.extend(7u32.to_le_bytes());
    for text in ["golden", "ops", "verify", "/tmp/drill", "passed"] {
        expected.extend((text.len() as u32).to_le_bytes());
        expected.extend(text.as_bytes());
    }
    expected.extend(1500u64.to_le_bytes());
    expected.push(1);
    expected.extend(PARENT);
    expected.extend(1u32.to_le_bytes());
    for text in ["restore_ms", "900"] {
        expected.extend((text.len() as u32).to_le_bytes());
        expected.extend(text.as_bytes());
    }
    assert_eq!(golden_audit_record().encode_body(), expected);
}

/// Writes `tests/golden/audit-record`, the sealed [`golden_audit_record`]. Regenerate only
/// with a format version bump.
#[test]
#[ignore = "writes the golden audit record; run only with a format change"]
fn regenerate_audit_record() {
    let session = golden_master().writer().new_session();
    let (_, bytes) = golden_audit_record().seal(&session);
    fs::write(golden_dir().join("audit-record"), bytes).expect("write audit-record");
}

#[test]
fn audit_record_decodes_and_is_named_by_its_content() {
    let bytes = read_golden("audit-record");
    assert_eq!(&bytes[..8], b"BNKRA\x01\0\0");
    let master = golden_master();
    let record = bunker_repo_format::audit::AuditRecord::open(&bytes, &master, "audit-record")
        .expect("the golden audit record opens");
    assert_eq!(record, golden_audit_record());
    // Sealed under a writer session: the master key of another repository cannot open it.
    assert!(
        bunker_repo_format::audit::AuditRecord::open(&bytes, &MasterKey::generate(), "x").is_err()
    );
    let mut flipped = bytes.clone();
    flipped[60] ^= 1;
    assert!(bunker_repo_format::audit::AuditRecord::open(&flipped, &master, "x").is_err());
}

/// Golden `file`, an object laid out as `header ‖ Seal(key, context ‖ header, body)` (forget
/// markers, heartbeats, GC plans), and its body opened with the cipher alone, after checking
/// its 8-byte header is `header`.
fn open_after_header(
    file: &str,
    header: &[u8; 8],
    key: &[u8; 32],
    context: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let bytes = read_golden(file);
    assert_eq!(&bytes[..8], header);
    let body = aead_open(key, &concat(&[context, &bytes[..8]]), &bytes[8..]);
    (bytes, body)
}

/// The golden forget marker (FORMAT.md §13b).
fn golden_forget_marker() -> bunker_repo_format::forget_marker::ForgetMarker {
    bunker_repo_format::forget_marker::ForgetMarker {
        time: Timestamp {
            sec: 1_704_067_200,
            nsec: 11,
        },
        snapshot: SnapshotId::from_bytes(PARENT),
    }
}

/// Writes `tests/golden/forget-marker`, the sealed [`golden_forget_marker`]. Regenerate only
/// with a format version bump.
#[test]
#[ignore = "writes the golden forget marker; run only with a format change"]
fn regenerate_forget_marker() {
    let (name, bytes) = golden_forget_marker().seal(&golden_master());
    fs::write(golden_dir().join("forget-marker"), bytes).expect("write forget-marker");
    println!("forget-marker is {name}");
}

#[test]
fn forget_marker_opens_with_the_spec_key_derivation_alone() {
    // FORMAT.md §13b: header (kind F) ‖ Seal(forget key, "bunker forget marker" ‖ header,
    // body); forget key = derive_key("bunker v1 2026 forget marker key", data secret);
    // body = u8 version 1, time (i64 seconds, u32 nanoseconds), 32-byte snapshot id.
    let key = blake3::derive_key("bunker v1 2026 forget marker key", &DATA_SECRET);
    let (bytes, body) = open_after_header(
        "forget-marker",
        b"BNKRF\x01\0\0",
        &key,
        b"bunker forget marker",
    );
    let mut expected = vec![1u8];
    expected.extend(1_704_067_200i64.to_le_bytes());
    expected.extend(11u32.to_le_bytes());
    expected.extend(PARENT);
    assert_eq!(body, expected);
    assert_eq!(golden_forget_marker().encode_body(), expected);

    use bunker_repo_format::forget_marker::ForgetMarker;
    let master = golden_master();
    assert_eq!(
        ForgetMarker::open(&bytes, &master, "forget-marker").expect("opens"),
        golden_forget_marker()
    );
    // Only the data secret opens it: a repository sharing the writer secret (`copy`) cannot.
    let sharing = MasterKey::generate_sharing_writer(master.writer());
    assert!(ForgetMarker::open(&bytes, &sharing, "x").is_err());
}

/// The golden heartbeat (FORMAT.md §14a): the last beat of a backup session.
fn golden_heartbeat() -> bunker_repo_format::session::Heartbeat {
    bunker_repo_format::session::Heartbeat {
        session: std::array::from_fn(|i| 0x60 + i as u8),
        sequence: 3,
        client_time: Timestamp {
            sec: 1_704_067_200,
            nsec: 13,
        },
        host: "golden".into(),
        purpose: "backup".into(),
        ended: true,
    }
}

/// The golden GC plan (FORMAT.md §14a): one condemned data pack and one tree pack.
fn golden_gc_plan() -> bunker_repo_format::gc_plan::GcPlan {
    bunker_repo_format::gc_plan::GcPlan {
        client_time: Timestamp {
            sec: 1_704_067_200,
            nsec: 17,
        },
        packs: vec![
            (PackId::from_bytes(pattern(0x80)), BlobKind::Data),
            (PackId::from_bytes(pattern(0xa0)), BlobKind::Tree),
        ],
    }
}

/// Writes `tests/golden/heartbeat` and `tests/golden/gc-plan`, the sealed
/// [`golden_heartbeat`] and [`golden_gc_plan`]. Regenerate only with a format version bump.
#[test]
#[ignore = "writes the golden heartbeat and GC plan; run only with a format change"]
fn regenerate_heartbeat_and_gc_plan() {
    let master = golden_master();
    let (name, bytes) = golden_heartbeat().encode(master.writer());
    fs::write(golden_dir().join("heartbeat"), bytes).expect("write heartbeat");
    println!("heartbeat is {name}");
    let (name, bytes) = golden_gc_plan().encode(master.writer());
    fs::write(golden_dir().join("gc-plan"), bytes).expect("write gc-plan");
    println!("gc-plan is {name}");
}

#[test]
fn heartbeat_opens_with_the_spec_key_derivation_alone() {
    // FORMAT.md §14a: header (kind H) ‖ Seal(index key, "bunker heartbeat" ‖ header, body);
    // index key = derive_key("bunker v1 2026 index id-list key", writer secret); body = u8
    // version 1, 16-byte session id, u32 sequence, time, str host, str purpose, u8 ended.
    let key = blake3::derive_key("bunker v1 2026 index id-list key", &WRITER_SECRET);
    let (bytes, body) = open_after_header("heartbeat", b"BNKRH\x01\0\0", &key, b"bunker heartbeat");
    let mut expected = vec![1u8];
    expected.extend((0x60..0x70).collect::<Vec<u8>>());
    expected.extend(3u32.to_le_bytes());
    expected.extend(1_704_067_200i64.to_le_bytes());
    expected.extend(13u32.to_le_bytes());
    for text in ["golden", "backup"] {
        expected.extend((text.len() as u32).to_le_bytes());
        expected.extend(text.as_bytes());
    }
    expected.push(1);
    assert_eq!(body, expected);

    use bunker_repo_format::session::Heartbeat;
    let master = golden_master();
    assert_eq!(
        Heartbeat::decode(&bytes, master.writer(), "heartbeat").expect("opens"),
        golden_heartbeat()
    );
    // Writers hold the index key: a put-only key of the repository opens it too, another
    // repository's key does not, and a flipped bit does not authenticate.
    let put_only = bunker_repo_format::crypto::WriterKey::from_parts(
        master.writer().data_public(),
        WRITER_SECRET,
    );
    assert_eq!(
        Heartbeat::decode(&bytes, &put_only, "heartbeat").expect("opens"),
        golden_heartbeat()
    );
    assert!(Heartbeat::decode(&bytes, MasterKey::generate().writer(), "x").is_err());
    let mut flipped = bytes.clone();
    flipped[20] ^= 1;
    assert!(Heartbeat::decode(&flipped, master.writer(), "x").is_err());
}

#[test]
fn gc_plan_opens_with_the_spec_key_derivation_alone() {
    // FORMAT.md §14a: header (kind G) ‖ Seal(index key, "bunker gc plan" ‖ header, body);
    // body = u8 version 1, time, count condemned packs, each 32-byte pack id ‖ u8 blob kind
    // (0 data, 1 tree).
    let key = blake3::derive_key("bunker v1 2026 index id-list key", &WRITER_SECRET);
    let (bytes, body) = open_after_header("gc-plan", b"BNKRG\x01\0\0", &key, b"bunker gc plan");
    let mut expected = vec![1u8];
    expected.extend(1_704_067_200i64.to_le_bytes());
    expected.extend(17u32.to_le_bytes());
    expected.extend(2u32.to_le_bytes());
    expected.extend(pattern(0x80));
    expected.push(0);
    expected.extend(pattern(0xa0));
    expected.push(1);
    assert_eq!(body, expected);

    use bunker_repo_format::gc_plan::GcPlan;
    let master = golden_master();
    assert_eq!(
        GcPlan::decode(&bytes, master.writer(), "gc-plan").expect("opens"),
        golden_gc_plan()
    );
    assert!(GcPlan::decode(&bytes, MasterKey::generate().writer(), "x").is_err());
}
