//! End to end: partial and rolling `check`, `repair index`, `repair snapshots`, and backups
//! that store again what a lost pack held.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// `check ARGS... --json`, with the expected exit code.
#[track_caller]
fn check_json(b: &Bunker, args: &[&str], code: i32) -> Value {
    let mut all = vec!["check", "--json"];
    all.extend_from_slice(args);
    let out = b.run(&all);
    out.code(code);
    out.json()
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {v}"))
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

fn objects(v: &Value, key: &str) -> Vec<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} is not an array in {v}"))
        .iter()
        .map(|p| str_field(p, "object").to_owned())
        .collect()
}

fn broken_ids(v: &Value) -> Vec<String> {
    v["broken_snapshots"]
        .as_array()
        .expect("broken_snapshots")
        .iter()
        .map(|b| str_field(b, "id").to_owned())
        .collect()
}

/// Every pack object (`data/..` and `tree/..`).
fn all_packs(repo: &Path) -> BTreeSet<String> {
    let mut packs = repo_objects(repo, "data");
    packs.extend(repo_objects(repo, "tree"));
    packs
}

/// `backup`, returning the new snapshot's full id.
#[track_caller]
fn backup_id(b: &Bunker, src: &Path) -> String {
    let out = b.backup(&[src], &["--json"]);
    out.ok();
    str_field(&out.json(), "snapshot_id").to_owned()
}

/// A repository with three backups of a growing tree: three data packs, three tree packs.
fn three_backups(t: &TestDir) -> (Bunker, PathBuf) {
    let src = t.join("src");
    let b = t.bunker();
    b.init();
    for i in 0..3u64 {
        write_file(
            &src.join(format!("f{i}.bin")),
            &random_bytes(100 + i, 50_000),
        );
        b.backup(&[&src], &[]).ok();
    }
    (b, src)
}

/// The subset (1-based) of `m` that the pack named `name` belongs to.
fn subset_of(name: &str, m: u32) -> u32 {
    let hex = name.rsplit('/').next().expect("hex");
    u32::from_str_radix(&hex[..8], 16).expect("hex") % m + 1
}

#[test]
fn check_read_data_subsets_cover_every_pack_once() {
    let t = TestDir::new();
    let (b, _) = three_backups(&t);
    let packs = all_packs(b.repo());
    assert_eq!(packs.len(), 6);

    let mut seen = BTreeSet::new();
    for n in 1..=3u32 {
        let spec = format!("{n}/3");
        let report = check_json(&b, &["--read-data-subset", &spec], 0);
        assert_eq!(str_field(&report, "read_data"), format!("subset {n}/3"));
        let read = strings(&report, "read_packs");
        for pack in &read {
            assert_eq!(subset_of(pack, 3), n, "{pack} read by {spec}");
            assert!(seen.insert(pack.clone()), "{pack} read twice");
        }
        assert_eq!(u64_field(&report, "packs_read"), read.len() as u64);
        assert_eq!(
            u64_field(&report, "packs_unverified"),
            (packs.len() - read.len()) as u64
        );
        assert_eq!(
            u64_field(&report, "packs"),
            6,
            "structure is checked in full"
        );
    }
    assert_eq!(seen, packs, "1/3, 2/3 and 3/3 together read every pack");

    let report = check_json(&b, &["--read-data-subset", "50%"], 0);
    assert_eq!(u64_field(&report, "packs_read"), 3);
    assert_eq!(u64_field(&report, "packs_unverified"), 3);
    let text = b.run(["check", "--read-data-subset", "1/3"]);
    text.ok();
    assert!(text.stdout.contains("subset 1/3"), "{text}");

    for bad in ["0/3", "4/3", "0%", "150%", "half"] {
        let out = b.run(["check", "--read-data-subset", bad]);
        out.code(2);
        assert!(
            out.stderr.contains("N/M") && out.stderr.contains("--read-data-subset"),
            "{out}"
        );
    }
    let out = b.run(["check", "--read-data", "--read-data-subset", "1/2"]);
    out.code(2);
    let out = b.run(["check", "--max-duration", "1h", "--read-data-subset", "1/2"]);
    out.code(2);
}

#[test]
fn check_max_duration_reads_least_recently_verified_first_and_remembers() {
    let t = TestDir::new();
    let (b, _) = three_backups(&t);
    let packs = all_packs(b.repo());
    let cache = t.join("state");

    // A zero budget reads one pack per run: every run a pack not verified before.
    let mut seen = BTreeSet::new();
    let mut state_file = String::new();
    for run in 1..=packs.len() {
        let report = check_json(&b, &["--max-duration", "0s", "--cache-dir", s(&cache)], 0);
        let read = strings(&report, "read_packs");
        assert_eq!(read.len(), 1, "{report}");
        assert!(seen.insert(read[0].clone()), "{} read again early", read[0]);
        assert_eq!(
            u64_field(&report, "packs_unverified"),
            (packs.len() - run) as u64
        );
        state_file = str_field(&report, "state_file").to_owned();
    }
    assert_eq!(seen, packs);
    let state_path = Path::new(&state_file);
    assert!(state_path.starts_with(&cache), "{state_file}");
    assert_eq!(state_path.file_name().expect("name"), "verified-packs");
    let repository_hex = state_path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .expect("repository dir");
    assert!(is_hex(repository_hex, 64), "{state_file}");
    let text = fs::read_to_string(state_path).expect("state file");
    let recorded: BTreeSet<String> = text
        .lines()
        .map(|line| {
            let (id, time) = line.split_once(' ').expect("id time");
            assert!(time.parse::<i64>().expect("unix time") > 1_600_000_000);
            id.to_owned()
        })
        .collect();
    let pack_ids: BTreeSet<String> = packs
        .iter()
        .map(|p| p.rsplit('/').next().expect("hex").to_owned())
        .collect();
    assert_eq!(recorded, pack_ids);

    // A generous budget reads everything; a corrupt state file means "never verified".
    let report = check_json(&b, &["--max-duration", "1h", "--cache-dir", s(&cache)], 0);
    assert_eq!(u64_field(&report, "packs_read"), packs.len() as u64);
    fs::write(state_path, "garbage\n").expect("corrupt state");
    let report = check_json(&b, &["--max-duration", "0s", "--cache-dir", s(&cache)], 0);
    assert_eq!(u64_field(&report, "packs_read"), 1);
    assert_eq!(
        u64_field(&report, "packs_unverified"),
        (packs.len() - 1) as u64
    );

    // Without --cache-dir the state goes below $XDG_CACHE_HOME/bunker.
    let report = check_json(&b, &["--max-duration", "1m"], 0);
    let default_state = PathBuf::from(str_field(&report, "state_file"));
    assert_eq!(
        default_state,
        t.join("cache")
            .join("bunker")
            .join(repository_hex)
            .join("verified-packs")
    );
    assert!(default_state.is_file());
    let out = b.run(["check", "--max-duration", "soon"]);
    out.code(2);
    assert!(out.stderr.contains("--max-duration"), "{out}");
}

/// Two backups; returns the bunker, the source, both snapshot ids and the index segment
/// the second backup wrote.
fn two_backups(t: &TestDir) -> (Bunker, PathBuf, String, String, String) {
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(1, 300_000));
    write_file(&src.join("dir/b.txt"), b"some text\n");
    let b = t.bunker();
    b.init();
    let first = backup_id(&b, &src);
    let segments = repo_objects(b.repo(), "index");
    write_file(&src.join("dir/c.bin"), &random_bytes(2, 200_000));
    let second = backup_id(&b, &src);
    let new: Vec<String> = repo_objects(b.repo(), "index")
        .difference(&segments)
        .cloned()
        .collect();
    assert_eq!(new.len(), 1, "one backup, one segment");
    (b, src, first, second, new[0].clone())
}

#[test]
fn repair_index_rebuilds_a_deleted_segment() {
    let t = TestDir::new();
    let (b, src, first, second, segment) = two_backups(&t);
    let packs_before = all_packs(b.repo());
    let old_segments = repo_objects(b.repo(), "index");
    fs::remove_file(b.repo().join(&segment)).expect("delete segment");

    let report = check_json(&b, &[], 4);
    assert_eq!(broken_ids(&report), vec![second.clone()]);
    let unindexed: Vec<String> = report["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .filter(|w| str_field(w, "message").contains("not indexed"))
        .map(|w| str_field(w, "object").to_owned())
        .collect();
    assert_eq!(
        unindexed.len(),
        2,
        "the second backup's data and tree packs: {report}"
    );

    let out = b.run(["repair", "index", "--dry-run", "--json"]);
    out.ok();
    let plan = out.json();
    assert!(!b.repo().join(&segment).exists());
    assert_eq!(
        repo_objects(b.repo(), "index").len(),
        old_segments.len() - 1
    );
    let mut reindexed = strings(&plan, "packs_reindexed");
    reindexed.sort();
    let mut expected = unindexed.clone();
    expected.sort();
    assert_eq!(reindexed, expected);

    let out = b.run(["repair", "index", "--json"]);
    out.ok();
    let report = out.json();
    let mut reindexed = strings(&report, "packs_reindexed");
    reindexed.sort();
    assert_eq!(reindexed, expected);
    assert!(objects(&report, "segments_replaced").is_empty());
    assert_eq!(strings(&report, "segments_written").len(), 1);
    assert!(strings(&report, "packs_dropped").is_empty());
    assert_eq!(all_packs(b.repo()), packs_before, "packs are never touched");
    for kept in old_segments.iter().filter(|s| **s != segment) {
        assert!(b.repo().join(kept).exists(), "{kept} must stay");
    }

    let report = check_json(&b, &["--read-data"], 0);
    assert_eq!(report["warnings"], serde_json::json!([]));
    let target = t.join("restore");
    b.restore(&second, &target).ok();
    compare_trees(&src, &under(&target, &src));
    let target = t.join("restore-first");
    b.restore(&first, &target).ok();
    assert_eq!(
        fs::read(under(&target, &src).join("a.bin")).expect("a.bin"),
        random_bytes(1, 300_000)
    );
}

#[test]
fn repair_index_replaces_a_damaged_segment_and_nothing_else() {
    let t = TestDir::new();
    let (b, src, _, second, segment) = two_backups(&t);
    let others: Vec<String> = repo_objects(b.repo(), "index")
        .into_iter()
        .filter(|s| *s != segment)
        .collect();
    let path = b.repo().join(&segment);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);
    let report = check_json(&b, &[], 4);
    assert!(objects(&report, "errors").contains(&segment), "{report}");

    let out = b.run(["repair", "index", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(objects(&report, "segments_replaced"), vec![segment.clone()]);
    assert_eq!(strings(&report, "packs_reindexed").len(), 2);
    let written = strings(&report, "segments_written");
    assert_eq!(written.len(), 1);
    let now = repo_objects(b.repo(), "index");
    assert!(!now.contains(&segment), "the damaged segment is deleted");
    assert!(now.contains(&format!("index/{}", written[0])));
    for other in &others {
        assert!(now.contains(other), "{other} was intact and must stay");
    }
    check_json(&b, &["--read-data"], 0);
    let target = t.join("restore");
    b.restore(&second, &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn repair_snapshots_leaves_out_the_file_whose_pack_is_damaged() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("keep1.bin"), &random_bytes(10, 300_000));
    write_file(&src.join("sub/keep2.txt"), b"kept\n");
    write_file(&src.join("sub/keep3.bin"), &random_bytes(11, 150_000));
    let b = t.bunker();
    b.init();
    let first = backup_id(&b, &src);
    let data_before = repo_objects(b.repo(), "data");
    write_file(&src.join("sub/victim.bin"), &random_bytes(12, 400_000));
    let second = backup_id(&b, &src);
    let new_data: Vec<String> = repo_objects(b.repo(), "data")
        .difference(&data_before)
        .cloned()
        .collect();
    assert_eq!(new_data.len(), 1, "only victim.bin was new");
    let victim = new_data[0].clone();
    let path = b.repo().join(&victim);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 2);

    let report = check_json(&b, &["--read-data"], 4);
    assert_eq!(broken_ids(&report), vec![second.clone()]);
    assert!(objects(&report, "errors").contains(&victim));

    let ids = |b: &Bunker| -> BTreeSet<String> {
        b.snapshots()
            .iter()
            .map(|s| str_field(s, "id").to_owned())
            .collect()
    };
    let out = b.run(["repair", "snapshots", "--dry-run", "--json"]);
    out.ok();
    let plan = out.json();
    assert_eq!(plan["repaired"][0]["old"], second.as_str());
    assert!(plan["repaired"][0]["new"].is_null());
    assert_eq!(ids(&b), BTreeSet::from([first.clone(), second.clone()]));

    let out = b.run(["repair", "snapshots", "--json"]);
    out.ok();
    let report = out.json();
    let repaired = report["repaired"].as_array().expect("repaired");
    assert_eq!(repaired.len(), 1, "{report}");
    assert_eq!(repaired[0]["old"], second.as_str());
    let new = str_field(&repaired[0], "new").to_owned();
    let removed = strings(&repaired[0], "removed");
    assert_eq!(removed.len(), 1, "{report}");
    let victim_path = src.join("sub/victim.bin");
    assert!(
        removed[0].starts_with(&format!("{}: ", victim_path.display())),
        "{report}"
    );
    assert!(removed[0].contains(&victim), "the reason names the pack");
    assert_eq!(u64_field(&report, "intact"), 1);

    assert_eq!(ids(&b), BTreeSet::from([first.clone(), new.clone()]));
    let snapshots = b.snapshots();
    let replacement = snapshots
        .iter()
        .find(|s| str_field(s, "id") == new)
        .expect("the replacement");
    let short = &second[..8];
    assert!(
        strings(replacement, "tags").contains(&format!("repaired={short}")),
        "{replacement}"
    );
    assert!(
        strings(replacement, "errors")
            .iter()
            .any(|e| e.contains("removed by repair") && e.contains("victim.bin")),
        "{replacement}"
    );

    // Only the damaged pack itself is left, as damage no snapshot needs.
    let report = check_json(&b, &["--read-data"], 4);
    assert!(broken_ids(&report).is_empty(), "{report}");
    assert!(
        objects(&report, "errors").iter().all(|o| *o == victim),
        "{report}"
    );
    assert_eq!(
        strings(&report, "unreferenced_damage"),
        vec![victim.clone()]
    );

    let target = t.join("restore");
    b.restore(&new, &target).ok();
    let restored = files_under(&under(&target, &src));
    let mut expected = files_under(&src);
    expected.remove(Path::new("sub/victim.bin"));
    assert_eq!(restored.len(), 3);
    assert_eq!(restored, expected, "every other file restores exactly");
    for rel in expected.keys() {
        let mtime = |p: PathBuf| fs::metadata(p).expect("stat").modified().expect("mtime");
        assert_eq!(
            mtime(src.join(rel)),
            mtime(under(&target, &src).join(rel)),
            "{}",
            rel.display()
        );
    }
}

#[test]
fn backup_stores_again_what_a_lost_pack_held() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(20, 300_000));
    write_file(&src.join("dir/b.txt"), b"some text\n");
    write_file(&src.join("dir/c.bin"), &random_bytes(21, 70_000));
    write_file(&src.join("gone.bin"), &random_bytes(22, 100_000));
    let b = t.bunker();
    b.init();
    let first = backup_id(&b, &src);
    let data = repo_objects(b.repo(), "data");
    assert_eq!(data.len(), 1);
    let lost = data.into_iter().next().expect("the data pack");
    fs::remove_file(b.repo().join(&lost)).expect("lose the pack");
    let report = check_json(&b, &[], 4);
    assert_eq!(broken_ids(&report), vec![first.clone()]);

    // The same tree, minus one file, backed up again: unchanged files must be read and
    // stored again, not taken from the parent snapshot.
    fs::remove_file(src.join("gone.bin")).expect("remove gone.bin");
    let out = b.backup(&[&src], &["--json"]);
    out.ok();
    let backup = out.json();
    let second = str_field(&backup, "snapshot_id").to_owned();
    assert_eq!(backup["parent"], first.as_str());
    let summary = &backup["summary"];
    assert_eq!(u64_field(summary, "files_unchanged"), 0, "{backup}");
    assert!(u64_field(summary, "bytes_read") >= 370_000, "{backup}");
    assert!(u64_field(summary, "data_blobs_added") >= 3, "{backup}");

    // The new snapshot is intact. The old one is broken exactly where the data was not
    // stored again (gone.bin); its other files resolve to the new copies. The index
    // still names the lost pack.
    let report = check_json(&b, &["--read-data"], 4);
    assert_eq!(objects(&report, "errors"), vec![lost.clone()], "{report}");
    assert_eq!(broken_ids(&report), vec![first.clone()], "{report}");
    let reasons = strings(&report["broken_snapshots"][0], "reasons");
    assert!(!reasons.is_empty());
    assert!(
        reasons.iter().all(|r| r.contains("gone.bin")),
        "only gone.bin is lost: {reasons:?}"
    );
    assert!(strings(&report, "unreferenced_damage").is_empty());

    // Drop the lost pack from the index. (Until then a reader may still resolve a blob to
    // the lost pack instead of its new copy: `Repository::load_index` keeps the first
    // location it loads. `check` and `backup` prefer stored packs; `restore` does not
    // yet, so restoring comes after `repair index` here.)
    let out = b.run(["repair", "index", "--json"]);
    out.ok();
    assert_eq!(strings(&out.json(), "packs_dropped"), vec![lost.clone()]);
    let report = check_json(&b, &["--read-data"], 4);
    assert!(objects(&report, "errors").is_empty(), "{report}");
    assert_eq!(broken_ids(&report), vec![first.clone()]);

    let target = t.join("restore");
    b.restore(&second, &target).ok();
    compare_trees(&src, &under(&target, &src));

    // And the old snapshot, without the file that is truly lost.
    let out = b.run(["repair", "snapshots", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(report["repaired"][0]["old"], first.as_str());
    let removed = strings(&report["repaired"][0], "removed");
    assert_eq!(removed.len(), 1);
    assert!(removed[0].contains("gone.bin"), "{removed:?}");
    let repaired = str_field(&report["repaired"][0], "new").to_owned();
    check_json(&b, &["--read-data"], 0);
    let target = t.join("restore-old");
    b.restore(&repaired, &target).ok();
    let restored = files_under(&under(&target, &src));
    assert_eq!(restored, files_under(&src));
}

#[test]
fn repair_packs_salvages_a_damaged_pack_and_the_next_backup_makes_every_snapshot_whole() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(30, 300_000));
    write_file(&src.join("sub/b.txt"), b"some text\n");
    write_file(&src.join("sub/c.bin"), &random_bytes(31, 150_000));
    let b = t.bunker();
    b.init();
    let first = backup_id(&b, &src);
    let data = repo_objects(b.repo(), "data");
    assert_eq!(data.len(), 1);
    let victim = data.into_iter().next().expect("the data pack");
    let path = b.repo().join(&victim);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 3);
    let report = check_json(&b, &["--read-data"], 4);
    assert_eq!(broken_ids(&report), vec![first.clone()]);
    let out = b.run(["check", "--read-data"]);
    out.code(4);
    assert!(
        out.stdout
            .contains(&format!("bunker repair packs {victim}\n")),
        "check names the way out: {out}"
    );
    assert!(
        out.stdout.contains(", 1 snapshot affected\n"),
        "check counts the one snapshot damaged: {out}"
    );

    // Every pack read: the damaged one is found; a dry run changes nothing.
    let before = files_under(b.repo());
    let out = b.run(["repair", "packs", "--dry-run", "--json"]);
    out.code(4);
    let plan = out.json();
    assert!(
        files_under(b.repo()) == before,
        "a dry run changed the repository"
    );
    let damaged = plan["damaged_packs"].as_array().expect("damaged packs");
    assert_eq!(damaged.len(), 1, "{plan}");
    assert_eq!(damaged[0]["untouched"], false, "{plan}");
    assert_eq!(damaged[0]["pack"], victim.as_str());
    assert_eq!(u64_field(&plan, "blobs_lost"), 1, "{plan}");
    assert_eq!(u64_field(&plan, "blobs_copied"), 2, "{plan}");
    assert_eq!(strings(&plan, "intact_packs").len(), 1, "the tree pack");

    // Named as check names it: the intact blobs move to a new pack, the damaged pack goes.
    let out = b.run(["repair", "packs", &victim, "--json"]);
    out.code(4);
    let report = out.json();
    assert_eq!(strings(&report, "packs_deleted"), vec![victim.clone()]);
    assert_eq!(strings(&report, "segments_replaced").len(), 1, "{report}");
    assert!(!path.exists());
    let data = repo_objects(b.repo(), "data");
    assert_eq!(data.len(), 1, "one new pack with the copies");
    // What is left is consistent: one blob is missing, nothing is damaged.
    let report = check_json(&b, &["--read-data"], 4);
    assert!(objects(&report, "errors").is_empty(), "{report}");
    assert_eq!(broken_ids(&report), vec![first.clone()]);

    // A plain backup stores the lost blob again (not deduplicated against a damaged copy),
    // and the first snapshot, which names the same blob, is whole again.
    let second = backup_id(&b, &src);
    check_json(&b, &["--read-data"], 0);
    for (snapshot, name) in [(&first, "first"), (&second, "second")] {
        let target = t.join(name);
        b.restore(snapshot, &target).ok();
        compare_trees(&src, &under(&target, &src));
    }

    // Nothing damaged now: every pack read intact, nothing written.
    let before = files_under(b.repo());
    let out = b.run(["repair", "packs", "--json"]);
    out.ok();
    assert!(
        out.json()["damaged_packs"]
            .as_array()
            .expect("list")
            .is_empty()
    );
    assert!(files_under(b.repo()) == before);
    let out = b.run(["repair", "packs", "data/zz/not-a-pack"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("is not a pack id"), "{out}");
}

#[test]
fn repair_packs_leaves_a_pack_that_a_locked_index_segment_lists() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(40, 300_000));
    write_file(&src.join("b.txt"), b"some text\n");
    let b = t.bunker();
    b.init_with(&["--lock-mode", "governance", "--lock-period", "1d"])
        .ok();
    backup_id(&b, &src);
    let data = repo_objects(b.repo(), "data");
    let victim = data.into_iter().next().expect("the data pack");
    let path = b.repo().join(&victim);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() / 3);
    let stored = |b: &Bunker| -> Vec<BTreeSet<String>> {
        ["data", "tree", "index"]
            .iter()
            .map(|kind| repo_objects(b.repo(), kind))
            .collect()
    };
    let before = stored(&b);
    for _ in 0..2 {
        let out = b.run(["repair", "packs", "--json"]);
        out.code(4);
        let report = out.json();
        let left = report["packs_left"].as_array().expect("packs left");
        assert_eq!(left.len(), 1, "{report}");
        assert_eq!(left[0]["pack"], victim.as_str());
        assert_eq!(
            u64_field(&report, "blobs_copied"),
            0,
            "nothing copied: {report}"
        );
        assert_eq!(report["damaged_packs"][0]["untouched"], true, "{report}");
        assert_eq!(report["segments_left"].as_array().expect("list").len(), 1);
        assert!(strings(&report, "packs_deleted").is_empty());
        // Nothing written: no copies pile up run after run.
        assert_eq!(stored(&b), before, "{report}");
    }
}

#[test]
fn repair_config_rebuilds_a_damaged_or_missing_config_from_a_key_slot() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.bin"), &random_bytes(50, 200_000));
    write_file(&src.join("b.txt"), b"some text\n");
    let b = t.bunker();
    let params = ["--compression", "5", "--volume-chunk-kib", "512"];
    let init = |b: &Bunker| {
        b.init_with(&params).ok();
    };
    init(&b);
    let snapshot = backup_id(&b, &src);
    let repair = |b: &Bunker, extra: &[&str]| {
        let mut args = vec!["repair", "config", "--json"];
        args.extend(params);
        args.extend_from_slice(extra);
        b.run(&args)
    };
    let out = repair(&b, &[]);
    out.code(1);
    assert!(out.stderr.contains("is intact"), "{out}");

    // A flipped byte in the sealed body: nothing opens until the config is rebuilt.
    let config = b.repo().join("config");
    flip_byte(&config, 100);
    b.run(["snapshots"]).code(1);
    let damaged = fs::read(&config).expect("read");
    let out = repair(&b, &["--dry-run"]);
    out.ok();
    assert_eq!(fs::read(&config).expect("read"), damaged, "a dry run wrote");
    let out = repair(&b, &[]);
    out.ok();
    let report = out.json();
    assert_eq!(report["header_kept"], true, "{report}");
    assert!(str_field(&report, "damage").contains("corrupt"), "{report}");
    let shown = b.run(["cat", "config"]);
    shown.ok();
    let shown = shown.json();
    assert_eq!(u64_field(&shown, "compression_level"), 5);
    assert_eq!(u64_field(&shown, "volume_chunk_size"), 512 << 10);
    let target = t.join("restored");
    b.restore(&snapshot, &target).ok();
    compare_trees(&src, &under(&target, &src));

    // Gone altogether: the repository id comes from the key slot.
    fs::remove_file(&config).expect("remove the config");
    let out = repair(&b, &[]);
    out.ok();
    assert_eq!(out.json()["header_kept"], false);
    check_json(&b, &["--read-data"], 0);
    let out = b
        .with_password(Some("not the password"))
        .run(["repair", "config"]);
    out.code(12);

    // A key slot of another repository opens with the same password, but its key reads
    // none of this repository's data: refused, nothing written.
    let other = Bunker::new(&t.join("other"), &t.join("cache"));
    init(&other);
    for dir in [b.repo().join("keys"), other.repo().join("keys")] {
        assert!(dir.is_dir());
    }
    fs::remove_dir_all(b.repo().join("keys")).expect("remove the key slots");
    fs::create_dir(b.repo().join("keys")).expect("mkdir");
    for entry in fs::read_dir(other.repo().join("keys")).expect("list") {
        let entry = entry.expect("entry");
        fs::copy(entry.path(), b.repo().join("keys").join(entry.file_name())).expect("copy");
    }
    fs::remove_file(&config).expect("remove the config");
    let out = repair(&b, &[]);
    out.code(1);
    assert!(out.stderr.contains("not this repository's key"), "{out}");
    assert!(!config.exists());
}

#[test]
fn recover_brings_back_a_snapshot_forgotten_by_mistake_before_prune_deletes_it() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let kept_src = t.join("kept");
    write_random_file(&kept_src.join("k.bin"), 1, 200_000);
    let src = t.join("src");
    write_random_file(&src.join("a/one.bin"), 2, 1_500_000);
    write_file(&src.join("b/two.txt"), b"two\n");
    b.backup(&[&kept_src], &[]).ok();
    let forgotten = str_field(&b.backup(&[&src], &["--json"]).json(), "snapshot_id").to_owned();
    b.run(["forget", &forgotten]).ok();
    // A prune plans to delete what only the forgotten snapshot used.
    b.run(["prune"]).ok();

    let dry = b.run(["recover", "--dry-run", "--json"]);
    dry.ok();
    let plan = dry.json();
    let roots = plan["roots"].as_array().expect("roots").clone();
    assert_eq!(roots.len(), 1, "{dry}");
    assert!(plan["snapshot_id"].is_null(), "{dry}");
    assert_eq!(b.snapshots().len(), 1, "a dry run writes nothing");

    let out = b.run(["recover", "--json"]);
    out.ok();
    let recovered = str_field(&out.json(), "snapshot_id").to_owned();
    let root = roots[0].as_str().expect("a tree id");
    let snapshots = b.snapshots();
    let listed = snapshots
        .iter()
        .find(|s| s["id"] == recovered.as_str())
        .unwrap_or_else(|| panic!("{snapshots:?}"));
    assert_eq!(listed["paths"][0], "/recovered", "{listed}");

    // The plan's packs are used again: the prune that executes it keeps them.
    b.run(["prune", "--grace", "0"]).ok();
    b.run(["check", "--read-data"]).ok();
    let target = t.join("restore");
    b.restore(&recovered, &target).ok();
    compare_tree_contents(&src, &under(&target.join(root), &src));
    let again = b.run(["recover", "--json"]);
    again.ok();
    assert!(again.json()["snapshot_id"].is_null(), "{again}");
}

/// A segment replaced because it lists a missing pack also lists a pack whose trailer is
/// damaged: that pack's blobs are intact and the index is the only record of where they
/// are. `repair index` must keep those entries, not drop them with the segment.
#[test]
fn repair_index_keeps_the_entries_of_a_stored_pack_whose_trailer_is_damaged() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("c.bin"), &random_bytes(7, 300_000));
    let b = t.bunker();
    b.init();
    let packs_before = all_packs(b.repo());
    let segments_before = repo_objects(b.repo(), "index");
    backup_id(&b, &src);
    let first_packs: Vec<String> = all_packs(b.repo())
        .difference(&packs_before)
        .cloned()
        .collect();
    let first_segments: Vec<String> = repo_objects(b.repo(), "index")
        .difference(&segments_before)
        .cloned()
        .collect();
    assert_eq!(first_segments.len(), 1, "one backup, one segment");
    // The second backup reuses c.bin's blob from the first data pack; its trees are all new.
    write_file(&src.join("d.bin"), &random_bytes(8, 200_000));
    let second = backup_id(&b, &src);
    let data = first_packs
        .iter()
        .find(|p| p.starts_with("data/"))
        .expect("a data pack");
    let tree = first_packs
        .iter()
        .find(|p| p.starts_with("tree/"))
        .expect("a tree pack");
    let path = b.repo().join(data);
    flip_byte(&path, fs::metadata(&path).expect("stat").len() - 10);
    fs::remove_file(b.repo().join(tree)).expect("delete tree pack");
    let target = t.join("before");
    b.restore(&second, &target).ok();
    compare_trees(&src, &under(&target, &src));

    let out = b.run(["repair", "index", "--json"]);
    out.code(4);
    let report = out.json();
    assert_eq!(objects(&report, "packs_unreadable"), vec![data.clone()]);
    assert_eq!(objects(&report, "segments_replaced"), first_segments);
    assert_eq!(strings(&report, "packs_dropped"), vec![tree.clone()]);

    // The second snapshot still restores: c.bin is still found through the index.
    let target = t.join("after");
    b.restore(&second, &target).ok();
    compare_trees(&src, &under(&target, &src));
}

/// A forgotten snapshot whose data pack is gone (a prune deleted it and stopped before its
/// tree pack, or the storage lost it): `recover` brings its trees back, but says that what
/// is below them is incomplete and exits 4, rather than report a broken snapshot as a
/// recovery.
#[test]
fn recover_names_a_tree_whose_data_is_gone_and_exits_4() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let src = t.join("src");
    write_random_file(&src.join("a.bin"), 3, 200_000);
    let packs_before = all_packs(b.repo());
    let forgotten = backup_id(&b, &src);
    let data = all_packs(b.repo())
        .difference(&packs_before)
        .find(|p| p.starts_with("data/"))
        .expect("the backup's data pack")
        .clone();
    b.run(["forget", &forgotten]).ok();
    fs::remove_file(b.repo().join(&data)).expect("delete the data pack");

    let out = b.run(["recover", "--json"]);
    out.code(4);
    assert!(out.stderr.contains("is incomplete"), "{out}");
    let report = out.json();
    assert_eq!(
        report["incomplete"].as_array().map(Vec::len),
        Some(1),
        "{report}"
    );
    assert!(report["snapshot_id"].is_string(), "{report}");
}
