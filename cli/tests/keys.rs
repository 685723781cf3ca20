//! End-to-end key management and password sources.

mod common;

use std::fs;
use std::path::PathBuf;

use common::*;

const SECOND: &str = "second password";
const THIRD: &str = "third password";

fn key_ids(b: &Bunker) -> Vec<String> {
    let out = b.run(["key", "list", "--json"]);
    out.ok();
    let json = out.json();
    let arr = json
        .as_array()
        .unwrap_or_else(|| panic!("key list --json is not an array\n{out}"));
    arr.iter()
        .map(|k| {
            let id = str_field(k, "id").to_owned();
            assert!(
                !id.is_empty() && id.bytes().all(|c| c.is_ascii_hexdigit()),
                "key id {id:?} is not hex\n{out}"
            );
            id
        })
        .collect()
}

fn small_tree(t: &TestDir) -> PathBuf {
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("d/b.bin"), &random_bytes(7, 33_333));
    src
}

#[test]
fn key_add_list_remove() {
    let t = TestDir::new();
    let src = small_tree(&t);
    let first = t.bunker();
    first.init();
    first.backup(&[&src], &[]).ok();
    let ids = key_ids(&first);
    assert_eq!(ids.len(), 1, "one key slot after init");
    let first_id = ids[0].clone();
    assert_eq!(
        repo_objects(first.repo(), "keys").len(),
        1,
        "one file in keys/"
    );

    first
        .with_env("BUNKER_NEW_PASSWORD", SECOND)
        .run(["key", "add"])
        .ok();
    let ids = key_ids(&first);
    assert_eq!(ids.len(), 2, "two key slots after key add: {ids:?}");
    assert!(ids.contains(&first_id));
    let second_id = ids
        .iter()
        .find(|i| **i != first_id)
        .expect("new id")
        .clone();
    assert_eq!(
        repo_objects(first.repo(), "keys").len(),
        2,
        "two files in keys/"
    );

    // The plain listing works too.
    let out = first.run(["key", "list"]);
    out.ok();
    assert!(
        out.stdout.contains(&first_id[..8]) && out.stdout.contains(&second_id[..8]),
        "key list shows both ids\n{out}"
    );

    // The second password opens the repository and reads the data.
    let second = first.with_password(Some(SECOND));
    assert_eq!(second.snapshots().len(), 1);
    let target = t.join("restore-1");
    second.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));

    // Remove the first slot while opened with the second password.
    second.run(["key", "remove", &first_id]).ok();
    assert_eq!(
        key_ids(&second),
        std::slice::from_ref(&second_id),
        "only the second slot is left"
    );
    let out = first.run(["snapshots"]);
    out.code(12);
    assert!(out.stderr.to_lowercase().contains("password"), "{out}");
    second.run(["check", "--read-data"]).ok();

    // A slot added from a file.
    let pwfile = t.join("third.pw");
    fs::write(&pwfile, THIRD).expect("write password file");
    second
        .run(["key", "add", "--new-password-file", s(&pwfile)])
        .ok();
    assert_eq!(key_ids(&second).len(), 2);
    let third = first.with_password(Some(THIRD));
    assert_eq!(
        third.snapshots().len(),
        1,
        "third password opens the repository"
    );
}

#[test]
fn key_passwd_changes_the_password() {
    let t = TestDir::new();
    let src = small_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let old_ids = key_ids(&b);

    b.with_env("BUNKER_NEW_PASSWORD", SECOND)
        .run(["key", "passwd"])
        .ok();
    let out = b.run(["snapshots"]);
    out.code(12);
    let nb = b.with_password(Some(SECOND));
    let ids = key_ids(&nb);
    assert_eq!(ids.len(), 1, "passwd leaves exactly one slot: {ids:?}");
    assert_ne!(ids, old_ids, "passwd must replace the slot");
    assert_eq!(repo_objects(b.repo(), "keys").len(), 1, "one file in keys/");
    let target = t.join("restore");
    nb.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
    nb.run(["check", "--read-data"]).ok();
}

#[test]
fn password_sources_and_global_option_positions() {
    let t = TestDir::new();
    let src = small_tree(&t);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let repo = b.repo().to_owned();

    let pwfile = t.join("pw");
    fs::write(&pwfile, PASSWORD).expect("write password file");
    let script = t.join("pw.sh");
    fs::write(&script, format!("#!/bin/sh\nprintf '%s' '{PASSWORD}'\n")).expect("script");
    chmod(&script, 0o755);

    let bare = b.with_password(None);
    bare.with_env("BUNKER_PASSWORD_FILE", &pwfile)
        .run(["snapshots"])
        .ok();
    bare.run(["--password-file", s(&pwfile), "snapshots"]).ok();
    bare.with_env("BUNKER_PASSWORD_COMMAND", &script)
        .run(["snapshots"])
        .ok();
    bare.run(["snapshots", "--password-command", s(&script)])
        .ok();

    let wrong = t.join("wrong-pw");
    fs::write(&wrong, "nope").expect("write");
    bare.run(["--password-file", s(&wrong), "snapshots"])
        .code(12);

    // --repo before and after the subcommand, without BUNKER_REPOSITORY.
    let norepo = b.with_repo(None);
    norepo.run(["--repo", s(&repo), "snapshots"]).ok();
    norepo.run(["snapshots", "--repo", s(&repo)]).ok();
    let out = norepo.run(["snapshots", "--json", "--repo", s(&repo)]);
    out.ok();
    assert_eq!(out.json().as_array().map(Vec::len), Some(1), "{out}");
}

/// `key passwd` to the password the slot already has (re-keying a slot, or a user who typed
/// the old one again): the old slot goes, the new one stays. It used to remove the old slot
/// through a handle reopened with the new password, which opens whichever of the two slots
/// is listed first: the old one half of the time, which it then refused to remove as the
/// slot in use, failing the command after adding a slot.
#[test]
fn key_passwd_to_the_same_password_always_replaces_the_slot() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    for round in 0..8 {
        let before = key_ids(&b);
        assert_eq!(before.len(), 1, "round {round}: {before:?}");
        b.with_env("BUNKER_NEW_PASSWORD", PASSWORD)
            .run(["key", "passwd"])
            .ok();
        let after = key_ids(&b);
        assert_eq!(after.len(), 1, "round {round}: {after:?}");
        assert_ne!(after, before, "round {round}: the slot was not replaced");
    }
}
