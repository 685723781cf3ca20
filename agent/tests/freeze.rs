//! fsfreeze on a real loop-mounted ext4 filesystem: writes block while frozen and resume
//! after the thaw, and the watchdog thaws when the agent's pipe closes or the limit passes.
//! Needs root and loop devices; outside CI the test says so and passes, in CI it fails.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bunker_agent::quiesce::freeze::{WatchdogEnd, freeze, watchdog};

mod loop_mount;

use loop_mount::LoopMount;

/// A 64 MiB ext4 filesystem, loop-mounted.
fn ext4() -> Option<LoopMount> {
    LoopMount::new(&["mkfs.ext4", "-q", "-F"], 64 << 20, &[])
}

/// Starts a writer of `path` (which blocks while the filesystem is frozen).
fn writer(path: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("echo data > '{}' && sync", path.display()))
        .stdout(Stdio::null())
        .spawn()
        .expect("freeze test setup")
}

/// True when `child` finishes within `limit`.
fn finishes_within(child: &mut Child, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if child.try_wait().expect("freeze test setup").is_some() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn freeze_blocks_writers_until_thawed() {
    let Some(fs) = ext4() else { return };
    let frozen = freeze(&fs.mount, Duration::from_secs(60), None).unwrap();
    let mut w = writer(&fs.mount.join("a"));
    assert!(
        !finishes_within(&mut w, Duration::from_millis(800)),
        "a write finished on a frozen filesystem"
    );
    frozen.thaw().unwrap();
    assert!(
        finishes_within(&mut w, Duration::from_secs(20)),
        "the write never resumed"
    );
    assert_eq!(
        std::fs::read_to_string(fs.mount.join("a")).unwrap(),
        "data\n"
    );

    // Dropping the guard thaws too.
    {
        let _frozen = freeze(&fs.mount, Duration::from_secs(60), None).unwrap();
    }
    let mut w = writer(&fs.mount.join("b"));
    assert!(finishes_within(&mut w, Duration::from_secs(20)));

    // Freezing twice is refused with the mount point named.
    let first = freeze(&fs.mount, Duration::from_secs(60), None).unwrap();
    let second = freeze(&fs.mount, Duration::from_secs(60), None).unwrap_err();
    assert!(
        second.to_string().contains(&fs.mount.display().to_string()),
        "{second}"
    );
    drop(first);
}

#[test]
fn the_watchdog_thaws_when_the_agent_dies_or_hangs() {
    let Some(fs) = ext4() else { return };

    // The agent dies: its end of the pipe closes without "thawed".
    let frozen = freeze(&fs.mount, Duration::from_secs(60), None).unwrap();
    std::mem::forget(frozen); // no in-process thaw
    let (reader, writer_end) = std::io::pipe().unwrap();
    let mount = fs.mount.clone();
    let dog = thread::spawn(move || watchdog(&mount, Duration::from_secs(60), reader));
    let mut w = writer(&fs.mount.join("c"));
    assert!(!finishes_within(&mut w, Duration::from_millis(500)));
    drop(writer_end);
    assert_eq!(dog.join().unwrap().unwrap(), WatchdogEnd::AgentGone);
    assert!(finishes_within(&mut w, Duration::from_secs(20)));

    // The agent hangs: the limit passes.
    let frozen = freeze(&fs.mount, Duration::from_secs(60), None).unwrap();
    std::mem::forget(frozen);
    let (reader, _kept_open) = std::io::pipe().unwrap();
    let end = watchdog(&fs.mount, Duration::from_millis(300), reader).unwrap();
    assert_eq!(end, WatchdogEnd::Expired);
    let mut w = writer(&fs.mount.join("d"));
    assert!(finishes_within(&mut w, Duration::from_secs(20)));
}
