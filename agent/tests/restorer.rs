//! The restorer against a real repository in a local directory: many files, hard links,
//! sparse files, big files spanning many packs, resumed restores, streaming, and damaged
//! packs. Every test compares the restored bytes and metadata with the source.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bunker_agent::Cancel;
use bunker_agent::backup::{BackupOptions, backup};
use bunker_agent::progress::{Progress, ProgressSnapshot};
use bunker_agent::restore::{BATCH_FILES, RestoreOptions, RestoreOutcome, restore, stream_file};
use bunker_repo_format::backend::LocalBackend;
use bunker_repo_format::chunker::ChunkerParams;
use bunker_repo_format::config::RepositoryParams;
use bunker_repo_format::keyslot::KdfParams;
use bunker_repo_format::{BlobId, InitOptions, Repository};

/// Deterministic pseudo-random bytes (xorshift), so big files do not compress or dedup.
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    src: PathBuf,
    repo: Repository,
    tree: BlobId,
}

impl Fixture {
    /// Builds the source tree, a repository with 1 MiB packs, and one backup of the tree.
    /// Chunks are at most 256 KiB, so every pack holds less than 1.25 MiB and the 16 MiB of
    /// incompressible data fill at least 12 of them whatever the repository's chunker seed
    /// (with the default 8 MiB largest chunk, an unlucky seed made fewer, larger packs).
    fn new() -> Self {
        Self::with_tree(build_tree)
    }

    /// The same, with the source tree that `build` makes.
    fn with_tree(build: fn(&Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let src = root.join("src");
        build(&src);
        let backend = LocalBackend::create(root.join("repo")).unwrap();
        let repo = Repository::init(
            Arc::new(backend),
            b"password",
            InitOptions {
                params: RepositoryParams {
                    pack_size: 1 << 20,
                    chunker: ChunkerParams {
                        min_size: 16 << 10,
                        avg_size: 64 << 10,
                        max_size: 256 << 10,
                    },
                    ..RepositoryParams::default()
                },
                kdf: KdfParams {
                    memory_kib: 1024,
                    iterations: 1,
                    parallelism: 1,
                },
                ..InitOptions::default()
            },
        )
        .unwrap();
        let outcome = backup(
            &repo,
            &BackupOptions {
                paths: vec![src.clone()],
                host: "test".into(),
                ..BackupOptions::default()
            },
            &Cancel::new(),
        )
        .unwrap();
        assert!(outcome.unreadable.is_empty(), "{:?}", outcome.unreadable);
        let tree = outcome.snapshot.tree;
        Self {
            _dir: dir,
            root,
            src,
            repo,
            tree,
        }
    }

    /// Flips a byte inside blob `id` in its pack file; returns the pack's name (hex) and
    /// path.
    fn corrupt_blob(
        &self,
        index: &bunker_repo_format::index::Index,
        id: &BlobId,
    ) -> (String, PathBuf) {
        let location = index.get(id).unwrap();
        let hex = location.pack.to_hex();
        let pack_path = self.root.join("repo/data").join(&hex[..2]).join(&hex);
        let mode = fs::metadata(&pack_path).unwrap().mode();
        fs::set_permissions(&pack_path, fs::Permissions::from_mode(mode | 0o200)).unwrap();
        let mut bytes = fs::read(&pack_path).unwrap();
        bytes[(location.offset + 100) as usize] ^= 0x55;
        fs::write(&pack_path, &bytes).unwrap();
        (hex, pack_path)
    }

    fn restore_path(&self, path: &Path, target: &Path) -> RestoreOutcome {
        self.restore_with(path, target, &RestoreOptions::default())
    }

    fn restore_with(&self, path: &Path, target: &Path, options: &RestoreOptions) -> RestoreOutcome {
        let index = self.repo.load_index_for_reading().unwrap().index;
        restore(
            &self.repo,
            &index,
            &self.tree,
            path,
            target,
            options,
            &Cancel::new(),
        )
        .unwrap()
    }

    /// Restores the source directory into `target`, counting progress; returns the
    /// counters as they stand at the end.
    fn restore_counted(&self, target: &Path) -> (RestoreOutcome, ProgressSnapshot) {
        let progress = Arc::new(Progress::new());
        let options = RestoreOptions {
            progress: Some(Arc::clone(&progress)),
            ..RestoreOptions::default()
        };
        let outcome = self.restore_with(&self.src, target, &options);
        (outcome, progress.snapshot())
    }

    /// Restores the source directory itself into `target`.
    fn restore(&self, target: &Path) -> RestoreOutcome {
        self.restore_path(&self.src, target)
    }

    fn data_packs(&self) -> Vec<PathBuf> {
        let mut packs = Vec::new();
        for prefix in fs::read_dir(self.root.join("repo/data")).unwrap() {
            for pack in fs::read_dir(prefix.unwrap().path()).unwrap() {
                packs.push(pack.unwrap().path());
            }
        }
        packs.sort();
        packs
    }
}

fn set_mtime(path: &Path, sec: i64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sec as u64);
    let file = fs::File::options().write(true).open(path).unwrap();
    file.set_modified(time).unwrap();
}

/// 300 small files in 10 directories (some with identical content), hard links, a sparse
/// file, a 12 MiB random file (a dozen 1 MiB packs), a symlink; modes and times varied.
fn build_tree(src: &Path) {
    for d in 0..10 {
        let dir = src.join(format!("dir{d}"));
        fs::create_dir_all(&dir).unwrap();
        for f in 0..30 {
            let path = dir.join(format!("file{f}.txt"));
            let content = if f % 5 == 0 {
                b"the same content in many files\n".to_vec()
            } else {
                random_bytes((d * 100 + f) as u64, 100 + f * 997)
            };
            fs::write(&path, content).unwrap();
            fs::set_permissions(
                &path,
                fs::Permissions::from_mode(0o600 + (f as u32 % 3) * 0o40),
            )
            .unwrap();
            set_mtime(&path, 1_600_000_000 + (d * 100 + f) as i64);
        }
    }
    let big = random_bytes(7, 12 << 20);
    fs::write(src.join("big.bin"), &big).unwrap();
    // The same big content again: blobs feeding two files.
    fs::write(src.join("big-copy.bin"), &big).unwrap();
    fs::write(src.join("links-a"), b"hard linked\n").unwrap();
    fs::hard_link(src.join("links-a"), src.join("dir0/links-b")).unwrap();
    fs::hard_link(src.join("links-a"), src.join("dir9/links-c")).unwrap();
    let sparse = fs::File::create(src.join("sparse.img")).unwrap();
    sparse.set_len(128 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse
        .write_all_at(&random_bytes(9, 3 << 20), 64 << 20)
        .unwrap();
    sparse.write_all_at(b"tail", (128 << 20) - 4).unwrap();
    std::os::unix::fs::symlink("dir0/file1.txt", src.join("symlink")).unwrap();
    fs::set_permissions(src.join("dir3"), fs::Permissions::from_mode(0o750)).unwrap();
    for d in 0..10 {
        set_mtime_dir(&src.join(format!("dir{d}")), 1_500_000_000 + d);
    }
}

fn set_mtime_dir(path: &Path, sec: i64) {
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(sec as u64);
    let dir = fs::File::open(path).unwrap();
    dir.set_modified(time).unwrap();
}

/// Kind, mode, mtime, size, content (or symlink target), link count.
type Observed = (String, u32, i64, u64, Vec<u8>, u64);

/// Every entry under `root`: relative path -> (kind, mode, mtime, size, content or
/// symlink target, link count).
fn snapshot_of(root: &Path) -> BTreeMap<PathBuf, Observed> {
    let mut all = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let (kind, content) = if meta.is_dir() {
                stack.push(path.clone());
                ("dir", Vec::new())
            } else if meta.file_type().is_symlink() {
                (
                    "symlink",
                    fs::read_link(&path)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                )
            } else {
                ("file", fs::read(&path).unwrap())
            };
            let mtime = if meta.file_type().is_symlink() {
                0
            } else {
                meta.mtime()
            };
            all.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                (
                    kind.to_owned(),
                    meta.mode() & 0o7777,
                    mtime,
                    meta.len(),
                    content,
                    if meta.is_dir() { 0 } else { meta.nlink() },
                ),
            );
        }
    }
    all
}

fn assert_same_tree(src: &Path, restored: &Path) {
    let a = snapshot_of(src);
    let b = snapshot_of(restored);
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "entries differ"
    );
    for (path, want) in &a {
        let got = &b[path];
        assert_eq!(
            (&got.0, got.1, got.2, got.3, got.5),
            (&want.0, want.1, want.2, want.3, want.5),
            "{}: kind, mode, mtime, size or link count differ",
            path.display()
        );
        assert!(got.4 == want.4, "{}: content differs", path.display());
    }
}

#[test]
fn restore_of_many_files_hardlinks_sparse_and_big_files_is_exact() {
    let f = Fixture::new();
    assert!(
        f.data_packs().len() >= 12,
        "the big file should span many packs, found {}",
        f.data_packs().len()
    );
    let target = f.root.join("restore");
    let outcome = f.restore(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.files, 300 + 2 + 3 + 1);
    assert_eq!(outcome.files_skipped, 0);
    assert_same_tree(&f.src, &target);
    let sparse = fs::metadata(target.join("sparse.img")).unwrap();
    assert_eq!(sparse.len(), 128 << 20);
    assert!(
        sparse.blocks() * 512 < 8 << 20,
        "sparse.img allocates {} bytes: holes were written",
        sparse.blocks() * 512
    );
    let a = fs::metadata(target.join("links-a")).unwrap();
    let c = fs::metadata(target.join("dir9/links-c")).unwrap();
    assert_eq!(
        (a.ino(), a.nlink()),
        (c.ino(), 3),
        "hard links not recreated"
    );
}

/// A sparse image with 40 MiB of data, above the size the restorer writes directly: a
/// hole, data from an offset inside a block, a hole, data, and a length that ends mid-block.
fn build_large_image(src: &Path) {
    fs::create_dir_all(src).unwrap();
    let image = fs::File::create(src.join("large.img")).unwrap();
    image.set_len((64 << 20) + 1234).unwrap();
    use std::os::unix::fs::FileExt;
    image
        .write_all_at(&random_bytes(21, 30 << 20), (1 << 20) + 333)
        .unwrap();
    image
        .write_all_at(&random_bytes(22, 10 << 20), (40 << 20) + 4097)
        .unwrap();
    image.write_all_at(b"end", (64 << 20) + 1231).unwrap();
    fs::write(src.join("small.txt"), b"a small file beside it\n").unwrap();
}

/// Whether files under `dir` can be opened for direct I/O (not on tmpfs, for one).
fn direct_io_allowed(dir: &Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt;
    let probe = dir.join("direct-probe");
    let allowed = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(nix::fcntl::OFlag::O_DIRECT.bits())
        .open(&probe)
        .is_ok();
    let _ = fs::remove_file(&probe);
    allowed
}

#[test]
fn a_large_file_is_written_around_the_page_cache_and_is_exact() {
    let f = Fixture::with_tree(build_large_image);
    let target = f.root.join("restore");
    let outcome = f.restore(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_same_tree(&f.src, &target);
    let image = fs::metadata(target.join("large.img")).unwrap();
    assert!(
        image.blocks() * 512 < 48 << 20,
        "large.img allocates {} bytes: holes were written",
        image.blocks() * 512
    );
    if direct_io_allowed(&f.root) {
        // Everything but the blocks beside the holes and at the file's end: at most five
        // partial blocks (the blocks two chunks share go out whole, with the later chunk).
        assert!(
            outcome.bytes_direct < outcome.bytes && outcome.bytes - outcome.bytes_direct < 5 * 4096,
            "{} of {} bytes written directly",
            outcome.bytes_direct,
            outcome.bytes
        );
    } else {
        assert_eq!(outcome.bytes_direct, 0);
    }
}

#[test]
fn resumed_restore_leaves_correct_files_alone_and_repairs_the_rest() {
    let f = Fixture::new();
    let target = f.root.join("restore");
    f.restore(&target);

    // Correct files stay; some get wrong content of the right size, some are truncated,
    // extended or removed, one becomes a symlink.
    let wrong = target.join("dir1/file3.txt");
    let mut bytes = fs::read(&wrong).unwrap();
    bytes[10] ^= 1;
    fs::write(&wrong, &bytes).unwrap();
    let truncated = target.join("big.bin");
    fs::File::options()
        .write(true)
        .open(&truncated)
        .unwrap()
        .set_len(5 << 20)
        .unwrap();
    let sparse = target.join("sparse.img");
    fs::File::options()
        .write(true)
        .open(&sparse)
        .unwrap()
        .write_all(b"not zeros")
        .unwrap();
    fs::remove_file(target.join("dir2/file7.txt")).unwrap();
    fs::remove_file(target.join("dir4/file8.txt")).unwrap();
    std::os::unix::fs::symlink("file1.txt", target.join("dir4/file8.txt")).unwrap();
    let extended = target.join("dir5/file9.txt");
    fs::OpenOptions::new()
        .append(true)
        .open(&extended)
        .unwrap()
        .write_all(b"more")
        .unwrap();

    // Witnesses that the correct ones are not rewritten: the inode, held open so that a
    // replacement cannot be given the same number, and still linked afterwards.
    let kept = target.join("big-copy.bin");
    let kept_open = fs::File::open(&kept).unwrap();
    let kept_inode = kept_open.metadata().unwrap().ino();
    let small_kept = target.join("dir6/file11.txt");
    let small_open = fs::File::open(&small_kept).unwrap();
    let small_inode = small_open.metadata().unwrap().ino();

    let outcome = f.restore(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_same_tree(&f.src, &target);
    // 306 files: 3 names of one hard-linked inode (a file with other names is rewritten,
    // and linked again), 6 files damaged above.
    assert_eq!(outcome.files_skipped, 306 - 3 - 6, "files left alone");
    let others = (12 << 20)
        + fs::metadata(target.join("links-a")).unwrap().len()
        + fs::metadata(&wrong).unwrap().len()
        + fs::metadata(target.join("dir2/file7.txt")).unwrap().len()
        + fs::metadata(target.join("dir4/file8.txt")).unwrap().len()
        + fs::metadata(&extended).unwrap().len();
    // sparse.img's data: 3 MiB, and its tail in the last filesystem block (data regions
    // are found per block, so the stored chunk is a block, not 4 bytes).
    let sparse_written = outcome.bytes.checked_sub(others);
    assert!(
        sparse_written.is_some_and(|b| ((3 << 20) + 4..=(3 << 20) + 65536).contains(&b)),
        "only the damaged files were written: {} bytes, {others} + sparse data expected",
        outcome.bytes
    );
    assert_eq!(fs::metadata(&kept).unwrap().ino(), kept_inode);
    assert_eq!(fs::metadata(&small_kept).unwrap().ino(), small_inode);
    assert_eq!(
        kept_open.metadata().unwrap().nlink(),
        1,
        "a correct file was replaced"
    );
    assert_eq!(small_open.metadata().unwrap().nlink(), 1);
    let sparse_meta = fs::metadata(&sparse).unwrap();
    assert!(
        sparse_meta.blocks() * 512 < 8 << 20,
        "rewritten sparse file is not sparse"
    );
}

#[test]
fn stream_writes_a_file_in_order() {
    let f = Fixture::new();
    let index = f.repo.load_index_for_reading().unwrap().index;
    for name in ["big.bin", "sparse.img", "dir3/file4.txt"] {
        let mut out = Vec::new();
        let written = stream_file(
            &f.repo,
            &index,
            &f.tree,
            &f.src.join(name),
            &mut out,
            &Cancel::new(),
        )
        .unwrap();
        let want = fs::read(f.src.join(name)).unwrap();
        assert_eq!(written, want.len() as u64, "{name}: length");
        assert!(out == want, "{name}: streamed bytes differ");
    }
    let err = stream_file(
        &f.repo,
        &index,
        &f.tree,
        &f.src.join("dir3"),
        &mut Vec::new(),
        &Cancel::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is a directory"), "{err}");
    let err = stream_file(
        &f.repo,
        &index,
        &f.tree,
        Path::new("/"),
        &mut Vec::new(),
        &Cancel::new(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("not a volume snapshot"), "{err}");
}

#[test]
fn a_corrupt_pack_is_named_with_the_files_it_costs_and_the_rest_is_restored() {
    let f = Fixture::new();
    // The pack holding the last chunk of big.bin (and big-copy.bin): the files lose the
    // write that would give them their size.
    let index = f.repo.load_index_for_reading().unwrap().index;
    let located =
        bunker_agent::navigate::locate(&f.repo, &index, &f.tree, &f.src.join("big.bin")).unwrap();
    let bunker_agent::navigate::Located::Other(big) = located else {
        panic!("big.bin is a directory?")
    };
    let bunker_repo_format::tree::Node::File { extents } = &big.node else {
        panic!("not a file")
    };
    let Some(&bunker_repo_format::tree::Extent::Chunk { id, .. }) = extents.last() else {
        panic!("hole")
    };
    let (hex, pack_path) = f.corrupt_blob(&index, &id);

    let target = f.root.join("restore");
    let outcome = f.restore(&target);
    assert!(!outcome.errors.is_empty(), "a corrupt pack went unnoticed");
    for name in ["big.bin", "big-copy.bin"] {
        assert_eq!(
            fs::metadata(target.join(name)).unwrap().len(),
            12 << 20,
            "{name}, which lost content, must still have its size"
        );
    }
    let all = outcome.errors.join("\n");
    assert!(all.contains(&hex), "errors do not name pack {hex}:\n{all}");
    assert!(
        all.contains("big.bin") && all.contains("big-copy.bin"),
        "errors do not name the affected files:\n{all}"
    );
    // Everything else is exact.
    let want = fs::read(f.src.join("dir7/file13.txt")).unwrap();
    assert_eq!(fs::read(target.join("dir7/file13.txt")).unwrap(), want);
    assert_eq!(
        fs::read(target.join("sparse.img")).unwrap(),
        fs::read(f.src.join("sparse.img")).unwrap()
    );

    // A missing pack: named too.
    fs::remove_file(&pack_path).unwrap();
    let outcome = f.restore_path(&f.src, &f.root.join("restore-2"));
    let all = outcome.errors.join("\n");
    assert!(
        all.contains(&hex),
        "errors do not name missing pack {hex}:\n{all}"
    );
    assert!(all.contains("big.bin"), "{all}");
    assert_eq!(
        fs::metadata(f.root.join("restore-2/big.bin"))
            .unwrap()
            .len(),
        12 << 20,
        "a file that lost content to a missing pack must still have its size"
    );
}

/// A volume restored onto an image that a damaged pack keeps from being whole: the error
/// names the pack, and the image keeps its own permissions (it is not the restore's to
/// make private, as a file the restore created is).
#[test]
fn a_volume_that_loses_content_leaves_the_target_image_mode_alone() {
    let f = Fixture::new();
    let image = f.root.join("disk.img");
    fs::write(&image, random_bytes(77, 4 << 20)).unwrap();
    let volume = bunker_agent::backup::VolumeOptions {
        device: image.clone(),
        host: "test".into(),
        ..bunker_agent::backup::VolumeOptions::default()
    };
    let outcome = bunker_agent::backup::backup_volume(&f.repo, &volume, &Cancel::new()).unwrap();
    let index = f.repo.load_index_for_reading().unwrap().index;
    let root = outcome.snapshot.tree;
    let tree = f.repo.load_tree(&index, &root).unwrap();
    let bunker_repo_format::tree::Node::File { extents } = &tree.entries()[0].node else {
        panic!("a volume snapshot holds one file")
    };
    let Some(&bunker_repo_format::tree::Extent::Chunk { id, .. }) = extents.first() else {
        panic!("the image starts with data")
    };
    let (hex, _) = f.corrupt_blob(&index, &id);

    let target = f.root.join("target.img");
    fs::write(&target, b"old").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o644)).unwrap();
    let outcome = bunker_agent::restore::restore_volume(
        &f.repo,
        &index,
        &root,
        &target,
        None,
        &Cancel::new(),
    )
    .unwrap();
    let all = outcome.errors.join("\n");
    assert!(all.contains(&hex), "errors do not name pack {hex}:\n{all}");
    assert_eq!(fs::metadata(&target).unwrap().mode() & 0o7777, 0o644);
}

/// More files than one restore batch holds, in 20 directories: every 10th file has the
/// same content (one blob feeding files of every batch), and the first file is hard
/// linked from the last directory (a link in a later batch than its inode).
fn build_many_files(src: &Path) {
    let files = BATCH_FILES + 300;
    for i in 0..files {
        let dir = src.join(format!("d{:02}", i % 20));
        if i < 20 {
            fs::create_dir_all(&dir).unwrap();
        }
        let content = if i % 10 == 0 {
            b"shared by files of every batch\n".to_vec()
        } else {
            random_bytes(i as u64, 50 + i % 700)
        };
        let path = dir.join(format!("f{i:05}"));
        fs::write(&path, content).unwrap();
        set_mtime(&path, 1_600_000_000 + i as i64);
    }
    fs::hard_link(src.join("d00/f00000"), src.join("d19/link-to-first")).unwrap();
}

#[test]
fn a_restore_of_more_files_than_a_batch_is_exact_and_its_progress_adds_up() {
    let f = Fixture::with_tree(build_many_files);
    let target = f.root.join("restore");
    let (outcome, seen) = f.restore_counted(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let files = (BATCH_FILES + 300 + 1) as u64;
    assert_eq!(outcome.files, files);
    assert_same_tree(&f.src, &target);
    let first = fs::metadata(target.join("d00/f00000")).unwrap();
    let link = fs::metadata(target.join("d19/link-to-first")).unwrap();
    assert_eq!((first.ino(), first.nlink()), (link.ino(), 2));
    assert_eq!((seen.files, seen.expected_files), (files, files));
    assert_eq!(
        (seen.bytes, seen.expected_bytes),
        (outcome.bytes, outcome.bytes)
    );

    // Resumed: a damaged file in the last batch is rewritten, the rest is left alone, and
    // the progress still reaches its totals.
    let last = BATCH_FILES + 299;
    let damaged = target.join(format!("d{:02}/f{last:05}", last % 20));
    assert!(damaged.exists());
    fs::write(&damaged, b"wrong").unwrap();
    let (outcome, seen) = f.restore_counted(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(
        outcome.files_skipped,
        files - 3,
        "all but the damaged file and the two names of the hard-linked one"
    );
    assert_same_tree(&f.src, &target);
    assert_eq!(
        (seen.files, seen.bytes),
        (seen.expected_files, seen.expected_bytes)
    );
    assert_eq!(seen.expected_files, files);
}

#[test]
fn an_unrecorded_access_time_is_restored_as_the_modification_time() {
    let f = Fixture::new();
    let target = f.root.join("restore");
    f.restore(&target);
    let meta = fs::metadata(target.join("dir0/file1.txt")).unwrap();
    assert_eq!(meta.atime(), meta.mtime());
}

#[test]
fn under_the_common_limit_of_1024_descriptors_files_are_reopened_by_path() {
    // The limit is the whole process's: lowered here, it would fail the other tests'
    // restores running meanwhile (each may hold thousands of descriptors). So the test runs
    // in a process of its own: this test binary, asked for this test alone.
    const CHILD: &str = "BUNKER_TEST_UNDER_1024_DESCRIPTORS";
    if std::env::var_os(CHILD).is_none() {
        let name = "under_the_common_limit_of_1024_descriptors_files_are_reopened_by_path";
        let output = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        return;
    }
    use nix::sys::resource::{Resource, setrlimit};
    setrlimit(Resource::RLIMIT_NOFILE, 1024, 1024).unwrap();
    let f = Fixture::with_tree(build_many_files);
    let target = f.root.join("restore");
    let outcome = f.restore(&target);
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_eq!(outcome.files, (BATCH_FILES + 300 + 1) as u64);
    assert_same_tree(&f.src, &target);
}

#[test]
fn an_interrupted_restore_stops_both_the_walk_and_the_writer_and_can_be_run_again() {
    let f = Fixture::with_tree(build_many_files);
    let index = f.repo.load_index_for_reading().unwrap().index;
    let target = f.root.join("restore");
    let run = |cancel: &Cancel, progress: Option<Arc<Progress>>| {
        restore(
            &f.repo,
            &index,
            &f.tree,
            &f.src,
            &target,
            &RestoreOptions {
                progress,
                ..RestoreOptions::default()
            },
            cancel,
        )
    };

    let cancelled = Cancel::new();
    cancelled.cancel();
    assert!(matches!(
        run(&cancelled, None),
        Err(bunker_agent::restore::RestoreError::Interrupted)
    ));
    // The count of what the restore would write, beside its walk, stops too.
    let progress = Arc::new(Progress::new());
    assert!(matches!(
        run(&cancelled, Some(Arc::clone(&progress))),
        Err(bunker_agent::restore::RestoreError::Interrupted)
    ));
    let counted = progress.snapshot();
    assert_eq!((counted.expected_files, counted.expected_bytes), (0, 0));

    // Cancelled from outside once the writer has written something: the restore ends
    // (interrupted, or done if it was quicker), and it never hangs.
    let cancel = Cancel::new();
    let progress = Arc::new(Progress::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while progress.snapshot().bytes == 0 && !cancel.is_cancelled() {
                std::thread::yield_now();
            }
            cancel.cancel();
        });
        let result = run(&cancel, Some(Arc::clone(&progress)));
        cancel.cancel();
        assert!(
            matches!(
                result,
                Ok(_) | Err(bunker_agent::restore::RestoreError::Interrupted)
            ),
            "{result:?}"
        );
    });

    let outcome = run(&Cancel::new(), None).unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert_same_tree(&f.src, &target);
}

/// A volume restore onto a block device interrupted while its holes are zeroed is an
/// interruption (exit 130, "restore interrupted"), as one interrupted while its chunks are
/// written is, not a write error of the device.
#[test]
fn a_device_restore_interrupted_while_zeroing_holes_is_an_interruption() {
    use std::os::unix::fs::FileExt;
    use std::process::Command;
    if !nix::unistd::geteuid().is_root() || !Path::new("/dev/loop-control").exists() {
        eprintln!("SKIPPED: needs root and loop devices");
        return;
    }
    let f = Fixture::new();
    // Data, a hole of 2 MiB, data.
    let image = f.root.join("disk.img");
    let file = fs::File::create(&image).unwrap();
    file.write_all_at(&random_bytes(5, 1 << 20), 0).unwrap();
    file.write_all_at(&random_bytes(6, 1 << 20), 3 << 20)
        .unwrap();
    drop(file);
    let volume = bunker_agent::backup::VolumeOptions {
        device: image,
        host: "test".into(),
        ..bunker_agent::backup::VolumeOptions::default()
    };
    let outcome = bunker_agent::backup::backup_volume(&f.repo, &volume, &Cancel::new()).unwrap();
    let index = f.repo.load_index_for_reading().unwrap().index;

    let backing = f.root.join("device.img");
    fs::File::create(&backing)
        .and_then(|file| file.set_len(8 << 20))
        .unwrap();
    let out = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!("SKIPPED: losetup failed");
        return;
    }
    let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let cancel = Cancel::new();
    cancel.cancel();
    let result = bunker_agent::restore::restore_volume(
        &f.repo,
        &index,
        &outcome.snapshot.tree,
        &device,
        None,
        &cancel,
    );
    let _ = Command::new("losetup").arg("-d").arg(&device).status();
    assert!(
        matches!(
            result,
            Err(bunker_agent::restore::RestoreError::Interrupted)
        ),
        "{result:?}"
    );
}
