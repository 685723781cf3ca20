//! Storage backends: where a repository's objects live.
//!
//! A backend stores immutable objects under `/`-separated names (`config`, `keys/<hex>`,
//! `data/<2 hex>/<hex>`, ...). The trait is deliberately small and shaped like
//! `object_store`'s: create-only put, whole and ranged get, head, list by prefix, delete.
//! Cross-cutting behaviour (retries, limits, fault injection) wraps a backend in another
//! implementation of the same trait. Every implementation must pass
//! [`testing::conformance`].

pub mod dry_run;
pub mod fault;
mod local;
pub mod lock;
mod memory;
pub mod metadata_cache;
pub(crate) mod staged;
pub mod testing;
pub mod throttle;

pub use dry_run::DryRunBackend;
pub use local::LocalBackend;
pub use lock::{LockMode, LockPolicy};
pub use memory::MemoryBackend;
pub use metadata_cache::MetadataCache;
pub use staged::StagedFile;
pub use throttle::{BandwidthLimits, ThrottledBackend};

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::SystemTime;

use crate::error::Result;

/// Name, size and storage time of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Full object name, e.g. `data/ab/ab12...`.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was written, on the storage's clock (file mtime, S3 Last-Modified).
    /// Garbage collection measures grace periods and session liveness with it, never with
    /// a client's clock.
    pub modified: SystemTime,
}

/// How a restore should read from a backend: coalesced range sizes and how many wait.
///
/// A remote store pays a round trip per request, so it gets few large reads; a local
/// directory answers from the page cache, so smaller reads cost nothing and keep memory low.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadHints {
    /// Largest coalesced range read (one larger blob is still read whole).
    pub max_read: u64,
    /// Range reads in flight at once.
    pub parallel_reads: usize,
    /// Fetched ranges that may wait for the consumer.
    pub queue_depth: usize,
    /// Read a tree pack whole on its first tree and answer the pack's next trees from
    /// memory (a walk reads a snapshot's trees one by one, mostly from few packs).
    pub whole_tree_packs: bool,
    /// Small objects (index segments, snapshots) read at once when loading many.
    pub small_reads: usize,
}

impl ReadHints {
    /// For stores reached over a network (S3): 8 MiB reads, four at once and four waiting,
    /// whole tree packs, eight small objects at once.
    pub const REMOTE: ReadHints = ReadHints {
        max_read: 8 << 20,
        parallel_reads: 4,
        queue_depth: 4,
        whole_tree_packs: true,
        small_reads: 8,
    };
    /// For a local directory: 2 MiB reads, two at once and two waiting, trees read as
    /// ranges, two small objects at once (their decoding is the cost). More reads at once
    /// only held more fetched bytes: a vol restore peaked 10-20 MB higher with four. Reads
    /// from a disk overlap through [`Backend::will_read`] instead, which costs no memory.
    pub const LOCAL: ReadHints = ReadHints {
        max_read: 2 << 20,
        parallel_reads: 2,
        queue_depth: 2,
        whole_tree_packs: false,
        small_reads: 2,
    };
}

/// Pack uploads in flight for a store reached over a network (see [`Backend::put_concurrency`]).
pub const PUT_CONCURRENCY_REMOTE: usize = 2;

/// An object store holding a repository.
///
/// Contracts every implementation keeps:
/// - `put_if_absent` never overwrites: if `name` exists it fails with
///   [`Error::AlreadyExists`](crate::Error::AlreadyExists) (or succeeds, when the object
///   holds exactly the same bytes) and leaves the object as it was.
///   It returns only once the object is durable, and readers never see a partial object.
/// - `get`, `get_range` and `head` fail with [`Error::NotFound`](crate::Error::NotFound) for
///   a missing object; `get_range` fails with `Corrupt` when the range runs past the end.
/// - `list` returns every object whose name starts with `prefix`, in no particular order.
/// - `delete` of a missing object succeeds (deletes are idempotent).
/// - A store that stages objects ([`Backend::stage`]) publishes them with the guarantees of
///   `put_if_absent`.
pub trait Backend: Send + Sync + Debug {
    /// Where the repository lives, for messages (`/srv/backup`, `s3://bucket/prefix`).
    fn location(&self) -> String;

    /// How restores should read from this store ([`ReadHints::REMOTE`] unless overridden).
    fn read_hints(&self) -> ReadHints {
        ReadHints::REMOTE
    }

    /// How many large puts (packs) a writer should have in flight at once. A remote store
    /// needs several to fill its bandwidth (each request waits a round trip and its
    /// throughput is limited per connection); a local directory one, since every put ends
    /// in an fsync that others would only queue behind. Each one in flight holds a pack in
    /// memory. [`PUT_CONCURRENCY_REMOTE`] unless overridden.
    fn put_concurrency(&self) -> usize {
        PUT_CONCURRENCY_REMOTE
    }

    /// Stores `bytes` under `name` unless an object of that name exists: then
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists), or success when the object holds exactly `bytes` (a store
    /// that retries a write whose answer was lost cannot tell its own first attempt from
    /// another writer's identical object; sealed objects never repeat their bytes).
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()>;

    /// [`Backend::put_if_absent`] taking the bytes by value, for a store that hands them on
    /// (to an HTTP body) and would otherwise copy them: a pack is 16 MiB of fresh pages.
    fn put_if_absent_owned(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.put_if_absent(name, &bytes)
    }

    /// [`Backend::put_if_absent_owned`] for an object the caller may stop waiting for (a
    /// pack, which nothing references until it is indexed): once `abandon` is set, a store
    /// whose puts take long (S3 on a slow uplink) stops waiting for the answer and fails
    /// with [`Error::Abandoned`](crate::Error::Abandoned). Whether the object was stored is
    /// then unknown; an unindexed pack is removed by a later prune. A local directory,
    /// whose puts are a write and an fsync, finishes them (the default).
    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        let _ = abandon;
        self.put_if_absent_owned(name, bytes)
    }

    /// Starts an object to be written piece by piece and named once complete, under
    /// `prefix` (`data/`), for a store that can hold it outside memory meanwhile (a local
    /// directory: a temp file in that directory). `None`, the default: the writer keeps the
    /// bytes and stores them with [`Backend::put_if_absent_owned`].
    fn stage(&self, prefix: &str) -> Result<Option<StagedFile>> {
        let _ = prefix;
        Ok(None)
    }

    /// Stores a staged object under `name` with the guarantees of
    /// [`Backend::put_if_absent`]: `AlreadyExists` if the name is taken, durable on return.
    /// The staged bytes are gone either way.
    fn publish(&self, staged: StagedFile, name: &str) -> Result<()> {
        drop(staged);
        Err(crate::Error::Unsupported {
            object: name.to_owned(),
            what: format!("staged writes into {}", self.location()),
        })
    }

    /// Reads a whole object.
    fn get(&self, name: &str) -> Result<Vec<u8>>;

    /// Reads `length` bytes starting at `offset`.
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>>;

    /// Like [`Backend::get_range`], for bytes the caller only reads (decrypts): a backend
    /// that reads local files puts them where memory and offset agree modulo
    /// [`READ_ALIGN`](crate::chunker::READ_ALIGN), which the kernel copies faster.
    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        self.get_range(name, offset, length).map(ReadBytes::from)
    }

    /// [`Backend::get_range_to_read`] for a read the caller may stop waiting for (a
    /// restore's): once `abandon` is set, a store whose reads take long (S3 on a slow
    /// downlink) stops waiting and fails with [`Error::Abandoned`](crate::Error::Abandoned).
    /// A local directory finishes the read (the default).
    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        let _ = abandon;
        self.get_range_to_read(name, offset, length)
    }

    /// A hint that `length` bytes at `offset` of `name` will be read soon. A store that can
    /// start fetching them without holding them in this process's memory does (a local
    /// directory has the kernel read them into its page cache); the default does nothing.
    /// Never fails: a wrong hint only costs the read it started.
    fn will_read(&self, name: &str, offset: u64, length: u64) {
        let _ = (name, offset, length);
    }

    /// Size of an object.
    fn head(&self, name: &str) -> Result<ObjectMeta>;

    /// Every object whose name starts with `prefix`.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Temp files that writers of this store left behind, as `ObjectMeta` whose name is the
    /// temp file's path in the store (`data/.tmp-…`; never an object name). A store whose
    /// puts are atomic has none: the default. A crashed writer leaves them; only
    /// [`Backend::remove_temp`] deletes them, and garbage collection decides when.
    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        Ok(Vec::new())
    }

    /// Removes a temp file [`Backend::list_temps`] returned; succeeds if it is already gone.
    fn remove_temp(&self, name: &str) -> Result<()> {
        Err(crate::Error::Unsupported {
            object: name.to_owned(),
            what: format!("temp files in {}", self.location()),
        })
    }

    /// Removes an object; succeeds if it is already gone. A locked object (see
    /// [`Backend::retained_until`]) is refused with [`Error::Locked`](crate::Error::Locked).
    fn delete(&self, name: &str) -> Result<()>;

    /// From now on, writes every new object locked under `policy` (retained at least
    /// `policy.period` after its write). Backends that cannot lock refuse with
    /// [`Error::Unsupported`](crate::Error::Unsupported), as do buckets without Object Lock.
    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        Err(crate::Error::Unsupported {
            object: self.location(),
            what: format!(
                "Object Lock ({} mode): this storage cannot lock objects",
                policy.mode
            ),
        })
    }

    /// Until when `name` is locked against deletion, or `None` if it is not locked (or its
    /// lock has no date). Fails with `NotFound` for a missing object.
    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        self.head(name).map(|_| None)
    }

    /// Moves the lock of `name` forward to `until` (never backward: an earlier `until` than
    /// the current date leaves the lock as it is).
    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        let _ = until;
        Err(crate::Error::Unsupported {
            object: name.to_owned(),
            what: format!(
                "extending a lock in {}: this storage cannot lock objects",
                self.location()
            ),
        })
    }
}

/// Bytes read from an object ([`Backend::get_range_to_read`]), which may start past the
/// front of their allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadBytes {
    storage: Vec<u8>,
    start: usize,
}

impl ReadBytes {
    /// The bytes at `start..` of `storage` (all of them when `start` is past the end).
    pub fn new(storage: Vec<u8>, start: usize) -> Self {
        let start = start.min(storage.len());
        Self { storage, start }
    }
}

impl From<Vec<u8>> for ReadBytes {
    fn from(storage: Vec<u8>) -> Self {
        Self { storage, start: 0 }
    }
}

impl std::ops::Deref for ReadBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.storage[self.start..]
    }
}

impl<B: Backend + ?Sized> Backend for Arc<B> {
    fn location(&self) -> String {
        (**self).location()
    }
    fn read_hints(&self) -> ReadHints {
        (**self).read_hints()
    }
    fn put_concurrency(&self) -> usize {
        (**self).put_concurrency()
    }
    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        (**self).put_if_absent(name, bytes)
    }
    fn put_if_absent_owned(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        (**self).put_if_absent_owned(name, bytes)
    }
    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        (**self).put_if_absent_abandoning(name, bytes, abandon)
    }
    fn stage(&self, prefix: &str) -> Result<Option<StagedFile>> {
        (**self).stage(prefix)
    }
    fn publish(&self, staged: StagedFile, name: &str) -> Result<()> {
        (**self).publish(staged, name)
    }
    fn get(&self, name: &str) -> Result<Vec<u8>> {
        (**self).get(name)
    }
    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        (**self).get_range(name, offset, length)
    }
    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        (**self).get_range_to_read(name, offset, length)
    }
    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        (**self).get_range_to_read_abandoning(name, offset, length, abandon)
    }
    fn will_read(&self, name: &str, offset: u64, length: u64) {
        (**self).will_read(name, offset, length);
    }
    fn head(&self, name: &str) -> Result<ObjectMeta> {
        (**self).head(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix)
    }
    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        (**self).list_temps()
    }
    fn remove_temp(&self, name: &str) -> Result<()> {
        (**self).remove_temp(name)
    }
    fn delete(&self, name: &str) -> Result<()> {
        (**self).delete(name)
    }
    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        (**self).enable_lock(policy)
    }
    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        (**self).retained_until(name)
    }
    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        (**self).extend_retention(name, until)
    }
}

/// Checks that an object name is one a backend may store: non-empty `/`-separated segments
/// of ASCII letters, digits, `-`, `_` and `.`, none of them `.` or `..`.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        });
    if ok {
        Ok(())
    } else {
        Err(crate::Error::Invalid(format!(
            "invalid object name {name:?}"
        )))
    }
}
