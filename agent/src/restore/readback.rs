//! `restore --verify`: each file a batch wrote is read back from the target before it
//! gets its metadata, every chunk hashed with the repository's keyed hash against its id
//! and every hole read as zeros (the check `bunker verify` makes of a drill's restore).
//!
//! The unseal stage already re-hashed every chunk on its way out; this pass proves the
//! other half, that the filesystem gives back what was written (a short or misplaced
//! write, a file changed by someone else meanwhile, a faulty device or driver). It reads
//! what a program reading the file would get, through the page cache. A file that differs
//! is reported as not restored in full and is left without its metadata, as one whose
//! content did not arrive.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::fd::AsFd;

use bunker_repo_format::Repository;
use bunker_repo_format::tree::Extent;
use rayon::prelude::*;

use super::plan::PlannedFile;
use crate::platform;
use crate::verify::first_difference;

/// What reading a batch back found.
#[derive(Debug, Default)]
pub(super) struct ReadBack {
    /// Files read back and found equal to the snapshot.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The files that differ: their number in the batch and what differs, naming the path.
    pub differences: Vec<(u32, String)>,
}

/// Reads back every file of `files` that carries its extents, except those numbered in
/// `failed` (already reported).
pub(super) fn read_back(
    repo: &Repository,
    files: &[PlannedFile],
    failed: &BTreeSet<u32>,
) -> ReadBack {
    let checked: Vec<(u32, &PlannedFile, &[Extent])> = files
        .iter()
        .enumerate()
        .filter_map(|(number, file)| {
            let number = u32::try_from(number).ok()?;
            let extents = file.verify_against.as_deref()?;
            (!failed.contains(&number)).then_some((number, file, extents))
        })
        .collect();
    let found: Vec<(u32, &PlannedFile, Option<String>)> = checked
        .par_iter()
        .map(|&(number, file, extents)| (number, file, difference(repo, file, extents)))
        .collect();
    let mut read_back = ReadBack::default();
    for (number, file, difference) in found {
        match difference {
            None => {
                read_back.files += 1;
                read_back.bytes += file.size;
            }
            Some(what) => {
                let message = format!("{}: verification: {what}", file.path.display());
                read_back.differences.push((number, message));
            }
        }
    }
    read_back
}

/// The restored file, opened to read: through the descriptor the restore wrote it through
/// when it kept one (the same inode, however long its path: a file whose path is too long
/// for the kernel is always kept open), else by its path, never through a symlink.
fn open_to_read(file: &PlannedFile) -> std::io::Result<File> {
    match &file.handle {
        Some(handle) => File::open(platform::fd_path(handle.as_fd())),
        None => super::reopen::reopen(&file.path, file.identity, false),
    }
}

/// How the file at `file.path` differs from `extents`, or `None` when it holds them.
fn difference(repo: &Repository, file: &PlannedFile, extents: &[Extent]) -> Option<String> {
    let opened = match open_to_read(file) {
        Ok(opened) => opened,
        Err(e) => return Some(format!("could not open it to read it back: {e}")),
    };
    match opened.metadata() {
        Ok(meta) if meta.len() != file.size => {
            return Some(format!(
                "size {}, the snapshot has {}",
                meta.len(),
                file.size
            ));
        }
        Ok(_) => {}
        Err(e) => return Some(format!("could not read it back: {e}")),
    }
    match first_difference(repo, &opened, extents) {
        Ok(found) => found,
        Err(e) => Some(format!("could not read it back: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::Arc;

    use bunker_repo_format::InitOptions;
    use bunker_repo_format::backend::{Backend, LocalBackend};
    use bunker_repo_format::keyslot::KdfParams;

    use super::*;

    fn planned(path: &std::path::Path, size: u64, extents: Vec<Extent>) -> PlannedFile {
        PlannedFile {
            path: path.to_owned(),
            handle: None,
            size,
            meta: None,
            direct: None,
            verify_against: Some(extents),
            created_open: false,
            identity: None,
        }
    }

    #[test]
    fn a_file_that_reads_back_otherwise_is_named_and_the_others_pass() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend: Arc<dyn Backend> =
            Arc::new(LocalBackend::create(dir.path().join("repo")).expect("backend"));
        let options = InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        let repo = Repository::init(backend, b"pw", options).expect("init");
        let content = b"the snapshot's bytes".to_vec();
        let chunk = Extent::Chunk {
            id: repo.blob_id(&content),
            length: content.len() as u32,
        };
        let hole = Extent::Hole { length: 4096 };
        let size = content.len() as u64 + 4096;

        let good = dir.path().join("good");
        let mut bytes = content.clone();
        bytes.resize(size as usize, 0);
        fs::write(&good, &bytes).expect("write");
        let flipped = dir.path().join("flipped");
        bytes[3] ^= 1;
        fs::write(&flipped, &bytes).expect("write");
        let stained_hole = dir.path().join("stained-hole");
        bytes[3] ^= 1;
        bytes[size as usize - 1] = 7;
        fs::write(&stained_hole, &bytes).expect("write");
        let short = dir.path().join("short");
        fs::write(&short, &content).expect("write");
        let failed_already = dir.path().join("failed-already");
        fs::write(&failed_already, b"x").expect("write");
        // The hole a hole of the file's own: not read, and fine.
        let sparse = dir.path().join("sparse");
        fs::write(&sparse, &content).expect("write");
        fs::File::options()
            .write(true)
            .open(&sparse)
            .and_then(|file| file.set_len(size))
            .expect("extend");
        // A byte written into that hole is found where the file's data is.
        let sparse_stained = dir.path().join("sparse-stained");
        fs::copy(&sparse, &sparse_stained).expect("copy");
        fs::File::options()
            .write(true)
            .open(&sparse_stained)
            .and_then(|file| std::os::unix::fs::FileExt::write_at(&file, &[7], size - 2))
            .expect("stain");

        let files: Vec<PlannedFile> = [
            &good,
            &flipped,
            &stained_hole,
            &short,
            &failed_already,
            &sparse,
            &sparse_stained,
        ]
        .into_iter()
        .map(|path| planned(path, size, vec![chunk, hole]))
        .collect();
        let found = read_back(&repo, &files, &BTreeSet::from([4]));
        assert_eq!(found.files, 2, "the good and the sparse file pass");
        assert_eq!(found.bytes, 2 * size);
        let numbers: Vec<u32> = found.differences.iter().map(|(n, _)| *n).collect();
        assert_eq!(numbers, [1, 2, 3, 6], "{:?}", found.differences);
        let messages: Vec<&str> = found.differences.iter().map(|(_, m)| m.as_str()).collect();
        assert!(
            messages[0].contains("content differs at offset 0"),
            "{messages:?}"
        );
        assert!(messages[1].contains("reads non-zero"), "{messages:?}");
        assert!(messages[2].contains(&format!("size 20, the snapshot has {size}")));
        let at = format!("reads non-zero at offset {}", size - 2);
        assert!(messages[3].contains(&at), "{messages:?}");
    }
}
