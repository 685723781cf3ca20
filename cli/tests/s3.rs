//! `bunker` against an S3-compatible server (moto, started by scripts/test.sh): round trips
//! over `s3://`, Object Lock on every object, and proof that locked objects can be neither
//! deleted nor overwritten through the S3 API.

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use bunker_backend_s3::S3Backend;
use bunker_backend_s3::testing::{create_bucket, env_vars, location, test_endpoint, unique_bucket};
use bunker_repo_format::Error;
use bunker_repo_format::backend::Backend;
use common::*;

/// A `Bunker` for `s3://bucket/prefix` on the test server.
fn s3_bunker(t: &TestDir, endpoint: &str, bucket: &str, prefix: &str) -> Bunker {
    let url = format!("s3://{bucket}/{prefix}");
    let mut b = t.bunker().with_repo(Some(Path::new(&url)));
    for (key, value) in env_vars(endpoint) {
        b = b.with_env(key, value);
    }
    b
}

/// A small tree of files with distinct contents, some shared between directories.
fn build_tree(root: &Path, seed: u64) {
    write_random_file(&root.join("a/one.bin"), seed, 3 << 20);
    write_random_file(&root.join("a/two.bin"), seed + 1, 100_000);
    write_random_file(&root.join("b/c/three.bin"), seed + 2, 5_000);
    write_file(&root.join("b/empty"), b"");
    write_file(
        &root.join("b/c/text.txt"),
        format!("seed {seed}\n").as_bytes(),
    );
}

#[test]
fn init_backup_restore_check_prune_over_s3() {
    let Some(endpoint) = test_endpoint("init_backup_restore_check_prune_over_s3") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("cli");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "hosts/web1");
    let out = b.init();
    assert!(
        out.stdout.contains(&format!("s3://{bucket}/hosts/web1")),
        "{out}"
    );
    // A second init at the same place is refused.
    b.run(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"])
        .code(1);

    let src = t.join("src");
    build_tree(&src, 1);
    b.backup(&[&src], &[]).ok();
    write_random_file(&src.join("a/two.bin"), 99, 200_000);
    // A dry run reads the bucket and writes nothing to it.
    let stored = list_names(&endpoint, &bucket, "hosts/web1", "");
    let dry = b.backup(&[&src], &["--dry-run", "--json"]);
    dry.ok();
    assert!(
        u64_field(&dry.json()["summary"], "bytes_stored") > 0,
        "{dry}"
    );
    assert_eq!(list_names(&endpoint, &bucket, "hosts/web1", ""), stored);
    b.backup(&[&src], &[]).ok();
    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 2, "{snaps:?}");

    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
    b.run(["check", "--read-data"]).ok();

    // Forget the first snapshot and prune at once: its unique data goes, the rest stays.
    let data_before = list_names(&endpoint, &bucket, "hosts/web1", "data/");
    b.run(["forget", "--keep-last", "1"]).ok();
    assert_eq!(b.snapshots().len(), 1);
    let out = b.run(["prune", "--grace", "0", "--max-unused", "0"]);
    out.ok();
    let data_after = list_names(&endpoint, &bucket, "hosts/web1", "data/");
    assert!(
        data_before.iter().any(|name| !data_after.contains(name)),
        "prune deleted no pack: {out}"
    );
    b.run(["check", "--read-data"]).ok();
    let target2 = t.join("restore2");
    b.restore("latest", &target2).ok();
    compare_tree_contents(&src, &under(&target2, &src));
}

#[test]
fn s3_errors_are_one_clear_line() {
    let Some(endpoint) = test_endpoint("s3_errors_are_one_clear_line") else {
        return;
    };
    let t = TestDir::new();
    let b = s3_bunker(&t, &endpoint, "no-such-bucket-anywhere", "p");
    let out = b.run(["snapshots"]);
    out.code(1);
    assert!(
        out.stderr
            .contains("bucket no-such-bucket-anywhere does not exist"),
        "{out}"
    );
    let bucket = unique_bucket("cli-none");
    create_bucket(&endpoint, &bucket, false);
    s3_bunker(&t, &endpoint, &bucket, "p")
        .run(["snapshots"])
        .code(10);
    // Asking for a lock on a bucket without Object Lock is refused before writing anything.
    let out = s3_bunker(&t, &endpoint, &bucket, "p").init_with(&[
        "--lock-mode",
        "governance",
        "--lock-period",
        "1d",
    ]);
    out.code(1);
    assert!(out.stderr.contains("Object Lock"), "{out}");
    assert!(
        list_names(&endpoint, &bucket, "p", "").is_empty(),
        "init left objects behind"
    );
    // Plain HTTP to a non-loopback endpoint needs the opt-in.
    let out = t
        .bunker()
        .with_repo(Some(Path::new("s3://bkt/p")))
        .with_env("AWS_ENDPOINT_URL", "http://192.0.2.1:9000")
        .run(["snapshots"]);
    out.code(1);
    assert!(out.stderr.contains("BUNKER_S3_ALLOW_HTTP=1"), "{out}");
}

/// Names under `prefix/kind` in the bucket.
fn list_names(endpoint: &str, bucket: &str, prefix: &str, kind: &str) -> Vec<String> {
    let backend = S3Backend::connect(location(endpoint, bucket, prefix)).expect("connect");
    let mut names: Vec<String> = backend
        .list(kind)
        .expect("list")
        .into_iter()
        .map(|m| m.name)
        .collect();
    names.sort();
    names
}

#[test]
fn locked_repository_objects_resist_delete_and_overwrite() {
    let Some(endpoint) = test_endpoint("locked_repository_objects_resist_delete_and_overwrite")
    else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("cli-lock");
    create_bucket(&endpoint, &bucket, true);
    let b = s3_bunker(&t, &endpoint, &bucket, "r");
    let started = SystemTime::now();
    b.run([
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
        "--lock-mode",
        "compliance",
        "--lock-period",
        "2d",
    ])
    .ok();
    let src = t.join("src");
    build_tree(&src, 7);
    b.backup(&[&src], &[]).ok();
    write_random_file(&src.join("b/c/three.bin"), 8, 7_000);
    b.backup(&[&src], &[]).ok();

    // Every object, config and key slots included, carries a compliance lock of >= 2 days.
    let s3 = S3Backend::connect(location(&endpoint, &bucket, "r")).expect("connect");
    let objects = s3.list("").expect("list");
    let kinds = ["config", "keys/", "snapshots/", "index/", "data/", "tree/"];
    for kind in kinds {
        assert!(
            objects.iter().any(|o| o.name.starts_with(kind)),
            "no {kind} object: {objects:?}"
        );
    }
    let mut originals = Vec::new();
    for object in &objects {
        let info = s3.lock_info(&object.name).expect("head");
        assert_eq!(info.mode.as_deref(), Some("COMPLIANCE"), "{}", object.name);
        let until = info.retain_until.expect("retain-until");
        assert!(
            until >= started + Duration::from_secs(2 * 86400),
            "{} locked only until {until:?}",
            object.name
        );
        let version = info.version.expect("a version id");
        originals.push((
            object.name.clone(),
            version,
            s3.get(&object.name).expect("get"),
        ));
    }

    // With the repository's own credentials: versioned deletes are refused (403), and an
    // overwrite only adds a version, leaving the original intact.
    for (name, version, bytes) in &originals {
        match s3.delete_version(name, version) {
            Err(Error::Locked { object, .. }) => assert_eq!(&object, name),
            other => panic!("versioned delete of {name}: expected Locked, got {other:?}"),
        }
        s3.overwrite_unconditionally(name, b"ransomware was here")
            .expect("overwrite");
        assert_eq!(
            &s3.get_version(name, version).expect("original"),
            bytes,
            "{name}"
        );
        // bunker's own create-only put cannot overwrite either.
        assert!(matches!(
            s3.put_if_absent(name, b"x"),
            Err(Error::AlreadyExists { .. })
        ));
    }
    // The attacker's versions carry no lock: removing them brings the originals back.
    for (name, version, bytes) in &originals {
        let current = s3.lock_info(name).expect("head");
        let attacker = current.version.expect("version");
        assert_ne!(
            &attacker, version,
            "{name}: the overwrite made no new version"
        );
        assert_eq!(
            current.retain_until, None,
            "{name}: the overwrite got a lock"
        );
        s3.delete_version(name, &attacker)
            .expect("delete the attacker's version");
        assert_eq!(&s3.get(name).expect("get"), bytes, "{name} after recovery");
    }

    // Forget of a locked snapshot hides it behind a forget marker and names the date; the
    // object itself stays, and bunker's prune cannot delete anything locked either.
    let out = b.run(["forget", "--keep-last", "1"]);
    out.ok();
    assert!(out.stdout.contains("locked until"), "{out}");
    assert_eq!(b.snapshots().len(), 1);
    let markers = s3.list("forgotten/").expect("list markers");
    assert_eq!(markers.len(), 1, "one marker per forgotten snapshot");
    let marker_lock = s3.lock_info(&markers[0].name).expect("head marker");
    assert!(
        marker_lock
            .retain_until
            .is_some_and(|until| until > started + Duration::from_secs(2 * 86400 - 60)),
        "the marker is locked like every object: {marker_lock:?}"
    );
    b.run(["prune", "--grace", "0"]).ok();
    assert!(s3.list("").expect("list").len() >= objects.len());
    for (name, _, bytes) in &originals {
        assert_eq!(&s3.get(name).expect("get"), bytes, "{name} after prune");
    }
    assert_eq!(s3.list("forgotten/").expect("list markers").len(), 1);
    // `lock extend` has nothing to do right after writing; every snapshot restores.
    let out = b.run(["lock", "extend", "--json"]);
    out.ok();
    assert_eq!(out.json()["extended"], 0, "{out}");
    for (i, snap) in b.snapshots().iter().enumerate() {
        let target = t.join(format!("restore-{i}"));
        b.restore(str_field(snap, "id"), &target).ok();
        assert!(under(&target, &src).join("a/one.bin").exists());
    }
    b.run(["check", "--read-data"]).ok();
}

#[test]
fn repair_packs_heals_a_damaged_pack_over_s3() {
    let Some(endpoint) = test_endpoint("repair_packs_heals_a_damaged_pack_over_s3") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("salvage");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "repo");
    b.init();
    let src = t.join("src");
    build_tree(&src, 7);
    b.backup(&[&src], &[]).ok();
    let first = b.snapshots()[0]["id"].as_str().expect("id").to_owned();

    // A bit flipped in storage: the object written again with one byte changed.
    let backend = S3Backend::connect(location(&endpoint, &bucket, "repo")).expect("connect");
    let packs = list_names(&endpoint, &bucket, "repo", "data/");
    let victim = packs
        .iter()
        .max_by_key(|name| backend.head(name).expect("head").size);
    let victim = victim.expect("a data pack").clone();
    let mut bytes = backend.get(&victim).expect("get");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    backend.delete(&victim).expect("delete");
    backend.put_if_absent(&victim, &bytes).expect("put");
    b.run(["check", "--read-data"]).code(4);

    let out = b.run(["repair", "packs", "--json"]);
    out.code(4);
    let report = out.json();
    assert_eq!(strings_of(&report["packs_deleted"]), vec![victim.clone()]);
    assert!(!list_names(&endpoint, &bucket, "repo", "data/").contains(&victim));

    // The next backup stores the lost blob again: both snapshots are whole.
    b.backup(&[&src], &[]).ok();
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore");
    b.restore(&first, &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
}

fn strings_of(value: &serde_json::Value) -> Vec<String> {
    let list = value.as_array().expect("an array");
    list.iter()
        .map(|v| v.as_str().expect("a string").to_owned())
        .collect()
}

/// The copies of the repository's metadata under the test's cache directory, by object
/// name (`snapshots/<hex>`, `tree/<hh>/<hex>`, ...), with their bytes (not the cache's own
/// files, whose names start with a dot).
fn metadata_copies(t: &TestDir) -> std::collections::BTreeMap<String, Vec<u8>> {
    let root = t.join("cache/bunker");
    let repositories: Vec<_> = std::fs::read_dir(&root)
        .expect("the cache directory")
        .map(|entry| entry.expect("entry").path())
        .collect();
    assert_eq!(repositories.len(), 1, "{repositories:?}");
    let objects = repositories[0].join("objects");
    let mut copies = std::collections::BTreeMap::new();
    let mut stack = vec![objects.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let hidden = path
                .file_name()
                .is_some_and(|name| name.to_string_lossy().starts_with('.'));
            if path.is_dir() {
                stack.push(path);
            } else if !hidden {
                let name = path.strip_prefix(&objects).expect("below objects");
                let name = name.to_str().expect("utf-8").to_owned();
                copies.insert(name, std::fs::read(&path).expect("read a copy"));
            }
        }
    }
    copies
}

#[test]
fn metadata_copies_answer_reads_and_check_reads_the_store() {
    let Some(endpoint) = test_endpoint("metadata_copies_answer_reads_and_check_reads_the_store")
    else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("meta-cache");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "repo");
    b.init();
    let src = t.join("src");
    build_tree(&src, 11);
    b.backup(&[&src], &[]).ok();
    // Every tree of the first snapshot is in the one tree pack its backup wrote.
    let first = b.snapshots()[0]["id"].as_str().expect("id").to_owned();
    let first_tree_packs = list_names(&endpoint, &bucket, "repo", "tree/");
    assert_eq!(first_tree_packs.len(), 1, "{first_tree_packs:?}");
    write_random_file(&src.join("a/two.bin"), 12, 50_000);
    b.backup(&[&src], &[]).ok();

    // What the backups wrote and read is copied: every snapshot, index segment and tree
    // pack, byte for byte; no data pack, heartbeat or key slot.
    let backend = S3Backend::connect(location(&endpoint, &bucket, "repo")).expect("connect");
    let copies = metadata_copies(&t);
    let mut metadata = Vec::new();
    for kind in ["snapshots/", "index/", "tree/"] {
        metadata.extend(list_names(&endpoint, &bucket, "repo", kind));
    }
    metadata.sort();
    assert_eq!(copies.keys().cloned().collect::<Vec<_>>(), metadata);
    for (name, bytes) in &copies {
        assert_eq!(bytes, &backend.get(name).expect("get"), "{name}");
    }

    // A tree pack damaged in the bucket: commands that read trees use the copy, which
    // still hashes to its name; check and --no-cache read the bucket and find the damage.
    let victim = first_tree_packs[0].clone();
    let mut bytes = backend.get(&victim).expect("get");
    // Inside the pack's first blob (after the 40-byte header): a tree the first snapshot
    // reads, whichever it is.
    bytes[60] ^= 0x40;
    backend.delete(&victim).expect("delete");
    backend.put_if_absent(&victim, &bytes).expect("put");
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
    let listing = b.run(["ls", &first]);
    listing.ok();
    assert!(listing.stdout.contains("two.bin"), "{listing}");
    let out = b.run(["check"]);
    out.code(4);
    assert!(out.stdout.contains("does not authenticate"), "{out}");
    assert!(out.stdout.contains(&format!("(in {victim})")), "{out}");
    let out = b.run(["ls", &first, "--no-cache"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("does not authenticate"), "{out}");

    // Repair salvages every blob of the damaged tree pack from this host's copy: nothing is
    // lost, and the bucket alone serves every tree again.
    let out = b.run(["repair", "packs", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(report["blobs_lost"], 0, "{out}");
    assert_eq!(report["damaged_packs"][0]["pack"], victim.as_str(), "{out}");
    assert_eq!(report["damaged_packs"][0]["from_host_copy"], true, "{out}");
    assert!(!list_names(&endpoint, &bucket, "repo", "tree/").contains(&victim));
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore-uncached");
    b.run([
        "restore",
        "latest",
        "--target",
        target.to_str().expect("utf-8"),
        "--no-cache",
    ])
    .ok();
    compare_tree_contents(&src, &under(&target, &src));

    // Another host (its own cache) forgets the first snapshot and prunes: this host's next
    // listing drops the copies of what is gone from the bucket.
    let other = t.join("other-cache");
    let other_cache = other.to_str().expect("utf-8");
    b.run(["--cache-dir", other_cache, "forget", &first]).ok();
    assert!(metadata_copies(&t).contains_key(&format!("snapshots/{first}")));
    assert_eq!(b.snapshots().len(), 1);
    let copies = metadata_copies(&t);
    assert!(
        !copies.contains_key(&format!("snapshots/{first}")),
        "{:?}",
        copies.keys()
    );
    assert!(copies.keys().all(|name| !name.starts_with("data/")));
}

/// A TCP proxy to an HTTP endpoint that forwards each connection's bytes at most `up`
/// bytes per second towards the server and `down` towards the client (a slow link), and
/// counts them.
struct SlowLink {
    endpoint: String,
    sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SlowLink {
    fn start(upstream: &str, up: u64, down: u64) -> SlowLink {
        use std::net::{TcpListener, TcpStream};
        use std::sync::Arc;
        use std::sync::atomic::AtomicU64;

        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let endpoint = format!("http://{}", listener.local_addr().expect("proxy address"));
        let (sent, received) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let counters = (Arc::clone(&sent), Arc::clone(&received));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (Ok(client_reader), Ok(server_reader)) =
                    (client.try_clone(), server.try_clone())
                else {
                    continue;
                };
                let (sent, received) = (Arc::clone(&counters.0), Arc::clone(&counters.1));
                std::thread::spawn(move || pump(client_reader, server, up, &sent));
                std::thread::spawn(move || pump(server_reader, client, down, &received));
            }
        });
        SlowLink {
            endpoint,
            sent,
            received,
        }
    }

    /// Bytes forwarded towards the server so far.
    fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes forwarded towards the client so far.
    fn received(&self) -> u64 {
        self.received.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Copies `from` into `to` at most `rate` bytes per second, counting into `counter`, until
/// either side closes; then closes the writing side of `to`.
fn pump(
    mut from: std::net::TcpStream,
    mut to: std::net::TcpStream,
    rate: u64,
    counter: &std::sync::atomic::AtomicU64,
) {
    use std::io::{Read, Write};
    let mut buffer = vec![0u8; 16 << 10];
    while let Ok(n) = from.read(&mut buffer) {
        if n == 0 || to.write_all(&buffer[..n]).is_err() {
            break;
        }
        counter.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Waits until `moved()` passes `bytes` (a pack in flight), sends SIGINT to `child` and
/// returns its output and how long it took to exit after the signal.
fn interrupt_once_past(
    child: std::process::Child,
    shown: String,
    bytes: u64,
    moved: impl Fn() -> u64,
) -> (Output, Duration) {
    let waited = std::time::Instant::now();
    while moved() < bytes {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "{} bytes moved, waiting for {bytes}",
            moved()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    send_signal(child.id(), "INT");
    let interrupted = std::time::Instant::now();
    let out = wait_output(child, shown, Duration::from_secs(120));
    (out, interrupted.elapsed())
}

/// Ctrl-C during a backup to a slow S3 endpoint stops it at once: the pack puts in flight
/// are abandoned instead of waited for (16 MiB at 1 MiB/s each), the exit code is 130, and
/// the repository stays whole for the next backup.
#[test]
fn an_interrupted_backup_abandons_its_pack_puts_to_a_slow_store() {
    let Some(endpoint) = test_endpoint("an_interrupted_backup_abandons_its_pack_puts") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("abandon");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "r");
    b.init();
    let src = t.join("src");
    write_random_file(&src.join("big.bin"), 7, 40 << 20);

    let uplink = SlowLink::start(&endpoint, 1 << 20, 1 << 30);
    let slow = s3_bunker(&t, &uplink.endpoint, &bucket, "r");
    let (child, shown) = slow.spawn([OsStr::new("backup"), src.as_os_str()]);
    // A pack put is in flight once more than the small objects went up.
    let (out, took) = interrupt_once_past(child, shown, 2 << 20, || uplink.sent());
    out.code(130);
    assert!(out.stderr.contains("backup interrupted"), "{out}");
    // Waiting for the pack would take 7 s more at least (14 MiB at 2 MiB/s).
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}: {out}"
    );

    b.backup(&[&src], &[]).ok();
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
}

/// The same for `copy` into S3: Ctrl-C stops it at once, and the next copy finishes it.
#[test]
fn an_interrupted_copy_abandons_its_pack_puts_to_a_slow_store() {
    let Some(endpoint) = test_endpoint("an_interrupted_copy_abandons_its_pack_puts") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("abandon-copy");
    create_bucket(&endpoint, &bucket, false);
    let local = t.bunker();
    local.init();
    let src = t.join("src");
    write_random_file(&src.join("big.bin"), 8, 40 << 20);
    local.backup(&[&src], &[]).ok();

    let uplink = SlowLink::start(&endpoint, 1 << 20, 1 << 30);
    let copy = |endpoint: &str| {
        let mut b = local.with_env("BUNKER_TO_PASSWORD", "target password");
        for (key, value) in env_vars(endpoint) {
            b = b.with_env(key, value);
        }
        b
    };
    let to = format!("s3://{bucket}/copy");
    let (child, shown) = copy(&uplink.endpoint).spawn(["copy", "--to", &to]);
    let (out, took) = interrupt_once_past(child, shown, 2 << 20, || uplink.sent());
    out.code(130);
    assert!(out.stderr.contains("copy interrupted"), "{out}");
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}: {out}"
    );

    copy(&endpoint).run(["copy", "--to", &to]).ok();
    let target = s3_bunker(&t, &endpoint, &bucket, "copy").with_password(Some("target password"));
    target.run(["check", "--read-data"]).ok();
    let restored = t.join("restore");
    target.restore("latest", &restored).ok();
    compare_tree_contents(&src, &under(&restored, &src));
}

/// The same for a restore from a slow S3 endpoint: the range reads in flight (8 MiB at
/// 1 MiB/s each) are abandoned, and a second restore into the same target finishes it.
#[test]
fn an_interrupted_restore_abandons_its_reads_from_a_slow_store() {
    let Some(endpoint) = test_endpoint("an_interrupted_restore_abandons_its_reads") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("abandon-restore");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "r");
    b.init();
    let src = t.join("src");
    write_random_file(&src.join("big.bin"), 9, 40 << 20);
    b.backup(&[&src], &[]).ok();

    let downlink = SlowLink::start(&endpoint, 1 << 30, 1 << 20);
    let slow = s3_bunker(&t, &downlink.endpoint, &bucket, "r");
    let target = t.join("restore");
    let (child, shown) = slow.spawn([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--target"),
        target.as_os_str(),
    ]);
    let (out, took) = interrupt_once_past(child, shown, 2 << 20, || downlink.received());
    out.code(130);
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}: {out}"
    );

    b.restore("latest", &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
}

/// A file streamed to standard output from a slow S3 endpoint: Ctrl-C drops the reads of
/// its 8 MiB chunks in flight instead of waiting for them.
#[test]
fn an_interrupted_stream_abandons_its_reads_from_a_slow_store() {
    let Some(endpoint) = test_endpoint("an_interrupted_stream_abandons_its_reads") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("abandon-stream");
    create_bucket(&endpoint, &bucket, false);
    let b = s3_bunker(&t, &endpoint, &bucket, "r");
    b.init();
    let src = t.join("src");
    let big = src.join("big.bin");
    write_random_file(&big, 10, 40 << 20);
    b.backup(&[&src], &["--fixed-chunks", "8M"]).ok();

    let downlink = SlowLink::start(&endpoint, 1 << 30, 1 << 20);
    let slow = s3_bunker(&t, &downlink.endpoint, &bucket, "r");
    let spec = format!("latest:{}", big.display());
    let (child, shown) = slow.spawn(["restore", &spec, "--stdout"]);
    let (out, took) = interrupt_once_past(child, shown, 2 << 20, || downlink.received());
    out.code(130);
    // Each read in flight would take up to 8 s more.
    assert!(
        took < Duration::from_secs(3),
        "stopped after {took:?}: {out}"
    );
}
