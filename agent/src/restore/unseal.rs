//! Unsealing fetched ranges on the rayon pool.
//!
//! Every blob is authenticated (AEAD, with its kind and id as associated data),
//! decompressed, checked against its recorded length and re-hashed against its id
//! ([`Repository::open_blob_in`]) before its bytes go anywhere.

use bunker_repo_format::{Error, Repository};
use rayon::prelude::*;

use super::fetch::ReadRange;
use super::plan::{PackWork, PlannedBlob};

/// Receives each blob's verified plaintext, or why it is unusable.
pub(super) type Sink<'a> = dyn Fn(&PlannedBlob, Result<Vec<u8>, Error>) + Sync + 'a;

/// Unseals the blobs of `range` (whose bytes are `data`) in parallel and hands each
/// verified plaintext, or the reason it is unusable, to `sink` on the pool's threads.
pub(super) fn unseal_range(
    repo: &Repository,
    work: &PackWork,
    range: &ReadRange,
    data: &[u8],
    sink: &Sink<'_>,
) {
    work.blobs[range.first..range.end]
        .par_iter()
        .for_each(|blob| {
            sink(
                blob,
                repo.open_blob_in(&blob.id, &blob.location, data, range.offset),
            )
        });
}
