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
//! that lock. A blob is handed over only when a writing thread takes it ([`QUEUED_BLOBS`]
//! is 0): each one waiting held a large chunk's plaintext.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bunker_repo_format::tree::Extent;
use nix::fcntl::{FallocateFlags, OFlag, fallocate};

use super::plaintext::Plaintext;

/// Files with at least this many bytes of data are written directly. Below it, the copy
/// into the page cache costs less than keeping a second descriptor and a writing thread.
#[cfg(not(test))]
pub(super) const DIRECT_MIN: u64 = 32 << 20;
/// Small in unit tests, so that a file of a few blocks takes the direct path.
#[cfg(test)]
pub(super) const DIRECT_MIN: u64 = 64 << 10;

/// Alignment of direct writes' memory, offsets and lengths.
pub(super) const ALIGN: u64 = bunker_repo_format::aligned::ALIGN as u64;

/// Blobs waiting for the writing threads beyond those their unsealing threads hold, at most.
/// With 2, a vol restore peaked at 97-106 MB of memory, with heaptrack finding six
/// plaintexts of 5.6 MB on average alive at the peak; with 0, at 79-89 MB, 3% slower
/// (docs/PERFORMANCE.md, session 13).
pub(super) const QUEUED_BLOBS: usize = 0;

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
}

impl DirectFile {
    /// Opens `path` for direct writes; `None` when the filesystem does not allow them (or
    /// the file cannot be opened again: its ordinary descriptor will say why).
    pub(super) fn open(path: &Path) -> Option<Self> {
        OpenOptions::new()
            .write(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
            .ok()
            .map(|file| Self {
                file,
                usable: AtomicBool::new(true),
                routes: Mutex::default(),
                turn: Condvar::new(),
            })
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
            buffered.write_all_at(bytes, offset)?;
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
                if let Err(e) = buffered.write_all_at(bytes, offset) {
                    done(0, Duration::ZERO);
                    return Err(e);
                }
                0
            }
        };
        done(bytes.len() as u64, started.elapsed());
        Ok(written)
    }
}

/// The two ways whole blocks can reach a large file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `O_DIRECT`: the write returns once the device has the bytes.
    Direct = 0,
    /// Through the page cache: the write returns once the bytes are copied there.
    Buffered = 1,
}

/// Bytes of a file written directly before buffered writes are tried: a file that size is
/// over before the choice would pay back, and smaller files' writes stay predictable.
const WARM_UP: u64 = 64 << 20;

/// After the warm-up, the dearer route is taken once in `PROBE_EVERY * r * r` writes (at
/// most [`PROBE_MOST`]), `r` being how many times the cheaper route's cost it had, so that
/// its cost stays known as the machine's state changes. The probes then cost at most 1/64
/// of the writing time, at `r = 2`.
const PROBE_EVERY: f64 = 16.0;

/// The longest run of writes between two probes.
const PROBE_MOST: f64 = 1024.0;

/// Picks the route of each write of a large file's whole blocks by what each route has cost
/// per byte lately, as a writing thread waits for it.
///
/// Neither route is faster everywhere. On one benchmark virtual machine, buffered writes of
/// 2 GiB took 5.5 s (each new page-cache page faulted in the host too) and direct ones 1 s;
/// on another, buffered 1.4 s and direct 5.4 s (a slow disk behind a fast page cache).
/// A buffered write is also slowed once the kernel throttles writers with too much dirty
/// memory, which the measure sees. Writes start direct ([`WARM_UP`]), then each route is
/// measured and the cheaper one taken, but for rare probes of the other ([`PROBE_EVERY`]).
///
/// A probe runs alone: a write overlapping the other route's may wait for it (ext4 holds
/// the file's lock through a buffered write, and a direct write holds it shared), which
/// would make the route in use look cheap and the probed one dear. So no write starts
/// while a probe waits or runs ([`Routes::probing`]), and the probe starts once the writes
/// in flight are done. The route in use has its writing threads side by side, each write
/// taking longer for sharing the disk or the lock, so its cost is divided by the writes
/// that were in flight with it.
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// Bytes written so far, both routes.
    written: u64,
    /// Nanoseconds per byte of each route's recent writes (a moving average), once known.
    cost: [Option<f64>; 2],
    /// Writes since the dearer route was last taken.
    since_probe: u32,
    /// Writes in flight, both routes.
    in_flight: u32,
    /// A probe was chosen and has not been recorded yet.
    probe_pending: bool,
}

/// A write's route, and what [`Routes::record`] needs to weigh its time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    /// The route to take.
    pub route: Route,
    /// Taken to measure the dearer (or unmeasured) route.
    pub probe: bool,
    /// Writes in flight when this one started, itself included.
    sharing: u32,
}

impl Routes {
    /// The route for the next write; its [`Ticket`] goes back to [`Routes::record`]. Call
    /// only when not [`Routes::probing`]; a probe's write waits for [`Routes::is_alone`].
    pub fn choose(&mut self) -> Ticket {
        let (route, probe) = self.pick();
        self.in_flight += 1;
        self.probe_pending |= probe;
        Ticket {
            route,
            probe,
            sharing: self.in_flight,
        }
    }

    /// A probe waits or runs: no other write may start.
    pub fn probing(&self) -> bool {
        self.probe_pending
    }

    /// No write is in flight but the caller's.
    pub fn is_alone(&self) -> bool {
        self.in_flight <= 1
    }

    fn pick(&mut self) -> (Route, bool) {
        if self.written < WARM_UP {
            return (Route::Direct, false);
        }
        let [Some(direct), Some(buffered)] = self.cost else {
            return match self.cost[0] {
                None => (Route::Direct, false),
                Some(_) => (Route::Buffered, true),
            };
        };
        let (cheaper, dearer) = if buffered < direct {
            ((Route::Buffered, buffered), (Route::Direct, direct))
        } else {
            ((Route::Direct, direct), (Route::Buffered, buffered))
        };
        let ratio = dearer.1 / cheaper.1.max(f64::MIN_POSITIVE);
        self.since_probe += 1;
        if f64::from(self.since_probe) >= (PROBE_EVERY * ratio * ratio).min(PROBE_MOST) {
            self.since_probe = 0;
            return (dearer.0, true);
        }
        (cheaper.0, false)
    }

    /// Records that the write `ticket` was for, of `bytes`, took `elapsed` (0 bytes for one
    /// that failed).
    pub fn record(&mut self, ticket: Ticket, bytes: u64, elapsed: Duration) {
        // The writes it shared the disk or the lock with: those at its start or its end.
        let sharing = if ticket.probe {
            self.probe_pending = false;
            1
        } else {
            ticket.sharing.max(self.in_flight).max(1)
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.written += bytes;
        if bytes == 0 {
            return;
        }
        let cost = elapsed.as_nanos() as f64 / bytes as f64 / f64::from(sharing);
        let slot = &mut self.cost[ticket.route as usize];
        *slot = Some(match *slot {
            // A probe weighs half (it is rare), a write of the route in use a quarter: a
            // few writes follow a change, one slow write does not flip the choice.
            Some(average) if ticket.probe => (average + cost) / 2.0,
            Some(average) => average * 0.75 + cost * 0.25,
            None => cost,
        });
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
}

impl DirectQueue {
    /// An open queue.
    pub(super) fn new() -> Self {
        let (sender, receiver) = sync_channel(QUEUED_BLOBS);
        Self {
            sender: Mutex::new(Some(sender)),
            receiver: Mutex::new(receiver),
        }
    }

    /// The next blob to write, waiting for one; `None` once the queue is closed and empty.
    pub(super) fn next(&self) -> Option<BlobToWrite> {
        let receiver = self.receiver.lock().unwrap_or_else(PoisonError::into_inner);
        receiver.recv().ok()
    }

    /// Hands `blob` to a writing thread, waiting until one takes it (or while
    /// [`QUEUED_BLOBS`] blobs wait). Returns it if the queue is closed.
    pub(super) fn send(&self, blob: BlobToWrite) -> Result<(), BlobToWrite> {
        let sender = self
            .sender
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match sender {
            Some(sender) => sender.send(blob).map_err(|e| e.0),
            None => Err(blob),
        }
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
        let read_only = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(true),
            routes: Mutex::default(),
            turn: Condvar::new(),
        };
        assert!(read_only.write_blocks(&buffered, blocks, 0).is_err());
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);

        // Once refused, the blocks go through the ordinary descriptor.
        let refused = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(false),
            routes: Mutex::default(),
            turn: Condvar::new(),
        };
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

    /// The routes chosen for `writes` writes, each recorded as costing `cost(route)`
    /// nanoseconds per byte, one block each.
    fn drive(routes: &mut Routes, writes: usize, cost: impl Fn(Route) -> u64) -> Vec<Route> {
        (0..writes)
            .map(|_| {
                let ticket = routes.choose();
                let route = ticket.route;
                routes.record(ticket, ALIGN, Duration::from_nanos(cost(route) * ALIGN));
                route
            })
            .collect()
    }

    fn count(routes: &[Route], route: Route) -> usize {
        routes.iter().filter(|r| **r == route).count()
    }

    #[test]
    fn writes_go_direct_until_the_warm_up_then_by_cost() {
        let mut routes = Routes::default();
        let warm_up = drive(&mut routes, (WARM_UP / ALIGN) as usize, |_| 5);
        assert!(warm_up.iter().all(|r| *r == Route::Direct), "{warm_up:?}");

        // Buffered writes cost a fifth: after one probe, nearly all go buffered.
        let chosen = drive(
            &mut routes,
            2000,
            |r| if r == Route::Direct { 5 } else { 1 },
        );
        assert_eq!(
            chosen[0],
            Route::Buffered,
            "the untried route is tried first"
        );
        let direct = count(&chosen, Route::Direct);
        assert!((1..=10).contains(&direct), "{direct} direct probes of 2000");

        // The page cache fills and buffered writes slow down: direct takes over after the
        // first slow one (the first two writes may hold a probe and that one).
        let chosen = drive(
            &mut routes,
            2000,
            |r| if r == Route::Direct { 5 } else { 40 },
        );
        assert_eq!(
            chosen[2..12],
            [Route::Direct; 10][..],
            "{:?}",
            &chosen[..11]
        );
        let buffered = count(&chosen, Route::Buffered);
        assert!(
            (1..=10).contains(&buffered),
            "{buffered} buffered probes of 2000"
        );
    }

    #[test]
    fn a_probe_runs_alone_and_writes_side_by_side_are_weighed_by_their_sharing() {
        let mut routes = Routes {
            written: WARM_UP,
            cost: [Some(5.0), Some(1.0)],
            ..Routes::default()
        };
        let nanos = |per_byte: u64| Duration::from_nanos(per_byte * ALIGN);
        // Two buffered writes side by side, each taking twice its own time.
        let (first, second) = (routes.choose(), routes.choose());
        assert_eq!(
            (first.route, second.route),
            (Route::Buffered, Route::Buffered)
        );
        assert!(!routes.is_alone());
        routes.record(first, ALIGN, nanos(2));
        routes.record(second, ALIGN, nanos(2));
        assert_eq!(routes.cost, [Some(5.0), Some(1.0)]);

        routes.since_probe = u32::MAX - 1;
        let probe = routes.choose();
        assert_eq!(probe.route, Route::Direct);
        assert!(routes.probing() && routes.is_alone());
        routes.record(probe, ALIGN, nanos(9));
        assert!(!routes.probing());
        assert_eq!(routes.cost, [Some(7.0), Some(1.0)]);

        // Alone, a slow buffered write counts in full.
        let alone = routes.choose();
        routes.record(alone, ALIGN, nanos(101));
        assert_eq!(routes.cost, [Some(7.0), Some(26.0)]);
        assert_eq!(routes.written, WARM_UP + 4 * ALIGN);
        assert_eq!(routes.in_flight, 0);
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
            *routes = Routes {
                written: WARM_UP,
                cost: [Some(50.0), Some(1.0)],
                since_probe: u32::MAX - 1,
                ..Routes::default()
            };
            routes.in_flight = 1;
            Ticket {
                route: Route::Buffered,
                probe: false,
                sharing: 1,
            }
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
        assert_eq!(routes.in_flight, 0);
    }

    #[test]
    fn close_costs_are_probed_more_often_than_far_ones() {
        let probes = |dearer: u64| {
            let mut routes = Routes::default();
            drive(&mut routes, (WARM_UP / ALIGN) as usize, |_| 10);
            let chosen = drive(&mut routes, 4000, |r| {
                if r == Route::Direct { 10 } else { dearer }
            });
            count(&chosen, Route::Buffered)
        };
        let (close, far) = (probes(12), probes(40));
        assert!(
            close > 2 * far && far >= 3,
            "probes: {close} at 1.2x, {far} at 4x"
        );
    }

    #[test]
    fn a_write_routed_through_the_page_cache_lands_and_counts_as_buffered() {
        let (_dir, path, buffered, direct) = scratch_file();
        let Some(mut direct) = direct else { return };
        *direct.routes.get_mut().expect("lock") = Routes {
            written: WARM_UP,
            cost: [Some(50.0), Some(1.0)],
            ..Routes::default()
        };
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
