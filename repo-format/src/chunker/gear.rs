//! FastCDC's search for a cut point, four stretches of the input at a time.
//!
//! The gear hash after byte `p` is `h(p) = (h(p - 1) << 1) + gear[data[p]]`, so a byte's
//! contribution is shifted out of the 64-bit hash 64 bytes later: past the first 64 bytes
//! of a scan, `h(p)` depends only on the 64 bytes ending at `p`. A single hash is one long
//! chain of dependent additions, which leaves most of a core idle. Here a stretch of input is
//! split into [`LANES`] lanes whose hashes are computed side by side, each lane's hash
//! started [`WINDOW`] bytes before the lane (or where the scan started, whichever is
//! later), so that every hash is exactly the one the sequential loop computes. The first
//! position of the lowest lane whose hash matches is the sequential loop's first match.
//!
//! The cut points are those of `fastcdc::v2020::cut_gear` (normalisation as the caller's
//! masks say), byte for byte; the tests compare the two on random and on repetitive input.
//! On the benchmark machine the `fastcdc` crate's loop scanned 2.5 GB/s, this one 3.7 GB/s
//! (best of twelve interleaved runs over 256 MiB; docs/PERFORMANCE.md, session 14).

/// Bytes after which a byte no longer affects the hash.
const WINDOW: usize = 64;

/// Hashes computed side by side.
const LANES: usize = 4;

/// Bytes per lane in one round. Each round warms up `LANES - 1` hashes over [`WINDOW`]
/// bytes each (under 1% of the round), and a match in lane `k` has lanes below it scanned
/// to the round's end, one at a time.
const LANE_BYTES: usize = 8192;

/// Rounds shorter than this per lane are scanned one byte at a time: warming up would
/// cost more than it saves.
const MIN_LANE_BYTES: usize = 4 * WINDOW;

/// The length of the chunk that starts at `data[0]` as FastCDC 2020 cuts it: no cut before
/// `min_size`; up to `avg_size` a cut where `hash & mask_s == 0`, after it where `hash &
/// mask_l == 0`; at most `max_size`, or all of `data` if it is shorter. The hash starts
/// at `min_size`. Sizes are even, as [`super::ChunkerParams::validate`] requires, and the
/// masks leave bit 63 clear (FastCDC's masks use bits up to 47).
pub(super) fn cut(
    data: &[u8],
    [min_size, avg_size, max_size]: [usize; 3],
    [mask_s, mask_l]: [u64; 2],
    gear: &[u64; 256],
) -> usize {
    let mut remaining = data.len();
    if remaining <= min_size {
        return remaining;
    }
    let mut center = avg_size;
    if remaining > max_size {
        remaining = max_size;
    } else if remaining < center {
        center = remaining;
    }
    // FastCDC tests positions in pairs: a pair starting before `center` is tested against
    // the strict mask, and an odd last byte is never tested.
    let strict_end = center / 2 * 2;
    let end = remaining / 2 * 2;
    let scan = Scan {
        data,
        origin: min_size,
        gear,
    };
    scan.first_match(min_size, strict_end, mask_s)
        .or_else(|| scan.first_match(strict_end, end, mask_l))
        .unwrap_or(remaining)
}

/// The hashes of one chunk: `data`, with the hash started (at zero) at `origin`.
struct Scan<'a> {
    data: &'a [u8],
    origin: usize,
    gear: &'a [u64; 256],
}

impl Scan<'_> {
    /// `h(p)` given `h(p - 1)`.
    #[inline(always)]
    fn roll(&self, hash: u64, byte: u8) -> u64 {
        (hash << 1).wrapping_add(self.gear[usize::from(byte)])
    }

    /// `h(position - 1)`: zero at the origin, else the hash of the (at most [`WINDOW`])
    /// bytes before `position` that the origin does not cut off.
    fn hash_before(&self, position: usize) -> u64 {
        let start = self.origin.max(position.saturating_sub(WINDOW));
        self.data[start..position]
            .iter()
            .fold(0, |hash, &byte| self.roll(hash, byte))
    }

    /// The first position in `from..to` whose hash has no bit of `mask` set.
    fn first_match(&self, from: usize, to: usize, mask: u64) -> Option<usize> {
        let mut position = from;
        let mut hash = self.hash_before(from);
        loop {
            let lane_bytes = ((to - position) / LANES).min(LANE_BYTES);
            if lane_bytes < MIN_LANE_BYTES {
                break;
            }
            let (found, last_hash) = self.round(position, lane_bytes, hash, mask);
            if found.is_some() {
                return found;
            }
            hash = last_hash;
            position += LANES * lane_bytes;
        }
        self.scan_lane(position, to, hash, mask).0
    }

    /// Scans `LANES` lanes of `lane_bytes` from `start`, the first lane's hash continuing
    /// from `hash`. Returns the first match, or else the hash at the round's last byte.
    fn round(&self, start: usize, lane_bytes: usize, hash: u64, mask: u64) -> (Option<usize>, u64) {
        let lane_start = |lane: usize| start + lane * lane_bytes;
        let mut hashes = [
            hash,
            self.hash_before(lane_start(1)),
            self.hash_before(lane_start(2)),
            self.hash_before(lane_start(3)),
        ];
        let lane = |k: usize| &self.data[lane_start(k)..lane_start(k) + lane_bytes];
        let (lane0, lane1, lane2, lane3) = (lane(0), lane(1), lane(2), lane(3));
        for step in 0..lane_bytes {
            hashes[0] = self.roll(hashes[0], lane0[step]);
            hashes[1] = self.roll(hashes[1], lane1[step]);
            hashes[2] = self.roll(hashes[2], lane2[step]);
            hashes[3] = self.roll(hashes[3], lane3[step]);
            let matched = (hashes[0] & mask == 0)
                | (hashes[1] & mask == 0)
                | (hashes[2] & mask == 0)
                | (hashes[3] & mask == 0);
            if matched {
                return (Some(self.resolve(start, lane_bytes, step, hashes, mask)), 0);
            }
        }
        (None, hashes[3])
    }

    /// The first match of a round in which some lane matched at `step`, and none earlier:
    /// the lowest lane's first match. The lanes below the one that matched are scanned on
    /// to their ends first; if none of them matches, the last lane is the one that did.
    fn resolve(
        &self,
        start: usize,
        lane_bytes: usize,
        step: usize,
        hashes: [u64; LANES],
        mask: u64,
    ) -> usize {
        for (lane, &hash) in hashes[..LANES - 1].iter().enumerate() {
            let at = start + lane * lane_bytes + step;
            if hash & mask == 0 {
                return at;
            }
            let lane_end = start + (lane + 1) * lane_bytes;
            if let (Some(found), _) = self.scan_lane(at + 1, lane_end, hash, mask) {
                return found;
            }
        }
        start + (LANES - 1) * lane_bytes + step
    }

    /// Scans `from..to` one byte at a time, continuing from `hash` = `h(from - 1)`.
    /// Returns the first match, or else the last hash.
    fn scan_lane(&self, from: usize, to: usize, mut hash: u64, mask: u64) -> (Option<usize>, u64) {
        for (position, &byte) in self.data[from..to].iter().enumerate() {
            hash = self.roll(hash, byte);
            if hash & mask == 0 {
                return (Some(from + position), hash);
            }
        }
        (None, hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::tests::mixed;
    use fastcdc::v2020::{Normalization, cut_gear, select_masks};
    use proptest::prelude::*;

    fn gear() -> [u64; 256] {
        crate::chunker::gear_table(&[9u8; 32])
    }

    /// The cut of the `fastcdc` crate's sequential loop, the reference.
    fn reference(
        data: &[u8],
        sizes: [usize; 3],
        [mask_s, mask_l]: [u64; 2],
        gear: &[u64; 256],
    ) -> usize {
        let shifted = gear.map(|value| value << 1);
        let [min, avg, max] = sizes;
        let (_, cut) = cut_gear(
            data,
            min,
            avg,
            max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            gear,
            &shifted,
        );
        cut
    }

    /// Every cut of `data`, chunk after chunk, agrees with the reference.
    fn assert_same_cuts(data: &[u8], sizes: [usize; 3], masks: [u64; 2]) {
        let gear = gear();
        let mut position = 0;
        while position < data.len() {
            let rest = &data[position..];
            let expected = reference(rest, sizes, masks, &gear);
            assert_eq!(
                cut(rest, sizes, masks, &gear),
                expected,
                "chunk at {position}"
            );
            position += expected.max(1);
        }
    }

    #[test]
    fn cuts_of_megabyte_chunks_match_the_sequential_loop() {
        let data = mixed(&[
            (0, 9 << 20, 1),
            (1, 3 << 20, 0),
            (0, 5 << 20, 2),
            (2, 2 << 20, 5),
        ]);
        let sizes = [512 << 10, 1 << 20, 8 << 20];
        assert_same_cuts(
            &data,
            sizes,
            select_masks(1 << 20, Normalization::Level1).into(),
        );
    }

    #[test]
    fn matches_in_several_lanes_of_a_round_resolve_to_the_first() {
        // Masks of one or two bits match every few bytes, so most rounds have matches in
        // several lanes, at the same step or at different ones.
        let data = mixed(&[(0, 300_000, 3)]);
        for masks in [
            [0x1, 0x1],
            [0x8000_0000_0001, 0x1],
            [0x3, 0x1],
            [0x100, 0x8000],
        ] {
            assert_same_cuts(&data, [64, 32_768, 65_536], masks);
        }
    }

    proptest! {
        #[test]
        fn cuts_match_the_sequential_loop(
            pieces in prop::collection::vec((0u8..3, 1usize..40_000, any::<u64>()), 1..8),
            min_kib in 0usize..8,
            avg_shift in 8u32..15,
            max_factor in 1usize..5,
            odd_tail in any::<bool>(),
        ) {
            let mut data = mixed(&pieces);
            if odd_tail && data.len().is_multiple_of(2) {
                data.push(0x5a);
            }
            let avg = 1usize << avg_shift;
            let min = (min_kib * 1024).clamp(64, avg);
            let max = avg * max_factor * 2;
            let masks = select_masks(avg, Normalization::Level1).into();
            assert_same_cuts(&data, [min, avg, max], masks);
        }
    }
}
