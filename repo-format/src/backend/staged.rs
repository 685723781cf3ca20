//! Objects written piece by piece into a store's staging area and named when complete
//! (see [`Backend::stage`](super::Backend::stage)): a pack's name is the hash of all its
//! bytes, so a store that can hold the bytes on disk meanwhile spares the writer holding a
//! whole pack in memory.
//!
//! A staged file gathers its bytes in an aligned buffer and writes them [`WRITE_SIZE`]
//! bytes at a time (small blobs come by the thousand; a write each would cost a system call
//! each). Where the filesystem lets us open the file for direct I/O, those writes go around
//! the page cache (`O_DIRECT`), and only the last partial buffer goes through it, when the
//! file is published. Nothing reads a new pack back soon, and on the benchmark machine (a
//! VM whose free memory goes back to its host) every page-cache page a write fills must
//! first be faulted in: buffered writes of 2 GiB took 5.5 s of system time, direct ones 1 s
//! (docs/PERFORMANCE.md, session 13).
//!
//! The full buffers are written behind the caller, by a thread of the file's own
//! ([`WriteBehind`]): a direct write returns only once the disk has the bytes, and the
//! caller (a backup's pack stage, through which every blob passes) would otherwise wait
//! for each, holding up the stages before it (docs/PERFORMANCE.md, session 17).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;

use crate::aligned::AlignedBuffer;

/// Bytes per write: a multiple of [`crate::aligned::ALIGN`]. Direct writes of 1 MiB came
/// within 10% of 4 MiB ones with `dd` on the benchmark machine.
pub(crate) const WRITE_SIZE: usize = 1 << 20;

/// Full buffers waiting for the writing thread, beyond the one it writes: with the one
/// being filled, a staged file holds at most `WRITE_SIZE * (QUEUED_WRITES + 2)` bytes.
const QUEUED_WRITES: usize = 2;

/// A temp file in a store's staging area. Dropped before it is published, it removes itself.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    /// `None` once handed to the store for publishing.
    file: Option<File>,
    /// The temp file opened again with `O_DIRECT`, while the filesystem takes direct
    /// writes; moved to the writing thread when that starts.
    direct: Option<File>,
    /// Bytes not handed to the writing thread yet; they go at `written - buffer.len()`.
    buffer: AlignedBuffer,
    written: u64,
    /// The thread writing full buffers, from the first one on.
    behind: Option<WriteBehind>,
}

impl StagedFile {
    /// Wraps a freshly created temp file at `path`; `direct`, if given, is the same file
    /// opened with `O_DIRECT`.
    pub(crate) fn new(path: PathBuf, file: File, direct: Option<File>) -> Self {
        Self {
            path,
            file: Some(file),
            direct,
            buffer: AlignedBuffer::with_capacity(WRITE_SIZE),
            written: 0,
            behind: None,
        }
    }

    /// Appends `bytes`. An error may be one of an earlier full buffer's write.
    pub fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Err(io::Error::other("the staged file was already published"));
        }
        while !bytes.is_empty() {
            let taken = self.buffer.append(bytes);
            bytes = &bytes[taken..];
            self.written += taken as u64;
            if self.buffer.is_full() {
                self.hand_over_buffer()?;
            }
        }
        Ok(())
    }

    /// Hands the full buffer to the writing thread (started by the first), taking an empty
    /// one back.
    fn hand_over_buffer(&mut self) -> io::Result<()> {
        let behind = match &mut self.behind {
            Some(behind) => behind,
            None => {
                let file = self
                    .file
                    .as_ref()
                    .ok_or_else(|| io::Error::other("the staged file was already published"))?
                    .try_clone()?;
                self.behind
                    .insert(WriteBehind::start(file, self.direct.take())?)
            }
        };
        let empty = behind
            .emptied
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .try_recv()
            .unwrap_or_else(|_| AlignedBuffer::with_capacity(WRITE_SIZE));
        let full = std::mem::replace(&mut self.buffer, empty);
        let offset = self.written - full.len() as u64;
        if behind.full.send((full, offset)).is_err() {
            // The thread stopped at a failed write: its error is the one to report.
            return Err(self.finish_writes_behind());
        }
        Ok(())
    }

    /// Waits for the writing thread to write what it was given and stop; its error, or
    /// one saying it stopped without one.
    fn finish_writes_behind(&mut self) -> io::Error {
        match self.behind.take().map(WriteBehind::finish) {
            Some(Err(e)) => e,
            _ => io::Error::other("the staged file's writing thread stopped"),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Waits for the full buffers' writes, writes what is still buffered (through the page
    /// cache), then hands the file and its temp path to the store that publishes it; from
    /// now on the store removes the temp name. `None` if it was handed over already.
    pub(crate) fn into_parts(mut self) -> Option<io::Result<(PathBuf, File)>> {
        if let Some(behind) = self.behind.take()
            && let Err(e) = behind.finish()
        {
            return Some(Err(e));
        }
        let file = self.file.take()?;
        let offset = self.written - self.buffer.len() as u64;
        if let Err(e) = file.write_all_at(self.buffer.as_slice(), offset) {
            // Dropping `self` removes the temp file: nothing else names it.
            self.file = Some(file);
            return Some(Err(e));
        }
        Some(Ok((std::mem::take(&mut self.path), file)))
    }

    /// Where the temp file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        // A write in flight finishes before the name goes; its outcome no longer matters.
        if let Some(behind) = self.behind.take() {
            let _ = behind.finish();
        }
        if self.file.take().is_some() {
            // Never published: the temp name was the only reference to these bytes.
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A staged file's writing thread: it writes the full buffers it is sent, in order,
/// directly while the filesystem takes it, and sends each buffer back emptied. It stops at
/// the first failed write, which [`WriteBehind::finish`] returns.
#[derive(Debug)]
struct WriteBehind {
    full: SyncSender<(AlignedBuffer, u64)>,
    /// The buffers written (in a mutex only so that a staged file can be shared between
    /// threads; it is used through `&mut`).
    emptied: Mutex<Receiver<AlignedBuffer>>,
    thread: JoinHandle<io::Result<()>>,
}

impl WriteBehind {
    /// Starts the thread; `file` is the temp file's ordinary descriptor, `direct` the one
    /// opened with `O_DIRECT`, if any.
    fn start(file: File, direct: Option<File>) -> io::Result<Self> {
        let (full, to_write) = sync_channel::<(AlignedBuffer, u64)>(QUEUED_WRITES);
        let (give_back, emptied) = sync_channel(QUEUED_WRITES + 1);
        let thread = std::thread::Builder::new()
            .name("staged-write".to_owned())
            .spawn(move || {
                let mut direct = direct;
                for (mut buffer, offset) in to_write {
                    write_block(&file, &mut direct, buffer.as_slice(), offset)?;
                    buffer.clear();
                    // A full return queue only means the writer has buffers enough.
                    let _ = give_back.try_send(buffer);
                }
                Ok(())
            })?;
        Ok(Self {
            full,
            emptied: Mutex::new(emptied),
            thread,
        })
    }

    /// Closes the queue and waits for the buffers in it to be written.
    fn finish(self) -> io::Result<()> {
        drop(self.full);
        self.thread.join().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the staged file's writing thread panicked",
            ))
        })
    }
}

/// Writes `bytes` (whole blocks, aligned in memory) at `offset` through `direct` while the
/// filesystem takes direct writes, else (and from then on) through `file`.
fn write_block(
    file: &File,
    direct: &mut Option<File>,
    bytes: &[u8],
    offset: u64,
) -> io::Result<()> {
    match direct
        .as_ref()
        .map(|direct| direct.write_all_at(bytes, offset))
    {
        Some(Ok(())) => Ok(()),
        // Refused (a filesystem that opens with O_DIRECT but cannot do it, a device with
        // larger blocks): this and the rest go through the page cache.
        Some(Err(e)) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
            *direct = None;
            file.write_all_at(bytes, offset)
        }
        Some(Err(e)) => Err(e),
        None => file.write_all_at(bytes, offset),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;

    /// A new temp file in `dir`, with its direct descriptor where the filesystem allows it.
    fn staged_in(dir: &Path) -> StagedFile {
        let path = dir.join(".tmp-staged");
        let file = File::create_new(&path).expect("create");
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_DIRECT)
            .open(&path)
            .ok();
        StagedFile::new(path, file, direct)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    #[test]
    fn whole_buffers_are_written_behind_and_the_tail_when_published() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut staged = staged_in(dir.path());
        let bytes = pattern(3 * WRITE_SIZE + 1234);
        // Pieces smaller than, equal to and larger than one write.
        let mut rest = bytes.as_slice();
        for piece in [7, 4096, WRITE_SIZE, 300_000, 2 * WRITE_SIZE]
            .into_iter()
            .cycle()
        {
            let (now, later) = rest.split_at(piece.min(rest.len()));
            staged.write_all(now).expect("write");
            rest = later;
            if rest.is_empty() {
                break;
            }
        }
        assert_eq!(staged.len(), bytes.len() as u64);
        assert_eq!(staged.buffer.len(), 1234, "whole buffers were handed over");
        let behind = staged.behind.take().expect("a writing thread started");
        behind.finish().expect("the full buffers were written");
        let on_disk = fs::metadata(staged.path()).expect("stat").len();
        assert_eq!(
            on_disk,
            3 * WRITE_SIZE as u64,
            "only whole buffers go early"
        );
        let (path, file) = staged.into_parts().expect("not published").expect("tail");
        drop(file);
        assert_eq!(fs::read(&path).expect("read"), bytes);
    }

    #[test]
    fn a_file_smaller_than_a_buffer_starts_no_thread() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut staged = staged_in(dir.path());
        staged.write_all(&pattern(WRITE_SIZE - 1)).expect("write");
        assert!(staged.behind.is_none());
        let (path, _file) = staged.into_parts().expect("not published").expect("tail");
        assert_eq!(fs::read(&path).expect("read"), pattern(WRITE_SIZE - 1));
    }

    #[test]
    fn a_failing_write_behind_is_reported_and_the_temp_file_removed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(".tmp-staged");
        let file = File::create_new(&path).expect("create");
        // A read-only descriptor fails with EBADF, which is not a refusal of direct I/O.
        let read_only = File::open(&path).expect("open");
        let mut staged = StagedFile::new(path.clone(), file, Some(read_only));
        // The write fails behind the caller: reported by a later write or at publishing.
        let mut failure = None;
        for _ in 0..QUEUED_WRITES + 3 {
            if let Err(e) = staged.write_all(&pattern(WRITE_SIZE)) {
                failure = Some(e);
                break;
            }
        }
        let error = match failure {
            Some(e) => {
                drop(staged);
                e
            }
            None => staged
                .into_parts()
                .expect("not published")
                .expect_err("the direct write fails"),
        };
        assert_eq!(error.raw_os_error(), Some(nix::libc::EBADF), "{error}");
        assert!(!path.exists(), "the temp file was removed");
    }

    #[test]
    fn a_dropped_file_waits_for_its_writes_and_removes_itself() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut staged = staged_in(dir.path());
        let path = staged.path().to_owned();
        staged.write_all(&pattern(3 * WRITE_SIZE)).expect("write");
        drop(staged);
        assert!(!path.exists());
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }
}
