//! Volume backups end to end on image files and a local repository: which chunks are
//! stored (each once, zeros as holes), what a second backup adds, cancellation.

#![allow(clippy::unwrap_used)] // helpers outside #[test] functions panic on purpose

use std::fs;
use std::path::Path;
use std::sync::Arc;

mod common;

use bunker_agent::Cancel;
use bunker_agent::backup::{BackupError, BackupOutcome, VolumeOptions, backup_volume};
use bunker_agent::restore::restore_volume;
use bunker_repo_format::backend::{Backend, LocalBackend};
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::tree::{Extent, Node};
use bunker_repo_format::{InitOptions, Repository};
use common::noise;

/// The default volume chunk size.
const MIB: usize = 1 << 20;

fn new_repo(dir: &Path) -> Repository {
    fs::create_dir_all(dir).unwrap();
    let backend: Arc<dyn Backend> = Arc::new(LocalBackend::create(dir).unwrap());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"pw", options).unwrap();
    assert_eq!(repo.config().params.volume_chunk_size as usize, MIB);
    repo
}

fn back_up(repo: &Repository, image: &Path, cancel: &Cancel) -> Result<BackupOutcome, BackupError> {
    let options = VolumeOptions {
        device: image.to_owned(),
        host: "h".into(),
        ..VolumeOptions::default()
    };
    backup_volume(repo, &options, cancel)
}

/// The extents of the snapshot's one volume entry.
fn extents(repo: &Repository, outcome: &BackupOutcome) -> Vec<Extent> {
    let index = repo.load_index().unwrap().index;
    let tree = repo.load_tree(&index, &outcome.snapshot.tree).unwrap();
    let [entry] = tree.entries() else {
        panic!(
            "a volume snapshot holds one entry, not {}",
            tree.entries().len()
        );
    };
    match &entry.node {
        Node::File { extents } => extents.clone(),
        other => panic!("the volume entry is not a file: {other:?}"),
    }
}

#[test]
fn a_volume_stores_each_chunk_once_and_its_zeros_as_holes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(&tmp.path().join("repo"));
    let (a, b, tail) = (noise(MIB, 1), noise(MIB, 2), noise(300_000, 3));
    // A, two zero chunks, A again, B twice, a zero chunk, a short last chunk.
    let image_bytes = [&a[..], &vec![0; 2 * MIB], &a, &b, &b, &vec![0; MIB], &tail].concat();
    let image = tmp.path().join("disk.img");
    fs::write(&image, &image_bytes).unwrap();

    let first = back_up(&repo, &image, &Cancel::new()).unwrap();
    let summary = &first.snapshot.summary;
    assert_eq!((summary.data_blobs_added, summary.tree_blobs_added), (3, 1));
    assert_eq!(summary.bytes_read, image_bytes.len() as u64);
    let chunk = |data: &[u8]| Extent::Chunk {
        id: repo.blob_id(data),
        length: data.len() as u32,
    };
    let hole = |length: usize| Extent::Hole {
        length: length as u64,
    };
    assert_eq!(
        extents(&repo, &first),
        [
            chunk(&a),
            hole(2 * MIB),
            chunk(&a),
            chunk(&b),
            chunk(&b),
            hole(MIB),
            chunk(&tail)
        ]
    );

    let index = repo.load_index().unwrap().index;
    let target = tmp.path().join("restored.img");
    restore_volume(&repo, &index, &first.snapshot.tree, &target, &Cancel::new()).unwrap();
    assert!(
        fs::read(&target).unwrap() == image_bytes,
        "restored image differs"
    );

    // Nothing changed: the second backup finds every chunk stored.
    let second = back_up(&repo, &image, &Cancel::new()).unwrap();
    assert_eq!(second.snapshot.summary.data_blobs_added, 0);
    assert_eq!(second.snapshot.summary.bytes_added, 0);
    assert_eq!(extents(&repo, &second), extents(&repo, &first));
}

#[test]
fn a_cancelled_volume_backup_writes_no_snapshot_and_the_next_one_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = new_repo(&tmp.path().join("repo"));
    let image_bytes = noise(5 * MIB + 12_345, 9);
    let image = tmp.path().join("disk.img");
    fs::write(&image, &image_bytes).unwrap();

    let cancel = Cancel::new();
    cancel.cancel();
    let err = back_up(&repo, &image, &cancel).unwrap_err();
    assert!(matches!(err, BackupError::Interrupted), "{err}");
    assert!(repo.list_snapshot_ids().unwrap().is_empty());

    let done = back_up(&repo, &image, &Cancel::new()).unwrap();
    assert_eq!(done.snapshot.summary.data_blobs_added, 6);
    let index = repo.load_index().unwrap().index;
    let target = tmp.path().join("restored.img");
    restore_volume(&repo, &index, &done.snapshot.tree, &target, &Cancel::new()).unwrap();
    assert!(
        fs::read(&target).unwrap() == image_bytes,
        "restored image differs"
    );
}
