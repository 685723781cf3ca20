//! Restore throughput: a real repository in a local directory (64 MiB in 8 files, half
//! random, half text) restored into a fresh directory by the parallel restorer.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use bunker_agent::Cancel;
use bunker_agent::backup::{BackupOptions, backup};
use bunker_agent::restore::{RestoreOptions, restore};
use bunker_benches::{random_bytes, text_bytes};
use bunker_repo_format::backend::LocalBackend;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::{InitOptions, Repository};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FILE_BYTES: usize = 8 << 20;

fn restoring(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let src = dir.path().join("src");
    fs::create_dir_all(&src).expect("source dir");
    for i in 0..8u64 {
        let data = if i % 2 == 0 {
            random_bytes(FILE_BYTES, i + 1)
        } else {
            text_bytes(FILE_BYTES)
        };
        fs::write(src.join(format!("file{i}")), data).expect("write source");
    }
    let backend = LocalBackend::create(dir.path().join("repo")).expect("repo dir");
    let options = InitOptions {
        kdf: KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        ..InitOptions::default()
    };
    let repo = Repository::init(Arc::new(backend), b"bench", options).expect("init");
    let cancel = Cancel::new();
    let backup_options = BackupOptions {
        paths: vec![src.clone()],
        host: "bench".into(),
        ..BackupOptions::default()
    };
    let snapshot = backup(&repo, &backup_options, &cancel).expect("backup");
    let index = repo.load_index_for_reading().expect("index").index;
    let target = dir.path().join("target");

    let mut group = c.benchmark_group("restore");
    group.throughput(Throughput::Bytes(8 * FILE_BYTES as u64));
    group.sample_size(10);
    group.bench_function("tree_64MiB_8_files", |b| {
        b.iter(|| {
            let _ = fs::remove_dir_all(&target);
            let outcome = restore(
                &repo,
                &index,
                &snapshot.snapshot.tree,
                Path::new(&src),
                &target,
                &RestoreOptions::default(),
                &cancel,
            )
            .expect("restore");
            assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
            outcome.bytes
        })
    });
    group.finish();
}

criterion_group!(benches, restoring);
criterion_main!(benches);
