//! End-to-end error paths: wrong password, missing repository, double init, unreadable
//! sources, files changing during backup, interrupted backups, corrupted and truncated
//! repository objects. Every run also asserts that stderr never contains "panicked".

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn wrong_password_exits_12_with_one_line() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    for args in [&["snapshots"][..], &["check"][..], &["ls", "latest"][..]] {
        let out = b.with_password(Some("not the password")).run(args);
        out.code(12);
        let lines: Vec<&str> = out.stderr.trim_end().lines().collect();
        assert_eq!(lines.len(), 1, "stderr must be exactly one line\n{out}");
        assert!(
            lines[0].to_lowercase().contains("password"),
            "stderr must mention the password\n{out}"
        );
    }
}

#[test]
fn missing_repository_exits_10() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("f"), b"f");
    let b = t.bunker(); // repo = t/repo, never created
    b.run(["snapshots"]).code(10);
    b.run(["check"]).code(10);
    b.backup(&[&src], &[]).code(10);
    let elsewhere = t.join("nope/deeper");
    b.with_repo(None)
        .run(["--repo", s(&elsewhere), "snapshots"])
        .code(10);
    b.with_repo(None)
        .run(["snapshots", "--repo", s(&elsewhere)])
        .code(10);
    assert!(
        !b.repo().exists(),
        "a failed command created the repository directory"
    );
    assert!(
        !elsewhere.exists(),
        "a failed command created the repository directory"
    );
}

#[test]
fn usage_errors_exit_2() {
    let t = TestDir::new();
    let b = t.bunker();
    b.run(["frobnicate"]).code(2);
    b.run(["snapshots", "--no-such-flag"]).code(2);
    // A value that does not parse is a usage error too, named with its option, and found
    // before the repository is looked for (there is none here).
    for args in [
        &["init", "--compression", "99"][..],
        &["init", "--kdf-memory-kib", "1"],
        &["init", "--kdf-iterations", "0"],
        &["init", "--volume-chunk-kib", "3"],
        &["init", "--lock-mode", "governance", "--lock-period", "30m"],
        &["init", "--lock-mode", "governance", "--lock-period", "12h"],
        &["backup", "--exclude", "[", "."],
        &["backup", "--time", "yesterday", "."],
        &["backup", "--tag", "novalue", "."],
        &["prune", "--max-repack", "10X"],
        &["prune", "--max-unused", "101"],
        &["prune", "--grace", "soon"],
        &["check", "--read-data-subset", "8/7"],
        &["cache", "--max-unused", "a while"],
        &["restore", "latest", "--target", "t", "--expire", "later"],
        &["snapshots", "--repo", ""],
        &["copy", "--to", " "],
    ] {
        let out = b.run(args);
        out.code(2);
        let option = args
            .iter()
            .rev()
            .find(|arg| arg.starts_with("--") && **arg != "--target")
            .expect("an option");
        assert!(
            out.stderr.contains("invalid value") && out.stderr.contains(option),
            "{args:?}\n{out}"
        );
    }
    let out = b.with_env("BUNKER_REPOSITORY", "").run(["snapshots"]);
    out.code(2);
    assert!(out.stderr.contains("must not be empty"), "{out}");
}

#[test]
fn init_over_an_existing_repository_fails_without_damage() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a"), &random_bytes(1, 10_000));
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let before = files_under(b.repo());

    let out = b.run(["init", "--kdf-memory-kib", "1024", "--kdf-iterations", "1"]);
    assert_ne!(
        out.code, 0,
        "init over an existing repository must fail\n{out}"
    );
    let out = b.with_password(Some("another password")).run([
        "init",
        "--kdf-memory-kib",
        "1024",
        "--kdf-iterations",
        "1",
    ]);
    assert_ne!(
        out.code, 0,
        "init over an existing repository must fail\n{out}"
    );

    let after = files_under(b.repo());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after
            .keys()
            .filter(|p| !p.to_string_lossy().contains("lock"))
            .collect::<Vec<_>>(),
        "the repository's files changed"
    );
    for (p, bytes) in &before {
        assert!(after.get(p) == Some(bytes), "{} changed", p.display());
    }
    assert_eq!(b.snapshots().len(), 1, "old repository still opens");
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn check_of_a_healthy_repository_exits_0() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a"), &random_bytes(2, 50_000));
    write_file(&src.join("b/c"), b"c");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    b.run(["check"]).ok();
    b.run(["check", "--read-data"]).ok();
    let out = b.run(["check", "--read-data", "--json"]);
    out.ok();
    out.json();
}

/// `bunker` run as user 65534 (`setpriv`) on the repository `dir/repo`, from a copy of
/// the binary in `dir` (which that user must be able to enter).
fn bunker_as_nobody(dir: &Path) -> Bunker {
    let bin_copy = dir.join("bunker");
    fs::copy(bin(), &bin_copy).expect("copy binary");
    chmod(&bin_copy, 0o755);
    let mut b = Bunker::new(&dir.join("repo"), &dir.join("cache"));
    b.bin = bin_copy;
    b.wrapper = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ]
    .map(Into::into)
    .to_vec();
    b
}

#[test]
fn unreadable_source_file_exits_3_and_keeps_the_rest() {
    if !is_root() {
        note("not root: skipping the unreadable-file test");
        return;
    }
    if !Path::new("/usr/bin/setpriv").exists() && !Path::new("/bin/setpriv").exists() {
        note("setpriv (util-linux) not found: skipping the unreadable-file test");
        return;
    }
    let t = TestDir::new();
    chmod(&t.path(), 0o755);
    let nobody = t.join("nobody");
    fs::create_dir(&nobody).expect("mkdir");
    std::os::unix::fs::chown(&nobody, Some(65534), Some(65534)).expect("chown");

    let src = t.join("src");
    write_file(&src.join("ok1.txt"), b"readable\n");
    write_file(&src.join("sub/ok2.bin"), &random_bytes(3, 50_000));
    write_file(&src.join("secret"), b"top secret\n");
    chmod(&src.join("secret"), 0o000);
    write_file(&src.join("locked-dir/inside.txt"), b"cannot list me\n");
    chmod(&src.join("locked-dir"), 0o000);
    chmod(&src, 0o755);
    chmod(&src.join("sub"), 0o755);

    let b = bunker_as_nobody(&nobody);
    b.init();
    let out = b.backup(&[&src], &[]);
    out.code(3);
    assert!(
        out.stderr.contains(s(&src.join("secret"))),
        "stderr must name the unreadable file {}\n{out}",
        src.join("secret").display()
    );
    assert!(
        out.stderr.contains(s(&src.join("locked-dir"))),
        "stderr must name the unreadable directory {}\n{out}",
        src.join("locked-dir").display()
    );
    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 1, "the snapshot must still be written");

    let out = b.run(["ls", "latest"]);
    out.ok();
    for f in ["ok1.txt", "sub/ok2.bin"] {
        assert!(
            out.stdout.lines().any(|l| Path::new(l) == src.join(f)),
            "ls must list {f}\n{out}"
        );
    }
    let target = nobody.join("restore");
    let out = b.restore("latest", &target);
    assert!(
        out.code == 0 || out.code == 5,
        "restore of a snapshot with an unreadable file: expected 0 (or 5)\n{out}"
    );
    if out.code != 0 {
        note(format!(
            "restore exit {} for a snapshot with an unreadable file",
            out.code
        ));
    }
    let r = under(&target, &src);
    assert_eq!(fs::read(r.join("ok1.txt")).expect("ok1"), b"readable\n");
    assert_eq!(
        fs::read(r.join("sub/ok2.bin")).expect("ok2"),
        random_bytes(3, 50_000)
    );
    if let Ok(bytes) = fs::read(r.join("secret")) {
        assert_ne!(
            bytes, b"top secret\n",
            "the unreadable file's content was restored?!"
        );
    }

    // Rewritten without the directory it could not list, the snapshot stops reporting it.
    let errors = |b: &Bunker| {
        let cat = b.run(["cat", "snapshot", "latest"]);
        cat.ok();
        let doc = cat.json();
        let listed: Vec<String> = doc["errors"]
            .as_array()
            .expect("errors")
            .iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        (listed, u64_field(&doc["summary"], "errors"))
    };
    let (before, counted) = errors(&b);
    assert_eq!((before.len(), counted), (2, 2), "{before:?}");
    b.run(["rewrite", "-e", s(&src.join("locked-dir")), "--forget"])
        .ok();
    let (after, counted) = errors(&b);
    assert_eq!(counted, 1, "{after:?}");
    assert!(
        after.len() == 1 && after[0].contains(s(&src.join("secret"))),
        "{after:?}"
    );
}

#[test]
fn a_restore_run_again_by_its_owner_goes_through_the_read_only_directories_it_restored() {
    if !is_root() || !Path::new("/usr/bin/setpriv").exists() {
        note("not root, or no setpriv: skipping the non-root restore test");
        return;
    }
    let t = TestDir::new();
    chmod(&t.path(), 0o755);
    let src = t.join("src");
    write_file(&src.join("closed/f"), b"in a 000 directory\n");
    write_file(&src.join("read-only/f"), b"in a 555 directory\n");
    chmod(&src.join("closed"), 0o000);
    chmod(&src.join("read-only"), 0o555);
    let nobody = t.join("nobody");
    let b = Bunker::new(&nobody.join("repo"), &t.join("root-cache"));
    b.init();
    b.backup(&[&src], &[]).ok();
    let status = std::process::Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(&nobody)
        .status()
        .expect("chown");
    assert!(status.success());
    let as_nobody = bunker_as_nobody(&nobody);

    let target = nobody.join("target");
    let spec = format!("latest:{}", src.display());
    as_nobody
        .run(["restore", &spec, "--target", s(&target)])
        .ok();
    // Damage one file inside each: the second run repairs both and keeps the modes.
    for dir in ["closed", "read-only"] {
        chmod(&target.join(dir), 0o755);
        fs::write(target.join(dir).join("f"), b"damaged\n").expect("damage");
        chmod(
            &target.join(dir),
            if dir == "closed" { 0o000 } else { 0o555 },
        );
    }
    as_nobody
        .run(["restore", &spec, "--target", s(&target)])
        .ok();
    for (dir, mode, content) in [
        ("closed", 0o000, &b"in a 000 directory\n"[..]),
        ("read-only", 0o555, &b"in a 555 directory\n"[..]),
    ] {
        let path = target.join(dir);
        assert_eq!(
            fs::metadata(&path).expect("stat").mode() & 0o7777,
            mode,
            "{dir}"
        );
        assert_eq!(fs::read(path.join("f")).expect("read"), content, "{dir}/f");
    }
}

#[test]
fn file_growing_during_backup_still_gives_a_clean_repository() {
    let t = TestDir::new();
    let src = t.join("src");
    let big = src.join("growing.bin");
    write_random_file(&big, 31, 48 << 20);
    write_file(&src.join("other.txt"), b"other\n");
    let b = t.bunker();
    b.init();

    let stop = Arc::new(AtomicBool::new(false));
    let appender = {
        let stop = Arc::clone(&stop);
        let big = big.clone();
        thread::spawn(move || {
            let mut f = fs::OpenOptions::new()
                .append(true)
                .open(&big)
                .expect("open");
            let mut rng = XorShift::new(77);
            let mut buf = vec![0u8; 64 * 1024];
            let mut written = 0u64;
            while !stop.load(Ordering::SeqCst) && written < 64 << 20 {
                rng.fill(&mut buf);
                f.write_all(&buf).expect("append");
                written += buf.len() as u64;
                thread::sleep(Duration::from_millis(2));
            }
            written
        })
    };
    let (child, shown) = b.spawn(["backup", s(&src)]);
    let out = wait_output(child, shown, DEFAULT_TIMEOUT);
    stop.store(true, Ordering::SeqCst);
    let appended = appender.join().expect("appender");
    note(format!(
        "appended {appended} bytes during the backup; exit {}",
        out.code
    ));
    assert!(
        out.code == 0 || out.code == 3,
        "backup of a growing file must exit 0 or 3\n{out}"
    );
    b.run(["check", "--read-data"]).ok();

    let target = t.join("restore");
    b.restore("latest", &target).ok();
    let r = under(&target, &src);
    assert_eq!(fs::read(r.join("other.txt")).expect("other"), b"other\n");
    if let Ok(restored) = fs::read(r.join("growing.bin")) {
        let now = fs::read(&big).expect("source");
        assert!(
            restored.len() >= 48 << 20 && now.starts_with(&restored),
            "restored growing.bin ({} bytes) is not a prefix of the file ({} bytes)",
            restored.len(),
            now.len()
        );
    } else {
        note("growing.bin not in the snapshot");
    }
}

#[test]
fn interrupted_backup_exits_130_and_leaves_a_valid_repository() {
    let mib: u64 = std::env::var("BUNKER_E2E_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let t = TestDir::new();
    let src = t.join("src");
    let started = Instant::now();
    let files = mib.div_ceil(10);
    for i in 0..files {
        write_random_file(&src.join(format!("big/f{i:02}.bin")), 1000 + i, 10 << 20);
    }
    write_file(&src.join("small.txt"), b"small\n");
    note(format!(
        "generated {} MiB in {:?}",
        files * 10,
        started.elapsed()
    ));
    let b = t.bunker().with_timeout(Duration::from_secs(300));
    b.init();

    let (child, shown) = b.spawn(["backup", s(&src)]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(300));
    send_signal(pid, "INT");
    let out = wait_output(child, shown, Duration::from_secs(120));
    if out.code == 0 {
        note("the backup finished before SIGINT; skipping the rest");
        return;
    }
    assert_ne!(
        out.code, -2,
        "bunker died from SIGINT instead of handling it\n{out}"
    );
    out.code(130);
    assert!(b.snapshots().is_empty(), "exit 130 commits nothing");
    b.run(["check", "--read-data"]).ok();
    // It ended its session as it stopped, so prune need not wait for the session to time
    // out: everything it stored goes at once.
    let stored = repo_objects(b.repo(), "data").len();
    let out = b.run(["prune", "--grace", "0"]);
    out.ok();
    assert!(
        repo_objects(b.repo(), "data").is_empty(),
        "of {stored} packs the interrupted backup stored, some were kept\n{out}"
    );

    // SIGTERM too (contract: SIGINT/SIGTERM -> 130).
    let (child, shown) = b.spawn(["backup", s(&src)]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(300));
    send_signal(pid, "TERM");
    let out = wait_output(child, shown, Duration::from_secs(120));
    note(format!("backup after SIGTERM exited {}", out.code));
    assert_ne!(
        out.code, -15,
        "bunker died from SIGTERM instead of handling it\n{out}"
    );
    assert!(
        out.code == 130 || out.code == 0,
        "SIGTERM: expected 130 (or 0)\n{out}"
    );
    b.run(["check"]).ok();

    // A complete backup afterwards round-trips.
    let started = Instant::now();
    b.backup(&[&src], &[]).ok();
    note(format!(
        "full backup after interrupts took {:?}",
        started.elapsed()
    ));
    b.run(["check"]).ok();
    let target = t.join("restore");

    // An interrupted restore exits 130 and leaves the repository alone.
    let (child, shown) = b.spawn(["restore", "latest", "--target", s(&t.join("partial"))]);
    let pid = child.id();
    thread::sleep(Duration::from_millis(150));
    send_signal(pid, "INT");
    let out = wait_output(child, shown, Duration::from_secs(120));
    note(format!("restore after SIGINT exited {}", out.code));
    assert_ne!(
        out.code, -2,
        "bunker restore died from SIGINT instead of handling it\n{out}"
    );
    assert!(
        out.code == 130 || out.code == 0,
        "interrupted restore: expected 130 (or 0)\n{out}"
    );
    b.run(["check"]).ok();

    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn a_command_without_safe_points_exits_at_the_first_signal() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    // The password command keeps `check` waiting; one SIGINT must end it (it used to be
    // noted, and acted on only at the end).
    let slow = b
        .with_password(None)
        .with_env("BUNKER_PASSWORD_COMMAND", "sleep 20; echo unused");
    for command in ["check", "prune"] {
        let (child, shown) = slow.spawn([command]);
        thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        send_signal(child.id(), "INT");
        let out = wait_output(child, shown, Duration::from_secs(30));
        out.code(130);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{command} took {:?} to stop",
            started.elapsed()
        );
    }
}

/// A tmpfs of `size` at `dir`, unmounted when dropped.
struct SmallFs {
    mount: PathBuf,
}

impl SmallFs {
    /// `None` (skipped, with a note) when not root; CI runs as root.
    fn mount(dir: &Path, size: &str) -> Option<Self> {
        if !is_root() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI runs these tests as root"
            );
            note("SKIPPED: a full filesystem needs root to mount a small tmpfs");
            return None;
        }
        fs::create_dir_all(dir).expect("create the mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mount a {size} tmpfs at {}",
            dir.display()
        );
        Some(Self {
            mount: dir.to_owned(),
        })
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.mount)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remount {} with {size}",
            self.mount.display()
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        unmount(&self.mount);
    }
}

#[test]
fn a_full_repository_disk_exits_11_and_the_backup_completes_once_there_is_room() {
    let t = TestDir::new();
    let Some(disk) = SmallFs::mount(&t.join("disk"), "24m") else {
        return;
    };
    let src = t.join("src");
    for i in 0..6 {
        write_random_file(&src.join(format!("f{i}.bin")), 500 + i, 8 << 20);
    }
    write_file(&src.join("small.txt"), b"small\n");
    let b = Bunker::new(&disk.mount.join("repo"), &t.join("cache"));
    b.init();

    // 48 MiB of incompressible data does not fit in 24 MiB.
    let out = b.backup(&[&src], &[]);
    out.code(11);
    let message = out.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one line\n{out}");
    assert_eq!(
        message.matches("No space left on device").count(),
        1,
        "said once\n{out}"
    );
    assert!(
        message.contains(&*disk.mount.join("repo").to_string_lossy()),
        "names the repository\n{out}"
    );
    assert!(
        b.snapshots().is_empty(),
        "no snapshot after a failed backup"
    );
    let leftovers = temp_files(&disk.mount);
    assert!(
        leftovers.is_empty(),
        "temp files left behind: {leftovers:?}"
    );
    b.run(["check"]).ok();

    // With room, the same backup completes (reusing what the failed one stored) and
    // restores exactly.
    disk.resize("128m");
    b.backup(&[&src], &[]).ok();
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn a_full_restore_target_exits_11_with_one_line_and_the_restore_resumes_once_there_is_room() {
    let t = TestDir::new();
    let Some(disk) = SmallFs::mount(&t.join("disk"), "16m") else {
        return;
    };
    let src = t.join("src");
    for i in 0..4 {
        write_random_file(&src.join(format!("big{i}.bin")), 700 + i, 6 << 20);
    }
    for i in 0..300 {
        let text = format!("small file {i}\n").repeat(40 + i);
        write_file(&src.join(format!("small/{i:03}.txt")), text.as_bytes());
    }
    set_all_mtimes(&src, 1_500_000_000);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    // 24 MiB of incompressible data does not fit in 16 MiB: the restore stops at once.
    let target = disk.mount.join("restore");
    let out = b.restore("latest", &target);
    out.code(11);
    let message = out.stderr.trim();
    assert_eq!(message.lines().count(), 1, "one line\n{out}");
    assert!(
        message.contains("the restore target is full")
            && message.contains("No space left on device")
            && message.contains(&*target.to_string_lossy()),
        "{out}"
    );
    // A file cut short keeps the restore's time: none passes for complete by its size and
    // modification time unless its content is complete too.
    let restored = under(&target, &src);
    let mut cut_short = 0;
    for (relative, bytes) in files_under(&src) {
        let Ok(meta) = fs::metadata(restored.join(&relative)) else {
            continue;
        };
        let source_meta = fs::metadata(src.join(&relative)).expect("stat the source");
        let looks_complete =
            meta.len() == source_meta.len() && meta.modified().ok() == source_meta.modified().ok();
        let content = fs::read(restored.join(&relative)).expect("read the restored file");
        if content != bytes {
            cut_short += 1;
            assert!(
                !looks_complete,
                "{} passes for complete",
                relative.display()
            );
        }
    }
    note(format!("{cut_short} files cut short by the full target"));

    // With room, the same restore finishes what is missing.
    disk.resize("64m");
    b.restore("latest", &target).ok();
    compare_trees(&src, &restored);
}

// ---------------------------------------------------------------------------------------
// Corruption
// ---------------------------------------------------------------------------------------

struct Fresh {
    t: TestDir,
    b: Bunker,
    short_id: String,
}

fn fresh_repository() -> Fresh {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(40, 300_000));
    write_file(&src.join("dir/b.txt"), b"some text\n");
    write_file(&src.join("dir/c.bin"), &random_bytes(41, 70_000));
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let snaps = b.snapshots();
    let short_id = str_field(&snaps[0], "short_id").to_owned();
    Fresh { t, b, short_id }
}

/// Flips one byte of one object of `kind` in a copy of a fresh repository and runs
/// `check --read-data` on it.
fn corrupt(kind: &str) -> (Fresh, Bunker, String, Output) {
    let f = fresh_repository();
    let copy = f.t.join("copy");
    copy_dir(f.b.repo(), &copy);
    let name = if kind == "config" {
        "config".to_owned()
    } else {
        let objects = repo_objects(&copy, kind);
        assert!(!objects.is_empty(), "no {kind} objects in the repository");
        objects.into_iter().next().expect("an object")
    };
    let path = copy.join(&name);
    let len = fs::metadata(&path).expect("stat").len();
    // Key slots and config: flip a byte of the authentication tag at the end, so as not to
    // turn the plaintext KDF parameters into something huge.
    let offset = if kind == "keys" || kind == "config" {
        len - 5
    } else {
        len / 2
    };
    flip_byte(&path, offset);
    let bc = f.b.with_repo(Some(&copy));
    let out = bc.run(["check", "--read-data"]);
    (f, bc, name, out)
}

#[track_caller]
fn assert_names(out: &Output, what: &str) {
    assert!(
        out.all().contains(what),
        "check output must name {what}\n{out}"
    );
}

#[test]
fn corrupted_data_pack_is_named_by_check() {
    let (f, _, name, out) = corrupt("data");
    out.code(4);
    assert_names(&out, &name);
    assert_names(&out, &f.short_id);
}

#[test]
fn corrupted_tree_pack_is_named_by_check() {
    let (f, _, name, out) = corrupt("tree");
    out.code(4);
    assert_names(&out, &name);
    assert_names(&out, &f.short_id);
}

#[test]
fn corrupted_index_segment_is_named_by_check() {
    let (_, _, name, out) = corrupt("index");
    out.code(4);
    assert_names(&out, &name);
}

#[test]
fn corrupted_snapshot_is_named_by_check() {
    let (_, _, name, out) = corrupt("snapshots");
    out.code(4);
    assert_names(&out, &name);
}

#[test]
fn a_damaged_snapshot_is_left_out_of_listings_and_forget_removes_it() {
    let f = fresh_repository();
    let src = f.t.join("src");
    write_file(&src.join("later.txt"), b"a second backup\n");
    f.b.backup(&[&src], &[]).ok();
    let damaged = format!("snapshots/{}", {
        let snaps = f.b.snapshots();
        str_field(&snaps[0], "id").to_owned()
    });
    flip_byte(&f.b.repo().join(&damaged), 40);

    // The other snapshot is listed and restorable; the damaged one is named once.
    let out = f.b.run(["snapshots", "--json"]);
    out.ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(out.stderr.lines().count(), 1, "{out}");
    assert!(
        out.stderr.contains(&f.short_id) && out.stderr.contains("forget"),
        "{out}"
    );
    let target = f.t.join("restore");
    f.b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
    f.b.run(["prune", "--grace", "0"]).code(1);

    // `forget ID` removes it unread; then prune and check pass again.
    let out = f.b.run(["forget", &f.short_id]);
    out.ok();
    assert!(out.stdout.contains("(unreadable)"), "{out}");
    assert!(!f.b.repo().join(&damaged).exists());
    f.b.run(["prune", "--grace", "0"]).ok();
    f.b.run(["check", "--read-data"]).ok();
    let out = f.b.run(["snapshots"]);
    out.ok();
    assert!(out.stderr.is_empty(), "{out}");
}

#[test]
fn latest_in_an_empty_repository_is_named_as_such() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    for args in [
        vec!["restore", "latest", "--target", "out"],
        vec!["ls", "latest"],
        vec!["cat", "snapshot", "latest"],
    ] {
        let out = b.with_cwd(&t.path()).run(&args);
        out.code(1);
        assert_eq!(
            out.stderr.trim(),
            "bunker: the repository has no snapshots",
            "{args:?}: {out}"
        );
    }
}

/// A fresh repository backed up a second time, the second snapshot's object damaged:
/// the fixture, its source, and the ids of the readable and the damaged snapshot.
fn with_damaged_newest_snapshot() -> (Fresh, PathBuf, String, String) {
    let f = fresh_repository();
    let src = f.t.join("src");
    write_file(&src.join("later.txt"), b"a second backup\n");
    f.b.backup(&[&src], &[]).ok();
    let snaps = f.b.snapshots();
    let oldest = str_field(&snaps[0], "id").to_owned();
    let newest = str_field(&snaps[1], "id").to_owned();
    flip_byte(&f.b.repo().join(format!("snapshots/{newest}")), 40);
    (f, src, oldest, newest)
}

#[test]
fn a_backup_takes_the_newest_readable_snapshot_of_its_source_as_parent() {
    let (f, src, oldest, _damaged) = with_damaged_newest_snapshot();
    write_file(&src.join("third.txt"), b"a third backup\n");
    let out = f.b.run(["--json", "backup", s(&src)]);
    out.ok();
    assert_eq!(str_field(&out.json(), "parent"), oldest, "{out}");
    let third = str_field(&out.json(), "snapshot_id").to_owned();
    let out = f.b.run(["--json", "backup", s(&src)]);
    out.ok();
    assert_eq!(str_field(&out.json(), "parent"), third, "{out}");
}

#[test]
fn latest_means_the_newest_readable_snapshot_for_every_command() {
    let (f, src, oldest, newest) = with_damaged_newest_snapshot();
    let warned = |out: &Output| {
        assert!(
            out.stderr.contains("cannot be read and is left out")
                && out.stderr.contains(&newest[..8]),
            "{out}"
        );
    };

    let out = f.b.run(["cat", "snapshot", "latest"]);
    out.ok();
    warned(&out);
    assert_eq!(str_field(&out.json(), "id"), oldest, "{out}");

    let target = f.t.join("copy");
    let out = f.b.with_env("BUNKER_TO_PASSWORD", "another password").run([
        "--json",
        "copy",
        "--to",
        s(&target),
        "latest",
    ]);
    out.ok();
    warned(&out);
    let copied = out.json()["copied"].clone();
    assert_eq!(copied.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(str_field(&copied[0], "source"), oldest, "{out}");

    let out = f.b.run(["--json", "backup", "--parent", "latest", s(&src)]);
    out.ok();
    warned(&out);
    assert_eq!(str_field(&out.json(), "parent"), oldest, "{out}");
    let third = str_field(&out.json(), "snapshot_id").to_owned();

    // `forget latest` forgets the newest it can read; the damaged one stays for `forget ID`.
    let out = f.b.run(["forget", "latest"]);
    out.ok();
    warned(&out);
    let left = repo_objects(f.b.repo(), "snapshots");
    let expected: BTreeSet<String> = [&oldest, &newest]
        .iter()
        .map(|id| format!("snapshots/{id}"))
        .collect();
    assert_eq!(left, expected, "forget latest should have removed {third}");
}

fn corrupted_metadata_fails_cleanly(kind: &str) {
    let (f, bc, name, out) = corrupt(kind);
    assert_ne!(
        out.code, 0,
        "check on a repository with a damaged {name} must fail\n{out}"
    );
    if !out.all().contains(&name) {
        note(format!(
            "check did not name {name} (exit {}); allowed for {kind}",
            out.code
        ));
    }
    let target = f.t.join("restore");
    for args in [
        vec!["snapshots"],
        vec!["ls", "latest"],
        vec!["key", "list"],
        vec!["restore", "latest", "--target", s(&target)],
    ] {
        // Any of these may fail (or not); none may panic (checked by `run`).
        let out = bc.run(&args);
        if out.code != 0 {
            assert!(
                !out.stderr.trim().is_empty(),
                "a failure must say why\n{out}"
            );
        } else {
            note(format!("{args:?} succeeded with a damaged {name}"));
        }
    }
}

#[test]
fn corrupted_key_slot_fails_cleanly() {
    corrupted_metadata_fails_cleanly("keys");
}

#[test]
fn corrupted_config_fails_cleanly() {
    corrupted_metadata_fails_cleanly("config");
}

#[test]
fn missing_data_pack_is_named_by_check() {
    let f = fresh_repository();
    let packs = repo_objects(f.b.repo(), "data");
    let victim = packs.iter().next().expect("a data pack").clone();
    fs::remove_file(f.b.repo().join(&victim)).expect("remove pack");
    for args in [&["check"][..], &["check", "--read-data"][..]] {
        let out = f.b.run(args);
        out.code(4);
        assert_names(&out, &victim);
        assert_names(&out, &f.short_id);
    }
    let out = f.b.restore("latest", &f.t.join("restore"));
    out.code(5);
    assert!(
        out.stderr.contains(&victim),
        "restore must name {victim}\n{out}"
    );
}

#[test]
fn a_damaged_pack_is_named_once_by_restore_and_each_file_once_by_check() {
    let t = TestDir::new();
    let src = t.join("src");
    write_random_file(&src.join("several-chunks.bin"), 60, 3 << 20);
    write_random_file(&src.join("small.bin"), 61, 100_000);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let packs = repo_objects(b.repo(), "data");
    for pack in &packs {
        flip_byte(&b.repo().join(pack), 3);
    }

    let out = b.restore("latest", &t.join("restore"));
    out.code(5);
    for pack in &packs {
        assert_eq!(
            out.stderr.matches(pack.as_str()).count(),
            1,
            "{pack}\n{out}"
        );
    }
    let out = b.run(["check"]);
    out.code(4);
    let named: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.trim_start().starts_with("file "))
        .collect();
    let distinct: BTreeSet<&str> = named.iter().copied().collect();
    assert_eq!(named.len(), distinct.len(), "{out}");
    assert!(out.stdout.contains("several-chunks.bin"), "{out}");
}

#[test]
fn unknown_snapshot_fails_cleanly() {
    let f = fresh_repository();
    for args in [
        vec!["ls", "deadbeef"],
        vec![
            "restore",
            "deadbeef",
            "--target",
            "/nonexistent-bunker-target",
        ],
        vec!["cat", "snapshot", "deadbeef"],
        vec!["ls", "latest:/no/such/path"],
    ] {
        let out = f.b.run(&args);
        assert!(
            out.code != 0 && !out.stderr.trim().is_empty(),
            "{args:?} must fail with a message\n{out}"
        );
    }
    assert!(!Path::new("/nonexistent-bunker-target").exists());
}

#[test]
fn truncated_data_pack_restore_exits_5_and_restores_the_rest() {
    let t = TestDir::new();
    let src = t.join("src");
    let old: Vec<(&str, Vec<u8>)> = vec![
        ("a1.bin", random_bytes(50, 300_000)),
        ("a2.txt", b"small old file\n".to_vec()),
        ("a3.empty", Vec::new()),
        ("sub/a4.bin", random_bytes(51, 1_200_000)),
    ];
    for (name, data) in &old {
        write_file(&src.join(name), data);
    }
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let packs_before = repo_objects(b.repo(), "data");

    write_file(&src.join("new/b1.bin"), &random_bytes(52, 1 << 20));
    write_file(&src.join("new/b2.bin"), &random_bytes(53, 1 << 20));
    set_all_mtimes(&src.join("new"), 1_500_000_000);
    b.backup(&[&src], &[]).ok();
    let new_packs: Vec<String> = repo_objects(b.repo(), "data")
        .difference(&packs_before)
        .cloned()
        .collect();
    assert!(
        !new_packs.is_empty(),
        "the second backup wrote no new data pack"
    );
    let victim = new_packs
        .iter()
        .max_by_key(|p| fs::metadata(b.repo().join(p)).map(|m| m.len()).unwrap_or(0))
        .expect("a pack")
        .clone();
    let path = b.repo().join(&victim);
    let len = fs::metadata(&path).expect("stat").len();
    chmod(&path, 0o644);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(len / 2))
        .expect("truncate pack");

    let target = t.join("restore");
    let out = b.restore("latest", &target);
    out.code(5);
    assert!(
        out.stderr.contains(&victim),
        "restore must name the damaged pack {victim} on stderr\n{out}"
    );
    let r = under(&target, &src);
    for (name, data) in &old {
        let got = fs::read(r.join(name));
        assert!(
            got.as_ref().is_ok_and(|g| g == data),
            "{name} (data in an intact pack) must be restored exactly: {:?}\n{out}",
            got.map(|g| g.len())
        );
    }
    // A file that lost content keeps its full size (what is missing reads as zeros) but not
    // the snapshot's metadata: it is left private, with the restore's times.
    let mut damaged = 0;
    for name in ["new/b1.bin", "new/b2.bin"] {
        let (source, restored) = (src.join(name), r.join(name));
        if fs::read(&restored).ok() == fs::read(&source).ok() {
            continue;
        }
        damaged += 1;
        let meta = fs::metadata(&restored).expect("a damaged file is still restored");
        assert_eq!(meta.len(), 1 << 20, "{name} keeps its size");
        assert_ne!(
            meta.modified().ok(),
            fs::metadata(&source)
                .expect("stat the source")
                .modified()
                .ok(),
            "{name} lost content but got the snapshot's time"
        );
        assert_eq!(meta.mode() & 0o777, 0o600, "{name} stays private");
    }
    assert!(damaged > 0, "the truncated pack held part of new/\n{out}");
    // The summary counts them: the files it could not restore in full, no others.
    let again = b.run([
        "--json",
        "restore",
        "latest",
        "--target",
        s(&t.join("again")),
    ]);
    again.code(5);
    assert_eq!(u64_field(&again.json(), "files_failed"), damaged, "{again}");
    assert_eq!(u64_field(&again.json(), "files"), 6, "{again}");
    let text = b.restore("latest", &t.join("text"));
    assert!(
        text.stdout
            .contains(&format!("{damaged} of the files incomplete")),
        "{text}"
    );

    let out = b.run(["check", "--read-data"]);
    out.code(4);
    assert_names(&out, &victim);
}
