//! The pack stage: one thread adds sealed blobs to packs in arrival order, hands full packs
//! to the [upload](super::upload) stage and records the uploaded ones in the writer (which
//! writes the index segments).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;

use bunker_repo_format::{BlobWriter, Repository};

use super::seal::SealedBatch;
use super::upload::{Uploads, record};

/// Runs the pack stage until every sender of `input` is gone, then uploads the open packs.
/// Returns the writer with everything uploaded and recorded (not yet flushed).
///
/// After the first error it keeps draining `input` (so no sealing task blocks forever),
/// sets `failed` so the walk stops early, and returns that error.
pub(super) fn run<'a>(
    repo: &'a Repository,
    mut writer: BlobWriter<'a>,
    input: Receiver<SealedBatch>,
    failed: Arc<AtomicBool>,
) -> bunker_repo_format::Result<BlobWriter<'a>> {
    std::thread::scope(|scope| {
        let uploads = Uploads::start(scope, repo);
        let mut error: Option<bunker_repo_format::Error> = None;
        let fail = |e: bunker_repo_format::Error, error: &mut Option<_>| {
            failed.store(true, Ordering::SeqCst);
            error.get_or_insert(e);
        };
        for batch in input {
            if error.is_some() {
                continue;
            }
            let result = batch
                .map_err(bunker_repo_format::Error::Invalid)
                .and_then(|blobs| {
                    for blob in blobs {
                        if let (_, Some(full)) = writer.pack_sealed(blob)? {
                            uploads.send(full)?;
                        }
                    }
                    record(&mut writer, uploads.finished())
                });
            if let Err(e) = result {
                fail(e, &mut error);
            }
        }
        if error.is_none()
            && let Err(e) = uploads.send_open_packs(&mut writer)
        {
            fail(e, &mut error);
        }
        let rest = uploads.close();
        if let Err(e) = record(&mut writer, rest) {
            fail(e, &mut error);
        }
        match error {
            Some(e) => Err(e),
            None => Ok(writer),
        }
    })
}
