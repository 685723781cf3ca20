//! Real processes racing on one local repository: two `bunker backup` loops (two hosts,
//! each over its own tree that changes every round, with content shared between the two
//! trees so they deduplicate) and a `bunker forget --keep-last 2` + `bunker prune --grace
//! 0` loop, all at once. (`forget` has no `--prune` flag, so the loop runs the two
//! commands.) Every command must succeed (no documented reason for a failure under
//! contention exists) and never panic; afterwards `check --read-data` passes and every
//! snapshot left restores, byte for byte, the tree state it was taken from (regenerated
//! from its host and round, recorded as a tag). A race takes about a second; the test
//! runs [`RACES`] of them (`BUNKER_GC_RACES=N` to run more).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;

/// Backup rounds per host.
const ROUNDS: u32 = 6;
/// The forget + prune loop runs at least this often while the backups run.
const MIN_PRUNES: u32 = 4;
/// Races run (each in a fresh repository; `BUNKER_GC_RACES=N` for more).
const RACES: u32 = 3;
/// Upper bound on one race.
const DEADLINE: Duration = Duration::from_secs(150);

/// The two writers: host name and an offset into the shared content.
const HOSTS: [(&str, u32); 2] = [("alpha", 0), ("beta", 2)];

/// A tree as files (relative path) and bytes.
type TreeState = BTreeMap<String, Vec<u8>>;

/// What `host`'s tree holds in `round`: a window of shared files (the same bytes in both
/// trees, sliding over the rounds), files of its own that come and go, a file rewritten
/// every round (its length changes too), and a deeper directory.
fn tree_state(host: &str, offset: u32, round: u32) -> TreeState {
    let host_seed = u64::from(host.as_bytes()[0]) << 32;
    let mut files = TreeState::new();
    for k in 0..5 {
        let shared = (round + offset + k) % 9;
        files.insert(
            format!("shared/s{shared}.bin"),
            random_bytes(
                1_000 + u64::from(shared),
                200_000 + 60_000 * shared as usize,
            ),
        );
    }
    for j in round.saturating_sub(2)..=round {
        files.insert(
            format!("own/u{j}.bin"),
            random_bytes(host_seed + 100 + u64::from(j), 500_000 + 7 * j as usize),
        );
    }
    files.insert(
        "own/changing.bin".into(),
        random_bytes(
            host_seed + 200 + u64::from(round),
            2_500_000 + 1_000 * round as usize,
        ),
    );
    files.insert(
        format!("own/deep/a/b/r{}.txt", round % 3),
        format!("{host} round {round}\n").repeat(50).into_bytes(),
    );
    files.insert("README".into(), format!("tree of {host}\n").into_bytes());
    files
}

/// Makes `dir` hold exactly `state` (files added, rewritten, removed; empty dirs pruned).
fn apply_state(dir: &Path, state: &TreeState) {
    let present = read_tree(dir);
    for path in present.keys() {
        if !state.contains_key(path) {
            fs::remove_file(dir.join(path)).expect("remove file");
        }
    }
    for (path, bytes) in state {
        if present.get(path) != Some(bytes) {
            let target = dir.join(path);
            // Rewritten files get a new inode, so no metadata cache can mistake them.
            let _ = fs::remove_file(&target);
            write_file(&target, bytes);
        }
    }
    remove_empty_dirs(dir);
}

fn remove_empty_dirs(dir: &Path) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            remove_empty_dirs(&path);
            if fs::read_dir(&path).expect("read dir").next().is_none() {
                fs::remove_dir(&path).expect("remove empty dir");
            }
        }
    }
}

/// Every regular file below `dir` (relative path, bytes).
fn read_tree(dir: &Path) -> TreeState {
    let mut out = TreeState::new();
    if !dir.exists() {
        return out;
    }
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                stack.push(path);
            } else {
                assert!(
                    meta.is_file(),
                    "{}: only regular files expected",
                    path.display()
                );
                let rel = path
                    .strip_prefix(dir)
                    .expect("below")
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, fs::read(&path).expect("read file"));
            }
        }
    }
    out
}

/// Everything every command printed, for the failure message.
struct Transcript(Mutex<Vec<String>>);

impl Transcript {
    fn record(&self, who: &str, out: &Output, started: Instant) {
        let line = format!(
            "[{:>6.2}s {who}] {} -> {}\n{}{}",
            started.elapsed().as_secs_f64(),
            out.command,
            out.code,
            indent(&out.stdout),
            indent(&out.stderr)
        );
        self.0.lock().expect("transcript").push(line);
    }

    fn dump(&self) -> String {
        self.0.lock().expect("transcript").join("\n")
    }
}

fn indent(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .take(12)
        .map(|l| format!("    {l}\n"))
        .collect()
}

#[test]
fn backups_forgets_and_prunes_race_without_losing_data() {
    let races: u32 = std::env::var("BUNKER_GC_RACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(RACES);
    let mut failed = Vec::new();
    for race in 1..=races {
        if let Err(report) = run_race(race) {
            failed.push(report);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {races} races had commands fail:\n{}",
        failed.len(),
        failed.join("\n\n")
    );
}

/// One race in a fresh repository. Data loss panics at once; commands that failed
/// (cleanly) are returned, with the transcript.
fn run_race(race: u32) -> Result<(), String> {
    let t = TestDir::new();
    let b = t.bunker().with_timeout(Duration::from_secs(120));
    b.init();
    let started = Instant::now();
    let transcript = Transcript(Mutex::new(Vec::new()));
    let backups_running = AtomicUsize::new(HOSTS.len());
    // Commands that failed during the race: the data is checked first, then these fail
    // the test (no failure under contention is documented as expected).
    let failures: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let sources: Vec<PathBuf> = HOSTS
        .iter()
        .map(|(h, _)| t.join(format!("src-{h}")))
        .collect();

    std::thread::scope(|scope| {
        for ((host, offset), src) in HOSTS.iter().zip(&sources) {
            let (b, transcript, backups_running, failures) =
                (&b, &transcript, &backups_running, &failures);
            scope.spawn(move || {
                for round in 0..ROUNDS {
                    apply_state(src, &tree_state(host, *offset, round));
                    let out = b.backup(
                        &[src],
                        &["--host", host, "--tag", &format!("round={round}"), "--json"],
                    );
                    transcript.record(host, &out, started);
                    if out.code != 0 {
                        failures.lock().expect("failures").push(out.to_string());
                    }
                }
                backups_running.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let (b, transcript, backups_running, failures) =
            (&b, &transcript, &backups_running, &failures);
        scope.spawn(move || {
            let mut runs = 0;
            while runs < MIN_PRUNES || backups_running.load(Ordering::SeqCst) > 0 {
                assert!(
                    started.elapsed() < DEADLINE,
                    "the race took longer than {DEADLINE:?}\n{}",
                    transcript.dump()
                );
                for args in [
                    &["forget", "--keep-last", "2"][..],
                    &["prune", "--grace", "0"][..],
                ] {
                    let out = b.run(args);
                    transcript.record("gc", &out, started);
                    if out.code != 0 {
                        failures.lock().expect("failures").push(out.to_string());
                    }
                }
                runs += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        });
    });
    note(format!(
        "race {race} finished in {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    // The repository is sound, and a quiet forget + prune round (nothing running, so every
    // plan executes) keeps it so.
    for args in [
        &["check", "--read-data"][..],
        &["forget", "--keep-last", "2"][..],
        &["prune", "--grace", "0"][..],
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

    // Every snapshot left restores the tree it was taken from.
    let snapshots = b.snapshots();
    assert_eq!(
        snapshots.len(),
        2 * HOSTS.len(),
        "forget --keep-last 2 keeps two snapshots per host"
    );
    for snap in &snapshots {
        let host = str_field(snap, "host");
        let (index, (_, offset)) = HOSTS
            .iter()
            .enumerate()
            .find(|(_, (h, _))| *h == host)
            .unwrap_or_else(|| panic!("unexpected host in {snap}"));
        let round: u32 = snap["tags"]
            .as_array()
            .and_then(|tags| tags.iter().find_map(|t| t.as_str()?.strip_prefix("round=")))
            .and_then(|r| r.parse().ok())
            .unwrap_or_else(|| panic!("no round tag in {snap}"));
        let id = str_field(snap, "id");
        let target = t.join(format!("restore-{}", &id[..8]));
        let out = b.restore(id, &target);
        assert_eq!(
            out.code,
            0,
            "{out}\n--- all commands ---\n{}",
            transcript.dump()
        );
        let restored = read_tree(&under(&target, &sources[index]));
        let expected = tree_state(host, *offset, round);
        let names = |s: &TreeState| s.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            names(&restored),
            names(&expected),
            "snapshot {id} ({host} round {round}): restored files differ"
        );
        for (path, bytes) in &expected {
            assert!(
                restored[path] == *bytes,
                "snapshot {id} ({host} round {round}): {path} restored with different bytes"
            );
        }
        fs::remove_dir_all(&target).expect("clean restore");
    }
    let failures = failures.into_inner().expect("failures");
    if failures.is_empty() {
        return Ok(());
    }
    Err(format!(
        "race {race}: the data survived, but {} command(s) failed under contention:\n{}\n--- all commands of race {race} ---\n{}",
        failures.len(),
        failures.join("\n"),
        transcript.dump()
    ))
}
