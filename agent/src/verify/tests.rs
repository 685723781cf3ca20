//! The verification pass finds each kind of difference on a real restored tree.

use std::fs;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunker_repo_format::backend::{Backend, MemoryBackend};
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::{InitOptions, Repository};

use super::*;
use crate::backup::{BackupOptions, backup};

struct Fixture {
    _dir: tempfile::TempDir,
    repo: Repository,
    snapshot: Snapshot,
    source: PathBuf,
    target: PathBuf,
}

fn set_mtime(path: &Path, sec: i64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sec as u64);
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(time).unwrap();
}

/// Backs up a small tree (files, a sparse file, a symlink, a hard link, an xattr when the
/// filesystem has them) into a memory repository and restores it to `target`.
fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("src");
    fs::create_dir_all(source.join("sub")).unwrap();
    fs::write(source.join("a.txt"), b"hello, drill\n".repeat(1000)).unwrap();
    fs::write(
        source.join("sub/b.bin"),
        (0..200_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>(),
    )
    .unwrap();
    let sparse = fs::File::create(source.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    sparse.write_all_at(b"tail", (8 << 20) - 4).unwrap();
    std::os::unix::fs::symlink("a.txt", source.join("link")).unwrap();
    fs::hard_link(source.join("a.txt"), source.join("sub/hard")).unwrap();
    let _ = xattr::set(source.join("sub/b.bin"), "user.role", b"data");
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"pw", options).unwrap();
    let outcome = backup(
        &repo,
        &BackupOptions {
            paths: vec![source.clone()],
            host: "h".into(),
            ..BackupOptions::default()
        },
        &Cancel::new(),
    )
    .unwrap();
    let target = dir.path().join("target");
    Fixture {
        _dir: dir,
        repo,
        snapshot: outcome.snapshot,
        source,
        target,
    }
}

impl Fixture {
    fn drill(&self) -> RestoreAndVerify {
        let index = self.repo.load_index().unwrap().index;
        let target = Target::fresh(Some(&self.target)).unwrap();
        restore_and_verify(
            &self.repo,
            &index,
            &self.snapshot,
            target.path(),
            &VerifyOptions::default(),
            &Cancel::new(),
        )
        .unwrap()
    }

    fn verify(&self) -> Verification {
        let index = self.repo.load_index().unwrap().index;
        verify_tree(
            &self.repo,
            &index,
            &self.snapshot.tree,
            &self.target,
            &VerifyOptions::default(),
        )
    }

    /// The restored copy of `rel` (a path relative to the source).
    fn restored(&self, rel: &str) -> PathBuf {
        let inner = self.source.strip_prefix("/").unwrap();
        self.target.join(inner).join(rel)
    }
}

/// The single difference found, as "path-suffix: what".
fn only(found: &Verification) -> &Difference {
    assert_eq!(found.differences.len(), 1, "{:#?}", found.differences);
    &found.differences[0]
}

#[test]
fn an_exact_restore_has_no_differences() {
    let f = fixture();
    let drill = f.drill();
    assert!(
        drill.restore.errors.is_empty(),
        "{:?}",
        drill.restore.errors
    );
    let verification = drill.verification.unwrap();
    assert!(
        verification.differences.is_empty(),
        "{:#?}",
        verification.differences
    );
    assert_eq!(verification.files, 4);
    assert_eq!(verification.bytes, 13_000 * 2 + 200_000 + (8 << 20));
    assert_eq!(drill.restored, f.target);
}

#[test]
fn a_changed_byte_is_named_with_its_offset() {
    let f = fixture();
    f.drill();
    let path = f.restored("sub/b.bin");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.write_all_at(b"X", 100_000).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let found = f.verify();
    let d = only(&found);
    assert_eq!(d.path, path);
    assert!(d.what.starts_with("content differs at offset"), "{d}");
}

#[test]
fn data_in_a_hole_is_found() {
    let f = fixture();
    f.drill();
    let path = f.restored("sparse");
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    let file = fs::File::options().write(true).open(&path).unwrap();
    file.write_all_at(b"\x01", 4096).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    let found = f.verify();
    let d = only(&found);
    assert!(d.what.contains("reads non-zero at offset 4096"), "{d}");
}

#[test]
fn mode_mtime_size_and_symlink_changes_are_each_named() {
    let f = fixture();
    f.drill();
    fs::set_permissions(f.restored("sub/b.bin"), fs::Permissions::from_mode(0o600)).unwrap();
    set_mtime(&f.restored("a.txt"), 1_000_000);
    let grown = f.restored("sparse");
    let mtime = fs::metadata(&grown).unwrap().modified().unwrap();
    let file = fs::File::options().write(true).open(&grown).unwrap();
    file.set_len(9 << 20).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    fs::remove_file(f.restored("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", f.restored("link")).unwrap();
    let found = f.verify();
    let text: Vec<String> = found.differences.iter().map(|d| d.to_string()).collect();
    let has = |suffix: &str, what: &str| {
        text.iter()
            .any(|t| t.contains(&format!("{suffix}: {what}")))
    };
    assert!(
        has("sub/b.bin", "mode 600, the snapshot has 644"),
        "{text:#?}"
    );
    assert!(has("a.txt", "mtime 1000000.000000000"), "{text:#?}");
    assert!(
        has("sparse", "size 9437184, the snapshot has 8388608"),
        "{text:#?}"
    );
    assert!(
        has(
            "link",
            "symlink target \"elsewhere\", the snapshot has \"a.txt\""
        ),
        "{text:#?}"
    );
    // The hard link shares a.txt's inode, so its mtime changed too.
    assert!(has("sub/hard", "mtime 1000000.000000000"), "{text:#?}");
    // Replacing the symlink changed its own and its directory's mtime.
    assert!(has("link", "mtime "), "{text:#?}");
    assert!(has("src", "mtime "), "{text:#?}");
    assert_eq!(text.len(), 7, "{text:#?}");
}

#[test]
fn missing_extra_retyped_and_unlinked_entries_are_found() {
    let f = fixture();
    f.drill();
    let dir_mtime = fs::metadata(f.restored("sub")).unwrap().modified().unwrap();
    let hard = f.restored("sub/hard");
    let mtime = fs::metadata(&hard).unwrap().modified().unwrap();
    fs::remove_file(&hard).unwrap();
    fs::copy(f.restored("a.txt"), &hard).unwrap();
    fs::File::options()
        .write(true)
        .open(&hard)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    fs::remove_file(f.restored("sub/b.bin")).unwrap();
    fs::create_dir(f.restored("sub/b.bin")).unwrap();
    fs::write(f.restored("sub/extra"), b"x").unwrap();
    fs::File::open(f.restored("sub"))
        .unwrap()
        .set_modified(dir_mtime)
        .unwrap();
    let found = f.verify();
    let text: Vec<String> = found.differences.iter().map(|d| d.to_string()).collect();
    let has = |suffix: &str, what: &str| {
        text.iter()
            .any(|t| t.contains(&format!("{suffix}: {what}")))
    };
    assert!(has("sub/hard", "not hard-linked to"), "{text:#?}");
    assert!(
        has("sub/b.bin", "is a dir, the snapshot has a file"),
        "{text:#?}"
    );
    assert!(has("sub/extra", "not in the snapshot"), "{text:#?}");
    fs::remove_dir(f.restored("sub/b.bin")).unwrap();
    let found = f.verify();
    assert!(
        found.differences.iter().any(|d| d
            .to_string()
            .ends_with("sub/b.bin: missing (file expected)")),
        "{:#?}",
        found.differences
    );
}

#[test]
fn a_changed_extended_attribute_is_named() {
    let f = fixture();
    f.drill();
    let path = f.restored("sub/b.bin");
    if xattr::get(&path, "user.role").ok().flatten().is_none() {
        eprintln!("skipped: no user xattrs on this filesystem");
        return;
    }
    xattr::set(&path, "user.role", b"other").unwrap();
    let found = f.verify();
    let d = only(&found);
    assert!(
        d.what.starts_with("extended attributes differ (user.role)"),
        "{d}"
    );
}

#[test]
fn a_target_must_be_fresh_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let busy = dir.path().join("busy");
    fs::create_dir(&busy).unwrap();
    fs::write(busy.join("f"), b"x").unwrap();
    let err = Target::fresh(Some(&busy)).unwrap_err();
    assert!(err.to_string().contains("is not empty"), "{err}");
    let target = Target::fresh(None).unwrap();
    let path = target.path().to_owned();
    fs::create_dir(path.join("locked")).unwrap();
    fs::write(path.join("locked/f"), b"x").unwrap();
    fs::set_permissions(path.join("locked"), fs::Permissions::from_mode(0o500)).unwrap();
    target.remove().unwrap();
    assert!(!path.exists());
}

/// An image file restored with bytes past the end of the volume is not an exact restore:
/// only a device may be larger than the volume (FORMAT of `verify_volume`).
#[test]
fn an_image_longer_than_the_volume_is_a_difference() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    fs::write(
        &image,
        (0..3_000_000u32)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    let options = InitOptions {
        kdf: KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repo = Repository::init(backend, b"pw", options).unwrap();
    let volume = crate::backup::VolumeOptions {
        device: image.clone(),
        host: "h".into(),
        ..crate::backup::VolumeOptions::default()
    };
    let outcome = crate::backup::backup_volume(&repo, &volume, &Cancel::new()).unwrap();
    let index = repo.load_index().unwrap().index;
    let exact = verify_volume(&repo, &index, &outcome.snapshot.tree, &image).unwrap();
    assert!(exact.differences.is_empty(), "{:#?}", exact.differences);

    let file = fs::OpenOptions::new().append(true).open(&image).unwrap();
    file.write_all_at(b"trailing garbage", 3_000_000).unwrap();
    drop(file);
    let longer = verify_volume(&repo, &index, &outcome.snapshot.tree, &image).unwrap();
    let difference = only(&longer);
    assert!(
        difference.what.contains("size 3000016"),
        "{}",
        difference.what
    );
}
