//! Content check of one restored file or image against its extents.
//!
//! Every chunk is read back from disk and hashed with the repository's keyed hash, then
//! compared with the blob id stored in the tree; every hole must read as zeros. Extents are
//! checked in parallel on the rayon pool, each task holding one chunk (or one megabyte of
//! a hole), so memory stays bounded by the pool size times the largest chunk.

use std::fs::File;
use std::io;

use bunker_repo_format::Repository;
use bunker_repo_format::tree::Extent;
use rayon::prelude::*;

use crate::restore::extent_difference;

/// Checks `file` against `extents`; returns the first difference found (lowest offset), as
/// a message, or `None` when every byte matches.
pub(crate) fn first_difference(
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
        .map(|(offset, extent)| extent_difference(repo, file, *offset, extent))
        .collect();
    for result in results {
        if let Some(message) = result? {
            return Ok(Some(message));
        }
    }
    Ok(None)
}
