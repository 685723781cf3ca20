//! The golden repository: a small repository written by format v1, checked in. Every later
//! version of bunker must still list, check and restore it bit for bit. Never regenerate it;
//! add a new one next to it when the format changes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn golden_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/repo-v1")
}

/// Copies the golden repository into `dir`: commands that read a repository may still add
/// objects to it (audit records), and the checked-in one must never change.
fn copy_of_golden_repo(dir: &Path) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).expect("create a directory");
        for entry in std::fs::read_dir(from).expect("list the golden repository") {
            let entry = entry.expect("list the golden repository");
            let target = to.join(entry.file_name());
            if entry.file_type().expect("file type").is_dir() {
                copy(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), &target).expect("copy a golden object");
            }
        }
    }
    let repo = dir.join("repo-v1");
    copy(&golden_repo(), &repo);
    repo
}

fn bunker(repo: &Path, args: &[&str]) -> (i32, String, String) {
    let home = repo.with_file_name("home");
    let output = Command::new(env!("CARGO_BIN_EXE_bunker"))
        .args(args)
        .env("BUNKER_REPOSITORY", repo)
        .env("HOME", &home)
        .env_remove("XDG_STATE_HOME")
        .env_remove("XDG_CACHE_HOME")
        .env_remove("BUNKER_CACHE_DIR")
        .env_remove("BUNKER_AUDIT_LOG")
        .env("BUNKER_PASSWORD", "golden-password")
        .env_remove("BUNKER_PASSWORD_FILE")
        .env_remove("BUNKER_PASSWORD_COMMAND")
        .output()
        .expect("run bunker");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The 200 KiB file's content: xorshift64 from seed 12345, as written when the repository
/// was made.
fn golden_binary() -> Vec<u8> {
    let mut state: u64 = 12345;
    let mut out = Vec::new();
    while out.len() < 200 * 1024 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(200 * 1024);
    out
}

fn assert_entry(path: &Path, mode: u32, mtime: (i64, i64)) {
    let meta = std::fs::symlink_metadata(path).expect("restored entry exists");
    if !meta.file_type().is_symlink() {
        assert_eq!(
            meta.permissions().mode() & 0o7777,
            mode,
            "mode of {}",
            path.display()
        );
    }
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        mtime,
        "mtime of {}",
        path.display()
    );
}

#[test]
fn golden_repository_lists_checks_and_restores_exactly() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let repo = copy_of_golden_repo(scratch.path());
    let (code, stdout, stderr) = bunker(&repo, &["snapshots", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let list: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let snapshots = list.as_array().expect("array");
    assert_eq!(snapshots.len(), 1);
    let snapshot = &snapshots[0];
    assert_eq!(
        snapshot["id"],
        "10ec212e7677b411fcd4eb2de4f36cc6e6b01bfd782b63937e6593278229ad98"
    );
    assert_eq!(snapshot["host"], "golden");
    assert_eq!(snapshot["time"], "2024-01-01T00:00:00Z");
    assert_eq!(snapshot["tags"], serde_json::json!(["purpose=golden"]));
    assert_eq!(
        snapshot["paths"],
        serde_json::json!(["/tmp/bunker-golden-src"])
    );
    assert_eq!(snapshot["summary"]["files"], 4);

    let (code, stdout, stderr) = bunker(&repo, &["check", "--read-data"]);
    assert_eq!(
        code, 0,
        "check of the golden repository failed:\n{stdout}\n{stderr}"
    );

    let target = tempfile::tempdir().expect("tempdir");
    let (code, _, stderr) = bunker(
        &repo,
        &[
            "restore",
            "10ec212e:/tmp/bunker-golden-src",
            "--target",
            target.path().to_str().expect("utf-8 temp path"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    let root = target.path();
    let file_time = (1_700_000_000, 123_456_789);

    assert_eq!(
        std::fs::read(root.join("hello.txt")).expect("hello"),
        b"hello, bunker\n"
    );
    assert_entry(&root.join("hello.txt"), 0o644, file_time);

    assert_eq!(
        std::fs::read(root.join("dir/binary")).expect("binary"),
        golden_binary()
    );
    assert_entry(&root.join("dir/binary"), 0o600, file_time);

    let sparse = std::fs::read(root.join("dir/sparse")).expect("sparse");
    assert_eq!(sparse.len(), 1 << 20);
    assert_eq!(&sparse[sparse.len() - 3..], b"end");
    assert!(sparse[..sparse.len() - 3].iter().all(|&b| b == 0));
    let blocks = std::fs::metadata(root.join("dir/sparse"))
        .expect("meta")
        .blocks();
    assert!(
        blocks * 512 <= 64 * 1024,
        "sparse file restored dense: {blocks} blocks"
    );
    assert_entry(&root.join("dir/sparse"), 0o640, file_time);

    assert_eq!(
        std::fs::read_link(root.join("dir/link")).expect("link"),
        Path::new("../hello.txt")
    );
    assert_entry(&root.join("dir/link"), 0, file_time);

    assert_eq!(std::fs::read(root.join("empty")).expect("empty").len(), 0);
    assert_entry(&root.join("empty"), 0o444, file_time);

    assert_entry(&root.join("dir"), 0o750, (1_700_000_100, 500_000_000));
}
