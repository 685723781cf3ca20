//! The audit trail: backup, restore, check, forget and prune each leave a record in the
//! repository and a line in the local log; a failed command is recorded as failed; a
//! put-only writer can add records it cannot read.

mod common;

use std::fs;

use common::*;

#[test]
fn commands_leave_audit_records_in_the_repository_and_the_local_log() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"audited").unwrap();
    let b = t.bunker();
    b.init();
    let backup = b.backup(&[&src], &["--json"]);
    backup.ok();
    let snapshot = str_field(&backup.json(), "snapshot_id").to_owned();
    b.restore("latest", &t.join("r")).ok();
    b.run(["check"]).ok();
    let missing = b.restore("ffffffff", &t.join("r2"));
    assert_ne!(missing.code, 0);
    b.run(["forget", "--keep-last", "1", "--prune"]).ok();
    // Commands that change or prove nothing leave no record.
    b.run(["snapshots"]).ok();

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
