//! `--json` progress: every kind of backup (paths, a volume image, a command's output) and a
//! restore write progress lines on stderr, the last holding the final counters, while
//! stdout stays one JSON document.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use serde_json::Value;

const MIB: u64 = 1 << 20;

/// The last progress line of `operation` on the run's stderr (there must be one).
#[track_caller]
fn last_progress(out: &Output, operation: &str) -> Value {
    let lines: Vec<Value> = out
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message_type"] == "progress")
        .collect();
    assert!(
        lines.iter().all(|line| line["operation"] == operation),
        "{out}"
    );
    match lines.last() {
        Some(last) => last.clone(),
        None => panic!("no progress line on stderr\n{out}"),
    }
}

/// Restores the latest snapshot with `--json` to `target` (`--target` or
/// `--volume-target`) and checks that its last progress line counts `files` files and
/// `bytes` bytes, as many as expected.
#[track_caller]
fn assert_restore_reports(b: &Bunker, flag: &str, target: &Path, files: u64, bytes: u64) {
    let args = ["restore", "latest", flag].map(OsStr::new);
    let out = b.run(
        args.into_iter()
            .chain([target.as_os_str(), OsStr::new("--json")]),
    );
    out.ok();
    let last = last_progress(&out, "restore");
    assert_eq!(
        [u64_field(&last, "files"), u64_field(&last, "bytes")],
        [files, bytes],
        "{out}"
    );
    assert_eq!(u64_field(&last, "expected_bytes"), bytes, "{out}");
}

#[track_caller]
fn counters(line: &Value) -> [u64; 3] {
    ["files", "bytes", "bytes_read"].map(|key| u64_field(line, key))
}

#[test]
fn json_progress_ends_with_the_final_counters_of_every_kind_of_backup_and_of_a_restore() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();

    // Paths: three files.
    let source = t.join("src");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("a"), vec![7u8; 300_000]).unwrap();
    fs::write(source.join("b"), b"hello").unwrap();
    fs::write(source.join("sub/c"), vec![9u8; 40_000]).unwrap();
    let total = 300_000 + 5 + 40_000;
    let out = b.backup(&[&source], &["--json"]);
    out.ok();
    assert_eq!(u64_field(&out.json()["summary"], "bytes"), total);
    assert_eq!(
        counters(&last_progress(&out, "backup")),
        [3, total, total],
        "{out}"
    );

    // Its restore: the same files and bytes, as many as expected.
    assert_restore_reports(&b, "--target", &t.join("restored"), 3, total);

    // A sparse volume image: 6 MiB of which chunks 1 and 4 hold data; only they are read.
    let image = t.join("disk.img");
    let file = fs::File::create(&image).unwrap();
    file.set_len(6 * MIB).unwrap();
    file.write_all_at(&[1u8; 4096], MIB).unwrap();
    file.write_all_at(&vec![2u8; MIB as usize], 4 * MIB)
        .unwrap();
    file.sync_all().unwrap();
    let out = b.run(["backup", "--volume", image.to_str().unwrap(), "--json"]);
    out.ok();
    let last = last_progress(&out, "backup");
    assert_eq!(counters(&last), [1, 6 * MIB, 2 * MIB], "{out}");
    assert_eq!(u64_field(&last, "expected_bytes"), 6 * MIB, "{out}");
    assert_eq!(u64_field(&out.json()["summary"], "bytes_read"), 2 * MIB);
    // Its restore to an image writes the two data chunks.
    let restored_image = t.join("restored.img");
    assert_restore_reports(&b, "--volume-target", &restored_image, 1, 2 * MIB);
    assert!(fs::read(&restored_image).unwrap() == fs::read(&image).unwrap());

    // A command's output.
    let dump = t.join("dump");
    fs::write(&dump, vec![3u8; 700_000]).unwrap();
    let command = format!("cat '{}'", dump.display());
    let out = b.run(["backup", "--stdin-from-command", &command, "--json"]);
    out.ok();
    assert_eq!(
        counters(&last_progress(&out, "backup")),
        [1, 700_000, 700_000],
        "{out}"
    );
}

#[test]
fn a_directory_not_restored_over_a_kept_file_counts_its_files_as_done() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let source = t.join("src");
    fs::create_dir_all(source.join("sub/deeper")).unwrap();
    std::os::unix::fs::symlink("sub/c", source.join("link")).unwrap();
    fs::write(source.join("sub/c"), vec![9u8; 40_000]).unwrap();
    fs::write(source.join("sub/deeper/d"), vec![5u8; 6_000]).unwrap();
    b.backup(&[&source], &[]).ok();

    // The target holds a file where the snapshot has `sub`; `--overwrite never` keeps it.
    let target = t.join("restored");
    fs::create_dir_all(&target).unwrap();
    fs::write(target.join("sub"), b"mine").unwrap();
    let snapshot_path = format!("latest:{}", source.display());
    let out = b.run([
        "restore",
        snapshot_path.as_str(),
        "--target",
        target.to_str().unwrap(),
        "--overwrite",
        "never",
        "--json",
    ]);
    out.ok();
    assert!(
        out.stderr
            .contains("the snapshot's directory is not restored over it"),
        "{out}"
    );
    assert_eq!(fs::read(target.join("sub")).unwrap(), b"mine");
    assert_eq!(
        fs::read_link(target.join("link")).unwrap(),
        Path::new("sub/c")
    );
    // Every file the progress expected is done: `sub/c` and `sub/deeper/d` passed over
    // with their directory (in a batch of no file to write).
    let last = last_progress(&out, "restore");
    let total = 40_000 + 6_000;
    assert_eq!(
        [
            u64_field(&last, "files"),
            u64_field(&last, "expected_files"),
            u64_field(&last, "bytes"),
            u64_field(&last, "expected_bytes"),
        ],
        [2, 2, total, total],
        "{out}"
    );
}

/// A file taken for a disk image is named as one: `-v` marks it `(disk image)` and the
/// summary lists it; with `--json` its `file` line says `"disk_image": true` and the
/// document lists it under `disk_images`. A file of the same size without a partition
/// table is neither.
#[test]
fn a_file_cut_as_a_disk_image_is_named_as_one() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).expect("mkdir");
    for (name, head) in [
        ("disk.img", &b"EFI PART"[..]),
        ("plain.bin", &b"NOT PART"[..]),
    ] {
        let file = fs::File::create(src.join(name)).expect("create");
        file.set_len(17 * MIB).expect("set_len");
        file.write_all_at(head, 512).expect("head");
        file.write_all_at(b"tail", 17 * MIB - 4).expect("tail");
    }
    let (image, plain) = (src.join("disk.img"), src.join("plain.bin"));
    let b = t.bunker();
    b.init();

    let out = b.run([OsStr::new("backup"), OsStr::new("-v"), src.as_os_str()]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines.contains(&format!("new      {} (disk image)", image.display()).as_str()),
        "{out}"
    );
    assert!(
        lines.contains(&format!("new      {}", plain.display()).as_str()),
        "{out}"
    );
    let summary = format!(
        "  cut as disk images, at the volume chunk size: {}",
        image.display()
    );
    assert!(lines.contains(&summary.as_str()), "{out}");

    fs::write(src.join("plain.bin"), b"changed").expect("rewrite");
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .expect("open");
    file.write_all_at(b"again", 4096).expect("change the image");
    let out = b.run([
        OsStr::new("--json"),
        OsStr::new("backup"),
        OsStr::new("-v"),
        src.as_os_str(),
    ]);
    out.ok();
    let mut told: Vec<(String, String, bool)> = out
        .stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["message_type"] == "file")
        .map(|line| {
            let field = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
            (field("path"), field("change"), line["disk_image"] == true)
        })
        .collect();
    told.sort();
    let changed = |path: &Path, image: bool| (path.display().to_string(), "changed".into(), image);
    assert_eq!(
        told,
        [changed(&image, true), changed(&plain, false)],
        "{out}"
    );
    assert_eq!(
        out.json()["disk_images"],
        serde_json::json!([image.display().to_string()]),
        "{out}"
    );
}
