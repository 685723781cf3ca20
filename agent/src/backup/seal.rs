//! The compress+seal stage: batches of new chunks are compressed, encrypted and verified
//! (opened again and re-hashed) on the rayon pool while the walk goes on.
//!
//! At most [`Sealer::in_flight`] batches are queued or running, so memory stays bounded
//! whatever the input; the walking thread waits when the pool falls behind.
//!
//! A chunk's copy is verified in place (the check decodes the sealed blob into the copy's
//! own buffer), and the buffer then goes back to the walk for a later copy ([`Spares`]).
//! Freshly allocated buffers of a megabyte or more come from the kernel untouched, and
//! faulting their pages in cost a vol backup about 0.3 s of system time in 4.3 s.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, PoisonError};

use bunker_repo_format::blob::{seal_blob, seal_blob_verified_in_place};
use bunker_repo_format::crypto::{SealingSession, WriterKey};
use bunker_repo_format::{BlobId, BlobKind, SealedBlob};

use crate::permits::Permits;

/// Plaintext bytes collected before a batch goes to the pool. Session 14 (docs/
/// PERFORMANCE.md): 2 MiB batches made the Linux-source first backup 3.50-3.80 s against
/// 3.67-4.02 s with 1 MiB ones, for 110-122 MB of peak memory against 100-110 (restic
/// peaks at 120-146 MB there); the vol backup gained nothing.
const BATCH_BYTES: usize = 2 << 20;

/// Batches queued or running per pool thread. With one, a pool thread that finishes its
/// batch idles while the walking thread reads, chunks and hashes the next (small files
/// cost it a few syscalls each); with two, the walk fills a batch while the pool still has
/// one per thread. Linux-source first backup on 2 cores (docs/PERFORMANCE.md, "Session
/// 9"): 1.72-1.77 cores busy with one 2 MiB batch per thread, 1.74-1.81 with two of 1 MiB,
/// 1.80-1.83 with two of 2 MiB.
const BATCHES_PER_THREAD: usize = 2;

/// Buffers kept for chunk copies, at most this many bytes of them per batch in flight.
const SPARE_BYTES_PER_BATCH: usize = 2 << 20;

/// Buffers kept for chunk copies, at most.
const SPARE_BUFFERS: usize = 16;

/// Smaller buffers are not kept: the allocator reuses their memory without the kernel.
const SPARE_MIN_CAPACITY: usize = 128 << 10;

/// Sealed blobs on their way to the pack stage, or why sealing failed.
pub(super) type SealedBatch = Result<Vec<SealedBlob>, String>;

/// Buffers of sealed chunks' copies, for the next copies.
struct Spares {
    buffers: Mutex<Vec<Vec<u8>>>,
    /// Total capacity kept, at most.
    limit: usize,
}

impl Spares {
    /// A buffer for `length` bytes: a kept one that holds them if there is one, else the
    /// largest kept one (it grows), else a new one.
    fn take(&self, length: usize) -> Vec<u8> {
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        let fitting = buffers
            .iter()
            .position(|buffer| buffer.capacity() >= length);
        let largest = || (0..buffers.len()).max_by_key(|&index| buffers[index].capacity());
        match fitting.or_else(largest) {
            Some(index) => buffers.swap_remove(index),
            None => Vec::new(),
        }
    }

    /// Keeps `buffer` if it is large and the spares stay within their limits.
    fn give_back(&self, mut buffer: Vec<u8>) {
        if buffer.capacity() < SPARE_MIN_CAPACITY {
            return;
        }
        let mut buffers = self.buffers.lock().unwrap_or_else(PoisonError::into_inner);
        let kept: usize = buffers.iter().map(Vec::capacity).sum();
        if buffers.len() < SPARE_BUFFERS && kept + buffer.capacity() <= self.limit {
            buffer.clear();
            buffers.push(buffer);
        }
    }
}

/// Whether sealing keeps every pool thread busy (a batch in flight per thread): then the
/// walk's own work is best done on the walking thread, the pool having enough of its own.
#[derive(Clone)]
pub(super) struct SealLoad {
    permits: Arc<Permits>,
    /// Pool threads.
    limit: usize,
}

impl SealLoad {
    /// A load that is always saturated.
    #[cfg(test)]
    pub(super) fn saturated_for_tests() -> Self {
        Self {
            permits: Arc::new(Permits::taken(1)),
            limit: 1,
        }
    }

    /// True while there are at least as many batches in flight as pool threads.
    pub(super) fn saturated(&self) -> bool {
        self.permits.in_use() >= self.limit
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
    spares: Arc<Spares>,
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
        let in_flight = BATCHES_PER_THREAD * rayon::current_num_threads();
        Self {
            keys: Arc::new(Keys {
                session,
                writer,
                level,
                verify,
            }),
            permits: Arc::default(),
            spares: Arc::new(Spares {
                buffers: Mutex::default(),
                limit: in_flight * SPARE_BYTES_PER_BATCH,
            }),
            in_flight,
            out,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    /// A probe of how busy sealing keeps the pool.
    pub(super) fn load(&self) -> SealLoad {
        SealLoad {
            permits: Arc::clone(&self.permits),
            limit: rayon::current_num_threads(),
        }
    }

    /// Queues a copy of a chunk (already claimed by the dedup stage).
    pub(super) fn push(&mut self, id: BlobId, chunk: &[u8]) {
        let mut copy = self.spares.take(chunk.len());
        copy.extend_from_slice(chunk);
        self.push_owned(id, copy);
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
    pub(super) fn seal_now(
        &self,
        kind: BlobKind,
        id: BlobId,
        mut plaintext: Vec<u8>,
    ) -> SealedBatch {
        seal_one(&self.keys, kind, id, &mut plaintext).map(|blob| vec![blob])
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
        let spares = Arc::clone(&self.spares);
        let out = self.out.clone();
        rayon::spawn(move || {
            // One thread seals the whole batch: the batches in flight keep every pool
            // thread busy, and splitting one would leave a thread spinning in rayon's join
            // for the other half.
            let sealed: SealedBatch = batch
                .into_iter()
                .map(|(id, mut data)| {
                    let sealed = seal_one(&keys, BlobKind::Data, id, &mut data);
                    spares.give_back(data);
                    sealed
                })
                .collect();
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

/// A blob's plaintext length, which must fit the index's field.
fn blob_length(id: BlobId, plaintext: &[u8]) -> Result<u32, String> {
    u32::try_from(plaintext.len())
        .map_err(|_| format!("blob {id} of {} bytes is too large", plaintext.len()))
}

/// Compresses and seals one blob; with verification, opens it again and checks its id,
/// decoding into `plaintext`'s own buffer (the caller is done with the plaintext).
fn seal_one(
    keys: &Keys,
    kind: BlobKind,
    id: BlobId,
    plaintext: &mut Vec<u8>,
) -> Result<SealedBlob, String> {
    let raw_length = blob_length(id, plaintext)?;
    let key = keys.session.key();
    let sealed = if keys.verify {
        seal_blob_verified_in_place(key, &keys.writer, kind, &id, plaintext, keys.level)
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

#[cfg(test)]
mod tests {
    use super::*;
    use bunker_repo_format::blob::open_blob;
    use bunker_repo_format::crypto::MasterKey;
    use std::sync::mpsc::sync_channel;

    fn spares(limit: usize) -> Spares {
        Spares {
            buffers: Mutex::default(),
            limit,
        }
    }

    #[test]
    fn spares_keep_large_buffers_within_their_limits() {
        let spares = spares(4 << 20);
        spares.give_back(Vec::with_capacity(64 << 10));
        assert!(
            spares.take(1).capacity() < SPARE_MIN_CAPACITY,
            "small: not kept"
        );
        let mut used = vec![7u8; 1 << 20];
        used.reserve_exact(0);
        spares.give_back(used);
        spares.give_back(Vec::with_capacity(2 << 20));
        spares.give_back(Vec::with_capacity(2 << 20));
        // The third would take the spares past 4 MiB.
        let fitting = spares.take(1_500_000);
        assert!(fitting.capacity() >= 2 << 20 && fitting.is_empty());
        let largest = spares.take(3 << 20);
        assert!(largest.capacity() >= 1 << 20 && largest.capacity() < 2 << 20);
        assert!(largest.is_empty(), "a kept buffer comes back empty");
        assert_eq!(spares.take(1).capacity(), 0, "none left: a new one");
    }

    #[test]
    fn reused_copies_seal_exactly_their_own_chunk() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let (out, sealed) = sync_channel(64);
        let mut sealer = Sealer::new(session.clone(), master.writer().clone(), 3, true, out);
        // Large chunks, then smaller ones: these reuse the large ones' buffers, which must
        // not leak the earlier bytes into them.
        let chunks: Vec<Vec<u8>> = [3 << 20, 2 << 20, 300_000, 200_000, 3 << 20, 150_000]
            .into_iter()
            .enumerate()
            .map(|(n, length)| (0..length).map(|i| (i * (n + 3) / 7) as u8).collect())
            .collect();
        for chunk in &chunks {
            let id = BlobId::from_bytes(master.writer().blob_id_bytes(chunk));
            sealer.push(id, chunk);
            sealer.submit();
            sealer.finish();
        }
        drop(sealer);
        let blobs: Vec<SealedBlob> = sealed
            .iter()
            .flat_map(|batch| batch.expect("sealed"))
            .collect();
        assert_eq!(blobs.len(), chunks.len());
        for (blob, chunk) in blobs.iter().zip(&chunks) {
            let opened = open_blob(
                session.key(),
                BlobKind::Data,
                &blob.id,
                &blob.sealed,
                blob.raw_length,
                "test",
            )
            .expect("opens");
            assert_eq!(&opened, chunk);
        }
    }
}
