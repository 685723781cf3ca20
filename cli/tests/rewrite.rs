//! `bunker rewrite`: snapshots written again without what matches exclude patterns, and the
//! left-out bytes gone from the repository once the originals are forgotten and pruned.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;

/// Every path below `root`, relative to it.
fn paths_below(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let relative = path.strip_prefix(root).expect("below root");
            found.insert(relative.display().to_string());
            if path.is_dir() && !path.is_symlink() {
                pending.push(path);
            }
        }
    }
    found
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

#[test]
fn rewrite_leaves_out_what_matches_and_prune_then_removes_its_bytes() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("app/main.rs"), b"fn main() {}\n");
    write_random_file(&src.join("app/secrets/key.pem"), 1, 150_000);
    write_file(&src.join("app/secrets/notes.txt"), b"rotate me\n");
    write_file(&src.join("app/cache/run.tmp"), b"scratch!!\n");
    write_random_file(&src.join("other/id_rsa"), 2, 50_000);
    write_file(&src.join("other/readme"), b"kept\n");
    std::os::unix::fs::symlink("main.rs", src.join("app/link")).expect("symlink");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    write_file(&src.join("app/main.rs"), b"fn main() { run() }\n");
    b.backup(&[&src], &["--tag", "env=prod"]).ok();
    // A stream snapshot holds no tree of files: never rewritten.
    b.run([
        "backup",
        "--stdin-from-command",
        "echo dump",
        "--stdin-filename",
        "db.sql",
    ])
    .ok();
    let before = b.snapshots();
    assert_eq!(before.len(), 3);
    let id_rsa = src.join("other/id_rsa");
    let patterns = [
        "-e",
        "secrets",
        "-e",
        "*.tmp",
        "-e",
        id_rsa.to_str().expect("UTF-8 path"),
    ];
    let removed: Vec<String> = ["app/cache/run.tmp", "app/secrets", "other/id_rsa"]
        .iter()
        .map(|p| src.join(p).display().to_string())
        .collect();

    // A dry run says what would go and writes nothing.
    let mut args = vec!["--json", "rewrite", "--dry-run"];
    args.extend(patterns);
    let out = b.run(&args);
    out.ok();
    let doc = out.json();
    assert_eq!(doc["rewritten"].as_array().map(Vec::len), Some(2), "{doc}");
    for rewrite in doc["rewritten"].as_array().into_iter().flatten() {
        assert_eq!(rewrite["removed"], serde_json::json!(removed), "{doc}");
        assert!(rewrite["new"].is_null(), "{doc}");
        assert_eq!(rewrite["removed_files"], 4, "{doc}");
        assert_eq!(rewrite["removed_dirs"], 1, "{doc}");
        assert_eq!(
            rewrite["removed_bytes"],
            150_000 + 10 + 10 + 50_000,
            "{doc}"
        );
    }
    assert_eq!(doc["skipped"][0]["id"], before[2]["id"], "{doc}");
    assert_eq!(b.snapshots(), before, "a dry run writes nothing");

    // The rewrite proper, originals forgotten.
    let mut args = vec!["--json", "rewrite", "--forget"];
    args.extend(patterns);
    let out = b.run(&args);
    out.ok();
    let doc = out.json();
    let after = b.snapshots();
    assert_eq!(after.len(), 3, "{after:?}");
    for (i, rewrite) in doc["rewritten"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let old = &before[i];
        assert_eq!(rewrite["old"], old["id"], "{doc}");
        assert!(
            !after.iter().any(|s| s["id"] == old["id"]),
            "the original is forgotten"
        );
        let new = after
            .iter()
            .find(|s| s["id"] == rewrite["new"])
            .expect("the rewritten snapshot is listed");
        for field in ["time", "host", "paths", "parent"] {
            assert_eq!(new[field], old[field], "{field}");
        }
        assert_ne!(new["tree"], old["tree"]);
        let mut tags = old["tags"].as_array().cloned().unwrap_or_default();
        tags.push(format!("rewritten={}", str_field(old, "short_id")).into());
        assert_eq!(new["tags"], serde_json::Value::Array(tags));
        assert_eq!(
            u64_field(&new["summary"], "files"),
            u64_field(&old["summary"], "files") - 4
        );
        assert_eq!(
            u64_field(&new["summary"], "bytes"),
            u64_field(&old["summary"], "bytes") - 200_020
        );
    }
    // What a restore of the newest files snapshot brings back: all but what matched.
    let newest = str_field(&doc["rewritten"][1], "new");
    let cat = b.run(["cat", "snapshot", newest]);
    cat.ok();
    assert!(cat.stdout.contains("*.tmp"), "patterns recorded: {cat}");
    let target = t.join("restored");
    b.restore(newest, &target).ok();
    let restored = under(&target, &src);
    assert_eq!(
        paths_below(&restored),
        set(&[
            "app",
            "app/cache",
            "app/link",
            "app/main.rs",
            "other",
            "other/readme"
        ])
    );
    assert_eq!(
        fs::read(restored.join("app/main.rs")).expect("main.rs"),
        b"fn main() { run() }\n"
    );
    assert_eq!(
        fs::read_link(restored.join("app/link")).expect("link"),
        Path::new("main.rs")
    );

    // Nothing matches any more: a second run writes nothing.
    let mut args = vec!["rewrite", "--forget"];
    args.extend(patterns);
    let out = b.run(&args);
    out.ok();
    assert!(
        out.stdout
            .contains("0 snapshot(s) rewritten, 2 with nothing to leave out"),
        "{out}"
    );

    // The left-out bytes are unreferenced until prune removes them.
    let stats = b.run(["--json", "stats"]).json();
    assert_eq!(
        stats["repository"]["unreferenced"]["data"]["raw_bytes"], 200_020,
        "{stats}"
    );
    b.run(["prune", "--grace", "0"]).ok();
    let stats = b.run(["--json", "stats"]).json();
    assert_eq!(
        stats["repository"]["unreferenced"]["data"]["blobs"], 0,
        "{stats}"
    );
    let find = b.run(["--json", "find", "key.pem", "id_rsa", "*.tmp"]);
    find.ok();
    assert!(!find.stdout.contains(&src.display().to_string()), "{find}");
    b.run(["check", "--read-data"]).ok();

    // Audited: the two rewrites that wrote, not the dry run.
    let audit = b.run(["audit", "--json"]);
    audit.ok();
    let audited = audit
        .json()
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["operation"] == "rewrite" && r["outcome"] == "succeeded")
        .count();
    assert_eq!(audited, 2, "{audit}");
}

#[test]
fn rewrite_keeps_originals_by_default_and_refuses_to_empty_a_snapshot() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a/one"), b"1\n");
    write_file(&src.join("b/two"), b"2\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let original = b.snapshots();

    // Without --forget both stay; the new one is tagged with the original's short id.
    let out = b.run(["rewrite", "latest", "-e", "two"]);
    out.ok();
    assert!(out.stdout.contains("the originals stay"), "{out}");
    let after = b.snapshots();
    assert_eq!(after.len(), 2);
    assert!(after.iter().any(|s| s["id"] == original[0]["id"]));
    let short = str_field(&original[0], "short_id");
    assert!(
        after
            .iter()
            .any(|s| s["tags"] == serde_json::json!([format!("rewritten={short}")])),
        "{after:?}"
    );

    // Every file matching: left as it is, said why.
    let out = b.run([
        "rewrite",
        original[0]["id"].as_str().unwrap_or(""),
        "-e",
        "a",
        "-e",
        "b",
    ]);
    out.ok();
    assert!(out.stdout.contains("every file it holds matches"), "{out}");
    assert_eq!(b.snapshots().len(), 2);

    // No patterns, or a pattern that can never match: refused.
    let out = b.run(["rewrite", "latest"]);
    out.code(1);
    assert!(out.stderr.contains("--exclude"), "{out}");
    b.run(["rewrite", "latest", "-e", "a/b"]).code(2);
    let list = t.join("patterns");
    write_file(&list, b"# comment\n\nrelative/path\n");
    let out = b.run([
        "rewrite",
        "latest",
        "--exclude-file",
        list.to_str().expect("UTF-8"),
    ]);
    out.code(1);
    assert!(out.stderr.contains("can never match"), "{out}");
    assert_eq!(b.snapshots().len(), 2);
}

/// `recover` writes a snapshot whose summary counts no files: a rewrite of it must still
/// leave out what matches, not call it empty and advise forgetting the recovered data.
#[test]
fn a_recovered_snapshot_is_rewritten_not_called_empty() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("keep.txt"), b"keep me\n");
    write_file(&src.join("id.pem"), b"secret\n");
    let b = t.bunker();
    b.init();
    let out = b.backup(&[&src], &["--json"]);
    out.ok();
    let original = str_field(&out.json(), "snapshot_id").to_owned();
    b.run(["forget", &original]).ok();
    let out = b.run(["recover", "--json"]);
    out.ok();
    let recovered = str_field(&out.json(), "snapshot_id").to_owned();

    let out = b.run(["rewrite", &recovered, "-e", "*.pem", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(report["skipped"], serde_json::json!([]), "{out}");
    let rewritten = report["rewritten"].as_array().expect("rewritten");
    assert_eq!(rewritten.len(), 1, "{out}");
    let new = rewritten[0]["new"].as_str().expect("new id").to_owned();
    let target = t.join("restore");
    b.restore(&new, &target).ok();
    let found = paths_below(&target);
    assert!(found.iter().any(|p| p.ends_with("keep.txt")), "{found:?}");
    assert!(!found.iter().any(|p| p.ends_with("id.pem")), "{found:?}");
}
