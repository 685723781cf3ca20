//! The pack stage: one thread adds sealed blobs to packs in arrival order, hands full packs
//! to the [upload](super::upload) stage and records the uploaded ones in the writer (which
//! writes the index segments).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::ScopedJoinHandle;

use bunker_repo_format::{BlobWriter, Repository};

use crate::cancel::Cancel;

use super::BackupError;
use super::seal::{SealedBatch, Sealer};
use super::upload::{Uploads, record};

/// Sealed batches waiting for the pack stage.
const PACK_QUEUE: usize = 1;

/// Runs `feed` with a [`Sealer`] (verifying with `verify`) whose batches go to a pack stage
/// on its own thread: every backup (files, a volume, a stream) seals and packs through
/// here. `feed` should stop once the flag it is given is set: the pack stage failed, and
/// its error is the one returned.
///
/// Whatever `feed` returns, the sealing finishes and the pack stage stores and records what
/// it was given; when `feed` fails, those packs are indexed (so that the next run reuses
/// them) before its error is returned. On success the writer comes back with every pack
/// uploaded and recorded, not yet flushed.
///
/// Once `cancel` is set, pack puts still waiting for a slow store are abandoned: the stage
/// fails, and its error is [`BackupError::Interrupted`] (what was stored is still indexed).
pub(super) fn seal_and_pack<'a, T, E>(
    repo: &'a Repository,
    writer: BlobWriter<'a>,
    verify: bool,
    cancel: &Cancel,
    feed: impl FnOnce(&mut Sealer, &Arc<AtomicBool>) -> Result<T, E>,
) -> Result<(T, BlobWriter<'a>), E>
where
    E: From<bunker_repo_format::Error> + From<BackupError>,
{
    let failed = Arc::new(AtomicBool::new(false));
    let (sealed_tx, sealed_rx) = sync_channel(PACK_QUEUE);
    let mut sealer = Sealer::new(
        writer.session().clone(),
        repo.writer_key().clone(),
        repo.config().params.compression_level,
        verify,
        sealed_tx,
    );
    std::thread::scope(|scope| {
        let packer = {
            let failed = Arc::clone(&failed);
            let abandon = cancel.flag();
            scope.spawn(move || run(repo, writer, sealed_rx, failed, abandon))
        };
        let fed = feed(&mut sealer, &failed);
        sealer.finish();
        // The last sender goes: the pack stage uploads the open packs and ends.
        drop(sealer);
        let writer = join(packer).map_err(|e| match e {
            bunker_repo_format::Error::Abandoned { .. } if cancel.is_cancelled() => {
                E::from(BackupError::Interrupted)
            }
            e => E::from(e),
        })?;
        match fed {
            Ok(value) => Ok((value, writer)),
            Err(e) => {
                writer.finish()?;
                Err(e)
            }
        }
    })
}

/// Runs the pack stage until every sender of `input` is gone, then uploads the open packs
/// (pack puts are given up once `abandon` is set). Returns the writer with everything
/// uploaded and recorded (not yet flushed), and the first error.
///
/// After the first error it keeps draining `input` (so no sealing task blocks forever),
/// sets `failed` so the walk stops early, and still records every pack that was stored
/// ([`join`] indexes them for the next run to reuse).
pub(super) fn run<'a>(
    repo: &'a Repository,
    mut writer: BlobWriter<'a>,
    input: Receiver<SealedBatch>,
    failed: Arc<AtomicBool>,
    abandon: Arc<AtomicBool>,
) -> (BlobWriter<'a>, bunker_repo_format::Result<()>) {
    std::thread::scope(|scope| {
        let uploads = Uploads::start(scope, repo, abandon);
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
