//! The compress+seal stage: batches of new chunks are compressed, encrypted and verified
//! (opened again and re-hashed) on the rayon pool while the walk goes on.
//!
//! At most [`Sealer::in_flight`] batches are queued or running, so memory stays bounded
//! whatever the input; the walking thread waits when the pool falls behind.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use bunker_repo_format::blob::{seal_blob, seal_blob_verified};
use bunker_repo_format::crypto::{SealingSession, WriterKey};
use bunker_repo_format::{BlobId, BlobKind, SealedBlob};

/// Plaintext bytes collected before a batch goes to the pool.
const BATCH_BYTES: usize = 1 << 20;

/// Batches queued or running per pool thread. With one, a pool thread that finishes its
/// batch idles while the walking thread reads, chunks and hashes the next (small files
/// cost it a few syscalls each); with two, the walk fills a batch while the pool still has
/// one per thread. Two batches of 1 MiB hold the plaintext that one of 2 MiB did, so peak
/// memory stays where it was. Linux-source first backup on 2 cores (docs/PERFORMANCE.md,
/// "Session 9"): 1.72-1.77 cores busy with one 2 MiB batch per thread, 1.74-1.81 with two
/// of 1 MiB, 1.80-1.83 with two of 2 MiB (8-15 MB more peak memory, not taken).
const BATCHES_PER_THREAD: usize = 2;

/// Sealed blobs on their way to the pack stage, or why sealing failed.
pub(super) type SealedBatch = Result<Vec<SealedBlob>, String>;

/// A counting semaphore bounding the batches in flight.
#[derive(Default)]
struct Permits {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    fn acquire(&self, limit: usize) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used >= limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += 1;
    }

    fn release(&self) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(1);
        self.freed.notify_all();
    }

    fn wait_idle(&self) {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// Everything a pool task needs, shared by all of them.
struct Keys {
    session: SealingSession,
    writer: WriterKey,
    level: i32,
    verify: bool,
}

/// Collects new chunks into batches and seals them on the rayon pool.
pub(super) struct Sealer {
    keys: Arc<Keys>,
    permits: Arc<Permits>,
    in_flight: usize,
    out: SyncSender<SealedBatch>,
    batch: Vec<(BlobId, Vec<u8>)>,
    batch_bytes: usize,
}

impl Sealer {
    /// Seals under `session` at zstd `level`; sealed batches go to `out`. With `verify`,
    /// every blob is opened and re-hashed before it leaves the stage.
    pub(super) fn new(
        session: SealingSession,
        writer: WriterKey,
        level: i32,
        verify: bool,
        out: SyncSender<SealedBatch>,
    ) -> Self {
        Self {
            keys: Arc::new(Keys {
                session,
                writer,
                level,
                verify,
            }),
            permits: Arc::default(),
            in_flight: BATCHES_PER_THREAD * rayon::current_num_threads(),
            out,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// Queues a copy of a chunk (already claimed by the dedup stage).
    pub(super) fn push(&mut self, id: BlobId, chunk: &[u8]) {
        self.push_owned(id, chunk.to_vec());
    }

    /// Queues a chunk (already claimed by the dedup stage) the caller no longer needs.
    pub(super) fn push_owned(&mut self, id: BlobId, chunk: Vec<u8>) {
        self.batch_bytes += chunk.len();
        self.batch.push((id, chunk));
        if self.batch_bytes >= BATCH_BYTES {
            self.submit();
        }
    }

    /// Seals one blob on the calling thread (trees: small, and needed in walk order).
    pub(super) fn seal_now(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> SealedBatch {
        seal_one(&self.keys, kind, id, plaintext).map(|blob| vec![blob])
    }

    /// Sends already sealed blobs straight to the pack stage.
    pub(super) fn send(&self, sealed: SealedBatch) -> Result<(), super::BackupError> {
        // The pack stage only stops receiving when it is gone: the walk stops too.
        self.out
            .send(sealed)
            .map_err(|_| super::BackupError::Interrupted)
    }

    /// Sends the partial batch to the pool.
    pub(super) fn submit(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        self.permits.acquire(self.in_flight);
        let keys = Arc::clone(&self.keys);
        let permits = Arc::clone(&self.permits);
        let out = self.out.clone();
        rayon::spawn(move || {
            // One thread seals the whole batch: the batches in flight keep every pool
            // thread busy, and splitting one would leave a thread spinning in rayon's join
            // for the other half.
            let sealed: SealedBatch = batch
                .iter()
                .map(|(id, data)| seal_one(&keys, BlobKind::Data, *id, data))
                .collect();
            drop(batch);
            // The pack stage only goes away when the backup is over.
            let _ = out.send(sealed);
            permits.release();
        });
    }

    /// Submits the rest and waits until every batch left the pool.
    pub(super) fn finish(&mut self) {
        self.submit();
        self.permits.wait_idle();
    }
}

/// Compresses and seals one blob; with verification, opens it again and checks its id.
fn seal_one(
    keys: &Keys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &[u8],
) -> Result<SealedBlob, String> {
    let raw_length = u32::try_from(plaintext.len())
        .map_err(|_| format!("blob {id} of {} bytes is too large", plaintext.len()))?;
    let key = keys.session.key();
    let sealed = if keys.verify {
        seal_blob_verified(key, &keys.writer, kind, &id, plaintext, keys.level)
            .map_err(|e| format!("verifying a sealed blob failed: {e}"))?
    } else {
        seal_blob(key, kind, &id, plaintext, keys.level)
    };
    Ok(SealedBlob {
        id,
        kind,
        sealed,
        raw_length,
    })
}
