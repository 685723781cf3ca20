//! Direct writes: a large file's whole blocks go to the disk around the page cache
//! (`O_DIRECT`), the rest of each write through the file's ordinary descriptor.
//!
//! A restore writes each byte once and does not read it back, so caching a large file only
//! costs: the kernel copies every byte into a page it must first find, and on a virtual
//! machine that returns free memory to its host (free page reporting, ballooning) each of
//! those pages faults in the host as well. Buffered writes of 2 GiB took 5.5 s of system
//! time on the 2-core benchmark machine, direct ones 1 s (docs/PERFORMANCE.md, session
//! 13). A restore of a disk image also no longer evicts the host's working set.
//!
//! Direct I/O wants the memory, the file offset and the length aligned to the device's
//! logical block. [`ALIGN`] (4 KiB) suits every Linux block device and filesystem we know
//! of. A blob's bytes rarely start on a block boundary, so each write is cut in three: the
//! head up to the first boundary and the tail after the last go through the ordinary
//! descriptor, the whole blocks between them are copied into an aligned buffer and written
//! directly. Blocks shared by two blobs are thus only ever written buffered, and no block is
//! written both ways. A filesystem that refuses direct I/O (`tmpfs` refuses to open with
//! it; others fail the write with `EINVAL`) gets the ordinary writes, for the rest of the
//! file.
//!
//! A direct write returns once the disk has the data, so the threads that unseal do not
//! make them: they hand the blob's plaintext (moved, not copied) to one writing thread
//! ([`DirectQueue`]) and go on. That thread copies the whole blocks into its one aligned
//! buffer, and writes the head and tail too: a buffered write takes the inode's lock, which
//! ext4 holds through a direct write that allocates blocks, so an unsealing thread writing
//! an edge would wait for the disk after all. A blob is handed over only when that thread
//! takes it ([`QUEUED_BLOBS`] is 0): each one waiting held a large chunk's plaintext.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::OFlag;

pub(super) use bunker_repo_format::aligned::AlignedBuffer;

/// Files with at least this many bytes of data are written directly. Below it, the copy
/// into the page cache costs less than keeping a second descriptor and a writing thread.
#[cfg(not(test))]
pub(super) const DIRECT_MIN: u64 = 32 << 20;
/// Small in unit tests, so that a file of a few blocks takes the direct path.
#[cfg(test)]
pub(super) const DIRECT_MIN: u64 = 64 << 10;

/// Alignment of direct writes' memory, offsets and lengths.
pub(super) const ALIGN: u64 = bunker_repo_format::aligned::ALIGN as u64;

/// Blobs waiting for the writing thread beyond those their unsealing threads hold, at most.
/// With 2, a vol restore peaked at 97-106 MB of memory, with heaptrack finding six
/// plaintexts of 5.6 MB on average alive at the peak; with 0, at 79-89 MB, 3% slower
/// (docs/PERFORMANCE.md, session 13).
pub(super) const QUEUED_BLOBS: usize = 0;

/// A second descriptor of a large file, opened for direct writes.
#[derive(Debug)]
pub(super) struct DirectFile {
    file: File,
    /// Cleared when the filesystem refuses a direct write: the rest goes buffered.
    usable: AtomicBool,
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
            })
    }

    /// The whole aligned blocks of a write of `length` bytes at `offset`, as a range of
    /// those bytes; `None` when there are none, or the filesystem refused direct writes.
    pub(super) fn blocks_of(&self, offset: u64, length: usize) -> Option<Range<usize>> {
        let first = offset.next_multiple_of(ALIGN);
        let end = (offset + length as u64) / ALIGN * ALIGN;
        (first < end && self.usable.load(Ordering::Relaxed))
            .then(|| (first - offset) as usize..(end - offset) as usize)
    }

    /// Writes `bytes` (whole blocks, aligned in memory) at `offset` (aligned) directly, or
    /// through `buffered` (the file's ordinary descriptor) once the filesystem refused it.
    /// Returns the bytes written directly.
    pub(super) fn write_blocks(
        &self,
        buffered: &File,
        bytes: &[u8],
        offset: u64,
    ) -> io::Result<u64> {
        if self.usable.load(Ordering::Relaxed) {
            match self.file.write_all_at(bytes, offset) {
                Ok(()) => return Ok(bytes.len() as u64),
                // Refused (an alignment this device does not take, a filesystem that
                // opens with O_DIRECT but cannot do it): whatever it wrote is rewritten.
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    self.usable.store(false, Ordering::Relaxed);
                }
                Err(e) => return Err(e),
            }
        }
        buffered.write_all_at(bytes, offset)?;
        Ok(0)
    }
}

/// A blob's plaintext for one place in a file, on its way to the writing thread.
#[derive(Debug)]
pub(super) struct BlobToWrite {
    /// The file, by its number in the batch.
    pub file: u32,
    /// Where the bytes go.
    pub offset: u64,
    /// The bytes.
    pub data: Vec<u8>,
    /// Which of the bytes are whole blocks (from [`DirectFile::blocks_of`]).
    pub blocks: Range<usize>,
}

/// The queue to the thread that makes the direct writes.
#[derive(Debug)]
pub(super) struct DirectQueue {
    /// Closed (taken) once every blob is unsealed, which ends the writing thread.
    sender: Mutex<Option<SyncSender<BlobToWrite>>>,
}

impl DirectQueue {
    /// A queue, and the receiving end for the writing thread.
    pub(super) fn new() -> (Self, Receiver<BlobToWrite>) {
        let (sender, receiver) = sync_channel(QUEUED_BLOBS);
        let queue = Self {
            sender: Mutex::new(Some(sender)),
        };
        (queue, receiver)
    }

    /// Hands `blob` to the writing thread, waiting until it takes it (or while
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

    /// No more blocks: the writing thread ends once it wrote the queued ones.
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
    fn only_whole_aligned_blocks_are_direct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        File::create(&path).expect("create");
        let direct = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(true),
        };
        let block = ALIGN as usize;
        assert_eq!(direct.blocks_of(0, block), Some(0..block));
        assert_eq!(
            direct.blocks_of(1, 2 * block),
            Some(block - 1..2 * block - 1)
        );
        assert_eq!(direct.blocks_of(ALIGN - 1, block + 1), Some(1..block + 1));
        assert_eq!(direct.blocks_of(1, block), None, "no whole block");
        assert_eq!(direct.blocks_of(ALIGN, block - 1), None);
        assert_eq!(
            direct.blocks_of(5 * ALIGN + 7, 3 * block),
            Some(block - 7..3 * block - 7)
        );
        direct.usable.store(false, Ordering::Relaxed);
        assert_eq!(
            direct.blocks_of(0, 4 * block),
            None,
            "refused: all buffered"
        );
    }

    #[test]
    fn a_refused_direct_write_goes_buffered_and_other_errors_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let buffered = File::create(&path).expect("create");
        let mut blocks = AlignedBuffer::default();
        let data: Vec<u8> = (0..3 * ALIGN).map(|i| (i % 251) as u8).collect();
        let blocks = blocks.fill(&data);
        // A read-only descriptor fails with EBADF: not a refusal of direct I/O, so the
        // error is returned, not hidden behind a buffered write.
        let read_only = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(true),
        };
        assert!(read_only.write_blocks(&buffered, blocks, 0).is_err());
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 0);

        // Once refused, the blocks go through the ordinary descriptor.
        let refused = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(false),
        };
        let written = refused
            .write_blocks(&buffered, blocks, ALIGN)
            .expect("write");
        assert_eq!(written, 0);
        drop(buffered);
        let file = std::fs::read(&path).expect("read");
        assert_eq!(&file[ALIGN as usize..], data.as_slice());
    }
}
