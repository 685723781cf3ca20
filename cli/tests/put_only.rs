//! Put-only key files end to end: `key add --put-only --out`, backups with
//! `BUNKER_KEY_FILE` that deduplicate against the whole repository, refusals (exit 13) of
//! every command that reads backups, and key files that are missing, damaged or for
//! another repository (exit 14).

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;

#[test]
fn put_only_key_file_backs_up_twice_then_password_restores() {
    let t = TestDir::new();
    let src = t.join("src");
    for i in 0..6 {
        write_random_file(&src.join(format!("d{}/f{i}.bin", i % 2)), 100 + i, 3 << 20);
    }
    write_file(&src.join("notes.txt"), b"hello from the agent\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &["--host", "admin"]).ok();

    let key = t.join("agent.key");
    let out = b.run([
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]);
    out.ok();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&key).unwrap().len(), 137);
    // Not overwritten.
    b.run([
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ])
    .code(1);

    let agent = b.with_password(None).with_env("BUNKER_KEY_FILE", &key);
    let before = dir_size(b.repo());
    agent.backup(&[&src], &["--host", "agent"]).ok();
    let first = dir_size(b.repo());
    // Everything was already stored by the admin's backup: only trees and index.
    assert!(
        first - before < 64 << 10,
        "first put-only backup grew the repository by {} bytes",
        first - before
    );
    write_random_file(&src.join("d0/new.bin"), 999, 1 << 20);
    agent.backup(&[&src], &["--host", "agent"]).ok();
    let second = dir_size(b.repo());
    let growth = second - first;
    note(format!(
        "put-only backups: +{} then +{growth} bytes (18 MiB source, 1 MiB new)",
        first - before
    ));
    assert!(
        growth < (1 << 20) + (128 << 10),
        "second put-only backup grew the repository by {growth} bytes"
    );

    // The full key (password) restores the put-only backup byte for byte.
    let snapshots = b.snapshots();
    assert_eq!(snapshots.len(), 3);
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_tree_contents(&src, &under(&target, &src));
    b.run(["check", "--read-data"]).ok();

    // The same works with the key file given by flag, and with a full key file.
    let full = t.join("full.key");
    b.run([
        "key".as_ref(),
        "add".as_ref(),
        "--out".as_ref(),
        full.as_os_str(),
    ])
    .ok();
    let full_agent = b.with_password(None);
    let target2 = t.join("restore2");
    full_agent
        .run([
            "--key-file".as_ref(),
            full.as_os_str(),
            "restore".as_ref(),
            "latest".as_ref(),
            "--target".as_ref(),
            target2.as_os_str(),
        ])
        .ok();
    compare_tree_contents(&src, &under(&target2, &src));
}

#[test]
fn put_only_key_is_refused_by_every_reading_command() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"some data");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let key = t.join("agent.key");
    b.run([
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ])
    .ok();
    let agent = b.with_password(None).with_env("BUNKER_KEY_FILE", &key);
    let target = t.join("r");
    let cases: Vec<Vec<&str>> = vec![
        vec!["restore", "latest", "--target", target.to_str().unwrap()],
        vec!["ls", "latest"],
        vec!["cat", "snapshot", "latest"],
        vec!["cat", "config"],
        vec!["snapshots"],
        vec!["check"],
        vec!["check", "--read-data"],
        vec!["forget", "--keep-last", "1"],
        vec!["prune", "--grace", "0"],
        vec!["key", "list"],
        vec!["key", "add", "--out", "/nonexistent/x.key"],
        vec!["copy", "--to", "/nonexistent/elsewhere"],
    ];
    let objects_before = dir_size(b.repo());
    for args in cases {
        let out = agent.run(&args);
        out.code(13);
        assert!(
            out.stderr.contains("needs the repository's full key")
                && out.stderr.contains("put-only key"),
            "{out}"
        );
    }
    assert_eq!(dir_size(b.repo()), objects_before);
    assert!(!target.exists());
    // The snapshot is still there for the full key.
    assert_eq!(b.snapshots().len(), 1);
}

#[test]
fn bad_key_files_are_named_with_exit_14() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"some data");
    let b = t.bunker();
    b.init();
    let key = t.join("agent.key");
    b.run([
        "key".as_ref(),
        "add".as_ref(),
        "--put-only".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ])
    .ok();
    let good = std::fs::read(&key).unwrap();

    let other = t.bunker().with_repo(Some(&t.join("other")));
    other.init();
    let cases: Vec<(&str, Option<Vec<u8>>, &str)> = vec![
        ("missing.key", None, "cannot be read"),
        ("empty.key", Some(Vec::new()), "not a bunker key file"),
        (
            "text.key",
            Some(b"correct horse battery staple\n".to_vec()),
            "not a bunker key file",
        ),
        (
            "flipped.key",
            Some({
                let mut k = good.clone();
                k[60] ^= 1;
                k
            }),
            "checksum does not match",
        ),
        (
            "truncated.key",
            Some(good[..100].to_vec()),
            "not a bunker key file",
        ),
        (
            "version.key",
            Some({
                let mut k = good.clone();
                k[5] = 2;
                k
            }),
            "version 2 is not supported",
        ),
    ];
    for (name, content, message) in cases {
        let path = t.join(name);
        if let Some(bytes) = content {
            std::fs::write(&path, bytes).unwrap();
        }
        let out = b
            .with_password(None)
            .with_env("BUNKER_KEY_FILE", &path)
            .backup(&[&src], &[]);
        out.code(14);
        assert!(
            out.stderr.contains(&format!("key file {}", path.display()))
                && out.stderr.contains(message),
            "{name}: {out}"
        );
    }
    // A valid key file of another repository.
    let out = other
        .with_password(None)
        .with_env("BUNKER_KEY_FILE", &key)
        .backup(&[&src], &[]);
    out.code(14);
    assert!(
        out.stderr.contains("belongs to another repository"),
        "{out}"
    );
    assert!(b.snapshots().is_empty());
    assert!(other.snapshots().is_empty());
}
