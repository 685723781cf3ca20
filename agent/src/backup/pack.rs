//! The pack stage: one thread adds sealed blobs to packs in arrival order, hands full packs
//! to the [upload](super::upload) stage and records the uploaded ones in the writer (which
//! writes the index segments).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::ScopedJoinHandle;

use bunker_repo_format::{BlobWriter, Repository};

use super::seal::SealedBatch;
use super::upload::{Uploads, record};

/// Runs the pack stage until every sender of `input` is gone, then uploads the open packs.
/// Returns the writer with everything uploaded and recorded (not yet flushed), and the
/// first error.
///
/// After the first error it keeps draining `input` (so no sealing task blocks forever),
/// sets `failed` so the walk stops early, and still records every pack that was stored
/// ([`join`] indexes them for the next run to reuse).
pub(super) fn run<'a>(
    repo: &'a Repository,
    mut writer: BlobWriter<'a>,
    input: Receiver<SealedBatch>,
    failed: Arc<AtomicBool>,
) -> (BlobWriter<'a>, bunker_repo_format::Result<()>) {
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
        let result = match error {
            Some(e) => Err(e),
            None => Ok(()),
        };
        (writer, result)
    })
}

/// Waits for the pack stage started by [`run`] and returns its writer. When the stage
/// failed, the packs it stored are indexed first, so that the next run reuses them, and its
/// error is returned.
pub(super) fn join<'a>(
    stage: ScopedJoinHandle<'_, (BlobWriter<'a>, bunker_repo_format::Result<()>)>,
) -> bunker_repo_format::Result<BlobWriter<'a>> {
    let (mut writer, result) = stage
        .join()
        .map_err(|_| bunker_repo_format::Error::Invalid("the pack thread panicked".to_owned()))?;
    if let Err(e) = result {
        // The stage's failure is what the caller reports; a failed index write only costs
        // the next run uploading those packs again.
        let _ = writer.index_uploaded();
        return Err(e);
    }
    Ok(writer)
}
