//! `bunker report`: ages against the RPO, drill outcomes from `verify` audit records, the
//! out-of-policy list, cost per service/env tag, and the HTML page rendered in headless
//! Chromium (DOM rows, one chart mark per snapshot and drill, chart colour on screen).
//!
//! The drill results are written the way `bunker verify` and the agent's drills write them
//! (an `AuditRecord` of operation `verify` stored with `audit::store`), so these tests do
//! not depend on the drill code.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bunker_repo_format::audit::{AuditRecord, store};
use bunker_repo_format::backend::LocalBackend;
use bunker_repo_format::tree::Timestamp;
use bunker_repo_format::{Repository, SnapshotId};
use common::*;
use serde_json::Value;

const HOUR: i64 = 3600;
const SCRIPT_TAG: &str = "<script>alert(1)</script>";

const POLICY: &str = r#"
[repository]
url = "/var/lib/bunker/repo"
password_file = "/etc/bunker/password"

[[source]]
name = "web-files"
kind = "paths"
paths = ["/srv/web"]
schedule = "0 * * * *"
rpo = "2h"
tags = { service = "web", env = "prod" }
verify = { schedule = "0 4 * * *", window = "8d" }

[[source]]
name = "orders-db"
kind = "command"
command = "pg_dump -Fc orders"
template = "database"
tags = { service = "orders", env = "prod" }

[[source]]
name = "logs-volume"
kind = "volume"
device = "/dev/vdz"
template = "volume"
"#;

/// A repository with snapshots of several sources and two drills, and its policy file.
struct Fixture {
    t: TestDir,
    b: Bunker,
    policy: PathBuf,
    now: i64,
    /// Snapshot JSON by source name (`laptop` for the untagged one), oldest first.
    snapshots: BTreeMap<String, Vec<Value>>,
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

fn rfc3339(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .expect("report test fixture")
        .to_string()
}

impl Fixture {
    fn new() -> Fixture {
        let t = TestDir::new();
        let b = t.bunker();
        b.init();
        let now = now();
        let data = t.join("web");
        fs::create_dir_all(&data).expect("report test fixture");
        let mut rng = XorShift::new(7);
        let mut snapshots: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        // web-files: three backups, each adding 64 KiB of new data; the newest 1h old.
        for (i, age) in [50, 26, 1].into_iter().enumerate() {
            let mut chunk = vec![0u8; 65536];
            rng.fill(&mut chunk);
            fs::write(data.join(format!("part{i}")), &chunk).expect("report test fixture");
            let out = b.backup(
                &[&data],
                &[
                    "--json",
                    "--tag",
                    "source=web-files",
                    "--tag",
                    "service=web",
                    "--tag",
                    "env=prod",
                    "--time",
                    &rfc3339(now - age * HOUR),
                ],
            );
            out.ok();
            snapshots
                .entry("web-files".into())
                .or_default()
                .push(out.json());
        }
        // orders-db: two dumps, the newest 4h old (RPO 2h), not application-consistent.
        for (i, age) in [5, 4].into_iter().enumerate() {
            let command = format!("head -c {} /dev/urandom", 20_000 + i * 1000);
            let out = b.run([
                "backup",
                "--json",
                "--stdin-from-command",
                &command,
                "--stdin-filename",
                "orders.dump",
                "--tag",
                "source=orders-db",
                "--tag",
                "service=orders",
                "--tag",
                "env=prod",
                "--time",
                &rfc3339(now - age * HOUR),
            ]);
            out.ok();
            snapshots
                .entry("orders-db".into())
                .or_default()
                .push(out.json());
        }
        // cache: a source the policy does not know, with a hostile tag value.
        let cache = t.join("cache-data");
        fs::create_dir_all(&cache).expect("report test fixture");
        fs::write(cache.join("c"), b"cached").expect("report test fixture");
        let service = format!("service={SCRIPT_TAG}");
        let out = b.backup(
            &[&cache],
            &[
                "--json",
                "--tag",
                "source=cache",
                "--tag",
                &service,
                "--tag",
                "env=dev",
                "--time",
                &rfc3339(now - 2 * HOUR),
            ],
        );
        out.ok();
        snapshots
            .entry("cache".into())
            .or_default()
            .push(out.json());
        // An untagged backup from another host.
        let home = t.join("home");
        fs::create_dir_all(&home).expect("report test fixture");
        fs::write(home.join("notes"), b"notes").expect("report test fixture");
        let out = b.backup(
            &[&home],
            &[
                "--json",
                "--host",
                "laptop",
                "--time",
                &rfc3339(now - 3 * HOUR),
            ],
        );
        out.ok();
        snapshots
            .entry("laptop".into())
            .or_default()
            .push(out.json());

        let policy = t.join("agent.toml");
        fs::write(&policy, POLICY).expect("report test fixture");
        b.run([
            "policy",
            "check",
            policy.to_str().expect("report test fixture"),
        ])
        .ok();

        let fixture = Fixture {
            t,
            b,
            policy,
            now,
            snapshots,
        };
        fixture.add_drills();
        fixture
    }

    fn id(&self, source: &str, i: usize) -> String {
        str_field(&self.snapshots[source][i], "snapshot_id").to_owned()
    }

    /// A passing drill of web-files' newest snapshot, a failed one of orders-db's.
    fn add_drills(&self) {
        let backend = LocalBackend::open(self.b.repo()).expect("report test fixture");
        let repo =
            Repository::open(Arc::new(backend), PASSWORD.as_bytes()).expect("report test fixture");
        let record = |source: &str, snapshot: String, ago: i64, passed: bool| {
            let mut details = vec![
                ("source".to_owned(), source.to_owned()),
                ("kind".to_owned(), "files".to_owned()),
                ("drill".to_owned(), "agent".to_owned()),
                ("restore_ms".to_owned(), "1200".to_owned()),
                ("verify_ms".to_owned(), "300".to_owned()),
                ("files".to_owned(), "3".to_owned()),
                ("bytes".to_owned(), "196608".to_owned()),
            ];
            if !passed {
                details.push(("failure".to_owned(), "mismatch".to_owned()));
                details.push((
                    "error".to_owned(),
                    "/orders.dump: content differs at byte 4096".to_owned(),
                ));
            }
            AuditRecord {
                time: Timestamp {
                    sec: self.now - ago,
                    nsec: 0,
                },
                host: "drill-host".into(),
                user: "root".into(),
                operation: "verify".into(),
                target: "/tmp/bunker-drill".into(),
                outcome: if passed { "passed" } else { "failed" }.into(),
                duration_ms: 1600,
                snapshot: Some(snapshot.parse::<SnapshotId>().expect("report test fixture")),
                details,
            }
        };
        for r in [
            record("web-files", self.id("web-files", 2), 1800, true),
            record("orders-db", self.id("orders-db", 1), 600, false),
        ] {
            store(repo.backend().as_ref(), repo.writer_key(), &r).expect("report test fixture");
        }
    }

    fn report(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "report",
            "--policy",
            self.policy.to_str().expect("report test fixture"),
        ];
        args.extend_from_slice(extra);
        self.b.run(args)
    }
}

fn row<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["sources"]
        .as_array()
        .expect("report test fixture")
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name:?} in {report}"))
}

fn reasons(row: &Value) -> Vec<&str> {
    row["out_of_policy"]
        .as_array()
        .expect("report test fixture")
        .iter()
        .map(|r| r.as_str().expect("report test fixture"))
        .collect()
}

fn stored(snapshot: &Value) -> u64 {
    u64_field(&snapshot["summary"], "bytes_stored")
}

#[test]
fn json_report_ages_drills_findings_and_cost() {
    let f = Fixture::new();
    let out = f.report(&["--json"]);
    out.ok();
    let report = out.json();
    let names: Vec<&str> = report["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    let laptop = format!("laptop:{}", f.t.join("home").display());
    assert_eq!(
        names,
        [
            "web-files",
            "orders-db",
            "logs-volume",
            "cache",
            laptop.as_str()
        ],
        "policy sources in file order, then the others: {out}"
    );

    let web = row(&report, "web-files");
    assert_eq!(web["in_policy"], true);
    assert_eq!(web["snapshots"], 3);
    assert_eq!(web["rpo_seconds"], 7200);
    assert_eq!(web["rpo_status"], "ok");
    assert_eq!(
        web["last_backup"]["snapshot"],
        f.id("web-files", 2).as_str()
    );
    let age = web["last_backup"]["age_seconds"].as_i64().unwrap();
    assert!((HOUR..HOUR + 120).contains(&age), "age {age}");
    assert_eq!(web["drill_status"], "passed");
    assert_eq!(web["last_passing_drill"]["restore_ms"], 1200);
    assert_eq!(web["last_passing_drill"]["verify_ms"], 300);
    assert_eq!(web["last_passing_drill"]["within_window"], true);
    assert_eq!(web["last_passing_drill"]["drill"], "agent");
    assert_eq!(web["verify_window_seconds"], 8 * 24 * HOUR);
    assert_eq!(web["expected_consistency"], Value::Null);
    assert!(reasons(web).is_empty(), "{web}");
    assert_eq!(web["history"].as_array().unwrap().len(), 3);

    let db = row(&report, "orders-db");
    assert_eq!(db["template"], "database");
    assert_eq!(db["kind"], "stream");
    assert_eq!(db["rpo_status"], "late");
    let age = db["last_backup"]["age_seconds"].as_i64().unwrap();
    assert!((4 * HOUR..4 * HOUR + 120).contains(&age), "age {age}");
    assert_eq!(db["last_backup"]["consistency"], "none");
    assert_eq!(db["expected_consistency"], "application");
    assert_eq!(db["drill_status"], "failed");
    assert_eq!(db["last_passing_drill"], Value::Null);
    assert_eq!(db["last_drill"]["failure"], "mismatch");
    assert_eq!(
        reasons(db),
        [
            "backup-older-than-rpo",
            "no-passing-drill-in-window",
            "last-drill-failed",
            "consistency-below-expected"
        ]
    );

    let volume = row(&report, "logs-volume");
    assert_eq!(volume["snapshots"], 0);
    assert_eq!(volume["kind"], "volume");
    assert_eq!(volume["drill_status"], "never");
    assert_eq!(reasons(volume), ["no-backup", "no-passing-drill-in-window"]);

    let cache = row(&report, "cache");
    assert_eq!(cache["in_policy"], false);
    assert_eq!(cache["service"], SCRIPT_TAG);
    assert_eq!(cache["rpo_status"], "no-rpo");
    assert!(reasons(cache).is_empty());
    assert_eq!(row(&report, &laptop)["host"], "laptop");

    // The flat list has every reason once, and names the damaged path.
    let findings = report["out_of_policy"].as_array().unwrap();
    assert_eq!(findings.len(), 6, "{report}");
    let failed = findings
        .iter()
        .find(|f| f["reason"] == "last-drill-failed")
        .unwrap();
    let detail = failed["detail"].as_str().unwrap();
    assert!(
        detail.contains("/orders.dump") && detail.contains("mismatch"),
        "{detail}"
    );

    // Cost: sums of bytes_stored of the snapshots carrying each tag value.
    let sum = |names: &[&str]| -> u64 {
        names
            .iter()
            .flat_map(|n| f.snapshots[*n].iter())
            .map(stored)
            .sum()
    };
    let cost = |tag: &str, value: Value| -> u64 {
        let entry = report["cost"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["tag"] == tag)
            .unwrap()["values"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["value"] == value)
            .unwrap_or_else(|| panic!("no {tag}={value} in {report}"))
            .clone();
        u64_field(&entry, "bytes_stored")
    };
    assert!(
        sum(&["web-files"]) > 3 * 65536 / 2,
        "web stored {}",
        sum(&["web-files"])
    );
    assert_eq!(cost("service", "web".into()), sum(&["web-files"]));
    assert_eq!(cost("service", "orders".into()), sum(&["orders-db"]));
    assert_eq!(cost("service", SCRIPT_TAG.into()), sum(&["cache"]));
    assert_eq!(cost("service", Value::Null), sum(&["laptop"]));
    assert_eq!(cost("env", "prod".into()), sum(&["web-files", "orders-db"]));
    assert_eq!(
        u64_field(&report, "total_bytes_stored"),
        sum(&["web-files", "orders-db", "cache", "laptop"])
    );

    // Out of policy is not an error unless --strict asks for it.
    f.report(&["--strict"]).code(23);
    let text = f.report(&[]);
    text.ok();
    assert!(text.stdout.contains("Out of policy (6):"), "{text}");
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("orders-db") && l.contains("late") && l.contains("failed")),
        "{text}"
    );
    assert!(text.stdout.contains("service=web"), "{text}");
}

#[test]
fn without_a_policy_rows_come_from_source_tags_and_host_paths() {
    let f = Fixture::new();
    if Path::new("/etc/bunker/agent.toml").exists() {
        note("/etc/bunker/agent.toml exists: the policy-less report cannot be tested here");
        return;
    }
    let out = f.b.run(["report", "--json"]);
    out.ok();
    let report = out.json();
    assert_eq!(report["policy"], Value::Null);
    let rows = report["sources"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "{report}");
    assert!(rows.iter().all(|r| r["in_policy"] == false));
    assert!(rows.iter().all(|r| r["rpo_seconds"].is_null()));
    // Without windows and RPOs only the failed drill is out of policy.
    let findings = report["out_of_policy"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{report}");
    assert_eq!(findings[0]["source"], "orders-db");
    assert_eq!(findings[0]["reason"], "last-drill-failed");
    f.b.run(["report", "--strict"]).code(23);
}

#[test]
fn an_unreadable_snapshot_is_a_finding_not_a_failure() {
    let f = Fixture::new();
    let older = f
        .snapshots
        .values()
        .find(|list| list.len() > 1)
        .map(|list| str_field(&list[0], "snapshot_id").to_owned())
        .expect("a source with two snapshots");
    flip_byte(&f.b.repo().join(format!("snapshots/{older}")), 40);
    let out = f.report(&["--json"]);
    out.ok();
    let report = out.json();
    let findings = report["out_of_policy"].as_array().expect("findings");
    let unreadable: Vec<&Value> = findings
        .iter()
        .filter(|finding| finding["reason"] == "snapshot-unreadable")
        .collect();
    assert_eq!(unreadable.len(), 1, "{report}");
    assert_eq!(unreadable[0]["source"], format!("snapshot {}", &older[..8]));
    f.report(&["--strict"]).code(23);
}

#[test]
fn a_missing_or_invalid_policy_file_is_a_clear_error() {
    let f = Fixture::new();
    let missing = f.t.join("nope.toml");
    let out = f.b.run(["report", "--policy", missing.to_str().unwrap()]);
    out.code(1);
    assert!(out.stderr.contains("nope.toml"), "{out}");
    let bad = f.t.join("bad.toml");
    fs::write(&bad, "[[source]]\nname = 3\n").unwrap();
    let out = f.b.run(["report", "--policy", bad.to_str().unwrap()]);
    out.code(7);
    assert!(out.stderr.contains("bad.toml"), "{out}");
}

// ---------------------------------------------------------------------------------------
// HTML in headless Chromium
// ---------------------------------------------------------------------------------------

/// Runs chromium headless with `args` (killed after a minute); returns stdout.
fn chromium(profile: &Path, args: &[&str]) -> String {
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().expect("report test fixture");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut text).expect("report test fixture");
        text
    });
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("report test fixture") {
            assert!(status.success(), "chromium {args:?}: {status}");
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("chromium {args:?} did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("report test fixture")
}

fn chromium_present() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The text of the element that starts at the first occurrence of `start` up to `end`.
fn element<'a>(dom: &'a str, start: &str, end: &str) -> &'a str {
    let from = dom
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in the DOM"));
    let len = dom[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} after {start:?}"));
    &dom[from..from + len]
}

#[test]
fn html_report_renders_in_headless_chromium() {
    let f = Fixture::new();
    let page = f.t.join("report.html");
    let out = f.report(&["--html", page.to_str().unwrap()]);
    out.ok();
    assert!(out.stdout.contains("5 sources, 6 out of policy"), "{out}");
    let html = fs::read_to_string(&page).unwrap();

    // Self-contained, and the hostile tag value is escaped everywhere.
    assert!(!html.contains("<script"), "unescaped tag value in the page");
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    for external in [
        "http:", "https:", "src=", "href=", "url(", "<link", "@import",
    ] {
        assert!(!html.contains(external), "the page refers to {external}");
    }

    if !chromium_present() {
        assert!(
            !is_root(),
            "chromium is missing: scripts/test.sh installs it (apt-get install chromium)"
        );
        note("skipping the Chromium rendering: chromium is not installed and not root");
        return;
    }
    let profile = f.t.join("chromium-profile");
    let url = format!("file://{}", page.display());
    let dom = chromium(&profile, &["--dump-dom", &url]);

    // The table: one row per source, the out-of-policy ones marked.
    let table = element(&dom, "<table id=\"sources\"", "</table>");
    assert_eq!(
        table.matches("<tr class=\"source-row").count(),
        5,
        "{table}"
    );
    assert_eq!(table.matches("<tr class=\"source-row out\"").count(), 2);
    assert!(table.contains("data-source=\"orders-db\""));
    // Findings: highlighted list, one item each.
    let findings = element(&dom, "<section id=\"out-of-policy\"", "</section>");
    assert_eq!(findings.matches("<li class=\"finding\"").count(), 6);
    assert!(findings.contains("last-drill-failed"));
    // Nothing executable made it into the DOM.
    assert!(!dom.contains("<script"));
    // Charts: one mark per snapshot in the size chart, one per drill in the RTO chart.
    let marks = |class: &str, source: &str| {
        element(
            &dom,
            &format!("<svg class=\"chart {class}\" data-source=\"{source}\""),
            "</svg>",
        )
        .matches("class=\"mark")
        .count()
    };
    assert_eq!(marks("sizes", "web-files"), 3);
    assert_eq!(marks("sizes", "orders-db"), 2);
    assert_eq!(marks("sizes", "logs-volume"), 0);
    assert_eq!(marks("restores", "web-files"), 1);
    assert_eq!(marks("restores", "orders-db"), 1);
    assert_eq!(marks("restores", "cache"), 0);

    // The screenshot is a real page with the charts drawn in their colour.
    let shot = f.t.join("report.png");
    chromium(
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1400,2400",
            &url,
        ],
    );
    let mut decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(&shot).unwrap()));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (1400, 2400));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let near = |px: &[u8], rgb: [u8; 3]| px.iter().zip(rgb).all(|(a, b)| a.abs_diff(b) <= 6);
    let mut chart = 0;
    let mut colours = std::collections::HashSet::new();
    for px in pixels[..info.buffer_size()].chunks(channels) {
        colours.insert([px[0], px[1], px[2]]);
        if near(px, [0x2b, 0x6c, 0xb0]) {
            chart += 1;
        }
    }
    assert!(
        colours.len() > 20,
        "the screenshot is blank: {} colours",
        colours.len()
    );
    // Five bars of at least 3x20 pixels (two sources' snapshots) are far more than this.
    assert!(chart > 300, "only {chart} pixels in the chart colour");
}
