//! Recovery on an in-memory repository.

use super::*;
use crate::backend::Backend;
use crate::repository::in_memory as repository;
use crate::tree::Extent;

fn entry(name: &str, node: Node) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        meta: Metadata::default(),
        node,
    }
}

/// A snapshot of `/srv/<name>` holding one file with `content`: three trees (root, `srv`,
/// `<name>`). Returns the snapshot and its root tree.
fn backup(repo: &Repository, name: &str, content: &[u8]) -> (SnapshotId, BlobId) {
    let index = repo.load_index().expect("index").index;
    let mut writer = repo.blob_writer(&index);
    let (data, _) = writer.add(BlobKind::Data, content).expect("data");
    let file = Node::File {
        extents: vec![Extent::Chunk {
            id: data,
            length: content.len() as u32,
        }],
    };
    let mut subtree = None;
    for (dir, entries) in [
        (name, vec![entry("file", file)]),
        ("srv", Vec::new()),
        ("", Vec::new()),
    ] {
        let mut entries = entries;
        if let Some((child, id)) = subtree.take() {
            entries.push(entry(child, Node::Dir { subtree: id }));
        }
        let tree = Tree::new(entries).expect("tree");
        let (id, _) = writer.add(BlobKind::Tree, &tree.encode()).expect("tree");
        subtree = Some((dir, id));
    }
    let (_, root) = subtree.expect("the root");
    let session = writer.session().clone();
    writer.finish().expect("finish");
    let snapshot = Snapshot {
        paths: vec![format!("/srv/{name}").into_bytes()],
        source_kind: SourceKind::Files,
        ..Snapshot::of_tree_for_tests(root)
    };
    (
        repo.save_snapshot(&session, &snapshot).expect("snapshot"),
        root,
    )
}

fn options() -> RecoverOptions {
    RecoverOptions {
        host: "rescue".into(),
        username: "root".into(),
        time: Timestamp {
            sec: 1_800_000_000,
            nsec: 0,
        },
        uid: 0,
        gid: 0,
    }
}

#[test]
fn the_trees_of_a_deleted_snapshot_come_back_in_a_new_one() {
    let (_, repo) = repository();
    let (kept, _) = backup(&repo, "kept", b"kept bytes");
    let (lost, lost_root) = backup(&repo, "lost", b"lost bytes");
    repo.delete_snapshot(&lost).expect("delete");

    let plan = plan_recover(&repo).expect("plan");
    assert_eq!(plan.roots, vec![lost_root], "only the lost snapshot's root");
    assert_eq!(plan.trees, 6);
    assert!(plan.unreadable.is_empty());

    let id = apply_recover(&repo, &plan, &options())
        .expect("recover")
        .expect("a snapshot");
    let snapshots = repo.load_snapshots().expect("snapshots");
    let ids: Vec<SnapshotId> = snapshots.iter().map(|(id, _)| *id).collect();
    assert!(ids.contains(&kept) && ids.contains(&id) && !ids.contains(&lost));
    let (_, recovered) = snapshots.iter().find(|(s, _)| *s == id).expect("it");
    assert_eq!(recovered.paths, vec![RECOVERED_PATH.to_vec()]);
    assert_eq!(
        recovered.tags,
        vec![("recovered".to_owned(), "1".to_owned())]
    );

    // Its root holds the lost root as a directory named by its id; the file is below it.
    let index = repo.load_index().expect("index").index;
    let root = repo.load_tree(&index, &recovered.tree).expect("root");
    assert_eq!(root.entries().len(), 1);
    assert_eq!(root.entries()[0].name, lost_root.to_hex().into_bytes());
    assert_eq!(root.entries()[0].meta.mode, 0o700);
    assert!(matches!(root.entries()[0].node, Node::Dir { subtree } if subtree == lost_root));
    let srv = repo.load_tree(&index, &lost_root).expect("lost root");
    let Node::Dir { subtree } = srv.entries()[0].node else {
        panic!("srv is a directory")
    };
    let lost_dir = repo.load_tree(&index, &subtree).expect("srv");
    let Node::Dir { subtree } = lost_dir.entries()[0].node else {
        panic!("lost is a directory")
    };
    let files = repo.load_tree(&index, &subtree).expect("lost");
    let Node::File { extents } = &files.entries()[0].node else {
        panic!("a file")
    };
    let Extent::Chunk { id, .. } = extents[0] else {
        panic!("stored")
    };
    assert_eq!(repo.read_blob(&index, &id).expect("data"), b"lost bytes");

    // Nothing is left to recover, and a run with nothing writes nothing.
    let again = plan_recover(&repo).expect("plan");
    assert!(again.roots.is_empty(), "{:?}", again.roots);
    assert_eq!(
        apply_recover(&repo, &again, &options()).expect("nothing"),
        None
    );
    assert_eq!(repo.load_snapshots().expect("snapshots").len(), 2);
}

#[test]
fn a_forgotten_snapshot_is_recovered_and_a_repository_with_none_lost_recovers_nothing() {
    let (_, repo) = repository();
    backup(&repo, "a", b"a");
    let (b, b_root) = backup(&repo, "b", b"b");
    assert!(plan_recover(&repo).expect("plan").roots.is_empty());
    repo.forget_snapshot(&b).expect("forget");
    assert_eq!(plan_recover(&repo).expect("plan").roots, vec![b_root]);
}

/// A prune that deleted a forgotten snapshot's data pack and stopped before its tree pack
/// leaves trees whose data is gone: they are recovered, but named incomplete, and the
/// recovered snapshot says so.
#[test]
fn a_tree_whose_data_is_gone_is_recovered_and_named_incomplete() {
    let (backend, repo) = repository();
    let (_, kept_root) = backup(&repo, "kept", b"kept bytes");
    let (lost, lost_root) = backup(&repo, "lost", b"lost bytes");
    repo.delete_snapshot(&lost).expect("delete");
    let index = repo.load_index().expect("index").index;
    let data = repo.blob_id(b"lost bytes");
    let pack = index.get(&data).expect("indexed").pack;
    backend
        .delete(&crate::pack::pack_name(BlobKind::Data, &pack))
        .expect("delete the data pack");

    let plan = plan_recover(&repo).expect("plan");
    assert_eq!(plan.roots, vec![lost_root]);
    assert_eq!(
        plan.incomplete,
        vec![(lost_root, format!("data blob {data} is not stored"))]
    );
    let id = apply_recover(&repo, &plan, &options())
        .expect("recover")
        .expect("a snapshot");
    let recovered = repo.load_snapshot(&id).expect("recovered");
    assert_eq!(
        recovered.errors,
        vec![format!(
            "/{} is incomplete: data blob {data} is not stored",
            lost_root.to_hex()
        )]
    );
    assert_ne!(kept_root, lost_root);
}
