//! What `bunker backup` records for the paths it is given: `..` resolved by name, a symlink
//! on the way to a path, and a path inside another one (its size and its filesystem).

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use common::*;

/// `path -> (type, mode & 0o7777)` of every entry `ls latest --json` lists.
fn listed(b: &Bunker) -> BTreeMap<String, (String, u64)> {
    let out = b.run(["ls", "latest", "--json"]);
    out.ok();
    let json = out.json();
    json.as_array()
        .expect("ls --json array")
        .iter()
        .map(|entry| {
            let mode = entry["mode"].as_u64().expect("mode") & 0o7777;
            (
                str_field(entry, "path").to_owned(),
                (str_field(entry, "type").to_owned(), mode),
            )
        })
        .collect()
}

#[test]
fn a_path_with_dot_dot_backs_up_the_directory_it_names() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("data/f"), b"the data named\n");
    write_file(
        &src.join("x/data/f"),
        b"a directory of the same name elsewhere\n",
    );
    let b = t.bunker();
    b.init();

    b.backup(&[&src.join("x/../data/.")], &[]).ok();
    let entries = listed(&b);
    assert!(entries.contains_key(s(&src.join("data/f"))), "{entries:?}");
    assert!(!entries.keys().any(|p| p.contains("/x")), "{entries:?}");
    let snapshots = b.snapshots();
    assert_eq!(
        snapshots[0]["paths"],
        serde_json::json!([s(&src.join("data"))]),
        "recorded as it names it"
    );
    // `--path` reads a path the same way.
    let out = b.run(["snapshots", "--json", "--path", s(&src.join("x/../data/"))]);
    out.ok();
    assert_eq!(out.json().as_array().expect("snapshots").len(), 1, "{out}");

    let target = t.join("restored");
    b.restore("latest", &target).ok();
    assert_eq!(
        fs::read(under(&target, &src.join("data/f"))).expect("restored"),
        b"the data named\n"
    );
}

#[test]
fn a_symlink_on_the_way_to_a_path_stands_for_the_directory_it_leads_to() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("real/sub/f"), b"below a link\n");
    chmod(&src.join("real"), 0o750);
    std::os::unix::fs::symlink("real", src.join("link")).expect("symlink");
    let b = t.bunker();
    b.init();

    b.backup(&[&src.join("link/sub")], &[]).ok();
    let entries = listed(&b);
    assert_eq!(
        entries.get(s(&src.join("link"))),
        Some(&("dir".to_owned(), 0o750)),
        "the directory the link leads to, not a directory with the link's mode 777: \
         {entries:?}"
    );
    assert!(
        entries.contains_key(s(&src.join("link/sub/f"))),
        "{entries:?}"
    );
}

#[test]
fn a_path_inside_another_is_backed_up_whatever_its_size() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("big"), &[7u8; 5000]);
    write_file(&src.join("other-big"), &[8u8; 5000]);
    write_file(&src.join("small"), b"s");
    let b = t.bunker();
    b.init();

    for paths in [[&src, &src.join("big")], [&src.join("big"), &src]] {
        let paths: Vec<&Path> = paths.iter().map(|p| p.as_path()).collect();
        b.backup(&paths, &["--exclude-larger-than", "1000"]).ok();
        let entries = listed(&b);
        assert!(
            entries.contains_key(s(&src.join("big"))),
            "{paths:?}: {entries:?}"
        );
        assert!(entries.contains_key(s(&src.join("small"))), "{entries:?}");
        assert!(
            !entries.contains_key(s(&src.join("other-big"))),
            "not named, so left out: {entries:?}"
        );
    }
}

#[test]
fn a_mount_point_named_as_a_path_is_crossed_with_one_file_system() {
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("kept.txt"), b"on the source's filesystem\n");
    let mount_point = src.join("mnt");
    let test = "the nested --one-file-system test";
    let Some(_mount) = tmpfs_or_skip(&mount_point, test) else {
        return;
    };
    write_file(
        &mount_point.join("deeper/other.txt"),
        b"on another filesystem\n",
    );
    let nested_mount = mount_point.join("deeper/nested");
    let Some(_inner_mount) = tmpfs_or_skip(&nested_mount, test) else {
        return;
    };
    write_file(&nested_mount.join("third.txt"), b"on a third filesystem\n");
    let b = t.bunker();
    b.init();

    // As `backup -x / /home`: the outer path stays on its filesystem, the inner one is a
    // path of its own and stays on its own (the mount below it is not crossed).
    let out = b.backup(&[&src, &mount_point], &["--one-file-system", "--json"]);
    out.ok();
    assert_eq!(
        out.json()["mount_points_not_crossed"],
        serde_json::json!([s(&nested_mount)]),
        "{out}"
    );
    let entries = listed(&b);
    assert!(
        entries.contains_key(s(&src.join("kept.txt"))),
        "{entries:?}"
    );
    assert!(
        entries.contains_key(s(&mount_point.join("deeper/other.txt"))),
        "{entries:?}"
    );
    assert!(entries.contains_key(s(&nested_mount)), "{entries:?}");
    assert!(
        !entries.contains_key(s(&nested_mount.join("third.txt"))),
        "{entries:?}"
    );
}
