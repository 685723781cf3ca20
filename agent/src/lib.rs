//! What runs on a host: the backup pipeline, the restorer and the platform layer beneath them.
//!
//! - [`backup`] walks source paths (or reads a block device or image in fixed chunks) and
//!   writes blobs, trees and a snapshot.
//! - [`restore`] brings a snapshot, or a path in it, back into a directory, a volume back
//!   onto a device or image, or streams one file in order.
//! - [`navigate`] finds paths inside a snapshot and walks its trees (for `ls`); [`diff`]
//!   compares two snapshots, or two paths in them; [`find`] searches snapshots for names
//!   or paths.
//! - [`platform`] is the only module that talks to the operating system about file
//!   metadata: it captures an entry's [`Metadata`](bunker_repo_format::tree::Metadata)
//!   without following symlinks, finds the data regions of sparse files, and recreates
//!   special files, symlinks, ownership, permissions, extended attributes and timestamps.
//! - [`policy`] reads the agent's policy file; [`schedule`] evaluates its cron schedules.
//! - [`job`] runs one policy source: hooks, [`quiesce`] (freeze, commands), backup, retention.
//! - [`daemon`] schedules sources (`bunker-agent run`), keeps state, journal and metrics.
//! - [`json_lines`] appends to logs of JSON lines that several processes share.
//! - [`drill`] runs a restore drill: verify, fsck, read-only mount, a temporary database
//!   server with smoke SQL, smoke command, audit record.
//! - [`verify`] restores a snapshot into a fresh target and proves it byte for byte.
//! - [`lease`] records self-service restores that expire, checks restore roots and
//!   removes expired restore targets.
//! - [`cache_dirs`] keeps this host's per-repository cache directories (files cache,
//!   rolling check state) and finds those no longer used.
//! - [`progress`] holds the counters a caller polls to show a long operation's progress.
//! - [`Cancel`] lets a signal handler stop a long operation at a safe point; [`supervise`]
//!   stops the child processes of a job whose time is up or that was cancelled.

pub mod backup;
pub mod cache_dirs;
mod cancel;
pub mod copy;
pub mod daemon;
pub mod deep_stack;
pub mod diff;
pub mod drill;
pub mod find;
pub mod job;
pub mod json_lines;
pub mod lease;
pub mod mount;
pub mod navigate;
mod permits;
pub mod platform;
pub mod policy;
pub mod progress;
pub mod quiesce;
pub mod restore;
pub mod rewrite;
pub mod schedule;
pub mod stats;
pub mod supervise;
pub mod verify;

pub use cancel::{Cancel, Deadline};
