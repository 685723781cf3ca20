//! End-to-end `bunker forget`: retention decisions, dry runs, filters, refusals, and that
//! what remains still restores.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use common::*;
use serde_json::{Value, json};

/// The snapshots every test starts with: name, host, time, tag. Per host, newest last.
const SNAPSHOTS: [(&str, &str, &str, &str); 12] = [
    ("A1", "alpha", "2024-03-01T10:00:00Z", "env=prod"),
    ("A2", "alpha", "2024-03-02T09:00:00Z", "env=test"),
    ("A3", "alpha", "2024-03-02T18:00:00Z", "env=test"),
    ("A4", "alpha", "2024-03-03T08:00:00Z", "env=test"),
    ("A5", "alpha", "2024-03-04T07:00:00Z", "env=test"),
    ("A6", "alpha", "2024-03-04T12:00:00Z", "env=test"),
    ("A7", "alpha", "2024-03-04T23:59:59Z", "env=test"),
    ("B1", "beta", "2024-03-01T12:00:00Z", "env=test"),
    ("B2", "beta", "2024-03-02T12:00:00Z", "env=test"),
    ("B3", "beta", "2024-03-03T12:00:00Z", "env=prod"),
    ("B4", "beta", "2024-03-04T06:00:00Z", "env=test"),
    ("B5", "beta", "2024-03-04T12:00:00Z", "env=test"),
];

const ALL: [&str; 12] = [
    "A1", "A2", "A3", "A4", "A5", "A6", "A7", "B1", "B2", "B3", "B4", "B5",
];

/// The content of `stamp.txt` in snapshot `name`.
fn stamp(name: &str) -> String {
    format!("this is snapshot {name}\n")
}

const COMMON: &[u8] = b"the same in every snapshot\n";

/// One decision of `forget --json`: snapshot name, keep, reasons.
type Row = (&'static str, bool, Vec<String>);

/// The names of the snapshots kept among `rows`, newest first.
fn kept_names(rows: &[Row]) -> Vec<&'static str> {
    rows.iter().filter(|r| r.1).map(|r| r.0).collect()
}

/// [`kept_names`] of each group.
fn kept_per_group(groups: &[(Value, Vec<Row>)]) -> Vec<Vec<&'static str>> {
    groups.iter().map(|(_, rows)| kept_names(rows)).collect()
}

/// A repository holding [`SNAPSHOTS`], each of its own version of `src/stamp.txt`.
struct Fixture {
    t: TestDir,
    b: Bunker,
    src: PathBuf,
    /// Name to snapshot id.
    ids: BTreeMap<&'static str, String>,
}

impl Fixture {
    fn new() -> Self {
        let t = TestDir::new();
        let b = t.bunker();
        b.init();
        let src = t.join("src");
        write_file(&src.join("common.txt"), COMMON);
        let mut ids = BTreeMap::new();
        for (n, (name, host, time, tag)) in SNAPSHOTS.iter().enumerate() {
            let file = src.join("stamp.txt");
            write_file(&file, stamp(name).as_bytes());
            // A distinct mtime, so the files cache never takes the parent's version.
            set_mtime(&file, 1_700_000_000 + 100 * n as i64, 0);
            let out = b.backup(
                &[&src],
                &["--json", "--time", time, "--host", host, "--tag", tag],
            );
            out.ok();
            ids.insert(*name, str_field(&out.json(), "snapshot_id").to_owned());
        }
        Self { t, b, src, ids }
    }

    fn name_of(&self, id: &str) -> &'static str {
        self.ids
            .iter()
            .find(|(_, v)| v.as_str() == id)
            .map(|(k, _)| *k)
            .unwrap_or_else(|| panic!("{id} is not a fixture snapshot"))
    }

    /// Names of the snapshots in the repository, sorted.
    fn remaining(&self) -> BTreeSet<&'static str> {
        self.b
            .snapshots()
            .iter()
            .map(|s| self.name_of(str_field(s, "id")))
            .collect()
    }

    /// `forget ARGS --json`: per group, the group key and `(name, keep, reasons)` newest
    /// first. Checks the other fields of each snapshot on the way.
    fn forget_json(&self, args: &[&str]) -> Vec<(Value, Vec<Row>)> {
        let mut all = vec!["forget", "--json"];
        all.extend_from_slice(args);
        let out = self.b.run(&all);
        out.ok();
        let json = out.json();
        let groups = json
            .as_array()
            .unwrap_or_else(|| panic!("not an array\n{out}"));
        groups
            .iter()
            .map(|g| {
                let snapshots = g["snapshots"]
                    .as_array()
                    .unwrap_or_else(|| panic!("no snapshots array\n{out}"))
                    .iter()
                    .map(|s| {
                        let id = str_field(s, "id");
                        let name = self.name_of(id);
                        assert_eq!(str_field(s, "short_id"), &id[..8], "{out}");
                        let (_, _, time, _) =
                            SNAPSHOTS.iter().find(|(n, ..)| *n == name).expect("known");
                        assert_eq!(str_field(s, "time"), *time, "{out}");
                        let reasons = s["reasons"]
                            .as_array()
                            .unwrap_or_else(|| panic!("no reasons\n{out}"))
                            .iter()
                            .map(|r| r.as_str().expect("reason string").to_owned())
                            .collect();
                        let keep = s["keep"].as_bool().expect("keep is a bool");
                        (name, keep, reasons)
                    })
                    .collect();
                (g["group"].clone(), snapshots)
            })
            .collect()
    }

    /// Restores every remaining snapshot and checks it holds its own stamp.
    fn check_remaining_restore(&self) {
        let relative = self.src.strip_prefix("/").expect("absolute source");
        for name in self.remaining() {
            let target = self.t.join(format!("restore-{name}"));
            self.b.restore(&self.ids[name], &target).ok();
            let restored = target.join(relative);
            assert_eq!(
                fs::read_to_string(restored.join("stamp.txt")).expect("restored stamp"),
                stamp(name),
                "snapshot {name}"
            );
            assert_eq!(
                fs::read(restored.join("common.txt")).expect("restored common"),
                COMMON,
                "snapshot {name}"
            );
        }
    }

    fn group_key(&self, host: &str) -> Value {
        json!({ "host": host, "paths": [s(&self.src)], "tags": null })
    }
}

fn names(list: &[&'static str]) -> BTreeSet<&'static str> {
    list.iter().copied().collect()
}

type Expected<'a> = &'a [(&'static str, bool, &'a [&'a str])];

fn expect(rows: Expected<'_>) -> Vec<Row> {
    rows.iter()
        .map(|(name, keep, reasons)| {
            (
                *name,
                *keep,
                reasons.iter().map(|r| (*r).to_owned()).collect(),
            )
        })
        .collect()
}

const KEEP_DAILY_3_ALPHA: Expected<'static> = &[
    ("A7", true, &["daily"]),
    ("A6", false, &[]),
    ("A5", false, &[]),
    ("A4", true, &["daily"]),
    ("A3", true, &["daily"]),
    ("A2", false, &[]),
    ("A1", false, &[]),
];

const KEEP_DAILY_3_BETA: Expected<'static> = &[
    ("B5", true, &["daily"]),
    ("B4", false, &[]),
    ("B3", true, &["daily"]),
    ("B2", true, &["daily"]),
    ("B1", false, &[]),
];

#[test]
fn keep_daily_dry_run_decides_per_host_and_day_and_deletes_nothing() {
    let f = Fixture::new();
    let before = f.b.snapshots();
    assert_eq!(before.len(), 12);
    let objects_before = repo_objects(f.b.repo(), "snapshots");

    let groups = f.forget_json(&["--keep-daily", "3", "--dry-run"]);
    assert_eq!(
        groups,
        vec![
            (f.group_key("alpha"), expect(KEEP_DAILY_3_ALPHA)),
            (f.group_key("beta"), expect(KEEP_DAILY_3_BETA)),
        ]
    );

    let out = f.b.run(["forget", "--keep-daily", "3", "--dry-run"]);
    out.ok();
    assert!(out.stdout.contains("would remove 6 snapshots"), "{out}");
    let alpha_header = format!("host alpha, paths [{}]: keep 3, remove 4", s(&f.src));
    assert!(out.stdout.contains(&alpha_header), "{out}");
    let a7 = &f.ids["A7"][..8];
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(a7) && l.contains("2024-03-04 23:59:59") && l.contains("keep")),
        "{out}"
    );
    let a1 = &f.ids["A1"][..8];
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(a1) && l.ends_with("remove")),
        "{out}"
    );

    assert_eq!(
        f.b.snapshots(),
        before,
        "--dry-run changed the snapshot list"
    );
    assert_eq!(repo_objects(f.b.repo(), "snapshots"), objects_before);
}

#[test]
fn keep_daily_removes_exactly_the_others_and_what_remains_restores() {
    let f = Fixture::new();
    let out = f.b.run(["forget", "--keep-daily", "3"]);
    out.ok();
    assert!(out.stdout.contains("removed 6 snapshots"), "{out}");
    assert_eq!(f.remaining(), names(&["A3", "A4", "A7", "B2", "B3", "B5"]));
    assert_eq!(repo_objects(f.b.repo(), "snapshots").len(), 6);
    // Running it again changes nothing.
    let again = f.b.run(["forget", "--keep-daily", "3"]);
    again.ok();
    assert!(again.stdout.contains("removed 0 snapshots"), "{again}");
    f.b.run(["check"]).ok();
    f.check_remaining_restore();
}

#[test]
fn keep_min_protects_the_newest_of_each_group() {
    let f = Fixture::new();
    let groups = f.forget_json(&["--keep-tag", "env=prod", "--keep-min", "2"]);
    assert_eq!(
        groups,
        vec![
            (
                f.group_key("alpha"),
                expect(&[
                    ("A7", true, &["keep-min"]),
                    ("A6", true, &["keep-min"]),
                    ("A5", false, &[]),
                    ("A4", false, &[]),
                    ("A3", false, &[]),
                    ("A2", false, &[]),
                    ("A1", true, &["tag env=prod"]),
                ])
            ),
            (
                f.group_key("beta"),
                expect(&[
                    ("B5", true, &["keep-min"]),
                    ("B4", true, &["keep-min"]),
                    ("B3", true, &["tag env=prod"]),
                    ("B2", false, &[]),
                    ("B1", false, &[]),
                ])
            ),
        ]
    );
    assert_eq!(f.remaining(), names(&["A1", "A6", "A7", "B3", "B4", "B5"]));
    f.check_remaining_restore();
}

#[test]
fn keep_min_defaults_to_one() {
    let f = Fixture::new();
    // Only the prod snapshots match a rule; the newest of each host stays anyway.
    f.b.run(["forget", "--keep-tag", "env=prod"]).ok();
    assert_eq!(f.remaining(), names(&["A1", "A7", "B3", "B5"]));
}

#[test]
fn keep_tag_keeps_tagged_snapshots() {
    let f = Fixture::new();
    let groups = f.forget_json(&["--keep-last", "1", "--keep-tag", "env=prod"]);
    assert_eq!(
        groups,
        vec![
            (
                f.group_key("alpha"),
                expect(&[
                    ("A7", true, &["last"]),
                    ("A6", false, &[]),
                    ("A5", false, &[]),
                    ("A4", false, &[]),
                    ("A3", false, &[]),
                    ("A2", false, &[]),
                    ("A1", true, &["tag env=prod"]),
                ])
            ),
            (
                f.group_key("beta"),
                expect(&[
                    ("B5", true, &["last"]),
                    ("B4", false, &[]),
                    ("B3", true, &["tag env=prod"]),
                    ("B2", false, &[]),
                    ("B1", false, &[]),
                ])
            ),
        ]
    );
    assert_eq!(f.remaining(), names(&["A1", "A7", "B3", "B5"]));
    f.check_remaining_restore();
}

#[test]
fn host_filter_leaves_the_other_host_alone() {
    let f = Fixture::new();
    let groups = f.forget_json(&["--host", "beta", "--keep-last", "2"]);
    assert_eq!(
        groups,
        vec![(
            f.group_key("beta"),
            expect(&[
                ("B5", true, &["last"]),
                ("B4", true, &["last"]),
                ("B3", false, &[]),
                ("B2", false, &[]),
                ("B1", false, &[]),
            ])
        )]
    );
    assert_eq!(
        f.remaining(),
        names(&["A1", "A2", "A3", "A4", "A5", "A6", "A7", "B4", "B5"])
    );
    f.check_remaining_restore();
}

#[test]
fn tag_filter_and_group_by_nothing() {
    let f = Fixture::new();
    let groups = f.forget_json(&["--tag", "env=prod", "--group-by", "", "--keep-last", "1"]);
    assert_eq!(
        groups,
        vec![(
            json!({ "host": null, "paths": null, "tags": null }),
            expect(&[("B3", true, &["last"]), ("A1", false, &[])])
        )]
    );
    let mut left = names(&ALL);
    left.remove("A1");
    assert_eq!(f.remaining(), left);
}

#[test]
fn group_by_tags() {
    let f = Fixture::new();
    let groups = f.forget_json(&["--group-by", "tags", "--keep-last", "1", "--dry-run"]);
    let summary: Vec<(Value, Vec<&str>)> = groups
        .iter()
        .map(|(key, rows)| (key.clone(), kept_names(rows)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                json!({ "host": null, "paths": null, "tags": ["env=prod"] }),
                vec!["B3"]
            ),
            (
                json!({ "host": null, "paths": null, "tags": ["env=test"] }),
                vec!["A7"]
            ),
        ]
    );
}

#[test]
fn forget_without_a_keep_rule_fails_and_deletes_nothing() {
    let f = Fixture::new();
    let before = f.b.snapshots();
    for args in [
        &["forget"][..],
        &["forget", "--json"],
        &["forget", "--keep-min", "5"],
        &["forget", "--keep-last", "0", "--keep-daily", "0"],
        &["forget", "--host", "alpha"],
    ] {
        let out = f.b.run(args);
        out.code(1);
        assert!(
            out.stderr
                .contains("no --keep-* rule given, so nothing would be kept"),
            "{out}"
        );
        assert!(out.stdout.is_empty(), "{out}");
    }
    // A value that does not parse is a usage error, named with its option (the last two
    // arguments).
    for (args, message) in [
        (&["forget", "--keep-within", "0d"][..], "is not a duration"),
        (&["forget", "--keep-within", "3w"], "unknown unit 'w'"),
        (
            &["forget", "--keep-last", "1", "--keep-tag", "prod"],
            "a tag is KEY=VALUE",
        ),
        (
            &["forget", "--keep-last", "1", "--group-by", "hosts"],
            "cannot group by",
        ),
        (
            &["forget", "--keep-last", "1", "--prune", "--grace", "1.5h"],
            "is not a duration",
        ),
        (
            &[
                "forget",
                "--keep-last",
                "1",
                "--prune",
                "--max-unused",
                "120",
            ],
            "is not a percentage",
        ),
    ] {
        let out = f.b.run(args);
        out.code(2);
        let option = args[args.len() - 2];
        assert!(
            out.stderr.contains(message) && out.stderr.contains(option),
            "{out}"
        );
    }
    assert_eq!(f.b.snapshots(), before);
}

#[test]
fn keep_within_measures_from_the_newest_snapshot() {
    let f = Fixture::new();
    // Newest alpha: 2024-03-04T23:59:59, so within 1d keeps after 2024-03-03T23:59:59;
    // newest beta: 2024-03-04T12:00, so after 2024-03-03T12:00 (B3 is exactly on it).
    let groups = f.forget_json(&["--keep-within", "1d", "--dry-run"]);
    let kept = kept_per_group(&groups);
    assert_eq!(kept, vec![vec!["A7", "A6", "A5"], vec!["B5", "B4"]]);
    assert!(groups[0].1[0].2 == ["within 1d"]);
}

#[test]
fn keep_within_daily_keeps_one_per_day_inside_the_bound() {
    let f = Fixture::new();
    // alpha: after 2024-03-02T23:59:59, the newest of 03-04 (A7) and of 03-03 (A4);
    // beta: after 2024-03-02T12:00 (B2 is exactly on it), B5 for 03-04 and B3 for 03-03.
    let groups = f.forget_json(&["--keep-within-daily", "2d", "--dry-run"]);
    let kept = kept_per_group(&groups);
    assert_eq!(kept, vec![vec!["A7", "A4"], vec!["B5", "B3"]]);
    let a4 = groups[0].1.iter().find(|r| r.0 == "A4").expect("A4");
    assert_eq!(a4.2, ["daily within 2d"]);
    f.b.run(["forget", "--keep-within-daily", "2d"]).ok();
    assert_eq!(f.remaining(), BTreeSet::from(["A4", "A7", "B3", "B5"]));
}

#[test]
fn unreadable_snapshots_are_skipped_and_never_deleted() {
    let f = Fixture::new();
    let damaged = format!("snapshots/{}", f.ids["A2"]);
    flip_byte(&f.b.repo().join(&damaged), 60);
    let out = f.b.run(["forget", "--keep-last", "1"]);
    out.ok();
    assert!(
        out.stderr.contains("cannot be read and is left out"),
        "{out}"
    );
    assert!(out.stderr.contains(&f.ids["A2"][..8]), "{out}");
    assert!(out.stdout.contains("removed 9 snapshots"), "{out}");
    let left = repo_objects(f.b.repo(), "snapshots");
    let expected: BTreeSet<String> = ["A2", "A7", "B5"]
        .iter()
        .map(|n| format!("snapshots/{}", f.ids[n]))
        .collect();
    assert_eq!(left, expected);
}

#[test]
fn named_snapshots_are_forgotten_exactly_and_nothing_else() {
    let f = Fixture::new();
    let a2 = f.ids["A2"].clone();
    let b3_prefix = f.ids["B3"][..12].to_owned();
    let planned = f.forget_json(&["--dry-run", &a2, &b3_prefix, &a2]);
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].0, Value::Null);
    let named = vec!["named".to_owned()];
    assert_eq!(
        planned[0].1,
        vec![("A2", false, named.clone()), ("B3", false, named)]
    );
    assert_eq!(f.remaining(), names(&ALL), "a dry run removed something");

    // Rules and names do not mix; an unknown id removes nothing.
    let out = f.b.run(["forget", &a2, "--keep-last", "1"]);
    out.code(1);
    assert!(out.stderr.contains("not both"), "{out}");
    let out = f.b.run(["forget", &a2, "0000000000"]);
    out.code(1);
    assert!(out.stderr.contains("no snapshot matches"), "{out}");
    assert_eq!(f.remaining(), names(&ALL));

    let out = f.b.run(["forget", &a2, &b3_prefix]);
    out.ok();
    assert!(out.stdout.contains("removed 2 snapshots"), "{out}");
    let mut left = names(&ALL);
    left.remove("A2");
    left.remove("B3");
    assert_eq!(f.remaining(), left);
    f.check_remaining_restore();
}

#[test]
fn named_snapshots_must_match_the_filters_given() {
    let f = Fixture::new();
    // `latest` among beta's snapshots is B5, not A7 (the newest of the repository).
    let out = f.b.run(["forget", "latest", "--host", "beta"]);
    out.ok();
    let mut left = names(&ALL);
    left.remove("B5");
    assert_eq!(f.remaining(), left, "{out}");
    let out =
        f.b.run(["forget", "latest~1", "--host", "beta", "--tag", "env=test"]);
    out.ok();
    left.remove("B2");
    assert_eq!(f.remaining(), left, "{out}");

    // An id of a snapshot the filters leave out is refused, and nothing is removed.
    let a1 = f.ids["A1"].clone();
    let out = f.b.run(["forget", &a1, "--host", "beta"]);
    out.code(1);
    assert!(out.stderr.contains("does not match --host beta"), "{out}");
    assert_eq!(f.remaining(), left);
}
