//! `bunker copy`: creates the target with its own password, sends only what the target
//! lacks, skips snapshots already there, resumes after an interruption, re-sends what the
//! target's prune removed, and refuses an unrelated target. The target always passes
//! `check --read-data` and restores byte for byte.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const TARGET_PASSWORD: &str = "another password for the copy";

struct Pair {
    t: TestDir,
    source: Bunker,
    target: Bunker,
    target_path: PathBuf,
}

impl Pair {
    fn new() -> Self {
        let t = TestDir::new();
        let source = t.bunker();
        source.init();
        let target_path = t.join("replica");
        let target = source
            .with_repo(Some(&target_path))
            .with_password(Some(TARGET_PASSWORD));
        Self {
            t,
            source,
            target,
            target_path,
        }
    }

    fn copy(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "--json",
            "copy",
            "--to",
            self.target_path.to_str().expect("UTF-8 temp path"),
        ];
        args.extend_from_slice(extra);
        self.source
            .with_env("BUNKER_TO_PASSWORD", TARGET_PASSWORD)
            .run(&args)
    }

    fn spawn_copy(&self) -> (std::process::Child, String) {
        self.source
            .with_env("BUNKER_TO_PASSWORD", TARGET_PASSWORD)
            .spawn([
                "copy",
                "--to",
                self.target_path.to_str().expect("UTF-8 temp path"),
            ])
    }

    /// Restores `spec` from the target and compares it with `src`.
    fn assert_target_restores(&self, spec: &str, src: &Path, name: &str) {
        let out = self.t.join(name);
        self.target.restore(spec, &out).ok();
        compare_tree_contents(src, &under(&out, src));
    }
}

fn same_snapshots(source: &[serde_json::Value], target: &[serde_json::Value]) {
    let key = |v: &serde_json::Value| {
        (
            v["time"].to_string(),
            v["host"].to_string(),
            v["paths"].to_string(),
            v["tree"].to_string(),
            v["tags"].to_string(),
        )
    };
    let mut a: Vec<_> = source.iter().map(key).collect();
    let mut b: Vec<_> = target.iter().map(key).collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
}

#[test]
fn copy_creates_the_target_then_sends_only_what_is_new() {
    let p = Pair::new();
    let src = p.t.join("src");
    for i in 0..4 {
        write_random_file(&src.join(format!("f{i}.bin")), 10 + i, 2 << 20);
    }
    p.source.backup(&[&src], &["--tag", "run=1"]).ok();
    write_random_file(&src.join("f4.bin"), 14, 2 << 20);
    p.source.backup(&[&src], &["--tag", "run=2"]).ok();

    let out = p.copy(&[]);
    out.ok();
    let report = out.json();
    assert_eq!(report["created"], true);
    assert_eq!(report["copied"].as_array().unwrap().len(), 2);
    assert!(u64_field(&report, "verified_packs") >= 1);
    // The target has its own password: the source's does not open it.
    p.target
        .with_password(Some(PASSWORD))
        .run(["snapshots"])
        .code(12);
    same_snapshots(&p.source.snapshots(), &p.target.snapshots());
    // The second snapshot's parent maps to the target's copy of the first.
    let target_snapshots = p.target.snapshots();
    let first = target_snapshots
        .iter()
        .find(|s| s["tags"].to_string().contains("run=1"))
        .unwrap();
    let second = target_snapshots
        .iter()
        .find(|s| s["tags"].to_string().contains("run=2"))
        .unwrap();
    assert_eq!(second["parent"], first["id"]);
    p.target.run(["check", "--read-data"]).ok();
    p.assert_target_restores("latest", &src, "r1");
    let size = dir_size(&p.target_path);
    // About the 10 MiB of data, stored once.
    assert!(size < (10 << 20) + (256 << 10), "target holds {size} bytes");

    // Nothing new: nothing sent.
    let again = p.copy(&[]);
    again.ok();
    let again = again.json();
    assert_eq!(again["copied"].as_array().unwrap().len(), 0);
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);
    assert_eq!(dir_size(&p.target_path), size);

    // One new file: about that much is sent.
    write_random_file(&src.join("f5.bin"), 15, 1 << 20);
    p.source.backup(&[&src], &["--tag", "run=3"]).ok();
    let third = p.copy(&["latest"]);
    third.ok();
    let third = third.json();
    assert_eq!(third["copied"].as_array().unwrap().len(), 1);
    assert_eq!(third["skipped"].as_array().unwrap().len(), 0);
    let growth = dir_size(&p.target_path) - size;
    note(format!(
        "incremental copy of a 1 MiB change: target grew {growth} bytes"
    ));
    assert!(
        growth < (1 << 20) + (64 << 10),
        "target grew {growth} bytes"
    );
    assert!(u64_field(&third, "data_blobs_added") >= 1);
    p.target.run(["check", "--read-data"]).ok();
    p.assert_target_restores("latest", &src, "r2");
    same_snapshots(&p.source.snapshots(), &p.target.snapshots());
}

#[test]
fn interrupted_copy_resumes_and_the_target_stays_consistent() {
    let p = Pair::new();
    let src = p.t.join("src");
    for i in 0..24 {
        write_random_file(
            &src.join(format!("d{}/f{i:02}.bin", i % 3)),
            100 + i,
            3 << 20,
        );
    }
    p.source.backup(&[&src], &[]).ok();

    // Interrupt once the first pack is in the target (SIGINT: the copy indexes what it
    // sent and stops), then kill -9 a second run the same way.
    let mut interrupted = 0;
    for signal in ["INT", "KILL"] {
        let (child, shown) = p.spawn_copy();
        let pid = child.id();
        let started = Instant::now();
        let data = p.target_path.join("data");
        while started.elapsed() < Duration::from_secs(60) {
            let packs = std::fs::read_dir(&data).map(|d| d.count()).unwrap_or(0);
            if packs > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        send_signal(pid, signal);
        let out = wait_output(child, shown, DEFAULT_TIMEOUT);
        note(format!("copy after SIG{signal}: exit {}", out.code));
        match (signal, out.code) {
            ("INT", 130) | ("KILL", -9 | 137) => interrupted += 1,
            (_, 0) => note("the copy finished before the signal"),
            _ => panic!("unexpected exit\n{out}"),
        }
        // Whatever happened, the target is a valid repository.
        p.target.run(["check"]).ok();
    }
    note(format!(
        "{interrupted} of 2 copies were interrupted half way"
    ));

    let out = p.copy(&[]);
    out.ok();
    let report = out.json();
    note(format!(
        "resumed copy stored {} bytes (source data 72 MiB)",
        u64_field(&report, "bytes_stored")
    ));
    p.target.run(["check", "--read-data"]).ok();
    same_snapshots(&p.source.snapshots(), &p.target.snapshots());
    p.assert_target_restores("latest", &src, "r");
}

#[test]
fn copy_resends_what_the_targets_prune_removed() {
    let p = Pair::new();
    let src = p.t.join("src");
    write_random_file(&src.join("old.bin"), 1, 2 << 20);
    p.source.backup(&[&src], &["--tag", "n=1"]).ok();
    std::fs::remove_file(src.join("old.bin")).unwrap();
    write_random_file(&src.join("new.bin"), 2, 2 << 20);
    p.source.backup(&[&src], &["--tag", "n=2"]).ok();
    p.copy(&[]).ok();

    // The target's own retention drops the first snapshot and prunes its data.
    p.target.run(["forget", "--keep-last", "1"]).ok();
    p.target.run(["prune", "--grace", "0"]).ok();
    assert_eq!(p.target.snapshots().len(), 1);

    // Copying again brings it back, with its data sent anew.
    let out = p.copy(&[]);
    out.ok();
    let report = out.json();
    assert_eq!(report["copied"].as_array().unwrap().len(), 1);
    assert!(u64_field(&report, "bytes_stored") > 2 << 20, "{report}");
    p.target.run(["check", "--read-data"]).ok();
    let first = p
        .target
        .snapshots()
        .into_iter()
        .find(|s| s["tags"].to_string().contains("n=1"))
        .unwrap();
    let from_target = p.t.join("r");
    p.target.restore(str_field(&first, "id"), &from_target).ok();
    // Compared with the same snapshot restored from the source.
    let first_source = p
        .source
        .snapshots()
        .into_iter()
        .find(|s| s["tags"].to_string().contains("n=1"))
        .unwrap();
    let from_source = p.t.join("r-source");
    p.source
        .restore(str_field(&first_source, "id"), &from_source)
        .ok();
    compare_tree_contents(&under(&from_source, &src), &under(&from_target, &src));
    assert!(under(&from_target, &src).join("old.bin").exists());
}

#[test]
fn a_damaged_snapshot_is_named_and_the_others_are_copied() {
    let p = Pair::new();
    let src = p.t.join("src");
    write_file(&src.join("a.txt"), b"first\n");
    p.source.backup(&[&src], &[]).ok();
    write_file(&src.join("b.txt"), b"second\n");
    p.source.backup(&[&src], &[]).ok();
    let snaps = p.source.snapshots();
    let (damaged, intact) = (str_field(&snaps[0], "id"), str_field(&snaps[1], "id"));
    flip_byte(&p.source.repo().join(format!("snapshots/{damaged}")), 40);

    let out = p.copy(&[]);
    out.code(1);
    assert!(
        out.stderr
            .contains(&format!("snapshot {} cannot be read", &damaged[..8]))
            && out
                .stderr
                .contains("1 snapshot(s) could not be read and were not copied"),
        "{out}"
    );
    let copied: Vec<String> = out.json()["copied"]
        .as_array()
        .expect("copied")
        .iter()
        .map(|pair| str_field(pair, "source").to_owned())
        .collect();
    assert_eq!(copied, vec![intact.to_owned()], "{out}");
    let target = p.t.join("restored");
    p.target.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn copy_refuses_an_unrelated_target_and_a_missing_password() {
    let p = Pair::new();
    let src = p.t.join("src");
    write_file(&src.join("a"), b"a");
    p.source.backup(&[&src], &[]).ok();
    p.target.init();
    // The password from BUNKER_TO_PASSWORD_FILE opens the target (else exit 12), which is
    // then refused: its blob ids differ.
    let password_file = p.t.join("to-password");
    write_file(&password_file, format!("{TARGET_PASSWORD}\n").as_bytes());
    let out = p
        .source
        .with_env("BUNKER_TO_PASSWORD_FILE", &password_file)
        .run(["copy", "--to", p.target_path.to_str().unwrap()]);
    out.code(1);
    assert!(
        out.stderr.contains("was not created by `bunker copy`"),
        "{out}"
    );
    assert!(p.target.snapshots().is_empty());

    let elsewhere = p.t.join("elsewhere");
    let out = p.source.run(["copy", "--to", elsewhere.to_str().unwrap()]);
    out.code(1);
    assert!(out.stderr.contains("BUNKER_TO_PASSWORD"), "{out}");
    assert!(!elsewhere.exists());

    // Wrong target password: exit 12, nothing written.
    let out = p.source.with_env("BUNKER_TO_PASSWORD", "wrong").run([
        "copy",
        "--to",
        p.target_path.to_str().unwrap(),
    ]);
    out.code(12);
}
