//! Volumes and streaming end to end: back up a real ext4 filesystem on a loop device,
//! restore it to a sparse image and to another loop device, stream it and single files to
//! stdout, and compare every byte.

mod common;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A loop device attached to an image file, detached (and unmounted) when dropped.
struct Loop {
    device: PathBuf,
    mount: Option<PathBuf>,
}

impl Loop {
    /// Attaches `image`; `None` when loop devices are not available here.
    fn attach(image: &Path) -> Option<Self> {
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(image)
            .output()
            .ok()?;
        if !out.status.success() {
            note(format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(Self {
            device,
            mount: None,
        })
    }

    fn mount(&mut self, at: &Path) -> bool {
        fs::create_dir_all(at).expect("mount point");
        let ok = Command::new("mount")
            .arg(&self.device)
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            self.mount = Some(at.to_owned());
        }
        ok
    }

    fn unmount(&mut self) {
        if let Some(at) = self.mount.take() {
            let status = Command::new("umount").arg(&at).status().expect("umount");
            assert!(status.success(), "umount {}", at.display());
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if let Some(at) = self.mount.take() {
            let _ = Command::new("umount").arg(&at).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn tool_ok(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn volume_of_a_loop_device_restores_to_a_sparse_image_a_device_and_stdout() {
    if !is_root() {
        note("SKIPPED volume test: needs root for losetup and mount");
        return;
    }
    if !Path::new("/dev/loop-control").exists() {
        note("SKIPPED volume test: no loop device support (/dev/loop-control missing)");
        return;
    }
    let t = TestDir::new();
    let image = t.join("disk.img");
    fs::File::create(&image)
        .and_then(|f| f.set_len(96 << 20))
        .expect("image");
    assert!(tool_ok("mkfs.ext4", &["-q", "-F", s(&image)]), "mkfs.ext4");
    let Some(mut source) = Loop::attach(&image) else {
        note("SKIPPED volume test: cannot attach a loop device");
        return;
    };
    if !source.mount(&t.join("mnt")) {
        note("SKIPPED volume test: cannot mount the loop device");
        return;
    }
    let mnt = t.join("mnt");
    write_random_file(&mnt.join("random.bin"), 11, 7 << 20);
    write_file(&mnt.join("dir/text.txt"), &b"line of text\n".repeat(50_000));
    write_file(&mnt.join("dir/small"), b"small");
    source.unmount();
    let original = fs::read(&source.device).expect("read the loop device");
    assert_eq!(original.len(), 96 << 20);

    let b = t.bunker();
    b.init();
    let out = b.backup(&[], &["--volume", s(&source.device), "--name", "disk"]);
    out.ok();
    let snap = &b.snapshots()[0];
    note(format!("volume snapshot: {snap}"));

    // `ls` shows the one file entry.
    let out = b.run(["ls", "latest"]);
    out.ok();
    assert!(
        out.stdout.contains("/disk"),
        "ls of a volume snapshot\n{out}"
    );

    // To a new sparse image.
    let restored = t.join("restored.img");
    let out = b.run([
        "--json",
        "restore",
        "latest",
        "--volume-target",
        s(&restored),
        "--verify",
    ]);
    out.ok();
    let out = out.json();
    assert_eq!(u64_field(&out, "files_verified"), 1, "{out}");
    assert_eq!(
        u64_field(&out, "bytes_verified"),
        original.len() as u64,
        "{out}"
    );
    let got = fs::read(&restored).expect("read restored image");
    assert!(got == original, "restored image differs from the device");
    let meta = fs::metadata(&restored).expect("stat");
    assert!(
        meta.blocks() * 512 < meta.len() / 2,
        "restored image allocates {} of {} bytes: holes were written",
        meta.blocks() * 512,
        meta.len()
    );
    let fsck = Command::new("fsck.ext4")
        .arg("-n")
        .arg(&restored)
        .output()
        .expect("fsck.ext4");
    assert!(
        fsck.status.success(),
        "fsck.ext4 -n on the restored image: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );

    // To another block device full of garbage: holes become zeros.
    let other = t.join("other.img");
    let garbage = vec![0xA5u8; 1 << 20];
    let f = fs::File::create(&other).expect("other image");
    for i in 0..100u64 {
        f.write_all_at(&garbage, i << 20).expect("fill");
    }
    drop(f);
    let target = Loop::attach(&other).expect("second loop device");
    b.run(["restore", "latest", "--volume-target", s(&target.device)])
        .ok();
    let got = fs::read(&target.device).expect("read target device");
    assert!(
        got[..original.len()] == original[..],
        "device restore differs (holes not zeroed?)"
    );
    assert!(
        got[original.len()..].iter().all(|&b| b == 0xA5),
        "bytes past the volume changed"
    );

    // Streamed in order to stdout: the volume, and one file of a files snapshot.
    let out = b.run(["restore", "latest", "--stdout"]);
    out.ok();
    assert!(out.raw_stdout == original, "streamed volume differs");

    // A files snapshot refuses --volume-target; --stdout streams one file.
    let src = t.join("src");
    write_random_file(&src.join("f.bin"), 5, 3 << 20);
    b.backup(&[&src], &[]).ok();
    let spec = format!("latest:{}", src.join("f.bin").display());
    let out = b.run(["restore", &spec, "--stdout"]);
    out.ok();
    assert!(
        out.raw_stdout == fs::read(src.join("f.bin")).expect("read"),
        "streamed file differs"
    );
    let out = b.run(["restore", "latest", "--volume-target", s(&t.join("x.img"))]);
    assert_ne!(out.code, 0, "{out}");
    assert!(out.stderr.contains("not a volume snapshot"), "{out}");
}

/// Loop devices usable here (root, /dev/loop-control); notes the skip otherwise.
fn loops_available(test: &str) -> bool {
    if !is_root() || !Path::new("/dev/loop-control").exists() {
        note(format!("SKIPPED {test}: needs root and loop devices"));
        return false;
    }
    true
}

/// A file of `size` bytes filled with `byte` (allocated, no holes).
fn filled(path: &Path, size: u64, byte: u8) {
    let f = fs::File::create(path).expect("create");
    let block = vec![byte; 1 << 20];
    let mut at = 0;
    while at < size {
        let n = (size - at).min(block.len() as u64) as usize;
        f.write_all_at(&block[..n], at).expect("fill");
        at += n as u64;
    }
}

/// A volume image of 5 MiB + 12,345 bytes (1 MiB chunks, the last one short): random, an
/// explicit run of zeros (a hole in the snapshot, written on disk), a filesystem hole,
/// random, and a tail that is random (`tail_data`) or zeros (a trailing hole).
fn odd_volume(path: &Path, tail_data: bool) -> Vec<u8> {
    const MIB: usize = 1 << 20;
    let size = 5 * MIB + 12_345;
    let mut want = vec![0u8; size];
    want[..MIB].copy_from_slice(&random_bytes(1, MIB));
    want[3 * MIB..4 * MIB].copy_from_slice(&random_bytes(2, MIB));
    if tail_data {
        want[4 * MIB..].copy_from_slice(&random_bytes(3, size - 4 * MIB));
    }
    let f = fs::File::create(path).expect("create");
    f.write_all_at(&want[..2 * MIB], 0).expect("write");
    f.write_all_at(&want[3 * MIB..4 * MIB], 3 * MIB as u64)
        .expect("write");
    if tail_data {
        f.write_all_at(&want[4 * MIB..], 4 * MIB as u64)
            .expect("write");
    }
    f.set_len(size as u64).expect("size");
    want
}

/// A repository in `t` holding one backup of an [`odd_volume`] with a data tail.
fn with_odd_volume(t: &TestDir) -> Bunker {
    let b = t.bunker();
    b.init();
    let volume = t.join("vol.img");
    odd_volume(&volume, true);
    b.backup(&[], &["--volume", s(&volume)]).ok();
    b
}

#[test]
fn an_odd_sized_volume_with_holes_restores_exactly_onto_dirty_images_devices_and_stdout() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    for tail_data in [true, false] {
        let volume = t.join(format!("vol-{tail_data}.img"));
        let want = odd_volume(&volume, tail_data);
        b.backup(&[], &["--volume", s(&volume), "--name", "vol"])
            .ok();

        // A new image, and an existing larger one full of 0xA5: exactly the volume.
        let fresh = t.join(format!("fresh-{tail_data}.img"));
        b.run(["restore", "latest", "--volume-target", s(&fresh)])
            .ok();
        assert!(fs::read(&fresh).expect("read") == want, "new image differs");
        let dirty = t.join(format!("dirty-{tail_data}.img"));
        filled(&dirty, 8 << 20, 0xA5);
        b.run([
            "restore",
            "latest",
            "--volume-target",
            s(&dirty),
            "--verify",
        ])
        .ok();
        let got = fs::read(&dirty).expect("read");
        assert_eq!(got.len(), want.len(), "image size");
        assert!(got == want, "existing image: old bytes left in a hole?");

        // Streamed: every byte, trailing zeros included.
        let out = b.run(["restore", "latest", "--stdout"]);
        out.ok();
        assert_eq!(out.raw_stdout.len(), want.len());
        assert!(out.raw_stdout == want, "streamed volume differs");

        if !loops_available("device part of the odd-volume test") {
            continue;
        }
        let backing = t.join(format!("dev-{tail_data}.img"));
        filled(&backing, 8 << 20, 0xA5);
        let device = Loop::attach(&backing).expect("loop device");
        b.run([
            "restore",
            "latest",
            "--volume-target",
            s(&device.device),
            "--verify",
        ])
        .ok();
        let got = fs::read(&device.device).expect("read device");
        assert!(got[..want.len()] == want[..], "device: holes not zeroed?");
        assert!(
            got[want.len()..].iter().all(|&b| b == 0xA5),
            "bytes past the volume changed"
        );
    }
}

#[test]
fn a_device_smaller_than_the_volume_is_refused_untouched() {
    if !loops_available("a_device_smaller_than_the_volume_is_refused_untouched") {
        return;
    }
    let t = TestDir::new();
    let b = with_odd_volume(&t);
    let backing = t.join("small.img");
    filled(&backing, 4 << 20, 0xA5);
    let device = Loop::attach(&backing).expect("loop device");
    let out = b.run(["restore", "latest", "--volume-target", s(&device.device)]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("the device holds"), "{out}");
    assert!(!out.stdout.contains("restored snapshot"), "{out}");
    let got = fs::read(&device.device).expect("read device");
    assert!(got.iter().all(|&b| b == 0xA5), "the device was written");
}

#[test]
fn a_closed_stdout_pipe_ends_a_volume_stream_cleanly() {
    use std::io::Read;
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let volume = t.join("vol.img");
    write_random_file(&volume, 9, 24 << 20);
    b.backup(&[], &["--volume", s(&volume)]).ok();
    let (mut child, shown) = b.spawn(["restore", "latest", "--stdout"]);
    let mut stdout = child.stdout.take().expect("stdout");
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).expect("one byte");
    drop(stdout);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let status = child.wait().expect("wait");
    assert!(!stderr.contains("panicked"), "{shown}: {stderr}");
    assert_eq!(status.code(), Some(0), "{shown}: {stderr}");
}

#[test]
fn a_mounted_device_is_not_overwritten() {
    if !loops_available("a_mounted_device_is_not_overwritten") {
        return;
    }
    let t = TestDir::new();
    let b = with_odd_volume(&t);
    let backing = t.join("mounted.img");
    fs::File::create(&backing)
        .and_then(|f| f.set_len(32 << 20))
        .expect("image");
    assert!(
        tool_ok("mkfs.ext4", &["-q", "-F", s(&backing)]),
        "mkfs.ext4"
    );
    let mut device = Loop::attach(&backing).expect("loop device");
    if !device.mount(&t.join("mnt")) {
        note("SKIPPED a_mounted_device_is_not_overwritten: cannot mount");
        return;
    }
    write_file(&t.join("mnt/keep"), b"live data");
    let before = fs::read(&device.device).expect("read device");
    let out = b.run(["restore", "latest", "--volume-target", s(&device.device)]);
    let after = fs::read(&device.device).expect("read device");
    device.unmount();
    assert_eq!(out.code, 1, "a restore onto a mounted filesystem\n{out}");
    assert!(out.stderr.contains("in use"), "{out}");
    assert!(before == after, "the mounted device was written");
}

#[test]
fn a_device_whose_size_is_not_a_multiple_of_the_chunk_backs_up_exactly() {
    if !loops_available("a_device_whose_size_is_not_a_multiple_of_the_chunk_backs_up_exactly") {
        return;
    }
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    // 3 MiB + 1.5 KiB: a zero chunk in the middle, a short last chunk of data.
    let backing = t.join("odd.img");
    let size = (3 << 20) + 1536;
    let mut want = random_bytes(4, size);
    want[1 << 20..2 << 20].fill(0);
    fs::write(&backing, &want).expect("write");
    let device = Loop::attach(&backing).expect("loop device");
    assert_eq!(fs::read(&device.device).expect("read").len(), size);
    b.backup(&[], &["--volume", s(&device.device), "--name", "odd"])
        .ok();
    let out = b.run(["restore", "latest", "--stdout"]);
    out.ok();
    assert!(out.raw_stdout == want, "streamed device differs");
    let image = t.join("restored.img");
    b.run(["restore", "latest", "--volume-target", s(&image)])
        .ok();
    assert!(
        fs::read(&image).expect("read") == want,
        "restored image differs"
    );
}

#[test]
fn an_image_target_on_a_full_filesystem_says_what_to_do() {
    let t = TestDir::new();
    let Some(_tmpfs) = tmpfs_or_skip(&t.join("small"), "an_image_target_on_a_full_filesystem")
    else {
        return;
    };
    let b = t.bunker();
    b.init();
    let volume = t.join("vol.img");
    write_random_file(&volume, 12, 3 << 20);
    b.backup(&[], &["--volume", s(&volume)]).ok();
    let out = b.run([
        "restore",
        "latest",
        "--volume-target",
        s(&t.join("small/vol.img")),
    ]);
    assert_eq!(out.code, 11, "{out}");
    // A volume's image is written anew by the next run: nothing resumes.
    assert!(!out.stderr.contains("resumes"), "{out}");
    assert!(out.stderr.contains("the restore target is full"), "{out}");
    assert!(out.stderr.contains("anew"), "{out}");
}

#[test]
fn sparse_files_stream_with_their_trailing_holes() {
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let src = t.join("src");
    fs::create_dir_all(&src).expect("src");
    // Data then a trailing hole; a file that is all hole (one extent); data, hole, data.
    let tail = src.join("tail");
    let f = fs::File::create(&tail).expect("create");
    f.write_all_at(&random_bytes(7, 100_000), 0).expect("write");
    f.set_len(40 << 20).expect("size");
    let empty = src.join("all-hole");
    fs::File::create(&empty)
        .and_then(|f| f.set_len(3 << 20))
        .expect("size");
    let middle = src.join("middle");
    let f = fs::File::create(&middle).expect("create");
    f.write_all_at(&random_bytes(8, 5000), 0).expect("write");
    f.write_all_at(&random_bytes(9, 5000), 20 << 20)
        .expect("write");
    b.backup(&[&src], &[]).ok();
    for path in [&tail, &empty, &middle] {
        let spec = format!("latest:{}", path.display());
        let out = b.run(["restore", &spec, "--stdout"]);
        out.ok();
        assert!(
            out.raw_stdout == fs::read(path).expect("read"),
            "{} streams otherwise",
            path.display()
        );
    }
}

/// `/dev/vg/data` is a symlink to the device node: the volume's entry carries the node's
/// metadata (its mode, here 0600), not the link's (0777): a restore of the volume as a file
/// must not hand every user the disk's content.
#[test]
fn a_volume_named_through_a_symlink_keeps_the_devices_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let image = t.join("disk.img");
    write_random_file(&image, 13, 2 << 20);
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600)).expect("chmod");
    let link = t.join("data");
    std::os::unix::fs::symlink(&image, &link).expect("symlink");
    b.backup(&[], &["--volume", s(&link)]).ok();
    let out = t.join("out");
    b.restore("latest:/data", &out).ok();
    let meta = fs::metadata(out.join("data")).expect("restored");
    assert_eq!(meta.len(), 2 << 20);
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        0o600,
        "mode of the link's"
    );
}

/// A new image holds the whole disk: it is created private (0600, as a restore creates
/// every file until its metadata is applied), not readable by every user.
#[test]
fn a_new_volume_image_is_not_readable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let t = TestDir::new();
    let b = t.bunker();
    b.init();
    let image = t.join("disk.img");
    write_random_file(&image, 14, 2 << 20);
    fs::set_permissions(&image, fs::Permissions::from_mode(0o600)).expect("chmod");
    b.backup(&[], &["--volume", s(&image)]).ok();
    let restored = t.join("restored.img");
    b.run(["restore", "latest", "--volume-target", s(&restored)])
        .ok();
    let mode = fs::metadata(&restored)
        .expect("restored")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the image is open to others: {mode:o}");
}
