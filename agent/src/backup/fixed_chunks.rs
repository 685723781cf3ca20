//! Fixed-size chunks for files that are rewritten in place, a page at a time: database data
//! directories (PostgreSQL's 8 KiB pages, InnoDB's 16 KiB), disk images kept as files.
//!
//! The repository's content-defined chunker cuts about 1 MiB chunks wherever the content
//! says, so that an insertion moves no boundary after it. A database changes scattered
//! pages and never shifts the rest, and on the nearly alike pages of a table the chunker
//! finds few cuts: chunks of 2-3 MiB, each re-stored whole when one page in it changed
//! (docs/PERFORMANCE.md, session 21). Cut at the multiples of a fixed size *in the file*
//! instead, a changed page re-stores the one chunk that holds it.
//!
//! Boundaries are file offsets, not region offsets: a data region after a hole (which
//! starts on a filesystem block) begins with the rest of the chunk it falls in, so the
//! chunks of a file stay where they were when a hole fills. How a file was cut is not
//! recorded anywhere: a file is its extents, whatever their lengths (docs/FORMAT.md §8).

use std::io::Read;
use std::ops::Range;

use bunker_repo_format::BlobId;
use bunker_repo_format::chunker::{READ_ALIGN, fill, read_front};
use rayon::prelude::*;

use super::read::{Chunking, ReadFailure, window};

/// The size of fixed chunks: a power of two from [`FixedChunks::MIN`] to
/// [`FixedChunks::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedChunks(u32);

/// A fixed chunk size that is not a power of two from 4 KiB to 8 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fixed chunk size {0} is not a power of two from 4 KiB to 8 MiB")]
pub struct ChunkSizeError(pub u64);

impl FixedChunks {
    /// The smallest size: a filesystem block.
    pub const MIN: u32 = 4 << 10;
    /// The largest size: the default content-defined chunker's largest chunk.
    pub const MAX: u32 = 8 << 20;

    /// Chunks of `size` bytes.
    pub fn new(size: u64) -> Result<Self, ChunkSizeError> {
        match u32::try_from(size) {
            Ok(size) if size.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&size) => {
                Ok(Self(size))
            }
            _ => Err(ChunkSizeError(size)),
        }
    }

    /// The chunk size in bytes.
    pub fn size(self) -> u32 {
        self.0
    }
}

/// Reads `limit` bytes (fewer when the file ends first) of a data region that starts at
/// offset `start` of its file from `reader`'s position, cutting it at the multiples of
/// `chunks` in the file, hashing each window's chunks on the rayon pool and calling
/// `on_chunk` for them in order (on a pool thread, reading a small file, it hashes them
/// itself). Returns the number of bytes read.
///
/// `buffer` grows to at most one window of a large file's parallel reads (whole chunks, at
/// least one), less when the region is shorter, and is reused. Every read but a region's
/// first starts on a chunk boundary, and each ends on one or at the region's end, so no
/// bytes are carried over.
pub(super) fn read_fixed<E>(
    chunking: &Chunking,
    chunks: FixedChunks,
    reader: impl Read,
    start: u64,
    limit: u64,
    buffer: &mut Vec<u8>,
    on_chunk: &mut impl FnMut(BlobId, &[u8]) -> Result<(), ReadFailure<E>>,
) -> Result<u64, ReadFailure<E>> {
    let size = chunks.size() as usize;
    let window = window().max(size) / size * size;
    // Only as large as this region needs: a tree of small files keeps a small buffer.
    let wanted = usize::try_from(limit).map_or(window, |limit| limit.clamp(1, window));
    if buffer.len() < wanted + READ_ALIGN {
        buffer.resize(wanted + READ_ALIGN, 0);
    }
    // Whole chunks per read; or, for a buffer smaller than one chunk, the whole region.
    let capacity = buffer.len() - READ_ALIGN;
    let step = (capacity / size) * size;
    let mut reader = reader.take(limit);
    let mut total = 0u64;
    loop {
        let position = start + total;
        let into_chunk = (position % size as u64) as usize;
        let room = if step > 0 {
            step - into_chunk
        } else {
            capacity
        };
        let front = read_front(buffer, 0, position);
        let (read, eof) = fill(&mut reader, &mut buffer[front..front + room])?;
        total += read as u64;
        let data = &buffer[front..front + read];
        let spans = cut(data, into_chunk, size);
        // Only the walking thread hashes a window in parallel, and only while sealing
        // leaves a pool thread idle. Pool threads read small files (`super::small_files`)
        // into a buffer of their own thread, and one that waited here for its parallel
        // hashing would take on other pool work meanwhile: another small file, whose read
        // would find that buffer still in use.
        let id = |span: &Range<usize>| chunking.id(&data[span.clone()]);
        let in_parallel = spans.len() > 1
            && rayon::current_thread_index().is_none()
            && !chunking.walk_works_alone();
        let ids: Vec<BlobId> = if in_parallel {
            spans.par_iter().map(id).collect()
        } else {
            spans.iter().map(id).collect()
        };
        for (span, id) in spans.into_iter().zip(ids) {
            on_chunk(id, &data[span])?;
        }
        if eof || total == limit {
            return Ok(total);
        }
    }
}

/// The chunks of `data`, which starts `into_chunk` bytes after a boundary of `size`-byte
/// chunks: the rest of that chunk, whole chunks, and what is left.
fn cut(data: &[u8], into_chunk: usize, size: usize) -> Vec<Range<usize>> {
    let mut spans = Vec::with_capacity(data.len() / size + 2);
    let mut start = 0;
    let mut end = (size - into_chunk).min(data.len());
    while start < data.len() {
        spans.push(start..end);
        start = end;
        end = (end + size).min(data.len());
    }
    spans
}

#[cfg(test)]
mod tests {
    use std::fs;

    use bunker_repo_format::tree::Extent;

    use super::super::read::tests::{restore_source, small_chunks_repo, write_sparse};
    use super::super::read::{read_file, test_common::noise};
    use super::super::seal::SealLoad;
    use super::*;
    use crate::Cancel;
    use crate::backup::{BackupOptions, backup};

    const SIZE: u64 = 64 << 10;

    fn chunked(size: u64) -> FixedChunks {
        FixedChunks::new(size).expect("a valid size")
    }

    #[test]
    fn sizes_are_powers_of_two_from_4_kib_to_8_mib() {
        for good in [4 << 10, 8 << 10, 64 << 10, 1 << 20, 8 << 20] {
            assert_eq!(
                FixedChunks::new(good).map(FixedChunks::size),
                Ok(good as u32)
            );
        }
        for bad in [0, 2 << 10, (64 << 10) + 2, 48 << 10, 16 << 20, 1 << 40] {
            assert_eq!(FixedChunks::new(bad), Err(ChunkSizeError(bad)));
        }
    }

    #[test]
    fn cuts_fall_on_multiples_of_the_size() {
        assert_eq!(cut(&[0; 10], 0, 4), [0..4, 4..8, 8..10]);
        assert_eq!(cut(&[0; 10], 3, 4), [0..1, 1..5, 5..9, 9..10]);
        assert_eq!(cut(&[0; 3], 2, 4), [0..2, 2..3]);
        assert_eq!(cut(&[0; 8], 0, 4), [0..4, 4..8]);
        assert!(cut(&[], 1, 4).is_empty());
    }

    /// Reads `path` as a backup does with `chunking`; what was read, and the bytes the
    /// consumer saw.
    fn read_with(
        chunking: &Chunking,
        path: &std::path::Path,
        buffer: &mut Vec<u8>,
    ) -> (super::super::read::ReadFile, Vec<u8>) {
        let mut file = crate::platform::open_for_backup(path).expect("open");
        let size = file.file.metadata().expect("stat").len();
        let mut seen = Vec::new();
        let read = read_file(chunking, &mut file, size, buffer, |id, chunk| {
            assert_eq!(id, chunking.id(chunk));
            seen.extend_from_slice(chunk);
            Ok::<_, String>(())
        });
        match read {
            Ok(read) => (read, seen),
            Err(_) => panic!("reading {} failed", path.display()),
        }
    }

    fn chunk_extents(
        repo: &bunker_repo_format::Repository,
        data: &[u8],
        first: usize,
    ) -> Vec<Extent> {
        cut(data, first, SIZE as usize)
            .into_iter()
            .map(|span| Extent::Chunk {
                id: repo.blob_id(&data[span.clone()]),
                length: span.len() as u32,
            })
            .collect()
    }

    #[test]
    fn a_file_is_cut_at_multiples_of_the_size_across_windows_and_holes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let chunking = Chunking::of(&repo).cutting_fixed_chunks(Some(chunked(SIZE)));
        // Larger than one read window, ending off a chunk boundary.
        let data = noise((20 << 20) + 12_345, 1);
        let path = tmp.path().join("table");
        fs::write(&path, &data).expect("write");
        let mut buffer = Vec::new();
        // Windows hashed on the pool, and on the reading thread as while sealing keeps the
        // pool busy.
        let walking_alone = chunking
            .clone()
            .sharing_the_pool_with(SealLoad::saturated_for_tests());
        for chunking in [&chunking, &walking_alone] {
            let (read, seen) = read_with(chunking, &path, &mut buffer);
            assert!(seen == data);
            assert_eq!(read.extents, chunk_extents(&repo, &data, 0));
            assert_eq!(
                (read.bytes_read, read.length, read.short),
                (data.len() as u64, data.len() as u64, false)
            );
        }

        // A sparse file whose second data region starts and ends inside a chunk (on 4 KiB
        // blocks, where the filesystem's regions do).
        let (first, second) = (noise(100 << 10, 2), noise((3 << 20) + (12 << 10), 3));
        let second_at: u64 = 300 << 10;
        write_sparse(
            &tmp.path().join("sparse"),
            8 << 20,
            &[(0, &first), (second_at, &second)],
        );
        let (read, _) = read_with(&chunking, &tmp.path().join("sparse"), &mut buffer);
        let mut expected = chunk_extents(&repo, &first, 0);
        expected.push(Extent::Hole {
            length: second_at - first.len() as u64,
        });
        expected.extend(chunk_extents(&repo, &second, (second_at % SIZE) as usize));
        expected.push(Extent::Hole {
            length: (8 << 20) - second_at - second.len() as u64,
        });
        assert_eq!(read.extents, expected);
        let lengths: Vec<u64> = read.extents.iter().map(Extent::length).collect();
        assert_eq!(
            lengths[..3],
            [SIZE, 100 * 1024 - SIZE, second_at - 100 * 1024],
            "the first region ends mid-chunk, the hole runs to the second region"
        );
        assert_eq!(
            lengths[3],
            SIZE - second_at % SIZE,
            "the rest of the chunk the region starts in"
        );
    }

    #[test]
    fn a_changed_page_changes_only_the_chunk_that_holds_it() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let chunking = Chunking::of(&repo).cutting_fixed_chunks(Some(chunked(SIZE)));
        let mut data = noise(6 << 20, 4);
        let path = tmp.path().join("table");
        fs::write(&path, &data).expect("write");
        let mut buffer = Vec::new();
        let (before, _) = read_with(&chunking, &path, &mut buffer);
        let page = 8 << 10;
        let at = (37 * SIZE + 3 * page) as usize;
        data[at..at + page as usize].copy_from_slice(&noise(page as usize, 5));
        fs::write(&path, &data).expect("rewrite");
        let (after, _) = read_with(&chunking, &path, &mut buffer);
        assert_eq!(before.extents.len(), after.extents.len());
        let differing: Vec<usize> = (0..before.extents.len())
            .filter(|&i| before.extents[i] != after.extents[i])
            .collect();
        assert_eq!(differing, [37]);
    }

    /// Pool threads read small files into a buffer of their own thread: one hashing its
    /// chunks in parallel would take on another small file meanwhile, whose read found the
    /// buffer in use and aborted the process (seen in `benches/pgdata.sh`).
    #[test]
    fn many_small_files_cut_into_fixed_chunks_back_up_and_restore() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let source = tmp.path().join("src");
        fs::create_dir_all(&source).expect("src");
        let files: Vec<(String, Vec<u8>)> = (0..400u64)
            .map(|i| {
                (
                    format!("{i:04}"),
                    noise(((i as usize) % 7 + 1) * 40_000 + 123, i),
                )
            })
            .collect();
        for (name, data) in &files {
            fs::write(source.join(name), data).expect("write");
        }
        let options = BackupOptions {
            paths: vec![source.clone()],
            host: "h".to_owned(),
            fixed_chunks: Some(chunked(16 << 10)),
            ..BackupOptions::default()
        };
        let outcome = backup(&repo, &options, &Cancel::new()).expect("backup");
        let expected_chunks: u64 = files
            .iter()
            .map(|(_, data)| data.len().div_ceil(16 << 10) as u64)
            .sum();
        assert_eq!(outcome.snapshot.summary.data_blobs_added, expected_chunks);
        let target = tmp.path().join("restored");
        let restored = restore_source(&repo, &outcome.snapshot.tree, &source, &target);
        for (name, data) in &files {
            assert!(
                fs::read(restored.join(name)).expect("restored file") == *data,
                "{name}"
            );
        }
    }

    #[test]
    fn small_files_keep_the_buffer_small_and_short_reads_stop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let chunking = Chunking::of(&repo).cutting_fixed_chunks(Some(chunked(1 << 20)));
        let data = noise(10_000, 6);
        let path = tmp.path().join("small");
        fs::write(&path, &data).expect("write");
        let mut buffer = Vec::new();
        let (read, seen) = read_with(&chunking, &path, &mut buffer);
        assert!(seen == data);
        assert_eq!(read.extents.len(), 1);
        assert!(
            buffer.len() <= data.len() + READ_ALIGN,
            "{} bytes",
            buffer.len()
        );

        // The region is announced longer than the file: the read is short, not an error.
        let mut extents = Vec::new();
        let mut consumer = |id: BlobId, chunk: &[u8]| -> Result<(), ReadFailure<String>> {
            extents.push((id, chunk.len()));
            Ok(())
        };
        let read = read_fixed(
            &chunking,
            chunked(4 << 10),
            &data[..],
            0,
            20_000,
            &mut buffer,
            &mut consumer,
        );
        assert!(matches!(read, Ok(10_000)));
        let lengths: Vec<usize> = extents.iter().map(|(_, length)| *length).collect();
        assert_eq!(lengths, [4096, 4096, 10_000 - 8192]);
    }
}
