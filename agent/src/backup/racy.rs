//! Racy timestamps: when a file's recorded identity can be trusted by the next backup.
//!
//! A filesystem stamps a write with a clock that advances in ticks (a few milliseconds on
//! Linux's own filesystems, whole seconds on some, two on FAT). A file written again in
//! the tick in which a backup read it keeps the size-and-times identity the backup
//! recorded, so the next backup would take it as unchanged and never store the new
//! content. A file whose modification time is older than the backup by more than a tick
//! cannot be caught so: any later write stamps it with a later time.
//!
//! So an identity is trusted only when its modification time is at least [`SETTLE`] before
//! the backup that recorded it started (Git calls the others "racily clean" and checks
//! their content). The parent snapshot's entries are judged against the parent's time, and
//! the files cache keeps no entry that is not settled. A file written in the two seconds
//! before a backup is read again by the next one: a small cost for never missing a write.
//!
//! The clock compared is the backup host's; a network filesystem stamps files with its
//! server's. A server clock behind the client's by more than [`SETTLE`] defeats the check
//! (as it defeats every tool's), one ahead of it only makes more files read again. A parent
//! snapshot is judged by its recorded time: one given a `--time` later than it was taken
//! is trusted as of then.

use std::time::Duration;

use bunker_repo_format::tree::{Metadata, Timestamp};

/// How long before a backup's start a file's last write must be for its identity to be
/// trusted: the coarsest timestamp resolution in use (FAT's two seconds).
pub const SETTLE: Duration = Duration::from_secs(2);

/// The moments before which modification times count as settled, for the entries a backup
/// records and for those its parent snapshot recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Settled {
    /// This backup's: entries recorded with a later time stay out of the files cache.
    this_backup: Timestamp,
    /// The parent snapshot's: its entries with a later time are not trusted.
    parent: Option<Timestamp>,
}

impl Settled {
    /// Cut-offs for a backup that started at `started` (the earlier of the clock at its
    /// start and the moment its filesystem snapshot was taken) whose parent snapshot, if
    /// any, was taken at `parent`.
    pub(super) fn new(started: Timestamp, parent: Option<Timestamp>) -> Self {
        Self {
            this_backup: before(started),
            parent: parent.map(before),
        }
    }

    /// True when `meta`, recorded by this backup, may go into the files cache.
    pub(super) fn recordable(&self, meta: &Metadata) -> bool {
        meta.mtime < self.this_backup
    }

    /// True when `meta`, recorded by the parent snapshot, may stand for the file now.
    pub(super) fn trusted_in_parent(&self, meta: &Metadata) -> bool {
        self.parent.is_some_and(|cutoff| meta.mtime < cutoff)
    }
}

/// `time` moved back by [`SETTLE`].
fn before(time: Timestamp) -> Timestamp {
    let settle = i64::try_from(SETTLE.as_secs()).unwrap_or(i64::MAX);
    Timestamp {
        sec: time.sec.saturating_sub(settle),
        nsec: time.nsec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modified_at(sec: i64, nsec: u32) -> Metadata {
        Metadata {
            mtime: Timestamp { sec, nsec },
            ..Metadata::default()
        }
    }

    #[test]
    fn a_write_within_the_settle_time_is_not_trusted() {
        let started = Timestamp {
            sec: 1_000,
            nsec: 500,
        };
        let settled = Settled::new(started, Some(started));
        for racy in [
            modified_at(998, 500),
            modified_at(999, 0),
            modified_at(1_000, 500),
            modified_at(5_000, 0),
        ] {
            assert!(!settled.recordable(&racy), "{:?}", racy.mtime);
            assert!(!settled.trusted_in_parent(&racy), "{:?}", racy.mtime);
        }
        for old in [modified_at(998, 499), modified_at(10, 0)] {
            assert!(settled.recordable(&old), "{:?}", old.mtime);
            assert!(settled.trusted_in_parent(&old), "{:?}", old.mtime);
        }
    }

    #[test]
    fn without_a_parent_nothing_in_it_is_trusted() {
        let settled = Settled::new(Timestamp { sec: 100, nsec: 0 }, None);
        assert!(!settled.trusted_in_parent(&modified_at(1, 0)));
    }
}
