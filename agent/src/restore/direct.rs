//! Direct writes: a large file's whole blocks go to the disk around the page cache
//! (`O_DIRECT`) where that is the faster way, the few bytes that never fill a block through
//! its ordinary descriptor.
//!
//! A restore writes each byte once and does not read it back, so caching a large file can
//! only cost: the kernel copies every byte into a page it must first find, and on a virtual
//! machine that returns free memory to its host (free page reporting, ballooning) each of
//! those pages faults in the host as well. Buffered writes of 2 GiB took 5.5 s of system
//! time on one 2-core benchmark machine, direct ones 1 s (docs/PERFORMANCE.md, session
//! 13), and such a restore does not evict the host's working set. But where the disk is
//! slow and the page cache fast, a buffered write returns long before a direct one (1.4 s
//! against 5.4 s for 2 GiB on another machine, session 16), and the kernel writes the
//! pages back while the restore goes on. So the whole blocks take whichever route has
//! cost the writing threads less per byte lately ([`Routes`]): direct for a file's first
//! 64 MiB, then measured.
//!
//! Direct I/O wants the memory, the file offset and the length aligned to the device's
//! logical block. [`ALIGN`] (4 KiB) suits every Linux block device and filesystem we know
//! of. A blob is decoded into memory laid out like its blocks (a
//! [`Plaintext`](super::plaintext::Plaintext)), so its whole blocks are written from where
//! they were decoded. A blob rarely starts or ends on a block boundary, so the block it
//! shares with its neighbour waits in [`SharedBlocks`] until the neighbour brings the rest;
//! then it goes out with whichever of the two came second, in the same write. So a file
//! whose blobs all arrive is written directly from end to end, one write per blob. The
//! blocks never completed (beside a hole, a lost blob, the file's last partial block) are
//! written through the file's ordinary descriptor once the batch is done: no block is
//! written both ways. A filesystem that refuses direct I/O (`tmpfs` refuses to open with
//! it; others fail the write with `EINVAL`) gets the ordinary writes, for the rest of the
//! file.
//!
//! A direct write returns once the disk has the data, so the threads that unseal do not
//! make them: they hand every blob of such a file (moved, not copied) to the
//! [`DIRECT_WRITERS`] writing threads ([`DirectQueue`]) and go on. Those threads make the
//! file's ordinary writes too: a buffered write takes the inode's lock, which ext4 holds
//! through a direct write that allocates blocks, so an unsealing thread writing an edge
//! would wait for the disk after all. The file's data runs are allocated before any write
//! ([`allocate_data_runs`]), so the writing threads' direct writes do not take turns on
//! that lock. A few blobs of a volume chunk's size or less wait for a writing thread
//! ([`QUEUED_BLOBS`]), so that the unsealing threads go on while both writing threads wait
//! for the disk; a larger blob is handed over only when a writing thread takes it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bunker_repo_format::tree::Extent;
use nix::fcntl::{FallocateFlags, OFlag, fallocate};

use super::plaintext::Plaintext;
use super::routes::{Route, Routes};

/// Files with at least this many bytes of data are written directly. Below it, the copy
/// into the page cache costs less than keeping a second descriptor and a writing thread.
#[cfg(not(test))]
pub(super) const DIRECT_MIN: u64 = 32 << 20;
/// Small in unit tests, so that a file of a few blocks takes the direct path.
#[cfg(test)]
pub(super) const DIRECT_MIN: u64 = 64 << 10;

/// Alignment of direct writes' memory, offsets and lengths.
pub(super) const ALIGN: u64 = bunker_repo_format::aligned::ALIGN as u64;

/// Blobs that may wait for the writing threads beyond those their unsealing threads hold,
/// each of at most [`QUEUED_BLOB_SIZE`] bytes. Without a queue, an unsealing thread whose
/// blob no writing thread could take yet (both waiting for the disk) idled: half of a vol
/// restore's idle CPU time. With four 1 MiB image chunks waiting, vol restores took 8-11%
/// less time over interleaved pairs, for 1 MB more at the peak (docs/PERFORMANCE.md,
/// session 36).
pub(super) const QUEUED_BLOBS: usize = 4;

/// The largest blob that waits in the queue: the default volume chunk size. A larger one
/// is handed over only when a writing thread takes it, as session 13 chose for all of them:
/// queued whatever their size, content-defined chunks of an image (up to 8 MiB each) raised
/// a restore's peak from 83-90 MB to 93-114 MB, past restic's.
pub(super) const QUEUED_BLOB_SIZE: usize = 1 << 20;

/// Threads making direct writes, each with one write in flight. Two keep the disk busy
/// while either waits for a CPU (both busy unsealing) or hands its finished buffer back: a
/// vol restore had its one writing thread in a write 50-60% of the time, with two the disk
/// always had one (docs/PERFORMANCE.md, session 15).
pub(super) const DIRECT_WRITERS: usize = 2;

/// Allocates the data runs of `extents` in `file` (`fallocate`), leaving its holes holes.
///
/// ext4 lets direct writes into one file run side by side only when they land on allocated
/// blocks: a write that allocates takes the file's lock exclusively and holds it until the
/// disk is done, so the [`DIRECT_WRITERS`] would take turns. Failure is not an error here:
/// a filesystem without `fallocate` still takes the writes, and a full disk fails them.
pub(super) fn allocate_data_runs(file: &File, extents: &[Extent]) {
    let allocate = |run: Range<u64>| {
        if let (Ok(offset), Ok(length)) =
            (i64::try_from(run.start), i64::try_from(run.end - run.start))
        {
            let _ = fallocate(file, FallocateFlags::empty(), offset, length);
        }
    };
    let mut offset = 0;
    let mut run: Option<Range<u64>> = None;
    for extent in extents {
        let end = offset + extent.length();
        match (extent, run.as_mut()) {
            (Extent::Chunk { .. }, Some(run)) => run.end = end,
            (Extent::Chunk { .. }, None) => run = Some(offset..end),
            _ => run.take().into_iter().for_each(allocate),
        }
        offset = end;
    }
    run.into_iter().for_each(allocate);
}

/// A second descriptor of a large file, opened for direct writes.
#[derive(Debug)]
pub(super) struct DirectFile {
    file: File,
    /// Cleared when the filesystem refuses a direct write: the rest goes buffered.
    usable: AtomicBool,
    /// Which way each write of whole blocks goes, by what each has cost lately.
    routes: Mutex<Routes>,
    /// Signalled when a write is done: a probe may start, or the writes it held back.
    turn: Condvar,
    /// Held through each buffered write. ext4 takes the file's lock exclusively for one, so
    /// two never overlap; without this, the second thread spun in the kernel waiting for
    /// the lock (4% of a vol restore's samples, docs/PERFORMANCE.md, session 17), where here
    /// it sleeps and leaves the CPU to the threads unsealing.
    buffered_turn: Mutex<()>,
}

impl DirectFile {
    /// Opens `file` again for direct writes, through its descriptor (the same inode,
    /// whatever happened to its path meanwhile); `None` when the filesystem does not allow
    /// them.
    pub(super) fn reopen(file: &File) -> Option<Self> {
        Self::open(&crate::platform::fd_path(file.as_fd()))
    }

    /// Opens `path` for direct writes; `None` when the filesystem does not allow them (or
    /// the file cannot be opened again: its ordinary descriptor will say why).
    pub(super) fn open(path: &Path) -> Option<Self> {
        OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
            .ok()
            .map(|file| Self::new(file, true))
    }

    /// Wraps `file`, a descriptor opened with `O_DIRECT`; `usable` false sends every write
    /// through the page cache.
    fn new(file: File, usable: bool) -> Self {
        Self {
            file,
            usable: AtomicBool::new(usable),
            routes: Mutex::default(),
            turn: Condvar::new(),
            buffered_turn: Mutex::new(()),
        }
    }

    /// False once the filesystem refused a direct write: the rest goes buffered.
    pub(super) fn is_usable(&self) -> bool {
        self.usable.load(Ordering::Relaxed)
    }

    /// Writes `bytes` (whole blocks, aligned in memory) at `offset` (aligned) directly, or
    /// through `buffered` (the file's ordinary descriptor) when buffered writes have lately
    /// cost less (see [`Routes`]) or the filesystem refused a direct one. Returns the bytes
    /// written directly.
    pub(super) fn write_blocks(
        &self,
        buffered: &File,
        bytes: &[u8],
        offset: u64,
    ) -> io::Result<u64> {
        if !self.usable.load(Ordering::Relaxed) {
            self.write_buffered(buffered, bytes, offset)?;
            return Ok(0);
        }
        let lock = || self.routes.lock().unwrap_or_else(PoisonError::into_inner);
        let wait = |routes| {
            self.turn
                .wait(routes)
                .unwrap_or_else(PoisonError::into_inner)
        };
        let ticket = {
            let mut routes = lock();
            while routes.probing() {
                routes = wait(routes);
            }
            let ticket = routes.choose();
            while ticket.probe && !routes.is_alone() {
                routes = wait(routes);
            }
            ticket
        };
        let done = |bytes, elapsed| {
            lock().record(ticket, bytes, elapsed);
            self.turn.notify_all();
        };
        let started = Instant::now();
        let written = match ticket.route {
            Route::Direct => match self.file.write_all_at(bytes, offset) {
                Ok(()) => bytes.len() as u64,
                // Refused (an alignment this device does not take, a filesystem that
                // opens with O_DIRECT but cannot do it): whatever it wrote is rewritten.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.usable.store(false, Ordering::Relaxed);
                    done(0, Duration::ZERO);
                    buffered.write_all_at(bytes, offset)?;
                    return Ok(0);
                }
                Err(e) => {
                    done(0, Duration::ZERO);
                    return Err(e);
                }
            },
            Route::Buffered => {
                if let Err(e) = self.write_buffered(buffered, bytes, offset) {
                    done(0, Duration::ZERO);
                    return Err(e);
                }
                0
            }
        };
        done(bytes.len() as u64, started.elapsed());
        Ok(written)
    }

    /// Writes through the page cache, one thread at a time (see `buffered_turn`). The wait
    /// counts in the write's time, as it did when it was spent in the kernel.
    fn write_buffered(&self, buffered: &File, bytes: &[u8], offset: u64) -> io::Result<()> {
        let _turn = self
            .buffered_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        buffered.write_all_at(bytes, offset)
    }
}

/// A blob's plaintext for one place in a file, on its way to a writing thread.
#[derive(Debug)]
pub(super) struct BlobToWrite {
    /// The file, by its number in the batch.
    pub file: u32,
    /// Where the bytes go.
    pub offset: u64,
    /// The bytes, laid out like the blocks at `offset`.
    pub data: Plaintext,
}

/// Blocks of directly written files that two blobs (or more) share, each held until all its
/// bytes are known: then it is written directly with the blob that completed it.
#[derive(Debug, Default)]
pub(super) struct SharedBlocks {
    /// By file number and block number.
    blocks: BTreeMap<(u32, u64), PartialBlock>,
}

/// Blocks held at most; beyond them, the lowest goes out buffered (never written directly
/// after that, since its bytes can no longer all come together). Blobs arrive nearly in
/// file order, so a handful are held at a time.
const HELD_BLOCKS: usize = 1024;

/// The bytes of one block known so far.
#[derive(Debug)]
struct PartialBlock {
    bytes: Box<[u8]>,
    /// Which bytes are known, as ranges of the block; they never overlap.
    known: Vec<Range<usize>>,
}

impl PartialBlock {
    fn known_bytes(&self) -> usize {
        self.known.iter().map(|r| r.len()).sum()
    }
}

/// Bytes of a block that could not be written directly: where they go, and what they are.
pub(super) type LeftOver = (u32, u64, Vec<u8>);

impl SharedBlocks {
    /// Adds `bytes`, which go `at` bytes into block `block` of file `file`. Returns the
    /// whole block once that completes it; else holds the bytes (and returns pieces of a
    /// block pushed out to keep at most [`HELD_BLOCKS`], to be written buffered).
    pub fn add(
        &mut self,
        file: u32,
        block: u64,
        at: usize,
        bytes: &[u8],
        left_over: &mut Vec<LeftOver>,
    ) -> Option<Box<[u8]>> {
        let range = at..at + bytes.len();
        let partial = self
            .blocks
            .entry((file, block))
            .or_insert_with(|| PartialBlock {
                bytes: vec![0; ALIGN as usize].into_boxed_slice(),
                known: Vec::new(),
            });
        partial.bytes[range.clone()].copy_from_slice(bytes);
        partial.known.push(range);
        if partial.known_bytes() == ALIGN as usize {
            return self.blocks.remove(&(file, block)).map(|done| done.bytes);
        }
        if self.blocks.len() > HELD_BLOCKS
            && let Some(((file, block), partial)) = self.blocks.pop_first()
        {
            left_over.extend(pieces(file, block, partial));
        }
        None
    }

    /// Every byte still held, as pieces to write buffered; leaves it empty.
    pub fn drain(&mut self) -> Vec<LeftOver> {
        std::mem::take(&mut self.blocks)
            .into_iter()
            .flat_map(|((file, block), partial)| pieces(file, block, partial))
            .collect()
    }
}

/// The known pieces of a partial block, with their file and offset.
fn pieces(file: u32, block: u64, partial: PartialBlock) -> impl Iterator<Item = LeftOver> {
    partial.known.into_iter().map(move |range| {
        let offset = block * ALIGN + range.start as u64;
        (file, offset, partial.bytes[range].to_vec())
    })
}

/// The queue to the threads that make the direct writes.
#[derive(Debug)]
pub(super) struct DirectQueue {
    /// Closed (taken) once every blob is unsealed, which ends the writing threads.
    sender: Mutex<Option<SyncSender<BlobToWrite>>>,
    receiver: Mutex<Receiver<BlobToWrite>>,
    /// Blobs waiting (sent, not yet taken): a large blob goes only into an empty queue.
    waiting: Mutex<usize>,
    /// Signalled when a writing thread takes a blob.
    taken: Condvar,
}

impl DirectQueue {
    /// An open queue.
    pub(super) fn new() -> Self {
        let (sender, receiver) = sync_channel(QUEUED_BLOBS);
        Self {
            sender: Mutex::new(Some(sender)),
            receiver: Mutex::new(receiver),
            waiting: Mutex::new(0),
            taken: Condvar::new(),
        }
    }

    /// The next blob to write, waiting for one; `None` once the queue is closed and empty.
    pub(super) fn next(&self) -> Option<BlobToWrite> {
        let blob = {
            let receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
            receiver.recv().ok()?
        };
        let mut waiting = self.waiting();
        *waiting = waiting.saturating_sub(1);
        self.taken.notify_all();
        Some(blob)
    }

    /// Hands `blob` to the writing threads, waiting while [`QUEUED_BLOBS`] blobs wait; a
    /// blob larger than [`QUEUED_BLOB_SIZE`] waits for an empty queue and then until a
    /// writing thread takes it. Returns it if the queue is closed.
    pub(super) fn send(&self, blob: BlobToWrite) -> Result<(), BlobToWrite> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(sender) = sender else {
            return Err(blob);
        };
        // A large blob goes alone, and its thread waits until a writing thread takes it, as
        // if there were no queue; small ones wait only for room in the channel.
        let alone = blob.data.bytes().len() > QUEUED_BLOB_SIZE;
        *self.wait_until(|waiting| waiting == 0 || !alone) += 1;
        if let Err(unsent) = sender.send(blob) {
            let mut waiting = self.waiting();
            *waiting = waiting.saturating_sub(1);
            return Err(unsent.0);
        }
        if alone {
            drop(self.wait_until(|waiting| waiting == 0));
        }
        Ok(())
    }

    /// The number of blobs waiting, once `ready` says they are few enough.
    fn wait_until(&self, ready: impl Fn(usize) -> bool) -> std::sync::MutexGuard<'_, usize> {
        let mut waiting = self.waiting();
        while !ready(*waiting) {
            waiting = self
                .taken
                .wait(waiting)
                .unwrap_or_else(PoisonError::into_inner);
        }
        waiting
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, usize> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No more blocks: the writing threads end once they wrote the queued ones.
    pub(super) fn close(&self) {
        self.sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::plaintext::Buffers;
    use std::sync::Arc;
    use std::sync::mpsc::channel;

    fn blob(len: usize) -> BlobToWrite {
        BlobToWrite {
            file: 0,
            offset: 0,
            data: Buffers::default().take(0, len),
        }
    }

    /// Sends `blob` on a thread of its own; the receiver hears when `send` returned. A
    /// thread that never returns is left behind, so that a broken queue fails the test
    /// instead of hanging it.
    fn send_aside(queue: &Arc<DirectQueue>, blob: BlobToWrite) -> Receiver<bool> {
        let (sent, returned) = channel();
        let queue = Arc::clone(queue);
        std::thread::spawn(move || {
            let _ = sent.send(queue.send(blob).is_ok());
        });
        returned
    }

    #[test]
    fn small_blobs_wait_in_the_queue_and_a_large_one_until_it_is_taken() {
        let queue = Arc::new(DirectQueue::new());
        let patience = Duration::from_secs(10);
        let a_while = Duration::from_millis(200);
        // With no writing thread, the small blobs are queued and their senders go on.
        for _ in 0..QUEUED_BLOBS {
            let returned = send_aside(&queue, blob(QUEUED_BLOB_SIZE));
            assert_eq!(returned.recv_timeout(patience), Ok(true), "queued");
        }
        // One more waits for room; a large blob's sender returns only once a writing
        // thread took it.
        let one_more = send_aside(&queue, blob(1));
        let large = send_aside(&queue, blob(QUEUED_BLOB_SIZE + 1));
        assert!(one_more.recv_timeout(a_while).is_err(), "beyond the queue");
        let mut lengths: Vec<usize> = (0..=QUEUED_BLOBS)
            .map(|_| queue.next().expect("queued").data.bytes().len())
            .collect();
        assert_eq!(
            one_more.recv_timeout(patience),
            Ok(true),
            "queued once room"
        );
        lengths.sort_unstable();
        let mut expected = vec![QUEUED_BLOB_SIZE; QUEUED_BLOBS];
        expected.insert(0, 1);
        assert_eq!(
            lengths, expected,
            "the small ones, the large one after them"
        );
        // The queue is empty: the large blob is in it now, and its sender still waits.
        assert!(large.recv_timeout(a_while).is_err(), "returned untaken");
        let taken = queue.next().expect("the large one");
        assert_eq!(taken.data.bytes().len(), QUEUED_BLOB_SIZE + 1);
        assert_eq!(large.recv_timeout(patience), Ok(true), "taken, returned");

        queue.close();
        assert!(queue.next().is_none(), "closed and empty");
        assert!(
            queue.send(blob(1)).is_err(),
            "a closed queue gives the blob back"
        );
    }

    #[test]
    fn a_block_is_whole_once_its_pieces_all_came_and_what_never_did_is_left_over() {
        let block = ALIGN as usize;
        let data: Vec<u8> = (0..3 * block).map(|i| (i % 251) as u8).collect();
        let mut shared = SharedBlocks::default();
        let mut left_over = Vec::new();
        // Block 1 of file 0 in three pieces, out of order; block 0 of file 1 in one.
        assert!(
            shared
                .add(0, 1, 100, &data[block + 100..block + 200], &mut left_over)
                .is_none()
        );
        assert!(
            shared
                .add(0, 1, 200, &data[block + 200..2 * block], &mut left_over)
                .is_none()
        );
        assert!(shared.add(1, 0, 7, &data[7..9], &mut left_over).is_none());
        let whole = shared
            .add(0, 1, 0, &data[block..block + 100], &mut left_over)
            .expect("the last piece completes it");
        assert_eq!(&whole[..], &data[block..2 * block]);
        assert!(left_over.is_empty());
        assert_eq!(shared.drain(), vec![(1, 7, data[7..9].to_vec())]);
        assert!(shared.drain().is_empty(), "drained");

        // Beyond the limit, the lowest block goes out as it is.
        for n in 0..=HELD_BLOCKS as u64 {
            assert!(shared.add(2, n, 1, &data[..3], &mut left_over).is_none());
        }
        assert_eq!(left_over, vec![(2, 1, data[..3].to_vec())]);
        assert_eq!(shared.drain().len(), HELD_BLOCKS);
    }

    #[test]
    fn data_runs_are_allocated_and_holes_stay_holes() {
        use std::os::unix::fs::MetadataExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let file = File::create(&path).expect("create");
        let block = ALIGN as u32;
        let chunk = |length| Extent::Chunk {
            id: bunker_repo_format::BlobId::from_bytes([1; 32]),
            length,
        };
        let hole = |length| Extent::Hole { length };
        // 8 KiB of data, a 16 KiB hole, 8 KiB of data in two chunks, an 8 KiB hole.
        let extents = [
            chunk(2 * block),
            hole(4 * ALIGN),
            chunk(block),
            chunk(block),
            hole(2 * ALIGN),
        ];
        file.set_len(10 * ALIGN).expect("size");
        allocate_data_runs(&file, &extents);
        let meta = file.metadata().expect("stat");
        assert_eq!(meta.len(), 10 * ALIGN, "the size is kept");
        if meta.blocks() == 0 {
            eprintln!("no fallocate in {}: nothing to check", dir.path().display());
            return;
        }
        assert_eq!(
            meta.blocks() * 512,
            4 * ALIGN,
            "the data runs' blocks, no more"
        );
    }

    #[test]
    fn a_refused_direct_write_goes_buffered_and_other_errors_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let buffered = File::create(&path).expect("create");
        let mut blocks = bunker_repo_format::aligned::AlignedBuffer::default();
        let data: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 251) as u8).collect();
        let blocks = blocks.fill(&data);
        // A read-only descriptor fails with EBADF: not a refusal of direct I/O, so the
        // error is returned, not hidden behind a buffered write.
        let read_only = DirectFile::new(File::open(&path).expect("open"), true);
        assert!(read_only.write_blocks(&buffered, blocks, 0).is_err());
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);

        // Once refused, the blocks go through the ordinary descriptor.
        let refused = DirectFile::new(File::open(&path).expect("open"), false);
        let written = refused
            .write_blocks(&buffered, blocks, ALIGN)
            .expect("write");
        assert_eq!(written, 0);
        drop(buffered);
        let file = std::fs::read(&path).expect("read");
        assert_eq!(&file[ALIGN as usize..], data.as_slice());
    }

    /// A new file in a temporary directory, its ordinary descriptor, and a direct one when
    /// the directory's filesystem takes `O_DIRECT` (tmpfs does not).
    fn scratch_file() -> (
        tempfile::TempDir,
        std::path::PathBuf,
        File,
        Option<DirectFile>,
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let buffered = File::create(&path).expect("create");
        let direct = DirectFile::open(&path);
        if direct.is_none() {
            eprintln!("no direct I/O in {}", dir.path().display());
        }
        (dir, path, buffered, direct)
    }

    #[test]
    fn a_probe_waits_for_the_writes_in_flight_and_holds_back_the_next() {
        let (_dir, _path, buffered, direct) = scratch_file();
        let Some(direct) = direct else { return };
        let mut blocks = bunker_repo_format::aligned::AlignedBuffer::default();
        let data = vec![7u8; ALIGN as usize];
        let bytes = blocks.fill(&data);
        // A write of the route in use is in flight on another thread, and the next write
        // is due to probe.
        let in_use = {
            let mut routes = direct.routes.lock().expect("lock");
            *routes = Routes::measured(50.0, 1.0);
            let in_use = routes.choose();
            routes.probe_next();
            in_use
        };
        std::thread::scope(|scope| {
            let probing = scope.spawn(|| direct.write_blocks(&buffered, bytes, 0));
            let waited = (0..200).any(|_| {
                std::thread::sleep(Duration::from_millis(5));
                direct.routes.lock().expect("lock").probing()
            });
            assert!(waited, "the probe was chosen");
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !probing.is_finished(),
                "the probe waits for the write in flight"
            );
            direct
                .routes
                .lock()
                .expect("lock")
                .record(in_use, 0, Duration::ZERO);
            direct.turn.notify_all();
            let written = probing.join().expect("join").expect("write");
            assert_eq!(written, ALIGN, "the probe went direct");
        });
        let routes = direct.routes.lock().expect("lock");
        assert!(!routes.probing());
        assert!(routes.is_alone());
    }

    #[test]
    fn a_write_routed_through_the_page_cache_lands_and_counts_as_buffered() {
        let (_dir, path, buffered, direct) = scratch_file();
        let Some(mut direct) = direct else { return };
        *direct.routes.get_mut().expect("lock") = Routes::measured(50.0, 1.0);
        let mut blocks = bunker_repo_format::aligned::AlignedBuffer::default();
        let data: Vec<u8> = (0..2 * ALIGN).map(|i| (i % 253) as u8).collect();
        let written = direct
            .write_blocks(&buffered, blocks.fill(&data), ALIGN)
            .expect("write");
        assert_eq!(written, 0, "not written directly");
        let written = direct
            .write_blocks(&buffered, blocks.fill(&data), 3 * ALIGN)
            .expect("write");
        assert_eq!(written, 0);
        drop(buffered);
        let file = std::fs::read(&path).expect("read");
        assert_eq!(file.len() as u64, 5 * ALIGN);
        assert_eq!(&file[ALIGN as usize..3 * ALIGN as usize], data.as_slice());
        assert_eq!(&file[3 * ALIGN as usize..], data.as_slice());
    }
}
