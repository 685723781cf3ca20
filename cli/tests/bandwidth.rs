//! Bandwidth limits end to end: `--limit-upload`, `--limit-download` (and their
//! environment variables) and the agent policy's `limit_upload`. A limited command takes at
//! least the time its bytes take at the rate and does the same work; a rate without a unit,
//! or of zero, is refused before anything runs.

mod common;

use std::fs;
use std::time::{Duration, Instant};

use common::*;

/// Bytes of incompressible data backed up: about this much goes into the repository.
const DATA: u64 = 3 << 20;

#[test]
fn limited_backups_and_restores_take_the_time_their_rate_allows() {
    let t = TestDir::new();
    let src = t.join("src");
    // 24 files of 128 KiB: each one chunk, so a restore reads ranges of at most 2 MiB
    // (one larger chunk would be read whole, whatever the repository's chunker cuts).
    for n in 0..24 {
        write_random_file(&src.join(format!("{n:02}.bin")), 5 + n, DATA / 24);
    }
    let b = t.bunker();
    b.init();

    // At 2 MiB/s the snapshot, written last, waits for the 3 MiB before it: 1.5 s.
    let started = Instant::now();
    b.backup(&[&src], &["--limit-upload", "2M"]).ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "backup took {took:?}");

    // At 1 MiB/s the restore's last range waits for the 1 MiB or more read before it.
    let target = t.join("restored");
    let started = Instant::now();
    b.with_env("BUNKER_LIMIT_DOWNLOAD", "1MiB/s")
        .restore("latest", &target)
        .ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "restore took {took:?}");
    let restored = files_under(&under(&target, &src));
    assert_eq!(restored.len(), 24);
    assert!(restored == files_under(&src));
}

#[test]
fn a_rate_needs_a_unit_and_more_than_zero() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let out = b.run(["--limit-upload", "1024", "snapshots"]);
    out.code(2);
    assert!(out.stderr.contains("has no unit"), "{out}");
    let out = b.with_env("BUNKER_LIMIT_DOWNLOAD", "0K").run(["snapshots"]);
    out.code(2);
    assert!(out.stderr.contains("above zero"), "{out}");
    b.run(["--limit-download", "10M", "snapshots"]).ok();
}

#[test]
fn the_agent_keeps_to_its_policys_upload_limit() {
    let t = TestDir::new();
    let src = t.join("src");
    write_random_file(&src.join("random.bin"), 6, DATA);
    let b = t.bunker();
    b.init();
    let password = t.join("password");
    fs::write(&password, format!("{PASSWORD}\n")).expect("write the password file");
    let policy = |limit: &str| {
        format!(
            "[agent]\nhost = \"web-1\"\nstate_dir = \"{}\"\n\n\
             [repository]\nurl = \"{}\"\npassword_file = \"{}\"\nlimit_upload = \"{limit}\"\n\n\
             [[source]]\nname = \"files\"\nkind = \"paths\"\npaths = [\"{}\"]\n\
             schedule = \"@daily\"\n",
            t.join("state").display(),
            b.repo().display(),
            password.display(),
            src.display(),
        )
    };
    let config = t.join("agent.toml");
    fs::write(&config, policy("fast")).expect("write the policy");
    let out = b.run(["policy", "check", config.to_str().expect("utf-8")]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.all().contains("repository.limit_upload"), "{out}");

    fs::write(&config, policy("2M")).expect("write the policy");
    let started = Instant::now();
    agent_run_once(&config, "files", &t.join("cache")).ok();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500),
        "the agent's backup took {took:?}"
    );
    assert_eq!(b.snapshots().len(), 1);
}

#[test]
fn an_interrupted_limited_backup_stops_without_sitting_out_its_turn() {
    let t = TestDir::new();
    let src = t.join("src");
    write_random_file(&src.join("random.bin"), 7, 12 << 20);
    let b = t.bunker();
    b.init();
    // At 1 MiB/s the objects after the 12 MiB pack wait 12 s for their turn; Ctrl-C ends
    // the wait, and the backup stops as an interrupted one does.
    let started = Instant::now();
    let (child, shown) = b.spawn(["backup", s(&src), "--limit-upload", "1M"]);
    std::thread::sleep(Duration::from_millis(1500));
    send_signal(child.id(), "INT");
    let out = wait_output(child, shown, Duration::from_secs(60));
    let took = started.elapsed();
    out.code(130);
    assert!(out.stderr.contains("interrupted"), "{out}");
    assert!(took < Duration::from_secs(8), "took {took:?}\n{out}");
    assert!(b.snapshots().is_empty());
}
