//! End-to-end round trips: back up an edge-case tree built at test time, restore it, and
//! compare every byte and every piece of metadata; `ls`, `snapshots`, deduplication and
//! excludes; the per-repository cache directories.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;

#[test]
fn roundtrip_edge_case_tree() {
    let t = TestDir::new();
    let src = t.join("src");
    let info = build_edge_tree(&src, true);
    let b = t.bunker();
    b.init();
    let out = b.backup(&[&src], &[]);
    out.ok();

    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));

    // Belt and braces for the properties the tree was built for.
    let r = under(&target, &src);
    let sparse = fs::symlink_metadata(r.join("sparse/sparse-64m")).expect("restored sparse");
    assert_eq!(sparse.len(), 64 << 20, "sparse file length");
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "restored sparse-64m allocates {} bytes; holes were written",
        sparse.blocks() * 512
    );
    let triple = fs::symlink_metadata(r.join("hardlinks/triple-1")).expect("triple");
    assert_eq!(
        triple.nlink(),
        3,
        "hardlinks/triple-1 link count after restore"
    );
    if info.owners {
        let m = fs::symlink_metadata(r.join("modes/setuid")).expect("setuid");
        assert_eq!(
            m.mode() & 0o7777,
            0o4755,
            "setuid bit after chown on restore"
        );
        assert_eq!((m.uid(), m.gid()), (1234, 5678));
    }
    if !info.devices {
        note("device nodes were not part of this run");
    }
    if !info.xattrs {
        note("xattrs were not part of this run");
    }

    // `--verify` reads every file written back: each inode once (a second name is a
    // link), holes included in the bytes. (The readback module's unit test makes files
    // that differ.)
    let verified = t.join("verified");
    let out = b.run([
        "--json",
        "restore",
        "latest",
        "--target",
        s(&verified),
        "--verify",
    ]);
    out.ok();
    let out = out.json();
    let (inodes, bytes) = distinct_files(&src);
    assert_eq!(u64_field(&out, "files_verified"), inodes, "{out}");
    assert_eq!(u64_field(&out, "bytes_verified"), bytes, "{out}");
    compare_trees(&src, &under(&verified, &src));
}

/// The regular files below `dir` counted once per inode, and their bytes.
fn distinct_files(dir: &Path) -> (u64, u64) {
    fn walk(dir: &Path, seen: &mut BTreeSet<(u64, u64)>, bytes: &mut u64) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            let meta = fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                walk(&path, seen, bytes);
            } else if meta.is_file() && seen.insert((meta.dev(), meta.ino())) {
                *bytes += meta.len();
            }
        }
    }
    let mut seen = BTreeSet::new();
    let mut bytes = 0;
    walk(dir, &mut seen, &mut bytes);
    (seen.len() as u64, bytes)
}

#[test]
fn restore_of_a_subdirectory_puts_its_contents_into_the_target() {
    let t = TestDir::new();
    let src = t.join("src");
    build_edge_tree(&src, false);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 1, "one snapshot expected: {snaps:?}");
    let id = str_field(&snaps[0], "id").to_owned();
    let short = str_field(&snaps[0], "short_id").to_owned();

    let cases: [(String, &str, &str); 4] = [
        (
            format!("latest:{}", s(&src.join("modes"))),
            "modes",
            "t-modes",
        ),
        (
            format!("{short}:{}", s(&src.join("hardlinks"))),
            "hardlinks",
            "t-hardlinks",
        ),
        (
            format!("{id}:{}", s(&src.join("names"))),
            "names",
            "t-names",
        ),
        (format!("{}:{}", &id[..12], s(&src)), "", "t-src"),
    ];
    for (spec, sub, dir) in cases {
        let target = t.join(dir);
        let out = b.restore(&spec, &target);
        out.ok();
        assert!(
            !target.join("tmp").exists(),
            "restore {spec}: the absolute path was recreated under the target instead of \
             only the directory's contents: {:?}",
            fs::read_dir(&target).map(|d| d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect::<Vec<_>>())
        );
        // The directory's own metadata goes onto the target too.
        compare_trees(&src.join(sub), &target);
        // Restoring again into the same (now populated) target gives the same result.
        b.restore(&spec, &target).ok();
        compare_trees(&src.join(sub), &target);
    }

    // `ls` copes with odd names: plain output and valid JSON with one item per entry.
    b.run(["ls", "latest"]).ok();
    let out = b.run(["ls", "latest", "--json"]);
    out.ok();
    let json = out.json();
    let items = json.as_array().expect("ls --json array");
    let prefix = format!("{}/", s(&src));
    let listed = items
        .iter()
        .filter(|i| str_field(i, "path").starts_with(&prefix))
        .count();
    let mut entries = 0;
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            entries += 1;
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert_eq!(
        listed,
        entries,
        "ls --json: entries below {} (the edge tree has {entries})",
        src.display()
    );

    // A name that is not UTF-8 comes with its exact bytes, which name the entry again.
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let odd = src.join(std::ffi::OsStr::from_bytes(b"names/dir\xff\xfe/inner\x80"));
    let odd_hex = hex::encode(odd.as_os_str().as_bytes());
    let item = items
        .iter()
        .find(|i| i.get("path_hex").and_then(|h| h.as_str()) == Some(odd_hex.as_str()))
        .unwrap_or_else(|| panic!("no ls --json item with path_hex {odd_hex}"));
    assert_eq!(str_field(item, "name_hex"), hex::encode(b"inner\x80"));
    assert!(
        str_field(item, "path").ends_with("/inner\u{fffd}"),
        "{item}"
    );
    let plain = items
        .iter()
        .find(|i| str_field(i, "path").ends_with("/names/tab\there"))
        .expect("a UTF-8 name");
    assert!(plain.get("path_hex").is_none(), "{plain}");
    let mut spec = b"latest:".to_vec();
    spec.extend(hex::decode(str_field(item, "path_hex")).expect("hex"));
    let out = b.run([
        std::ffi::OsString::from_vec(b"restore".to_vec()),
        std::ffi::OsString::from_vec(spec),
        "--stdout".into(),
    ]);
    out.ok();
    assert_eq!(out.stdout, "inner\n");
}

#[test]
fn incremental_backup_picks_up_every_change() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("keep.txt"), b"unchanged\n");
    write_file(&src.join("same-size-same-mtime.txt"), b"version one\n");
    write_file(&src.join("grow.txt"), b"short\n");
    write_file(&src.join("delete-me.txt"), b"doomed\n");
    write_file(&src.join("dir/renamed-from"), b"renamed\n");
    write_file(&src.join("to-symlink"), b"becomes a symlink\n");
    write_file(&src.join("chmod-only"), b"mode changes\n");
    write_random_file(&src.join("big.bin"), 61, 2 << 20);
    // Extended attributes of unchanged entries are taken from the parent snapshot; a
    // changed attribute moves only the ctime, which must be enough to read them again.
    let xattrs = user_xattrs_supported(&src);
    if xattrs {
        for (path, value) in [("keep.txt", "kept"), ("chmod-only", "old"), ("dir", "old")] {
            xattr::set(src.join(path), "user.bunker.test", value.as_bytes()).expect("xattr");
        }
        xattr::set(src.join("chmod-only"), "user.bunker.gone", b"x").expect("xattr");
    }
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let first = b.snapshots();
    let first_id = str_field(&first[0], "id").to_owned();
    let first_copy = t.join("first-copy");
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg(&src)
        .arg(&first_copy)
        .status()
        .expect("cp -a");
    assert!(st.success());

    // Same size and same mtime, different content (only ctime tells).
    let p = src.join("same-size-same-mtime.txt");
    let m = fs::symlink_metadata(&p).expect("stat");
    fs::write(&p, b"version two\n").expect("rewrite");
    set_mtime(&p, m.mtime(), m.mtime_nsec() as u32);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(src.join("grow.txt"))
        .expect("open");
    std::io::Write::write_all(&mut f, b"and longer now\n").expect("append");
    drop(f);
    fs::remove_file(src.join("delete-me.txt")).expect("rm");
    fs::rename(src.join("dir/renamed-from"), src.join("dir/renamed-to")).expect("mv");
    fs::remove_file(src.join("to-symlink")).expect("rm");
    std::os::unix::fs::symlink("keep.txt", src.join("to-symlink")).expect("symlink");
    chmod(&src.join("chmod-only"), 0o600);
    write_file(&src.join("new.txt"), b"new file\n");
    if xattrs {
        xattr::set(src.join("chmod-only"), "user.bunker.test", b"new").expect("xattr");
        xattr::set(src.join("dir"), "user.bunker.test", b"new").expect("xattr");
        xattr::remove(src.join("chmod-only"), "user.bunker.gone").expect("xattr");
    }
    // Change 4 KiB in the middle of the big file.
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(src.join("big.bin"))
            .expect("open");
        f.seek(SeekFrom::Start(1 << 20)).expect("seek");
        f.write_all(&random_bytes(62, 4096)).expect("write");
    }

    b.backup(&[&src], &[]).ok();
    let target = t.join("restore-latest");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
    if xattrs {
        let restored = under(&target, &src);
        let value = |path: &str, name: &str| xattr::get(restored.join(path), name).expect("get");
        assert_eq!(
            value("chmod-only", "user.bunker.test"),
            Some(b"new".to_vec())
        );
        assert_eq!(value("dir", "user.bunker.test"), Some(b"new".to_vec()));
        assert_eq!(
            value("keep.txt", "user.bunker.test"),
            Some(b"kept".to_vec())
        );
        assert_eq!(value("chmod-only", "user.bunker.gone"), None);
    }

    // The first snapshot is untouched.
    let target = t.join("restore-first");
    b.restore(&first_id, &target).ok();
    let old = under(&target, &src);
    for name in [
        "same-size-same-mtime.txt",
        "grow.txt",
        "delete-me.txt",
        "dir/renamed-from",
        "big.bin",
    ] {
        assert_eq!(
            fs::read(old.join(name)).ok(),
            fs::read(first_copy.join(name)).ok(),
            "{name} in the first snapshot"
        );
    }
    assert!(!old.join("new.txt").exists());
}

#[test]
fn relative_and_multiple_source_paths_are_made_absolute() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"a\n");
    write_file(&src.join("sub/b.txt"), b"b\n");
    let single = t.join("other/single-file.bin");
    write_file(&single, &random_bytes(70, 5000));
    let b = t.bunker().with_cwd(&t.path());
    b.init();
    b.run(["backup", "src", "other/single-file.bin"]).ok();
    let snaps = b.snapshots();
    let mut paths: Vec<String> = snaps[0]["paths"]
        .as_array()
        .expect("paths")
        .iter()
        .map(|p| p.as_str().expect("string").to_owned())
        .collect();
    paths.sort();
    let mut want = vec![s(&src).to_owned(), s(&single).to_owned()];
    want.sort();
    assert_eq!(paths, want, "snapshot paths must be absolute");

    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
    let restored = under(&target, &single);
    assert_eq!(
        fs::read(&restored).ok(),
        fs::read(&single).ok(),
        "single file"
    );
    let (a, r) = (
        fs::symlink_metadata(&single).expect("stat"),
        fs::symlink_metadata(&restored).expect("stat"),
    );
    assert_eq!(
        (a.mode(), a.mtime(), a.mtime_nsec()),
        (r.mode(), r.mtime(), r.mtime_nsec()),
        "single file metadata"
    );
}

#[test]
fn concurrent_backups_to_one_repository() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let mut srcs = Vec::new();
    for k in 0..3u64 {
        let src = t.join(format!("src{k}"));
        write_random_file(&src.join("big.bin"), 80 + k, 6 << 20);
        write_random_file(&src.join("shared.bin"), 99, 1 << 20);
        for i in 0..50 {
            write_file(
                &src.join(format!("small/{i}.txt")),
                format!("{k}-{i}\n").as_bytes(),
            );
        }
        srcs.push(src);
    }
    let children: Vec<_> = srcs.iter().map(|src| b.spawn(["backup", s(src)])).collect();
    for (child, shown) in children {
        wait_output(child, shown, DEFAULT_TIMEOUT).ok();
    }
    b.run(["check", "--read-data"]).ok();
    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 3, "three snapshots");
    for snap in &snaps {
        let path = PathBuf::from(snap["paths"][0].as_str().expect("path"));
        let target = t.join(format!("restore-{}", str_field(snap, "short_id")));
        b.restore(str_field(snap, "id"), &target).ok();
        compare_trees(&path, &under(&target, &path));
    }
}

#[test]
fn ls_lists_every_path_and_json_reports_types_and_sizes() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("file.txt"), b"hello");
    write_file(&src.join("empty"), b"");
    write_file(&src.join("dir/nested.bin"), &random_bytes(5, 1000));
    write_file(&src.join("dir/deeper/x"), b"xyz");
    std::os::unix::fs::symlink("file.txt", src.join("link")).expect("symlink");
    fs::hard_link(src.join("file.txt"), src.join("hard")).expect("hard link");
    mkfifo(&src.join("fifo"));
    let _sock = std::os::unix::net::UnixListener::bind(src.join("sock")).expect("bind socket");
    let mut expected_types: BTreeMap<PathBuf, &str> = BTreeMap::from([
        (src.clone(), "dir"),
        (src.join("file.txt"), "file"),
        (src.join("empty"), "file"),
        (src.join("dir"), "dir"),
        (src.join("dir/nested.bin"), "file"),
        (src.join("dir/deeper"), "dir"),
        (src.join("dir/deeper/x"), "file"),
        (src.join("link"), "symlink"),
        (src.join("hard"), "file"),
        (src.join("fifo"), "fifo"),
        (src.join("sock"), "socket"),
    ]);
    if is_root() {
        if mknod(&src.join("chr"), "c", 1, 3) {
            expected_types.insert(src.join("chr"), "chardev");
        }
        if mknod(&src.join("blk"), "b", 7, 200) {
            expected_types.insert(src.join("blk"), "blockdev");
        }
    }
    fs::set_permissions(
        src.join("dir/nested.bin"),
        std::os::unix::fs::PermissionsExt::from_mode(0o640),
    )
    .expect("chmod");

    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    // Plain `ls latest`: every entry below `/`, one absolute path per line.
    let out = b.run(["ls", "latest"]);
    out.ok();
    let lines: BTreeSet<PathBuf> = out.stdout.lines().map(PathBuf::from).collect();
    let mut expected: BTreeSet<PathBuf> = expected_types.keys().cloned().collect();
    for ancestor in src.ancestors().skip(1) {
        if ancestor != Path::new("/") {
            expected.insert(ancestor.to_owned());
        }
    }
    let missing: Vec<_> = expected.difference(&lines).collect();
    let extra: Vec<_> = lines
        .difference(&expected)
        .filter(|p| p.as_os_str() != "/")
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ls latest: missing {missing:?}, unexpected {extra:?}\n{out}"
    );

    // `ls latest:PATH`: entries below PATH.
    let out = b.run(["ls", &format!("latest:{}", s(&src.join("dir")))]);
    out.ok();
    let mut lines: BTreeSet<PathBuf> = out.stdout.lines().map(PathBuf::from).collect();
    if lines.remove(&src.join("dir")) {
        note("ls SNAPSHOT:PATH also prints PATH itself (contract: entries below PATH)");
    }
    let expected: BTreeSet<PathBuf> = [
        src.join("dir/nested.bin"),
        src.join("dir/deeper"),
        src.join("dir/deeper/x"),
    ]
    .into();
    assert_eq!(lines, expected, "ls latest:{}/dir\n{out}", src.display());

    // `ls --json`.
    let out = b.run(["ls", &format!("latest:{}", s(&src)), "--json"]);
    out.ok();
    let json = out.json();
    let arr = json
        .as_array()
        .unwrap_or_else(|| panic!("ls --json is not an array\n{out}"));
    let mut seen = BTreeSet::new();
    for item in arr {
        let path = PathBuf::from(str_field(item, "path"));
        if path == src {
            continue;
        }
        let ty = str_field(item, "type");
        for key in ["size", "mode", "mtime", "uid", "gid"] {
            assert!(
                item.get(key).is_some(),
                "ls --json: {key} missing in {item}"
            );
        }
        let Some(&want) = expected_types.get(&path) else {
            panic!("ls --json: unexpected path {}\n{out}", path.display());
        };
        assert_eq!(ty, want, "ls --json: type of {}", path.display());
        let meta = fs::symlink_metadata(&path).expect("source stat");
        if want == "file" {
            assert_eq!(
                u64_field(item, "size"),
                meta.len(),
                "ls --json: size of {}",
                path.display()
            );
        }
        assert_eq!(
            u64_field(item, "mode") & 0o7777,
            u64::from(meta.mode() & 0o7777),
            "ls --json: mode of {} (compared & 0o7777)",
            path.display()
        );
        assert_eq!(
            u64_field(item, "uid"),
            u64::from(meta.uid()),
            "uid of {}",
            path.display()
        );
        assert_eq!(
            u64_field(item, "gid"),
            u64::from(meta.gid()),
            "gid of {}",
            path.display()
        );
        seen.insert(path);
    }
    let want: BTreeSet<PathBuf> = expected_types
        .keys()
        .filter(|p| **p != src)
        .cloned()
        .collect();
    assert_eq!(seen, want, "ls --json: set of paths\n{out}");

    // The socket is listed, and a restore says it is not made again.
    let target = t.join("restore");
    let out = b.run(["--json", "restore", "latest", "--target", s(&target)]);
    out.ok();
    assert_eq!(out.json()["sockets_not_restored"], 1, "{out}");
    assert!(!under(&target, &src.join("sock")).exists());
    let out = b.run(["restore", "latest", "--target", s(&target)]);
    out.ok();
    assert!(out.stderr.contains("1 socket(s) not restored"), "{out}");
}

#[test]
fn snapshots_json_has_required_fields_tags_host_and_time() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"0123456789");
    write_file(&src.join("b.bin"), &random_bytes(11, 100_000));
    write_file(&src.join("sub/c.txt"), b"abc");
    let b = t.bunker();
    b.init();

    let out = b.backup(
        &[&src],
        &[
            "--tag",
            "env=prod",
            "--tag",
            "team=core",
            "--host",
            "testhost",
            "--time",
            "2021-03-04T05:06:07Z",
            "--json",
        ],
    );
    out.ok();
    let j = out.json();
    assert!(j.is_object(), "backup --json must print one object\n{out}");
    let first_id = str_field(&j, "snapshot_id").to_owned();
    assert!(
        is_hex(&first_id, 64),
        "snapshot_id {first_id:?} is not 64 hex"
    );
    assert!(
        j.get("summary").is_some_and(|v| v.is_object()),
        "backup --json summary\n{out}"
    );

    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 1);
    let snap = &snaps[0];
    for key in [
        "id", "short_id", "time", "host", "paths", "tags", "parent", "tree", "summary",
    ] {
        assert!(
            snap.get(key).is_some(),
            "snapshots --json: {key} missing in {snap}"
        );
    }
    let id = str_field(snap, "id");
    assert!(is_hex(id, 64), "id {id:?}");
    assert_eq!(id, first_id, "snapshots id vs backup --json snapshot_id");
    let short = str_field(snap, "short_id");
    assert!(
        is_hex(short, 8) && id.starts_with(short),
        "short_id {short:?} of {id}"
    );
    let time = str_field(snap, "time");
    assert_eq!(
        parse_rfc3339(time),
        Some((1_614_834_367, 0)),
        "time {time:?} should be 2021-03-04T05:06:07Z"
    );
    assert_eq!(str_field(snap, "host"), "testhost");
    assert_eq!(snap["paths"], serde_json::json!([s(&src)]), "paths");
    let mut tags: Vec<&str> = snap["tags"]
        .as_array()
        .expect("tags array")
        .iter()
        .map(|v| v.as_str().expect("tag string"))
        .collect();
    tags.sort();
    assert_eq!(tags, ["env=prod", "team=core"], "tags");
    assert!(
        snap["parent"].is_null(),
        "first snapshot parent must be null: {snap}"
    );
    let tree = str_field(snap, "tree");
    assert!(is_hex(tree, 64), "tree {tree:?}");
    let summary = &snap["summary"];
    for key in ["files", "bytes", "bytes_added", "duration_ms"] {
        assert!(
            summary.get(key).is_some_and(|v| v.is_u64()),
            "summary.{key} missing or not an integer: {summary}"
        );
    }
    assert_eq!(u64_field(summary, "files"), 3, "summary.files: {summary}");
    assert_eq!(
        u64_field(summary, "bytes"),
        100_013,
        "summary.bytes: {summary}"
    );
    assert!(
        u64_field(summary, "bytes_added") > 0,
        "summary.bytes_added: {summary}"
    );

    // A second host, a time with an offset and a fraction.
    b.backup(
        &[&src],
        &[
            "--host",
            "otherhost",
            "--tag",
            "env=dev",
            "--time",
            "2022-01-02T03:04:05.25+01:00",
        ],
    )
    .ok();
    // Same host and paths as the first: its parent is the first.
    let out = b.backup(&[&src], &["--host", "testhost", "--json"]);
    out.ok();
    let third_id = str_field(&out.json(), "snapshot_id").to_owned();

    let snaps = b.snapshots();
    assert_eq!(snaps.len(), 3, "three snapshots");
    let by_host =
        |h: &str| -> Vec<&serde_json::Value> { snaps.iter().filter(|s| s["host"] == h).collect() };
    let other = by_host("otherhost");
    assert_eq!(other.len(), 1);
    assert_eq!(
        parse_rfc3339(str_field(other[0], "time")),
        Some((1_641_089_045, 250_000_000)),
        "time of the second snapshot should be 2022-01-02T02:04:05.25Z: {}",
        other[0]
    );
    let third = snaps
        .iter()
        .find(|s| s["id"] == third_id.as_str())
        .expect("third snapshot listed");
    assert_eq!(
        third["parent"],
        serde_json::Value::String(first_id.clone()),
        "parent of a backup of the same host and paths should be the previous one: {third}"
    );
    assert_eq!(third["tags"], serde_json::json!([]), "no tags: {third}");

    // Filters.
    let out = b.run(["snapshots", "--json", "--tag", "env=prod"]);
    out.ok();
    let ids: Vec<String> = out
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| str_field(s, "id").to_owned())
        .collect();
    assert_eq!(
        ids,
        std::slice::from_ref(&first_id),
        "snapshots --tag env=prod\n{out}"
    );
    let out = b.run(["snapshots", "--json", "--host", "otherhost"]);
    out.ok();
    let hosts: Vec<String> = out
        .json()
        .as_array()
        .expect("array")
        .iter()
        .map(|s| str_field(s, "host").to_owned())
        .collect();
    assert_eq!(hosts, ["otherhost"], "snapshots --host otherhost\n{out}");

    // Plain-text listing and `cat`.
    let out = b.run(["snapshots"]);
    out.ok();
    assert!(
        out.stdout.contains(&first_id[..8]),
        "snapshots lists short ids\n{out}"
    );
    let out = b.run(["cat", "snapshot", &first_id]);
    out.ok();
    let cat = out.json();
    assert!(cat.is_object(), "cat snapshot prints a JSON object\n{out}");
    assert!(
        out.stdout.contains("testhost"),
        "cat snapshot mentions the host\n{out}"
    );
    let out = b.run(["cat", "config"]);
    out.ok();
    assert!(
        out.json().is_object(),
        "cat config prints a JSON object\n{out}"
    );
}

/// Ids of `snapshots --json ARGS...`, oldest first.
fn snapshot_ids(b: &Bunker, args: &[&str]) -> Vec<String> {
    let out = b.run([&["snapshots", "--json"], args].concat());
    out.ok();
    let listed = out.json();
    let list = listed.as_array().expect("snapshots --json is an array");
    list.iter()
        .map(|snap| str_field(snap, "id").to_owned())
        .collect()
}

#[test]
fn host_tag_and_path_choose_which_snapshot_latest_is() {
    let t = TestDir::new();
    let (app, db) = (t.join("app"), t.join("db"));
    write_file(&app.join("conf"), b"app version 1");
    write_file(&db.join("dump"), &random_bytes(5, 20_000));
    let b = t.bunker();
    b.init();
    let backup = |path: &Path, host: &str, source: &str| {
        let tag = format!("source={source}");
        b.backup(&[path], &["--host", host, "--tag", &tag]).ok();
    };
    backup(&app, "h1", "app");
    write_file(&app.join("conf"), b"app version 2, newer");
    backup(&app, "h1", "app");
    backup(&db, "h2", "db");
    let all = snapshot_ids(&b, &[]);
    assert_eq!(all.len(), 3, "{all:?}");
    let (app_newest, db_only) = (&all[1], &all[2]);

    // `latest` alone is the db snapshot, which does not hold the app's path.
    let app_spec = format!("latest:{}", s(&app));
    b.run(["restore", &app_spec, "--target", s(&t.join("r0"))])
        .code(1);
    for (filter, target) in [
        (vec!["--tag", "source=app"], "r1"),
        (vec!["--host", "h1"], "r2"),
        (vec!["--path", s(&app)], "r3"),
        (
            vec!["--host", "h1", "--tag", "source=app", "--path", s(&app)],
            "r4",
        ),
    ] {
        let target = t.join(target);
        let mut args = vec!["restore", &app_spec, "--target", s(&target)];
        args.extend(&filter);
        b.run(&args).ok();
        assert_eq!(
            fs::read(target.join("conf")).expect("restored conf"),
            b"app version 2, newer",
            "{filter:?} restores the newest app snapshot"
        );
    }
    let out = b.run(["ls", "latest", "--host", "h2"]);
    out.ok();
    assert!(
        out.stdout.contains("/dump") && !out.stdout.contains("/conf"),
        "{out}"
    );

    // `latest~N` counts back among the snapshots the filters select.
    let app_older = format!("latest~1:{}", s(&app.join("conf")));
    let out = b.run(["restore", &app_older, "--stdout", "--tag", "source=app"]);
    out.ok();
    assert_eq!(out.stdout, "app version 1", "{out}");
    let out = b.run(["--json", "diff", "latest~2", "latest~1"]);
    out.ok();
    assert_eq!(str_field(&out.json(), "old"), all[0], "{out}");
    assert_eq!(str_field(&out.json(), "new"), all[1], "{out}");
    let out = b.run(["ls", "latest~2", "--host", "h1"]);
    out.code(1);
    assert!(
        out.stderr
            .contains("latest~2 needs 3 snapshots and only 2 match --host h1"),
        "{out}"
    );
    b.run(["ls", "latest~one"]).code(1);

    assert_eq!(snapshot_ids(&b, &["--host", "h1"]), all[..2].to_vec());
    assert_eq!(snapshot_ids(&b, &["--path", s(&db)]), vec![db_only.clone()]);
    assert_eq!(
        snapshot_ids(&b, &["--tag", "source=app", "--latest"]),
        vec![app_newest.clone()]
    );
    assert!(snapshot_ids(&b, &["--path", s(&t.path())]).is_empty());

    let out = b.run([
        "restore",
        &db_only[..8],
        "--host",
        "h1",
        "--target",
        s(&t.join("r5")),
    ]);
    out.code(1);
    assert!(
        out.stderr.contains(&format!(
            "snapshot {} does not match --host h1",
            &db_only[..8]
        )),
        "{out}"
    );
    let out = b.run([
        "restore",
        "latest",
        "--tag",
        "source=none",
        "--target",
        s(&t.join("r6")),
    ]);
    out.code(1);
    assert!(
        out.stderr.contains("no snapshot matches --tag source=none"),
        "{out}"
    );
    b.run([
        "restore",
        "latest",
        "--tag",
        "novalue",
        "--target",
        s(&t.join("r7")),
    ])
    .code(2);
    assert!(!t.join("r5").exists() && !t.join("r6").exists() && !t.join("r7").exists());

    let out = b.run(["verify", "--tag", "source=app", "--json"]);
    out.ok();
    let drills = out.json()["drills"].as_array().expect("drills").clone();
    assert_eq!(drills.len(), 1, "{out}");
    assert!(
        drills[0].to_string().contains(&app_newest[..8]),
        "the app's latest snapshot is drilled: {out}"
    );
}

#[test]
fn second_backup_of_an_unchanged_tree_adds_almost_nothing() {
    let t = TestDir::new();
    let src = t.join("src");
    write_random_file(&src.join("random.bin"), 21, 3 << 20);
    let mut text = Vec::new();
    while text.len() < 4 << 20 {
        text.extend_from_slice(b"compressible line of text for the dedup test\n");
    }
    write_file(&src.join("text.txt"), &text);
    for i in 0..200 {
        write_file(
            &src.join(format!("many/{:02}/f{i}.txt", i % 17)),
            format!("small file {i}\n").as_bytes(),
        );
    }
    age_files(&src);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let first = dir_size(b.repo());
    let out = b.backup(&[&src], &["--json"]);
    out.ok();
    let second = dir_size(b.repo());
    let growth = second.saturating_sub(first);
    let limit = (first / 100).max(64 * 1024);
    assert!(
        growth < limit,
        "second backup of an unchanged tree grew the repository by {growth} bytes \
         (repository {first} -> {second}); limit {limit}\n{out}"
    );
    assert_eq!(b.snapshots().len(), 2);
    let unchanged_and_read = |extra: &[&str]| {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = b.backup(&[&src], &args);
        out.ok();
        let summary = &out.json()["summary"];
        let read = u64_field(summary, "bytes_read");
        let all = read == u64_field(summary, "bytes");
        (u64_field(summary, "files_unchanged"), read, all)
    };
    // --force reads every file again; a mode change moves only the status-change time,
    // which --ignore-ctime (and --ignore-inode) does not compare.
    let (unchanged, read, all) = unchanged_and_read(&["--force"]);
    assert_eq!((unchanged, all), (0, true));
    assert!(read > 7 << 20, "{read}");
    let set_mode = |name: &str| {
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o600);
        fs::set_permissions(src.join(name), mode).expect("chmod");
    };
    set_mode("text.txt");
    assert_eq!(unchanged_and_read(&["--ignore-ctime"]), (202, 0, false));
    set_mode("random.bin");
    assert_eq!(unchanged_and_read(&["--ignore-inode"]), (202, 0, false));
    assert_eq!(unchanged_and_read(&[]), (202, 0, false));
}

#[test]
fn text_summaries_count_one_entry_in_the_singular() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("sub/hello.txt"), b"hello");
    std::os::unix::fs::symlink("sub/hello.txt", src.join("link")).expect("symlink");
    let b = t.bunker();
    b.init();
    let backup = b.backup(&[&src], &[]);
    backup.ok();
    assert!(backup.stdout.contains("  1 file (5 B), "), "{backup}");
    assert!(backup.stdout.contains(", 1 other entry\n"), "{backup}");
    assert!(
        backup
            .stdout
            .contains("files 1 new, 0 changed, 0 unchanged"),
        "{backup}"
    );
    // Deduplication counts file data only: the trees a first backup adds leave it at 1.
    assert!(
        backup.stdout.contains(" stored, dedup 1.00x), "),
        "{backup}"
    );
    let listed = b.run(["snapshots"]);
    listed.ok();
    assert!(listed.stdout.ends_with("\n1 snapshot\n"), "{listed}");
    let restored = b.run([
        OsStr::new("restore"),
        OsStr::new(&format!("latest:{}", s(&src))),
        OsStr::new("--target"),
        t.join("restored").as_os_str(),
        OsStr::new("--verify"),
    ]);
    restored.ok();
    assert!(
        restored
            .stdout
            .contains(": 1 file (5 B), 1 directory, 1 other entry in "),
        "{restored}"
    );
    assert!(
        restored
            .stdout
            .contains("read back and verified 1 file (5 B)"),
        "{restored}"
    );
    assert_eq!(
        fs::read(t.join("restored/sub/hello.txt")).expect("restored file"),
        b"hello"
    );
}

/// Sets a directory's modification time (its "last used" stamp) `days` back.
fn set_last_used(dir: &Path, days: u64) {
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(days * 86_400);
    let dir = fs::File::open(dir).expect("open the directory");
    dir.set_modified(when).expect("set its modification time");
}

/// The files caches below `dir` (files named `files`).
fn files_caches(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.expect("a cache entry").path();
        if path.is_dir() {
            found.extend(files_caches(&path));
        } else if path.file_name().is_some_and(|name| name == "files") {
            found.push(path);
        }
    }
    found
}

#[test]
fn no_cache_wins_over_bunker_cache_dir() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"cached or not\n");
    let cache = t.join("explicit-cache");
    let b = t.bunker().with_env("BUNKER_CACHE_DIR", &cache);
    b.init();
    b.backup(&[&src], &["--no-cache"]).ok();
    assert!(
        files_caches(&cache).is_empty(),
        "--no-cache wrote a files cache"
    );
    b.backup(&[&src], &[]).ok();
    assert_eq!(files_caches(&cache).len(), 1, "BUNKER_CACHE_DIR is used");
}

#[test]
fn cache_lists_each_repository_and_cleanup_removes_only_the_unused() {
    let t = TestDir::new();
    let src = t.join("src");
    for i in 0..20 {
        write_file(&src.join(format!("f{i}")), format!("file {i}\n").as_bytes());
    }
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let id = str_field(&b.run(["cat", "config"]).json(), "repository_id").to_owned();
    // The test's XDG_CACHE_HOME is `cache`.
    let root = t.join("cache/bunker");
    let mine = root.join(&id);
    let files_cache = fs::metadata(mine.join("files")).unwrap().len();
    // A repository not used for 40 days, and a directory that is not bunker's.
    let old = root.join("ab".repeat(32));
    write_file(&old.join("files"), &[7; 1000]);
    set_last_used(&old, 40);
    fs::create_dir(root.join("notes")).unwrap();
    // A no-change backup rewrites no file there but still stamps the directory as used.
    set_last_used(&mine, 40);
    b.backup(&[&src], &[]).ok();

    let listed = b.run(["cache", "--json"]);
    listed.ok();
    let listed = listed.json();
    let rows = listed.as_array().unwrap();
    let row = |id: &str| {
        rows.iter()
            .find(|row| row["repository_id"] == id)
            .unwrap_or_else(|| panic!("{id} not listed: {listed}"))
    };
    assert_eq!(rows.len(), 2, "{listed}");
    assert_eq!(row(&id)["bytes"], files_cache);
    assert_eq!(row(&id)["unused"], false);
    assert_eq!(row(&"ab".repeat(32))["bytes"], 1000);
    assert_eq!(row(&"ab".repeat(32))["unused"], true);

    let out = b.run(["cache", "--cleanup"]);
    out.ok();
    assert!(
        out.stdout.contains("1 cache directories") && out.stdout.contains("removed 1"),
        "{out}"
    );
    assert!(!old.exists());
    assert!(mine.join("files").is_file());
    assert!(root.join("notes").is_dir());
    // A shorter limit reaches the one in use too.
    b.run(["cache", "--cleanup", "--max-unused", "0s"]).ok();
    assert!(!mine.exists());
    assert!(root.join("notes").is_dir());
}

/// Clears the immutable attribute of a file when dropped, even when the test fails, so
/// that its directory can be removed.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn cache_cleanup_names_a_directory_it_cannot_remove_and_removes_the_others() {
    let t = TestDir::new();
    let b = t.bunker();
    let root = t.join("cache/bunker");
    let stuck = root.join("cd".repeat(32));
    let gone = root.join("ef".repeat(32));
    let locked = stuck.join("files");
    write_file(&locked, b"kept");
    write_file(&gone.join("files"), b"removed");
    // An immutable file cannot be unlinked, not even by root.
    let immutable = std::process::Command::new("chattr")
        .arg("+i")
        .arg(&locked)
        .status()
        .is_ok_and(|status| status.success());
    if !immutable {
        note("skipping: chattr +i does not work on the temporary directory's filesystem");
        return;
    }
    let _unlock = Immutable(locked.clone());
    set_last_used(&stuck, 40);
    set_last_used(&gone, 40);

    let out = b.run(["cache", "--cleanup"]);
    out.code(1);
    assert!(
        out.stderr
            .contains(&format!("bunker: cannot remove {}:", stuck.display())),
        "{out}"
    );
    assert!(out.stdout.contains("removed 1"), "{out}");
    assert!(!gone.exists());
    assert_eq!(fs::read(&locked).unwrap(), b"kept");
    let listed = b.run(["cache", "--json"]);
    listed.ok();
    let listed = listed.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["repository_id"], "cd".repeat(32));
    assert_eq!(listed[0]["unused"], true);
}

#[test]
fn excludes_leave_entries_out() {
    let t = TestDir::new();
    let src = t.join("src");
    let keep = [
        "keep.txt",
        "sub/keep2.txt",
        "sub/cache/y",
        "logs/deeper/x.log",
        "q/w/deep.dat.keep",
        "tmpdir/not-tmp.txt",
    ];
    let gone = [
        "a.tmp",
        "sub/b.tmp",
        "cache/x",
        "cache/nested/z",
        "logs/x.log",
        "q/deep.dat",
        "q/w/deep.dat",
        "dir.tmp/inner.txt",
    ];
    for f in keep.iter().chain(gone.iter()) {
        write_file(&src.join(f), f.as_bytes());
    }
    let b = t.bunker();
    b.init();
    let cache = src.join("cache");
    let logs = format!("{}/*/x.log", s(&src));
    let deep = format!("{}/**/deep.dat", s(&src));
    b.run([
        "backup",
        s(&src),
        "--exclude",
        "*.tmp",
        "--exclude",
        s(&cache),
        "--exclude",
        &logs,
        "--exclude",
        &deep,
    ])
    .ok();
    let out = b.run(["ls", "latest"]);
    out.ok();
    let lines: BTreeSet<PathBuf> = out.stdout.lines().map(PathBuf::from).collect();
    for f in keep {
        assert!(lines.contains(&src.join(f)), "{f} must be kept\n{out}");
    }
    for f in gone {
        assert!(!lines.contains(&src.join(f)), "{f} must be excluded\n{out}");
    }
    for d in ["cache", "cache/nested", "dir.tmp"] {
        assert!(
            !lines.contains(&src.join(d)),
            "directory {d} must be excluded\n{out}"
        );
    }
    for d in ["sub/cache", "logs", "logs/deeper", "q", "q/w", "tmpdir"] {
        assert!(
            lines.contains(&src.join(d)),
            "directory {d} must be kept\n{out}"
        );
    }
}

#[test]
fn repository_layout_on_disk() {
    let t = TestDir::new();
    let src = t.join("src");
    write_random_file(&src.join("a.bin"), 90, 700_000);
    write_file(&src.join("d/b.txt"), b"b\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let repo = b.repo();
    assert!(repo.join("config").is_file(), "config missing");
    let snaps = b.snapshots();
    let id = str_field(&snaps[0], "id");

    let mut problems = Vec::new();
    let mut count = BTreeMap::new();
    for kind in ["keys", "data", "tree", "index", "snapshots"] {
        let objects = repo_objects(repo, kind);
        count.insert(kind, objects.len());
        for rel in objects {
            let parts: Vec<&str> = rel.split('/').collect();
            let ok = match (kind, parts.as_slice()) {
                ("data" | "tree", [_, dir, name]) => {
                    is_hex(dir, 2) && is_hex(name, 64) && name.starts_with(dir)
                }
                (_, [_, name]) => is_hex(name, 64),
                _ => false,
            };
            if !ok {
                problems.push(format!("{rel}: not named as in the layout"));
            }
            let mode = fs::metadata(repo.join(&rel)).expect("stat").mode() & 0o7777;
            if mode != 0o444 {
                problems.push(format!("{rel}: mode {mode:o}, expected 444"));
            }
        }
    }
    for (kind, n) in &count {
        if *n == 0 {
            problems.push(format!("no object under {kind}/"));
        }
    }
    if count.get("snapshots") == Some(&1) && !repo.join("snapshots").join(id).is_file() {
        problems.push(format!("snapshots/{id} (the snapshot's id) does not exist"));
    }
    // Nothing else at the top level, and no temporary files left anywhere.
    for e in fs::read_dir(repo).expect("read repo") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        if ![
            "config",
            "keys",
            "data",
            "tree",
            "index",
            "snapshots",
            "sessions",
            "gc",
            "audit",
        ]
        .contains(&name.as_str())
        {
            problems.push(format!("unexpected top-level entry {name}"));
        }
    }
    let mut stack = vec![repo.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            if e.file_type().expect("type").is_dir() {
                stack.push(e.path());
            } else if e.file_name().to_string_lossy().starts_with('.') {
                problems.push(format!("leftover temporary file {}", e.path().display()));
            }
        }
    }
    let config_mode = fs::metadata(repo.join("config")).expect("stat").mode() & 0o7777;
    if config_mode & 0o222 != 0 {
        note(format!("config has mode {config_mode:o} (writable)"));
    }
    assert!(
        problems.is_empty(),
        "repository layout:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn diff_names_every_change_and_the_data_on_each_side_only() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"alpha\n");
    write_file(&src.join("sub/k"), b"keep\n");
    write_file(&src.join("gone/x"), b"gone\n");
    write_file(&src.join("becomes"), b"f\n");
    write_random_file(&src.join("same.bin"), 7, 200_000);
    std::os::unix::fs::symlink("a.txt", src.join("link")).expect("symlink");
    let b = t.bunker();
    b.init();
    let first = b.backup(&[&src], &["--json"]);
    first.ok();
    let old = str_field(&first.json(), "short_id").to_owned();

    write_file(&src.join("a.txt"), b"alpha2\n");
    chmod(&src.join("sub/k"), 0o600);
    fs::remove_dir_all(src.join("gone")).expect("remove gone");
    fs::remove_file(src.join("becomes")).expect("remove becomes");
    write_file(&src.join("becomes/in"), b"in\n");
    write_file(&src.join("sub/new"), b"new\n");
    fs::remove_file(src.join("link")).expect("remove link");
    std::os::unix::fs::symlink("b.txt", src.join("link")).expect("symlink");
    let second = b.backup(&[&src], &["--json"]);
    second.ok();
    let new = str_field(&second.json(), "short_id").to_owned();

    let at = |rel: &str| format!("{}/{rel}", src.display());
    let out = b.run(["diff", &old, &new]);
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    let expected = [
        format!("T    {}/", at("becomes")),
        format!("+    {}", at("becomes/in")),
        format!("M    {}", at("a.txt")),
        format!("-    {}/", at("gone")),
        format!("-    {}", at("gone/x")),
        format!("M    {}", at("link")),
        format!("+    {}", at("sub/new")),
    ];
    let mut listed: Vec<&str> = lines[..lines.len() - 1].to_vec();
    listed.sort_unstable();
    let mut wanted: Vec<&str> = expected.iter().map(String::as_str).collect();
    wanted.sort_unstable();
    assert_eq!(listed, wanted, "{out}");
    // Three new contents (7 + 3 + 4 bytes) and three gone (6 + 5 + 2 bytes).
    let summary = lines[lines.len() - 1];
    assert!(
        summary.starts_with(&format!(
            "{old} -> {new}: 2 added, 2 removed, 2 changed, 1 changed kind, "
        )) && summary.ends_with("data: 3 blob(s) of 14 B added, 3 blob(s) of 13 B removed"),
        "{out}"
    );

    // Metadata-only changes are listed on request; unchanged entries never are.
    let out = b.run(["diff", "--metadata", &old, &new]);
    out.ok();
    assert!(
        out.stdout.contains(&format!("U    {}\n", at("sub/k"))),
        "{out}"
    );
    assert!(!out.stdout.contains("same.bin"), "{out}");

    // Two paths, as JSON; and a single file.
    let sub = |id: &str| format!("{id}:{}", at("sub"));
    let out = b.run(["--json", "diff", "--metadata", &sub(&old), &sub(&new)]);
    out.ok();
    let doc = out.json();
    let changes: Vec<(&str, &str, &str)> = doc["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|c| {
            (
                str_field(c, "change"),
                str_field(c, "path"),
                str_field(c, "type"),
            )
        })
        .collect();
    let (k, new_file) = (at("sub/k"), at("sub/new"));
    assert_eq!(
        changes,
        [
            ("metadata", k.as_str(), "file"),
            ("added", new_file.as_str(), "file")
        ],
        "{doc}"
    );
    assert_eq!(doc["data_added"]["bytes"], 4, "{doc}");
    assert_eq!(doc["data_removed"]["blobs"], 0, "{doc}");
    let file = |id: &str| format!("{id}:{}", at("a.txt"));
    let out = b.run(["diff", &file(&old), &file(&new)]);
    out.ok();
    assert!(
        out.stdout.starts_with(&format!("M    {}\n", at("a.txt"))),
        "{out}"
    );

    let out = b.run(["diff", &new, &new]);
    out.ok();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(
        out.stdout.contains(": 0 added, 0 removed, 0 changed"),
        "{out}"
    );
}

#[test]
fn find_lists_each_snapshots_matches_by_name_or_path() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("etc/app.conf"), b"a=1\n");
    write_file(&src.join("etc/deep/db.conf"), b"b=2\n");
    write_file(&src.join("data/readme"), b"text\n");
    let b = t.bunker();
    b.init();
    let id = |out: &Output| str_field(&out.json(), "short_id").to_owned();
    let first = b.backup(&[&src], &["--json"]);
    first.ok();
    write_file(&src.join("data/new.conf"), b"c=3\n");
    let second = b.backup(&[&src], &["--json"]);
    second.ok();
    fs::remove_file(src.join("etc/app.conf")).expect("remove");
    let third = b.backup(&[&src], &["--json"]);
    third.ok();
    let (first, second, third) = (id(&first), id(&second), id(&third));
    let at = |rel: &str| format!("{}/{rel}", src.display());

    // By name at any depth: unchanged directories still list their matches every time.
    let out = b.run(["--json", "find", "*.conf"]);
    out.ok();
    let doc = out.json();
    let per_snapshot: Vec<(String, Vec<String>)> = doc["snapshots"]
        .as_array()
        .expect("snapshots")
        .iter()
        .map(|s| {
            let paths = s["matches"]
                .as_array()
                .expect("matches")
                .iter()
                .map(|m| str_field(m, "path").to_owned())
                .collect();
            (str_field(s, "snapshot_id")[..8].to_owned(), paths)
        })
        .collect();
    assert_eq!(
        per_snapshot,
        [
            (
                first.clone(),
                vec![at("etc/app.conf"), at("etc/deep/db.conf")]
            ),
            (
                second.clone(),
                vec![
                    at("data/new.conf"),
                    at("etc/app.conf"),
                    at("etc/deep/db.conf")
                ]
            ),
            (
                third.clone(),
                vec![at("data/new.conf"), at("etc/deep/db.conf")]
            ),
        ],
        "{doc}"
    );
    assert_eq!(
        (doc["searched"].as_u64(), doc["matches"].as_u64()),
        (Some(3), Some(7))
    );

    // By path, in chosen snapshots; text output.
    let pattern = format!("{}/etc/*", src.display());
    let out = b.run(["find", &pattern, "--snapshot", &third, "-s", &first]);
    out.ok();
    let host = str_field(&b.snapshots()[0], "host").to_owned();
    let (app, deep) = (at("etc/app.conf"), at("etc/deep"));
    let expected = [
        format!("snapshot {first} of {host} at "),
        app.clone(),
        deep.clone(),
        format!("snapshot {third} of {host} at "),
        deep.clone(),
        "3 match(es) in 2 of 2 snapshot(s) searched".to_owned(),
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (line, prefix) in lines.iter().zip(&expected) {
        assert!(line.starts_with(prefix.as_str()), "{prefix:?}\n{out}");
    }
    assert_eq!(lines[1], app);
    assert_eq!(lines[2], deep);

    let out = b.run(["find", "nothing-like-this"]);
    out.ok();
    assert_eq!(
        out.stdout, "0 match(es) in 0 of 3 snapshot(s) searched\n",
        "{out}"
    );
    b.run(["find", "["]).code(2);
}

#[test]
fn files_from_exclude_file_and_tagged_directories_choose_what_is_backed_up() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("keep/a.txt"), b"a\n");
    write_file(
        &src.join("cache/CACHEDIR.TAG"),
        b"Signature: 8a477f597d28d172789f06886806bc55\n# a cache\n",
    );
    write_file(&src.join("cache/blob"), b"cached\n");
    write_file(&src.join("not-a-cache/CACHEDIR.TAG"), b"no signature\n");
    write_file(&src.join("not-a-cache/f"), b"f\n");
    write_file(&src.join("private/.nobackup"), b"");
    write_file(&src.join("private/secret"), b"s\n");
    write_file(&src.join("logs/x.log"), b"log\n");
    write_file(&src.join("logs/y.txt"), b"y\n");
    write_file(&src.join("unlisted/z"), b"z\n");
    let list = t.join("paths.txt");
    let listed: Vec<String> = ["keep", "cache", "not-a-cache", "private", "logs"]
        .iter()
        .map(|d| s(&src.join(d)).to_owned())
        .collect();
    fs::write(
        &list,
        format!("# what to back up\n{}\n\n", listed.join("\r\n")),
    )
    .unwrap();
    let patterns = t.join("excludes.txt");
    fs::write(&patterns, "# logs are shipped elsewhere\n*.log\n").unwrap();
    let b = t.bunker();
    b.init();

    let out = b.run([
        "backup",
        "--files-from",
        s(&list),
        "--exclude-file",
        s(&patterns),
        "--exclude-caches",
        "--exclude-if-present",
        ".nobackup",
    ]);
    out.ok();
    let listing = b.run(["ls", "latest"]);
    listing.ok();
    let has = |rel: &str| listing.stdout.lines().any(|l| l == s(&src.join(rel)));
    for present in ["keep/a.txt", "not-a-cache/f", "logs/y.txt"] {
        assert!(has(present), "{present} missing\n{listing}");
    }
    for absent in ["cache", "private", "logs/x.log", "unlisted"] {
        assert!(!has(absent), "{absent} backed up\n{listing}");
    }

    // A pattern in the file that could never match is refused, naming the file.
    fs::write(&patterns, "logs/x.log\n").unwrap();
    let out = b.run(["backup", s(&src), "--exclude-file", s(&patterns)]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains(s(&patterns)), "{out}");
}

/// `--files-from-raw` takes NUL-separated paths (any byte, a newline included) and
/// `--files-from-verbatim` lines as written (a leading `#` is a name); `-` is stdin.
#[test]
fn raw_and_verbatim_path_lists_take_names_as_they_are() {
    let t = TestDir::new();
    let src = t.join("src");
    let newline = src.join("two\nlines");
    let hash = src.join("#not-a-comment");
    let spaced = src.join(" spaced ");
    for dir in [&newline, &hash, &spaced] {
        write_file(&dir.join("f"), b"listed\n");
    }
    write_file(&src.join("unlisted/f"), b"not listed\n");
    let b = t.bunker();
    b.init();
    let listed = |out: &Output| -> BTreeSet<String> {
        let json = b.run(["ls", "latest", "--json"]);
        json.ok();
        let paths = json.json();
        let paths = paths.as_array().expect("ls --json array").iter();
        let below = format!("{}/", s(&src));
        let found = paths
            .map(|i| str_field(i, "path").to_owned())
            .filter(|p| p.starts_with(&below));
        assert!(out.code == 0, "{out}");
        found.collect()
    };
    let expect = |dirs: &[&PathBuf]| -> BTreeSet<String> {
        dirs.iter()
            .flat_map(|d| [s(d).to_owned(), s(&d.join("f")).to_owned()])
            .collect()
    };

    let raw = t.join("paths.nul");
    let mut bytes = Vec::new();
    for dir in [&newline, &hash, &spaced] {
        bytes.extend_from_slice(s(dir).as_bytes());
        bytes.push(0);
    }
    fs::write(&raw, &bytes).expect("write list");
    let out = b.run(["backup", "--files-from-raw", s(&raw)]);
    assert_eq!(listed(&out), expect(&[&newline, &hash, &spaced]));

    // Verbatim, from stdin, relative to the working directory: the `#` line is a path,
    // the spaces are part of the name.
    let in_src = b.with_cwd(&src);
    let (mut cmd, shown) = in_src.command(["backup", "--files-from-verbatim", "-"]);
    let list = t.join("paths.txt");
    fs::write(&list, "#not-a-comment\n\n spaced \n").expect("write list");
    cmd.stdin(std::process::Stdio::from(
        fs::File::open(&list).expect("open"),
    ));
    let out = wait_output(cmd.spawn().expect("spawn"), shown, b.timeout);
    assert_eq!(listed(&out), expect(&[&hash, &spaced]));

    // The same list through --files-from skips the `#` line as a comment.
    let out = in_src.run(["backup", "--files-from", s(&list)]);
    assert_eq!(listed(&out), expect(&[&spaced]));

    // An empty list backs up nothing, and says so.
    let empty = t.join("empty.nul");
    fs::write(&empty, b"").expect("write list");
    let out = b.run(["backup", "--files-from-raw", s(&empty)]);
    out.code(1);
    assert!(
        out.stderr
            .contains("bunker: no paths to back up (the path lists given are empty)"),
        "{out}"
    );
}

#[test]
fn exclude_larger_than_leaves_out_big_files_but_not_a_path_given() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("small.txt"), &[b'a'; 1024]);
    write_file(&src.join("exact.bin"), &[b'b'; 2048]);
    write_file(&src.join("dir/big.iso"), &[b'c'; 2049]);
    let given = t.join("other/huge.bin");
    write_file(&given, &[b'd'; 10_000]);
    let b = t.bunker();
    b.init();
    b.backup(&[&src, &given], &["--exclude-larger-than", "2K"])
        .ok();
    let listing = b.run(["ls", "latest"]);
    listing.ok();
    let has = |path: &Path| listing.stdout.lines().any(|l| l == s(path));
    assert!(has(&src.join("small.txt")), "{listing}");
    assert!(has(&src.join("exact.bin")), "not larger than 2K: {listing}");
    assert!(has(&src.join("dir")), "{listing}");
    assert!(!has(&src.join("dir/big.iso")), "larger than 2K: {listing}");
    assert!(has(&given), "named as a path to back up: {listing}");
    b.run(["backup", s(&src), "--exclude-larger-than", "2X"])
        .code(2);
}

#[test]
fn a_dry_run_backup_reports_what_the_backup_adds_and_stores_nothing() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("kept.txt"), b"unchanged between the backups\n");
    write_random_file(&src.join("edited.bin"), 1, 300_000);
    age_files(&src);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    write_random_file(&src.join("edited.bin"), 2, 300_000);
    write_random_file(&src.join("new/added.bin"), 3, 2_500_000);
    write_file(
        &src.join("new/copy.txt"),
        b"unchanged between the backups\n",
    );
    let repository = files_under(b.repo());
    let cache = files_under(&b.cache);
    let audited = b.run(["--json", "audit"]);
    audited.ok();

    let dry = b.run(["--json", "backup", "--dry-run", s(&src)]);
    dry.ok();
    let dry = dry.json();
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert!(dry["snapshot_id"].is_null(), "{dry}");
    let text = b.run(["backup", "-n", "-v", s(&src)]);
    text.ok();
    assert!(text.stdout.contains("dry run: nothing stored"), "{text}");
    // --verbose names each file it would read, and no other.
    let mut named: Vec<&str> = text
        .stdout
        .lines()
        .filter(|line| line.starts_with("new ") || line.starts_with("changed "))
        .collect();
    named.sort();
    let expected = [
        format!("changed  {}", s(&src.join("edited.bin"))),
        format!("new      {}", s(&src.join("new/added.bin"))),
        format!("new      {}", s(&src.join("new/copy.txt"))),
    ];
    assert_eq!(named, expected, "{text}");
    b.run(["backup", "-n", "--stdin-from-command", "echo dump"])
        .ok();
    assert!(
        files_under(b.repo()) == repository,
        "a dry run changed the repository"
    );
    assert!(
        files_under(&b.cache) == cache,
        "a dry run changed the files cache"
    );
    assert_eq!(b.snapshots().len(), 1);
    let after = b.run(["--json", "audit"]);
    after.ok();
    assert_eq!(
        after.stdout, audited.stdout,
        "a dry run left an audit record"
    );

    // What it reported is what the backup then does, figure for figure.
    let real = b.backup(&[&src], &["--json"]);
    real.ok();
    let real = real.json();
    for figure in [
        "files",
        "dirs",
        "bytes",
        "files_new",
        "files_changed",
        "files_unchanged",
        "bytes_read",
        "bytes_added",
        "data_blobs_added",
        "tree_blobs_added",
    ] {
        assert_eq!(
            dry["summary"][figure], real["summary"][figure],
            "{figure}: dry run {dry} against {real}"
        );
    }
    // The trees also hold the directories above the source, `/tmp` among them, whose times
    // move as other tests run: the same trees may compress a few bytes apart.
    let stored = |report: &serde_json::Value| u64_field(&report["summary"], "bytes_stored");
    assert!(
        stored(&dry).abs_diff(stored(&real)) <= 64,
        "bytes_stored: dry run {dry} against {real}"
    );
    assert_eq!(u64_field(&real["summary"], "files_new"), 2, "{real}");
    assert_eq!(u64_field(&real["summary"], "files_changed"), 1, "{real}");
    assert_eq!(u64_field(&real["summary"], "files_unchanged"), 1, "{real}");
    // The two new data files, as sealed blobs: at least their bytes (random data).
    assert!(
        u64_field(&real["summary"], "bytes_stored") > 2_800_000,
        "{real}"
    );
    assert_ne!(files_under(b.repo()), repository);
}

#[test]
fn one_file_system_records_a_mount_point_empty_and_names_it() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("kept.txt"), b"on the source's filesystem\n");
    let mount_point = src.join("mnt");
    let Some(_mount) = tmpfs_or_skip(&mount_point, "the --one-file-system test") else {
        return;
    };
    write_file(&mount_point.join("other.txt"), b"on another filesystem\n");
    let b = t.bunker();
    b.init();

    let out = b.backup(&[&src], &["--one-file-system", "--json"]);
    out.ok();
    assert_eq!(
        out.json()["mount_points_not_crossed"],
        serde_json::json!([s(&mount_point)]),
        "{out}"
    );
    let listed = b.run(["ls", "latest"]);
    listed.ok();
    assert!(listed.stdout.contains(s(&src.join("kept.txt"))), "{listed}");
    assert!(
        listed.stdout.lines().any(|l| l == s(&mount_point)),
        "{listed}"
    );
    assert!(!listed.stdout.contains("other.txt"), "{listed}");

    // Without the flag the other filesystem is backed up too.
    let out = b.backup(&[&src], &[]);
    out.ok();
    assert!(!out.stderr.contains("not crossed"), "{out}");
    let listed = b.run(["ls", "latest"]);
    assert!(listed.stdout.contains("other.txt"), "{listed}");
}

#[test]
fn a_path_that_is_not_utf8_can_be_streamed_restored_listed_and_diffed() {
    use std::ffi::{OsStr, OsString};
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let t = TestDir::new();
    let src = t.join("src");
    let name = OsStr::from_bytes(b"caf\xe9");
    write_file(&src.join(name).join("menu"), b"latin-1\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let spec = |path: &Path| {
        let mut spec = b"latest:".to_vec();
        spec.extend_from_slice(path.as_os_str().as_bytes());
        OsString::from_vec(spec)
    };
    let dir = src.join(name);

    let out = b.run([
        OsString::from("restore"),
        spec(&dir.join("menu")),
        "--stdout".into(),
    ]);
    out.ok();
    assert_eq!(out.raw_stdout, b"latin-1\n");
    let target = t.join("target");
    let out = b.run([
        OsString::from("restore"),
        spec(&dir),
        "--target".into(),
        target.clone().into_os_string(),
    ]);
    out.ok();
    assert_eq!(
        fs::read(target.join("menu")).expect("restored"),
        b"latin-1\n"
    );
    let out = b.run([OsString::from("ls"), spec(&dir)]);
    out.ok();
    assert!(out.stdout.contains("menu"), "{out}");
    let out = b.run([OsString::from("diff"), spec(&dir), spec(&dir)]);
    out.ok();
}

/// A POSIX default ACL in the kernel's extended-attribute form: owner, user 65534, group,
/// mask and others, all with read, write and execute.
fn default_acl_granting_nobody() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, id) in [
        (0x01u16, u32::MAX),
        (0x02, 65534),
        (0x04, u32::MAX),
        (0x10, u32::MAX),
        (0x20, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&7u16.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    acl
}

/// Every permission a file can have comes back exactly, whatever the restore's umask takes
/// away when it creates the files. In a directory the restore makes, a file is created with
/// its recorded bits (no one else can reach it before its metadata is applied) and its
/// mode is not set again when it has them; at the top of the target, with a second name,
/// with setuid, setgid or sticky bits, or without read and write for its owner, it is
/// created private first. A restore that must set the mode and skips it fails here.
#[test]
fn every_file_permission_is_restored_exactly_whatever_the_umask() {
    let t = TestDir::new();
    let src = t.join("src");
    let mut modes = vec![
        0o400, 0o444, 0o500, 0o600, 0o604, 0o640, 0o644, 0o660, 0o664, 0o666, 0o700, 0o755, 0o775,
        0o777, 0o4755, 0o2755, 0o1644, 0o6777,
    ];
    if is_root() {
        // Files their owner cannot read: only root backs them up.
        modes.extend([0o000, 0o200, 0o070]);
    }
    for mode in &modes {
        for dir in ["", "sub/", "sub/deeper/"] {
            let path = src.join(format!("{dir}m{mode:04o}"));
            write_file(&path, format!("mode {mode:o}\n").as_bytes());
            chmod(&path, *mode);
        }
    }
    write_file(&src.join("sub/linked"), b"two names\n");
    fs::hard_link(src.join("sub/linked"), src.join("sub/deeper/linked-too")).expect("link");
    chmod(&src.join("sub/linked"), 0o664);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    for umask in ["022", "077", "000"] {
        let mut under_umask = b.clone();
        under_umask.wrapper = ["sh", "-c", &format!("umask {umask} && exec \"$0\" \"$@\"")]
            .map(std::ffi::OsString::from)
            .to_vec();
        let target = t.join(format!("target-{umask}"));
        let out = under_umask.restore(&format!("latest:{}", src.display()), &target);
        out.ok();
        compare_tree_contents(&src, &target);
        let restored = fs::metadata(target.join("sub/deeper/m0664")).expect("stat");
        assert_eq!(restored.mode() & 0o7777, 0o664, "umask {umask}");
    }
}

#[test]
fn a_restore_onto_an_existing_target_makes_it_match_the_snapshot_and_nothing_else() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("tool"), b"#!/bin/sh\n");
    chmod(&src.join("tool"), 0o4755);
    write_file(&src.join("a"), b"same\n");
    write_file(&src.join("b"), b"same\n");
    chmod(&src.join("b"), 0o600);
    write_file(&src.join("secret"), b"secret\n");
    chmod(&src.join("secret"), 0o640);
    write_file(&src.join("x"), b"x\n");
    write_file(&src.join("sub/g"), b"g\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    // The target holds each file's right content, but: `tool` is a hard link to a file
    // outside the target, `a` and `b` are one inode, `secret` carries an attribute the
    // snapshot lacks; a directory stands where `x` goes and a file where `sub` goes.
    let target = t.join("target");
    let outside = t.join("outside/victim");
    write_file(&outside, b"#!/bin/sh\n");
    chmod(&outside, 0o600);
    fs::create_dir_all(&target).expect("mkdir");
    fs::hard_link(&outside, target.join("tool")).expect("hard link");
    write_file(&target.join("a"), b"same\n");
    fs::hard_link(target.join("a"), target.join("b")).expect("hard link");
    write_file(&target.join("secret"), b"secret\n");
    let marked = xattr::set(target.join("secret"), "user.stale", b"1").is_ok();
    write_file(&target.join("x/junk"), b"junk\n");
    write_file(&target.join("sub"), b"not a directory\n");

    let out = b.restore(&format!("latest:{}", src.display()), &target);
    out.ok();
    compare_tree_contents(&src, &target);
    let victim = fs::metadata(&outside).expect("stat");
    assert_eq!(
        (victim.mode() & 0o7777, victim.nlink()),
        (0o600, 1),
        "the file outside changed"
    );
    assert_eq!(fs::read(&outside).expect("read"), b"#!/bin/sh\n");
    let (a, b_meta) = (
        fs::metadata(target.join("a")).expect("a"),
        fs::metadata(target.join("b")).expect("b"),
    );
    assert_ne!(a.ino(), b_meta.ino(), "a and b are still one inode");
    if marked {
        assert_eq!(
            xattr::get(target.join("secret"), "user.stale").expect("getxattr"),
            None
        );
    }

    // A fresh target under a default ACL: the restored entries do not inherit it.
    let acl_target = t.join("acl-target");
    fs::create_dir_all(&acl_target).expect("mkdir");
    if xattr::set(
        &acl_target,
        "system.posix_acl_default",
        &default_acl_granting_nobody(),
    )
    .is_ok()
    {
        let out = b.run([
            "restore",
            &format!("latest:{}", src.display()),
            "--target",
            s(&acl_target),
        ]);
        out.ok();
        compare_tree_contents(&src, &acl_target);
        for name in ["secret", "sub", "sub/g"] {
            let acl =
                xattr::get(acl_target.join(name), "system.posix_acl_access").expect("getxattr");
            assert_eq!(acl, None, "{name} kept an inherited ACL");
        }
    } else {
        note("POSIX ACLs are not supported here: the inherited-ACL case was not run");
    }

    // A file given as the target is named as such.
    let out = b.run(["restore", "latest", "--target", s(&target.join("x"))]);
    out.code(1);
    assert!(
        out.stderr.contains("the restore target is not a directory"),
        "{out}"
    );
    // A target that cannot be made says so, with why.
    let below_a_file = target.join("x").join("y");
    let out = b.run(["restore", "latest", "--target", s(&below_a_file)]);
    out.code(1);
    assert!(
        out.stderr.contains(&format!(
            "{}: cannot create the restore target: Not a directory",
            below_a_file.display()
        )),
        "{out}"
    );
}

#[test]
fn restore_delete_makes_the_target_the_snapshot_and_a_dry_run_says_so_first() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("app/main.rs"), b"fn main() {}\n");
    write_random_file(&src.join("app/data.bin"), 7, 400_000);
    write_file(&src.join("app/app.conf"), b"port = 80\n");
    write_file(&src.join("docs/readme"), b"read me\n");
    std::os::unix::fs::symlink("main.rs", src.join("app/link")).expect("symlink");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let spec = format!("latest:{}", src.display());
    let target = t.join("target");
    b.run(["restore", &spec, "--target", s(&target)]).ok();

    // Drift: one file edited in place (same size), and entries the snapshot lacks,
    // among them a symlink out of the target that must go without being followed.
    write_random_file(&target.join("app/data.bin"), 8, 400_000);
    write_file(&target.join("app/stray.txt"), b"stray\n");
    write_file(&target.join("app/local.conf"), b"mine\n");
    write_file(&target.join("extra/deep/f"), b"deep\n");
    let outside = t.join("outside");
    write_file(&outside.join("keep-me"), b"not the target's\n");
    std::os::unix::fs::symlink(&outside, target.join("docs/out")).expect("symlink");
    let drifted = files_under(&target);

    let dry = b.run([
        "--json",
        "restore",
        &spec,
        "--target",
        s(&target),
        "-n",
        "--delete",
    ]);
    dry.ok();
    let dry = dry.json();
    assert_eq!(dry["dry_run"], true, "{dry}");
    assert_eq!(u64_field(&dry, "files"), 4, "{dry}");
    assert_eq!(u64_field(&dry, "files_skipped"), 3, "{dry}");
    assert_eq!(
        u64_field(&dry, "bytes"),
        400_000,
        "only data.bin to write: {dry}"
    );
    let would_go: Vec<&str> = dry["deleted"]["paths"]
        .as_array()
        .expect("deleted paths")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let expected: Vec<String> = ["app/local.conf", "app/stray.txt", "docs/out", "extra"]
        .iter()
        .map(|p| s(&target.join(p)).to_owned())
        .collect();
    assert_eq!(would_go, expected, "{dry}");
    // extra, extra/deep, extra/deep/f, the two files and the link.
    assert_eq!(u64_field(&dry["deleted"], "entries"), 6, "{dry}");
    assert_eq!(u64_field(&dry["deleted"], "bytes"), 6 + 5 + 5, "{dry}");
    assert!(
        files_under(&target) == drifted,
        "a dry run changed the target"
    );
    assert!(target.join("docs/out").is_symlink());

    // Excluded entries are neither restored nor deleted.
    let out = b.run([
        "restore",
        &spec,
        "--target",
        s(&target),
        "--delete",
        "--exclude",
        "*.conf",
    ]);
    out.ok();
    assert!(out.stdout.contains("deleted 5 entries"), "{out}");
    assert_eq!(
        fs::read(target.join("app/local.conf")).expect("kept"),
        b"mine\n"
    );
    assert_eq!(
        fs::read(outside.join("keep-me")).expect("the link's target is untouched"),
        b"not the target's\n"
    );
    assert!(!target.join("extra").exists() && !target.join("app/stray.txt").exists());

    // Without patterns the target becomes the snapshot's directory exactly.
    b.run(["restore", &spec, "--target", s(&target), "--delete"])
        .ok();
    compare_trees(&src, &target);
    let again = b.run([
        "--json",
        "restore",
        &spec,
        "--target",
        s(&target),
        "--delete",
    ]);
    again.ok();
    assert_eq!(u64_field(&again.json()["deleted"], "entries"), 0, "{again}");

    // Only inside what the backup was given: a whole snapshot restored with --delete
    // leaves alone what sits beside the backed-up path on the way to it.
    let whole = t.join("whole");
    b.run(["restore", "latest", "--target", s(&whole)]).ok();
    write_file(
        &whole.join("beside-the-backup"),
        b"not the snapshot's to judge\n",
    );
    write_file(&under(&whole, &src.join("stray")), b"inside: goes\n");
    let out = b.run([
        "--json",
        "restore",
        "latest",
        "--target",
        s(&whole),
        "--delete",
    ]);
    out.ok();
    assert_eq!(u64_field(&out.json()["deleted"], "entries"), 1, "{out}");
    assert!(whole.join("beside-the-backup").exists());
    assert!(!under(&whole, &src.join("stray")).exists());

    // A directory on another filesystem is never emptied: it stays, named on stderr.
    if is_root() {
        let mount_point = target.join("mnt");
        fs::create_dir_all(&mount_point).expect("mkdir");
        if let Some(_mount) = mount_tmpfs(&mount_point) {
            write_file(&mount_point.join("other-fs"), b"elsewhere\n");
            let out = b.run(["restore", &spec, "--target", s(&target), "--delete"]);
            out.ok();
            assert!(out.stderr.contains("on another filesystem"), "{out}");
            assert_eq!(
                fs::read(mount_point.join("other-fs")).expect("left"),
                b"elsewhere\n"
            );
        }
        // Nor one the snapshot holds a directory for: `docs` mounted over.
        let docs = target.join("docs");
        if let Some(_mount) = mount_tmpfs(&docs) {
            write_file(&docs.join("on-the-mount"), b"elsewhere\n");
            let out = b.run(["restore", &spec, "--target", s(&target), "--delete"]);
            out.ok();
            assert!(out.stderr.contains("not swept"), "{out}");
            assert!(docs.join("on-the-mount").exists());
        }
    }

    // Content the repository lost is named by a dry run, before any restore runs into it.
    let largest_pack = files_under(&b.repo().join("data"))
        .into_iter()
        .max_by_key(|(_, bytes)| bytes.len())
        .map(|(path, _)| b.repo().join("data").join(path))
        .expect("a pack");
    fs::remove_file(&largest_pack).expect("remove the data pack");
    let lost = b.run([
        "restore",
        &spec,
        "--target",
        s(&t.join("fresh")),
        "--dry-run",
    ]);
    lost.code(5);
    assert!(
        lost.stderr.contains("data.bin") && lost.stderr.contains("is missing"),
        "{lost}"
    );
    assert!(!t.join("fresh").exists(), "a dry run made its target");

    // Only a directory can be made the snapshot's.
    let out = b.run([
        "restore",
        &format!("latest:{}", src.join("docs/readme").display()),
        "--target",
        s(&t.join("one")),
        "--delete",
    ]);
    out.code(1);
    assert!(out.stderr.contains("is not a directory"), "{out}");
}

/// `restore --overwrite`: each mode keeps or replaces what the target holds by its rule
/// (kept entries keep their metadata too), everything missing comes back whatever the
/// mode, and a dry run predicts the counts and bytes without changing the target.
#[test]
fn restore_overwrite_modes_keep_or_replace_what_the_target_holds() {
    const OLD: i64 = 946_684_800; // 2000-01-01
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("edited-newer"), b"snapshot one\n");
    write_file(&src.join("same-size-and-time"), b"snapshot two\n");
    write_file(&src.join("edited-older"), b"snapshot three\n");
    write_file(&src.join("missing"), b"gone from the target\n");
    write_file(&src.join("dir/inner"), b"inside\n");
    std::os::unix::fs::symlink("edited-newer", src.join("link")).expect("symlink");
    for name in [
        "edited-newer",
        "same-size-and-time",
        "edited-older",
        "missing",
    ] {
        chmod(&src.join(name), 0o644);
    }
    for name in [
        "edited-newer",
        "same-size-and-time",
        "edited-older",
        "missing",
        "link",
        "dir",
    ] {
        set_mtime(&src.join(name), OLD, 0);
    }
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let spec = format!("latest:{}", src.display());

    // The target as its user left it: an edit newer than the snapshot, one of the same
    // size and time, one older, a file gone, a file where the snapshot has a symlink and
    // another where it has a directory.
    let drifted = |name: &str| -> PathBuf {
        let target = t.join(name);
        b.run(["restore", &spec, "--target", s(&target)]).ok();
        write_file(&target.join("edited-newer"), b"my newer edit\n");
        chmod(&target.join("edited-newer"), 0o600);
        write_file(&target.join("same-size-and-time"), b"SNAPSHOT TWO\n");
        set_mtime(&target.join("same-size-and-time"), OLD, 0);
        write_file(&target.join("edited-older"), b"my older edit\n");
        set_mtime(&target.join("edited-older"), OLD - 86_400, 0);
        fs::remove_file(target.join("missing")).expect("rm");
        fs::remove_file(target.join("link")).expect("rm");
        write_file(&target.join("link"), b"not a link\n");
        fs::remove_dir_all(target.join("dir")).expect("rm");
        write_file(
            &target.join("dir"),
            b"a file where the snapshot has a directory\n",
        );
        target
    };
    let read = |target: &Path, name: &str| fs::read(target.join(name)).expect("read");
    let mode_of = |path: PathBuf| fs::symlink_metadata(path).expect("stat").mode() & 0o7777;

    // (mode, kept, files kept, files in place, bytes written)
    let cases = [
        ("never", 5, 3, 0, 21),
        ("if-newer", 4, 2, 0, 21 + 15),
        ("if-changed", 0, 0, 1, 21 + 13 + 15 + 7),
        ("always", 0, 0, 0, 21 + 13 + 13 + 15 + 7),
    ];
    for (mode, kept, files_kept, in_place, written) in cases {
        let target = drifted(mode);
        let before = files_under(&target);
        let args = ["--json", "restore", &spec, "--target", s(&target)];
        let dry = b.run(args.iter().copied().chain(["-n", "--overwrite", mode]));
        dry.ok();
        assert!(
            files_under(&target) == before,
            "{mode}: a dry run changed the target"
        );
        let real = b.run(args.iter().copied().chain(["--overwrite", mode]));
        real.ok();
        for (what, out) in [("dry run", dry.json()), ("restore", real.json())] {
            assert_eq!(u64_field(&out, "kept"), kept, "{mode} {what}: {out}");
            assert_eq!(u64_field(&out, "files_kept"), files_kept, "{mode} {what}");
            assert_eq!(u64_field(&out, "files_skipped"), in_place, "{mode} {what}");
            assert_eq!(u64_field(&out, "bytes"), written, "{mode} {what}: {out}");
        }
        // What is missing comes back whatever the mode.
        assert_eq!(
            read(&target, "missing"),
            b"gone from the target\n",
            "{mode}"
        );
        match mode {
            "never" => {
                assert_eq!(read(&target, "edited-newer"), b"my newer edit\n");
                assert_eq!(mode_of(target.join("edited-newer")), 0o600, "metadata kept");
                assert_eq!(read(&target, "same-size-and-time"), b"SNAPSHOT TWO\n");
                assert_eq!(read(&target, "edited-older"), b"my older edit\n");
                assert_eq!(read(&target, "link"), b"not a link\n");
                assert!(
                    fs::symlink_metadata(target.join("dir"))
                        .expect("stat")
                        .is_file()
                );
                assert!(
                    real.stderr
                        .contains("the snapshot's directory is not restored"),
                    "{real}"
                );
            }
            "if-newer" => {
                assert_eq!(read(&target, "edited-newer"), b"my newer edit\n");
                assert_eq!(read(&target, "same-size-and-time"), b"SNAPSHOT TWO\n");
                assert_eq!(read(&target, "edited-older"), b"snapshot three\n");
                assert_eq!(mode_of(target.join("edited-older")), 0o644);
                assert_eq!(read(&target, "link"), b"not a link\n");
                assert!(
                    fs::symlink_metadata(target.join("dir"))
                        .expect("stat")
                        .is_file()
                );
            }
            "if-changed" => {
                // Taken as in place by its size and time, as the mode says: not read.
                assert_eq!(read(&target, "same-size-and-time"), b"SNAPSHOT TWO\n");
                assert_eq!(read(&target, "edited-newer"), b"snapshot one\n");
                assert_eq!(mode_of(target.join("edited-newer")), 0o644);
                assert_eq!(read(&target, "edited-older"), b"snapshot three\n");
                assert!(target.join("link").is_symlink());
                assert_eq!(read(&target, "dir/inner"), b"inside\n");
            }
            _ => compare_trees(&src, &target),
        }
    }

    // A verified restore takes nothing on trust: if-changed reads the file of the same
    // size and time, finds it differs and writes the snapshot's content.
    let target = drifted("if-changed-verified");
    let out = b.run([
        "--json",
        "restore",
        &spec,
        "--target",
        s(&target),
        "--overwrite",
        "if-changed",
        "--verify",
    ]);
    out.ok();
    let out = out.json();
    assert_eq!(u64_field(&out, "files_skipped"), 0, "{out}");
    assert_eq!(u64_field(&out, "bytes"), 21 + 13 + 13 + 15 + 7, "{out}");
    compare_trees(&src, &target);
}

/// Extracts the tar archive `bytes` into a new directory `dir` with GNU tar, keeping
/// owners, modes and extended attributes.
fn extract_tar(bytes: &[u8], dir: &Path) {
    let archive = dir.with_extension("tar");
    fs::write(&archive, bytes).expect("write the archive");
    fs::create_dir_all(dir).expect("create the extraction directory");
    let out = std::process::Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpf"])
        .arg(&archive)
        .arg("-C")
        .arg(dir)
        .output()
        .expect("run tar");
    // GNU tar remarks on the edge tree's times before 1970 and in 2100, and sets them.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.lines().all(|line| line.contains("time stamp")),
        "tar -x: {stderr}"
    );
}

#[test]
fn a_directory_streamed_to_stdout_is_a_tar_that_extracts_to_what_restore_gives() {
    let t = TestDir::new();
    let src = t.join("src");
    build_edge_tree(&src, false);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    // A directory: its entries relative to it, its own metadata on `./`.
    let out = b.run(["restore", &format!("latest:{}", src.display()), "--stdout"]);
    out.ok();
    assert!(
        out.raw_stdout.len().is_multiple_of(512),
        "not whole tar blocks"
    );
    let extracted = t.join("dir");
    extract_tar(&out.raw_stdout, &extracted);
    compare_trees(&src, &extracted);

    // The whole snapshot: the paths below its root, as `--target` places them.
    let out = b.run(["restore", "latest", "--stdout"]);
    out.ok();
    let extracted = t.join("whole");
    extract_tar(&out.raw_stdout, &extracted);
    compare_trees(&src, &under(&extracted, &src));

    // A file is still its content alone.
    let file = src.join("files/text.txt");
    let out = b.run(["restore", &format!("latest:{}", file.display()), "--stdout"]);
    out.ok();
    assert_eq!(out.raw_stdout, b"hello, bunker\n");
}

#[test]
fn tag_writes_each_changed_snapshot_again_and_forgets_the_old_one() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("f"), b"tagged\n");
    let b = t.bunker();
    b.init();
    for service in ["a", "a", "b"] {
        b.backup(&[&src], &["--tag", &format!("service={service}")])
            .ok();
    }
    let before = b.snapshots();
    let by_id = |snapshots: &[serde_json::Value], id: &str| {
        snapshots.iter().find(|s| str_field(s, "id") == id).cloned()
    };
    let newest = str_field(&before[2], "id").to_owned();

    let out = b.run(["--json", "tag", "latest", "--add", "keep=yes"]);
    out.ok();
    let doc = out.json();
    assert_eq!(doc["changed"][0]["old"], newest.as_str(), "{doc}");
    let new_id = str_field(&doc["changed"][0], "new").to_owned();
    let after = b.snapshots();
    assert_eq!(after.len(), 3);
    assert!(
        by_id(&after, &newest).is_none(),
        "the old snapshot is forgotten"
    );
    let new = by_id(&after, &new_id).expect("the new snapshot is listed");
    assert_eq!(new["tags"], serde_json::json!(["service=b", "keep=yes"]));
    for field in ["tree", "time", "host", "paths", "parent", "summary"] {
        assert_eq!(new[field], before[2][field], "{field}");
    }

    // Two snapshots selected by tag; a second run changes nothing.
    let out = b.run([
        "tag",
        "--tag",
        "service=a",
        "--remove",
        "service=a",
        "--add",
        "service=c",
    ]);
    out.ok();
    assert!(
        out.stdout.contains("2 snapshot(s) changed, 0 already"),
        "{out}"
    );
    let out = b.run(["tag", "--tag", "service=c", "--add", "service=c"]);
    out.ok();
    assert!(
        out.stdout.contains("0 snapshot(s) changed, 2 already"),
        "{out}"
    );
    let tags: Vec<serde_json::Value> = b.snapshots().iter().map(|s| s["tags"].clone()).collect();
    assert_eq!(
        tags.iter()
            .filter(|t| **t == serde_json::json!(["service=c"]))
            .count(),
        2,
        "{tags:?}"
    );
    b.run(["check", "--read-data"]).ok();
    b.restore("latest", &t.join("r")).ok();
    assert_eq!(
        fs::read(under(&t.join("r"), &src.join("f"))).expect("restored"),
        b"tagged\n"
    );

    // Audited, as forget is.
    let audit = b.run(["audit", "--json"]);
    audit.ok();
    let tags_audited = audit
        .json()
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["operation"] == "tag" && r["outcome"] == "succeeded")
        .count();
    assert_eq!(tags_audited, 3, "{audit}");

    // Nothing to change, or no snapshots named: refused before anything is written.
    b.run(["tag", "latest"]).code(1);
    let out = b.run(["tag", "--add", "x=y"]);
    out.code(1);
    assert!(out.stderr.contains("name the snapshots"), "{out}");
}

#[test]
fn stats_counts_shared_data_once_and_what_prune_would_remove() {
    let t = TestDir::new();
    let src = t.join("src");
    // Two copies of one file (deduplicated), a random file, and a compressible one whose
    // chunks never repeat (four letters at random).
    write_random_file(&src.join("a/copy1.bin"), 7, 300_000);
    write_random_file(&src.join("b/copy2.bin"), 7, 300_000);
    write_random_file(&src.join("random.bin"), 8, 200_000);
    let letters: Vec<u8> = random_bytes(9, 1 << 20)
        .iter()
        .map(|b| b"ACGT"[usize::from(b & 3)])
        .collect();
    write_file(&src.join("letters.txt"), &letters);
    let unique: u64 = 300_000 + 200_000 + (1 << 20);
    let total: u64 = unique + 300_000;
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    b.backup(&[&src], &[]).ok();

    let out = b.run(["--json", "stats"]);
    out.ok();
    let doc = out.json();
    assert_eq!(doc["snapshots"], 2, "{doc}");
    assert_eq!(doc["files"], 8, "{doc}");
    assert_eq!(doc["restore_bytes"].as_u64(), Some(2 * total), "{doc}");
    // Each unique byte once, however many files and snapshots hold it.
    assert_eq!(doc["data"]["raw_bytes"].as_u64(), Some(unique), "{doc}");
    let stored = doc["data"]["stored_bytes"].as_u64().unwrap_or(0);
    assert!(stored < unique * 3 / 4 && stored > 500_000, "{doc}");
    let dedup = doc["deduplication_ratio"].as_f64().unwrap_or(0.0);
    assert!(
        (dedup - (2 * total) as f64 / unique as f64).abs() < 1e-9,
        "{doc}"
    );
    // The storage side is what is on disk.
    let on_disk = |kind: &str| -> u64 {
        repo_objects(b.repo(), kind)
            .iter()
            .map(|name| fs::metadata(b.repo().join(name)).expect("stat").len())
            .sum()
    };
    let kinds = &doc["repository"]["by_kind"];
    for kind in ["data", "tree", "index", "snapshots"] {
        assert_eq!(
            kinds[kind]["bytes"].as_u64(),
            Some(on_disk(kind)),
            "{kind}: {doc}"
        );
    }
    assert_eq!(kinds["snapshots"]["objects"], 2, "{doc}");
    let unreferenced = &doc["repository"]["unreferenced"];
    assert_eq!(unreferenced["data"]["blobs"], 0, "{doc}");
    assert_eq!(unreferenced["trees"]["blobs"], 0, "{doc}");

    // A forgotten snapshot's own data is unreferenced until prune removes it.
    write_random_file(&src.join("later.bin"), 10, 100_000);
    let third = b.backup(&[&src], &["--json"]);
    third.ok();
    b.run(["forget", str_field(&third.json(), "short_id")]).ok();
    let doc = b.run(["--json", "stats"]).json();
    assert_eq!(doc["snapshots"], 2, "{doc}");
    let unreferenced = &doc["repository"]["unreferenced"];
    assert_eq!(unreferenced["data"]["raw_bytes"], 100_000, "{doc}");
    assert!(unreferenced["trees"]["blobs"].as_u64() > Some(0), "{doc}");

    // One snapshot: half the restore size, the same unique data; unreferenced is unknown.
    let doc = b.run(["--json", "stats", "latest"]).json();
    assert_eq!(doc["snapshots"], 1, "{doc}");
    assert_eq!(doc["restore_bytes"].as_u64(), Some(total), "{doc}");
    assert_eq!(doc["data"]["raw_bytes"].as_u64(), Some(unique), "{doc}");
    assert!(doc["repository"]["unreferenced"].is_null(), "{doc}");
    let text = b.run(["stats", "--host", "no-such-host"]);
    text.ok();
    assert!(text.stdout.starts_with("snapshots      0\n"), "{text}");

    // Lost tree packs: what lies below is not counted, and that is damage (exit 4).
    for name in repo_objects(b.repo(), "tree") {
        fs::remove_file(b.repo().join(name)).expect("remove a tree pack");
    }
    let out = b.run(["stats"]);
    out.code(4);
    assert!(out.stderr.contains("is not counted"), "{out}");
}

#[test]
fn restore_include_and_exclude_bring_back_exactly_what_matches() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("etc/app.conf"), b"a=1\n");
    write_file(&src.join("etc/passwd"), b"root:x:0:0\n");
    write_random_file(&src.join("srv/keep/data.bin"), 11, 300_000);
    write_file(&src.join("srv/keep/cache/junk"), b"junk\n");
    write_file(&src.join("srv/keep/old.tmp"), b"tmp\n");
    write_file(&src.join("srv/other/x.conf.tmp"), b"x\n");
    write_file(&src.join("var/empty.log"), b"log\n");
    chmod(&src.join("etc"), 0o750);
    set_all_mtimes(&src, 1_600_000_000);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    let target = t.join("restore");
    let keep = format!("{}/srv/keep", src.display());
    let cache = format!("{keep}/cache");
    let out = b.run([
        "restore",
        "latest",
        "--target",
        s(&target),
        "--include",
        "*.conf",
        "--include",
        &keep,
        "--exclude",
        &cache,
        "--exclude",
        "*.tmp",
    ]);
    out.ok();
    let restored = under(&target, &src);
    let mut found: Vec<String> = walk_relative(&restored);
    found.sort();
    assert_eq!(
        found,
        [
            "etc",
            "etc/app.conf",
            "srv",
            "srv/keep",
            "srv/keep/data.bin"
        ],
        "{out}"
    );
    for rel in ["etc/app.conf", "srv/keep/data.bin"] {
        assert_eq!(
            fs::read(restored.join(rel)).expect("read restored"),
            fs::read(src.join(rel)).expect("read source"),
            "{rel}"
        );
    }
    // The directories on the way carry their own metadata.
    let (was, now) = (
        fs::metadata(src.join("etc")).expect("stat"),
        fs::metadata(restored.join("etc")).expect("stat"),
    );
    assert_eq!(
        (now.mode() & 0o7777, now.mtime()),
        (was.mode() & 0o7777, was.mtime())
    );
    assert!(out.stdout.contains("2 files"), "{out}");

    // A directory already in the target that the includes look through and restore
    // nothing into keeps its mode (the restore opens it up to look, then closes it again).
    write_file(&restored.join("var/mine"), b"the target's own\n");
    chmod(&restored.join("var"), 0o555);
    b.run([
        "restore",
        "latest",
        "--target",
        s(&target),
        "--include",
        "*.conf",
    ])
    .ok();
    let var = fs::metadata(restored.join("var")).expect("stat var");
    assert_eq!(var.mode() & 0o7777, 0o555);
    assert_eq!(
        fs::read(restored.join("var/mine")).expect("read"),
        b"the target's own\n"
    );
    chmod(&restored.join("var"), 0o755);

    // Excludes alone; a path inside the snapshot as the restore's root.
    let target = t.join("restore2");
    let inside = format!("latest:{}/srv", src.display());
    b.run([
        "restore",
        &inside,
        "--target",
        s(&target),
        "--exclude",
        "keep",
    ])
    .ok();
    assert_eq!(walk_relative(&target), ["other", "other/x.conf.tmp"]);

    // Patterns need a directory target.
    b.run(["restore", "latest", "--stdout", "--include", "x"])
        .code(2);
}

/// The paths below `root`, relative to it, in walk order.
fn walk_relative(root: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path.strip_prefix(root).expect("below root");
            out.push(rel.to_string_lossy().into_owned());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out
}

#[test]
fn completion_scripts_name_every_command_and_bash_loads_its_own() {
    let t = TestDir::new();
    let b = t.bunker().with_repo(None);
    let bash = b.run(["completion", "bash"]);
    bash.ok();
    for word in [
        "restore",
        "mount",
        "rewrite",
        "--delete",
        "--dry-run",
        "--refresh",
    ] {
        assert!(
            bash.stdout.contains(word),
            "{word} missing from the bash script"
        );
    }
    let script = t.join("bunker.bash");
    write_file(&script, bash.stdout.as_bytes());
    // bash parses it and registers the completion for `bunker`.
    let loaded = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p bunker", s(&script)))
        .output()
        .expect("run bash");
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    assert!(String::from_utf8_lossy(&loaded.stdout).contains("_bunker"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let out = b.run(["completion", shell]);
        out.ok();
        assert!(out.stdout.contains("rewrite"), "{shell}: {out}");
    }
    b.run(["completion", "tcsh"]).code(2);

    // bunker-agent has its own, which needs no policy file.
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_bunker-agent"))
        .args(["--config", "/nonexistent/agent.toml", "completion", "bash"])
        .output()
        .expect("run bunker-agent");
    assert!(agent.status.success(), "{agent:?}");
    let script = String::from_utf8_lossy(&agent.stdout);
    for word in ["drill", "thaw", "--once"] {
        assert!(
            script.contains(word),
            "{word} missing from bunker-agent's script"
        );
    }
    // The freeze's internal watchdog is no command to offer.
    assert!(!script.contains("watchdog"), "{script}");
}

#[test]
fn skip_if_unchanged_writes_no_snapshot_until_something_changes() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("a.txt"), b"quiet tree\n");
    write_random_file(&src.join("sub/b.bin"), 5, 100_000);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    let first = str_field(&b.snapshots()[0], "id").to_owned();
    // The directories on the way to the source change (the cache made beside it, other
    // tests in /tmp): not what was backed up.
    write_file(&t.join("beside-the-source"), b"x");

    let quiet = b.backup(&[&src], &["--skip-if-unchanged", "--json"]);
    quiet.ok();
    let quiet = quiet.json();
    assert_eq!(quiet["skipped"], true, "{quiet}");
    assert!(quiet["snapshot_id"].is_null(), "{quiet}");
    assert_eq!(str_field(&quiet, "parent"), first);
    assert_eq!(b.snapshots().len(), 1);
    let text = b.backup(&[&src], &["--skip-if-unchanged"]);
    text.ok();
    assert!(
        text.stdout.contains("nothing changed since snapshot"),
        "{text}"
    );
    assert_eq!(b.snapshots().len(), 1);

    // A change of metadata alone is a change.
    chmod(&src.join("a.txt"), 0o600);
    let changed = b.backup(&[&src], &["--skip-if-unchanged", "--json"]);
    changed.ok();
    assert_eq!(changed.json()["skipped"], false, "{changed}");
    assert_eq!(b.snapshots().len(), 2);
    let target = t.join("restore");
    b.restore("latest", &target).ok();
    compare_trees(&src, &under(&target, &src));
}

#[test]
fn snapshots_group_by_lists_each_group_with_its_newest() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("f"), b"grouped\n");
    let b = t.bunker();
    b.init();
    for (host, tag, time) in [
        ("web1", "env=prod", "2026-01-01T00:00:00Z"),
        ("web2", "env=prod", "2026-01-02T00:00:00Z"),
        ("web1", "env=test", "2026-01-03T00:00:00Z"),
        ("web1", "env=prod", "2026-01-04T00:00:00Z"),
    ] {
        b.backup(&[&src], &["--host", host, "--tag", tag, "--time", time])
            .ok();
    }
    let all = b.snapshots();
    let id_at = |day: &str| {
        all.iter()
            .find(|snap| str_field(snap, "time").starts_with(day))
            .map(|snap| str_field(snap, "id").to_owned())
            .expect("a snapshot of that day")
    };

    let out = b.run(["--json", "snapshots", "--group-by", "host", "--latest", "1"]);
    out.ok();
    let groups: Vec<(String, Vec<String>)> = out
        .json()
        .as_array()
        .expect("groups")
        .iter()
        .map(|group| {
            let ids = group["snapshots"]
                .as_array()
                .expect("snapshots")
                .iter()
                .map(|snap| str_field(snap, "id").to_owned())
                .collect();
            (str_field(&group["group_key"], "host").to_owned(), ids)
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("web1".to_owned(), vec![id_at("2026-01-04")]),
            ("web2".to_owned(), vec![id_at("2026-01-02")]),
        ]
    );

    let out = b.run(["snapshots", "-g", "host,tags"]);
    out.ok();
    let headings: Vec<&str> = out
        .stdout
        .lines()
        .filter(|line| line.starts_with("snapshots of"))
        .collect();
    assert_eq!(
        headings,
        [
            "snapshots of host web1, tags env=prod:",
            "snapshots of host web1, tags env=test:",
            "snapshots of host web2, tags env=prod:",
        ],
        "{out}"
    );
    assert_eq!(out.stdout.matches("2 snapshots").count(), 1, "{out}");
    b.run(["snapshots", "-g", "colour"]).code(2);
}

/// `ls --long` shows each entry as `ls -l` would: kind and permissions (special bits
/// included), owner, group, size, the modification time in the local zone, and a link's
/// target.
#[test]
fn ls_long_shows_modes_as_ls_does_with_sizes_times_and_link_targets() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(src.join("shared")).expect("mkdir");
    write_file(&src.join("f"), b"hello");
    chmod(&src.join("f"), 0o644);
    write_file(&src.join("tool"), b"#!/bin/sh\n");
    chmod(&src.join("tool"), 0o4755);
    chmod(&src.join("shared"), 0o1777);
    std::os::unix::fs::symlink("f", src.join("link")).expect("symlink");
    mkfifo(&src.join("pipe"));
    chmod(&src.join("pipe"), 0o644);
    for name in ["f", "tool", "shared", "link", "pipe"] {
        set_mtime(&src.join(name), 1_600_000_000, 0);
    }
    let b = t.bunker().with_env("TZ", "UTC");
    b.init().ok();
    b.backup(&[&src], &[]).ok();
    let out = b.run(["ls", &format!("latest:{}", s(&src)), "--long"]);
    out.ok();
    let expected = [
        ("f", "-rw-r--r--", "5", ""),
        ("tool", "-rwsr-xr-x", "10", ""),
        ("shared", "drwxrwxrwt", "0", ""),
        ("link", "lrwxrwxrwx", "1", " -> f"),
        ("pipe", "prw-r--r--", "0", ""),
    ];
    for (name, mode, size, suffix) in expected {
        let path = format!("{}/{name}", s(&src));
        let line = out
            .stdout
            .lines()
            .find(|line| line.ends_with(&format!(" {path}{suffix}")))
            .unwrap_or_else(|| panic!("no line for {path} in:\n{}", out.stdout));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[0], mode, "{line}");
        assert_eq!(
            fields.len(),
            7 + suffix.split_whitespace().count(),
            "{line}"
        );
        assert_eq!(fields[3], size, "{line}");
        assert_eq!(&fields[4..6], ["2020-09-13", "12:26:40"], "{line}");
    }
}

/// `backup --fixed-chunks 64K`: a file rewritten in place a page at a time re-stores only
/// the chunk holding the changed page, where content-defined chunks re-store about 1 MiB;
/// files not read again keep their chunks, and everything restores byte for byte.
#[test]
fn fixed_chunks_re_store_only_the_chunk_of_a_changed_page() {
    let t = TestDir::new();
    let src = t.join("src");
    fs::create_dir_all(&src).expect("src");
    let mut table = vec![0u8; (4 << 20) + 5000];
    XorShift::new(7).fill(&mut table);
    fs::write(src.join("table"), &table).expect("table");
    let mut other = vec![0u8; 3 << 20];
    XorShift::new(8).fill(&mut other);
    fs::write(src.join("other"), &other).expect("other");
    age_files(&src);
    let b = t.bunker();
    b.init();
    let summary = |out: &Output| out.json()["summary"].clone();

    let first = b.backup(&[&src], &["--fixed-chunks", "64K", "--json"]);
    first.ok();
    // 65 chunks of the table (the last 5000 bytes), 48 of the other file.
    assert_eq!(
        u64_field(&summary(&first), "data_blobs_added"),
        65 + 48,
        "{first}"
    );

    // One 8 KiB page of the table rewritten in place, in its 17th chunk.
    let page = (16 << 16) + (3 << 13);
    let mut new_page = vec![0u8; 8 << 10];
    XorShift::new(9).fill(&mut new_page);
    table[page..page + new_page.len()].copy_from_slice(&new_page);
    fs::write(src.join("table"), &table).expect("rewrite table");
    let second_table = table.clone();
    let second = b.backup(&[&src], &["--fixed-chunks", "64K", "--json"]);
    second.ok();
    let s = summary(&second);
    assert_eq!(u64_field(&s, "files_changed"), 1, "{second}");
    assert_eq!(u64_field(&s, "data_blobs_added"), 1, "{second}");
    // The chunk, and the four trees on the way to it.
    let added = u64_field(&s, "bytes_added");
    assert!(((64 << 10)..(72 << 10)).contains(&added), "{second}");

    // Without the option the changed file is cut by content: a chunk of about 1 MiB (at
    // least the chunker's 512 KiB minimum) is re-stored for the same kind of change.
    XorShift::new(10).fill(&mut new_page);
    table[page..page + new_page.len()].copy_from_slice(&new_page);
    fs::write(src.join("table"), &table).expect("rewrite table again");
    let third = b.backup(&[&src], &["--json"]);
    third.ok();
    assert!(
        u64_field(&summary(&third), "bytes_added") >= 512 << 10,
        "{third}"
    );

    for (snapshot, expected) in [("latest~1", &second_table), ("latest", &table)] {
        let target = t.join(format!("restore-{snapshot}"));
        b.restore(snapshot, &target).ok();
        let restored = under(&target, &src);
        assert!(fs::read(restored.join("table")).expect("table") == *expected);
        assert!(fs::read(restored.join("other")).expect("other") == other);
    }
    b.run(["check", "--read-data"]).ok();

    let refused = b.backup(&[&src], &["--fixed-chunks", "48K"]);
    refused.code(2);
    assert!(
        refused
            .all()
            .contains("not a power of two from 4 KiB to 8 MiB"),
        "{refused}"
    );
}

#[test]
fn a_mount_point_where_the_snapshot_has_a_file_is_never_emptied() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("data"), b"a file in the snapshot\n");
    write_file(&src.join("logs"), b"another file in the snapshot\n");
    write_file(&src.join("kept"), b"restored\n");
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();

    // In the target, `data` is a mounted filesystem and `logs` a directory holding one.
    let target = t.join("target");
    let restored = under(&target, &src);
    let data = restored.join("data");
    let nested = restored.join("logs/archive");
    let test = "the mount point replacement test";
    let Some(_data_mount) = tmpfs_or_skip(&data, test) else {
        return;
    };
    let Some(_nested_mount) = tmpfs_or_skip(&nested, test) else {
        return;
    };
    write_file(&data.join("on-the-mount"), b"elsewhere\n");
    write_file(&nested.join("on-the-mount"), b"elsewhere too\n");
    write_file(
        &restored.join("logs/beside"),
        b"on the target's filesystem\n",
    );

    let out = b.restore("latest", &target);
    out.code(5);
    for (path, mount) in [(&data, &data), (&restored.join("logs"), &nested)] {
        assert!(
            out.stderr.contains(&format!(
                "{}: could not replace: {} is on another filesystem (a mount point): nothing \
                 removed",
                s(path),
                s(mount)
            )),
            "{out}"
        );
    }
    assert_eq!(
        fs::read(data.join("on-the-mount")).expect("left"),
        b"elsewhere\n"
    );
    assert_eq!(
        fs::read(nested.join("on-the-mount")).expect("left"),
        b"elsewhere too\n"
    );
    assert!(restored.join("logs/beside").exists(), "nothing removed");
    assert_eq!(
        fs::read(restored.join("kept")).expect("restored"),
        b"restored\n"
    );
}
