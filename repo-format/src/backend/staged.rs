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

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::aligned::AlignedBuffer;

/// Bytes per write: a multiple of [`crate::aligned::ALIGN`]. Direct writes of 1 MiB came
/// within 10% of 4 MiB ones with `dd` on the benchmark machine.
pub(crate) const WRITE_SIZE: usize = 1 << 20;

/// A temp file in a store's staging area. Dropped before it is published, it removes itself.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    /// `None` once handed to the store for publishing.
    file: Option<File>,
    /// The temp file opened again with `O_DIRECT`, while the filesystem takes direct writes.
    direct: Option<File>,
    /// Bytes not written yet; they go at `written - buffer.len()`.
    buffer: AlignedBuffer,
    written: u64,
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
        }
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            return Err(io::Error::other("the staged file was already published"));
        }
        while !bytes.is_empty() {
            let taken = self.buffer.append(bytes);
            bytes = &bytes[taken..];
            self.written += taken as u64;
            if self.buffer.is_full() {
                self.write_buffer()?;
            }
        }
        Ok(())
    }

    /// Writes the buffered bytes: directly while the filesystem takes it (a full buffer is
    /// whole blocks), else, and for the last partial buffer, through the page cache.
    fn write_buffer(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let pending = self.buffer.as_slice();
        let offset = self.written - pending.len() as u64;
        let direct = self.direct.as_ref().filter(|_| self.buffer.is_full());
        match direct.map(|direct| direct.write_all_at(pending, offset)) {
            Some(Ok(())) => {}
            // Refused (a filesystem that opens with O_DIRECT but cannot do it, a device
            // with larger blocks): this and the rest go through the page cache.
            Some(Err(e)) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                self.direct = None;
                file.write_all_at(pending, offset)?;
            }
            Some(Err(e)) => return Err(e),
            None => file.write_all_at(pending, offset)?,
        }
        self.buffer.clear();
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.written
    }

    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.written == 0
    }

    /// Writes what is still buffered, then hands the file and its temp path to the store
    /// that publishes it; from now on the store removes the temp name. `None` if it was
    /// handed over already.
    pub(crate) fn into_parts(mut self) -> Option<io::Result<(PathBuf, File)>> {
        if let Err(e) = self.write_buffer() {
            return Some(Err(e));
        }
        let file = self.file.take()?;
        Some(Ok((std::mem::take(&mut self.path), file)))
    }

    /// Where the temp file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            // Never published: the temp name was the only reference to these bytes.
            let _ = fs::remove_file(&self.path);
        }
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
    fn whole_buffers_are_written_directly_and_the_tail_when_published() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut staged = staged_in(dir.path());
        let direct = staged.direct.is_some();
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
        let on_disk = fs::metadata(staged.path()).expect("stat").len();
        if direct {
            assert!(staged.direct.is_some(), "direct writes were given up");
        }
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
    fn a_failing_direct_write_is_reported() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(".tmp-staged");
        let file = File::create_new(&path).expect("create");
        // A read-only descriptor fails with EBADF, which is not a refusal of direct I/O.
        let read_only = File::open(&path).expect("open");
        let mut staged = StagedFile::new(path, file, Some(read_only));
        let error = staged
            .write_all(&pattern(WRITE_SIZE + 1))
            .expect_err("the direct write fails");
        assert_eq!(error.raw_os_error(), Some(nix::libc::EBADF));
    }
}
