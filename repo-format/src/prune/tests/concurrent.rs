//! Prunes interleaved with another prune, and listings that lag behind writes: each test
//! stops a prune at one moment (a backend hook) and runs the other there, which the
//! simulation in `tests/gc_simulation.rs` cannot (it runs each prune as one step).

use std::sync::Mutex;

use super::*;

type Hook = Box<dyn FnOnce() + Send>;

/// Passes every call to `inner`, except that it runs `before_index_get` (once) before the
/// first read of an index segment, `before_delete` (once) before the first delete, and
/// leaves `hidden` out of every listing (a store whose listings lag behind its writes).
struct Hooked {
    inner: Arc<MemoryBackend>,
    before_index_get: Mutex<Option<Hook>>,
    before_delete: Mutex<Option<Hook>>,
    hidden: Mutex<Option<String>>,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hooked")
    }
}

impl Hooked {
    fn new(inner: &Arc<MemoryBackend>) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::clone(inner),
            before_index_get: Mutex::new(None),
            before_delete: Mutex::new(None),
            hidden: Mutex::new(None),
        })
    }

    fn repository(self: &Arc<Self>) -> Repository {
        Repository::open(Arc::clone(self) as Arc<dyn Backend>, b"pw").expect("open")
    }
}

fn run(hook: &Mutex<Option<Hook>>) {
    let hook = hook.lock().expect("hook").take();
    if let Some(hook) = hook {
        hook();
    }
}

impl Backend for Hooked {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.inner.put_if_absent(name, bytes)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        if name.starts_with("index/") {
            run(&self.before_index_get);
        }
        self.inner.get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.inner.get_range(name, offset, length)
    }
    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.inner.head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let hidden = self.hidden.lock().expect("hidden").clone();
        let mut listed = self.inner.list(prefix)?;
        listed.retain(|meta| Some(&meta.name) != hidden.as_ref());
        Ok(listed)
    }
    fn delete(&self, name: &str) -> Result<()> {
        run(&self.before_delete);
        self.inner.delete(name)
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn with_grace(grace: Duration) -> PruneOptions {
    PruneOptions {
        grace,
        ..PruneOptions::default()
    }
}

/// A whole prune on its own handle of `backend`.
fn other_prune(backend: &Arc<MemoryBackend>, grace: Duration) {
    let repo = Repository::open(Arc::clone(backend) as Arc<dyn Backend>, b"pw").expect("open");
    let plan = prune_plan(&repo, &with_grace(grace), false).expect("the other prune's plan");
    prune(&repo, plan).expect("the other prune");
}

/// Prune B lists the index segments; prune A then rewrites one of them (a recovered pack
/// stays listed, a deleted one goes) and removes the old one before B reads it. B must read
/// the segment that replaced it, not decide without the recovered pack's contents.
#[test]
fn a_segment_another_prune_rewrites_meanwhile_is_read_in_its_new_form() {
    let (backend, repo) = repository();
    let old = backup(&repo, &[1]); // blob 1 in data pack P, its tree in T, one segment
    // W starts before the plan and reads the index: it will reuse blob 1 from P.
    let w = writer_session(&repo, "w");
    let condemned = crate::gc::condemned_packs(&repo).expect("plans");
    let index = repo.load_index().expect("index").index;
    repo.delete_snapshot(&old).expect("forget");
    let plan = prune_plan(&repo, &with_grace(HOUR), false).expect("plan");
    let report = prune(&repo, plan).expect("prune");
    assert_eq!(report.condemned_packs, 2, "{report:?}");
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(condemned);
    write_files(&repo, &mut writer, &[1, 2]); // a new tree; blob 1 reused from P
    drop(writer);
    w.end().expect("end");
    backend.advance_clock(2 * HOUR);

    let hooked = Hooked::new(&backend);
    let repo_b = hooked.repository();
    let plan_b = prune_plan(&repo_b, &with_grace(HOUR), false).expect("plan B");
    assert_eq!(plan_b.due.len(), 1);
    let for_a = Arc::clone(&backend);
    *hooked.before_index_get.lock().expect("hook") =
        Some(Box::new(move || other_prune(&for_a, HOUR)));
    prune(&repo_b, plan_b).expect("prune B");
    assert_restorable(&repo);
}

/// Two plans condemn the two copies of a used blob. Prune A finds only the older plan due;
/// prune B, running meanwhile, finds both due and keeps the lower pack id. A must not count
/// the copy the newer plan condemns as the one that survives.
#[test]
fn a_copy_another_plan_condemns_does_not_count_as_the_survivor() {
    let (backend, repo) = repository();
    // Two writers racing store the same blob: two data packs, each holding it.
    let empty = repo.load_index().expect("index").index;
    let s1 = writer_session(&repo, "a");
    let s2 = writer_session(&repo, "b");
    let mut w2 = repo.blob_writer(&empty);
    w2.add(BlobKind::Data, &content(1)).expect("add");
    w2.finish().expect("finish");
    let mut w1 = repo.blob_writer(&empty);
    write_files(&repo, &mut w1, &[1]);
    drop(w1);
    s1.end().expect("end");
    s2.end().expect("end");
    let mut data: Vec<PackId> = stored_packs(&repo)
        .expect("packs")
        .into_iter()
        .filter(|(_, p)| p.kind == BlobKind::Data)
        .map(|(id, _)| id)
        .collect();
    data.sort();
    assert_eq!(data.len(), 2);
    // Plans as two prunes planning at once could write them: each condemns one copy.
    for pack in [data[0], data[1]] {
        let plan = GcPlan {
            client_time: Timestamp::now(),
            packs: vec![(pack, BlobKind::Data)],
        };
        let (name, bytes) = plan.encode(repo.writer_key());
        repo.put_content_named(&name, bytes).expect("plan");
        backend.advance_clock(2 * HOUR);
    }
    backend.advance_clock(HOUR); // the plans are 5 and 3 hours old

    let hooked = Hooked::new(&backend);
    let repo_a = hooked.repository();
    let plan_a = prune_plan(&repo_a, &with_grace(4 * HOUR), false).expect("plan A");
    assert_eq!(plan_a.due.len(), 1, "A: only the older plan is due");
    let for_b = Arc::clone(&backend);
    *hooked.before_delete.lock().expect("hook") =
        Some(Box::new(move || other_prune(&for_b, 2 * HOUR)));
    prune(&repo_a, plan_a).expect("prune A");
    assert_restorable(&repo);
}

/// A snapshot's data pack and its name, and a view of `backend` whose listings can miss it.
fn hidden_data_pack(
    backend: &Arc<MemoryBackend>,
    repo: &Repository,
) -> (PackId, String, Arc<Hooked>) {
    let pack = stored_packs(repo)
        .expect("packs")
        .into_iter()
        .find(|(_, s)| s.kind == BlobKind::Data)
        .expect("data pack")
        .0;
    (
        pack,
        crate::pack::pack_name(BlobKind::Data, &pack),
        Hooked::new(backend),
    )
}

/// Two more prunes, 20 minutes and 25 hours on: long enough to condemn and delete a pack
/// the index no longer lists.
fn later_prunes(backend: &MemoryBackend, repo: &Repository) {
    for wait in [Duration::from_secs(20 * 60), 25 * HOUR] {
        backend.advance_clock(wait);
        let plan = prune_plan(repo, &PruneOptions::default(), false).expect("plan");
        prune(repo, plan).expect("prune");
    }
}

/// A prune whose listing of `data/` misses a pack a committed snapshot uses (a store
/// whose listings lag behind writes) sees a blob in use that no stored pack holds: it
/// stops before deciding anything.
#[test]
fn a_used_blob_no_listed_pack_holds_stops_the_prune() {
    let (backend, repo) = repository();
    backup(&repo, &[1]);
    let (_, name, hooked) = hidden_data_pack(&backend, &repo);
    *hooked.hidden.lock().expect("hidden") = Some(name.clone());
    let error = prune_plan(&hooked.repository(), &PruneOptions::default(), false)
        .expect_err("a view without the pack");
    assert!(
        error
            .to_string()
            .contains("in no stored pack the index lists"),
        "{error}"
    );
    later_prunes(&backend, &repo);
    assert!(backend.object_names().contains(&name));
    assert_restorable(&repo);
}

/// The listing a prune takes to drop index entries of packs gone from storage misses a
/// live pack: asked for by name, it is still there, and its entries stay, so no later run
/// takes it for an unindexed leftover.
#[test]
fn a_pack_one_listing_misses_keeps_its_index_entries() {
    let (backend, repo) = repository();
    backup(&repo, &[1]);
    backup(&repo, &[2]);
    let (pack, name, hooked) = hidden_data_pack(&backend, &repo);
    let lagging = hooked.repository();
    // More segments than a prune leaves, so that it rewrites them all.
    for seed in 3..=(MAX_SEGMENTS as u8 + 2) {
        backup(&repo, &[seed]);
    }
    let plan = prune_plan(&lagging, &PruneOptions::default(), false).expect("plan");
    assert!(plan.merge_segments);
    *hooked.hidden.lock().expect("hidden") = Some(name.clone());
    let report = prune(&lagging, plan).expect("prune with a lagging listing");
    assert!(report.segments_written > 0, "{report:?}");
    let mut listed = false;
    repo.load_index_visiting(|segment| listed |= segment.packs.iter().any(|p| p.id == pack))
        .expect("index");
    assert!(listed, "the pack the listing missed was unindexed");
    later_prunes(&backend, &repo);
    assert!(
        backend.object_names().contains(&name),
        "the pack of a committed snapshot was deleted"
    );
    assert_restorable(&repo);
}
