//! fsfreeze on a real loop-mounted ext4 filesystem: writes block while frozen and resume
//! after the thaw, and the watchdog thaws when the agent's pipe closes or the limit passes.
//! Needs root and loop devices; outside CI the test says so and passes, in CI it fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bunker_agent::quiesce::freeze::{WatchdogEnd, freeze, watchdog};

struct LoopMount {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

impl LoopMount {
    fn new() -> Option<LoopMount> {
        let root = nix::unistd::geteuid().is_root();
        let tools = ["mkfs.ext4", "mount", "umount"].iter().all(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !root || !tools {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the freeze tests as root with mkfs.ext4 and loop devices"
            );
            eprintln!("SKIPPED: freeze tests need root, mkfs.ext4 and loop mounts");
            return None;
        }
        let dir = tempfile::tempdir().expect("freeze test setup");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("freeze test setup");
        std::fs::File::create(&image)
            .expect("freeze test setup")
            .set_len(64 << 20)
            .expect("freeze test setup");
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        Some(LoopMount { dir, mount })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = bunker_agent::quiesce::thaw_mount(&self.mount);
        // A test that forgets a `Frozen` keeps the mount point's directory open, and a plain
        // umount is refused while it is: detach lazily then, or every run leaves a mount and
        // a loop device behind.
        let unmounted = Command::new("umount")
            .arg(&self.mount)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
        let _ = self.dir.path();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("freeze test setup");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let Some(fs) = LoopMount::new() else { return };
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
    let Some(fs) = LoopMount::new() else { return };

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
