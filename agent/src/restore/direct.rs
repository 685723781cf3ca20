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
//! descriptor, the whole blocks between them are copied into an aligned buffer (one per
//! thread, reused) and written directly. Blocks shared by two blobs are thus only ever
//! written buffered, and no block is written both ways. A filesystem that refuses direct
//! I/O (`tmpfs` refuses to open with it; others fail the write with `EINVAL`) gets the
//! ordinary writes, for the rest of the file.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::OFlag;

/// Files with at least this many bytes of data are written directly. Below it, the copy
/// into the page cache costs less than the wait for the disk each direct write takes.
#[cfg(not(test))]
pub(super) const DIRECT_MIN: u64 = 32 << 20;
/// Small in unit tests, so that a file of a few blocks takes the direct path.
#[cfg(test)]
pub(super) const DIRECT_MIN: u64 = 64 << 10;

/// Alignment of direct writes' memory, offsets and lengths.
pub(super) const ALIGN: u64 = 4096;

/// Largest aligned buffer a thread keeps between writes (a blob of 8 MiB, the default
/// largest chunk).
const KEPT_BUFFER: usize = (8 << 20) + ALIGN as usize;

thread_local! {
    static ALIGNED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

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

    /// Writes all of `data` at `offset`: its whole aligned blocks through this descriptor,
    /// the rest through `buffered`, the file's ordinary descriptor. Returns the bytes
    /// written directly.
    pub(super) fn write_all_at(
        &self,
        buffered: &File,
        data: &[u8],
        offset: u64,
    ) -> io::Result<u64> {
        let end = offset + data.len() as u64;
        let blocks_start = offset.next_multiple_of(ALIGN);
        let blocks_end = end / ALIGN * ALIGN;
        if blocks_end <= blocks_start || !self.usable.load(Ordering::Relaxed) {
            buffered.write_all_at(data, offset)?;
            return Ok(0);
        }
        let head = (blocks_start - offset) as usize;
        let tail = (blocks_end - offset) as usize;
        buffered.write_all_at(&data[..head], offset)?;
        let blocks = &data[head..tail];
        let direct = match write_aligned(&self.file, blocks, blocks_start) {
            Ok(()) => blocks.len() as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                // Refused (an alignment this device does not accept, a filesystem that
                // opens with O_DIRECT but cannot do it): whatever it wrote is rewritten.
                self.usable.store(false, Ordering::Relaxed);
                buffered.write_all_at(blocks, blocks_start)?;
                0
            }
            Err(e) => return Err(e),
        };
        buffered.write_all_at(&data[tail..], blocks_end)?;
        Ok(direct)
    }
}

/// Writes `blocks` (a multiple of [`ALIGN`] long) at `offset` (aligned) through `file`,
/// from this thread's aligned buffer.
fn write_aligned(file: &File, blocks: &[u8], offset: u64) -> io::Result<()> {
    ALIGNED.with_borrow_mut(|buffer| {
        let needed = blocks.len() + ALIGN as usize;
        if buffer.len() < needed {
            buffer.resize(needed, 0);
        }
        let start = buffer.as_ptr().align_offset(ALIGN as usize);
        let aligned = &mut buffer[start..start + blocks.len()];
        aligned.copy_from_slice(blocks);
        let result = file.write_all_at(aligned, offset);
        // A rare large blob does not keep its buffer's memory for the rest of the run.
        if buffer.len() > KEPT_BUFFER {
            *buffer = Vec::new();
        }
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a misplaced write shows.
    fn pattern(length: usize, seed: u64) -> Vec<u8> {
        (0..length as u64)
            .map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 7) as u8)
            .collect()
    }

    #[test]
    fn unaligned_writes_in_any_order_give_the_file_and_only_whole_blocks_go_direct() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let buffered = File::create(&path).expect("create");
        let direct = DirectFile::open(&path);
        let supported = direct.is_some();
        // Pieces of odd lengths, several inside one block, some spanning many.
        let lengths = [
            1usize,
            4095,
            4097,
            70_000,
            3,
            12_288,
            8192 + 17,
            100_001,
            5000,
        ];
        let content = pattern(lengths.iter().sum(), 11);
        let mut pieces = Vec::new();
        let mut offset = 0usize;
        for length in lengths {
            pieces.push(offset..offset + length);
            offset += length;
        }
        let mut direct_bytes = 0;
        // Last first: the file grows from its end, as out-of-order restores do.
        for piece in pieces.iter().rev() {
            let data = &content[piece.clone()];
            direct_bytes += match &direct {
                Some(direct) => direct
                    .write_all_at(&buffered, data, piece.start as u64)
                    .expect("write"),
                None => {
                    buffered
                        .write_all_at(data, piece.start as u64)
                        .expect("write");
                    0
                }
            };
        }
        drop((buffered, direct));
        assert_eq!(std::fs::read(&path).expect("read"), content);
        let whole_blocks: u64 = pieces
            .iter()
            .map(|p| {
                let start = (p.start as u64).next_multiple_of(ALIGN);
                let end = p.end as u64 / ALIGN * ALIGN;
                end.saturating_sub(start)
            })
            .sum();
        if supported {
            assert_eq!(direct_bytes, whole_blocks);
        } else {
            eprintln!("no direct I/O in {}: buffered only", dir.path().display());
        }
    }

    #[test]
    fn a_refused_direct_write_falls_back_to_buffered_for_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("large.img");
        let buffered = File::create(&path).expect("create");
        // A descriptor opened without O_DIRECT but read-only: its writes fail with EBADF,
        // which is not a refusal of direct I/O and must be reported, not hidden.
        let read_only = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(true),
        };
        let data = pattern(3 * ALIGN as usize, 5);
        assert!(read_only.write_all_at(&buffered, &data, 0).is_err());

        // One refused: everything buffered from then on, and the bytes all land.
        let refusing = DirectFile {
            file: File::open(&path).expect("open"),
            usable: AtomicBool::new(false),
        };
        assert_eq!(
            refusing.write_all_at(&buffered, &data, 100).expect("write"),
            0
        );
        drop(buffered);
        let written = std::fs::read(&path).expect("read");
        assert_eq!(&written[100..], data.as_slice());
    }
}
