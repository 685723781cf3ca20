//! btrfs snapshots on a real loop-mounted btrfs filesystem: the agent deletes only the
//! snapshots it made of the source it runs, never another subvolume. Needs root, btrfs-progs
//! and loop mounts; outside CI the test says so and passes, in CI it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bunker_agent::quiesce::btrfs::{SNAPSHOT_DIR, snapshot};

struct BtrfsFs {
    dir: tempfile::TempDir,
    mount: PathBuf,
}

impl BtrfsFs {
    fn new() -> Option<BtrfsFs> {
        let root = nix::unistd::geteuid().is_root();
        let tools = ["mkfs.btrfs", "btrfs", "mount", "umount"].iter().all(|t| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {t}"))
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if !root || !tools {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the btrfs tests as root with btrfs-progs and loop devices"
            );
            eprintln!("SKIPPED: btrfs tests need root, btrfs-progs and loop mounts");
            return None;
        }
        let dir = tempfile::tempdir().expect("btrfs test setup");
        let image = dir.path().join("fs.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("btrfs test setup");
        std::fs::File::create(&image)
            .expect("btrfs test setup")
            .set_len(256 << 20)
            .expect("btrfs test setup");
        run(Command::new("mkfs.btrfs").args(["-q", "-f"]).arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount));
        Some(BtrfsFs { dir, mount })
    }

    fn subvolume(&self, name: &str) -> PathBuf {
        let path = self.mount.join(name);
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&path));
        path
    }
}

impl Drop for BtrfsFs {
    fn drop(&mut self) {
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
    let out = cmd.output().expect("btrfs test setup");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_subvolume(path: &Path) -> bool {
    Command::new("btrfs")
        .args(["subvolume", "show"])
        .arg(path)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn a_snapshot_of_another_source_whose_name_extends_this_one_is_left_alone() {
    let Some(fs) = BtrfsFs::new() else { return };
    let data = fs.subvolume("data");
    // Source "db.prod" is being backed up from its snapshot when source "db" starts.
    let other = snapshot(&data, "db.prod").expect("snapshot of db.prod");
    assert!(is_subvolume(other.path()));
    let mine = snapshot(&data, "db").expect("snapshot of db");
    assert!(
        is_subvolume(other.path()),
        "the snapshot {} of source db.prod was deleted by source db",
        other.path().display()
    );
    mine.delete().expect("delete db's snapshot");
    other.delete().expect("delete db.prod's snapshot");
}

#[test]
fn a_symlink_in_the_snapshot_directory_never_gets_another_subvolume_deleted() {
    let Some(fs) = BtrfsFs::new() else { return };
    let data = fs.subvolume("data");
    let victim = fs.subvolume("victim");
    // Whoever can write into the subvolume made the snapshot directory before the agent
    // did, with a "leftover" that points at a subvolume the agent never made.
    let dir = data.join(SNAPSHOT_DIR);
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::os::unix::fs::symlink(&victim, dir.join("db.1")).expect("symlink");
    let made = snapshot(&data, "db");
    assert!(
        is_subvolume(&victim),
        "the agent deleted {} through a symlink in {}",
        victim.display(),
        dir.display()
    );
    // The agent does not make its snapshot in a directory others can write to.
    let err = made.expect_err("a snapshot in a directory anyone can write to");
    assert!(err.to_string().contains(SNAPSHOT_DIR), "{err}");

    // Nor through a snapshot directory that is itself a symlink.
    let elsewhere = fs.mount.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("mkdir");
    std::os::unix::fs::symlink(&victim, elsewhere.join("db.2")).expect("symlink");
    let data2 = fs.subvolume("data2");
    std::os::unix::fs::symlink(&elsewhere, data2.join(SNAPSHOT_DIR)).expect("symlink");
    let err = snapshot(&data2, "db").expect_err("a snapshot directory that is a symlink");
    assert!(
        is_subvolume(&victim),
        "deleted through a symlinked directory"
    );
    assert!(err.to_string().contains(SNAPSHOT_DIR), "{err}");
}

#[test]
fn a_leftover_of_the_same_source_is_still_deleted() {
    let Some(fs) = BtrfsFs::new() else { return };
    let data = fs.subvolume("data");
    let leftover = snapshot(&data, "db").expect("first snapshot");
    let path = leftover.path().to_owned();
    // The agent died: its snapshot stayed.
    std::mem::forget(leftover);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let next = snapshot(&data, "db").expect("second snapshot");
    assert!(
        !path.exists(),
        "the leftover {} is still there",
        path.display()
    );
    next.delete().expect("delete");
}
