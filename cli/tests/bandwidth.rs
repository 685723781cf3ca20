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
    write_random_file(&src.join("random.bin"), 5, DATA);
    let b = t.bunker();
    b.init();

    // At 2 MiB/s the snapshot, written last, waits for the 3 MiB before it: 1.5 s.
    let started = Instant::now();
    b.backup(&[&src], &["--limit-upload", "2M"]).ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1500), "backup took {took:?}");

    // A restore reads the pack in ranges of at most 2 MiB: at 1 MiB/s the last range
    // waits at least a second for the (1 MiB or more) before it.
    let target = t.join("restored");
    let started = Instant::now();
    b.with_env("BUNKER_LIMIT_DOWNLOAD", "1MiB/s")
        .restore("latest", &target)
        .ok();
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(1), "restore took {took:?}");
    let restored = fs::read(under(&target, &src.join("random.bin"))).expect("restored");
    assert!(restored == fs::read(src.join("random.bin")).expect("source"));
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
