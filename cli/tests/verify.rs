//! `bunker verify`: restore drills on real files, a real ext4 image with fsck, a corrupted
//! repository and failing smoke commands; each leaves an audit record.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use bunker_agent::verify::{VerifyOptions, verify_tree};
use common::*;

/// The details of the newest `verify` audit record, as (key, value) pairs.
fn last_verify_record(b: &Bunker) -> (serde_json::Value, Vec<(String, String)>) {
    let out = b.run(["audit", "--json"]);
    out.ok();
    let records = out.json();
    let record = records
        .as_array()
        .expect("an array of records")
        .iter()
        .rev()
        .find(|r| str_field(r, "operation") == "verify")
        .cloned()
        .unwrap_or_else(|| panic!("no verify record\n{out}"));
    let details = record["details"]
        .as_array()
        .expect("details")
        .iter()
        .map(|d| {
            (
                str_field(d, "key").to_owned(),
                str_field(d, "value").to_owned(),
            )
        })
        .collect();
    (record, details)
}

fn detail<'a>(details: &'a [(String, String)], key: &str) -> &'a str {
    details
        .iter()
        .find(|(k, _)| k == key)
        .map_or("", |(_, v)| v.as_str())
}

fn source_tree(t: &TestDir) -> std::path::PathBuf {
    let src = t.join("src");
    write_random_file(&src.join("data/random.bin"), 3, 3 << 20);
    write_file(&src.join("data/text.txt"), &b"drill me\n".repeat(10_000));
    write_file(&src.join("small"), b"small");
    std::os::unix::fs::symlink("small", src.join("link")).expect("symlink");
    chmod(&src.join("small"), 0o640);
    src
}

#[test]
fn a_files_drill_passes_and_is_audited() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &["--tag", "source=web"]).ok();
    let snapshot = str_field(&b.snapshots()[0], "id").to_owned();
    let marker = t.join("smoke-ran");
    let smoke = format!(
        "test -f \"$BUNKER_RESTORE_DIR{}/small\" && echo \"$BUNKER_SNAPSHOT\" > {}",
        s(&src),
        s(&marker)
    );
    let out = b.run(["verify", "--smoke", &smoke]);
    out.ok();
    assert!(out.stdout.starts_with("PASS snapshot "), "{out}");
    assert!(out.stdout.contains("source web (files)"), "{out}");
    assert!(out.stdout.contains("3 files"), "{out}");
    assert_eq!(fs::read_to_string(&marker).unwrap().trim(), snapshot);

    let out = b.run(["verify", "--json"]);
    out.ok();
    let doc = out.json();
    assert_eq!(doc["passed"], true);
    let drill = &doc["drills"][0];
    assert_eq!(str_field(drill, "snapshot_id"), snapshot);
    assert_eq!(u64_field(drill, "files"), 3);
    assert_eq!(u64_field(drill, "bytes"), (3 << 20) + 90_000 + 5);
    // The temporary target is gone.
    assert!(!Path::new(str_field(drill, "target")).exists(), "{doc}");

    let (record, details) = last_verify_record(&b);
    assert_eq!(str_field(&record, "outcome"), "passed");
    assert_eq!(str_field(&record, "snapshot_id"), snapshot);
    let keys: Vec<&str> = details.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "source",
            "kind",
            "drill",
            "restore_ms",
            "verify_ms",
            "files",
            "bytes"
        ]
    );
    assert_eq!(detail(&details, "source"), "web");
    assert_eq!(detail(&details, "drill"), "cli");
    assert_eq!(detail(&details, "files"), "3");

    // The recovery report picks the drill up: last passing drill, its RTO, status passed.
    let report = b.run(["report", "--json"]).ok().json();
    let web = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == "web")
        .unwrap_or_else(|| panic!("no row for source web: {report}"));
    assert_eq!(web["drill_status"], "passed", "{web}");
    let passing = &web["last_passing_drill"];
    assert_eq!(passing["snapshot"], snapshot.as_str(), "{web}");
    assert_eq!(
        passing["restore_ms"].as_u64(),
        detail(&details, "restore_ms").parse::<u64>().ok(),
        "{web}"
    );
    assert_eq!(web["drills"].as_array().map(Vec::len), Some(2), "{web}");
}

#[test]
fn a_kept_target_that_was_tampered_with_is_named_by_the_verification_pass() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let target = t.join("kept");
    b.run(["verify", "--keep", "--target", s(&target)]).ok();
    let inner = target.join(src.strip_prefix("/").unwrap());
    // One byte of content and one mode.
    let text = inner.join("data/text.txt");
    let meta = fs::metadata(&text).unwrap();
    let mtime = meta.modified().unwrap();
    flip_byte(&text, 12_345);
    chmod(
        &text,
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
    );
    fs::File::options()
        .write(true)
        .open(&text)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    chmod(&inner.join("small"), 0o600);

    // The library's pass, against the snapshot, names both.
    let repository = bunker_repo_format::Repository::open(
        std::sync::Arc::new(bunker_repo_format::backend::LocalBackend::open(b.repo()).unwrap()),
        PASSWORD.as_bytes(),
    )
    .unwrap();
    let (_, snapshot) = repository.resolve_snapshot("latest").unwrap();
    let index = repository.load_index().unwrap().index;
    let found = verify_tree(
        &repository,
        &index,
        &snapshot.tree,
        &target,
        &VerifyOptions::default(),
    );
    let text_lines: Vec<String> = found.differences.iter().map(ToString::to_string).collect();
    assert_eq!(text_lines.len(), 2, "{text_lines:#?}");
    assert!(
        text_lines
            .iter()
            .any(|l| l.contains("data/text.txt: content differs at offset")),
        "{text_lines:#?}"
    );
    assert!(
        text_lines
            .iter()
            .any(|l| l.ends_with("small: mode 600, the snapshot has 640")),
        "{text_lines:#?}"
    );
    // A drill into the (now not empty) target is refused.
    let out = b.run(["verify", "--target", s(&target)]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("is not empty"), "{out}");
}

#[test]
fn a_failing_smoke_command_fails_the_drill_with_22_and_the_target_goes() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let target = t.join("drill");
    let out = b.run(["verify", "--target", s(&target), "--smoke", "exit 3"]);
    out.code(22);
    assert!(out.stdout.starts_with("FAIL "), "{out}");
    assert!(out.stdout.contains("failure smoke"), "{out}");
    assert!(
        out.stderr.contains("smoke command \"exit 3\" failed"),
        "{out}"
    );
    assert!(!target.exists(), "the target is removed on failure too");
    let (record, details) = last_verify_record(&b);
    assert_eq!(str_field(&record, "outcome"), "failed");
    assert_eq!(detail(&details, "failure"), "smoke");
    assert!(detail(&details, "error").contains("exit 3"), "{details:?}");
}

#[test]
fn a_drill_against_a_corrupted_pack_fails_with_20_naming_the_pack() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let packs = repo_objects(b.repo(), "data");
    let victim = packs.iter().next().unwrap().clone();
    let path = b.repo().join(&victim);
    let len = fs::metadata(&path).unwrap().len();
    for offset in [len / 3, len / 2, 2 * len / 3] {
        flip_byte(&path, offset);
    }
    let out = b.run(["verify", "--json"]);
    out.code(20);
    let doc = out.json();
    let drill = &doc["drills"][0];
    assert_eq!(str_field(drill, "failure"), "restore");
    let errors = drill["errors"].to_string();
    let pack_name = victim.rsplit('/').next().unwrap();
    assert!(errors.contains(pack_name), "{pack_name} not named\n{out}");
    let (record, details) = last_verify_record(&b);
    assert_eq!(str_field(&record, "outcome"), "failed");
    assert_eq!(detail(&details, "failure"), "restore");
    assert!(detail(&details, "error").contains(pack_name), "{details:?}");
}

/// Makes an ext4 image holding `dir` (`mkfs.ext4 -d`); false when the tools are missing.
fn make_ext4(image: &Path, dir: &Path) -> bool {
    fs::File::create(image)
        .and_then(|f| f.set_len(32 << 20))
        .expect("image file");
    Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d", s(dir), s(image)])
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_volume_drill_runs_fsck_and_a_damaged_filesystem_fails_it() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let image = t.join("disk.img");
    if !make_ext4(&image, &src) {
        note("SKIPPED volume drill: mkfs.ext4 with -d is not available");
        return;
    }
    let b = t.bunker();
    b.init();
    b.backup(&[], &["--volume", s(&image), "--tag", "source=disk"])
        .ok();
    let marker = t.join("image-seen");
    let smoke = format!(
        "cmp \"$BUNKER_RESTORE_IMAGE\" {} && touch {}",
        s(&image),
        s(&marker)
    );
    let out = b.run(["verify", "--smoke", &smoke]);
    out.ok();
    assert!(out.stdout.contains("source disk (volume)"), "{out}");
    assert!(
        marker.exists(),
        "the smoke command saw an identical image\n{out}"
    );

    // Clear the root directory's inode: the bytes back up and restore exactly, but the
    // filesystem is broken, and fsck says so.
    let cleared = Command::new("debugfs")
        .args(["-w", "-R", "clri <2>", s(&image)])
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(cleared, "debugfs clri");
    b.backup(&[], &["--volume", s(&image), "--tag", "source=disk"])
        .ok();
    let out = b.run(["verify"]);
    out.code(22);
    assert!(out.stdout.contains("failure fsck"), "{out}");
    assert!(out.stderr.contains("fsck of "), "{out}");
    let (_, details) = last_verify_record(&b);
    assert_eq!(detail(&details, "kind"), "volume");
    assert_eq!(detail(&details, "failure"), "fsck");
    // Without fsck the same drill passes: the restore itself is exact.
    b.run(["verify", "--no-fsck"]).ok();
}

#[test]
fn without_a_snapshot_the_latest_of_each_source_is_drilled() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &["--tag", "source=a"]).ok();
    write_file(&src.join("small"), b"changed");
    let second = b.backup(&[&src], &["--tag", "source=a", "--json"]);
    second.ok();
    let newest_a = str_field(&second.json(), "snapshot_id").to_owned();
    b.backup(&[&src.join("data")], &["--tag", "source=b"]).ok();
    let out = b.run(["verify", "--json"]);
    out.ok();
    let doc = out.json();
    let drills = doc["drills"].as_array().unwrap();
    let sources: Vec<&str> = drills.iter().map(|d| str_field(d, "source")).collect();
    assert_eq!(sources, ["a", "b"], "{doc}");
    assert_eq!(str_field(&drills[0], "snapshot_id"), newest_a, "{doc}");
    assert!(drills.iter().all(|d| d["passed"] == true), "{doc}");
}

#[test]
fn an_unreadable_snapshot_fails_verify_with_20_after_the_others_are_drilled() {
    let t = TestDir::new();
    let src = source_tree(&t);
    let b = t.bunker();
    b.init();
    let first = b.backup(&[&src], &["--tag", "source=a", "--json"]);
    first.ok();
    let readable = str_field(&first.json(), "snapshot_id").to_owned();
    let second = b.backup(&[&src.join("data")], &["--tag", "source=b", "--json"]);
    second.ok();
    let damaged = str_field(&second.json(), "snapshot_id").to_owned();
    flip_byte(&b.repo().join(format!("snapshots/{damaged}")), 40);

    let out = b.run(["verify", "--json"]);
    out.code(20);
    let doc = out.json();
    assert_eq!(doc["passed"], false, "{doc}");
    let drills = doc["drills"].as_array().expect("drills");
    assert_eq!(drills.len(), 1, "{doc}");
    assert_eq!(str_field(&drills[0], "snapshot_id"), readable, "{doc}");
    assert_eq!(drills[0]["passed"], true, "{doc}");
    let unreadable = doc["unreadable"].as_array().expect("unreadable");
    assert_eq!(unreadable.len(), 1, "{doc}");
    assert_eq!(str_field(&unreadable[0], "snapshot_id"), damaged, "{doc}");

    let out = b.run(["verify"]);
    out.code(20);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with(&format!("PASS snapshot {}", &readable[..8])),
        "{out}"
    );
    assert!(
        lines[1].starts_with(&format!("FAIL snapshot {}: cannot be read", &damaged[..8])),
        "{out}"
    );

    // With a filter, whether it matches is unknown: a warning, and the drill passes.
    let out = b.run(["verify", "--tag", "source=a"]);
    out.ok();
    assert!(
        out.stderr.contains("cannot be read and is left out"),
        "{out}"
    );
    assert!(out.stderr.contains(&damaged[..8]), "{out}");

    // Once it is forgotten, verify passes.
    b.run(["forget", &damaged[..8]]).ok();
    let out = b.run(["verify"]);
    out.ok();
    assert!(out.stderr.is_empty(), "{out}");
}
