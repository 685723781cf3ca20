//! Drill kinds on real parts: a volume drill that fscks a real ext4 image and mounts it
//! read-only on a loop device for the smoke command, and a PostgreSQL drill that restores a
//! `pg_dump -Fc` backup into a temporary server and runs smoke SQL. Both are driven by the
//! source's settings in the agent policy (`bunker verify --policy`), and neither may leave
//! a mount, a loop device, a server or a directory behind, whether it passes or fails.
//!
//! Needs root (loop devices, mount, PostgreSQL through `runuser`). Outside CI they are
//! skipped with a note when not root; under `CI=true` a missing tool fails.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::postgres::{Cluster, pg_bin};
use common::*;

/// True when the test can run; false (with a note) only outside CI and not as root.
fn can_run(what: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs the {what} drill test as root"
    );
    note(format!("SKIPPED {what} drill: needs root"));
    false
}

/// Runs a system tool; panics with its output when it fails.
fn tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program} could not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A sparse 64 MiB ext4 image holding `hello.txt` ("hello") and `dir/data.bin`, made by
/// mounting it on a loop device and writing the files.
fn make_image(t: &TestDir) -> PathBuf {
    let image = t.join("vol.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image file");
    tool("mkfs.ext4", &["-q", "-F", s(&image)]);
    let mnt = t.join("mnt");
    fs::create_dir(&mnt).expect("mountpoint");
    tool("mount", &["-o", "loop", s(&image), s(&mnt)]);
    let mounted = UnmountOnDrop(mnt.clone());
    write_file(&mnt.join("hello.txt"), b"hello");
    write_random_file(&mnt.join("dir/data.bin"), 7, 1 << 20);
    drop(mounted);
    assert!(!mounts().contains(s(&mnt)), "the source image is unmounted");
    image
}

/// The mount table.
fn mounts() -> String {
    fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts")
}

/// The backing files of every attached loop device.
fn loop_backing_files() -> String {
    tool(
        "losetup",
        &["--list", "--noheadings", "--output", "BACK-FILE"],
    )
}

/// The entries of `dir` (the drills' TMPDIR): everything a drill made must be gone.
fn leftovers(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("read the drill TMPDIR")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

/// Writes an agent policy with one source (`source` is its TOML body after the name).
fn write_policy(t: &TestDir, b: &Bunker, file: &str, name: &str, source: &str) -> PathBuf {
    let password = t.join("password");
    fs::write(&password, format!("{PASSWORD}\n")).expect("password file");
    let policy = t.join(file);
    fs::write(
        &policy,
        format!(
            "[agent]\nstate_dir = \"{}\"\n[repository]\nurl = \"{}\"\npassword_file = \"{}\"\n\n\
             [[source]]\nname = \"{name}\"\nschedule = \"@daily\"\n{source}",
            t.join("state").display(),
            b.repo().display(),
            password.display(),
        ),
    )
    .expect("policy");
    policy
}

#[test]
fn a_volume_drill_fscks_and_mounts_the_image_read_only_and_leaves_nothing_behind() {
    if !can_run("volume") {
        return;
    }
    let t = TestDir::new();
    let image = make_image(&t);
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).expect("drill TMPDIR");
    let b = t.bunker().with_env("TMPDIR", &tmp);
    b.init();
    b.backup(
        &[],
        &[
            "--volume",
            s(&image),
            "--name",
            "vol",
            "--tag",
            "source=vol",
        ],
    )
    .ok();
    // The smoke command reads the file through the mount, and cannot write there.
    let good = write_policy(
        &t,
        &b,
        "good.toml",
        "vol",
        &format!(
            "kind = \"volume\"\ndevice = \"{}\"\nverify = {{ schedule = \"@weekly\", fsck = true, \
             mount = true, smoke = '''test \"$(cat $BUNKER_RESTORE_DIR/hello.txt)\" = hello && \
             test -f \"$BUNKER_RESTORE_IMAGE\" && ! touch \"$BUNKER_RESTORE_DIR/new\" 2>/dev/null''' }}\n",
            s(&image)
        ),
    );
    let out = b.run(["verify", "--policy", s(&good), "--json"]);
    out.ok();
    let doc = out.json();
    let drill = &doc["drills"][0];
    assert_eq!(drill["passed"], true, "{out}");
    assert_eq!(drill["warnings"], serde_json::json!([]), "{out}");
    assert_eq!(str_field(drill, "kind"), "volume", "{out}");
    assert_eq!(
        drill["checks"],
        serde_json::json!(["fsck", "mount", "smoke"]),
        "{out}"
    );
    assert!(
        !mounts().contains(s(&tmp)),
        "a drill mount is left\n{}",
        mounts()
    );
    assert!(
        !loop_backing_files().contains(s(&tmp)),
        "a loop device is left: {}",
        loop_backing_files()
    );
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
    // The recovery report shows the passing drill of the volume source and its checks.
    let report = b.run(["report", "--json"]);
    report.ok();
    let row = &report.json()["sources"][0];
    assert_eq!(row["drill_status"], "passed", "{report}");
    assert_eq!(
        row["last_passing_drill"]["checks"],
        serde_json::json!(["fsck", "mount", "smoke"]),
        "{report}"
    );

    // A kept target: its image is not attached to any loop device after the drill.
    let kept = t.join("kept");
    let out = b.run([
        "verify",
        "--policy",
        s(&good),
        "--target",
        s(&kept),
        "--keep",
    ]);
    out.ok();
    assert!(out.stdout.contains("checks fsck,mount,smoke"), "{out}");
    let restored = kept.join("volume.img");
    assert!(restored.is_file(), "{out}");
    assert_eq!(tool("losetup", &["-j", s(&restored)]).trim(), "");

    // A failing smoke command fails the drill with 22, and the image is unmounted too.
    let bad = write_policy(
        &t,
        &b,
        "bad.toml",
        "vol",
        &format!(
            "kind = \"volume\"\ndevice = \"{}\"\nverify = {{ schedule = \"@weekly\", mount = true, \
             smoke = 'test \"$(cat $BUNKER_RESTORE_DIR/hello.txt)\" = goodbye' }}\n",
            s(&image)
        ),
    );
    let out = b.run(["verify", "--policy", s(&bad), "--json"]);
    out.code(22);
    let drill = &out.json()["drills"][0];
    assert_eq!(str_field(drill, "failure"), "smoke", "{out}");
    assert_eq!(
        drill["checks"],
        serde_json::json!(["fsck", "mount", "smoke"]),
        "{out}"
    );
    assert!(
        !mounts().contains(s(&tmp)),
        "a drill mount is left\n{}",
        mounts()
    );
    assert!(!loop_backing_files().contains(s(&tmp)));
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");

    // The command line overrides the policy: no fsck, and its own smoke command.
    let out = b.run([
        "verify",
        "--policy",
        s(&good),
        "--no-fsck",
        "--smoke",
        "test -s \"$BUNKER_RESTORE_DIR/dir/data.bin\"",
        "--json",
    ]);
    out.ok();
    assert_eq!(
        out.json()["drills"][0]["checks"],
        serde_json::json!(["mount", "smoke"]),
        "{out}"
    );
}

#[test]
fn an_image_that_does_not_mount_fails_the_drill_with_22() {
    if !can_run("volume") {
        return;
    }
    let t = TestDir::new();
    let image = t.join("noise.img");
    write_random_file(&image, 11, 4 << 20);
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).expect("drill TMPDIR");
    let b = t.bunker().with_env("TMPDIR", &tmp);
    b.init();
    b.backup(&[], &["--volume", s(&image), "--tag", "source=noise"])
        .ok();
    let policy = write_policy(
        &t,
        &b,
        "p.toml",
        "noise",
        &format!(
            "kind = \"volume\"\ndevice = \"{}\"\nverify = {{ schedule = \"@weekly\", fsck = false, \
             mount = true, smoke = \"true\" }}\n",
            s(&image)
        ),
    );
    let out = b.run(["verify", "--policy", s(&policy)]);
    out.code(22);
    assert!(out.stdout.contains("failure mount"), "{out}");
    assert!(out.stderr.contains("read-only"), "{out}");
    assert!(!loop_backing_files().contains(s(&tmp)));
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
}

#[test]
fn an_interrupted_volume_drill_unmounts_and_detaches_before_exiting_130() {
    if !can_run("volume") {
        return;
    }
    let t = TestDir::new();
    let image = make_image(&t);
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).expect("drill TMPDIR");
    let b = t.bunker().with_env("TMPDIR", &tmp);
    b.init();
    b.backup(&[], &["--volume", s(&image), "--tag", "source=vol"])
        .ok();
    let started = t.join("smoke-started");
    let (child, shown) = b.spawn([
        "verify",
        "--mount",
        "--smoke",
        &format!("touch {} && sleep 3", s(&started)),
    ]);
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the smoke never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(mounts().contains(s(&tmp)), "mounted while the smoke runs");
    send_signal(child.id(), "INT");
    let out = wait_output(child, shown, DEFAULT_TIMEOUT);
    out.code(130);
    assert!(
        !mounts().contains(s(&tmp)),
        "a drill mount is left\n{}",
        mounts()
    );
    assert!(!loop_backing_files().contains(s(&tmp)));
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
}

#[test]
fn a_mount_kept_busy_by_the_smoke_command_is_detached_lazily_with_a_warning() {
    if !can_run("volume") {
        return;
    }
    let t = TestDir::new();
    let image = make_image(&t);
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).expect("drill TMPDIR");
    let b = t.bunker().with_env("TMPDIR", &tmp);
    b.init();
    b.backup(&[], &["--volume", s(&image), "--tag", "source=vol"])
        .ok();
    // A process left behind by the smoke command keeps the mount busy for 2 s. The smoke
    // command returns only once that process is inside the mount (it flags it outside, the
    // mount being read-only), or the unmount could come first and find nothing busy.
    let ready = t.join("inside");
    let smoke = format!(
        "(cd \"$BUNKER_RESTORE_DIR\" && : > '{0}' && exec sleep 2) >/dev/null 2>&1 & \
         for _ in $(seq 500); do [ -e '{0}' ] && break; sleep 0.01; done",
        ready.display()
    );
    let out = b.run(["verify", "--mount", "--json", "--smoke", &smoke]);
    out.ok();
    let warnings = out.json()["drills"][0]["warnings"].to_string();
    assert!(warnings.contains("detached lazily"), "{out}");
    assert!(
        !mounts().contains(s(&tmp)),
        "the mount is out of the tree at once"
    );
    // The loop device goes once the last user has let go.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while loop_backing_files().contains(s(&tmp)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop device stayed: {}",
            loop_backing_files()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").expect("read /proc").flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(cmdline);
            }
        }
    }
    found
}

#[test]
fn a_postgresql_drill_restores_the_dump_into_a_temporary_server_and_runs_smoke_sql() {
    if !can_run("PostgreSQL") {
        return;
    }
    let bin = pg_bin().expect("PostgreSQL server programs (the postgresql package)");
    let t = TestDir::new();
    // PostgreSQL runs as `postgres`: it must reach its directories.
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    let source = Cluster::start(&bin, &t.path(), "source");
    source.psql("postgres", "create database app");
    source.psql(
        "app",
        "create table t (id int primary key, v text not null);\
         insert into t select g, md5(g::text) from generate_series(1, 1000) g;",
    );
    let tmp = t.join("tmp");
    fs::create_dir(&tmp).expect("drill TMPDIR");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
    let b = t.bunker().with_env("TMPDIR", &tmp);
    b.init();
    let policy = |file: &str, sql: &str| {
        write_policy(
            &t,
            &b,
            file,
            "appdb",
            &format!(
                "kind = \"command\"\ndatabase = \"postgresql\"\n\
                 command = \"pg_dump -Fc -h 127.0.0.1 -p {} -U postgres app\"\n\
                 verify = {{ schedule = \"@weekly\", smoke_sql = [\"{sql}\"], \
                 smoke = 'test \"$(psql -XAtc \"SELECT count(*) FROM t\")\" = 1000' }}\n",
                source.port
            ),
        )
    };
    let good = policy("good.toml", "SELECT count(*) = 1000 FROM t");
    let out = agent_run_once(&good, "appdb", &t.join("cache"));
    out.ok();
    assert_eq!(out.json()[0]["outcome"], "succeeded", "{out}");

    // Passes: the dump restores, the smoke SQL holds, and the smoke command reaches the
    // restored database through the PG* variables.
    let out = b.run(["verify", "--policy", s(&good), "--json"]);
    out.ok();
    let drill = &out.json()["drills"][0];
    assert_eq!(drill["passed"], true, "{out}");
    assert_eq!(drill["warnings"], serde_json::json!([]), "{out}");
    assert_eq!(str_field(drill, "source"), "appdb");
    assert_eq!(
        drill["checks"],
        serde_json::json!(["database", "smoke"]),
        "{out}"
    );
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
    assert_eq!(processes_mentioning(s(&tmp)), Vec::<String>::new());
    let report = b.run(["report", "--json", "--policy", s(&good)]);
    report.ok();
    let row = &report.json()["sources"][0];
    assert_eq!(row["name"], "appdb", "{report}");
    assert_eq!(row["drill_status"], "passed", "{report}");
    assert_eq!(
        row["last_passing_drill"]["checks"],
        serde_json::json!(["database", "smoke"]),
        "{report}"
    );

    // A statement that returns false fails the drill with 22 and names the statement.
    let bad = policy("bad.toml", "SELECT count(*) = 999 FROM t");
    let out = b.run(["verify", "--policy", s(&bad)]);
    out.code(22);
    assert!(out.stdout.contains("failure database"), "{out}");
    assert!(
        out.stderr
            .contains("smoke SQL \"SELECT count(*) = 999 FROM t\" returned \"f\""),
        "{out}"
    );
    // The temporary server is gone, and so is its directory.
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
    assert_eq!(processes_mentioning(s(&tmp)), Vec::<String>::new());

    // A statement that errors fails the same way, with PostgreSQL's message.
    let broken = policy("broken.toml", "SELECT count(*) FROM missing_table");
    let out = b.run(["verify", "--policy", s(&broken), "--json"]);
    out.code(22);
    let errors = out.json()["drills"][0]["errors"].to_string();
    assert!(errors.contains("missing_table"), "{out}");
    assert!(errors.contains("does not exist"), "{out}");
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
    assert_eq!(processes_mentioning(s(&tmp)), Vec::<String>::new());

    // Interrupted while the server runs (the smoke command is running): the server is
    // stopped and its directory removed before bunker exits 130.
    let started = t.join("smoke-started");
    let (child, shown) = b.spawn([
        "verify",
        "--policy",
        s(&good),
        "--smoke",
        &format!("touch {} && sleep 3", s(&started)),
    ]);
    let deadline = std::time::Instant::now() + DEFAULT_TIMEOUT;
    while !started.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the smoke never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !processes_mentioning(s(&tmp)).is_empty(),
        "the temporary server runs during the smoke command"
    );
    send_signal(child.id(), "INT");
    let out = wait_output(child, shown, DEFAULT_TIMEOUT);
    out.code(130);
    assert_eq!(leftovers(&tmp), Vec::<String>::new(), "{out}");
    assert_eq!(processes_mentioning(s(&tmp)), Vec::<String>::new());
}
