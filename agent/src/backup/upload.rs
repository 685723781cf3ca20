//! The upload stage: finished packs are stored by a few threads while the CPU stages go on.
//!
//! The backend trait is synchronous; each upload thread blocks in one put. How many run at
//! once is the backend's [`put_concurrency`](bunker_repo_format::backend::Backend::put_concurrency):
//! one for a local directory (every put ends in an fsync), two for S3, whose client
//! runs them on its tokio runtime, bounded by its in-flight limit.
//!
//! The queue holds no pack: a full pack waits in the pack stage until an uploader is free,
//! so at most `put_concurrency + 1` full packs exist at once. In a local directory they are
//! temp files written as the blobs came ([`Repository::start_pack`]), and storing one is its
//! fsync and link; for S3 they are in memory, each handed to its request without a copy.

use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

use bunker_repo_format::pack::{FinishedPack, StoredPack};
use bunker_repo_format::{BlobId, BlobKind, BlobWriter, Repository, SealedBlob};
use rayon::prelude::*;

/// The upload threads and their queues.
pub(super) struct Uploads<'scope> {
    queue: Option<SyncSender<FinishedPack>>,
    done: Receiver<bunker_repo_format::Result<StoredPack>>,
    threads: Vec<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope> Uploads<'scope> {
    /// Starts the backend's number of upload threads in `scope`, storing packs into `repo`.
    pub(super) fn start<'env>(scope: &'scope Scope<'scope, 'env>, repo: &'env Repository) -> Self {
        let uploaders = repo.backend().put_concurrency().clamp(1, 16);
        let (queue, receiver) = sync_channel::<FinishedPack>(0);
        let receiver = Arc::new(Mutex::new(receiver));
        let (done_tx, done) = channel();
        let threads = (0..uploaders)
            .map(|_| {
                let receiver = Arc::clone(&receiver);
                let done_tx: Sender<_> = done_tx.clone();
                scope.spawn(move || {
                    loop {
                        let next = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        let Ok(pack) = next else { break };
                        let result = repo.put_pack(pack);
                        if done_tx.send(result).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Self {
            queue: Some(queue),
            done,
            threads,
        }
    }

    /// Hands a pack to the next free uploader (waits for one).
    pub(super) fn send(&self, pack: FinishedPack) -> bunker_repo_format::Result<()> {
        match &self.queue {
            Some(queue) if queue.send(pack).is_ok() => Ok(()),
            _ => Err(bunker_repo_format::Error::Invalid(
                "the upload threads stopped".to_owned(),
            )),
        }
    }

    /// Finishes the writer's open packs and hands each to an uploader (the end of a
    /// backup's packing).
    pub(super) fn send_open_packs(
        &self,
        writer: &mut BlobWriter<'_>,
    ) -> bunker_repo_format::Result<()> {
        writer
            .take_open_packs()?
            .into_iter()
            .try_for_each(|pack| self.send(pack))
    }

    /// Uploads finished since the last call.
    pub(super) fn finished(&self) -> Vec<bunker_repo_format::Result<StoredPack>> {
        self.done.try_iter().collect()
    }

    /// Waits for every queued upload and returns the ones not yet collected.
    pub(super) fn close(mut self) -> Vec<bunker_repo_format::Result<StoredPack>> {
        self.queue = None;
        for thread in self.threads.drain(..) {
            // A panicking uploader lost its pack: fail rather than index less than packed.
            if thread.join().is_err() {
                return vec![Err(bunker_repo_format::Error::Invalid(
                    "an upload thread panicked".to_owned(),
                ))];
            }
        }
        self.done.try_iter().collect()
    }
}

/// Records the packs that were stored (even after a failure, so an interrupted backup
/// leaves them indexed); returns the first error.
pub(super) fn record(
    writer: &mut BlobWriter<'_>,
    uploaded: Vec<bunker_repo_format::Result<StoredPack>>,
) -> bunker_repo_format::Result<()> {
    let mut first = Ok(());
    for pack in uploaded {
        let recorded = pack.and_then(|p| writer.record_uploaded(p));
        if let Err(e) = recorded
            && first.is_ok()
        {
            first = Err(e);
        }
    }
    first
}

/// Packs sealed blobs on the calling thread and uploads full packs in the background, for
/// the backups that pack where they seal (volumes and streams): the next batch is read and
/// sealed while a pack is stored.
pub(super) struct Packer<'w, 'a, 'scope> {
    /// The session's writer (for deduplication and sealing).
    pub writer: &'w mut BlobWriter<'a>,
    uploads: Uploads<'scope>,
}

impl<'w, 'a, 'scope> Packer<'w, 'a, 'scope> {
    /// Starts the upload threads in `scope`.
    pub(super) fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        repo: &'env Repository,
        writer: &'w mut BlobWriter<'a>,
    ) -> Self {
        Self {
            writer,
            uploads: Uploads::start(scope, repo),
        }
    }

    /// Adds a sealed blob; a pack that fills up goes to an uploader. Returns whether the
    /// blob was new.
    pub(super) fn add(&mut self, blob: SealedBlob) -> bunker_repo_format::Result<bool> {
        let (new, full) = self.writer.pack_sealed(blob)?;
        if let Some(full) = full {
            self.uploads.send(full)?;
        }
        record(self.writer, self.uploads.finished())?;
        Ok(new)
    }

    /// Seals new chunks on the rayon pool (each verified, see
    /// [`BlobWriter::seal`]) and adds them in order.
    pub(super) fn seal_and_add(
        &mut self,
        chunks: &[(BlobId, impl AsRef<[u8]> + Sync)],
    ) -> bunker_repo_format::Result<()> {
        let writer = &*self.writer;
        let sealed: Vec<SealedBlob> = chunks
            .par_iter()
            .map(|(id, data)| writer.seal(BlobKind::Data, *id, data.as_ref()))
            .collect::<bunker_repo_format::Result<_>>()?;
        for blob in sealed {
            self.add(blob)?;
        }
        Ok(())
    }

    /// Uploads the open packs, waits for every upload and records each stored pack, also
    /// after an error (so what was stored is indexed and reused by the next run); returns
    /// the first error.
    pub(super) fn finish(self) -> bunker_repo_format::Result<()> {
        let sent = self.uploads.send_open_packs(self.writer);
        let recorded = record(self.writer, self.uploads.close());
        sent.and(recorded)
    }
}
