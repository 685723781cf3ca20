//! `bunker mount`: snapshots browsed through a real FUSE mount, compared entry by entry and
//! byte for byte with the source they were backed up from.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::*;

fn is_mounted(path: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let wanted = path.display().to_string();
    mounts
        .lines()
        .any(|line| line.split(' ').nth(1) == Some(wanted.as_str()))
}

/// A tree with what a mount must show exactly: content over several blobs, a hole, modes,
/// a symlink, a fifo, hard links, an empty directory, a name that is not UTF-8, xattrs
/// and devices where allowed.
fn build_tree(src: &Path) {
    write_random_file(&src.join("data/big.bin"), 11, 5 << 20);
    let mut sparse = random_bytes(12, 1 << 20);
    sparse.resize(6 << 20, 0);
    sparse.extend(random_bytes(13, 1000));
    write_file(&src.join("data/sparse.img"), &sparse);
    write_file(&src.join("etc/app.conf"), b"listen = 8080\n");
    chmod(&src.join("etc/app.conf"), 0o640);
    write_file(&src.join("etc/secret"), b"s3cret\n");
    chmod(&src.join("etc/secret"), 0o600);
    std::os::unix::fs::symlink("../data/big.bin", src.join("etc/link")).expect("symlink");
    write_file(&src.join("data/shared.txt"), b"one file, two names\n");
    fs::hard_link(src.join("data/shared.txt"), src.join("etc/shared-link")).expect("link");
    mkfifo(&src.join("etc/fifo"));
    fs::create_dir_all(src.join("empty")).expect("empty dir");
    let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
    write_file(&src.join(odd), b"latin-1 name\n");
    if user_xattrs_supported(src) {
        xattr::set(src.join("etc/app.conf"), "user.origin", b"\x00binary\xff").expect("xattr");
    }
    if is_root() {
        mknod(&src.join("etc/null"), "c", 1, 3);
    }
    set_all_mtimes(src, 1_600_000_000);
}

/// Starts `bunker mount` on a new directory `mnt` (with `extra` arguments) and waits
/// until it serves.
fn mount(b: &Bunker, t: &TestDir, extra: &[&str]) -> (PathBuf, UnmountOnDrop, Child, String) {
    let mountpoint = t.join("mnt");
    fs::create_dir(&mountpoint).expect("mountpoint");
    let guard = UnmountOnDrop(mountpoint.clone());
    let mut args = vec![OsStr::new("mount"), mountpoint.as_os_str()];
    args.extend(extra.iter().map(OsStr::new));
    let (mut child, shown) = b.spawn(args);
    wait_mounted(&mut child, &mountpoint);
    (mountpoint, guard, child, shown)
}

/// Waits until the mount shows `snapshots/`, or fails with what the command printed.
fn wait_mounted(child: &mut Child, mountpoint: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !mountpoint.join("snapshots").is_dir() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("bunker mount ended before mounting: {status}");
        }
        assert!(Instant::now() < deadline, "not mounted after 60 s");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_mount_shows_every_snapshot_as_it_was_backed_up_and_ctrl_c_unmounts_it() {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        note("skipped: mounting FUSE needs root and /dev/fuse");
        return;
    }
    let t = TestDir::new();
    let src = t.join("src");
    build_tree(&src);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &["--host", "web1"]).ok();
    let first = b.snapshots();
    let first_id = str_field(&first[0], "short_id").to_owned();
    write_file(&src.join("etc/app.conf"), b"listen = 9090\n");
    set_mtime(&src.join("etc/app.conf"), 1_700_000_000, 123_456_789);
    b.backup(&[&src], &["--host", "web1", "--tag", "env=prod"])
        .ok();

    let (mountpoint, _guard, child, shown) = mount(&b, &t, &["--refresh", "0s"]);

    // The newest snapshot is the source as it is now: every name, type, mode, owner,
    // mtime, symlink target, device number, xattr and byte.
    let latest = mountpoint.join("snapshots/latest");
    compare_trees(&src, &under(&latest, &src));
    // A file read in pieces at offsets that cross blob boundaries, and its hole.
    let big = fs::read(src.join("data/big.bin")).expect("big");
    let file = fs::File::open(under(&latest, &src.join("data/big.bin"))).expect("open");
    for offset in [0u64, 1_048_000, (3 << 20) + 17, (5 << 20) - 10] {
        use std::os::unix::fs::FileExt;
        let mut piece = vec![0u8; 300_000];
        let n = file.read_at(&mut piece, offset).expect("read_at");
        let start = offset as usize;
        assert_eq!(&piece[..n], &big[start..(start + 300_000).min(big.len())]);
    }

    // The older snapshot by its id, as it was then.
    let older = mountpoint.join("ids").join(&first_id);
    assert_eq!(
        fs::read(under(&older, &src.join("etc/app.conf"))).expect("old conf"),
        b"listen = 8080\n"
    );
    // Hosts and tags link to their snapshots.
    let host_dir = mountpoint.join("hosts/web1");
    let mut by_host: Vec<String> = fs::read_dir(&host_dir)
        .expect("hosts/web1")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    by_host.sort();
    assert_eq!(by_host.len(), 3, "{by_host:?}");
    assert!(
        by_host.iter().any(|name| name.ends_with(&first_id)),
        "{by_host:?}"
    );
    assert_eq!(by_host[2], "latest");
    let tagged: Vec<PathBuf> = fs::read_dir(mountpoint.join("tags/env=prod"))
        .expect("tags/env=prod")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(tagged.len(), 2, "{tagged:?}");
    for link in &tagged {
        assert_eq!(
            fs::read(under(link, &src.join("etc/app.conf"))).expect("tagged conf"),
            b"listen = 9090\n"
        );
    }
    // Read-only.
    let err = fs::write(under(&latest, &src.join("etc/new")), b"x").expect_err("read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");

    // A snapshot made while mounted appears, its data read through the index read again;
    // a forgotten one goes. (The kernel keeps a layout name for a second.)
    write_file(&src.join("etc/app.conf"), b"listen = 7070\n");
    b.backup(&[&src], &["--host", "web1"]).ok();
    b.run(["forget", &first_id]).ok();
    std::thread::sleep(Duration::from_millis(1100));
    let listed = |dir: &str| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(mountpoint.join(dir))
            .expect("a layout directory")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut now: Vec<String> = b
        .snapshots()
        .iter()
        .map(|snap| str_field(snap, "short_id").to_owned())
        .collect();
    now.sort();
    assert_eq!(listed("ids"), now, "ids/ after a backup and a forget");
    assert_eq!(listed("snapshots").len(), 3, "{:?}", listed("snapshots"));
    assert_eq!(listed("hosts/web1").len(), 3, "{:?}", listed("hosts/web1"));
    assert_eq!(
        fs::read(under(&latest, &src.join("etc/app.conf"))).expect("the new latest"),
        b"listen = 7070\n"
    );
    assert!(!mountpoint.join("ids").join(&first_id).exists());

    // Ctrl-C unmounts it and ends the command cleanly, even with a file still open in it.
    send_signal(child.id(), "INT");
    let out = wait_output(child, shown, Duration::from_secs(30));
    out.ok();
    assert!(out.stderr.contains("2 snapshot(s)"), "{out}");
    assert!(out.stderr.contains("still had files open"), "{out}");
    drop(file);
    assert!(!is_mounted(&mountpoint), "still mounted after Ctrl-C");
}

#[test]
fn a_damaged_blob_fails_its_read_with_eio_the_rest_is_served_and_umount_ends_the_command() {
    if !is_root() || !Path::new("/dev/fuse").exists() {
        note("skipped: mounting FUSE needs root and /dev/fuse");
        return;
    }
    let t = TestDir::new();
    let src = t.join("src");
    write_file(&src.join("small.txt"), b"small and intact\n");
    write_random_file(&src.join("big.bin"), 21, 3 << 20);
    let b = t.bunker();
    b.init();
    b.backup(&[&src], &[]).ok();
    // Damage the middle of the largest data pack: inside big.bin's blobs.
    let largest = repo_objects(b.repo(), "data")
        .into_iter()
        .map(|name| b.repo().join(name))
        .max_by_key(|path| fs::metadata(path).map(|m| m.len()).unwrap_or(0))
        .expect("a data pack");
    flip_byte(&largest, fs::metadata(&largest).expect("pack").len() / 2);

    // Only onto an empty directory: never over a file, nor hiding what a directory holds.
    for (not_empty_dir, why) in [
        (src.clone(), "not empty"),
        (src.join("small.txt"), "Not a directory"),
    ] {
        let out = b.run([OsStr::new("mount"), not_empty_dir.as_os_str()]);
        out.code(1);
        assert!(out.stderr.contains(why), "{out}");
        assert!(!is_mounted(&not_empty_dir));
    }

    let (mountpoint, _guard, child, shown) = mount(&b, &t, &[]);
    let latest = mountpoint.join("snapshots/latest");
    let err = fs::read(under(&latest, &src.join("big.bin"))).expect_err("damaged");
    assert_eq!(err.raw_os_error(), Some(5), "EIO: {err}");
    assert_eq!(
        fs::read(under(&latest, &src.join("small.txt"))).expect("intact"),
        b"small and intact\n"
    );

    // `umount` from outside ends the command, exit 0, naming the damaged blob on the way.
    unmount(&mountpoint);
    let out = wait_output(child, shown, Duration::from_secs(30));
    out.ok();
    assert!(out.stderr.contains("cannot read data blob"), "{out}");
    assert!(!is_mounted(&mountpoint));
}
