//! The read, chunk and hash stages for one file: its data regions are read with large reads
//! into a reused buffer, cut by the repository's content-defined chunker and each chunk is
//! hashed at once (its id goes into the file's tree entry, in order).
//!
//! Chunking stays sequential per file: the walking thread reads, chunks and hashes
//! (about a quarter of the CPU work) while the rayon pool compresses and seals the batches
//! (the rest), so both cores stay busy without a boundary-resync scheme.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};

use bunker_repo_format::tree::Extent;
use bunker_repo_format::{BlobId, Repository};

use crate::platform;

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
}

/// Reads `file` (of `size` bytes at open time), calling `on_chunk` with each chunk's id and
/// bytes in order. Holes (from the file's data regions) become hole extents.
pub(super) fn read_file<E>(
    repo: &Repository,
    file: &mut File,
    size: u64,
    buffer: &mut Vec<u8>,
    mut on_chunk: impl FnMut(BlobId, &[u8]) -> Result<(), E>,
) -> Result<ReadFile, ReadFailure<E>> {
    let regions = platform::data_regions(file, size)?;
    let mut extents = Vec::new();
    let mut position = 0u64;
    let mut bytes_read = 0u64;
    let mut short = false;
    let chunker = repo.chunker();
    for region in regions {
        if region.start > position {
            extents.push(Extent::Hole {
                length: region.start - position,
            });
        }
        file.seek(SeekFrom::Start(region.start))?;
        let region_length = region.end - region.start;
        let read = chunker.chunk_reader::<_, ReadFailure<E>>(
            &mut *file,
            region_length,
            buffer,
            |chunk| {
                let id = repo.blob_id(chunk);
                extents.push(Extent::Chunk {
                    id,
                    length: chunk.len() as u32,
                });
                on_chunk(id, chunk).map_err(ReadFailure::Consumer)
            },
        )?;
        bytes_read += read;
        position = region.start + read;
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
    })
}
