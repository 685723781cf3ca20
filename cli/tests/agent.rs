//! `bunker-agent` and `bunker policy` end to end: policy validation, `run --once` with hooks,
//! a command source and retention, the scheduler's catch-up and graceful shutdown, metrics,
//! and the freeze watchdog surviving a `kill -9` of the agent.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

fn agent_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bunker-agent"))
}

/// A test repository plus a policy file around it.
struct Setup {
    t: TestDir,
    b: Bunker,
    state: PathBuf,
    policy: PathBuf,
}

impl Setup {
    fn new(sources: &str) -> Setup {
        let t = TestDir::new();
        let b = t.bunker();
        b.init();
        let password = t.join("password");
        fs::write(&password, format!("{PASSWORD}\n")).expect("write the password file");
        let state = t.join("state");
        let policy = t.join("agent.toml");
        let text = format!(
            "[agent]\nhost = \"web-1\"\nstate_dir = \"{}\"\nshutdown_timeout = \"30s\"\n\n\
             [repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [metrics]\ntextfile = \"{}\"\n\n{sources}",
            state.display(),
            b.repo().display(),
            password.display(),
            t.join("metrics/bunker.prom").display(),
        );
        fs::write(&policy, text).expect("write the policy");
        Setup {
            t,
            b,
            state,
            policy,
        }
    }

    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.arg("--config").arg(&self.policy).args(args);
        cmd.env("XDG_CACHE_HOME", self.t.join("cache"))
            .env("HOME", self.t.join("cache"))
            .env_remove("BUNKER_PASSWORD")
            .env_remove("BUNKER_REPOSITORY")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn run_agent(&self, args: &[&str]) -> Output {
        let mut cmd = self.agent(args);
        let shown = format!("bunker-agent {}", args.join(" "));
        wait_output(
            cmd.spawn().expect("start bunker-agent"),
            shown,
            DEFAULT_TIMEOUT,
        )
    }

    fn journal(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.state.join("jobs.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
            .collect()
    }
}

#[test]
fn policy_check_reports_every_problem_with_line_and_key() {
    let t = TestDir::new();
    let password = t.join("password");
    fs::write(&password, "pw\n").unwrap();
    let good = t.join("good.toml");
    let policy = |credentials: &str| {
        format!(
            "[repository]\nurl = \"/r\"\n{credentials}\n\
             [[source]]\nname = \"db\"\ntemplate = \"database\"\ncommand = \"pg_dump -Fc db\"\n"
        )
    };
    fs::write(
        &good,
        policy(&format!("password_file = \"{}\"", password.display())),
    )
    .unwrap();
    let b = t.bunker();
    let out = b.run(["policy", "check", good.to_str().unwrap()]);
    out.ok();
    assert!(
        out.stdout
            .contains("valid, 1 source(s): db (command, 0 * * * *)"),
        "{out}"
    );

    let shown = b.run(["policy", "show", good.to_str().unwrap()]);
    shown.ok();
    assert!(shown.stdout.contains("keep_hourly = 24"), "{shown}");

    // What the policy names on this host must work: a password file that is not there,
    // and a put-only key for a source with drills (the database template drills).
    let host = t.join("host.toml");
    fs::write(&host, policy("password_file = \"/nonexistent/password\"")).unwrap();
    let out = b.run(["policy", "check", host.to_str().unwrap()]);
    out.ok();
    assert!(
        out.stderr.contains(
            "warning on this host: repository.password_file: /nonexistent/password cannot be read"
        ),
        "{out}"
    );
    b.init();
    let key = t.join("put-only.key");
    b.run(["key", "add", "--put-only", "--out", key.to_str().unwrap()])
        .ok();
    fs::write(&host, policy(&format!("key_file = \"{}\"", key.display()))).unwrap();
    let out = b.run(["policy", "check", host.to_str().unwrap(), "--json"]);
    out.ok();
    let warnings = out.json()["warnings"].clone();
    assert!(
        warnings[0]
            .as_str()
            .is_some_and(|w| w.contains("is a put-only key") && w.contains("source(s) db")),
        "{out}"
    );

    let bad = t.join("bad.toml");
    fs::write(
        &bad,
        "[repository]\nurl = \"/r\"\npassword_file = \"/p\"\n\
         [[source]]\nname = \"db\"\nkind = \"paths\"\npaths = [\"/srv\"]\nschedule = \"0 25 * * *\"\n\
         [[source]]\nname = \"db\"\nkind = \"volume\"\nschedule = \"@daily\"\n",
    )
    .unwrap();
    let out = b.run(["policy", "check", bad.to_str().unwrap()]);
    out.code(7);
    let stderr = &out.stderr;
    assert!(
        stderr.contains("line 8, column 12: source[1].schedule: 25 is outside 0..=23"),
        "{out}"
    );
    assert!(
        stderr.contains("line 10, column 8: source[2].name: a source named \"db\""),
        "{out}"
    );
    assert!(stderr.contains("source[2].device: missing"), "{out}");
    assert!(stderr.contains("3 problem(s) found"), "{out}");

    let json = b.run(["policy", "check", bad.to_str().unwrap(), "--json"]);
    json.code(7);
    assert_eq!(json.json()["errors"].as_array().unwrap().len(), 3);
}

#[test]
fn a_source_timeout_stops_a_silent_command_and_a_hanging_hook() {
    // Both would run 30 s; the source's 2 s timeout ends each well before.
    let s = Setup::new(
        "[[source]]\nname = \"silent\"\nkind = \"command\"\ncommand = \"sleep 30; echo data\"\n\
         schedule = \"@daily\"\ntimeout = \"2s\"\n\
         [[source]]\nname = \"hook\"\nkind = \"command\"\ncommand = \"echo data\"\n\
         schedule = \"@daily\"\ntimeout = \"2s\"\nhooks = { pre = \"sleep 30\", timeout = \"1h\" }\n",
    );
    for source in ["silent", "hook"] {
        let started = Instant::now();
        let out = s.run_agent(&["run", "--once", source]);
        out.code(6);
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{source}: {:?}\n{out}",
            started.elapsed()
        );
        let last = s.journal().pop().expect("a journal line");
        assert_eq!(last["outcome"], "cancelled", "{last}");
        assert!(
            last["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("timed out after 2s")),
            "{last}"
        );
        if source == "hook" {
            let hook = &last["hooks"][0];
            assert_eq!(
                (hook["cancelled"].as_bool(), hook["timed_out"].as_bool()),
                (Some(true), Some(false)),
                "{last}"
            );
        }
    }
    assert!(s.b.snapshots().is_empty());
}

#[test]
fn run_once_runs_hooks_sources_and_retention() {
    let data = TestDir::new();
    let src = data.join("app");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    fs::write(src.join("sub/b.bin"), random_bytes(3, 300_000)).unwrap();
    let dump = data.join("dump.bin");
    fs::write(&dump, random_bytes(5, 2 << 20)).unwrap();
    let marks = data.join("marks");
    fs::create_dir(&marks).unwrap();

    let sources = format!(
        "[[source]]\nname = \"app-data\"\nkind = \"paths\"\npaths = [\"{src}\"]\n\
         schedule = \"0 * * * *\"\ntags = {{ service = \"app\", env = \"prod\" }}\n\
         hooks = {{ pre = \"echo pre-ran; touch {m}/pre-$BUNKER_SOURCE\", post = \"touch {m}/post\" }}\n\
         retention = {{ keep_last = 2 }}\nforget = true\n\n\
         [[source]]\nname = \"orders-db\"\ntemplate = \"database\"\ncommand = \"cat '{dump}'\"\n\n\
         [[source]]\nname = \"broken\"\nkind = \"paths\"\npaths = [\"{src}\"]\nschedule = \"@daily\"\n\
         hooks = {{ pre = \"exit 9\", post = \"touch {m}/broken-post\" }}\n\n\
         [[source]]\nname = \"down-db\"\ntemplate = \"database\"\n\
         command = \"echo 'dumping'; echo 'pg_dump: error: connection refused' >&2; exit 2\"\n",
        src = src.display(),
        m = marks.display(),
        dump = dump.display(),
    );
    let s = Setup::new(&sources);

    // Named sources, three times: retention keeps the last two app-data snapshots.
    for _ in 0..3 {
        s.run_agent(&["run", "--once", "app-data", "orders-db"])
            .ok();
    }
    let snapshots = s.b.snapshots();
    let of = |name: &str| {
        snapshots
            .iter()
            .filter(|v| v["tags"].to_string().contains(&format!("source={name}")))
            .count()
    };
    assert_eq!(of("app-data"), 2, "retention applied: {snapshots:?}");
    assert_eq!(of("orders-db"), 3, "no retention without forget = true");
    assert!(marks.join("pre-app-data").exists() && marks.join("post").exists());

    let target = s.t.join("restore");
    s.b.restore("latest", &target).ok();
    let restored_db = target.join("orders-db");
    assert_eq!(fs::read(&restored_db).unwrap(), fs::read(&dump).unwrap());

    // Consistency and hooks are recorded: in the snapshot and in the journal.
    let cat = s.b.run([
        "snapshots",
        "--latest",
        "--tag",
        "source=app-data",
        "--json",
    ]);
    cat.ok();
    let journal = s.journal();
    let app: Vec<_> = journal
        .iter()
        .filter(|j| j["source"] == "app-data")
        .collect();
    assert_eq!(app.len(), 3);
    assert_eq!(app[0]["outcome"], "succeeded");
    assert!(
        app[0]["hooks"][0]["output"]
            .as_str()
            .unwrap()
            .contains("pre-ran")
    );
    assert_eq!(app[2]["forgotten"].as_array().unwrap().len(), 1);
    let db: Vec<_> = journal
        .iter()
        .filter(|j| j["source"] == "orders-db")
        .collect();
    assert_eq!(db[0]["consistency"], "application");

    // A failing pre hook: no snapshot, the post hook still runs, exit code 6.
    let out = s.run_agent(&["run", "--once", "broken"]);
    out.code(6);
    assert!(
        out.stderr
            .contains("broken: FAILED: pre hook \"exit 9\" failed with exit code 9"),
        "{out}"
    );
    assert!(marks.join("broken-post").exists());
    assert_eq!(s.b.snapshots().len(), 5);

    // A failing dump command: no snapshot, and the failure says what the command said.
    let out = s.run_agent(&["run", "--once", "down-db"]);
    out.code(6);
    assert!(
        out.stderr
            .contains("down-db: pg_dump: error: connection refused"),
        "the command's line is passed on: {out}"
    );
    assert!(
        out.stderr.contains("down-db: FAILED: ")
            && out.stderr.contains(
                "exit status: 2); no snapshot was written; its standard error ended with: \
                 pg_dump: error: connection refused"
            ),
        "{out}"
    );
    let journal = s.journal();
    let down = journal
        .iter()
        .find(|j| j["source"] == "down-db")
        .expect("the failed job is in the journal");
    assert!(
        down["error"]
            .as_str()
            .unwrap()
            .ends_with("its standard error ended with: pg_dump: error: connection refused"),
        "{down}"
    );
    assert_eq!(s.b.snapshots().len(), 5);

    // Metrics: a textfile node_exporter can read.
    let metrics = fs::read_to_string(s.t.join("metrics/bunker.prom")).unwrap();
    assert!(
        metrics.contains("bunker_backup_last_run_success{source=\"app-data\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bunker_backup_last_run_success{source=\"broken\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("bunker_backup_runs_total{source=\"app-data\",outcome=\"succeeded\"} 3"),
        "{metrics}"
    );

    // Each job left an audit record in the repository.
    let audit = s.b.run(["audit", "--json"]);
    audit.ok();
    let records = audit.json();
    let jobs: Vec<&serde_json::Value> = records
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["target"] == "source app-data")
        .collect();
    assert_eq!(jobs.len(), 3, "{audit}");
    assert_eq!(jobs[0]["outcome"], "succeeded");
    let broken = records
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["target"] == "source broken")
        .expect("the failed job is audited");
    assert_eq!(broken["outcome"], "failed");

    // Unknown source names are refused.
    let out = s.run_agent(&["run", "--once", "nope"]);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("no source named \"nope\""), "{out}");
}

#[test]
fn the_agent_keeps_its_cache_where_bunker_cache_dir_says() {
    let data = TestDir::new();
    let src = data.join("app");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("a.txt"), b"alpha").unwrap();
    let sources = format!(
        "[[source]]\nname = \"app\"\nkind = \"paths\"\npaths = [\"{}\"]\nschedule = \"@daily\"\n",
        src.display()
    );
    let s = Setup::new(&sources);
    let cache = s.t.join("var-cache-bunker");
    let mut cmd = s.agent(&["run", "--once", "app"]);
    cmd.env("BUNKER_CACHE_DIR", &cache);
    wait_output(
        cmd.spawn().expect("start"),
        "bunker-agent run --once app".into(),
        DEFAULT_TIMEOUT,
    )
    .ok();
    let repositories: Vec<PathBuf> = fs::read_dir(&cache)
        .expect("the agent's cache directory")
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(repositories.len(), 1, "{repositories:?}");
    assert!(repositories[0].join("files").is_file(), "{repositories:?}");
    assert!(!s.t.join("cache/bunker").exists(), "nothing under $HOME");
}

/// A source's `fixed_chunks` reaches its backups: a 1 MiB file is stored as sixteen
/// 64 KiB chunks (the content-defined chunker would store it whole), and a page rewritten
/// in place re-stores one.
#[test]
fn a_sources_fixed_chunks_cut_its_files() {
    let data = TestDir::new();
    let src = data.join("pgdata");
    fs::create_dir_all(&src).unwrap();
    let mut table = random_bytes(11, 1 << 20);
    fs::write(src.join("16384"), &table).unwrap();
    let sources = format!(
        "[[source]]\nname = \"pgdata\"\nkind = \"paths\"\npaths = [\"{}\"]\n\
         schedule = \"@daily\"\nfixed_chunks = \"64K\"\n",
        src.display()
    );
    let s = Setup::new(&sources);
    let blobs_added = || {
        s.run_agent(&["run", "--once", "pgdata"]).ok();
        let latest = s.b.run(["snapshots", "--latest", "--json"]);
        latest.ok();
        u64_field(&latest.json()[0]["summary"], "data_blobs_added")
    };
    assert_eq!(blobs_added(), 16);
    table[300_000..308_192].copy_from_slice(&random_bytes(12, 8192));
    fs::write(src.join("16384"), &table).unwrap();
    assert_eq!(blobs_added(), 1);
    let target = s.t.join("restore");
    s.b.restore("latest", &target).ok();
    assert!(fs::read(under(&target, &src).join("16384")).unwrap() == table);
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

fn wait_for(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn the_daemon_catches_up_a_missed_slot_once_and_shuts_down_gracefully() {
    let data = TestDir::new();
    let src = data.join("app");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"payload").unwrap();
    let port = free_port();
    let sources = format!(
        "[[source]]\nname = \"hourly\"\nkind = \"paths\"\npaths = [\"{}\"]\nschedule = \"0 * * * *\"\n",
        src.display()
    );
    let s = Setup::new(&sources);
    let policy = fs::read_to_string(&s.policy).unwrap().replace(
        "[metrics]\n",
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    fs::write(&s.policy, policy).unwrap();
    // The agent last ran this source three hours ago: three slots were missed.
    fs::create_dir_all(&s.state).unwrap();
    let three_hours_ago = jiff_now() - 3 * 3600 - 60;
    fs::write(
        s.state.join("state.json"),
        format!("{{\"sources\":{{\"hourly\":{{\"last_slot\":{three_hours_ago}}}}}}}"),
    )
    .unwrap();

    let mut child: Child = s.agent(&["run"]).spawn().unwrap();
    let caught_up = wait_for(Duration::from_secs(60), || {
        s.journal().iter().any(|j| j["source"] == "hourly")
    });
    assert!(caught_up, "the missed slot was not caught up");
    // Caught up once, not three times.
    thread::sleep(Duration::from_secs(2));
    assert_eq!(s.b.snapshots().len(), 1);
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("bunker_backup_last_run_success{source=\"hourly\"} 1"),
        "{metrics}"
    );
    assert!(
        http_get(port, "/nope")
            .unwrap_or_default()
            .starts_with("HTTP/1.1 404")
    );

    send_signal(child.id(), "TERM");
    let status = wait_child(&mut child, Duration::from_secs(60));
    assert_eq!(status, Some(0), "graceful shutdown exits 0");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("bunker-agent stopped"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn jiff_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("wait for the agent") {
            return status.code();
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// A loop-mounted ext4 filesystem (root only).
struct LoopFs {
    _dir: TestDir,
    mount: PathBuf,
}

impl LoopFs {
    fn new() -> Option<LoopFs> {
        let (dir, mount) = loop_mount(&["mkfs.ext4", "-q", "-F"], 64 << 20, "the freeze tests")?;
        Some(LoopFs { _dir: dir, mount })
    }
}

/// A fresh image of `size` bytes made with `mkfs` (the image path is appended) and
/// loop-mounted; `None` (skipped, with a note naming `what`) when not root.
fn loop_mount(mkfs: &[&str], size: u64, what: &str) -> Option<(TestDir, PathBuf)> {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs these tests as root"
        );
        note(format!("SKIPPED: {what} need root and loop mounts"));
        return None;
    }
    let dir = TestDir::new();
    let image = dir.join("fs.img");
    let mount = dir.join("mnt");
    fs::create_dir(&mount).expect("create the mount point");
    fs::File::create(&image)
        .expect("create the image")
        .set_len(size)
        .expect("size the image");
    let ok = |c: &mut Command| assert!(c.status().expect("run the command").success(), "{c:?}");
    ok(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image));
    ok(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&mount));
    Some((dir, mount))
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = Command::new(agent_bin())
            .arg("thaw")
            .arg(&self.mount)
            .status();
        unmount(&self.mount);
    }
}

fn write_finishes(path: &Path, limit: Duration) -> bool {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("echo x > '{}'", path.display()))
        .spawn()
        .expect("start sh");
    let done = wait_for(limit, || child.try_wait().expect("wait for sh").is_some());
    if !done {
        // Left blocked on the frozen filesystem; it finishes after the thaw.
        thread::spawn(move || child.wait());
    }
    done
}

#[test]
fn a_freeze_is_thawed_by_the_watchdog_when_the_agent_is_killed() {
    let Some(fs_) = LoopFs::new() else { return };
    // The command source blocks while the filesystem is frozen; the agent is killed then.
    let sources = format!(
        "[[source]]\nname = \"frozen\"\nkind = \"command\"\ncommand = \"sleep 31.25\"\n\
         schedule = \"@daily\"\nquiesce = {{ fsfreeze = \"{}\" }}\n",
        fs_.mount.display()
    );
    let s = Setup::new(&sources);
    let mut child = s.agent(&["run", "--once", "frozen"]).spawn().unwrap();
    // Wait until the freeze is in place: writes stop finishing.
    let frozen = wait_for(Duration::from_secs(30), || {
        !write_finishes(&fs_.mount.join("probe"), Duration::from_millis(300))
    });
    assert!(frozen, "the filesystem was never frozen");
    // kill -9: no destructor runs, only the watchdog can thaw.
    send_signal(child.id(), "KILL");
    let _ = child.wait();
    let _ = Command::new("pkill").args(["-f", "sleep 31.25"]).status();
    assert!(
        wait_for(Duration::from_secs(20), || write_finishes(
            &fs_.mount.join("after"),
            Duration::from_secs(2)
        )),
        "the filesystem stayed frozen after the agent died"
    );
    assert!(s.b.snapshots().is_empty());

    // SIGKILL to the agent's whole process group (`timeout -s KILL`): the watchdog has a
    // group of its own and survives to thaw.
    let mut child = {
        use std::os::unix::process::CommandExt;
        s.agent(&["run", "--once", "frozen"])
            .process_group(0)
            .spawn()
            .unwrap()
    };
    let frozen = wait_for(Duration::from_secs(30), || {
        !write_finishes(&fs_.mount.join("probe2"), Duration::from_millis(300))
    });
    assert!(frozen, "the filesystem was never frozen");
    let group = format!("-{}", child.id());
    Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .expect("kill the group");
    let _ = child.wait();
    // The command source runs in a group of its own and is left behind.
    let _ = Command::new("pkill").args(["-f", "sleep 31.25"]).status();
    assert!(
        wait_for(Duration::from_secs(20), || write_finishes(
            &fs_.mount.join("after-group"),
            Duration::from_secs(2)
        )),
        "the filesystem stayed frozen after the agent's group was killed"
    );

    // A normal run freezes and thaws, and records application consistency.
    let quick = format!(
        "[[source]]\nname = \"quick\"\nkind = \"paths\"\npaths = [\"{}\"]\n\
         schedule = \"@daily\"\nquiesce = {{ fsfreeze = \"{}\" }}\n",
        fs_.mount.display(),
        fs_.mount.display()
    );
    let text = fs::read_to_string(&s.policy).unwrap();
    let head = text.split("[[source]]").next().unwrap().to_owned();
    fs::write(&s.policy, head + &quick).unwrap();
    s.run_agent(&["run", "--once", "quick"]).ok();
    let journal = s.journal();
    let last = journal.last().unwrap();
    assert_eq!(last["consistency"], "application", "{last}");
    assert!(
        last["consistency_detail"]
            .as_str()
            .unwrap()
            .starts_with("fsfreeze")
    );
    assert!(write_finishes(
        &fs_.mount.join("after2"),
        Duration::from_secs(5)
    ));
}

#[test]
fn a_volume_written_to_continuously_is_frozen_backed_up_and_restores_clean() {
    let Some(fs_) = LoopFs::new() else { return };
    let device = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE"])
        .arg(&fs_.mount)
        .output()
        .expect("findmnt");
    let device = String::from_utf8_lossy(&device.stdout).trim().to_owned();
    assert!(device.starts_with("/dev/loop"), "{device}");
    // A writer appending numbered lines as fast as it can, through the whole backup.
    let log = fs_.mount.join("log");
    let mut writer = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "i=0; while true; do echo $i >> '{}'; i=$((i+1)); done",
            log.display()
        ))
        .spawn()
        .expect("start the writer");
    thread::sleep(Duration::from_millis(500));
    let sources = format!(
        "[[source]]\nname = \"data-volume\"\ntemplate = \"volume\"\ndevice = \"{device}\"\n\
         quiesce = {{ fsfreeze = \"{}\" }}\n",
        fs_.mount.display()
    );
    let s = Setup::new(&sources);
    s.run_agent(&["run", "--once", "data-volume"]).ok();
    // The writer kept going after the thaw.
    let before = fs::read_to_string(&log).expect("log").lines().count();
    thread::sleep(Duration::from_millis(300));
    let after = fs::read_to_string(&log).expect("log").lines().count();
    let _ = writer.kill();
    let _ = writer.wait();
    assert!(after > before, "the filesystem stayed frozen");
    let journal = s.journal();
    assert_eq!(journal[0]["consistency"], "application", "{:?}", journal[0]);

    let image = s.t.join("restored.img");
    s.b.run([
        "restore",
        "latest",
        "--volume-target",
        image.to_str().expect("utf-8"),
    ])
    .ok();
    let fsck = Command::new("fsck.ext4")
        .arg("-n")
        .arg(&image)
        .output()
        .expect("fsck");
    assert!(
        fsck.status.success(),
        "fsck of the restored image: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // The frozen state: the log is a gap-free prefix of what the writer wrote.
    let mnt = s.t.join("restored-mnt");
    fs::create_dir(&mnt).expect("mount point");
    let ok = |c: &mut Command| assert!(c.status().expect("run").success(), "{c:?}");
    ok(Command::new("mount")
        .args(["-o", "loop,ro,noload"])
        .arg(&image)
        .arg(&mnt));
    let restored = fs::read_to_string(mnt.join("log")).unwrap_or_default();
    let _ = Command::new("umount").arg(&mnt).status();
    let lines: Vec<&str> = restored.lines().collect();
    assert!(!lines.is_empty(), "the restored log is empty");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, i.to_string(), "line {i} of the restored log");
    }
}

/// A loop-mounted btrfs filesystem with one subvolume, `data` (root only).
struct BtrfsFs {
    _dir: TestDir,
    mount: PathBuf,
}

impl BtrfsFs {
    fn new() -> Option<BtrfsFs> {
        let (dir, mount) = loop_mount(&["mkfs.btrfs", "-q", "-f"], 256 << 20, "the btrfs tests")?;
        let fs_ = BtrfsFs { _dir: dir, mount };
        let created = Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(fs_.data())
            .status()
            .expect("run btrfs");
        assert!(created.success(), "btrfs subvolume create");
        Some(fs_)
    }

    fn data(&self) -> PathBuf {
        self.mount.join("data")
    }
}

impl Drop for BtrfsFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

/// Two counters the writer updates in order (`a_counter`, then `z_counter`, each replaced
/// atomically) with 24 MiB of other files between them in name order: in any point-in-time
/// view `a` is `z` or `z + 1`, while reading the live tree sees `a` far behind `z`.
fn counters(dir: &Path) -> (u64, u64) {
    let read = |name: &str| -> u64 {
        let text = fs::read_to_string(dir.join(name)).expect("read a counter");
        text.trim().parse().expect("a counter is a number")
    };
    (read("a_counter"), read("z_counter"))
}

#[test]
fn a_btrfs_source_is_backed_up_from_a_read_only_snapshot_at_one_point_in_time() {
    let Some(fs_) = BtrfsFs::new() else { return };
    let data = fs_.data();
    let filler = data.join("m_filler");
    fs::create_dir(&filler).expect("create the filler dir");
    for i in 0..6 {
        fs::write(filler.join(format!("part{i}")), random_bytes(i, 4 << 20)).expect("filler");
    }
    age_files(&filler);
    fs::write(data.join("a_counter"), "0\n").expect("counter");
    fs::write(data.join("z_counter"), "0\n").expect("counter");
    // A snapshot left behind by an agent that died: deleted by the next run.
    let ok = |c: &mut Command| assert!(c.status().expect("run").success(), "{c:?}");
    fs::create_dir(data.join(".bunker-snapshots")).expect("snapshot dir");
    ok(Command::new("btrfs")
        .args(["-q", "subvolume", "snapshot", "-r"])
        .arg(&data)
        .arg(data.join(".bunker-snapshots/home.1")));

    let mut writer = Command::new("sh")
        .current_dir(&data)
        .arg("-c")
        .arg(
            "i=1; while true; do echo $i > a.tmp; mv a.tmp a_counter; \
             echo $i > z.tmp; mv z.tmp z_counter; i=$((i+1)); done",
        )
        .spawn()
        .expect("start the writer");
    thread::sleep(Duration::from_millis(300));
    let sources = format!(
        "[[source]]\nname = \"home\"\nkind = \"paths\"\npaths = [\"{0}\"]\n\
         schedule = \"@daily\"\nquiesce = {{ btrfs_snapshot = \"{0}\" }}\n",
        data.display()
    );
    let s = Setup::new(&sources);
    s.run_agent(&["run", "--once", "home"]).ok();
    s.run_agent(&["run", "--once", "home"]).ok();
    let _ = writer.kill();
    let _ = writer.wait();
    let journal = s.journal();
    assert_eq!(journal.len(), 2, "{journal:?}");
    for run in &journal {
        assert_eq!(run["outcome"], "succeeded", "{run:?}");
        assert_eq!(run["consistency"], "application", "{run:?}");
        assert!(
            run["consistency_detail"]
                .as_str()
                .is_some_and(|d| d.contains("btrfs snapshot")),
            "{run:?}"
        );
    }
    // Both snapshots, the leftover included, are gone.
    let left: Vec<_> = fs::read_dir(data.join(".bunker-snapshots"))
        .expect("list the snapshot dir")
        .collect();
    assert!(left.is_empty(), "snapshots left behind: {left:?}");

    let listed = s.b.run(["snapshots", "--json"]).ok().json();
    let listed = listed.as_array().expect("a list");
    assert_eq!(listed.len(), 2);
    // Recorded under the live paths, and the second run did not read the unchanged filler
    // again (the snapshot's own device number must not make every file look new).
    assert_eq!(listed[1]["paths"][0], data.to_str().expect("utf-8"));
    let second = &listed[1]["summary"];
    assert!(
        second["files_unchanged"].as_u64().unwrap_or(0) >= 6,
        "{second}"
    );
    assert!(
        second["bytes_read"].as_u64().unwrap_or(u64::MAX) < 1 << 20,
        "{second}"
    );

    for (n, snapshot) in listed.iter().enumerate() {
        let target = s.t.join(format!("restored-{n}"));
        let id = snapshot["id"].as_str().expect("id");
        s.b.run(["restore", id, "--target", target.to_str().expect("utf-8")])
            .ok();
        let restored = target.join(data.strip_prefix("/").expect("absolute"));
        let (a, z) = counters(&restored);
        assert!(
            a == z || a == z + 1,
            "snapshot {n} is not one point in time: a_counter {a}, z_counter {z}"
        );
        for i in 0..6 {
            assert_eq!(
                fs::read(restored.join(format!("m_filler/part{i}"))).expect("restored filler"),
                random_bytes(i, 4 << 20),
                "m_filler/part{i} of snapshot {n}"
            );
        }
        assert!(
            !restored.join(".bunker-snapshots").exists(),
            "the snapshot directory was backed up"
        );
    }
}

/// A source with `verify` settings over a small tree; `schedule` is the backup schedule and
/// the drill's (its smoke command checks a restored file).
fn drilled_source(src: &Path, schedule: &str) -> String {
    write_random_file(&src.join("big.bin"), 11, 2 << 20);
    write_file(&src.join("a.txt"), b"alpha\n");
    format!(
        "[[source]]\nname = \"app\"\nkind = \"paths\"\npaths = [\"{src}\"]\nschedule = \"{schedule}\"\n\
         verify = {{ schedule = \"{schedule}\", window = \"2d\", smoke = 'test -s \"$BUNKER_RESTORE_DIR{src}/a.txt\"' }}\n",
        src = src.display(),
    )
}

/// The `verify` audit records, as JSON.
fn verify_records(b: &Bunker) -> Vec<serde_json::Value> {
    let audit = b.run(["audit", "--json"]);
    audit.ok();
    audit
        .json()
        .as_array()
        .expect("an array of records")
        .iter()
        .filter(|r| r["operation"] == "verify")
        .cloned()
        .collect()
}

fn record_detail<'a>(record: &'a serde_json::Value, key: &str) -> &'a str {
    record["details"]
        .as_array()
        .expect("details")
        .iter()
        .find(|d| d["key"] == key)
        .and_then(|d| d["value"].as_str())
        .unwrap_or("")
}

#[test]
fn run_once_with_a_put_only_key_backs_up_and_its_drill_exits_with_the_keys_code() {
    let data = TestDir::new();
    let s = Setup::new(&drilled_source(&data.join("app"), "@daily"));
    let key = s.t.join("put-only.key");
    s.b.run(["key", "add", "--put-only", "--out", key.to_str().unwrap()])
        .ok();
    let policy = fs::read_to_string(&s.policy).unwrap();
    let password_line = format!("password_file = \"{}\"", s.t.join("password").display());
    assert!(policy.contains(&password_line), "{policy}");
    let policy = policy.replace(&password_line, &format!("key_file = \"{}\"", key.display()));
    fs::write(&s.policy, policy).unwrap();

    // The backup is made; the drill cannot read it back, which is the key's exit code (13,
    // as `bunker verify` with that key), not a failed restore (20).
    let out = s.run_agent(&["run", "--once"]);
    out.code(13);
    assert!(out.stderr.contains("put-only"), "{out}");
    let journal = s.journal();
    assert_eq!(journal[0]["outcome"], "succeeded", "{journal:?}");
    assert_eq!(journal[1]["kind"], "drill", "{journal:?}");
    assert_eq!(journal[1]["outcome"], "failed", "{journal:?}");
    assert_eq!(s.b.snapshots().len(), 1);
}

#[test]
fn run_once_drills_after_the_backup_and_a_damaged_pack_fails_the_agents_drill() {
    let data = TestDir::new();
    let s = Setup::new(&drilled_source(&data.join("app"), "@daily"));
    let out = s.run_agent(&["run", "--once"]);
    out.ok();
    assert!(out.stdout.contains("PASS snapshot "), "{out}");
    assert!(out.stdout.contains("source app (files)"), "{out}");

    // The drill restored the snapshot just made; the journal has both, in order.
    let journal = s.journal();
    assert_eq!(journal.len(), 2, "{journal:?}");
    assert_eq!(journal[0]["outcome"], "succeeded");
    assert_eq!(journal[1]["kind"], "drill");
    assert_eq!(journal[1]["outcome"], "passed", "{:?}", journal[1]);
    assert_eq!(journal[1]["snapshot_id"], journal[0]["snapshot_id"]);
    assert!(journal[1]["files"].as_u64().unwrap_or(0) >= 2);

    // Audited like `bunker verify`, and `bunker report` sees the agent's drill.
    let records = verify_records(&s.b);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "passed");
    assert_eq!(record_detail(&records[0], "source"), "app");
    assert_eq!(record_detail(&records[0], "drill"), "agent");
    let report = s.b.run([
        "report",
        "--json",
        "--policy",
        s.policy.to_str().expect("UTF-8"),
    ]);
    report.ok();
    let row = &report.json()["sources"][0];
    assert_eq!(row["drill_status"], "passed", "{report}");
    assert_eq!(row["last_passing_drill"]["drill"], "agent", "{report}");

    let metrics_file = s.t.join("metrics/bunker.prom");
    let metrics = fs::read_to_string(&metrics_file).unwrap();
    for line in [
        "bunker_drill_last_success{source=\"app\"} 1\n",
        "bunker_drill_covered{source=\"app\"} 1\n",
        "bunker_drill_coverage_ratio 1.000\n",
        "bunker_drill_failures_total{source=\"app\"} 0\n",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    // The state remembers the drill; the next `run --once` has nothing due.
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(s.state.join("state.json")).unwrap()).unwrap();
    let drill = &state["sources"]["app"]["drill"];
    assert_eq!(drill["last_outcome"], "passed", "{state}");
    assert_eq!(drill["last_snapshot"], journal[0]["snapshot_id"]);
    assert!(drill["last_pass"].as_i64().is_some(), "{state}");
    let again = s.run_agent(&["run", "--once"]);
    again.ok();
    assert!(again.stdout.contains("no source is due"), "{again}");

    // A newer snapshot of a source of the same name from another host is not this host's
    // to drill.
    s.b.backup(
        &[&data.join("app")],
        &["--host", "elsewhere", "--tag", "source=app"],
    )
    .ok();
    s.run_agent(&["drill", "app"]).ok();
    let last = s.journal().pop().expect("a journal line");
    assert_eq!(last["snapshot_id"], journal[0]["snapshot_id"], "{last}");

    // Damage one data pack: the drill on demand fails and names it.
    let packs = repo_objects(s.b.repo(), "data");
    let victim = packs.iter().next().expect("a data pack").clone();
    let path = s.b.repo().join(&victim);
    let len = fs::metadata(&path).unwrap().len();
    for offset in [len / 3, len / 2, 2 * len / 3] {
        flip_byte(&path, offset);
    }
    let out = s.run_agent(&["drill", "app"]);
    assert!(out.code == 20 || out.code == 21, "{out}");
    assert!(out.stdout.contains("FAIL snapshot "), "{out}");
    let pack_name = victim.rsplit('/').next().expect("a file name");
    assert!(
        out.all().contains(pack_name),
        "{pack_name} not named\n{out}"
    );

    let metrics = fs::read_to_string(&metrics_file).unwrap();
    for line in [
        "bunker_drill_last_success{source=\"app\"} 0\n",
        "bunker_drill_covered{source=\"app\"} 0\n",
        "bunker_drill_coverage_ratio 0.000\n",
        "bunker_drill_failures_total{source=\"app\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
    let records = verify_records(&s.b);
    assert_eq!(records.len(), 3);
    assert_eq!(records[2]["outcome"], "failed");
    assert!(record_detail(&records[2], "error").contains(pack_name));
    let last = s.journal().pop().expect("a journal line");
    assert_eq!(
        (last["kind"].as_str(), last["failure"].as_str()),
        (Some("drill"), Some("restore"))
    );

    // JSON output, and an unknown source is exit 7.
    let json = s.run_agent(&["drill", "--json"]);
    assert!(json.code == 20 || json.code == 21, "{json}");
    assert_eq!(json.json()[0]["source"], "app");
    let out = s.run_agent(&["drill", "nope"]);
    out.code(7);
    assert!(out.stderr.contains("no source named \"nope\""), "{out}");

    // A wrong password is exit 12, as for `bunker verify`: not a failed drill.
    let failures_before = s.journal().len();
    fs::write(s.t.join("password"), "not the password\n").unwrap();
    let out = s.run_agent(&["drill", "app"]);
    out.code(12);
    assert_eq!(s.journal().len(), failures_before, "no drill was recorded");
}

#[test]
fn the_daemon_catches_up_a_drill_after_the_backup_it_waited_for() {
    let data = TestDir::new();
    let s = Setup::new(&drilled_source(&data.join("app"), "0 * * * *"));
    // Backups and drills last ran three hours ago: both are caught up, once.
    fs::create_dir_all(&s.state).unwrap();
    let three_hours_ago = jiff_now() - 3 * 3600 - 60;
    fs::write(
        s.state.join("state.json"),
        format!(
            "{{\"sources\":{{\"app\":{{\"last_slot\":{t},\"drill\":{{\"last_slot\":{t}}}}}}}}}",
            t = three_hours_ago
        ),
    )
    .unwrap();
    let mut child: Child = s.agent(&["run"]).spawn().unwrap();
    let drilled = wait_for(Duration::from_secs(60), || {
        s.journal().iter().any(|j| j["kind"] == "drill")
    });
    thread::sleep(Duration::from_secs(1));
    send_signal(child.id(), "TERM");
    let status = wait_child(&mut child, Duration::from_secs(60));
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        pipe.read_to_string(&mut stderr)
            .expect("read the agent's stderr");
    }
    assert!(drilled, "no drill was caught up\n{stderr}");
    assert_eq!(status, Some(0), "{stderr}");
    assert!(
        stderr.contains("app: drill waits for the backup of its source"),
        "{stderr}"
    );
    let journal = s.journal();
    assert_eq!(journal.len(), 2, "one backup, one drill: {journal:?}");
    assert_eq!(journal[0]["outcome"], "succeeded");
    assert_eq!(journal[1]["outcome"], "passed", "{:?}", journal[1]);
    assert_eq!(
        journal[1]["snapshot_id"], journal[0]["snapshot_id"],
        "the drill restored the snapshot the backup just made"
    );
    let records = verify_records(&s.b);
    assert_eq!(records.len(), 1);
    assert_eq!(record_detail(&records[0], "drill"), "agent");
    let metrics = fs::read_to_string(s.t.join("metrics/bunker.prom")).unwrap();
    assert!(
        metrics.contains("bunker_drill_covered{source=\"app\"} 1\n"),
        "{metrics}"
    );
}
