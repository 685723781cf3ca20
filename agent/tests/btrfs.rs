//! btrfs snapshots on a real loop-mounted btrfs filesystem: the agent deletes only the
//! snapshots it made of the source it runs, never another subvolume. Needs root, btrfs-progs
//! and loop mounts; outside CI the test says so and passes, in CI it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use bunker_agent::quiesce::btrfs::{SNAPSHOT_DIR, snapshot};

mod loop_mount;

use loop_mount::{LoopMount, run};

/// A 256 MiB btrfs filesystem, loop-mounted.
struct BtrfsFs(LoopMount);

impl BtrfsFs {
    fn new() -> Option<BtrfsFs> {
        LoopMount::new(&["mkfs.btrfs", "-q", "-f"], 256 << 20, &["btrfs"]).map(BtrfsFs)
    }

    fn mount(&self) -> &Path {
        &self.0.mount
    }

    fn subvolume(&self, name: &str) -> PathBuf {
        let path = self.mount().join(name);
        run(Command::new("btrfs")
            .args(["-q", "subvolume", "create"])
            .arg(&path));
        path
    }
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
    let elsewhere = fs.mount().join("elsewhere");
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
