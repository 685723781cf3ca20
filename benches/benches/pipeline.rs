//! Throughput of the stages `stages.rs` does not cover (compression alone, pack writing)
//! and of a whole backup of a generated tree through the parallel pipeline.

use std::path::Path;
use std::sync::Arc;

use bunker_agent::Cancel;
use bunker_agent::backup::{BackupOptions, backup};
use bunker_benches::{random_bytes, text_bytes};
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::blob::seal_blob;
use bunker_repo_format::compress::compress_into;
use bunker_repo_format::crypto::MasterKey;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::pack::PackWriter;
use bunker_repo_format::{BlobId, BlobKind, InitOptions, Repository};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn compression(c: &mut Criterion) {
    let mut group = c.benchmark_group("compress");
    for (name, chunk) in [
        ("random", random_bytes(1 << 20, 3)),
        ("text", text_bytes(1 << 20)),
    ] {
        group.throughput(Throughput::Bytes(chunk.len() as u64));
        for level in [1, 3] {
            let mut out = Vec::with_capacity(chunk.len() + 64);
            group.bench_function(format!("{name}_zstd{level}_1MiB"), |b| {
                b.iter(|| {
                    out.clear();
                    compress_into(level, &chunk, &mut out);
                    out.len()
                })
            });
        }
    }
    group.finish();
}

fn pack_writing(c: &mut Criterion) {
    let key = MasterKey::generate();
    let session = key.writer().new_session();
    let blob = random_bytes(64 << 10, 4);
    let sealed: Vec<(BlobId, Vec<u8>)> = (0..256u32)
        .map(|i| {
            let mut id = [0u8; 32];
            id[..4].copy_from_slice(&i.to_le_bytes());
            let id = BlobId::from_bytes(id);
            (id, seal_blob(session.key(), BlobKind::Data, &id, &blob, 0))
        })
        .collect();
    let total: usize = sealed.iter().map(|(_, s)| s.len()).sum();
    let mut group = c.benchmark_group("pack");
    group.throughput(Throughput::Bytes(total as u64));
    group.bench_function("write_16MiB_of_64KiB_blobs", |b| {
        b.iter(|| {
            let mut pack = PackWriter::new(BlobKind::Data, session.clone());
            for (id, bytes) in &sealed {
                pack.add(*id, bytes, blob.len() as u32)
                    .expect("add in memory");
            }
            pack.finish().expect("finish in memory").size
        })
    });
    group.finish();
}

/// A source-code-like tree: `files` text files of 4-60 KiB in nested directories.
fn generate_tree(root: &Path, files: usize) -> u64 {
    let text = text_bytes(8 << 20);
    let mut total = 0u64;
    for i in 0..files {
        let dir = root.join(format!("d{}/e{}", i % 16, i % 5));
        std::fs::create_dir_all(&dir).expect("temp dir is writable");
        let len = 4096 + (i * 7919) % (56 << 10);
        let start = (i * 104_729) % (text.len() - len);
        std::fs::write(dir.join(format!("f{i}.c")), &text[start..start + len])
            .expect("temp dir is writable");
        total += len as u64;
    }
    total
}

fn end_to_end(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let source = tmp.path().join("src");
    let bytes = generate_tree(&source, 3000);
    let mut group = c.benchmark_group("backup");
    group.throughput(Throughput::Bytes(bytes));
    group.sample_size(10);
    let mut run = 0;
    group.bench_function("first_backup_3000_files", |b| {
        b.iter(|| {
            run += 1;
            let dir = tmp.path().join(format!("repo{run}"));
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            let backend: Arc<dyn Backend> =
                Arc::new(LocalBackend::create(&dir).expect("local backend"));
            let options = InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..InitOptions::default()
            };
            let repo = Repository::init(backend, b"bench", options).expect("init");
            let options = BackupOptions {
                paths: vec![source.clone()],
                host: "bench".to_owned(),
                ..BackupOptions::default()
            };
            let outcome = backup(&repo, &options, &Cancel::new()).expect("backup");
            std::fs::remove_dir_all(&dir).expect("temp dir is writable");
            outcome.snapshot.summary.bytes_added
        })
    });
    group.finish();
}

criterion_group!(benches, compression, pack_writing, end_to_end);
criterion_main!(benches);
