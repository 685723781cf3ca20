//! Where unsealed blobs land: buffers aligned for direct writes, reused from blob to blob.
//!
//! A blob is decompressed straight into a [`Plaintext`], whose bytes start as far into an
//! aligned buffer as the blob's offset lies into its file block. The blob's whole blocks are
//! then aligned in memory as they are in the file, and the direct writing threads write them
//! from where they were decoded, without copying them first (see [`super::direct`]).
//!
//! The buffers come back to a small pool ([`Buffers`]) once written. A restore allocates
//! megabytes per blob, and a fresh allocation that large is fresh pages from the kernel:
//! zeroing them took 7% of a volume restore's samples (docs/PERFORMANCE.md, session 15).

use std::sync::{Mutex, PoisonError};

use bunker_repo_format::aligned::{ALIGN, AlignedBuffer};

/// Spare buffers a pool keeps, at most: fewer than the blobs that can be in flight (one per
/// unsealing thread, one per direct writing thread, up to four queued between them). Eight
/// made vol restores 2% faster than four; four came back with the queue's limit to small
/// blobs, which together brought restores of content-defined image chunks (up to 8 MiB
/// each) back to 83-88 MB at the peak, restic's 81-91 (docs/PERFORMANCE.md, session 36).
const SPARE_BUFFERS: usize = 4;

/// Largest buffer a pool keeps: a rare huge blob does not hold its memory for the rest.
const KEPT_CAPACITY: usize = 16 << 20;

/// A blob's plaintext, `lead` bytes into an aligned buffer that spans whole blocks.
#[derive(Debug)]
pub(super) struct Plaintext {
    /// From the block boundary at or before the first byte to the one at or after the last.
    blocks: AlignedBuffer,
    /// Where the bytes start in `blocks` (below [`ALIGN`]).
    lead: usize,
    /// The number of bytes.
    len: usize,
}

impl Plaintext {
    /// The blob's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.blocks.as_slice()[self.lead..self.lead + self.len]
    }

    /// The blob's bytes, to decode into.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.blocks.as_mut_slice()[self.lead..self.lead + self.len]
    }

    /// Where the bytes start in their first block.
    pub fn lead(&self) -> usize {
        self.lead
    }

    /// The whole blocks the bytes lie in, aligned in memory. Before the bytes and after
    /// them lie whatever the buffer held: only what a caller wrote there may be read.
    pub fn blocks_mut(&mut self) -> &mut [u8] {
        self.blocks.as_mut_slice()
    }
}

/// Aligned buffers kept for reuse; shared by the threads that unseal and write.
#[derive(Debug, Default)]
pub(super) struct Buffers {
    spare: Mutex<Vec<AlignedBuffer>>,
}

impl Buffers {
    /// A buffer for `len` bytes starting `lead` bytes into a block (`lead` below [`ALIGN`]),
    /// holding whatever it held before: the caller writes every byte of
    /// [`Plaintext::bytes_mut`].
    pub fn take(&self, lead: usize, len: usize) -> Plaintext {
        let lead = lead % ALIGN;
        let span = (lead + len).next_multiple_of(ALIGN);
        let reused = {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            match spare.iter().position(|b| b.capacity() >= span) {
                Some(fits) => Some(spare.swap_remove(fits)),
                // One that must grow anyway: its old allocation goes.
                None => spare.pop(),
            }
        };
        let mut blocks = reused.unwrap_or_default();
        blocks.resize_for_overwrite(span);
        Plaintext { blocks, lead, len }
    }

    /// A copy of `bytes` laid out for a place `lead` bytes into a block.
    pub fn copy(&self, bytes: &[u8], lead: usize) -> Plaintext {
        let mut copy = self.take(lead, bytes.len());
        copy.bytes_mut().copy_from_slice(bytes);
        copy
    }

    /// Takes `plaintext`'s buffer back for reuse (or frees it, when enough are kept).
    pub fn give(&self, plaintext: Plaintext) {
        if plaintext.blocks.capacity() > KEPT_CAPACITY {
            return;
        }
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < SPARE_BUFFERS {
            spare.push(plaintext.blocks);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_lie_as_far_into_aligned_blocks_as_their_place_into_its_block() {
        let buffers = Buffers::default();
        for (lead, len) in [
            (0, 1),
            (0, ALIGN),
            (1, ALIGN),
            (ALIGN - 1, 2),
            (100, 3 * ALIGN),
        ] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31 + lead) as u8).collect();
            let mut plaintext = buffers.copy(&bytes, lead);
            assert_eq!(plaintext.bytes(), bytes.as_slice());
            assert_eq!(plaintext.lead(), lead);
            let blocks = plaintext.blocks_mut();
            assert_eq!(blocks.as_ptr() as usize % ALIGN, 0);
            assert_eq!(blocks.len(), (lead + len).next_multiple_of(ALIGN));
            assert_eq!(&blocks[lead..lead + len], bytes.as_slice());
            buffers.give(plaintext);
        }
    }

    #[test]
    fn a_given_buffer_is_reused_and_the_pool_stays_small() {
        let buffers = Buffers::default();
        let first = buffers.take(0, 3 * ALIGN);
        let address = first.bytes().as_ptr();
        buffers.give(first);
        let again = buffers.take(5, ALIGN);
        assert_eq!(
            again.bytes().as_ptr(),
            address.wrapping_add(5),
            "the same allocation"
        );
        let held: Vec<Plaintext> = (0..2 * SPARE_BUFFERS)
            .map(|_| buffers.take(0, ALIGN))
            .collect();
        held.into_iter().for_each(|p| buffers.give(p));
        buffers.give(again);
        assert_eq!(buffers.spare.lock().expect("lock").len(), SPARE_BUFFERS);
        buffers.give(buffers.take(0, KEPT_CAPACITY + 1));
        assert!(
            buffers
                .spare
                .lock()
                .expect("lock")
                .iter()
                .all(|b| b.capacity() <= KEPT_CAPACITY),
            "a huge buffer is not kept"
        );
    }
}
