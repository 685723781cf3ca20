//! Content-defined chunking: FastCDC (2020 variant, normalization level 1) with a gear table
//! derived from the repository's secret chunker seed, so chunk boundaries differ per
//! repository and cannot be predicted from known content.
//!
//! Large buffers can be cut in parallel ([`Chunker::cut_parallel`]) with exactly the
//! boundaries of sequential chunking: a cut from position `p` depends only on `p` and the
//! `max_size` bytes after it, so chains of cuts walked from different positions coincide
//! forever once they share one position.

mod gear;

use std::io::{self, Read};

use fastcdc::v2020::{Normalization, select_masks};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Chunk size bounds, stored in the config body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    /// No chunk is shorter, except the last one of a stream.
    pub min_size: u32,
    /// Target average chunk size.
    pub avg_size: u32,
    /// No chunk is longer.
    pub max_size: u32,
}

impl Default for ChunkerParams {
    /// 512 KiB / 1 MiB / 8 MiB.
    fn default() -> Self {
        Self {
            min_size: 512 * 1024,
            avg_size: 1024 * 1024,
            max_size: 8 * 1024 * 1024,
        }
    }
}

impl ChunkerParams {
    /// Checks the bounds FastCDC accepts: `64 <= min <= 1 MiB`, `256 <= avg <= 4 MiB`,
    /// `1 KiB <= max <= 16 MiB`, `min <= avg <= max`, all even.
    pub fn validate(&self) -> Result<()> {
        let Self {
            min_size,
            avg_size,
            max_size,
        } = *self;
        let ok = (64..=1 << 20).contains(&min_size)
            && (256..=4 << 20).contains(&avg_size)
            && (1024..=16 << 20).contains(&max_size)
            && min_size <= avg_size
            && avg_size <= max_size
            && min_size % 2 == 0
            && avg_size % 2 == 0
            && max_size % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(format!(
                "chunker bounds min={min_size} avg={avg_size} max={max_size} are not valid"
            )))
        }
    }
}

/// A seeded FastCDC chunker. Cheap to share between threads.
#[derive(Clone)]
pub struct Chunker {
    params: ChunkerParams,
    gear: Box<[u64; 256]>,
    mask_s: u64,
    mask_l: u64,
}

impl std::fmt::Debug for Chunker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunker")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

/// Derives the 256-entry gear table from the seed: the first 2 KiB of the BLAKE3 XOF keyed
/// with the seed over the label `bunker gear table`, read as little-endian `u64`s.
pub fn gear_table(seed: &[u8; 32]) -> [u64; 256] {
    let mut hasher = blake3::Hasher::new_keyed(seed);
    hasher.update(b"bunker gear table");
    let mut bytes = [0u8; 256 * 8];
    hasher.finalize_xof().fill(&mut bytes);
    let mut table = [0u64; 256];
    for (value, word) in table.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(word);
        *value = u64::from_le_bytes(le);
    }
    table
}

impl Chunker {
    /// A chunker for validated `params` and the repository's chunker seed.
    pub fn new(params: ChunkerParams, seed: &[u8; 32]) -> Result<Self> {
        params.validate()?;
        let (mask_s, mask_l) = select_masks(params.avg_size as usize, Normalization::Level1);
        Ok(Self {
            params,
            gear: Box::new(gear_table(seed)),
            mask_s,
            mask_l,
        })
    }

    /// The bounds in use.
    pub fn params(&self) -> ChunkerParams {
        self.params
    }

    /// Length of the chunk that starts at `data[0]`, given that `data` holds at least
    /// `max_size` bytes or ends the stream.
    pub fn next_cut(&self, data: &[u8]) -> usize {
        let ChunkerParams {
            min_size,
            avg_size,
            max_size,
        } = self.params;
        let cut = gear::cut(
            data,
            [min_size, avg_size, max_size].map(|size| size as usize),
            [self.mask_s, self.mask_l],
            &self.gear,
        );
        cut.clamp(data.len().min(1), data.len())
    }

    /// Splits an in-memory buffer that is a whole stream into chunk lengths.
    pub fn cut_all(&self, mut data: &[u8]) -> Vec<usize> {
        let mut lengths = Vec::new();
        while !data.is_empty() {
            let cut = self.next_cut(data);
            lengths.push(cut);
            data = &data[cut..];
        }
        lengths
    }

    /// Splits `data` into chunk lengths exactly as [`Chunker::cut_all`] (or
    /// [`Chunker::chunk_reader`]) would, cutting segments of `segment` bytes on the rayon pool.
    ///
    /// With `at_end`, `data` is a whole stream and the lengths cover all of it. Without,
    /// `data` is a window of a longer stream: every chunk the window decides is returned
    /// (its cut found inside the window, or `max_size` bytes reached: the bytes after it
    /// cannot move it), and the caller carries the rest (the sum of the lengths is what was
    /// consumed; what is left holds no cut and is shorter than `max_size`) into the front
    /// of the next window.
    ///
    /// Each segment walks its own chain of cuts from its start, looking past its end; then,
    /// also in parallel, a bridge from where each chain left its segment, cut by cut, until
    /// it meets the next segment's chain. The true chain (segment 0's) is followed in order:
    /// from the first position it shares with a chain or a bridge it takes their cuts instead
    /// of cutting again, so in the common case the sequential part only copies lengths. Data
    /// whose chains never meet (long runs of one byte value, where every cut is `max_size`
    /// from the chain's start) is cut sequentially there, still exactly.
    pub fn cut_parallel(&self, data: &[u8], at_end: bool, segment: usize) -> Vec<usize> {
        let segment = segment.max(1);
        let segment_end = |k: usize| data.len().min((k + 1) * segment);
        let chains: Vec<Chain> = (0..data.len().div_ceil(segment))
            .into_par_iter()
            .map(|k| self.walk(data, at_end, k * segment, segment_end(k), &[]))
            .collect();
        // `bridges[k]` leads from where chain `k` left its segment into chain `k + 1`.
        let bridges: Vec<Option<Chain>> = (0..chains.len().saturating_sub(1))
            .into_par_iter()
            .map(|k| {
                let (from, into) = (&chains[k], &chains[k + 1]);
                from.complete
                    .then(|| self.walk(data, at_end, from.stop, segment_end(k + 1), &into.starts))
            })
            .collect();
        let mut lengths = Vec::new();
        // The current true position: a chunk starts here (or the stream ends).
        let mut position = 0usize;
        for (k, chain) in chains.iter().enumerate() {
            let end = segment_end(k);
            if let Some(Some(bridge)) = k.checked_sub(1).map(|k| &bridges[k])
                && bridge.start == position
            {
                push_lengths(&mut lengths, &bridge.starts, bridge.stop);
                position = bridge.stop;
                if !bridge.complete {
                    return lengths;
                }
            }
            // The first of the chain's starts that is not behind `position`.
            let mut next = 0usize;
            while position < end {
                while chain
                    .starts
                    .get(next)
                    .is_some_and(|&start| start < position)
                {
                    next += 1;
                }
                if chain.starts.get(next) == Some(&position) {
                    // Merged: the rest of this segment's chain is the true one.
                    push_lengths(&mut lengths, &chain.starts[next..], chain.stop);
                    position = chain.stop;
                    if !chain.complete {
                        return lengths;
                    }
                    break;
                }
                let Some(cut) = self.decided_cut(data, position, at_end) else {
                    return lengths;
                };
                lengths.push(cut);
                position += cut;
            }
        }
        lengths
    }

    /// Splits `data` into chunk lengths like [`Chunker::cut_parallel`] (same contract for
    /// `at_end`), on the calling thread: no segment's chain is cut twice, so it takes the
    /// least work where the other threads have work of their own.
    pub fn cut_window(&self, data: &[u8], at_end: bool) -> Vec<usize> {
        let chain = self.walk(data, at_end, 0, data.len(), &[]);
        let mut lengths = Vec::with_capacity(chain.starts.len());
        push_lengths(&mut lengths, &chain.starts, chain.stop);
        lengths
    }

    /// The length of the chunk starting at `data[position]` when `data` decides it: at the
    /// stream's end, when its cut lies inside `data` (a cut depends only on the bytes up to
    /// it), or with at least `max_size` bytes from `position` on.
    fn decided_cut(&self, data: &[u8], position: usize, at_end: bool) -> Option<usize> {
        let rest = &data[position..];
        let cut = self.next_cut(rest);
        (at_end || cut < rest.len() || rest.len() >= self.params.max_size as usize).then_some(cut)
    }

    /// Walks the cuts from `start` until a chunk reaches `end`, the position is one of
    /// `meet` (sorted), or the data no longer decides the next cut.
    fn walk(&self, data: &[u8], at_end: bool, start: usize, end: usize, meet: &[usize]) -> Chain {
        let mut starts = Vec::new();
        let mut position = start;
        while position < end && meet.binary_search(&position).is_err() {
            let Some(cut) = self.decided_cut(data, position, at_end) else {
                return Chain {
                    start,
                    starts,
                    stop: position,
                    complete: false,
                };
            };
            starts.push(position);
            position += cut;
        }
        Chain {
            start,
            starts,
            stop: position,
            complete: true,
        }
    }

    /// Reads `reader` to its end (or `limit` bytes), calling `on_chunk` with each chunk in
    /// order. Memory stays bounded by a buffer of about twice `max_size`.
    ///
    /// Returns the number of bytes read.
    pub fn chunk_reader<R: Read, E: From<io::Error>>(
        &self,
        reader: R,
        limit: u64,
        buffer: &mut Vec<u8>,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, E> {
        let max = self.params.max_size as usize;
        // Reused across calls: only grow it (zeroing 16 MiB per small file would cost more
        // than reading the file), and only as far as this input needs: a tree of small
        // files never touches (and keeps resident) the full two chunks' worth.
        let wanted = usize::try_from(limit).map_or(2 * max, |limit| limit.clamp(1, 2 * max));
        if buffer.len() < wanted + READ_ALIGN {
            buffer.resize(wanted + READ_ALIGN, 0);
        }
        // A window shorter than `max` before the end of the input only happens when the
        // buffer holds the whole rest of it, so every cut is the one a larger buffer gives.
        let capacity = (buffer.len() - READ_ALIGN).min(2 * max);
        let mut reader = reader.take(limit);
        let (mut start, mut end) = (0usize, 0usize);
        let mut total = 0u64;
        let mut eof = false;
        loop {
            // A chunk is decided when its cut lies inside what is buffered (a cut depends
            // only on the bytes up to it), at `max` bytes, or at the end of the input.
            let rest = end - start;
            let cut = (rest > 0).then(|| self.next_cut(&buffer[start..end]));
            let decided = cut.is_some_and(|cut| eof || cut < rest || rest >= max);
            if !decided && !eof {
                // Only the undecided bytes move to the front, so that the read lands where
                // its memory agrees with its offset in the input.
                let front = read_front(buffer, rest, total);
                buffer.copy_within(start..end, front);
                start = front;
                end = front + rest;
                let (read, ended) = fill(&mut reader, &mut buffer[end..front + capacity])?;
                end += read;
                total += read as u64;
                // A buffer that holds the whole rest of the input is its end too.
                eof = ended || total >= limit;
                continue;
            }
            let Some(cut) = cut else {
                return Ok(total);
            };
            on_chunk(&buffer[start..start + cut])?;
            start += cut;
        }
    }
}

/// What a read's memory and its file offset should agree on, modulo. On AMD Zen 3 the
/// kernel's copy from the page cache ran at a quarter of the speed when they did not: 3 GiB
/// read into memory 16 bytes past a page boundary (where a large allocation from the
/// allocator starts) from offsets that are multiples of 64 took 1.4 s of system time,
/// against 0.32-0.37 s whenever memory and offset agreed modulo 64 (docs/PERFORMANCE.md,
/// session 18, `benches/read-alignment.py`).
pub const READ_ALIGN: usize = 64;

/// Where in `buffer` to put `kept` bytes so that the bytes after them, where the next read
/// lands, agree with `position` (that read's offset in its input) modulo [`READ_ALIGN`].
/// Below `READ_ALIGN`.
pub fn read_front(buffer: &[u8], kept: usize, position: u64) -> usize {
    let after = (buffer.as_ptr() as usize).wrapping_add(kept);
    // Modulo a power of two, wrapping arithmetic is exact.
    (position as usize).wrapping_sub(after) % READ_ALIGN
}

/// Reads from `reader` until `buffer` is full or the reader ends (retrying interrupted
/// reads); returns the bytes read and whether the reader ended.
pub fn fill(reader: &mut impl Read, buffer: &mut [u8]) -> io::Result<(usize, bool)> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// Cuts walked from one position (see [`Chunker::cut_parallel`]).
struct Chain {
    /// Where the walk began.
    start: usize,
    /// Chunk starts, ascending.
    starts: Vec<usize>,
    /// Where the last chunk ends: where the walk stopped when `complete`, else the first
    /// position whose cut the data did not decide.
    stop: usize,
    complete: bool,
}

/// Appends the lengths of chunks starting at `starts`, the last one ending at `stop`.
fn push_lengths(lengths: &mut Vec<usize>, starts: &[usize], stop: usize) {
    for (i, start) in starts.iter().enumerate() {
        let after = starts.get(i + 1).copied().unwrap_or(stop);
        lengths.push(after - start);
    }
}

/// A reader for tests of code that reads through a buffer: it serves `data` in reads as long
/// as asked and counts those that returned bytes into memory that disagrees with their
/// offset modulo [`READ_ALIGN`]. Public so that readers in other crates are checked the same
/// way.
#[derive(Debug)]
pub struct CountsMisalignedReads<'a> {
    data: &'a [u8],
    position: usize,
    misaligned: usize,
}

impl<'a> CountsMisalignedReads<'a> {
    /// A reader of `data` from its start.
    pub fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            position: 0,
            misaligned: 0,
        }
    }

    /// Reads so far whose memory disagreed with their offset.
    pub fn misaligned(&self) -> usize {
        self.misaligned
    }
}

impl Read for CountsMisalignedReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.data.len() - self.position);
        buf[..n].copy_from_slice(&self.data[self.position..self.position + n]);
        let at = (buf.as_ptr() as usize).wrapping_sub(self.position);
        if n > 0 && !at.is_multiple_of(READ_ALIGN) {
            self.misaligned += 1;
        }
        self.position += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    fn small_params() -> ChunkerParams {
        ChunkerParams {
            min_size: 2048,
            avg_size: 8192,
            max_size: 32768,
        }
    }

    /// Pinned boundaries: a silent change to the chunker would ruin deduplication against
    /// every existing repository, so this must only change together with a format version.
    #[test]
    fn boundaries_are_pinned_for_a_seeded_input() {
        let chunker = Chunker::new(small_params(), &[7u8; 32]).expect("valid params");
        let data = pseudo_random(200_000, 42);
        let lengths = chunker.cut_all(&data);
        assert_eq!(lengths.iter().sum::<usize>(), data.len());
        assert_eq!(
            lengths, PINNED_LENGTHS,
            "chunk boundaries changed: this breaks deduplication with existing repositories"
        );
    }

    const PINNED_LENGTHS: &[usize] = &[
        2435, 9670, 9839, 12506, 2465, 4655, 5079, 2534, 11108, 4039, 28274, 8982, 9741, 11279,
        8218, 2048, 15442, 9823, 4309, 11298, 2133, 9933, 4361, 9829,
    ];

    #[test]
    fn seed_changes_boundaries() {
        let data = pseudo_random(300_000, 1);
        let a = Chunker::new(small_params(), &[1u8; 32])
            .expect("valid")
            .cut_all(&data);
        let b = Chunker::new(small_params(), &[2u8; 32])
            .expect("valid")
            .cut_all(&data);
        assert_ne!(a, b);
    }

    #[test]
    fn invalid_params_are_refused() {
        let bad = ChunkerParams {
            min_size: 10,
            avg_size: 8192,
            max_size: 32768,
        };
        assert!(Chunker::new(bad, &[0; 32]).is_err());
        let inverted = ChunkerParams {
            min_size: 65536,
            avg_size: 8192,
            max_size: 32768,
        };
        assert!(inverted.validate().is_err());
    }

    proptest! {
        #[test]
        fn streaming_matches_in_memory(len in 0usize..150_000, seed: u64) {
            let chunker = Chunker::new(small_params(), &[3u8; 32]).unwrap();
            let data = pseudo_random(len, seed | 1);
            let expected = chunker.cut_all(&data);
            for &length in &expected[..expected.len().saturating_sub(1)] {
                prop_assert!((2048..=32768).contains(&length));
            }
            let mut got = Vec::new();
            let mut joined = Vec::new();
            let mut buffer = Vec::new();
            // A reader that returns short reads exercises the refill logic.
            let reader = ShortReads { data: &data, pos: 0 };
            let total = chunker.chunk_reader::<_, io::Error>(reader, u64::MAX, &mut buffer, |chunk| {
                got.push(chunk.len());
                joined.extend_from_slice(chunk);
                Ok(())
            }).unwrap();
            prop_assert_eq!(total, len as u64);
            prop_assert_eq!(&got, &expected);
            prop_assert_eq!(joined, data.clone());

            // With the exact length as limit the buffer only grows to the input (or two
            // chunks): same cuts, whether the buffer starts empty or larger.
            for start in [Vec::new(), vec![0u8; 100_000]] {
                let mut buffer = start;
                let before = buffer.len();
                let mut exact = Vec::new();
                let reader = ShortReads { data: &data, pos: 0 };
                chunker.chunk_reader::<_, io::Error>(reader, len as u64, &mut buffer, |chunk| {
                    exact.push(chunk.len());
                    Ok(())
                }).unwrap();
                prop_assert_eq!(&exact, &expected);
                prop_assert!(buffer.len() <= before.max(len.clamp(1, 2 * 32768) + READ_ALIGN));
            }
        }
    }

    /// Random blocks, runs of zeros and repeats of an earlier block, glued together: per
    /// piece `(kind, length, seed)`.
    pub(super) fn mixed(pieces: &[(u8, usize, u64)]) -> Vec<u8> {
        let mut data: Vec<u8> = Vec::new();
        for &(kind, len, seed) in pieces {
            match kind % 3 {
                0 => data.extend(pseudo_random(len, seed | 1)),
                1 => data.resize(data.len() + len, 0),
                _ => {
                    let from = usize::try_from(seed).unwrap_or(0) % (data.len() + 1);
                    let block = data[from..data.len().min(from + len)].to_vec();
                    data.extend(block);
                }
            }
        }
        data
    }

    /// Cuts `data` as a stream arriving in windows of the given sizes (cycled), carrying each
    /// window's undecided tail into the next, as a reader of a long stream does.
    fn cut_windowed(
        chunker: &Chunker,
        data: &[u8],
        windows: &[usize],
        segment: usize,
    ) -> Vec<usize> {
        let max = chunker.params().max_size as usize;
        let mut lengths = Vec::new();
        let (mut consumed, mut end) = (0usize, 0usize);
        for window in windows.iter().cycle() {
            end = data.len().min(end + window);
            let at_end = end == data.len();
            let got = chunker.cut_parallel(&data[consumed..end], at_end, segment);
            let sequential = chunker.cut_window(&data[consumed..end], at_end);
            assert_eq!(got, sequential, "cut_window differs from cut_parallel");
            consumed += got.iter().sum::<usize>();
            lengths.extend(got);
            if at_end {
                assert_eq!(consumed, data.len());
                break;
            }
            let left = &data[consumed..end];
            assert!(
                left.len() < max && chunker.next_cut(left) == left.len(),
                "a decided chunk was left in the window"
            );
        }
        lengths
    }

    #[test]
    fn parallel_cuts_keep_the_pinned_boundaries() {
        let chunker = Chunker::new(small_params(), &[7u8; 32]).expect("valid params");
        let data = pseudo_random(200_000, 42);
        for segment in [1000, 4093, 32768, 50_000, 200_000, 1 << 20] {
            assert_eq!(chunker.cut_parallel(&data, true, segment), PINNED_LENGTHS);
            let windowed = cut_windowed(&chunker, &data, &[70_001, 45_000], segment);
            assert_eq!(windowed, PINNED_LENGTHS);
        }
    }

    #[test]
    fn parallel_cuts_of_long_zero_runs_match() {
        let chunker = Chunker::new(small_params(), &[5u8; 32]).expect("valid params");
        // Every cut in the zero run lies a fixed distance from the chain's start: chains from
        // segment starts never meet the true one there.
        let data = mixed(&[
            (0, 5001, 1),
            (1, 700_000, 0),
            (0, 40_000, 2),
            (1, 99_999, 0),
        ]);
        let expected = chunker.cut_all(&data);
        for segment in [3000, 32767, 65_537, 100_000] {
            assert_eq!(chunker.cut_parallel(&data, true, segment), expected);
            assert_eq!(cut_windowed(&chunker, &data, &[123_457], segment), expected);
        }
        assert!(chunker.cut_parallel(&[], true, 1000).is_empty());
        // A window that ends the stream nowhere returns only the chunks it decides.
        let window = &data[..32767];
        let decided = chunker.cut_parallel(window, false, 1000);
        assert_eq!(decided, expected[..decided.len()]);
        let left = &window[decided.iter().sum::<usize>()..];
        assert_eq!(chunker.next_cut(left), left.len(), "a decided cut was left");
    }

    proptest! {
        #[test]
        fn parallel_cuts_equal_sequential_cuts(
            pieces in prop::collection::vec((0u8..3, 1usize..120_000, any::<u64>()), 0..8),
            segment in 500usize..150_000,
            seed in 0u8..4,
        ) {
            let chunker = Chunker::new(small_params(), &[seed; 32]).unwrap();
            let data = mixed(&pieces);
            prop_assert_eq!(chunker.cut_parallel(&data, true, segment), chunker.cut_all(&data));
        }

        #[test]
        fn windowed_parallel_cuts_concatenate_to_sequential_cuts(
            pieces in prop::collection::vec((0u8..3, 1usize..120_000, any::<u64>()), 0..8),
            windows in prop::collection::vec(1000usize..200_000, 1..5),
            segment in 500usize..150_000,
        ) {
            let chunker = Chunker::new(small_params(), &[9u8; 32]).unwrap();
            let data = mixed(&pieces);
            let windowed = cut_windowed(&chunker, &data, &windows, segment);
            prop_assert_eq!(windowed, chunker.cut_all(&data));
        }
    }

    #[test]
    fn reads_land_on_aligned_memory() {
        let chunker = Chunker::new(small_params(), &[3u8; 32]).unwrap();
        let data = pseudo_random(300_000, 5);
        // Buffers from earlier inputs, of lengths that leave them at other alignments.
        for earlier in [0, 1, 17, 100_003] {
            let mut buffer = vec![0u8; earlier];
            let mut reader = CountsMisalignedReads::new(&data);
            let mut lengths = Vec::new();
            chunker
                .chunk_reader::<_, io::Error>(&mut reader, u64::MAX, &mut buffer, |chunk| {
                    lengths.push(chunk.len());
                    Ok(())
                })
                .unwrap();
            assert_eq!(lengths, chunker.cut_all(&data));
            assert_eq!(reader.misaligned(), 0, "after a buffer of {earlier} bytes");
        }
    }

    struct ShortReads<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl Read for ShortReads<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.data.len() - self.pos).min(7777);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
}
