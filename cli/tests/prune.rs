//! End-to-end `bunker prune`: progress as JSON lines on stderr, the summary on stdout.

mod common;

use common::*;
use serde_json::Value;

#[test]
fn prune_json_reports_progress_in_order_on_stderr() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let src = t.join("src");
    write_random_file(&src.join("a.bin"), 1, 300_000);
    b.backup(&[&src], &[]).ok();
    write_random_file(&src.join("a.bin"), 2, 300_000);
    b.backup(&[&src], &[]).ok();
    b.run(["forget", "--keep-last", "1"]).ok();

    let out = b.run(["prune", "--grace", "0", "--json"]);
    out.ok();
    let summary = out.json();
    let deleted = summary["report"]["deleted_packs"]
        .as_u64()
        .expect("deleted");
    let freed = summary["report"]["deleted_bytes"].as_u64().expect("freed");
    assert!(
        deleted >= 2,
        "the first backup's data and tree packs\n{out}"
    );

    let progress: Vec<Value> = out
        .stderr
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON line"))
        .map(|line| line["progress"].clone())
        .collect();
    let mut phases: Vec<&str> = progress
        .iter()
        .map(|p| p["phase"].as_str().expect("phase"))
        .collect();
    phases.dedup();
    assert_eq!(
        phases,
        [
            "listing",
            "reading-index",
            "walking",
            "deciding",
            "listing",
            "reading-index",
            "walking",
            "deciding",
            "writing-index",
            "deleting",
            "done"
        ],
        "{out}"
    );
    let last_delete = progress
        .iter()
        .rev()
        .find(|p| p["phase"] == "deleting")
        .expect("deleting");
    assert_eq!(last_delete["done"], deleted, "{out}");
    assert_eq!(last_delete["total"], deleted, "{out}");
    assert_eq!(last_delete["bytes"], freed, "{out}");
    let walked = progress
        .iter()
        .find(|p| p["phase"] == "walking" && p["done"] == p["total"])
        .expect("walked");
    assert_eq!(walked["total"], 1, "one snapshot left\n{out}");
}
