//! What a prune run is doing, as it happens: for progress displays and logs.

/// One step of a prune run. A run reports, in this order: [`Listing`](Self::Listing),
/// [`ReadingIndex`](Self::ReadingIndex) per segment, [`WalkingSnapshots`](Self::WalkingSnapshots)
/// per snapshot, [`Deciding`](Self::Deciding); carrying the plan out then reports
/// [`Repacking`](Self::Repacking) per pack, a second listing, reading and walking when
/// due plans are decided on a fresh view, [`WritingIndex`](Self::WritingIndex),
/// [`Deleting`](Self::Deleting) per pack and [`Done`](Self::Done). Counters start at 0 and
/// end at their total.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PruneEvent {
    /// Listing snapshots, index segments and packs.
    Listing,
    /// `done` of `total` index segments read.
    ReadingIndex {
        /// Segments read so far.
        done: usize,
        /// Segments to read.
        total: usize,
    },
    /// `done` of `total` snapshots walked; `used_blobs` reachable so far.
    WalkingSnapshots {
        /// Snapshots walked so far.
        done: usize,
        /// Snapshots to walk.
        total: usize,
        /// Distinct blobs found reachable so far.
        used_blobs: usize,
    },
    /// Deciding which packs to condemn, repack and delete.
    Deciding,
    /// `done` of `total` packs repacked (`bytes` of `total_bytes` pack bytes).
    Repacking {
        /// Packs repacked so far.
        done: usize,
        /// Packs to repack.
        total: usize,
        /// Bytes of the packs repacked so far.
        bytes: u64,
        /// Bytes of all packs to repack.
        total_bytes: u64,
    },
    /// Writing `segments` merged index segments (without the packs about to go).
    WritingIndex {
        /// Segments being replaced.
        segments: usize,
    },
    /// `done` of `total` packs deleted (`bytes` freed so far).
    Deleting {
        /// Packs deleted so far.
        done: usize,
        /// Packs to delete.
        total: usize,
        /// Bytes freed so far.
        bytes: u64,
    },
    /// The run is over.
    Done,
}

impl PruneEvent {
    /// A short name for the phase (`"listing"`, `"reading-index"`, `"walking"`,
    /// `"deciding"`, `"repacking"`, `"writing-index"`, `"deleting"`, `"done"`).
    pub fn phase(&self) -> &'static str {
        match self {
            PruneEvent::Listing => "listing",
            PruneEvent::ReadingIndex { .. } => "reading-index",
            PruneEvent::WalkingSnapshots { .. } => "walking",
            PruneEvent::Deciding => "deciding",
            PruneEvent::Repacking { .. } => "repacking",
            PruneEvent::WritingIndex { .. } => "writing-index",
            PruneEvent::Deleting { .. } => "deleting",
            PruneEvent::Done => "done",
        }
    }
}

/// Receives a prune run's events (a closure `FnMut(&PruneEvent)` is one). Called on the
/// thread running the prune; keep it quick.
pub trait PruneProgress {
    /// One event.
    fn event(&mut self, event: &PruneEvent);
}

impl<F: FnMut(&PruneEvent)> PruneProgress for F {
    fn event(&mut self, event: &PruneEvent) {
        self(event)
    }
}

/// Progress that goes nowhere.
pub(super) fn ignore(_: &PruneEvent) {}
