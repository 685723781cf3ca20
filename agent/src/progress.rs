//! Live progress of a long operation: counters the library updates as it goes and a caller
//! reads whenever it wants to show them (a bar, JSON lines). The library never prints.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared between an operation and its observer. All updates are relaxed atomics:
/// cheap enough to bump per file.
#[derive(Debug, Default)]
pub struct Progress {
    files: AtomicU64,
    bytes: AtomicU64,
    bytes_read: AtomicU64,
    expected_files: AtomicU64,
    expected_bytes: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressSnapshot {
    /// Files done (read, or taken unchanged).
    pub files: u64,
    /// Bytes of the files done.
    pub bytes: u64,
    /// Bytes actually read from the source.
    pub bytes_read: u64,
    /// Files expected in total, 0 when unknown (the parent snapshot's count).
    pub expected_files: u64,
    /// Bytes expected in total, 0 when unknown.
    pub expected_bytes: u64,
}

impl Progress {
    /// All counters at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the expected totals (an estimate: the operation may do more or less).
    pub fn expect(&self, files: u64, bytes: u64) {
        self.expected_files.store(files, Ordering::Relaxed);
        self.expected_bytes.store(bytes, Ordering::Relaxed);
    }

    /// One more file of `bytes` bytes done.
    pub fn file_done(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `bytes` more done without finishing a file (a restore writes blobs, not files).
    pub fn bytes_done(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// `files` more done whose bytes were counted already (or have none).
    pub fn files_done(&self, files: u64) {
        self.files.fetch_add(files, Ordering::Relaxed);
    }

    /// `bytes` more read from the source.
    pub fn read(&self, bytes: u64) {
        self.bytes_read.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ProgressSnapshot {
        ProgressSnapshot {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            expected_files: self.expected_files.load(Ordering::Relaxed),
            expected_bytes: self.expected_bytes.load(Ordering::Relaxed),
        }
    }
}
