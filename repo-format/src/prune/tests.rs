//! Prune on an in-memory repository whose clock the tests move.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::SnapshotId;
use crate::backend::{Backend, MemoryBackend};
use crate::check::{CheckOptions, check};
use crate::keyslot::KdfParams;
use crate::repository::InitOptions;
use crate::repository::in_memory as repository;
use crate::session::ActiveSession;
use crate::snapshot::Snapshot;
use crate::tree::{Entry, Extent, Metadata, Node, Tree};

fn content(seed: u8) -> Vec<u8> {
    (0..50_000u32)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A writer's session on `host`, beating only when told to.
fn writer_session(repo: &Repository, host: &str) -> ActiveSession {
    ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        host,
        "backup",
        false,
    )
    .expect("session")
}

/// A backup the way the agent does it: heartbeat, plans, index, blobs, snapshot, end.
fn backup(repo: &Repository, files: &[u8]) -> SnapshotId {
    let session = writer_session(repo, "h");
    let condemned = crate::gc::condemned_packs(repo).expect("plans");
    let index = repo.load_index().expect("index").index;
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned);
    let snapshot = write_files(repo, &mut writer, files);
    session.end().expect("end");
    snapshot
}

fn write_files(repo: &Repository, writer: &mut crate::BlobWriter<'_>, files: &[u8]) -> SnapshotId {
    let mut entries = Vec::new();
    for &seed in files {
        let data = content(seed);
        let (id, _) = writer.add(BlobKind::Data, &data).expect("add");
        entries.push(Entry {
            name: format!("f{seed}").into_bytes(),
            meta: Metadata::default(),
            node: Node::File {
                extents: vec![Extent::Chunk {
                    id,
                    length: data.len() as u32,
                }],
            },
        });
    }
    let tree = Tree::new(entries).expect("tree");
    let (tree_id, _) = writer
        .add(BlobKind::Tree, &tree.encode())
        .expect("tree blob");
    let sealing = writer.session().clone();
    writer.flush().expect("flush");
    let snapshot = Snapshot::of_tree_for_tests(tree_id);
    repo.save_snapshot(&sealing, &snapshot).expect("snapshot")
}

/// Every snapshot's files read back exactly.
fn assert_restorable(repo: &Repository) {
    let index = repo.load_index().expect("index").index;
    for id in repo.list_snapshot_ids().expect("ids") {
        let snapshot = repo.load_snapshot(&id).expect("snapshot");
        let tree = repo.load_tree(&index, &snapshot.tree).expect("tree");
        for entry in tree.entries() {
            let Node::File { extents } = &entry.node else {
                continue;
            };
            let seed: u8 = String::from_utf8_lossy(&entry.name[1..])
                .parse()
                .expect("seed");
            let Extent::Chunk { id, .. } = extents[0] else {
                panic!("hole")
            };
            assert_eq!(
                repo.read_blob(&index, &id).expect("blob readable"),
                content(seed)
            );
        }
    }
    let report = check(
        repo,
        CheckOptions {
            read_data: crate::check::ReadData::All,
            threads: 1,
        },
    )
    .expect("check");
    assert!(report.is_healthy(), "{report:?}");
}

fn pack_count(backend: &MemoryBackend) -> usize {
    backend
        .object_names()
        .iter()
        .filter(|n| n.starts_with("data/") || n.starts_with("tree/"))
        .count()
}

fn zero_grace() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        ..PruneOptions::default()
    }
}

#[test]
fn zero_grace_deletes_what_no_snapshot_needs() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[1, 2]);
    backup(&repo, &[2, 3]);
    assert_eq!(pack_count(&backend), 4);
    repo.delete_snapshot(&old).expect("forget");
    let plan = prune_plan(&repo, &zero_grace(), false).expect("plan");
    assert_eq!(
        plan.condemn.len(),
        1,
        "the first backup's tree pack is all garbage"
    );
    assert_eq!(
        plan.repack.len(),
        1,
        "its data pack still holds file 2, used by the second"
    );
    let report = prune(&repo, plan).expect("prune");
    assert_eq!(report.deleted_packs, 2);
    assert_eq!(report.repacked_packs, 1);
    assert_eq!(
        pack_count(&backend),
        3,
        "two of the second backup, one repacked"
    );
    assert_restorable(&repo);
    assert!(
        backend.object_names().iter().all(|n| !n.starts_with("gc/")),
        "executed plan removed"
    );
}

#[test]
fn copies_of_the_same_blobs_written_by_concurrent_backups_are_reclaimed() {
    let (backend, repo) = repository();
    // Two backups that both started before either stored anything: each stores its copy.
    let index = repo.load_index().expect("index").index;
    for _ in 0..2 {
        let session = writer_session(&repo, "h");
        let mut writer = repo.blob_writer(&index);
        write_files(&repo, &mut writer, &[1, 2]);
        session.end().expect("end");
    }
    assert_eq!(pack_count(&backend), 4, "each backup stored its own copy");
    let options = PruneOptions {
        max_unused: 0.0,
        ..zero_grace()
    };
    let plan = prune_plan(&repo, &options, false).expect("plan");
    assert_eq!(
        plan.condemn.len(),
        2,
        "the second copies of the data and the tree pack"
    );
    let report = prune(&repo, plan).expect("prune");
    assert_eq!(report.deleted_packs, 2);
    assert_eq!(pack_count(&backend), 2, "one copy of each is left");
    assert_restorable(&repo);
    // Nothing more to reclaim.
    let plan = prune_plan(&repo, &options, true).expect("plan");
    assert!(
        plan.condemn.is_empty() && plan.repack.is_empty(),
        "{plan:?}"
    );
}

/// An audit record of `operation`.
fn audit_record(operation: &str) -> crate::audit::AuditRecord {
    crate::audit::AuditRecord {
        time: crate::tree::Timestamp::now(),
        host: "h".into(),
        user: "u".into(),
        operation: operation.into(),
        target: "t".into(),
        outcome: "succeeded".into(),
        duration_ms: 1,
        snapshot: None,
        details: Vec::new(),
    }
}

fn audit_operations(repo: &Repository) -> Vec<String> {
    let (records, _) = repo.load_audit().expect("audit");
    records.into_iter().map(|(_, r)| r.operation).collect()
}

#[test]
fn audit_records_older_than_keep_audit_go_and_the_rest_stay() {
    let (backend, repo) = repository();
    backup(&repo, &[1]);
    repo.save_audit(&audit_record("old-1")).expect("audit");
    repo.save_audit(&audit_record("old-2")).expect("audit");
    // Not an audit record's name (another repository's, nested): never touched.
    let foreign = format!("audit/nested/{}", "ab".repeat(32));
    backend.put_if_absent(&foreign, b"not ours").expect("put");
    backend.advance_clock(Duration::from_secs(10 * 86400));
    repo.save_audit(&audit_record("new")).expect("audit");

    // Without --keep-audit nothing goes, however old.
    let report = prune(
        &repo,
        prune_plan(&repo, &zero_grace(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(report.audit_records_removed, 0);
    assert_eq!(audit_operations(&repo), ["old-1", "old-2", "new"]);

    let options = PruneOptions {
        keep_audit: Some(Duration::from_secs(5 * 86400)),
        ..zero_grace()
    };
    let dry = prune_plan(&repo, &options, true).expect("dry run");
    assert_eq!(dry.expired_audit.len(), 2);
    assert_eq!(
        audit_operations(&repo).len(),
        3,
        "a dry run deletes nothing"
    );
    let report = prune(&repo, prune_plan(&repo, &options, false).expect("plan")).expect("prune");
    assert_eq!(report.audit_records_removed, 2);
    assert_eq!(audit_operations(&repo), ["new"]);
    assert!(backend.get(&foreign).is_ok());
    assert_restorable(&repo);
}

#[test]
fn grace_period_is_measured_on_the_storage_clock() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[1]);
    backup(&repo, &[2]);
    repo.delete_snapshot(&old).expect("forget");
    let options = PruneOptions::default();
    let report = prune(&repo, prune_plan(&repo, &options, false).expect("plan")).expect("prune");
    assert_eq!((report.condemned_packs, report.deleted_packs), (2, 0));
    backend.advance_clock(Duration::from_secs(23 * 3600));
    let plan = prune_plan(&repo, &options, false).expect("plan");
    assert!(plan.due.is_empty());
    assert_eq!(plan.waiting.len(), 1);
    prune(&repo, plan).expect("prune");
    assert_eq!(
        pack_count(&backend),
        4,
        "nothing deleted inside the grace period"
    );
    backend.advance_clock(Duration::from_secs(2 * 3600));
    let report = prune(&repo, prune_plan(&repo, &options, false).expect("plan")).expect("prune");
    assert_eq!(report.deleted_packs, 2);
    assert_restorable(&repo);
}

#[test]
fn a_writer_that_started_before_the_plan_blocks_it_and_its_snapshot_recovers_the_pack() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[7]);
    // A long backup starts now and deduplicates against snapshot 1's data.
    let session = writer_session(&repo, "slow");
    let index = repo.load_index().expect("index").index;
    let mut writer = repo.blob_writer(&index);
    repo.delete_snapshot(&old).expect("forget");
    // Prune condemns snapshot 1's packs.
    let report = prune(
        &repo,
        prune_plan(&repo, &zero_grace(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(
        report.deleted_packs, 0,
        "the running backup blocks deletion"
    );
    assert_eq!(report.condemned_packs, 2);
    backend.advance_clock(Duration::from_secs(60));
    session.beat().expect("beat");
    // The slow backup finishes, reusing the condemned data blob.
    write_files(&repo, &mut writer, &[7]);
    assert!(!writer.dependencies().is_empty());
    drop(writer);
    session.end().expect("end");
    let report = prune(
        &repo,
        prune_plan(&repo, &zero_grace(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(report.plans_executed, 1);
    assert!(report.recovered_packs >= 1, "{report:?}");
    assert_restorable(&repo);
}

#[test]
fn a_writer_that_started_after_the_plan_stores_condemned_blobs_again() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[4]);
    repo.delete_snapshot(&old).expect("forget");
    prune(
        &repo,
        prune_plan(&repo, &PruneOptions::default(), false).expect("plan"),
    )
    .expect("prune");
    // Same content again: the writer must not trust the condemned pack.
    backup(&repo, &[4]);
    assert_eq!(pack_count(&backend), 4, "content written anew");
    backend.advance_clock(Duration::from_secs(25 * 3600));
    let report = prune(
        &repo,
        prune_plan(&repo, &PruneOptions::default(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(report.deleted_packs, 2, "{report:?}");
    assert_restorable(&repo);
}

#[test]
fn a_dead_session_does_not_block_forever() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[5]);
    backup(&repo, &[6]);
    let crashed = writer_session(&repo, "gone");
    std::mem::forget(crashed); // as if killed: no final beat
    repo.delete_snapshot(&old).expect("forget");
    let report = prune(
        &repo,
        prune_plan(&repo, &zero_grace(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(report.deleted_packs, 0);
    backend.advance_clock(crate::session::SESSION_TIMEOUT + Duration::from_secs(1));
    let report = prune(
        &repo,
        prune_plan(&repo, &zero_grace(), false).expect("plan"),
    )
    .expect("prune");
    assert_eq!(report.deleted_packs, 2, "{report:?}");
    assert_restorable(&repo);
}

#[test]
fn mostly_unused_packs_are_repacked() {
    let (backend, repo) = repository();
    // One snapshot, one data pack with ten blobs; then keep only one of them.
    let all = backup(&repo, &[10, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
    backup(&repo, &[10]);
    repo.delete_snapshot(&all).expect("forget");
    let plan = prune_plan(&repo, &zero_grace(), false).expect("plan");
    assert_eq!(plan.repack.len(), 1, "{plan:?}");
    let report = prune(&repo, plan).expect("prune");
    assert_eq!(report.repacked_packs, 1);
    assert!(report.deleted_packs >= 2, "{report:?}");
    assert_restorable(&repo);
    let data_packs = backend
        .object_names()
        .iter()
        .filter(|n| n.starts_with("data/"))
        .count();
    assert_eq!(data_packs, 1, "only the repacked pack is left");
}

#[test]
fn dry_run_writes_nothing() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[1]);
    backup(&repo, &[2]);
    repo.delete_snapshot(&old).expect("forget");
    let before = backend.object_names();
    let plan = prune_plan(&repo, &zero_grace(), true).expect("plan");
    assert_eq!(plan.condemn.len(), 2);
    assert!(
        prune(&repo, plan).is_err(),
        "a dry-run plan cannot be executed"
    );
    assert_eq!(backend.object_names(), before);
}

#[test]
fn progress_events_arrive_in_order_and_add_up() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[1, 2]);
    backup(&repo, &[2, 3]);
    repo.delete_snapshot(&old).expect("forget");
    let segments = backend
        .object_names()
        .iter()
        .filter(|n| n.starts_with("index/"))
        .count();
    let mut events: Vec<PruneEvent> = Vec::new();
    let plan = prune_plan_observed(&repo, &zero_grace(), false, &mut |e: &PruneEvent| {
        events.push(e.clone())
    })
    .expect("plan");
    let planned = events.len();
    let report =
        prune_observed(&repo, plan, &mut |e: &PruneEvent| events.push(e.clone())).expect("prune");

    // Phases in order (repeats of one phase collapsed): planning, then carrying out,
    // with a fresh listing, reading and walk for the due plan.
    let mut phases: Vec<&str> = events.iter().map(PruneEvent::phase).collect();
    phases.dedup();
    assert_eq!(
        phases,
        [
            "listing",
            "reading-index",
            "walking",
            "deciding",
            "repacking",
            "listing",
            "reading-index",
            "walking",
            "deciding",
            "writing-index",
            "deleting",
            "done"
        ]
    );
    assert_eq!(events[planned - 1], PruneEvent::Deciding);
    // Every counter goes 0, 1, ... total.
    let counters = |phase: &str| -> Vec<(usize, usize)> {
        events
            .iter()
            .filter(|e| e.phase() == phase)
            .map(|e| match e {
                PruneEvent::ReadingIndex { done, total }
                | PruneEvent::WalkingSnapshots { done, total, .. }
                | PruneEvent::Repacking { done, total, .. }
                | PruneEvent::Deleting { done, total, .. } => (*done, *total),
                other => panic!("{other:?}"),
            })
            .collect()
    };
    for phase in ["reading-index", "walking", "repacking", "deleting"] {
        // Split into runs (a run starts at 0); each counts 0, 1, ... its total.
        let mut runs: Vec<Vec<(usize, usize)>> = Vec::new();
        for step in counters(phase) {
            match runs.last_mut() {
                Some(run) if step.0 != 0 => run.push(step),
                _ => runs.push(vec![step]),
            }
        }
        let expected_runs = if matches!(phase, "reading-index" | "walking") {
            2
        } else {
            1
        };
        assert_eq!(runs.len(), expected_runs, "{phase}: {runs:?}");
        for run in &runs {
            let total = run[0].1;
            let expected: Vec<(usize, usize)> = (0..=total).map(|done| (done, total)).collect();
            assert_eq!(run, &expected, "{phase}");
        }
    }
    assert_eq!(counters("reading-index")[0].1, segments);
    assert_eq!(counters("walking")[0].1, 1, "one snapshot left");
    assert_eq!(counters("repacking")[0].1, report.repacked_packs);
    assert_eq!(counters("deleting")[0].1, report.deleted_packs);
    let last_deleted = events
        .iter()
        .rev()
        .find_map(|e| match e {
            PruneEvent::Deleting { bytes, .. } => Some(*bytes),
            _ => None,
        })
        .expect("deleting");
    assert_eq!(last_deleted, report.deleted_bytes);
    let walked = events
        .iter()
        .rev()
        .find_map(|e| match e {
            PruneEvent::WalkingSnapshots { used_blobs, .. } => Some(*used_blobs),
            _ => None,
        })
        .expect("walked");
    assert!(walked >= 3, "a root tree and two files: {walked}");
    assert_eq!(report.deleted_packs, 2);
}

/// Object Lock bookkeeping on a local directory: writes lock, deletes wait for locks to
/// lapse, and `lock extend` extends exactly what live snapshots need.
mod locked {
    use std::path::{Path, PathBuf};
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;
    use crate::backend::{LocalBackend, LockMode, LockPolicy};
    use crate::object_lock::{extend, extend_plan, needed_objects};

    const DAY: Duration = Duration::from_secs(86400);

    fn locked_repository() -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = LocalBackend::create(dir.path().join("repo")).expect("create");
        let repo = Repository::init(
            Arc::new(backend) as Arc<dyn Backend>,
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                params: crate::config::RepositoryParams {
                    lock: Some(LockPolicy {
                        mode: LockMode::Governance,
                        period: DAY,
                    }),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .expect("init");
        (dir, repo)
    }

    fn sidecar(root: &Path, name: &str) -> PathBuf {
        let (dir, file) = name.rsplit_once('/').unwrap_or(("", name));
        root.join("repo").join(dir).join(format!(".lock-{file}"))
    }

    fn secs(time: SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH)
            .expect("after epoch")
            .as_secs()
    }

    /// Moves every lock to `until`, the way time passing would make them lapse.
    fn set_all_locks(root: &Path, repo: &Repository, until: SystemTime) {
        for meta in repo.backend().list("").expect("list") {
            let path = sidecar(root, &meta.name);
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, secs(until).to_string()).expect("write sidecar");
        }
    }

    #[test]
    fn every_object_is_written_locked_and_deletes_wait_for_the_lock() {
        let (dir, repo) = locked_repository();
        let before = SystemTime::now();
        let first = backup(&repo, &[1, 2]);
        backup(&repo, &[2, 3]);
        let objects = repo.backend().list("").expect("list");
        assert!(objects.iter().any(|o| o.name == "config"));
        assert!(objects.iter().any(|o| o.name.starts_with("keys/")));
        for object in &objects {
            let until = repo.backend().retained_until(&object.name).expect("lock");
            let until = until.unwrap_or_else(|| panic!("{} is not locked", object.name));
            assert!(
                secs(until) >= secs(before + DAY),
                "{} locked too briefly",
                object.name
            );
        }
        // A locked snapshot cannot be forgotten yet.
        match repo.delete_snapshot(&first) {
            Err(Error::Locked { object, .. }) => assert!(object.starts_with("snapshots/")),
            other => panic!("expected Locked, got {other:?}"),
        }
        assert_eq!(repo.list_snapshot_ids().expect("ids").len(), 2);

        // Once the locks lapse, forget works; prune plans the packs but keeps them while
        // locked, and deletes them in a run after their locks lapse.
        set_all_locks(
            dir.path(),
            &repo,
            SystemTime::now() - Duration::from_secs(1),
        );
        repo.delete_snapshot(&first)
            .expect("forget after the lock lapsed");
        set_all_locks(dir.path(), &repo, SystemTime::now() + DAY);
        let names = |prefix: &str| -> Vec<String> {
            let listed = repo.backend().list(prefix).expect("list");
            listed.into_iter().map(|m| m.name).collect()
        };
        let packs_before = names("data/");
        let plan = prune_plan(&repo, &zero_grace(), false).expect("plan");
        let report = prune(&repo, plan).expect("prune");
        assert_eq!(report.deleted_packs, 0, "{report:?}");
        assert!(
            report
                .locked
                .iter()
                .any(|(name, _)| name.starts_with("data/")),
            "{report:?}"
        );
        let packs_after = names("data/");
        assert!(
            packs_before.iter().all(|p| packs_after.contains(p)),
            "a locked pack went"
        );
        assert_restorable(&repo);

        set_all_locks(
            dir.path(),
            &repo,
            SystemTime::now() - Duration::from_secs(1),
        );
        let plan = prune_plan(&repo, &zero_grace(), false).expect("plan");
        assert!(plan.locked.is_empty(), "{:?}", plan.locked);
        let report = prune(&repo, plan).expect("prune");
        assert!(report.deleted_packs >= 1, "{report:?}");
        assert!(report.locked.is_empty(), "{report:?}");
        assert!(
            repo.backend().list("gc/").expect("list").is_empty(),
            "plan left behind"
        );
        // Prune ran `lock extend`: what the remaining snapshot needs is locked again.
        assert!(report.locks_extended >= 4, "{report:?}");
        for name in needed_objects(&repo).expect("needed") {
            let until = repo
                .backend()
                .retained_until(&name)
                .expect("lock")
                .expect("locked");
            assert!(
                until > SystemTime::now() + DAY - Duration::from_secs(60),
                "{name}"
            );
        }
        assert_restorable(&repo);
    }

    #[test]
    fn lock_extend_touches_only_needed_objects_about_to_lapse() {
        let (dir, repo) = locked_repository();
        let kept = backup(&repo, &[1, 2]);
        let gone = backup(&repo, &[7]);
        set_all_locks(
            dir.path(),
            &repo,
            SystemTime::now() - Duration::from_secs(1),
        );
        repo.delete_snapshot(&gone).expect("forget");
        // All locks lapse in an hour, well before a live snapshot's expiry (now + 1 day).
        let soon = SystemTime::now() + Duration::from_secs(3600);
        set_all_locks(dir.path(), &repo, soon);

        let needed = needed_objects(&repo).expect("needed");
        assert!(needed.contains(&"config".to_owned()));
        assert!(needed.contains(&ObjectKind::Snapshot.name(&kept.to_hex())));
        assert!(
            !needed
                .iter()
                .any(|n| n.starts_with("index/") || n.starts_with("sessions/"))
        );
        let plan = extend_plan(&repo).expect("plan");
        let mut planned: Vec<String> = plan.extend.iter().map(|(n, _)| n.clone()).collect();
        planned.sort();
        assert_eq!(planned, needed, "extend exactly the needed objects");
        assert_eq!(extend(&repo, &plan).expect("extend"), needed.len());
        for meta in repo.backend().list("").expect("list") {
            let until = repo
                .backend()
                .retained_until(&meta.name)
                .expect("lock")
                .expect("locked");
            if needed.contains(&meta.name) {
                assert_eq!(secs(until), secs(plan.extend_to) + 1, "{}", meta.name);
            } else {
                assert_eq!(secs(until), secs(soon), "{} was extended", meta.name);
            }
        }
        // A second run right away finds nothing to do.
        assert!(extend_plan(&repo).expect("plan").extend.is_empty());
    }

    #[test]
    fn a_locked_snapshot_is_forgotten_behind_a_marker_and_deleted_once_its_lock_lapses() {
        use crate::forget_marker::Forgotten;
        let (dir, repo) = locked_repository();
        let kept = backup(&repo, &[1, 2]);
        let gone = backup(&repo, &[7]);
        let gone_name = ObjectKind::Snapshot.name(&gone.to_hex());

        // The lock holds: forget hides the snapshot behind a marker and deletes nothing.
        let Forgotten::Hidden { until, marker } = repo.forget_snapshot(&gone).expect("forget")
        else {
            panic!("a locked snapshot was deleted");
        };
        assert!(until > SystemTime::now() + DAY - Duration::from_secs(60));
        assert!(marker.starts_with("forgotten/"));
        assert!(repo.backend().head(&gone_name).is_ok(), "object deleted");
        assert_eq!(repo.list_snapshot_ids().expect("ids"), vec![kept]);
        assert_eq!(repo.list_stored_snapshot_ids().expect("ids").len(), 2);
        assert!(repo.resolve_snapshot(&gone.to_hex()).is_err());
        let needed = needed_objects(&repo).expect("needed");
        assert!(!needed.contains(&gone_name), "lock extend would keep it");

        // Prune condemns its data but deletes neither it nor its marker while locked.
        let report = prune(
            &repo,
            prune_plan(&repo, &zero_grace(), false).expect("plan"),
        )
        .expect("prune");
        assert_eq!(report.forgotten_snapshots_deleted, 0, "{report:?}");
        assert!(
            report.locked.iter().any(|(n, _)| *n == gone_name),
            "{report:?}"
        );
        assert!(repo.backend().head(&marker).is_ok());
        assert!(repo.backend().head(&gone_name).is_ok());

        // Once the locks lapse, the next prune deletes the snapshot, its marker and its data.
        set_all_locks(
            dir.path(),
            &repo,
            SystemTime::now() - Duration::from_secs(1),
        );
        let report = prune(
            &repo,
            prune_plan(&repo, &zero_grace(), false).expect("plan"),
        )
        .expect("prune");
        assert_eq!(report.forgotten_snapshots_deleted, 1, "{report:?}");
        assert_eq!(report.forget_markers_removed, 1, "{report:?}");
        assert!(report.deleted_packs >= 1, "{report:?}");
        assert!(repo.backend().list("forgotten/").expect("list").is_empty());
        assert_eq!(repo.list_stored_snapshot_ids().expect("ids"), vec![kept]);
        assert_restorable(&repo);
    }

    #[test]
    fn a_damaged_marker_hides_nothing_and_check_names_it() {
        let (dir, repo) = locked_repository();
        let first = backup(&repo, &[1]);
        let crate::forget_marker::Forgotten::Hidden { marker, .. } =
            repo.forget_snapshot(&first).expect("forget")
        else {
            panic!("a locked snapshot was deleted");
        };
        let path = dir.path().join("repo").join(&marker);
        let mut bytes = std::fs::read(&path).expect("read marker");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &bytes).expect("write marker");
        assert_eq!(repo.list_snapshot_ids().expect("ids"), vec![first]);
        let report = crate::check::check(&repo, Default::default()).expect("check");
        assert!(
            report.errors.iter().any(|p| p.object == marker),
            "{:?}",
            report.errors
        );
    }

    #[test]
    fn a_locked_audit_record_waits_for_its_lock() {
        let (dir, repo) = locked_repository();
        backup(&repo, &[1]);
        repo.save_audit(&audit_record("locked")).expect("audit");
        let options = PruneOptions {
            keep_audit: Some(Duration::ZERO),
            ..zero_grace()
        };
        // Stored "more than zero" ago: a second on the storage's clock.
        std::thread::sleep(Duration::from_millis(1100));
        let report =
            prune(&repo, prune_plan(&repo, &options, false).expect("plan")).expect("prune");
        assert_eq!(report.audit_records_removed, 0);
        assert!(
            report
                .locked
                .iter()
                .any(|(name, _)| name.starts_with("audit/")),
            "{:?}",
            report.locked
        );
        assert_eq!(audit_operations(&repo), ["locked"]);

        set_all_locks(dir.path(), &repo, SystemTime::now() - DAY);
        let report =
            prune(&repo, prune_plan(&repo, &options, false).expect("plan")).expect("prune");
        assert!(report.audit_records_removed >= 1, "{report:?}");
        assert!(!audit_operations(&repo).contains(&"locked".to_owned()));
    }
}

/// Temp files a crashed writer left in a local repository.
mod temps {
    use std::fs::{File, FileTimes};
    use std::path::Path;
    use std::time::SystemTime;

    use super::*;
    use crate::backend::LocalBackend;

    const MINUTE: Duration = Duration::from_secs(60);

    /// Writes a temp file of `len` bytes at `path`, last written `age` ago.
    fn temp_file(path: &Path, len: usize, age: Duration) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, vec![7; len]).expect("write temp");
        let file = File::options().write(true).open(path).expect("open");
        let time = SystemTime::now() - age;
        file.set_times(FileTimes::new().set_modified(time).set_accessed(time))
            .expect("set time");
    }

    #[test]
    fn temp_files_go_once_no_live_session_can_be_writing_them() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("repo");
        let backend = LocalBackend::create(&root).expect("create");
        let repo = Repository::init(
            Arc::new(backend) as Arc<dyn Backend>,
            b"pw",
            InitOptions {
                kdf: KdfParams::insecure_for_tests(),
                ..Default::default()
            },
        )
        .expect("init");
        backup(&repo, &[1, 2]);

        // A session that started 40 minutes ago and is still beating.
        let running = writer_session(&repo, "h");
        for beat in repo.backend().list("sessions/").expect("list") {
            let path = root.join(&beat.name);
            let file = File::open(&path).expect("open beat");
            let time = SystemTime::now() - 40 * MINUTE;
            file.set_times(FileTimes::new().set_modified(time))
                .expect("backdate beat");
        }
        running.beat().expect("beat");

        // Older than the running session: nobody can still write it.
        temp_file(&root.join("data/.tmp-9-1"), 3000, 60 * MINUTE);
        // Past the session timeout, but the running session may own it.
        temp_file(&root.join("data/ab/.tmp-9-2"), 20, 20 * MINUTE);
        // Being written now.
        temp_file(&root.join("tree/.tmp-9-3"), 10, Duration::ZERO);

        let plan = prune_plan(&repo, &zero_grace(), false).expect("plan");
        let stale: Vec<&str> = plan.stale_temps.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(stale, ["data/.tmp-9-1"]);
        let report = prune(&repo, plan).expect("prune");
        assert_eq!(report.temps_removed, (1, 3000));
        assert!(!root.join("data/.tmp-9-1").exists());
        assert!(root.join("data/ab/.tmp-9-2").exists());
        assert!(root.join("tree/.tmp-9-3").exists());

        // Once that session has ended, only the fresh temp file stays.
        running.end().expect("end");
        let report = prune(
            &repo,
            prune_plan(&repo, &zero_grace(), false).expect("plan"),
        )
        .expect("prune");
        assert_eq!(report.temps_removed, (1, 20));
        assert!(!root.join("data/ab/.tmp-9-2").exists());
        assert!(root.join("tree/.tmp-9-3").exists());
        assert_eq!(report.deleted_packs, 0, "{report:?}");
        assert_restorable(&repo);
    }
}

mod concurrent;
