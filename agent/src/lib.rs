//! What runs on a host: the backup pipeline, the restorer and the platform layer beneath them.
//!
//! - [`backup`] walks source paths and writes blobs, trees and a snapshot.
//! - [`restore`] brings a snapshot, or a path in it, back into a directory.
//! - [`navigate`] finds paths inside a snapshot and walks its trees (for `ls`).
//! - [`platform`] is the only module that talks to the operating system about file
//!   metadata: it captures an entry's [`Metadata`](bunker_repo_format::tree::Metadata)
//!   without following symlinks, finds the data regions of sparse files, and recreates
//!   special files, symlinks, ownership, permissions, extended attributes and timestamps.
//! - [`progress`] holds the counters a caller polls to show a long operation's progress.
//! - [`Cancel`] lets a signal handler stop a long operation at a safe point.

pub mod backup;
mod cancel;
pub mod navigate;
pub mod platform;
pub mod progress;
pub mod restore;

pub use cancel::Cancel;
