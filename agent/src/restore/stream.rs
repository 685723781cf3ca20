//! Streaming one file (or a volume) in order, e.g. to stdout.
//!
//! As many workers as the backend reads ranges at once
//! ([`ReadHints`](bunker_repo_format::backend::ReadHints)) take chunks in file order, each
//! fetching, unsealing and re-hashing its chunk; the caller's thread writes them out in
//! order. A chunk is taken only while it is within [`WINDOW`] chunks of the next one to
//! write, so the reorder buffer holds at most `WINDOW` chunks (16 MiB with 1 MiB chunks),
//! whatever the file's size, while several reads are in flight. Holes are written as zeros
//! (a stream has no holes).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::Duration;

use bunker_repo_format::index::Index;
use bunker_repo_format::pack::pack_name;
use bunker_repo_format::tree::Extent;
use bunker_repo_format::{Error, Repository};

use super::RestoreError;
use super::fetch::announced_when_taken;
use crate::cancel::Cancel;

/// Chunks fetched ahead of the writer at most.
pub(super) const WINDOW: usize = 16;

/// Zeros written at a time for holes.
const ZEROS: usize = 1 << 20;

/// How often the writer, waiting for the next chunk, looks whether it was interrupted.
const CANCEL_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct State {
    /// Next chunk to hand to a worker.
    next: usize,
    /// Next chunk to write.
    written: usize,
    /// Fetched chunks waiting for their turn.
    ready: BTreeMap<usize, Result<Vec<u8>, Error>>,
    /// The writer stopped (error or cancel): workers quit.
    stopped: bool,
}

/// Writes the content `extents` describe to `out`, in order; returns the bytes written.
///
/// Fails on the first chunk that cannot be read (naming its pack) or write error; what was
/// written before stays written.
pub(super) fn stream(
    repo: &Repository,
    index: &Index,
    extents: &[Extent],
    out: &mut dyn Write,
    cancel: &Cancel,
) -> Result<u64, RestoreError> {
    // Once interrupted, reads waiting for a slow store are given up.
    let abandon = cancel.flag();
    // One chunk (most files): nothing to fetch ahead, so no workers to start.
    if let [extent] = extents {
        if cancel.is_cancelled() {
            return Err(RestoreError::Interrupted);
        }
        let data = fetch(repo, index, extent, &abandon).map_err(|e| unreadable(e, 0))?;
        check_length(extent, &data, 0)?;
        let zeros = match extent {
            Extent::Hole { length } => vec![0u8; ZEROS.min(*length as usize)],
            Extent::Chunk { .. } => Vec::new(),
        };
        let written = write_extent(out, extent, &data, &zeros)
            .and_then(|written| out.flush().map(|()| written))
            .map_err(|source| RestoreError::Output { source })?;
        return Ok(written);
    }
    let state = Mutex::new(State::default());
    let changed = Condvar::new();
    let lock = || state.lock().unwrap_or_else(PoisonError::into_inner);
    std::thread::scope(|scope| {
        for _ in 0..repo.backend().read_hints().parallel_reads.max(1) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let mut s = lock();
                        while !s.stopped && s.next < extents.len() && s.next >= s.written + WINDOW {
                            s = changed.wait(s).unwrap_or_else(PoisonError::into_inner);
                        }
                        if s.stopped || s.next >= extents.len() {
                            return;
                        }
                        s.next += 1;
                        s.next - 1
                    };
                    announce(repo, index, extents, i);
                    let result = fetch(repo, index, &extents[i], &abandon);
                    lock().ready.insert(i, result);
                    changed.notify_all();
                }
            });
        }
        let result = write_in_order(extents, out, cancel, &state, &changed);
        lock().stopped = true;
        changed.notify_all();
        result
    })
}

fn write_in_order(
    extents: &[Extent],
    out: &mut dyn Write,
    cancel: &Cancel,
    state: &Mutex<State>,
    changed: &Condvar,
) -> Result<u64, RestoreError> {
    let zeros = vec![0u8; ZEROS];
    let mut total = 0u64;
    for (i, extent) in extents.iter().enumerate() {
        if cancel.is_cancelled() {
            return Err(RestoreError::Interrupted);
        }
        let data = {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                if let Some(data) = s.ready.remove(&i) {
                    break data;
                }
                if cancel.is_cancelled() {
                    return Err(RestoreError::Interrupted);
                }
                s = changed
                    .wait_timeout(s, CANCEL_CHECK)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
        };
        // A read given up because the command was interrupted can be the answer the
        // writer finds, though the interruption came after its last look.
        let data = data.map_err(|e| unreadable(e, total))?;
        check_length(extent, &data, total)?;
        total += write_extent(out, extent, &data, &zeros)
            .map_err(|source| RestoreError::Output { source })?;
        state.lock().unwrap_or_else(PoisonError::into_inner).written = i + 1;
        changed.notify_all();
    }
    out.flush()
        .map_err(|source| RestoreError::Output { source })?;
    Ok(total)
}

/// Refuses a chunk whose blob (at `offset` of the stream) holds another length than the
/// snapshot gives it: the stream would come out at the wrong length.
fn check_length(extent: &Extent, data: &[u8], offset: u64) -> Result<(), RestoreError> {
    match extent {
        Extent::Chunk { id, length } if data.len() as u64 != u64::from(*length) => {
            Err(RestoreError::Content {
                message: format!(
                    "at offset {offset}: the snapshot gives blob {id} {length} bytes, the \
                     repository holds {}",
                    data.len()
                ),
            })
        }
        _ => Ok(()),
    }
}

/// Why the chunk at `offset` of the stream could not be written: its content is lost, or
/// its read was given up because the command was interrupted.
fn unreadable(error: Error, offset: u64) -> RestoreError {
    match error {
        Error::Abandoned { .. } => RestoreError::Interrupted,
        e => RestoreError::Content {
            message: format!("at offset {offset}: {e}"),
        },
    }
}

/// Writes one extent: a chunk's `data`, or a hole's length in zeros (taken from `zeros`, at
/// least one byte long for a hole of any length); returns the bytes written.
fn write_extent(
    out: &mut dyn Write,
    extent: &Extent,
    data: &[u8],
    zeros: &[u8],
) -> std::io::Result<u64> {
    match extent {
        Extent::Chunk { .. } => out.write_all(data).map(|()| data.len() as u64),
        Extent::Hole { length } => write_zeros(out, zeros, *length).map(|()| *length),
    }
}

fn write_zeros(out: &mut dyn Write, zeros: &[u8], mut length: u64) -> std::io::Result<()> {
    while length > 0 {
        let piece = length.min(zeros.len() as u64) as usize;
        out.write_all(&zeros[..piece])?;
        length -= piece as u64;
    }
    Ok(())
}

/// Tells the backend which chunks come next ([`Backend::will_read`]): when chunk `i` is
/// taken, the one [`WINDOW`] further (the first taker announces the first ones), so each
/// is announced once, before its read, and a local directory reads it from the disk while
/// the chunks before it are unsealed and written.
///
/// [`Backend::will_read`]: bunker_repo_format::backend::Backend::will_read
fn announce(repo: &Repository, index: &Index, extents: &[Extent], i: usize) {
    let ahead = announced_when_taken(i, WINDOW);
    for extent in ahead.filter_map(|i| extents.get(i)) {
        if let Extent::Chunk { id, .. } = extent
            && let Some(location) = index.get(id)
        {
            let pack = pack_name(location.kind, &location.pack);
            repo.backend()
                .will_read(&pack, location.offset, u64::from(location.length));
        }
    }
}

/// Fetches, unseals and re-hashes one chunk; a hole needs nothing.
fn fetch(
    repo: &Repository,
    index: &Index,
    extent: &Extent,
    abandon: &AtomicBool,
) -> Result<Vec<u8>, Error> {
    let Extent::Chunk { id, .. } = extent else {
        return Ok(Vec::new());
    };
    match index.get(id) {
        Some(location) => repo.read_blob_at_abandoning(id, &location, abandon),
        None => Err(Error::NotFound {
            object: match index.lost_location(id) {
                Some(lost) => format!(
                    "{} (the pack holding blob {id})",
                    pack_name(lost.kind, &lost.pack)
                ),
                None => format!("blob {id} (not in the index)"),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer looked for an interruption, then found a read given up because of one:
    /// the stream was interrupted (exit 130), its content is not lost.
    #[test]
    fn a_read_abandoned_after_the_writer_looked_is_an_interruption() {
        let extents = [
            Extent::Chunk {
                id: bunker_repo_format::BlobId::from_bytes([1; 32]),
                length: 3,
            },
            Extent::Chunk {
                id: bunker_repo_format::BlobId::from_bytes([2; 32]),
                length: 3,
            },
        ];
        let state = Mutex::new(State::default());
        {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            s.ready.insert(0, Ok(b"abc".to_vec()));
            s.ready.insert(
                1,
                Err(Error::Abandoned {
                    object: "data/01/01".into(),
                }),
            );
        }
        let mut out = Vec::new();
        let result = write_in_order(&extents, &mut out, &Cancel::new(), &state, &Condvar::new());
        assert!(
            matches!(result, Err(RestoreError::Interrupted)),
            "{result:?}"
        );
        assert_eq!(out, b"abc");

        // Any other failure is content lost, named with its offset.
        let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
        s.ready.insert(0, Ok(b"abc".to_vec()));
        s.ready.insert(
            1,
            Err(Error::corrupt("data/01/01", "does not authenticate")),
        );
        drop(s);
        let result = write_in_order(
            &extents,
            &mut Vec::new(),
            &Cancel::new(),
            &state,
            &Condvar::new(),
        );
        match result {
            Err(RestoreError::Content { message }) => assert!(
                message.starts_with("at offset 3: ") && message.contains("does not authenticate"),
                "{message}"
            ),
            other => panic!("expected lost content, got {other:?}"),
        }
    }

    /// A file of one chunk takes the short way (no workers), with the same length check.
    #[test]
    fn a_single_chunk_of_another_length_than_its_extent_is_not_streamed() {
        use bunker_repo_format::backend::{Backend, MemoryBackend};
        use bunker_repo_format::blob::BlobKind;
        use bunker_repo_format::keyslot::KdfParams;
        use std::sync::Arc;

        let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
        let options = bunker_repo_format::InitOptions {
            kdf: KdfParams::insecure_for_tests(),
            ..bunker_repo_format::InitOptions::default()
        };
        let repo = Repository::init(backend, b"pw", options).expect("init");
        let empty = repo.load_index().expect("index").index;
        let mut writer = repo.blob_writer(&empty);
        let (id, _) = writer.add(BlobKind::Data, b"abc").expect("add");
        writer.finish().expect("finish");
        let index = repo.load_index().expect("index").index;

        let mut out = Vec::new();
        let whole = [Extent::Chunk { id, length: 3 }];
        let written = stream(&repo, &index, &whole, &mut out, &Cancel::new()).expect("stream");
        assert_eq!((written, out.as_slice()), (3, b"abc".as_slice()));

        let mut out = Vec::new();
        let short = [Extent::Chunk { id, length: 2 }];
        match stream(&repo, &index, &short, &mut out, &Cancel::new()) {
            Err(RestoreError::Content { message }) => assert_eq!(
                message,
                format!(
                    "at offset 0: the snapshot gives blob {id} 2 bytes, the repository holds 3"
                )
            ),
            other => panic!("expected unusable content, got {other:?}"),
        }
        assert!(out.is_empty());
    }

    /// A blob of another length than its extent says would shift every byte after it.
    #[test]
    fn a_chunk_of_another_length_than_its_extent_stops_the_stream() {
        let id = bunker_repo_format::BlobId::from_bytes([1; 32]);
        let extents = [
            Extent::Chunk { id, length: 3 },
            Extent::Chunk { id, length: 2 },
        ];
        let state = Mutex::new(State::default());
        {
            let mut s = state.lock().unwrap_or_else(PoisonError::into_inner);
            s.ready.insert(0, Ok(b"abc".to_vec()));
            s.ready.insert(1, Ok(b"abc".to_vec()));
        }
        let mut out = Vec::new();
        let result = write_in_order(&extents, &mut out, &Cancel::new(), &state, &Condvar::new());
        match result {
            Err(RestoreError::Content { message }) => assert_eq!(
                message,
                format!(
                    "at offset 3: the snapshot gives blob {id} 2 bytes, the repository holds 3"
                )
            ),
            other => panic!("expected unusable content, got {other:?}"),
        }
        assert_eq!(out, b"abc");
    }
}
