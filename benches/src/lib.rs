//! Shared inputs for bunker's benchmarks.

use bunker_repo_format::index::{IndexSegment, IndexedPack};
use bunker_repo_format::pack::PackEntry;
use bunker_repo_format::{BlobId, BlobKind, PackId};

/// Deterministic pseudo-random bytes (xorshift64), incompressible like encrypted or
/// compressed data.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Text-like bytes that compress about as well as source code.
pub fn text_bytes(len: usize) -> Vec<u8> {
    let words = [
        "fn ", "let ", "match ", "return ", "struct ", "impl ", "self", "\n    ", "{ ", "} ", "x",
        "y", "42", ";",
    ];
    let mut out = Vec::with_capacity(len + 16);
    let mut state = 7u64;
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(words[(state % words.len() as u64) as usize].as_bytes());
    }
    out.truncate(len);
    out
}

/// A tiny deterministic generator (SplitMix64) for synthetic ids.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator; the same seed gives the same stream.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 pseudo-random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// 32 pseudo-random bytes (a uniformly distributed id).
    pub fn bytes32(&mut self) -> [u8; 32] {
        let mut out = [0; 32];
        for part in out.chunks_exact_mut(8) {
            part.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        out
    }
}

/// Blobs per synthetic index segment (what a writer puts in one).
pub const SEGMENT_BLOBS: usize = 100_000;

/// `blobs` synthetic data blobs, `per_pack` to a pack (200 KB - 1 MB each, back to back),
/// as index segments of [`SEGMENT_BLOBS`] blobs: ids drawn from `SplitMix::new(1)`, so a
/// reader can draw them again to look them up.
pub fn synthetic_segments(blobs: usize, per_pack: usize) -> impl Iterator<Item = IndexSegment> {
    let per_pack = per_pack.max(1);
    let mut ids = SplitMix::new(1);
    let mut packs = SplitMix::new(3);
    let mut done = 0;
    std::iter::from_fn(move || {
        if done >= blobs {
            return None;
        }
        let mut segment = IndexSegment::default();
        let mut in_segment = 0;
        while in_segment < SEGMENT_BLOBS && done < blobs {
            let count = per_pack.min(blobs - done);
            let mut offset = 40u64;
            let entries = (0..count)
                .map(|i| {
                    let length = 200_000 + (i as u32 * 7919) % 800_000;
                    let entry = PackEntry {
                        id: BlobId::from_bytes(ids.bytes32()),
                        kind: BlobKind::Data,
                        offset,
                        length,
                        raw_length: length + length / 3,
                    };
                    offset += u64::from(length);
                    entry
                })
                .collect();
            segment.packs.push(IndexedPack {
                id: PackId::from_bytes(packs.bytes32()),
                kind: BlobKind::Data,
                blobs: entries,
            });
            done += count;
            in_segment += count;
        }
        Some(segment)
    })
}
