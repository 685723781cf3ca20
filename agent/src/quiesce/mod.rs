//! Making a source consistent before it is read: hook commands, filesystem freezes and
//! filesystem snapshots.
//!
//! [`hook`] runs commands with a timeout and keeps their output; [`freeze`](mod@freeze)
//! freezes a mounted filesystem with a thaw that survives the agent's death; [`btrfs`]
//! makes a read-only snapshot of a subvolume to back up from. The job runner
//! ([`crate::job`]) puts them in order around a backup.

pub mod btrfs;
pub mod freeze;
pub mod hook;

pub use btrfs::{BtrfsSnapshot, snapshot as btrfs_snapshot};
pub use freeze::{Frozen, WatchdogCommand, check_freezable, freeze, thaw_mount, watchdog};
pub use hook::{HookRun, run_hook};
