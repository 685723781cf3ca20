//! Resumable restores: is the file already at the target the one the snapshot holds?
//!
//! The check is cheap yet sound. Cheap: a file whose type or size differs is rejected by one
//! `lstat`; a file of the right size is read once, locally, in parallel on the rayon pool,
//! with no repository traffic and no writes. Sound: every chunk's bytes are hashed with the
//! repository's keyed BLAKE3 and compared with the chunk id stored in the tree (the same
//! check a fetched chunk passes), and every hole must read as zeros, so a file is skipped
//! only when its content equals the snapshot's byte for byte (up to a BLAKE3 collision).
//! Timestamps are deliberately not trusted: an edited file may keep its mtime, and a file
//! left half-written by an interrupted restore has whatever mtime creation gave it.
//! Metadata (mode, owner, times, xattrs) is applied again to a skipped file, which is cheap
//! and idempotent. A file with more than one name is never left alone (see
//! [`already_restored`]).

use std::cell::RefCell;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use bunker_repo_format::Repository;
use bunker_repo_format::chunker::{READ_ALIGN, read_front};
use bunker_repo_format::tree::Extent;
use rayon::prelude::*;

use crate::platform::DataRegions;

/// Bytes of a hole read at a time when checking it is all zeros.
const HOLE_READ: u64 = 1 << 20;

/// True when `path` is a regular file of `size` bytes whose content is `extents`.
///
/// A missing file, another kind of entry, or a file that cannot be read is simply "not
/// restored" (it will be replaced); only an `lstat` failure other than "not found" (or
/// "not a directory", a file where the snapshot has a directory on the way) is an error.
pub(super) fn already_restored(
    repo: &Repository,
    path: &Path,
    extents: &[Extent],
    size: u64,
) -> io::Result<bool> {
    let Some(meta) = existing(path)? else {
        return Ok(false);
    };
    // A file with other names is never in place, whatever it holds: the metadata applied
    // to it would reach every name, including one outside the target (a hard link planted
    // to a setuid's content), and a write through one name would change the others. It
    // is replaced by a file of its own; the snapshot's own hard links are made again.
    if !meta.is_file() || meta.len() != size || meta.nlink() > 1 {
        return Ok(false);
    }
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    else {
        return Ok(false);
    };
    let mut pieces = Vec::with_capacity(extents.len());
    let mut offset = 0u64;
    for extent in extents {
        pieces.push((offset, *extent));
        offset += extent.length();
    }
    Ok(pieces.par_iter().all(|(offset, extent)| {
        extent_difference(repo, &file, *offset, extent).is_ok_and(|d| d.is_none())
    }))
}

/// What is at `path` (not following a symlink), or `None` when nothing is: not found, or
/// below a file (a dry run sees the target as it is, a file where the snapshot has a
/// directory on the way).
pub(super) fn existing(path: &Path) -> io::Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// How the bytes of `file` at `offset` differ from `extent`: `None` when they are its
/// bytes (a chunk hashes to its id; a hole reads as zeros, and only the file's data in it
/// is read). Also the verification pass of [`crate::verify`], which reports the message.
/// The caller has checked the file's size: past its end, a hole finds no data.
pub(crate) fn extent_difference(
    repo: &Repository,
    file: &File,
    offset: u64,
    extent: &Extent,
) -> io::Result<Option<String>> {
    READ_BUFFER.with_borrow_mut(|buffer| {
        let difference = match *extent {
            Extent::Chunk { id, length } => {
                let bytes = read_at(file, offset, length as usize, buffer)?;
                (repo.blob_id(bytes) != id).then(|| {
                    format!("content differs at offset {offset} (the {length} bytes of chunk {id})")
                })
            }
            // Only what the file holds as data is read: a hole of its own reads as zeros.
            Extent::Hole { length } => {
                let mut regions = DataRegions::within(offset..offset + length);
                let mut difference = None;
                while difference.is_none()
                    && let Some(region) = regions.next_region(file)?
                {
                    let mut at = region.start;
                    while at < region.end && difference.is_none() {
                        let piece = (region.end - at).min(HOLE_READ) as usize;
                        let bytes = read_at(file, at, piece, buffer)?;
                        difference = bytes.iter().position(|&b| b != 0).map(|found| {
                            format!(
                                "hole of {length} bytes at offset {offset} reads non-zero at \
                                 offset {}",
                                at + found as u64
                            )
                        });
                        at += piece as u64;
                    }
                }
                difference
            }
        };
        // A rare large chunk does not keep its memory for the rest of the run.
        buffer.truncate(KEPT_READ_BUFFER);
        buffer.shrink_to(KEPT_READ_BUFFER);
        Ok(difference)
    })
}

thread_local! {
    /// Each thread's buffer for the bytes it compares, reused.
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Largest read buffer a thread keeps between comparisons.
const KEPT_READ_BUFFER: usize = (2 << 20) + READ_ALIGN;

/// Reads `length` bytes of `file` at `offset` into `buffer`, where the memory agrees with
/// the offset modulo [`READ_ALIGN`] (the kernel's copy is slow otherwise).
fn read_at<'b>(
    file: &File,
    offset: u64,
    length: usize,
    buffer: &'b mut Vec<u8>,
) -> io::Result<&'b [u8]> {
    if buffer.len() < length + READ_ALIGN {
        buffer.resize(length + READ_ALIGN, 0);
    }
    let front = read_front(buffer, 0, offset);
    let bytes = &mut buffer[front..front + length];
    file.read_exact_at(bytes, offset)?;
    Ok(bytes)
}
