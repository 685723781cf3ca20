//! Directory trees thousands of levels deep (paths far past `PATH_MAX`): backed up down to
//! the depth a snapshot holds, restored, listed and checked, never overflowing a stack.

mod common;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use common::*;

/// The deepest a snapshot's trees nest, the root tree at depth 0 (format §12,
/// `bunker_repo_format::tree::MAX_TREE_DEPTH`).
const MAX_TREE_DEPTH: usize = 4096;

/// A path to `name` in the directory open as `dir`, however deep it is.
fn in_dir(dir: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Makes `root/a/a/.../a`, `levels` directories deep, with a file `f` holding `level {n}`
/// in each directory at a level `n` in `files`.
fn make_chain(root: &Path, levels: usize, files: &[usize]) {
    fs::create_dir_all(root).expect("root");
    let mut dir = File::open(root).expect("open root");
    for level in 1..=levels {
        let next = in_dir(&dir, "a");
        fs::create_dir(&next).expect("mkdir");
        dir = File::open(&next).expect("open level");
        if files.contains(&level) {
            fs::write(in_dir(&dir, "f"), format!("level {level}")).expect("write");
        }
    }
}

/// How many levels of `a` there are below `root`, and the file contents found on the way
/// (`(level, content)`).
fn read_chain(root: &Path) -> (usize, Vec<(usize, String)>) {
    let mut dir = File::open(root).expect("open root");
    let mut levels = 0;
    let mut files = Vec::new();
    while let Ok(next) = File::open(in_dir(&dir, "a")) {
        dir = next;
        levels += 1;
        if let Ok(content) = fs::read_to_string(in_dir(&dir, "f")) {
            files.push((levels, content));
        }
    }
    (levels, files)
}

#[test]
fn a_tree_deeper_than_a_snapshot_holds_is_cut_there_and_restores_down_to_it() {
    let t = TestDir::new();
    let src = t.join("src");
    // `src`'s tree is at the depth of its path; the `a` at level `n` below it at `n` more.
    let src_depth = src.components().count() - 1;
    let cut = MAX_TREE_DEPTH - src_depth;
    let deepest = cut + 4;
    make_chain(&src, deepest, &[1, 3000, cut, deepest]);
    let b = t.bunker();
    b.init();

    // An ordinary thread's stack holds about two thousand levels of the walk: this one
    // needs twice that, and the levels past the limit are reported, not followed.
    let out = b.backup(&[&src], &[]);
    out.code(3);
    assert!(
        out.stderr.contains(&format!(
            "{MAX_TREE_DEPTH} directory levels deep, the most a snapshot holds"
        )),
        "{out}"
    );
    // What was recorded is no damage to `check`, which refuses deeper trees.
    b.run(["check", "--read-data"]).ok();

    let target = t.join("restored");
    b.run([
        OsStr::new("restore"),
        OsStr::new("latest"),
        OsStr::new("--verify"),
        OsStr::new("--target"),
        target.as_os_str(),
    ])
    .ok();
    let (levels, files) = read_chain(&under(&target, &src));
    assert_eq!(levels, cut, "every level recorded is restored");
    assert_eq!(
        files,
        vec![(1, "level 1".to_owned()), (3000, "level 3000".to_owned())],
        "the deepest recorded directory is kept empty"
    );

    // Listing the tree walks it too.
    let listed = b.run(["ls", "latest"]);
    listed.ok();
    assert_eq!(
        listed.stdout.lines().filter(|l| l.ends_with("/f")).count(),
        2,
        "the files of levels 1 and 3000"
    );
}
