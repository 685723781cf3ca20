//! Stream backups (`--stdin`, `--stdin-from-command`): the data comes back byte-exact as one
//! file, a failing producer commits nothing, and CI pipelines find their snapshot by tag.

mod common;

use std::fs;
use std::process::Stdio;

use common::*;

/// Deterministic, incompressible-ish bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
fn command_output_is_stored_as_one_file_and_restores_exactly() {
    let t = TestDir::new();
    let data = pseudo_random(6 << 20, 7);
    let dump = t.join("dump.src");
    fs::write(&dump, &data).unwrap();
    let b = t.bunker();
    b.init();

    let command = format!("cat '{}'", dump.display());
    let out = b.run([
        "backup",
        "--stdin-from-command",
        &command,
        "--stdin-filename",
        "orders-db",
        "--tag",
        "commit=abc123",
        "--tag",
        "reason=pre-migrate",
        "--json",
    ]);
    out.ok();
    let first = out.json();
    let id = str_field(&first, "snapshot_id").to_owned();
    assert_eq!(u64_field(&first["summary"], "bytes"), data.len() as u64);

    // The CI hook finds the snapshot again by its tag.
    let found = b.run(["snapshots", "--latest", "--tag", "commit=abc123", "--json"]);
    found.ok();
    let list = found.json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{found}");
    assert_eq!(str_field(&list[0], "id"), id);

    let target = t.join("restored");
    b.restore(&format!("{id}:/orders-db"), &target).ok();
    assert_eq!(fs::read(target.join("orders-db")).unwrap(), data);

    // The same dump again: nothing new but its tree.
    let again = b.run([
        "backup",
        "--stdin-from-command",
        &command,
        "--stdin-filename",
        "orders-db",
        "--json",
    ]);
    again.ok();
    let summary = &again.json()["summary"];
    assert_eq!(u64_field(summary, "data_blobs_added"), 0, "{again}");

    // `--latest` without the tag filter is the newest of all.
    let newest = b.run(["snapshots", "--latest", "--json"]);
    newest.ok();
    let newest = newest.json();
    assert_eq!(
        str_field(&newest[0], "id"),
        str_field(&again.json(), "snapshot_id")
    );
}

#[test]
fn a_failing_command_writes_no_snapshot() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let out = b.run([
        "backup",
        "--stdin-from-command",
        "printf partial; exit 3",
        "--stdin-filename",
        "db",
    ]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("the command failed"), "{out}");
    assert!(out.stderr.contains("no snapshot was written"), "{out}");
    assert!(b.snapshots().is_empty());
}

#[test]
fn stdin_is_backed_up() {
    let t = TestDir::new();
    let data = pseudo_random(3 << 20, 11);
    let input = t.join("input");
    fs::write(&input, &data).unwrap();
    let b = t.bunker();
    b.init();
    let (mut cmd, shown) = b.command(["backup", "--stdin", "--stdin-filename", "image.raw"]);
    cmd.stdin(Stdio::from(fs::File::open(&input).unwrap()));
    let child = cmd.spawn().unwrap();
    wait_output(child, shown, b.timeout).ok();

    let snapshots = b.snapshots();
    assert_eq!(snapshots.len(), 1);
    let target = t.join("restored");
    b.restore("latest", &target).ok();
    assert_eq!(fs::read(target.join("image.raw")).unwrap(), data);

    let bad = b.run(["backup", "--stdin", "--stdin-filename", "a/b"]);
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.contains("one non-empty path component"), "{bad}");
}
