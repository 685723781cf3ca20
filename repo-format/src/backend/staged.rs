//! Objects written piece by piece into a store's staging area and named when complete
//! (see [`Backend::stage`](super::Backend::stage)): a pack's name is the hash of all its
//! bytes, so a store that can hold the bytes on disk meanwhile spares the writer holding a
//! whole pack in memory.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A temp file in a store's staging area. Dropped before it is published, it removes itself.
#[derive(Debug)]
pub struct StagedFile {
    path: PathBuf,
    /// `None` once handed to the store for publishing.
    file: Option<File>,
    written: u64,
}

impl StagedFile {
    /// Wraps a freshly created temp file at `path`.
    pub(crate) fn new(path: PathBuf, file: File) -> Self {
        Self {
            path,
            file: Some(file),
            written: 0,
        }
    }

    /// Appends `bytes`.
    pub fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the staged file was already published"));
        };
        file.write_all(bytes)?;
        self.written += bytes.len() as u64;
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

    /// Hands the file and its temp path to the store that publishes it; from now on the
    /// store removes the temp name.
    pub(crate) fn into_parts(mut self) -> Option<(PathBuf, File)> {
        let file = self.file.take()?;
        Some((std::mem::take(&mut self.path), file))
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
