//! A fresh filesystem on a loop-mounted image file, for tests of what only a real
//! filesystem does (fsfreeze, btrfs snapshots).

use std::path::PathBuf;
use std::process::Command;

/// A filesystem made on an image in a temporary directory and mounted there; unmounted
/// (thawed first) when dropped.
pub struct LoopMount {
    dir: tempfile::TempDir,
    /// Where it is mounted.
    pub mount: PathBuf,
}

impl LoopMount {
    /// Makes a `size`-byte filesystem with `mkfs` (a command and its arguments, the image
    /// path appended) and mounts it; `None` outside CI when this is not root or a tool is
    /// missing (the test says so and passes), a failure in CI.
    pub fn new(mkfs: &[&str], size: u64, tools: &[&str]) -> Option<LoopMount> {
        let root = nix::unistd::geteuid().is_root();
        let have_tools = [mkfs[0], "mount", "umount"].iter().chain(tools).all(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !root || !have_tools {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the loop-mount tests as root with {mkfs:?} and loop devices"
            );
            eprintln!("SKIPPED: this test needs root, {mkfs:?} and loop mounts");
            return None;
        }
        let dir = tempfile::tempdir().expect("loop mount setup");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("loop mount setup");
        std::fs::File::create(&image)
            .expect("loop mount setup")
            .set_len(size)
            .expect("loop mount setup");
        run(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image));
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

/// Runs a setup command, failing the test with its standard error if it fails.
pub fn run(cmd: &mut Command) {
    let out = cmd.output().expect("loop mount setup");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
