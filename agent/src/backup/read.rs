//! The read, chunk and hash stages for one file: its data regions are read with large reads
//! into a reused buffer, cut by the repository's content-defined chunker (or, when the backup
//! asks for them or the file is a [disk image](super::disk_image), into [fixed
//! chunks](super::fixed_chunks)) and each chunk is hashed (its id goes into the file's tree
//! entry, in order).
//!
//! Small regions are read, cut and hashed sequentially, by the walking thread (small files by
//! idle pool threads too, see [`super::small_files`]) while the rayon pool compresses and
//! seals earlier batches. A region of at least [`PARALLEL_SEGMENTS`]
//! segments (a large file) is read in windows of up to [`MAX_WINDOW_SEGMENTS`] segments (one
//! per rayon thread) of [`SEGMENT`] bytes; each window is cut with
//! [`Chunker::cut_parallel`](bunker_repo_format::chunker::Chunker::cut_parallel), which gives
//! exactly the boundaries of sequential chunking (or, while sealing keeps every pool thread
//! busy, cut on the walking thread, which costs less work in all), its chunks are hashed in
//! parallel, and the consumer still sees them one by one, in order, on the walking thread.
//! The walking thread is not a rayon thread: it waits for its parallel work as it waits for a
//! seal permit, and pool tasks never wait for it, so the two cannot deadlock.
//!
//! Memory stays bounded whatever the file size: one buffer, reused for the rest of the walk,
//! of `min(threads, MAX_WINDOW_SEGMENTS) * SEGMENT + max_size` bytes once a large region was
//! read (16 MiB on two threads with the default 8 MiB `max_size`, 40 MiB on eight or more;
//! `2 * max_size` at most while only small regions were), plus a few bytes per chunk of one
//! window; the seal stage's copies of new chunks are bounded there. Windows are read with
//! read() rather than mapped: as fast here, mapped pages would count in the resident set,
//! and a file that shrinks while mapped raises SIGBUS where read() just returns less.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;

use bunker_repo_format::chunker::{Chunker, READ_ALIGN, fill, read_front};
use bunker_repo_format::crypto::WriterKey;
use bunker_repo_format::tree::Extent;
use bunker_repo_format::{BlobId, Repository};
use rayon::prelude::*;

use super::disk_image;
use super::fixed_chunks::{FixedChunks, read_fixed};
use super::seal::SealLoad;
use crate::platform::SourceFile;

/// Bytes one rayon task cuts. Each segment boundary costs a chunk or two cut twice, and a
/// window carries up to `max_size` undecided bytes into the next: with two threads, 4 MiB
/// segments chunk and hash random data at 2.35 GiB/s in the bench against 2.85 with 8 MiB
/// ones, but the vol first backup peaked at 100-104 MB against 110-115 (restic: 106-110)
/// in the same time (docs/PERFORMANCE.md, session 19); while sealing keeps the pool busy,
/// windows are cut on the walking thread, where segments cost nothing.
#[cfg(not(test))]
const SEGMENT: usize = 4 << 20;
/// Small segments in unit tests, so that a file of a few MiB takes the parallel path.
#[cfg(test)]
const SEGMENT: usize = 1 << 20;

/// Data regions of at least this many segments are cut and hashed in parallel.
const PARALLEL_SEGMENTS: usize = 4;

/// At most this many segments per window, whatever the pool's size: bounds the buffer on
/// large hosts, where sealing, not chunking, is the limit anyway.
const MAX_WINDOW_SEGMENTS: usize = 8;

/// The bytes one read of a large region fills: a segment per rayon thread, at most
/// [`MAX_WINDOW_SEGMENTS`].
pub(super) fn window() -> usize {
    rayon::current_num_threads().clamp(1, MAX_WINDOW_SEGMENTS) * SEGMENT
}

/// What cutting and naming chunks takes: the repository's chunker (or fixed chunks) and id
/// key, owned so that pool tasks can hold them.
#[derive(Clone)]
pub(super) struct Chunking {
    chunker: Chunker,
    /// Files are cut at the multiples of this size instead (see [`super::fixed_chunks`]).
    fixed: Option<FixedChunks>,
    /// Files recognised as disk images are cut at the multiples of this size, the
    /// repository's volume chunk size (see [`super::disk_image`]); `None`: by content.
    images: Option<FixedChunks>,
    key: WriterKey,
    /// While sealing keeps every pool thread busy, a window is cut and hashed on the
    /// walking thread: cutting it in parallel costs more work in all (each segment's first
    /// chunks are cut twice), which only pays while pool threads would otherwise idle, and
    /// work the walk hands the pool then queues behind the sealing batches while the walk
    /// waits for it, submitting nothing, until the pool runs dry (see
    /// [`Chunking::walk_works_alone`]).
    seal_load: Option<SealLoad>,
}

impl Chunking {
    /// The chunker and id key of `repo`.
    pub(super) fn of(repo: &Repository) -> Self {
        Self {
            chunker: repo.chunker().clone(),
            fixed: None,
            // A volume chunk size past the largest fixed chunk leaves images to the chunker.
            images: FixedChunks::new(u64::from(repo.config().params.volume_chunk_size)).ok(),
            key: repo.writer_key().clone(),
            seal_load: None,
        }
    }

    /// Cuts files into fixed chunks of this size, when given, instead of content-defined
    /// ones.
    pub(super) fn cutting_fixed_chunks(self, fixed: Option<FixedChunks>) -> Self {
        Self { fixed, ..self }
    }

    /// Cuts disk images by content too, as other files.
    pub(super) fn cutting_images_by_content(self) -> Self {
        Self {
            images: None,
            ..self
        }
    }

    /// The fixed chunks to cut `file` (of `size` bytes) into: those asked for, or, for a
    /// disk image, the repository's volume chunk size; `None`: by content.
    fn fixed_chunks_for(&self, file: &File, size: u64) -> io::Result<Option<FixedChunks>> {
        match (self.fixed, self.images) {
            (Some(fixed), _) => Ok(Some(fixed)),
            (None, Some(images)) if size >= disk_image::MIN_IMAGE_SIZE => {
                Ok(disk_image::recognise_file(file)?.map(|_| images))
            }
            (None, _) => Ok(None),
        }
    }

    /// Cuts and hashes windows on the walking thread while `load` says the pool is
    /// saturated.
    pub(super) fn sharing_the_pool_with(self, load: SealLoad) -> Self {
        Self {
            seal_load: Some(load),
            ..self
        }
    }

    /// True while sealing keeps every pool thread busy: the walk then cuts and hashes its
    /// windows itself. Work it handed the pool would wait behind the sealing batches (the
    /// pool takes jobs in turn), and the walk, waiting for it, would submit no batch
    /// meanwhile: a pool thread that finished its batches would idle until the walk's job
    /// came up (docs/PERFORMANCE.md, session 36).
    pub(super) fn walk_works_alone(&self) -> bool {
        self.seal_load.as_ref().is_some_and(SealLoad::saturated)
    }

    /// A window's chunk lengths, as [`Chunker::cut_parallel`] gives them.
    fn cut_window(&self, data: &[u8], at_end: bool) -> Vec<usize> {
        if self.walk_works_alone() {
            self.chunker.cut_window(data, at_end)
        } else {
            self.chunker.cut_parallel(data, at_end, SEGMENT)
        }
    }

    /// A chunk's id: its keyed hash, as [`Repository::blob_id`] gives it.
    pub(super) fn id(&self, chunk: &[u8]) -> BlobId {
        BlobId::from_bytes(self.key.blob_id_bytes(chunk))
    }
}

/// Why reading a file stopped: the file itself, or the consumer of its chunks.
pub(super) enum ReadFailure<E> {
    /// The file could not be read.
    Io(io::Error),
    /// The chunk consumer refused (cancellation, a failed stage).
    Consumer(E),
}

impl<E> From<io::Error> for ReadFailure<E> {
    fn from(e: io::Error) -> Self {
        ReadFailure::Io(e)
    }
}

/// A file's content as read.
pub(super) struct ReadFile {
    /// Chunks and holes, in order.
    pub extents: Vec<Extent>,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes the extents cover.
    pub length: u64,
    /// The file was shorter than `size` when read.
    pub short: bool,
    /// The file was taken for a disk image and cut at the volume chunk size.
    pub disk_image: bool,
}

/// Reads `source` (of `size` bytes at open time) from its start, calling `on_chunk` with
/// each chunk's id and bytes in order. Holes (from the file's data regions, looked for only
/// when it [may have some](SourceFile::may_have_holes)) become hole extents.
pub(super) fn read_file<E>(
    chunking: &Chunking,
    source: &mut SourceFile,
    size: u64,
    buffer: &mut Vec<u8>,
    mut on_chunk: impl FnMut(BlobId, &[u8]) -> Result<(), E>,
) -> Result<ReadFile, ReadFailure<E>> {
    // Data regions are looked for one at a time, between reads; without holes to look
    // for, there is one region, the whole file (none for an empty one).
    let mut regions = source.data_regions(size);
    let file = &mut source.file;
    let mut extents = Vec::new();
    // The file's offset when known: a region that starts there needs no seek.
    let mut offset = Some(0u64);
    let mut position = 0u64;
    let mut bytes_read = 0u64;
    let mut short = false;
    let chunker = &chunking.chunker;
    let fixed = chunking.fixed_chunks_for(file, size)?;
    let disk_image = fixed.is_some() && chunking.fixed.is_none();
    loop {
        if regions.moves_offset() {
            offset = None;
        }
        let Some(region) = regions.next_region(file)? else {
            break;
        };
        if region.start > position {
            extents.push(Extent::Hole {
                length: region.start - position,
            });
        }
        if offset != Some(region.start) {
            file.seek(SeekFrom::Start(region.start))?;
        }
        let region_length = region.end - region.start;
        let read = if let Some(fixed) = fixed {
            read_fixed(
                chunking,
                fixed,
                &mut *file,
                region.start,
                region_length,
                buffer,
                &mut |id, chunk| {
                    push_chunk(&mut extents, id, chunk);
                    on_chunk(id, chunk).map_err(ReadFailure::Consumer)
                },
            )?
        } else if region_length >= (PARALLEL_SEGMENTS * SEGMENT) as u64 {
            read_parallel(
                chunking,
                &mut *file,
                region_length,
                buffer,
                &mut |id, chunk| {
                    push_chunk(&mut extents, id, chunk);
                    on_chunk(id, chunk).map_err(ReadFailure::Consumer)
                },
            )?
        } else {
            chunker.chunk_reader::<_, ReadFailure<E>>(
                &mut *file,
                region_length,
                buffer,
                |chunk| {
                    let id = chunking.id(chunk);
                    push_chunk(&mut extents, id, chunk);
                    on_chunk(id, chunk).map_err(ReadFailure::Consumer)
                },
            )?
        };
        bytes_read += read;
        position = region.start + read;
        offset = Some(position);
        if read < region_length {
            short = true;
            break;
        }
    }
    if !short && position < size {
        extents.push(Extent::Hole {
            length: size - position,
        });
        position = size;
    }
    Ok(ReadFile {
        extents,
        bytes_read,
        length: position,
        short,
        disk_image,
    })
}

fn push_chunk(extents: &mut Vec<Extent>, id: BlobId, chunk: &[u8]) {
    extents.push(Extent::Chunk {
        id,
        // Chunks are at most `max_size` (16 MiB) long.
        length: chunk.len() as u32,
    });
}

/// Reads `limit` bytes (fewer when the file ends first) of a large region from `reader`'s
/// position in windows, cutting and hashing each window on the rayon pool and calling
/// `on_chunk` for its chunks in order. Returns the number of bytes read.
///
/// `buffer` grows to one window plus `max_size` (the undecided tail carried into the next
/// window) and is reused.
fn read_parallel<E>(
    chunking: &Chunking,
    reader: impl Read,
    limit: u64,
    buffer: &mut Vec<u8>,
    on_chunk: &mut impl FnMut(BlobId, &[u8]) -> Result<(), ReadFailure<E>>,
) -> Result<u64, ReadFailure<E>> {
    let chunker = &chunking.chunker;
    let capacity = window() + chunker.params().max_size as usize;
    if buffer.len() < capacity + READ_ALIGN {
        buffer.resize(capacity + READ_ALIGN, 0);
    }
    let mut reader = reader.take(limit);
    let mut total = 0u64;
    // The undecided tail of the last window (none at first), moved to the buffer's front
    // so that the next read lands where its memory agrees with its offset in the region
    // (which starts at a block boundary).
    let mut tail = 0..0;
    loop {
        let carried = tail.len();
        let front = read_front(buffer, carried, total);
        buffer.copy_within(tail, front);
        let (read, eof) = fill(&mut reader, &mut buffer[front + carried..front + capacity])?;
        total += read as u64;
        let end = front + carried + read;
        let data = &buffer[front..end];
        let mut spans: Vec<Range<usize>> = Vec::new();
        let mut start = 0usize;
        for length in chunking.cut_window(data, eof) {
            spans.push(start..start + length);
            start += length;
        }
        let id = |span: &Range<usize>| chunking.id(&data[span.clone()]);
        let ids: Vec<BlobId> = if chunking.walk_works_alone() {
            spans.iter().map(id).collect()
        } else {
            spans.par_iter().map(id).collect()
        };
        for (span, id) in spans.into_iter().zip(ids) {
            on_chunk(id, &data[span])?;
        }
        if eof {
            return Ok(total);
        }
        tail = front + start..end;
    }
}

/// The helpers of the agent's integration tests (their noise generator).
#[cfg(test)]
#[path = "../../tests/common/mod.rs"]
pub(in crate::backup) mod test_common;

#[cfg(test)]
pub(super) mod tests {
    use std::fs::{self, OpenOptions};
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::path::Path;
    use std::sync::Arc;

    use bunker_repo_format::InitOptions;
    use bunker_repo_format::backend::{Backend, LocalBackend};
    use bunker_repo_format::chunker::ChunkerParams;
    use bunker_repo_format::config::RepositoryParams;
    use bunker_repo_format::keyslot::KdfParams;
    use bunker_repo_format::tree::Node;

    use bunker_repo_format::chunker::CountsMisalignedReads;

    use super::test_common::noise;
    use super::*;
    use crate::Cancel;
    use crate::backup::{BackupOptions, backup};
    use crate::navigate::{Located, locate};
    use crate::restore::{RestoreOptions, restore};

    /// The smallest region cut in parallel (4 MiB in unit tests).
    const THRESHOLD: usize = PARALLEL_SEGMENTS * SEGMENT;

    /// A repository whose chunks (16-256 KiB) are small beside the test segments (1 MiB).
    pub(in crate::backup) fn small_chunks_repo(dir: &Path) -> Repository {
        fs::create_dir_all(dir).expect("repo dir");
        let backend: Arc<dyn Backend> = Arc::new(LocalBackend::create(dir).expect("local backend"));
        let options = InitOptions {
            params: RepositoryParams {
                chunker: ChunkerParams {
                    min_size: 16 << 10,
                    avg_size: 64 << 10,
                    max_size: 256 << 10,
                },
                ..RepositoryParams::default()
            },
            kdf: KdfParams::insecure_for_tests(),
            ..InitOptions::default()
        };
        Repository::init(backend, b"pw", options).expect("init")
    }

    /// About 24 MiB of random data, zero runs (where chains of cuts never meet) and a
    /// repeated block, ending off any power of two.
    fn large_content() -> Vec<u8> {
        let mut data = noise(6 << 20, 1);
        data.resize(data.len() + (5 << 20) + 777, 0);
        let block = noise(3 << 20, 2);
        data.extend_from_slice(&block);
        data.extend(noise(4 << 20, 3));
        data.extend_from_slice(&block);
        data.resize(data.len() + (2 << 20), 0);
        data.extend(noise((1 << 20) + 12345, 4));
        data
    }

    /// Restores the whole snapshot tree `root` into `target`, asserting it restored without
    /// errors; where `source`, a backed-up path, came back.
    pub(in crate::backup) fn restore_source(
        repo: &Repository,
        root: &BlobId,
        source: &Path,
        target: &Path,
    ) -> std::path::PathBuf {
        let index = repo.load_index().expect("index").index;
        let restored = restore(
            repo,
            &index,
            root,
            Path::new("/"),
            target,
            &RestoreOptions::default(),
            &Cancel::new(),
        )
        .expect("restore");
        assert!(restored.errors.is_empty(), "{:?}", restored.errors);
        target.join(source.strip_prefix("/").expect("absolute source"))
    }

    /// What sequential chunking of `data` as one stream gives.
    fn sequential_extents(repo: &Repository, data: &[u8]) -> Vec<Extent> {
        let mut start = 0;
        let mut extents = Vec::new();
        for length in repo.chunker().cut_all(data) {
            let chunk = &data[start..start + length];
            extents.push(Extent::Chunk {
                id: repo.blob_id(chunk),
                length: length as u32,
            });
            start += length;
        }
        extents
    }

    /// Writes a sparse file of `size` bytes at `path`: holes but for `regions`, each its
    /// offset and bytes.
    pub(in crate::backup) fn write_sparse(path: &Path, size: u64, regions: &[(u64, &[u8])]) {
        let file = std::fs::File::create(path).expect("create sparse file");
        file.set_len(size).expect("set_len");
        for (offset, bytes) in regions {
            file.write_all_at(bytes, *offset).expect("write a region");
        }
    }

    /// The extents stored for the file at `path` (as backed up) in the tree `root`.
    pub(in crate::backup) fn file_extents(
        repo: &Repository,
        root: &BlobId,
        path: &Path,
    ) -> Vec<Extent> {
        let index = repo.load_index().expect("index").index;
        match locate(repo, &index, root, path).expect("locate") {
            Located::Other(entry) => match entry.node {
                Node::File { extents } => extents,
                other => panic!("{} is a {}", path.display(), other.kind_name()),
            },
            Located::Dir { .. } => panic!("{} is a directory", path.display()),
        }
    }

    /// Reads `path` with `read_file`, collecting the chunks the consumer saw.
    fn read_path(
        repo: &Repository,
        path: &Path,
        on_chunk: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> (Result<ReadFile, ReadFailure<String>>, Vec<u8>) {
        read_path_with(&Chunking::of(repo), repo, path, on_chunk)
    }

    /// Like [`read_path`], with the given chunking.
    fn read_path_with(
        chunking: &Chunking,
        repo: &Repository,
        path: &Path,
        mut on_chunk: impl FnMut(&[u8]) -> Result<(), String>,
    ) -> (Result<ReadFile, ReadFailure<String>>, Vec<u8>) {
        let mut file = crate::platform::open_for_backup(path).expect("open");
        let size = file.file.metadata().expect("stat").len();
        let mut seen = Vec::new();
        let mut buffer = Vec::new();
        let read = read_file(chunking, &mut file, size, &mut buffer, |id, chunk| {
            assert_eq!(id, repo.blob_id(chunk));
            seen.extend_from_slice(chunk);
            on_chunk(chunk)
        });
        (read, seen)
    }

    #[test]
    fn a_large_file_cut_in_parallel_has_the_sequential_chunks_and_restores() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let source = tmp.path().join("src");
        fs::create_dir_all(&source).expect("src");
        let big = large_content();
        assert!(
            big.len() >= 5 * THRESHOLD,
            "the file takes the parallel path"
        );
        fs::write(source.join("big.bin"), &big).expect("write big");
        // A sparse file whose data regions take the parallel path too.
        let (first, second) = (noise(THRESHOLD + (64 << 10), 5), noise(5 << 20, 6));
        let sparse_size = 40u64 << 20;
        write_sparse(
            &source.join("sparse.img"),
            sparse_size,
            &[(0, &first), (20 << 20, &second)],
        );

        let options = BackupOptions {
            paths: vec![source.clone()],
            host: "h".to_owned(),
            ..BackupOptions::default()
        };
        let outcome = backup(&repo, &options, &Cancel::new()).expect("backup");
        let root = outcome.snapshot.tree;
        assert_eq!(
            file_extents(&repo, &root, &source.join("big.bin")),
            sequential_extents(&repo, &big)
        );
        let mut expected = sequential_extents(&repo, &first);
        expected.push(Extent::Hole {
            length: (20 << 20) - first.len() as u64,
        });
        expected.extend(sequential_extents(&repo, &second));
        expected.push(Extent::Hole {
            length: sparse_size - (25 << 20),
        });
        assert_eq!(
            file_extents(&repo, &root, &source.join("sparse.img")),
            expected
        );
        assert_eq!(
            outcome.snapshot.summary.bytes_read,
            (big.len() + first.len() + second.len()) as u64
        );

        let restored = restore_source(&repo, &root, &source, &tmp.path().join("restored"));
        assert!(fs::read(restored.join("big.bin")).expect("big") == big);
        let restored_sparse = restored.join("sparse.img");
        let bytes = fs::read(&restored_sparse).expect("sparse");
        assert_eq!(bytes.len() as u64, sparse_size);
        assert!(bytes[..first.len()] == first[..]);
        assert!(bytes[20 << 20..25 << 20] == second[..]);
        assert!(bytes[first.len()..20 << 20].iter().all(|&b| b == 0));
        assert!(bytes[25 << 20..].iter().all(|&b| b == 0));
        let allocated = fs::metadata(&restored_sparse).expect("stat").blocks() * 512;
        assert!(
            allocated < 16 << 20,
            "holes were written: {allocated} bytes"
        );
    }

    #[test]
    fn files_around_the_parallel_threshold_have_the_sequential_chunks() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let window = window();
        // Windows cut in parallel, and cut on the reading thread as while sealing keeps
        // the pool busy.
        let chunkings = [
            Chunking::of(&repo),
            Chunking::of(&repo).sharing_the_pool_with(SealLoad::saturated_for_tests()),
        ];
        for len in [THRESHOLD - 1, THRESHOLD, THRESHOLD + window + 1, 3 * window] {
            let data = noise(len, len as u64);
            let path = tmp.path().join(format!("f{len}"));
            fs::write(&path, &data).expect("write");
            for chunking in &chunkings {
                let (read, seen) = read_path_with(chunking, &repo, &path, |_| Ok(()));
                let Ok(read) = read else {
                    panic!("reading {len} bytes failed")
                };
                assert_eq!(
                    read.extents,
                    sequential_extents(&repo, &data),
                    "{len} bytes"
                );
                assert_eq!(
                    (read.bytes_read, read.length, read.short),
                    (len as u64, len as u64, false)
                );
                assert!(seen == data);
            }
        }
    }

    #[test]
    fn a_file_that_shrinks_during_a_parallel_read_is_short() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let path = tmp.path().join("shrinking");
        let data = noise(30 << 20, 8);
        fs::write(&path, &data).expect("write");
        let shrunk = 20usize << 20;
        // After the first window (at most 8 segments and a chunk) has been read.
        let writer = OpenOptions::new().write(true).open(&path).expect("open");
        let mut truncated = false;
        let (read, seen) = read_path(&repo, &path, |_| {
            if !truncated {
                writer.set_len(shrunk as u64).expect("truncate");
                truncated = true;
            }
            Ok(())
        });
        let Ok(read) = read else {
            panic!("reading the shrinking file failed")
        };
        assert!(read.short);
        assert_eq!(
            (read.bytes_read, read.length),
            (shrunk as u64, shrunk as u64)
        );
        assert_eq!(read.extents, sequential_extents(&repo, &data[..shrunk]));
        assert!(seen[..] == data[..shrunk]);
    }

    #[test]
    fn a_refusing_consumer_stops_a_parallel_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let path = tmp.path().join("big");
        fs::write(&path, large_content()).expect("write");
        let mut calls = 0;
        let (read, _) = read_path(&repo, &path, |_| {
            calls += 1;
            if calls == 5 {
                Err("stop".to_owned())
            } else {
                Ok(())
            }
        });
        assert!(matches!(read, Err(ReadFailure::Consumer(e)) if e == "stop"));
        assert_eq!(calls, 5);
    }

    #[test]
    fn a_parallel_read_lands_on_aligned_memory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let repo = small_chunks_repo(&tmp.path().join("repo"));
        let data = large_content();
        let chunking = Chunking::of(&repo);
        for earlier in [0, 1, 17] {
            let mut buffer = vec![0u8; earlier];
            let mut reader = CountsMisalignedReads::new(&data);
            let mut extents = Vec::new();
            let read = read_parallel(
                &chunking,
                &mut reader,
                u64::MAX,
                &mut buffer,
                &mut |id, chunk| -> Result<(), ReadFailure<String>> {
                    push_chunk(&mut extents, id, chunk);
                    Ok(())
                },
            );
            assert!(matches!(read, Ok(n) if n == data.len() as u64));
            assert_eq!(extents, sequential_extents(&repo, &data));
            assert_eq!(reader.misaligned(), 0, "after a buffer of {earlier} bytes");
        }
    }
}
