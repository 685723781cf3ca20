//! Content check of one restored file or image against its extents.
//!
//! Every chunk is read back from disk and hashed with the repository's keyed hash, then
//! compared with the blob id stored in the tree; every hole must read as zeros. Extents are
//! checked in parallel on the rayon pool, each task holding one chunk (or one megabyte of
//! a hole), so memory stays bounded by the pool size times the largest chunk.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use bunker_repo_format::Repository;
use bunker_repo_format::tree::Extent;
use rayon::prelude::*;

/// Bytes of a hole read at a time.
const HOLE_READ: u64 = 1 << 20;

/// Checks `file` against `extents`; returns the first difference found (lowest offset), as
/// a message, or `None` when every byte matches.
pub(super) fn first_difference(
    repo: &Repository,
    file: &File,
    extents: &[Extent],
) -> io::Result<Option<String>> {
    let mut pieces = Vec::with_capacity(extents.len());
    let mut offset = 0u64;
    for extent in extents {
        pieces.push((offset, *extent));
        offset += extent.length();
    }
    let results: Vec<io::Result<Option<String>>> = pieces
        .par_iter()
        .map(|(offset, extent)| check(repo, file, *offset, extent))
        .collect();
    for result in results {
        if let Some(message) = result? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}

/// One extent: `None` when it matches.
fn check(
    repo: &Repository,
    file: &File,
    offset: u64,
    extent: &Extent,
) -> io::Result<Option<String>> {
    match *extent {
        Extent::Chunk { id, length } => {
            let mut buffer = vec![0u8; length as usize];
            file.read_exact_at(&mut buffer, offset)?;
            Ok((repo.blob_id(&buffer) != id).then(|| {
                format!("content differs at offset {offset} (the {length} bytes of chunk {id})")
            }))
        }
        Extent::Hole { length } => {
            let mut buffer = vec![0u8; HOLE_READ.min(length) as usize];
            let mut done = 0u64;
            while done < length {
                let piece = (length - done).min(HOLE_READ) as usize;
                file.read_exact_at(&mut buffer[..piece], offset + done)?;
                if let Some(at) = buffer[..piece].iter().position(|&b| b != 0) {
                    return Ok(Some(format!(
                        "hole of {length} bytes at offset {offset} reads non-zero at offset {}",
                        offset + done + at as u64
                    )));
                }
                done += piece as u64;
            }
            Ok(None)
        }
    }
}
