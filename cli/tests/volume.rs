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
