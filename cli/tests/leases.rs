//! Self-service restores end to end: `restore --expire` records a lease, `restores` lists
//! it, `restores expire` (moved in time with BUNKER_TEST_NOW, no sleeping) and the agent
//! daemon remove exactly the leased target and audit it; restores outside the policy's
//! restore roots are refused with exit code 15.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A repository with one snapshot (tagged source=orders-db), a policy with restore roots,
/// and things outside the roots that must survive.
struct Setup {
    t: TestDir,
    b: Bunker,
    src: PathBuf,
    roots: PathBuf,
    outside: PathBuf,
    policy: PathBuf,
    snapshot: String,
}

impl Setup {
    fn new() -> Setup {
        let t = TestDir::new();
        let src = t.join("src");
        let outside = t.join("outside");
        fs::create_dir_all(src.join("conf/deep")).expect("set up the test tree");
        fs::create_dir_all(&outside).expect("set up the test tree");
        fs::write(outside.join("precious"), b"never delete me").expect("set up the test tree");
        write_random_file(&src.join("data.bin"), 7, 300_000);
        fs::write(src.join("conf/deep/app.toml"), b"port = 8080\n").expect("set up the test tree");
        // A symlink that points out of the restored tree: expiry must not follow it.
        symlink(&outside, src.join("conf/escape")).expect("set up the test tree");
        let b = t.bunker();
        b.init();
        let backup = b.backup(&[&src], &["--tag", "source=orders-db", "--json"]);
        backup.ok();
        let snapshot = str_field(&backup.json(), "snapshot_id").to_owned();
        let roots = t.join("restore");
        fs::create_dir_all(roots.join("sibling")).expect("set up the test tree");
        fs::write(roots.join("sibling/keep"), b"not leased").expect("set up the test tree");
        let password = t.join("password");
        fs::write(&password, format!("{PASSWORD}\n")).expect("set up the test tree");
        let policy = t.join("agent.toml");
        fs::write(
            &policy,
            format!(
                "[agent]\nhost = \"web-1\"\nstate_dir = \"{}\"\nrestore_roots = [\"{}\"]\n\n\
                 [repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
                 [metrics]\ntextfile = \"{}\"\n\n\
                 [[source]]\nname = \"orders-db\"\nkind = \"paths\"\npaths = [\"{}\"]\nschedule = \"0 3 * * *\"\n",
                t.join("state").display(),
                roots.display(),
                b.repo().display(),
                password.display(),
                t.join("metrics/bunker.prom").display(),
                src.display(),
            ),
        )
        .expect("leases test step");
        Setup {
            t,
            b,
            src,
            roots,
            outside,
            policy,
            snapshot,
        }
    }

    /// `SNAPSHOT:PATH` of the source tree's `sub` (e.g. "" or "/conf").
    fn spec(&self, sub: &str) -> String {
        format!("{}:{}{sub}", self.snapshot, self.src.display())
    }

    /// `bunker` at the test clock `now` (RFC 3339), following the policy.
    fn at(&self, now: &str) -> Bunker {
        self.b
            .with_env("BUNKER_TEST_NOW", now)
            .with_env("BUNKER_POLICY", &self.policy)
    }

    fn lease_files(&self) -> Vec<PathBuf> {
        let dir = self.t.join("state/restores");
        let mut files: Vec<PathBuf> = fs::read_dir(dir)
            .map(|d| d.map(|e| e.expect("read the test output").path()).collect())
            .unwrap_or_default();
        files.sort();
        files
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        let out = self.b.run(["audit", "--json"]);
        out.ok();
        out.json().as_array().expect("leases test step").clone()
    }

    fn assert_outside_intact(&self) {
        assert_eq!(
            fs::read(self.outside.join("precious")).expect("leases test step"),
            b"never delete me"
        );
        assert_eq!(
            fs::read(self.roots.join("sibling/keep")).expect("leases test step"),
            b"not leased"
        );
    }
}

fn detail<'a>(record: &'a serde_json::Value, key: &str) -> Option<&'a str> {
    record["details"]
        .as_array()?
        .iter()
        .find(|d| d["key"] == key)
        .and_then(|d| d["value"].as_str())
}

#[test]
fn a_lease_is_recorded_listed_and_expired_by_the_clock() {
    let env = Setup::new();
    let target = env.roots.join("alice/orders");
    let spec = env.spec("");
    let out = env.at("2026-11-22T10:00:00Z").run([
        "restore",
        spec.as_str(),
        "--target",
        s(&target),
        "--expire",
        "4h",
        "--owner",
        "alice",
        "--json",
    ]);
    out.ok();
    let restored = out.json();
    let lease_id = str_field(&restored, "lease").to_owned();
    assert_eq!(str_field(&restored, "expires"), "2026-11-22T14:00:00Z");
    compare_tree_contents(&env.src, &target);

    // The lease file holds every field.
    let files = env.lease_files();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(
        files[0].file_name().expect("leases test step"),
        format!("{lease_id}.json").as_str()
    );
    let lease: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&files[0]).expect("leases test step"))
            .expect("leases test step");
    assert_eq!(str_field(&lease, "id"), lease_id);
    assert_eq!(str_field(&lease, "owner"), "alice");
    assert!(!str_field(&lease, "host").is_empty());
    assert_eq!(str_field(&lease, "source"), "orders-db");
    assert_eq!(str_field(&lease, "snapshot"), env.snapshot);
    assert_eq!(str_field(&lease, "path"), s(&env.src));
    assert_eq!(str_field(&lease, "target"), s(&target));
    assert_eq!(str_field(&lease, "kind"), "files");
    assert_eq!(str_field(&lease, "created"), "2026-11-22T10:00:00Z");
    assert_eq!(str_field(&lease, "expires"), "2026-11-22T14:00:00Z");
    assert_eq!(u64_field(&lease, "bytes"), 300_000 + 12);

    // Listed: only with --all, since the caller is not alice.
    let mine = env.at("2026-11-22T11:00:00Z").run(["restores", "--json"]);
    mine.ok();
    assert_eq!(mine.json(), serde_json::json!([]));
    let all = env
        .at("2026-11-22T11:00:00Z")
        .run(["restores", "--json", "--all"]);
    all.ok();
    let listed = all.json();
    assert_eq!(
        listed.as_array().expect("leases test step").len(),
        1,
        "{all}"
    );
    assert_eq!(str_field(&listed[0], "id"), lease_id);
    assert_eq!(str_field(&listed[0], "target"), s(&target));
    assert_eq!(listed[0]["expired"], false);
    let text = env.at("2026-11-22T14:00:01Z").run(["restores", "--all"]);
    text.ok();
    assert!(text.stdout.contains("EXPIRED"), "{text}");
    assert!(text.stdout.contains("orders-db"), "{text}");

    // A second before expiry nothing is removed.
    let early = env
        .at("2026-11-22T13:59:59Z")
        .run(["restores", "expire", "--json"]);
    early.ok();
    assert_eq!(early.json(), serde_json::json!([]));
    assert!(target.join("conf/deep/app.toml").is_file());

    let due = env
        .at("2026-11-22T14:00:00Z")
        .run(["restores", "expire", "--json"]);
    due.ok();
    let done = due.json();
    assert_eq!(str_field(&done[0], "lease"), lease_id);
    assert_eq!(str_field(&done[0], "outcome"), "removed");
    assert!(!target.exists());
    assert!(
        env.roots.join("alice").is_dir(),
        "only the leased path goes"
    );
    env.assert_outside_intact();
    assert!(env.lease_files().is_empty());

    // Audited: the restore carries its lease; the removal has its own record.
    let records = env.audit();
    let restore = records
        .iter()
        .find(|r| r["operation"] == "restore")
        .expect("leases test step");
    assert_eq!(detail(restore, "lease"), Some(lease_id.as_str()));
    assert_eq!(detail(restore, "expires"), Some("2026-11-22T14:00:00Z"));
    let expiry = records
        .iter()
        .find(|r| r["operation"] == "restore-expire")
        .expect("leases test step");
    assert_eq!(str_field(expiry, "outcome"), "removed");
    assert_eq!(str_field(expiry, "target"), s(&target));
    assert_eq!(str_field(expiry, "snapshot_id"), env.snapshot);
    assert_eq!(detail(expiry, "owner"), Some("alice"));
    let log = fs::read_to_string(env.t.join("cache/.local/state/bunker/audit.jsonl"))
        .expect("leases test step");
    assert!(log.contains("\"restore-expire\""), "{log}");

    // Nothing left to do.
    let again = env.at("2026-11-23T00:00:00Z").run(["restores", "expire"]);
    again.ok();
    assert!(again.stdout.contains("no restore is due"), "{again}");
}

#[test]
fn an_expired_target_already_gone_drops_its_lease_and_now_expires_early() {
    let env = Setup::new();
    let gone = env.roots.join("gone");
    let early = env.roots.join("early");
    for target in [&gone, &early] {
        env.at("2026-11-22T10:00:00Z")
            .run([
                "restore",
                env.spec("/conf").as_str(),
                "--target",
                s(target),
                "--expire",
                "1h",
            ])
            .ok();
    }
    assert_eq!(env.lease_files().len(), 2);
    fs::remove_dir_all(&gone).expect("leases test step");
    let out = env
        .at("2026-11-22T10:30:00Z")
        .run(["restores", "expire", "--json"]);
    out.ok();
    assert_eq!(out.json(), serde_json::json!([]), "not due yet");
    // --now: the caller's own leases go before their time.
    let out = env
        .at("2026-11-22T10:30:00Z")
        .run(["restores", "expire", "--now", "--json"]);
    out.ok();
    let mut outcomes: Vec<(String, String)> = out
        .json()
        .as_array()
        .expect("leases test step")
        .iter()
        .map(|e| {
            (
                str_field(e, "target").to_owned(),
                str_field(e, "outcome").to_owned(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            (s(&early).to_owned(), "removed".to_owned()),
            (s(&gone).to_owned(), "already-gone".to_owned()),
        ]
    );
    assert!(!early.exists());
    assert!(env.lease_files().is_empty());
    env.assert_outside_intact();
}

#[test]
fn restores_outside_the_roots_are_refused_with_15() {
    let env = Setup::new();
    fs::create_dir_all(env.t.join("etc")).expect("leases test step");
    symlink(env.t.join("etc"), env.roots.join("escape")).expect("leases test step");
    let bunker = env.at("2026-11-22T10:00:00Z");
    let dotdot = format!("{}/../etc/x", s(&env.roots));
    let cases: [(&str, PathBuf); 3] = [
        ("plain", env.t.join("etc/plain")),
        ("dotdot", PathBuf::from(&dotdot)),
        ("symlink", env.roots.join("escape/x")),
    ];
    for (name, target) in &cases {
        for extra in [&[][..], &["--expire", "1h"][..]] {
            let mut args = vec!["restore", "latest", "--target", s(target)];
            args.extend_from_slice(extra);
            let out = bunker.run(&args);
            out.code(15);
            let line = out.stderr.trim();
            assert_eq!(line.lines().count(), 1, "{name}: {out}");
            assert!(line.contains(s(target)), "{name}: {out}");
            assert!(line.contains(s(&env.roots)), "{name}: {out}");
        }
    }
    assert_eq!(
        fs::read_dir(env.t.join("etc"))
            .expect("leases test step")
            .count(),
        0
    );
    // A volume image outside the roots: refused the same way.
    let image = env.t.join("disk.img");
    write_random_file(&image, 3, 1 << 20);
    env.b.run(["backup", "--volume", s(&image)]).ok();
    let out = bunker.run([
        "restore",
        "latest",
        "--volume-target",
        s(&env.outside.join("disk.img")),
    ]);
    out.code(15);
    assert!(!env.outside.join("disk.img").exists());
    // The policy given with --policy instead of BUNKER_POLICY: the same refusal.
    let out = env.b.run([
        "restore",
        "latest",
        "--target",
        s(&cases[0].1),
        "--policy",
        s(&env.policy),
    ]);
    out.code(15);
    // Refusals are audited as failed restores.
    let refused = env
        .audit()
        .into_iter()
        .filter(|r| r["operation"] == "restore" && r["outcome"] == "failed")
        .count();
    assert_eq!(refused, 8);

    // Inside the roots (through a symlink that stays inside): allowed.
    symlink(env.roots.join("sibling"), env.roots.join("inside-link")).expect("leases test step");
    let inside = env.roots.join("inside-link/restored");
    bunker
        .run([
            "restore",
            env.spec("/conf").as_str(),
            "--target",
            s(&inside),
        ])
        .ok();
    compare_tree_contents(&env.src.join("conf"), &env.roots.join("sibling/restored"));
    // --stdout is not a target.
    let out = bunker.run([
        "restore",
        env.spec("/conf/deep/app.toml").as_str(),
        "--stdout",
    ]);
    out.ok();
    assert_eq!(out.stdout, "port = 8080\n");
}

#[test]
fn an_expiring_restore_needs_a_target_it_can_own() {
    let env = Setup::new();
    let bunker = env.at("2026-11-22T10:00:00Z");
    // An existing non-empty directory, a restore root itself: refused before writing.
    for target in [env.roots.join("sibling"), env.roots.clone()] {
        let out = bunker.run([
            "restore",
            "latest",
            "--target",
            s(&target),
            "--expire",
            "2h",
        ]);
        out.code(15);
        assert!(out.stderr.contains("cannot expire"), "{out}");
    }
    assert_eq!(
        fs::read_dir(env.roots.join("sibling"))
            .expect("leases test step")
            .count(),
        1
    );
    let out = bunker.run([
        "restore",
        "latest",
        "--target",
        s(&env.roots.join("x")),
        "--expire",
        "soon",
    ]);
    out.code(2);
    assert!(out.stderr.contains("--expire"), "{out}");
    assert!(env.lease_files().is_empty());

    // No policy at all: allowed anywhere, the lease goes to the user's state directory.
    let free = env.t.join("anywhere/restore");
    let plain = env.b.with_env("BUNKER_TEST_NOW", "2026-11-22T10:00:00Z");
    plain
        .run([
            "restore",
            env.spec("/conf").as_str(),
            "--target",
            s(&free),
            "--expire",
            "30m",
        ])
        .ok();
    let mine = plain.run(["restores", "--json"]);
    mine.ok();
    assert_eq!(str_field(&mine.json()[0], "target"), s(&free));
    let lease_dir = env.t.join("cache/.local/state/bunker/restores");
    assert_eq!(
        fs::read_dir(&lease_dir).expect("leases test step").count(),
        1
    );
    let late = env.b.with_env("BUNKER_TEST_NOW", "2026-11-22T10:30:00Z");
    late.run(["restores", "expire"]).ok();
    assert!(!free.exists());
    assert!(env.t.join("anywhere").is_dir());
    assert_eq!(
        fs::read_dir(&lease_dir).expect("leases test step").count(),
        0
    );
}

#[test]
fn the_agent_removes_expired_restores_on_its_own() {
    let env = Setup::new();
    let expired = env.roots.join("expired");
    let active = env.roots.join("active");
    let now = jiff::Timestamp::now();
    let hours_ago = |h: i64| (now - jiff::SignedDuration::from_hours(h)).to_string();
    // Made five hours ago for four hours: expired an hour ago by the real clock.
    env.at(&hours_ago(5))
        .run([
            "restore",
            env.spec("/conf").as_str(),
            "--target",
            s(&expired),
            "--expire",
            "4h",
        ])
        .ok();
    env.at(&hours_ago(1))
        .run([
            "restore",
            env.spec("/conf").as_str(),
            "--target",
            s(&active),
            "--expire",
            "4h",
        ])
        .ok();
    let child = Command::new(env!("CARGO_BIN_EXE_bunker-agent"))
        .arg("--config")
        .arg(&env.policy)
        .arg("run")
        .env("HOME", env.t.join("cache"))
        .env_remove("BUNKER_PASSWORD")
        .env_remove("BUNKER_REPOSITORY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("leases test step");
    let metrics = env.t.join("metrics/bunker.prom");
    let started = Instant::now();
    while (expired.exists() || !metrics.exists()) && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    send_signal(child.id(), "TERM");
    let out = wait_output(child, "bunker-agent run".into(), DEFAULT_TIMEOUT);
    out.ok();
    assert!(!expired.exists(), "{out}");
    compare_tree_contents(&env.src.join("conf"), &active);
    env.assert_outside_intact();
    assert_eq!(env.lease_files().len(), 1);
    assert!(out.stderr.contains("removed"), "{out}");
    let text = fs::read_to_string(&metrics).expect("leases test step");
    assert!(text.contains("bunker_restores_active 1\n"), "{text}");
    assert!(text.contains("bunker_restores_expired 0\n"), "{text}");
    let records = env.audit();
    let expiry = records
        .iter()
        .find(|r| r["operation"] == "restore-expire")
        .expect("leases test step");
    assert_eq!(str_field(expiry, "target"), s(&expired));
    assert_eq!(str_field(expiry, "outcome"), "removed");
}
