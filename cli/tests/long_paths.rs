//! Regression: trees deeper than `PATH_MAX` (4096 bytes) back up and restore completely.
//! Every path-based system call fails with ENAMETOOLONG there, so both sides must work
//! relative to open directories.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A short path for `name` inside the open directory `dir`.
fn inside(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Opens the directory `levels` deep below `root` by walking one level at a time.
fn descend(root: &Path, name: &str, levels: usize) -> Vec<File> {
    let mut dirs = vec![File::open(root).expect("open root")];
    for _ in 0..levels {
        let next = File::open(inside(dirs.last().expect("one dir"), name)).expect("open level");
        dirs.push(next);
    }
    dirs
}

fn bunker(repo: &Path, args: &[&str]) -> (i32, String) {
    // The files cache and the audit log go beside the repository, not into the real home.
    let output = Command::new(env!("CARGO_BIN_EXE_bunker"))
        .args(args)
        .env("BUNKER_REPOSITORY", repo)
        .env("HOME", repo.with_file_name("home"))
        .env_remove("XDG_CACHE_HOME")
        .env_remove("XDG_STATE_HOME")
        .env_remove("BUNKER_CACHE_DIR")
        .env_remove("BUNKER_AUDIT_LOG")
        .env("BUNKER_PASSWORD", "deep")
        .output()
        .expect("run bunker");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (output.status.code().unwrap_or(-1), stderr)
}

#[test]
fn regression_paths_longer_than_path_max_round_trip() {
    let temp = tempfile::tempdir().expect("tempdir");
    let source = temp.path().join("src");
    std::fs::create_dir(&source).expect("mkdir");
    let name = "d".repeat(250);
    let levels = 24;
    let mut dirs = vec![File::open(&source).expect("open")];
    for _ in 0..levels {
        let path = inside(dirs.last().expect("dir"), &name);
        std::fs::create_dir(&path).expect("mkdir level");
        dirs.push(File::open(&path).expect("open level"));
    }
    let deepest = dirs.last().expect("deepest");
    std::fs::write(inside(deepest, "file"), b"at the bottom").expect("write");
    std::os::unix::fs::symlink("../x", inside(deepest, "link")).expect("symlink");
    drop(dirs);

    let repo = temp.path().join("repo");
    let (code, stderr) = bunker(
        &repo,
        &["init", "--kdf-memory-kib", "64", "--kdf-iterations", "1"],
    );
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = bunker(&repo, &["backup", source.to_str().expect("utf-8")]);
    assert_eq!(
        code, 0,
        "backup of a deep tree must read everything: {stderr}"
    );
    let target = temp.path().join("out");
    let spec = format!("latest:{}", source.display());
    let (code, stderr) = bunker(
        &repo,
        &[
            "restore",
            &spec,
            "--target",
            target.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 0, "{stderr}");

    let original = descend(&source, &name, levels);
    let restored = descend(&target, &name, levels);
    let (a, b) = (original.last().expect("a"), restored.last().expect("b"));
    assert_eq!(
        std::fs::read(inside(b, "file")).expect("restored file"),
        b"at the bottom"
    );
    assert_eq!(
        std::fs::read_link(inside(b, "link")).expect("restored link"),
        Path::new("../x")
    );
    let (ma, mb) = (
        std::fs::metadata(inside(a, "file")).expect("meta"),
        std::fs::metadata(inside(b, "file")).expect("meta"),
    );
    assert_eq!((ma.mtime(), ma.mtime_nsec()), (mb.mtime(), mb.mtime_nsec()));
    assert_eq!(ma.mode(), mb.mode());

    // The restore drill reads the deep tree back as the restore wrote it.
    let (code, stderr) = bunker(&repo, &["verify", "latest"]);
    assert_eq!(code, 0, "verify of a deep tree: {stderr}");
}
