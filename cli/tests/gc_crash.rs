//! `kill -9` of `bunker backup` and of `bunker prune --grace 0` at random points, each
//! followed by `bunker check` (exit 0: warnings about unindexed packs are fine, errors are
//! not); at the end a backup that restores the source exactly, and a final `prune --grace
//! 0` after which `check --read-data` passes and the backup still restores.
//!
//! The source is 120 MiB of seeded random data written once; between runs a few files are
//! rewritten, and every backup uses a new `--host` so no parent snapshot lets it skip
//! reading: a backup reads the whole tree and uploads the rewritten files (about a second
//! in the test build), which is the window the kills aim at. The delays are random from a
//! seed printed at the start (`BUNKER_CRASH_SEED=N` to replay one).
//!
//! A killed process never ends its session, so it stays "live" for `SESSION_TIMEOUT` (15
//! minutes) and every later prune waits for it before deleting anything. Only the first
//! prune kill (before any other process was killed) can therefore land in the deletion
//! phase; the later ones land in planning, repacking and condemning. The final prune is
//! asserted to keep every snapshot whole, not to free space. (The in-memory simulation,
//! `repo-format/tests/gc_simulation.rs`, moves its clock and crashes prunes mid-deletion.)
//! Then the kills' temp files (partial packs), made an hour old, are removed by a prune.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const FILES: u64 = 40;
const FILE_SIZE: u64 = 3 << 20;
/// Files rewritten before each backup.
const REWRITTEN: u64 = 16;

fn file_path(src: &Path, i: u64) -> PathBuf {
    src.join(format!("d{}", i % 4)).join(format!("f{i:02}.bin"))
}

struct Crasher {
    t: TestDir,
    b: Bunker,
    src: PathBuf,
    rng: XorShift,
    generation: u64,
    hosts: u64,
    log: Vec<String>,
    started: Instant,
}

impl Crasher {
    fn note(&mut self, text: String) {
        note(&text);
        self.log.push(format!(
            "[{:>6.2}s] {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// Rewrites a few files with new content (a new inode each).
    fn mutate(&mut self) {
        self.generation += 1;
        for _ in 0..REWRITTEN {
            let i = self.rng.next_u64() % FILES;
            let path = file_path(&self.src, i);
            std::fs::remove_file(&path).expect("remove file");
            write_random_file(&path, 1_000_000 * self.generation + i, FILE_SIZE);
        }
    }

    fn next_host(&mut self) -> String {
        self.hosts += 1;
        format!("crash-{}", self.hosts)
    }

    /// Random delay: a quarter of them within the first 30 ms (start-up, opening the
    /// repository, the first heartbeat), the rest anywhere up to `max`.
    fn delay(&mut self, max: Duration) -> Duration {
        let roll = self.rng.next_u64();
        let ms = if roll.is_multiple_of(4) {
            (roll >> 8) % 30
        } else {
            (roll >> 8) % (max.as_millis() as u64).max(1)
        };
        Duration::from_millis(ms)
    }

    /// Starts `args`, sends SIGKILL after `delay` (with the `kill` command), waits.
    fn kill_after(&mut self, args: &[&str], delay: Duration) -> Output {
        let (child, shown) = self.b.spawn(args);
        let pid = child.id();
        std::thread::sleep(delay);
        send_signal(pid, "KILL");
        let out = wait_output(child, shown, Duration::from_secs(120));
        let outcome = if out.code == -9 {
            "killed".to_owned()
        } else {
            format!("had already exited with {}", out.code)
        };
        self.note(format!(
            "{} after {} ms: {outcome}",
            args.join(" "),
            delay.as_millis()
        ));
        assert!(
            out.code == -9 || out.code == 0,
            "{} failed on its own before the kill\n{out}",
            args[0]
        );
        out
    }

    /// `check` must exit 0 with no errors (warnings are fine).
    fn check(&mut self, what: &str) {
        let out = self.b.run(["check", "--json"]);
        let report = out.json();
        let warnings = report["warnings"].as_array().map_or(0, Vec::len);
        self.note(format!(
            "check after {what}: exit {}, {warnings} warning(s)",
            out.code
        ));
        assert!(
            out.code == 0 && report["errors"].as_array().is_some_and(Vec::is_empty),
            "check after {what} found damage\n{out}\n--- log ---\n{}",
            self.log.join("\n")
        );
    }

    fn run_ok(&mut self, args: &[&str]) -> Output {
        let out = self.b.run(args);
        self.note(format!("{} -> {}", args.join(" "), out.code));
        assert_eq!(out.code, 0, "{out}\n--- log ---\n{}", self.log.join("\n"));
        out
    }

    fn backup(&mut self) -> (String, Duration) {
        let host = self.next_host();
        let src = self.src.clone();
        let started = Instant::now();
        let out = self.run_ok(&[
            "backup",
            src.to_str().expect("utf-8"),
            "--host",
            &host,
            "--json",
        ]);
        (
            str_field(&out.json(), "snapshot_id").to_owned(),
            started.elapsed(),
        )
    }

    /// Restores `id` and compares it with the source, byte for byte and entry by entry.
    fn restore_matches_source(&mut self, id: &str) {
        let target = self.t.join(format!("restore-{}", &id[..8]));
        self.run_ok(&["restore", id, "--target", target.to_str().expect("utf-8")]);
        compare_trees(&self.src, &under(&target, &self.src));
        std::fs::remove_dir_all(&target).expect("remove restore");
    }
}

#[test]
fn kill_9_of_backup_and_prune_never_damages_the_repository() {
    let seed = std::env::var("BUNKER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x6b11_1009_u64);
    note(format!(
        "crash seed {seed} (replay with BUNKER_CRASH_SEED={seed})"
    ));
    let t = TestDir::new();
    let b = t.bunker().with_timeout(Duration::from_secs(120));
    b.init();
    let src = t.join("src");
    for i in 0..FILES {
        write_random_file(&file_path(&src, i), i, FILE_SIZE);
    }
    let mut c = Crasher {
        t,
        b,
        src,
        rng: XorShift::new(seed),
        generation: 0,
        hosts: 0,
        log: Vec::new(),
        started: Instant::now(),
    };
    let (_, full) = c.backup();
    c.note(format!("the first backup took {} ms", full.as_millis()));
    let prune_window = Duration::from_millis(500);
    // The kills of backups aim within the longest backup seen so far (plus a fifth).
    let mut longest_backup = Duration::ZERO;

    // Prunes killed while garbage is to be deleted: the first one may die mid-deletion
    // (after it, its own dead session holds every later deletion back).
    for round in 0..4 {
        c.mutate();
        let (_, took) = c.backup();
        longest_backup = longest_backup.max(took);
        c.run_ok(&["forget", "--keep-last", "1", "--group-by", "paths"]);
        let delay = c.delay(prune_window);
        c.kill_after(&["prune", "--grace", "0"], delay);
        c.check(&format!("prune kill {round}"));
    }
    c.note(format!(
        "backups took up to {} ms; killing them within that",
        longest_backup.as_millis()
    ));
    // Backups killed anywhere between start-up and their snapshot.
    for round in 0..10 {
        c.mutate();
        let host = c.next_host();
        let src = c.src.to_str().expect("utf-8").to_owned();
        let delay = c.delay(longest_backup + longest_backup / 5);
        c.kill_after(&["backup", &src, "--host", &host], delay);
        c.check(&format!("backup kill {round}"));
    }
    // Prunes killed while killed sessions are live: planning, repacking, condemning (no
    // deleting, so they are quicker).
    for round in 0..4 {
        c.mutate();
        c.backup();
        c.run_ok(&["forget", "--keep-last", "1", "--group-by", "paths"]);
        let delay = c.delay(prune_window / 3);
        c.kill_after(&["prune", "--grace", "0"], delay);
        c.check(&format!("late prune kill {round}"));
    }

    // The repository still works: a backup restores the source exactly, a final prune
    // keeps every snapshot whole.
    c.mutate();
    let (last, _) = c.backup();
    c.restore_matches_source(&last);
    c.run_ok(&["prune", "--grace", "0"]);
    c.run_ok(&["check", "--read-data"]);
    let snapshots = c.b.snapshots();
    assert!(
        snapshots.iter().any(|s| str_field(s, "id") == last),
        "the last backup's snapshot is gone"
    );
    c.restore_matches_source(&last);
    c.note(format!("{} snapshots left, all checked", snapshots.len()));

    // The killed writers' partial packs, and one planted beside them, once older than
    // every live session: prune removes them all and nothing else.
    let repo = c.b.repo().to_path_buf();
    write_random_file(&repo.join("data").join(".tmp-1-1"), 7, 100_000);
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after epoch")
        .as_secs() as i64
        - 3600;
    let temps = temp_files(&repo);
    for temp in &temps {
        set_mtime(temp, an_hour_ago, 0);
    }
    c.note(format!("{} temp files left by the kills", temps.len() - 1));
    let out = c.run_ok(&["prune", "--grace", "0", "--json"]);
    let report = &out.json()["report"];
    assert_eq!(report["temps_removed"], temps.len(), "{out}");
    assert_eq!(temp_files(&repo), Vec::<PathBuf>::new(), "{out}");
    c.run_ok(&["check", "--read-data"]);
    c.restore_matches_source(&last);
}
