//! Bunker's repository format.
//!
//! Everything that is stored, and how it is read and written: keys and sealing
//! ([`crypto`]), content-defined chunking, sealed blobs in immutable packs, index segments,
//! directory [`tree`]s and snapshots, and the storage [`backend`]s that hold them.
//! `docs/FORMAT.md` specifies every object byte by byte.

pub mod aligned;
pub mod audit;
pub mod backend;
pub mod blob;
pub mod check;
pub mod chunker;
pub mod codec;
pub mod compress;
pub mod config;
pub mod config_repair;
pub mod crypto;
mod error;
pub mod forget_marker;
pub mod gc;
pub mod gc_plan;
mod id;
pub mod index;
pub mod keyfile;
pub mod keyslot;
pub mod object;
pub mod object_lock;
pub mod pack;
pub mod prune;
pub mod recover;
pub mod repair;
pub mod replace;
mod repository;
pub mod retag;
pub mod retention;
pub mod salvage;
pub mod session;
pub mod snapshot;
pub mod tree;

pub use blob::BlobKind;
pub use error::{Error, Result};
pub use id::{AuditId, BlobId, ID_LEN, IndexId, KeySlotId, PackId, SnapshotId, content_hash};
pub use repository::{BlobWriter, InitOptions, LoadedIndex, Repository, SealedBlob, WriteStats};
