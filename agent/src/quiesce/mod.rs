//! Making a source consistent before it is read: hook commands and filesystem freezes.
//!
//! [`hook`] runs commands with a timeout and keeps their output; [`freeze`] freezes a
//! mounted filesystem with a thaw that survives the agent's death. The job runner
//! ([`crate::job`]) puts them in order around a backup.

pub mod freeze;
pub mod hook;

pub use freeze::{Frozen, WatchdogCommand, freeze, thaw_mount, watchdog};
pub use hook::{HookRun, run_hook};
