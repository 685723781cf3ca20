//! Unsealing a fetched range, on a thread of the rayon pool (the restore hands each range
//! to the pool as it arrives, so the pool's threads unseal ranges side by side).
//!
//! Every blob is authenticated (AEAD, with its kind and id as associated data),
//! decompressed into the buffer the writer chose for it, checked against its recorded
//! length and re-hashed against its id ([`Repository::open_blob_in_to`]) before its bytes go
//! anywhere.

use bunker_repo_format::blob::plaintext_length;
use bunker_repo_format::{Error, Repository};

use super::fetch::ReadRange;
use super::plaintext::Plaintext;
use super::plan::{PackWork, PlannedBlob};

/// Gives the buffer to unseal a blob of the given length into.
pub(super) type Buffer<'a> = dyn Fn(&PlannedBlob, usize) -> Plaintext + Sync + 'a;

/// Receives each blob's verified plaintext, or why it is unusable.
pub(super) type Sink<'a> = dyn Fn(&PlannedBlob, Result<Plaintext, Error>) + Sync + 'a;

/// Unseals the blobs of `range` (whose bytes are `data`) one after the other, each into the
/// buffer `buffer` gives, and hands each verified plaintext, or the reason it is unusable,
/// to `sink`. Ranges run side by side; splitting one would leave a thread waiting in
/// rayon's join for the other half.
pub(super) fn unseal_range(
    repo: &Repository,
    work: &PackWork,
    range: &ReadRange,
    data: &[u8],
    buffer: &Buffer<'_>,
    sink: &Sink<'_>,
) {
    let pack = work.name();
    for blob in &work.blobs[range.first..range.end] {
        let location = &blob.location;
        let opened = plaintext_length(&blob.id, location.raw_length, &pack).and_then(|len| {
            let mut plaintext = buffer(blob, len);
            repo.open_blob_in_to(
                &blob.id,
                location,
                data,
                range.offset,
                plaintext.bytes_mut(),
            )
            .map(|()| plaintext)
        });
        sink(blob, opened);
    }
}
