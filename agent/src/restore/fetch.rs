//! Fetching packs: coalesced range reads, a few at a time, memory bounded.
//!
//! Each pack's needed blobs (sorted by offset) are grouped into read ranges: the next blob
//! joins the current range when the gap before it is at most [`GAP`] bytes and the range
//! stays within the backend's [`max_read`](bunker_repo_format::backend::ReadHints::max_read), so a pack whose blobs are mostly
//! needed is read in a few large requests and a pack with one needed blob costs one small
//! request. A pool of [`parallel_reads`](bunker_repo_format::backend::ReadHints::parallel_reads)
//! threads (the backend trait is synchronous) takes ranges in pack order and hands the bytes
//! to the consumer through a channel of
//! [`queue_depth`](bunker_repo_format::backend::ReadHints::queue_depth) slots, so at most
//! `parallel_reads + queue_depth` ranges, plus those the consumer holds (each at most
//! `max_read`, or one blob if a blob is larger), are in memory at once, whatever the size
//! of the restore. The backend picks the sizes: large for S3, where each
//! request costs a round trip; small for a local directory, where memory is the only cost.
//!
//! A pack's first range starts at offset 0 when its first needed blob is within [`GAP`] of
//! the header: the header (the pack's session key) comes with the blobs instead of costing a
//! request of its own, a round trip per pack on S3.
//!
//! When a range read fails with anything but "not found", its blobs are read one by one,
//! so one damaged region of a pack costs only the blobs in it.

use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use bunker_repo_format::backend::ReadBytes;
use bunker_repo_format::object::SESSION_HEADER_LEN;
use bunker_repo_format::{Error, Repository};

use super::plan::PackWork;

/// Largest gap between two needed blobs that is read through rather than skipped.
pub(super) const GAP: u64 = 256 << 10;

/// One read: blobs `first..end` of pack `pack`, covering `offset..offset + length`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ReadRange {
    /// Index into the plan's packs.
    pub pack: usize,
    /// First blob (index into the pack's blobs).
    pub first: usize,
    /// One past the last blob.
    pub end: usize,
    /// Offset of the read in the pack.
    pub offset: u64,
    /// Bytes to read.
    pub length: u64,
}

/// The bytes of a range, or why they could not be read.
#[derive(Debug)]
pub(super) struct Fetched {
    /// What was read.
    pub range: ReadRange,
    /// The bytes (`range.length` of them) or the error.
    pub data: Result<ReadBytes, Error>,
}

/// Groups the blobs of `work` (sorted by offset) into read ranges.
pub(super) fn coalesce(pack: usize, work: &PackWork, max_read: u64) -> Vec<ReadRange> {
    let mut ranges: Vec<ReadRange> = Vec::new();
    for (i, blob) in work.blobs.iter().enumerate() {
        let start = blob.location.offset;
        let end = start + u64::from(blob.location.length);
        if let Some(last) = ranges.last_mut() {
            let last_end = last.offset + last.length;
            if start <= last_end + GAP && end.saturating_sub(last.offset) <= max_read {
                last.end = i + 1;
                last.length = last.length.max(end - last.offset);
                continue;
            }
        }
        // The pack's header rides along with a first blob near it.
        let offset = if ranges.is_empty() && start <= SESSION_HEADER_LEN as u64 + GAP {
            0
        } else {
            start
        };
        ranges.push(ReadRange {
            pack,
            first: i,
            end: i + 1,
            offset,
            length: end - offset,
        });
    }
    ranges
}

/// Fetches every range of `packs` on the backend's number of reading threads (see
/// [`ReadHints`](bunker_repo_format::backend::ReadHints)) and calls `consume` with
/// each, on the calling thread, in completion order. Stops early once `stop` says so (the
/// restore is cancelled, or cannot go on); once `abandon` is set, reads waiting for a slow
/// store are given up ([`Backend::get_range_to_read_abandoning`]).
///
/// [`Backend::get_range_to_read_abandoning`]: bunker_repo_format::backend::Backend::get_range_to_read_abandoning
pub(super) fn fetch_all(
    repo: &Repository,
    packs: &[PackWork],
    stop: &(dyn Fn() -> bool + Sync),
    abandon: &AtomicBool,
    mut consume: impl FnMut(Fetched),
) {
    let hints = repo.backend().read_hints();
    let ranges: Vec<ReadRange> = packs
        .iter()
        .enumerate()
        .flat_map(|(i, work)| coalesce(i, work, hints.max_read))
        .collect();
    let next = AtomicUsize::new(0);
    let (sender, receiver) = mpsc::sync_channel::<Fetched>(hints.queue_depth);
    std::thread::scope(|scope| {
        for _ in 0..hints.parallel_reads.max(1).min(ranges.len()) {
            let sender = sender.clone();
            let (ranges, next) = (&ranges, &next);
            scope.spawn(move || {
                while !stop() {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(range) = ranges.get(index) else {
                        break;
                    };
                    announce(repo, packs, ranges, index);
                    for fetched in read_range(repo, &packs[range.pack], *range, abandon) {
                        if sender.send(fetched).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        drop(sender);
        for fetched in receiver {
            if stop() {
                break;
            }
            consume(fetched);
        }
    });
}

/// Ranges announced to the backend ahead of their reads (see [`announce`]).
const READ_AHEAD_RANGES: usize = 8;

/// Tells the backend which ranges come next ([`Backend::will_read`]): when range `index`
/// is taken, the one [`READ_AHEAD_RANGES`] further (the first taker announces the first
/// ones), so each range is announced once, before its read. A local directory then reads
/// from the disk while the restore decrypts and writes what it has: 8 ranges are 16 MiB,
/// about one pack.
///
/// [`Backend::will_read`]: bunker_repo_format::backend::Backend::will_read
fn announce(repo: &Repository, packs: &[PackWork], ranges: &[ReadRange], index: usize) {
    let ahead = announced_when_taken(index, READ_AHEAD_RANGES);
    for range in ahead.filter_map(|i| ranges.get(i)) {
        let name = packs[range.pack].name();
        repo.backend().will_read(&name, range.offset, range.length);
    }
}

/// The reads to announce when read `taken` (counting from 0, taken in order) starts, for
/// announcements `ahead` reads early: the first taker announces reads `0..=ahead`, every
/// later one the read `ahead` further. So each read is announced once, before it starts.
pub(super) fn announced_when_taken(taken: usize, ahead: usize) -> RangeInclusive<usize> {
    if taken == 0 {
        0..=ahead
    } else {
        taken + ahead..=taken + ahead
    }
}

/// Reads one range; on a failure other than a missing pack or an abandoned read, falls back
/// to blob by blob.
fn read_range(
    repo: &Repository,
    work: &PackWork,
    range: ReadRange,
    abandon: &AtomicBool,
) -> Vec<Fetched> {
    let name = work.name();
    let data =
        repo.backend()
            .get_range_to_read_abandoning(&name, range.offset, range.length, abandon);
    if let (Ok(bytes), 0, Some(blob)) = (&data, range.offset, work.blobs.first()) {
        // A damaged header is reported when the blobs are opened (the key is then read
        // on its own and fails the same way, naming the pack).
        let _ = repo.learn_pack_key(&work.pack, blob.location.kind, bytes);
    }
    match data {
        Err(e)
            if range.end - range.first > 1
                && !e.is_not_found()
                && !matches!(e, Error::Abandoned { .. }) =>
        {
            (range.first..range.end)
                .map(|i| {
                    let location = &work.blobs[i].location;
                    let single = ReadRange {
                        pack: range.pack,
                        first: i,
                        end: i + 1,
                        offset: location.offset,
                        length: u64::from(location.length),
                    };
                    Fetched {
                        range: single,
                        data: repo.backend().get_range_to_read_abandoning(
                            &name,
                            single.offset,
                            single.length,
                            abandon,
                        ),
                    }
                })
                .collect()
        }
        data => vec![Fetched { range, data }],
    }
}

#[cfg(test)]
mod tests {
    use bunker_repo_format::backend::ReadHints;
    use bunker_repo_format::index::BlobLocation;
    use bunker_repo_format::{BlobId, BlobKind, PackId};

    use super::*;
    use crate::restore::plan::PlannedBlob;

    fn work(blobs: &[(u64, u32)]) -> PackWork {
        PackWork {
            pack: PackId::from_bytes([1; 32]),
            blobs: blobs
                .iter()
                .enumerate()
                .map(|(i, &(offset, length))| PlannedBlob {
                    id: BlobId::from_bytes([i as u8; 32]),
                    location: BlobLocation {
                        pack: PackId::from_bytes([1; 32]),
                        kind: BlobKind::Data,
                        offset,
                        length,
                        raw_length: length,
                    },
                    placements: Vec::new(),
                })
                .collect(),
        }
    }

    const MAX_READ: u64 = ReadHints::REMOTE.max_read;

    #[test]
    fn each_read_is_announced_once_before_it_starts() {
        for ahead in [1, 8, 16] {
            let mut announced = vec![0usize; 100 + ahead + 1];
            for taken in 0..100 {
                for read in announced_when_taken(taken, ahead) {
                    announced[read] += 1;
                }
                assert_eq!(announced[taken], 1, "read {taken} (ahead {ahead}) starts");
            }
            let reads = 100 + ahead;
            assert!(announced[..reads].iter().all(|&n| n == 1), "ahead {ahead}");
        }
    }

    #[test]
    fn near_blobs_are_read_together_and_far_ones_apart() {
        let w = work(&[(100, 1000), (1100, 1000), (2100 + GAP, 10), (1 << 30, 5)]);
        let ranges = coalesce(7, &w, MAX_READ);
        assert_eq!(
            ranges,
            vec![
                ReadRange {
                    pack: 7,
                    first: 0,
                    end: 3,
                    offset: 0,
                    length: 2100 + GAP + 10
                },
                ReadRange {
                    pack: 7,
                    first: 3,
                    end: 4,
                    offset: 1 << 30,
                    length: 5
                },
            ]
        );
    }

    #[test]
    fn the_header_is_read_with_a_first_blob_near_it_and_apart_from_a_far_one() {
        let header = SESSION_HEADER_LEN as u64;
        let near = coalesce(0, &work(&[(header + GAP, 10)]), MAX_READ);
        assert_eq!((near[0].offset, near[0].length), (0, header + GAP + 10));
        let far = coalesce(0, &work(&[(header + GAP + 1, 10)]), MAX_READ);
        assert_eq!((far[0].offset, far[0].length), (header + GAP + 1, 10));
    }

    #[test]
    fn a_range_never_grows_past_the_read_limit() {
        let blob = (MAX_READ / 3) as u32;
        let w = work(&[
            (0, blob),
            (u64::from(blob), blob),
            (2 * u64::from(blob), blob),
            (3 * u64::from(blob), blob),
        ]);
        let ranges = coalesce(0, &w, MAX_READ);
        assert_eq!(ranges.len(), 2);
        assert!(ranges.iter().all(|r| r.length <= MAX_READ));
        assert_eq!((ranges[0].first, ranges[0].end), (0, 3));
        assert_eq!((ranges[1].first, ranges[1].end), (3, 4));
    }

    #[test]
    fn a_blob_larger_than_the_limit_is_one_range() {
        let w = work(&[(0, 10), (10, (MAX_READ + 1) as u32)]);
        let ranges = coalesce(0, &w, MAX_READ);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[1].length, MAX_READ + 1);
    }
}
