//! A put-only key backs up and deduplicates against the whole repository, and can open
//! nothing that reveals file contents or names: every sealed record of every object is
//! tried with every key a put-only holder can derive, and the stored bytes are searched
//! for the names and contents backed up.

use std::path::Path;
use std::sync::Arc;

use bunker_agent::Cancel;
use bunker_agent::backup::{BackupOptions, backup};
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::config::RepositoryParams;
use bunker_repo_format::crypto::SymmetricKey;
use bunker_repo_format::index::Index;
use bunker_repo_format::keyfile::KeyFile;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::object::SESSION_HEADER_LEN;
use bunker_repo_format::pack::parse_pack;
use bunker_repo_format::tree::Node;
use bunker_repo_format::{BlobId, Error, InitOptions, Repository, content_hash};

const NAME: &[u8] = b"payroll-2026-confidential.csv";
const CONTENT: &[u8] = b"alice;salary;123456;bob;salary;654321\n";

fn options(host: &str, paths: &[&Path]) -> BackupOptions {
    BackupOptions {
        paths: paths.iter().map(|p| p.to_path_buf()).collect(),
        host: host.into(),
        username: "tester".into(),
        ..BackupOptions::default()
    }
}

fn aad(label: &[u8], rest: &[&[u8]]) -> Vec<u8> {
    let mut out = label.to_vec();
    for part in rest {
        out.extend_from_slice(part);
    }
    out
}

/// Content of `file` in the snapshot `tree` (only direct children of one directory chain).
fn file_content(repo: &Repository, index: &Index, root: BlobId, path: &[&[u8]]) -> Vec<u8> {
    let mut tree = repo.load_tree(index, &root).expect("root tree");
    for (i, name) in path.iter().enumerate() {
        let entry = tree.get(name).expect("entry on the path").clone();
        match entry.node {
            Node::Dir { subtree } => tree = repo.load_tree(index, &subtree).expect("subtree"),
            Node::File { extents } => {
                assert_eq!(i, path.len() - 1);
                let mut out = Vec::new();
                for extent in extents {
                    if let bunker_repo_format::tree::Extent::Chunk { id, .. } = extent {
                        out.extend(repo.read_blob(index, &id).expect("data blob"));
                    }
                }
                return out;
            }
            _ => panic!("unexpected node"),
        }
    }
    panic!("not a file")
}

#[test]
fn put_only_key_backs_up_deduplicates_and_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    // Stored raw (compression 0), so that a missing seal would show the bytes verbatim.
    std::fs::write(
        src.join(std::str::from_utf8(NAME).unwrap()),
        CONTENT.repeat(5000),
    )
    .unwrap();
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &big).unwrap();

    let backend: Arc<dyn Backend> =
        Arc::new(LocalBackend::create(dir.path().join("repo")).unwrap());
    let init = InitOptions {
        params: RepositoryParams {
            compression_level: 0,
            ..RepositoryParams::default()
        },
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let full = Repository::init(backend.clone(), b"pw", init).unwrap();
    let cancel = Cancel::new();
    backup(&full, &options("full-host", &[&src]), &cancel).unwrap();

    // The key file holds the data public key, never the data secret.
    let key_path = dir.path().join("agent.key");
    full.key_file(true).unwrap().write_new(&key_path).unwrap();
    let key_bytes = std::fs::read(&key_path).unwrap();
    let secret = full.master_key("test").unwrap().data_secret();
    assert!(!key_bytes.windows(32).any(|w| w == secret));
    let key_file = KeyFile::read(&key_path).unwrap();
    assert!(key_file.key.is_put_only());
    let put_only = Repository::open_with_key_file(backend.clone(), &key_file, "agent.key").unwrap();
    assert!(put_only.is_put_only());

    // Backup with the put-only key: no parent (it cannot read snapshots), yet everything
    // already stored is deduplicated by id; only the new file's data is added.
    std::fs::write(src.join("new.txt"), b"fresh data only in the second backup").unwrap();
    let second = backup(&put_only, &options("agent-host", &[&src]), &cancel).unwrap();
    assert_eq!(second.snapshot.parent, None);
    assert_eq!(second.snapshot.summary.data_blobs_added, 1);
    assert!(
        second.snapshot.summary.bytes_stored < 10_000,
        "{:?}",
        second.snapshot.summary
    );

    // Through the API: every read of backed-up content is refused.
    let refused = |e: Error| assert!(matches!(e, Error::KeyLacksReadAccess { .. }), "{e}");
    for id in put_only.list_snapshot_ids().unwrap() {
        refused(put_only.load_snapshot(&id).unwrap_err());
    }
    let writer_index = put_only.load_index().unwrap().index;
    let mut blob_ids = Vec::new();
    let full_index = full
        .load_index_visiting(|segment| {
            for pack in &segment.packs {
                blob_ids.extend(pack.blobs.iter().map(|entry| entry.id));
            }
        })
        .unwrap()
        .index;
    assert_eq!(writer_index.len(), full_index.len());
    assert_eq!(blob_ids.len(), full_index.len());
    for id in &blob_ids {
        assert!(writer_index.contains(id));
        refused(put_only.read_blob(&writer_index, id).unwrap_err());
        refused(put_only.read_blob(&full_index, id).unwrap_err());
    }
    refused(put_only.key_file(false).unwrap_err());

    // Byte level: try every key a put-only holder derives on every sealed record.
    let writer = put_only.writer_key();
    let keys: [&SymmetricKey; 2] = [writer.index_key(), writer.config_key()];
    let master = full.master_key("test").unwrap();
    let mut tried = 0;
    let mut all_bytes = Vec::new();
    for prefix in [
        "config",
        "keys/",
        "data/",
        "tree/",
        "index/",
        "snapshots/",
        "sessions/",
    ] {
        for meta in backend.list(prefix).unwrap() {
            let bytes = backend.get(&meta.name).unwrap();
            all_bytes.push(bytes.clone());
            let h40 = &bytes[..SESSION_HEADER_LEN.min(bytes.len())];
            let mut records: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            if prefix == "snapshots/" {
                records.push((aad(b"bunker snapshot", &[h40]), bytes[40..].to_vec()));
            } else if prefix == "data/" || prefix == "tree/" {
                let trailer = parse_pack(&bytes, master, &meta.name).unwrap();
                let len = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap()) as usize;
                let start = bytes.len() - 4 - len;
                records.push((
                    aad(b"bunker pack trailer", &[h40]),
                    bytes[start..bytes.len() - 4].to_vec(),
                ));
                for entry in trailer.entries {
                    let sealed = &bytes[entry.offset as usize..][..entry.length as usize];
                    records.push((
                        aad(b"bunker blob", &[&[entry.kind.byte()], entry.id.as_bytes()]),
                        sealed.to_vec(),
                    ));
                }
            } else if prefix == "index/" {
                let n = u32::from_le_bytes(bytes[40..44].try_into().unwrap()) as usize;
                let ids = &bytes[44..44 + n];
                // Positive control: the id section is the writer's to read.
                assert!(
                    writer
                        .index_key()
                        .open(&aad(b"bunker index ids", &[h40]), ids)
                        .is_ok()
                );
                let hash = content_hash(ids);
                records.push((
                    aad(b"bunker index locations", &[h40, &hash]),
                    bytes[44 + n..].to_vec(),
                ));
            }
            for (record_aad, sealed) in &records {
                for key in keys {
                    assert!(
                        key.open(record_aad, sealed).is_err(),
                        "{} opened",
                        meta.name
                    );
                    tried += 1;
                }
            }
        }
    }
    assert!(tried > 20, "only {tried} attempts");
    for bytes in &all_bytes {
        for secret in [
            NAME,
            CONTENT,
            b"fresh data only".as_slice(),
            b"new.txt".as_slice(),
        ] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret),
                "plaintext stored"
            );
        }
    }

    // The full key reads what the put-only key wrote.
    let snapshot = full.load_snapshot(&second.id).unwrap();
    let index = full.load_index_for_reading().unwrap().index;
    let mut path: Vec<&[u8]> = src.iter().skip(1).map(|c| c.as_encoded_bytes()).collect();
    path.push(b"new.txt");
    assert_eq!(
        file_content(&full, &index, snapshot.tree, &path),
        b"fresh data only in the second backup"
    );
    path.pop();
    path.push(b"big.bin");
    assert_eq!(file_content(&full, &index, snapshot.tree, &path), big);
}
