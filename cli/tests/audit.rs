//! The audit trail: backup, restore, check, forget and prune each leave a record in the
//! repository and a line in the local log; a failed command is recorded as failed; a
//! put-only writer can add records it cannot read.

mod common;

use std::fs;

use common::*;

/// A new repository and a directory `src` holding one file to back up.
fn repository_and_source() -> (TestDir, Bunker, std::path::PathBuf) {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).expect("mkdir src");
    fs::write(src.join("f"), b"audited").expect("write src/f");
    let b = t.bunker();
    b.init();
    (t, b, src)
}

#[test]
fn commands_leave_audit_records_in_the_repository_and_the_local_log() {
    let (t, b, src) = repository_and_source();
    let backup = b.backup(&[&src], &["--json"]);
    backup.ok();
    let snapshot = str_field(&backup.json(), "snapshot_id").to_owned();
    b.restore("latest", &t.join("r")).ok();
    b.run(["check"]).ok();
    let missing = b.restore("ffffffff", &t.join("r2"));
    assert_ne!(missing.code, 0);
    b.run(["forget", "--keep-last", "1", "--prune"]).ok();
    // Commands that change or prove nothing leave no record, dry runs included.
    b.run(["snapshots"]).ok();
    b.run(["forget", "--keep-last", "1", "--dry-run"]).ok();
    b.run(["prune", "--dry-run"]).ok();
    b.run(["rewrite", "latest", "--exclude", "/nothing", "--dry-run"])
        .ok();

    let out = b.run(["audit", "--json"]);
    out.ok();
    let records = out.json();
    let records = records.as_array().unwrap();
    let summary: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (str_field(r, "operation"), str_field(r, "outcome")))
        .collect();
    assert_eq!(
        summary,
        [
            ("backup", "succeeded"),
            ("restore", "succeeded"),
            ("check", "succeeded"),
            ("restore", "failed"),
            ("forget", "succeeded"),
        ],
        "{out}"
    );
    assert_eq!(str_field(&records[0], "snapshot_id"), snapshot);
    assert_eq!(str_field(&records[0], "target"), src.display().to_string());
    assert!(str_field(&records[1], "target").ends_with(&t.join("r").display().to_string()));
    let error = records[3]["details"][0]["value"].as_str().unwrap();
    assert!(error.contains("ffffffff"), "{error}");

    // The same trail, locally.
    let log = fs::read_to_string(t.join("cache/.local/state/bunker/audit.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), records.len());
    assert_eq!(lines[0]["id"], records[0]["id"]);

    let text = b.run(["audit"]);
    text.ok();
    assert!(text.stdout.contains("5 records"), "{text}");
}

#[test]
fn a_put_only_writer_adds_records_it_cannot_read() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    let b = t.bunker();
    b.init();
    let key = t.join("put-only.key");
    b.run(["key", "add", "--put-only", "--out", key.to_str().unwrap()])
        .ok();
    let writer = b.with_password(None).with_env("BUNKER_KEY_FILE", &key);
    writer.backup(&[&src], &[]).ok();
    let refused = writer.run(["audit"]);
    refused.code(13);
    let out = b.run(["audit", "--json"]);
    out.ok();
    let records = out.json();
    assert_eq!(records.as_array().unwrap().len(), 1);
    assert_eq!(str_field(&records[0], "operation"), "backup");
}

#[test]
fn prune_keep_audit_removes_records_stored_longer_ago() {
    let (t, b, src) = repository_and_source();
    b.backup(&[&src], &[]).ok();
    b.restore("latest", &t.join("r")).ok();
    // Those two records were stored ten days ago, on the storage's clock.
    let dir = t.join("repo/audit");
    let ten_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(10 * 86400);
    for entry in fs::read_dir(&dir).unwrap() {
        let file = fs::File::options()
            .write(true)
            .open(entry.unwrap().path())
            .unwrap();
        file.set_modified(ten_days_ago).unwrap();
    }
    b.run(["check"]).ok();

    // Without --keep-audit prune keeps every record; a dry run counts what it would remove.
    let out = b.run(["prune", "--json"]);
    out.ok();
    assert_eq!(out.json()["report"]["audit_records_removed"], 0, "{out}");
    let out = b.run(["prune", "--keep-audit", "7d", "--dry-run"]);
    out.ok();
    assert!(
        out.stdout
            .contains("audit records older than --keep-audit: 2, to remove"),
        "{out}"
    );
    // `forget --prune` passes it on.
    let out = b.run([
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--keep-audit",
        "7d",
    ]);
    out.ok();
    assert!(
        out.stdout
            .contains("removed 2 audit records older than --keep-audit"),
        "{out}"
    );

    let out = b.run(["audit", "--json"]);
    out.ok();
    let operations: Vec<String> = out
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_field(r, "operation").to_owned())
        .collect();
    // The dry run left no record.
    assert_eq!(operations, ["check", "prune", "forget"], "{out}");
}
