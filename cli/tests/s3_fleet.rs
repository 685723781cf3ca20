//! Many hosts, one bucket (issue 5, item 5): four `bunker backup` processes (hosts host-a
//! to host-d, each over its own tree: a base tree shared byte for byte by all four, a
//! shared file that changes every round, and files of its own) run [`ROUNDS`] rounds each,
//! changing their trees between rounds, while a `forget --keep-last 2 --prune --grace 0`
//! loop runs against the same bucket on the S3 test server (moto, started by
//! scripts/test.sh). Afterwards `check --read-data` is clean, every snapshot left restores
//! exactly (bytes and metadata) the tree its host had in that round (a `cp -a` copy taken
//! right after each backup), and the bucket holds far less than the four hosts backed up.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bunker_backend_s3::S3Backend;
use bunker_backend_s3::testing::{create_bucket, env_vars, location, test_endpoint, unique_bucket};
use bunker_repo_format::backend::Backend;
use common::*;

/// The writers.
const HOSTS: [&str; 4] = ["host-a", "host-b", "host-c", "host-d"];
/// Backup rounds per host.
const ROUNDS: u32 = 4;
/// Snapshots kept per host by the forget loop.
const KEEP: usize = 2;
/// The forget + prune loop runs at least this often.
const MIN_PRUNES: u32 = 3;
/// Upper bound on the race.
const DEADLINE: Duration = Duration::from_secs(150);
/// Base files shared by every host (identical bytes), and their sizes.
const BASE_FILES: u64 = 6;
const BASE_FILE_SIZE: usize = 300_000;
/// The shared file that changes every round (the same new bytes on every host).
const ROLLING_SIZE: usize = 200_000;
/// Each host's own new file per round, and a file it keeps all along.
const OWN_ROUND_SIZE: usize = 120_000;
const OWN_KEPT_SIZE: usize = 80_000;
/// Allowance for what is not file content: trees, index segments, snapshots, config, key
/// slot, audit records, session heartbeats, GC plans, plus per-blob sealing overhead.
const METADATA_SLACK: u64 = 1 << 20;

/// Seed of a host's own content.
fn host_seed(host: &str) -> u64 {
    u64::from(host.as_bytes()[5]) << 32
}

/// Makes `dir` hold what `host` has in `round`: file contents, modes, mtimes, a symlink.
/// Files that change get a new inode (written to a new name and renamed), so no files
/// cache can mistake them for the old ones.
fn build_round(dir: &Path, host: &str, round: u32) {
    let seed = host_seed(host);
    // The shared base: identical on every host, never changes.
    for k in 0..BASE_FILES {
        let path = dir.join(format!("base/lib/b{k}.bin"));
        if !path.exists() {
            write_file(&path, &random_bytes(7_000 + k, BASE_FILE_SIZE));
            chmod(&path, 0o644);
            set_mtime(&path, 1_700_000_000 + k as i64, 123_456_789);
        }
    }
    // A shared file replaced every round, the same bytes on every host.
    replace(
        &dir.join("base/rolling.bin"),
        &random_bytes(8_000 + u64::from(round), ROLLING_SIZE),
    );
    // Own files: one new per round, the one from two rounds back removed.
    replace(
        &dir.join(format!("own/r{round}.bin")),
        &random_bytes(seed + u64::from(round), OWN_ROUND_SIZE),
    );
    if let Some(old) = round.checked_sub(2) {
        fs::remove_file(dir.join(format!("own/r{old}.bin"))).expect("remove old own file");
    }
    let kept = dir.join("own/kept.bin");
    if !kept.exists() {
        write_file(&kept, &random_bytes(seed + 100, OWN_KEPT_SIZE));
    }
    // Metadata that changes: mode and mtime of the kept file, a private config file.
    chmod(
        &kept,
        if round.is_multiple_of(2) {
            0o600
        } else {
            0o640
        },
    );
    set_mtime(&kept, 1_710_000_000 + i64::from(round), round * 1000);
    let conf = dir.join("etc/host.conf");
    replace(
        &conf,
        format!("host = {host}\nround = {round}\n").as_bytes(),
    );
    chmod(&conf, 0o600);
    let link = dir.join("etc/current");
    let _ = fs::remove_file(&link);
    symlink(format!("../own/r{round}.bin"), &link).expect("symlink");
}

/// Writes `bytes` to `path` as a new inode.
fn replace(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    write_file(&tmp, bytes);
    fs::rename(&tmp, path).expect("rename into place");
}

/// `cp -a src dst`: the expected tree of one round, metadata included.
fn keep_copy(src: &Path, dst: &Path) {
    fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
    let status = Command::new("cp")
        .arg("-a")
        .arg(src)
        .arg(dst)
        .status()
        .expect("run cp -a");
    assert!(
        status.success(),
        "cp -a {} {}",
        src.display(),
        dst.display()
    );
}

/// The round a snapshot was taken in, from its `round=N` tag.
fn round_of(snap: &serde_json::Value) -> u32 {
    snap["tags"]
        .as_array()
        .and_then(|tags| tags.iter().find_map(|t| t.as_str()?.strip_prefix("round=")))
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no round tag in {snap}"))
}

/// Every command run, for failure messages.
#[derive(Default)]
struct Transcript(Mutex<Vec<String>>);

impl Transcript {
    fn record(&self, who: &str, out: &Output, started: Instant) {
        let text: String = out
            .all()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .take(8)
            .map(|l| format!("    {l}\n"))
            .collect();
        let line = format!(
            "[{:>6.2}s {who}] {} -> {}\n{text}",
            started.elapsed().as_secs_f64(),
            out.command,
            out.code
        );
        self.0.lock().expect("transcript").push(line);
    }

    fn dump(&self) -> String {
        self.0.lock().expect("transcript").join("")
    }
}

#[test]
fn four_hosts_and_a_prune_loop_share_one_bucket() {
    let Some(endpoint) = test_endpoint("four_hosts_and_a_prune_loop_share_one_bucket") else {
        return;
    };
    let t = TestDir::new();
    let bucket = unique_bucket("fleet");
    create_bucket(&endpoint, &bucket, false);
    let mut b = t
        .bunker()
        .with_repo(Some(Path::new(&format!("s3://{bucket}/fleet"))))
        .with_timeout(Duration::from_secs(120));
    for (key, value) in env_vars(&endpoint) {
        b = b.with_env(key, value);
    }
    b.init();

    let started = Instant::now();
    let transcript = Transcript::default();
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let running = AtomicUsize::new(HOSTS.len());
    let prunes = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for host in HOSTS {
            let (b, t, transcript, failures, running) = (&b, &t, &transcript, &failures, &running);
            scope.spawn(move || {
                let src = t.join(format!("src-{host}"));
                for round in 0..ROUNDS {
                    build_round(&src, host, round);
                    let tag = format!("round={round}");
                    let out = b.backup(&[&src], &["--host", host, "--tag", &tag]);
                    transcript.record(host, &out, started);
                    if out.code != 0 {
                        failures.lock().expect("failures").push(out.to_string());
                    }
                    keep_copy(&src, &t.join(format!("expected/{host}/{round}")));
                }
                running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let (b, transcript, failures, running, prunes) =
            (&b, &transcript, &failures, &running, &prunes);
        scope.spawn(move || {
            let keep = KEEP.to_string();
            while prunes.load(Ordering::SeqCst) < MIN_PRUNES as usize
                || running.load(Ordering::SeqCst) > 0
            {
                assert!(
                    started.elapsed() < DEADLINE,
                    "the race took longer than {DEADLINE:?}\n{}",
                    transcript.dump()
                );
                let out = b.run(["forget", "--keep-last", &keep, "--prune", "--grace", "0"]);
                transcript.record("gc", &out, started);
                if out.code != 0 {
                    failures.lock().expect("failures").push(out.to_string());
                }
                prunes.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
    });
    let race = started.elapsed();

    // The data first: the repository is sound and every snapshot left restores exactly.
    for args in [
        &["check", "--read-data"][..],
        &["forget", "--keep-last", "2", "--prune", "--grace", "0"][..],
        &["check", "--read-data"][..],
    ] {
        let out = b.run(args);
        transcript.record("final", &out, started);
        assert_eq!(
            out.code,
            0,
            "{out}\n--- all commands ---\n{}",
            transcript.dump()
        );
    }
    let snapshots = b.snapshots();
    let mut seen: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
    for snap in &snapshots {
        let host = str_field(snap, "host").to_owned();
        let round = round_of(snap);
        let id = str_field(snap, "id");
        let target = t.join(format!("restore-{}", &id[..8]));
        let out = b.restore(id, &target);
        assert_eq!(
            out.code,
            0,
            "{out}\n--- all commands ---\n{}",
            transcript.dump()
        );
        compare_tree_contents(
            &t.join(format!("expected/{host}/{round}")),
            &under(&target, &t.join(format!("src-{host}"))),
        );
        fs::remove_dir_all(&target).expect("clean restore");
        assert!(seen.entry(host).or_default().insert(round), "{snapshots:?}");
    }
    let last_two: BTreeSet<u32> = (ROUNDS - 2..ROUNDS).collect();
    for host in HOSTS {
        assert_eq!(
            seen.get(host),
            Some(&last_two),
            "{host}: forget --keep-last 2 keeps its last two rounds"
        );
    }

    // Cross-host deduplication: what the bucket holds against what the hosts backed up.
    let mut backed_up = 0u64;
    let mut shared: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut own: BTreeSet<Vec<u8>> = BTreeSet::new();
    for host in HOSTS {
        for round in 0..ROUNDS {
            for (path, bytes) in files_under(&t.join(format!("expected/{host}/{round}"))) {
                backed_up += bytes.len() as u64;
                if path.starts_with("base/") {
                    shared.insert(bytes);
                } else {
                    own.insert(bytes);
                }
            }
        }
    }
    let distinct = |set: &BTreeSet<Vec<u8>>| set.iter().map(|b| b.len() as u64).sum::<u64>();
    let (shared_bytes, own_bytes) = (distinct(&shared), distinct(&own));
    // Lock-free writers deduplicate against what is indexed, so hosts that back up the
    // same new content at the same moment may each store it once: at most one copy of
    // shared content per host, one of each host's own content, never one per snapshot.
    let bound = HOSTS.len() as u64 * shared_bytes + own_bytes + METADATA_SLACK;
    assert!(
        2 * bound < backed_up,
        "test data too small to show deduplication: bound {bound}, backed up {backed_up}"
    );
    let s3 = S3Backend::connect(location(&endpoint, &bucket, "fleet")).expect("connect");
    let objects = s3.list("").expect("list the bucket");
    let stored: u64 = objects.iter().map(|o| o.size).sum();
    let packs: u64 = objects
        .iter()
        .filter(|o| o.name.starts_with("data/"))
        .map(|o| o.size)
        .sum();
    note(format!(
        "fleet: race {:.1} s with {} prune runs; hosts backed up {backed_up} bytes \
         ({shared_bytes} distinct shared, {own_bytes} distinct own); bucket holds {stored} \
         bytes in {} objects ({packs} in data packs), bound {bound}",
        race.as_secs_f64(),
        prunes.load(Ordering::SeqCst),
        objects.len()
    ));
    assert!(
        stored <= bound,
        "the bucket holds {stored} bytes, more than the {bound} deduplication allows \
         ({backed_up} backed up)"
    );

    let failures = failures.into_inner().expect("failures");
    assert!(
        failures.is_empty(),
        "the data survived, but {} command(s) failed under contention:\n{}\n--- all commands ---\n{}",
        failures.len(),
        failures.join("\n"),
        transcript.dump()
    );
}
