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

use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{Scope, ScopedJoinHandle};

use bunker_repo_format::pack::{FinishedPack, StoredPack};
use bunker_repo_format::{BlobWriter, Repository};

/// The upload threads and their queues.
pub(super) struct Uploads<'scope> {
    queue: Option<SyncSender<FinishedPack>>,
    done: Receiver<bunker_repo_format::Result<StoredPack>>,
    threads: Vec<ScopedJoinHandle<'scope, ()>>,
}

impl<'scope> Uploads<'scope> {
    /// Starts the backend's number of upload threads in `scope`, storing packs into `repo`;
    /// once `abandon` is set, puts still waiting for a slow store are given up
    /// ([`Repository::put_pack_abandoning`]) and fail.
    pub(super) fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        repo: &'env Repository,
        abandon: Arc<AtomicBool>,
    ) -> Self {
        let uploaders = repo.backend().put_concurrency().clamp(1, 16);
        let (queue, receiver) = sync_channel::<FinishedPack>(0);
        let receiver = Arc::new(Mutex::new(receiver));
        let (done_tx, done) = channel();
        let threads = (0..uploaders)
            .map(|_| {
                let receiver = Arc::clone(&receiver);
                let abandon = Arc::clone(&abandon);
                let done_tx: Sender<_> = done_tx.clone();
                scope.spawn(move || {
                    loop {
                        let next = receiver
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .recv();
                        let Ok(pack) = next else { break };
                        let result = repo.put_pack_abandoning(pack, &abandon);
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
