//! An open repository: keys unlocked, config read, objects typed.
//!
//! [`Repository::init`] and [`Repository::open`] give a `Repository`; reading goes through
//! [`Repository::read_blob`], [`Repository::load_tree`] and the snapshot functions, writing
//! through a [`BlobWriter`] and [`Repository::save_snapshot`]. The write order is strict:
//! packs, then index segments, then the snapshot, whose write is the only commit point.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::backend::{Backend, MetadataCache};
use crate::blob::{BlobKind, open_blob};
use crate::chunker::Chunker;
use crate::config::{CONFIG_NAME, Config, ConfigHeader, FeatureFlags, Operation, RepositoryParams};
use crate::crypto::{AccessKey, MasterKey, SealingSession, SymmetricKey, WriterKey};
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, KeySlotId, PackId, SnapshotId};
use crate::index::{
    BlobLocation, Index, IndexSegment, IndexedPack, decode_segment, decode_segment_ids,
    encode_segment,
};
use crate::keyfile::KeyFile;
use crate::keyslot::{KdfParams, KeySlot, KeySlotInfo};
use crate::object::{ObjectKind, SESSION_HEADER_LEN, verify_content_hash};
use crate::snapshot::Snapshot;
use crate::tree::Tree;

pub(crate) mod fan_out;
mod tree_packs;
mod writer;

/// Blobs per index segment: a writer flushes a segment once it has this many unindexed
/// blobs, and prune and repair split the segments they write at this size.
pub(crate) const SEGMENT_BLOBS: usize = 100_000;

pub use writer::{BlobWriter, SealedBlob, WriteStats};

/// Options for [`Repository::init`].
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Chunker, pack and compression parameters.
    pub params: RepositoryParams,
    /// Argon2id cost for the first key slot and the default for later ones.
    pub kdf: KdfParams,
    /// Metadata of the first key slot.
    pub slot_info: KeySlotInfo,
}

/// The index as loaded, with the segments that could not be read.
#[derive(Debug, Default)]
pub struct LoadedIndex {
    /// Every blob of every readable segment.
    pub index: Index,
    /// Segments that are damaged, each with its error.
    pub damaged: Vec<(IndexId, Error)>,
    /// Segments read.
    pub segments: Vec<IndexId>,
}

/// An unlocked repository.
#[derive(Debug)]
pub struct Repository {
    /// What reads and writes go through: the store, or a [`MetadataCache`] over it.
    backend: Arc<dyn Backend>,
    /// The store itself.
    store: Arc<dyn Backend>,
    /// Copies of metadata kept on this host, if any (also when reads bypass them).
    copies: Option<Arc<MetadataCache>>,
    config: Config,
    key: AccessKey,
    slot: Option<KeySlotId>,
    chunker: Chunker,
    pack_keys: Mutex<HashMap<PackId, SymmetricKey>>,
    tree_packs: tree_packs::TreePackCache,
}

/// Audit records that open (oldest first) and names of objects under `audit/` that do not.
pub type AuditListing = (
    Vec<(crate::id::AuditId, crate::audit::AuditRecord)>,
    Vec<String>,
);

/// The id in `name` when it is exactly `prefix` and an id: a listing of an object store
/// is recursive, and a name further down (another repository made inside this one's
/// namespace) is not ours.
pub(crate) fn parse_id<T: std::str::FromStr>(name: &str, prefix: &str) -> Option<T> {
    let hex = name.strip_prefix(prefix)?;
    if hex.contains('/') {
        return None;
    }
    hex.parse().ok()
}

impl Repository {
    /// Creates a repository in an empty backend: the first key slot, then `config` (written
    /// last, so a half-made repository is never taken for a usable one).
    pub fn init(backend: Arc<dyn Backend>, password: &[u8], options: InitOptions) -> Result<Self> {
        Self::init_with_key(backend, password, options, MasterKey::generate())
    }

    /// Creates a repository that shares `writer`'s writer secret (so its blob ids, chunk
    /// boundaries and index key are the same) but has its own data key pair and repository
    /// id: the target of `copy` (FORMAT.md §4.5).
    pub fn init_sharing_writer(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: InitOptions,
        writer: &WriterKey,
    ) -> Result<Self> {
        Self::init_with_key(
            backend,
            password,
            options,
            MasterKey::generate_sharing_writer(writer),
        )
    }

    fn init_with_key(
        backend: Arc<dyn Backend>,
        password: &[u8],
        options: InitOptions,
        key: MasterKey,
    ) -> Result<Self> {
        options.params.validate()?;
        match backend.head(CONFIG_NAME) {
            Ok(_) => {
                return Err(Error::RepositoryExists {
                    location: backend.location(),
                });
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        // A repository that lost only its config still has its index and snapshots (`repair
        // config` rebuilds the config from a key slot): a new config and key over them would
        // leave every stored object sealed for a key no config names. (Key slots alone are
        // what an init that stopped before its config leaves: those do not count.)
        for kind in [ObjectKind::Snapshot, ObjectKind::Index] {
            let prefix = kind.prefix();
            let listed = backend.list(prefix)?;
            if listed
                .iter()
                // (Every kind's id is 32 bytes in hex: one parse fits both.)
                .any(|meta| parse_id::<SnapshotId>(&meta.name, prefix).is_some())
            {
                return Err(Error::RepositoryExists {
                    location: backend.location(),
                });
            }
        }
        if let Some(lock) = options.params.lock {
            // Before the first object: a bucket without Object Lock is refused up front.
            backend.enable_lock(lock)?;
        }
        let config = Config {
            header: ConfigHeader {
                repository_id: crate::crypto::random_array(),
                features: FeatureFlags::for_params(&options.params),
                kdf: options.kdf,
            },
            params: options.params,
        };
        let (slot, slot_bytes) = KeySlot::seal(
            &key,
            &config.header.repository_id,
            password,
            options.kdf,
            &options.slot_info,
        )?;
        let slot_name = ObjectKind::KeySlot.name(&slot.to_hex());
        backend.put_if_absent(&slot_name, &slot_bytes)?;
        backend
            .put_if_absent(CONFIG_NAME, &config.encode(key.writer()))
            .map_err(|e| match e {
                Error::AlreadyExists { .. } => {
                    // Another init won the race: take back this one's key slot (best
                    // effort; a locked one stays, and `open` passes over it).
                    let _ = backend.delete(&slot_name);
                    Error::RepositoryExists {
                        location: backend.location(),
                    }
                }
                other => other,
            })?;
        Self::from_parts(backend, config, AccessKey::Full(key), Some(slot))
    }

    fn read_config(backend: &dyn Backend) -> Result<Vec<u8>> {
        backend.get(CONFIG_NAME).map_err(|e| match e {
            Error::NotFound { .. } => Error::RepositoryNotFound {
                location: backend.location(),
            },
            other => other,
        })
    }

    /// Opens a repository with a key file (full or put-only; FORMAT.md §6a). Fails with
    /// [`Error::KeyFile`] when the key belongs to another repository.
    pub fn open_with_key_file(
        backend: Arc<dyn Backend>,
        key_file: &KeyFile,
        file: &str,
    ) -> Result<Self> {
        let config_bytes = Self::read_config(backend.as_ref())?;
        let (header, _) = Config::decode_header(&config_bytes)?;
        let foreign = || Error::KeyFile {
            file: file.to_owned(),
            reason: format!("belongs to another repository, not {}", backend.location()),
        };
        if header.repository_id != key_file.repository_id {
            return Err(foreign());
        }
        // The key file names this repository: a body that does not open with its key (whose
        // checksum held) is a damaged config, which `repair config` rebuilds; blaming the
        // key file would send the user to write a new one, which fails the same way.
        let config = Config::decode(&config_bytes, key_file.key.writer()).map_err(|e| match e {
            Error::Corrupt { object, reason } => Error::corrupt(
                object,
                format!(
                    "{reason} (the key file {file} names this repository: the config is \
                     damaged, or the key file is not this repository's own)"
                ),
            ),
            other => other,
        })?;
        Self::from_parts(backend, config, key_file.key.clone(), None)
    }

    /// This repository's key as a key file: the full key, or with `put_only` only what a
    /// writer needs. Exporting the full key needs the full key.
    pub fn key_file(&self, put_only: bool) -> Result<KeyFile> {
        let key = if put_only {
            AccessKey::PutOnly(self.key.writer().clone())
        } else {
            AccessKey::Full(self.key.master("exporting the full key")?.clone())
        };
        Ok(KeyFile {
            key,
            repository_id: self.config.header.repository_id,
        })
    }

    /// Opens a repository with a password, trying every key slot.
    pub fn open(backend: Arc<dyn Backend>, password: &[u8]) -> Result<Self> {
        // The config and the list of key slots are read side by side (one round trip less
        // on object storage); a missing or unreadable config is reported first.
        let (config_bytes, slots) = std::thread::scope(|scope| {
            let listing = scope.spawn(|| backend.list(ObjectKind::KeySlot.prefix()));
            let config_bytes = Self::read_config(backend.as_ref());
            let slots = listing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (config_bytes, slots)
        });
        let config_bytes = config_bytes?;
        let (header, _) = Config::decode_header(&config_bytes)?;
        let mut tried = 0;
        let mut damaged = None;
        let mut decoded = Vec::new();
        for meta in &slots? {
            let bytes = match backend.get(&meta.name) {
                Ok(bytes) => bytes,
                // Removed since the listing (a `key passwd` elsewhere): not a slot now.
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            match key_slot_from(&meta.name, &bytes) {
                Ok(slot) => decoded.push(slot),
                Err(e) => damaged = Some(e),
            }
        }
        // The cheapest to try first: a slot planted by whoever can write to the storage,
        // demanding the most memory and passes the format allows, then costs only the
        // passwords that no other slot opens.
        decoded.sort_by_key(|slot| slot.kdf.cost());
        for slot in decoded {
            tried += 1;
            let opened = match slot.open(password) {
                Ok(opened) => opened,
                // Its KDF could not run here (memory): as good as damaged for this host.
                Err(e) => {
                    damaged = Some(e);
                    continue;
                }
            };
            if let Some((key, repository_id)) = opened {
                // A slot of another repository (left by an `init` that lost a race for
                // this location) opens nothing here.
                if repository_id != header.repository_id {
                    continue;
                }
                let config = Config::decode(&config_bytes, key.writer())?;
                return Self::from_parts(backend, config, AccessKey::Full(key), Some(slot.id));
            }
        }
        // A damaged slot might have been the one for this password: say so rather than
        // blame the password.
        if let Some(e) = damaged {
            return Err(e);
        }
        // No slot at all: the keys are gone, whatever the password.
        if tried == 0 {
            return Err(Error::corrupt(
                format!("{}/{}", backend.location(), ObjectKind::KeySlot.prefix()),
                "the repository has no key slots: no password can open it (a key file \
                 from `bunker key add --out` still can)",
            ));
        }
        Err(Error::WrongPassword {
            location: backend.location(),
            slots: tried,
        })
    }

    /// A repository from a config and a full key the caller vouches for, without reading
    /// `config` (`repair config` checks a rebuilt config's key against stored data).
    pub(crate) fn with_config(
        backend: Arc<dyn Backend>,
        config: Config,
        key: MasterKey,
    ) -> Result<Self> {
        Self::from_parts(backend, config, AccessKey::Full(key), None)
    }

    fn from_parts(
        backend: Arc<dyn Backend>,
        config: Config,
        key: AccessKey,
        slot: Option<KeySlotId>,
    ) -> Result<Self> {
        let chunker = Chunker::new(config.params.chunker, key.writer().chunker_seed())?;
        if let Some(lock) = config.params.lock {
            // Everything this process writes is locked like the rest of the repository.
            backend.enable_lock(lock)?;
        }
        // Room for two packs: a tree pack is closed once it holds `pack_size` bytes, so it
        // is at most one tree larger.
        let tree_packs =
            tree_packs::TreePackCache::new(2 * config.params.pack_size as usize + (4 << 20));
        Ok(Self {
            store: Arc::clone(&backend),
            copies: None,
            backend,
            config,
            key,
            slot,
            chunker,
            pack_keys: Mutex::new(HashMap::new()),
            tree_packs,
        })
    }

    /// The storage backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Reads snapshots, index segments, tree packs and the other metadata objects
    /// through copies kept in `dir` ([`MetadataCache`]), for a store reached over a
    /// network: commands then fetch only what is new.
    pub fn cache_metadata_in(mut self, dir: PathBuf) -> Self {
        let copies = Arc::new(MetadataCache::new(Arc::clone(&self.store), dir));
        self.backend = Arc::clone(&copies) as Arc<dyn Backend>;
        self.copies = Some(copies);
        self
    }

    /// Reads every object from the store itself, never from copies kept on this host:
    /// for what must prove what the store holds (`check`, `verify`, `repair`, drills).
    /// [`Repository::metadata_copy`] still finds the copies.
    pub fn bypassing_cache(mut self) -> Self {
        self.backend = Arc::clone(&self.store);
        self
    }

    /// This host's copy of the object `name`, when metadata copies are kept
    /// ([`Repository::cache_metadata_in`]) and one is there that hashes to its name: the
    /// bytes the store was given, whatever it holds now (`repair packs` salvages a damaged
    /// tree pack from it).
    pub fn metadata_copy(&self, name: &str) -> Option<Vec<u8>> {
        self.copies.as_ref()?.copy_of(name)
    }

    /// Where the repository lives.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The decoded config.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The key the repository was opened with.
    pub fn access_key(&self) -> &AccessKey {
        &self.key
    }

    /// The writer part of the key: every key has it.
    pub fn writer_key(&self) -> &WriterKey {
        self.key.writer()
    }

    /// The master key, or [`Error::KeyLacksReadAccess`] naming `operation` when the
    /// repository was opened with a put-only key.
    pub fn master_key(&self, operation: &'static str) -> Result<&MasterKey> {
        self.key.master(operation)
    }

    /// True when opened with a put-only key: it can back up, never read a backup.
    pub fn is_put_only(&self) -> bool {
        self.key.is_put_only()
    }

    /// The file chunker seeded for this repository.
    pub fn chunker(&self) -> &Chunker {
        &self.chunker
    }

    /// Fails when the repository needs a feature this build lacks for `operation`.
    pub fn check_features(&self, operation: Operation) -> Result<()> {
        self.config.check_features(operation)
    }

    /// The blob id of `data` in this repository (keyed BLAKE3).
    pub fn blob_id(&self, data: &[u8]) -> BlobId {
        BlobId::from_bytes(self.key.writer().blob_id_bytes(data))
    }

    /// Reads a content-named object and verifies its hash.
    pub fn get_verified(&self, kind: ObjectKind, id: &[u8; 32]) -> Result<Vec<u8>> {
        let name = kind.name(&hex::encode(id));
        let bytes = self.backend.get(&name)?;
        verify_content_hash(&bytes, id, &name)?;
        Ok(bytes)
    }

    // ----- index -----

    /// Ids of every index segment.
    pub fn list_index_ids(&self) -> Result<Vec<IndexId>> {
        let prefix = ObjectKind::Index.prefix();
        Ok(self
            .backend
            .list(prefix)?
            .iter()
            .filter_map(|m| parse_id(&m.name, prefix))
            .collect())
    }

    /// Reads and decodes one index segment.
    ///
    /// With a put-only key only the id section can be opened: the segment then lists every
    /// pack and blob id with zero offsets and lengths, which is all a writer uses
    /// (deduplication and condemned packs), and no blob can be read through it.
    pub fn load_index_segment(&self, id: &IndexId) -> Result<crate::index::IndexSegment> {
        let bytes = self.get_verified(ObjectKind::Index, id.as_bytes())?;
        let name = ObjectKind::Index.name(&id.to_hex());
        match &self.key {
            AccessKey::Full(master) => decode_segment(&bytes, master, &name),
            AccessKey::PutOnly(writer) => {
                let view = decode_segment_ids(&bytes, writer, &name)?;
                Ok(IndexSegment {
                    packs: view
                        .packs
                        .into_iter()
                        .map(|(pack, kind, blobs)| IndexedPack {
                            id: pack,
                            kind,
                            blobs: blobs
                                .into_iter()
                                .map(|id| crate::pack::PackEntry {
                                    id,
                                    kind,
                                    offset: 0,
                                    length: 0,
                                    raw_length: 0,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }
        }
    }

    /// Loads every index segment; damaged ones are reported, not fatal.
    pub fn load_index(&self) -> Result<LoadedIndex> {
        self.load_index_visiting(|_| {})
    }

    /// Like [`Repository::load_index`], and shows every segment read to `visit` (for code
    /// that needs the full blob ids, which the [`Index`] does not keep).
    pub fn load_index_visiting(
        &self,
        mut visit: impl FnMut(&crate::index::IndexSegment),
    ) -> Result<LoadedIndex> {
        let mut loaded = LoadedIndex::default();
        let mut loader = crate::index::IndexLoader::new();
        self.for_each_index_segment(|id, result| {
            match result {
                Ok(segment) => {
                    loader.add_segment(&segment);
                    visit(&segment);
                    loaded.segments.push(id);
                }
                Err(
                    e
                    @ (Error::Corrupt { .. } | Error::NotFound { .. } | Error::Unsupported { .. }),
                ) => loaded.damaged.push((id, e)),
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        loaded.index = loader.finish();
        Ok(loaded)
    }

    /// Reads every listed index segment, up to [`ReadHints::small_reads`] at once, and hands
    /// each (or why it could not be read) to `consume` in id order; stops at the first error
    /// `consume` returns.
    ///
    /// [`ReadHints::small_reads`]: crate::backend::ReadHints::small_reads
    pub fn for_each_index_segment(
        &self,
        mut consume: impl FnMut(IndexId, Result<crate::index::IndexSegment>) -> Result<()>,
    ) -> Result<()> {
        fan_out::load_in_order(
            &self.list_index_ids()?,
            self.backend.read_hints().small_reads,
            |id| self.load_index_segment(id),
            |&id, result| consume(id, result),
        )
    }

    /// Loads the index for reading data: locations in packs that are gone from storage are
    /// dropped, so a blob that was stored again elsewhere is read from there. (`check`
    /// loads the raw index instead, to report the missing packs.)
    pub fn load_index_for_reading(&self) -> Result<LoadedIndex> {
        let mut loaded = self.load_index()?;
        let stored = crate::gc::stored_packs(self)?;
        loaded.index.retain_packs(|pack| stored.contains_key(pack));
        Ok(loaded)
    }

    // ----- blobs -----

    fn pack_key(&self, pack: &PackId, kind: BlobKind) -> Result<SymmetricKey> {
        if let Some(key) = self.lock_pack_keys().get(pack) {
            return Ok(key.clone());
        }
        let name = crate::pack::pack_name(kind, pack);
        let header = self
            .backend
            .get_range(&name, 0, SESSION_HEADER_LEN as u64)?;
        self.learn_pack_key(pack, kind, &header)
    }

    /// Derives the key of `pack` from its first bytes (`start`: at least the session
    /// header, as a read from offset 0 returns them) and remembers it, so that opening the
    /// pack's blobs costs no read of the header.
    pub fn learn_pack_key(
        &self,
        pack: &PackId,
        kind: BlobKind,
        start: &[u8],
    ) -> Result<SymmetricKey> {
        if let Some(key) = self.lock_pack_keys().get(pack) {
            return Ok(key.clone());
        }
        let object_kind = crate::pack::pack_kind(kind);
        let name = object_kind.name(&pack.to_hex());
        let header = start.get(..SESSION_HEADER_LEN).ok_or_else(|| {
            Error::corrupt(
                &name,
                format!("{} bytes are too short for the pack header", start.len()),
            )
        })?;
        let mut dec = object_kind.check_header(header, &name)?;
        let public = dec
            .array("session public key")
            .map_err(|e| Error::corrupt(&name, e.to_string()))?;
        let key = self
            .key
            .master("reading backed-up data")?
            .session_key(&public, &name)?;
        self.lock_pack_keys().insert(*pack, key.clone());
        Ok(key)
    }

    fn lock_pack_keys(&self) -> std::sync::MutexGuard<'_, HashMap<PackId, SymmetricKey>> {
        self.pack_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Opens a blob whose sealed bytes were already fetched, and re-hashes it against its id.
    pub fn open_blob_bytes(
        &self,
        id: &BlobId,
        location: &BlobLocation,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let name = crate::pack::pack_name(location.kind, &location.pack);
        let key = self.pack_key(&location.pack, location.kind)?;
        let plaintext = open_blob(&key, location.kind, id, sealed, location.raw_length, &name)?;
        self.check_hash(id, &plaintext, &name)?;
        Ok(plaintext)
    }

    /// An error naming `object` unless `plaintext` hashes to `id`.
    fn check_hash(&self, id: &BlobId, plaintext: &[u8], object: &str) -> Result<()> {
        if self.blob_id(plaintext) != *id {
            return Err(Error::corrupt(
                object,
                format!("blob {id} does not hash to its id"),
            ));
        }
        Ok(())
    }

    /// Opens the blob at `location` out of `bytes`, read from offset `read_from` of its pack
    /// (0 for the whole pack): takes its sealed bytes (an error naming the pack when they are
    /// not all there), authenticates them and re-hashes the plaintext against its id.
    pub fn open_blob_in(
        &self,
        id: &BlobId,
        location: &BlobLocation,
        bytes: &[u8],
        read_from: u64,
    ) -> Result<Vec<u8>> {
        let sealed = sealed_in(id, location, bytes, read_from)?;
        self.open_blob_bytes(id, location, sealed)
    }

    /// Like [`Self::open_blob_in`], into `out`, whose length must be the blob's plaintext
    /// length (`location.raw_length`, checked with [`crate::blob::plaintext_length`] before
    /// allocating): for a caller that chose where the bytes go.
    pub fn open_blob_in_to(
        &self,
        id: &BlobId,
        location: &BlobLocation,
        bytes: &[u8],
        read_from: u64,
        out: &mut [u8],
    ) -> Result<()> {
        let sealed = sealed_in(id, location, bytes, read_from)?;
        let name = crate::pack::pack_name(location.kind, &location.pack);
        let key = self.pack_key(&location.pack, location.kind)?;
        crate::blob::open_blob_to(&key, location.kind, id, sealed, &name, out)?;
        self.check_hash(id, out, &name)
    }

    /// Reads a blob from its pack, authenticates it and re-hashes it against its id.
    pub fn read_blob_at(&self, id: &BlobId, location: &BlobLocation) -> Result<Vec<u8>> {
        self.read_blob_at_abandoning(id, location, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`Self::read_blob_at`] whose read of a range the caller may stop waiting for
    /// ([`Backend::get_range_to_read_abandoning`]): a streamed restore once interrupted. A
    /// tree read whole with its pack is not given up (tree packs are small).
    pub fn read_blob_at_abandoning(
        &self,
        id: &BlobId,
        location: &BlobLocation,
        abandon: &std::sync::atomic::AtomicBool,
    ) -> Result<Vec<u8>> {
        let name = crate::pack::pack_name(location.kind, &location.pack);
        if location.kind == BlobKind::Tree && self.backend.read_hints().whole_tree_packs {
            let pack = self
                .tree_packs
                .get_or_read(&location.pack, || self.backend.get(&name))?;
            if let Some(pack) = pack {
                self.learn_pack_key(&location.pack, location.kind, &pack)?;
                return self.open_blob_in(id, location, &pack, 0);
            }
        }
        let sealed = self.backend.get_range_to_read_abandoning(
            &name,
            location.offset,
            u64::from(location.length),
            abandon,
        )?;
        self.open_blob_bytes(id, location, &sealed)
    }

    /// Reads a blob, looking its location up in `index`.
    pub fn read_blob(&self, index: &Index, id: &BlobId) -> Result<Vec<u8>> {
        let location = index.get(id).ok_or_else(|| match index.lost_location(id) {
            Some(lost) => Error::NotFound {
                object: format!(
                    "{} (the pack holding blob {id})",
                    crate::pack::pack_name(lost.kind, &lost.pack)
                ),
            },
            None => Error::NotFound {
                object: format!("blob {id} (not in the index)"),
            },
        })?;
        self.read_blob_at(id, &location)
    }

    /// Reads and decodes a tree.
    pub fn load_tree(&self, index: &Index, id: &BlobId) -> Result<Tree> {
        let bytes = self.read_blob(index, id)?;
        Tree::decode(&bytes).map_err(|e| Error::decoding(format!("tree {id}"), e))
    }

    /// Starts writing blobs in a new session, deduplicating against `index`.
    pub fn blob_writer<'a>(&'a self, index: &'a Index) -> BlobWriter<'a> {
        BlobWriter::new(self, index)
    }

    /// A new sealing session (for objects written outside a [`BlobWriter`]).
    pub fn new_session(&self) -> SealingSession {
        self.key.writer().new_session()
    }

    // ----- snapshots -----

    /// Ids of every snapshot, except those forgotten by a forget marker (FORMAT.md §13b).
    /// A put-only key cannot read markers (nor snapshots): it gets every stored id.
    pub fn list_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let stored = self.list_stored_snapshot_ids()?;
        let Ok(key) = self.key.master("reading forget markers") else {
            return Ok(stored);
        };
        let forgotten = crate::forget_marker::list(self, key)?.forgotten();
        Ok(stored
            .into_iter()
            .filter(|id| !forgotten.contains(id))
            .collect())
    }

    /// Ids of every snapshot object in storage, forgotten ones included.
    pub fn list_stored_snapshot_ids(&self) -> Result<Vec<SnapshotId>> {
        let prefix = ObjectKind::Snapshot.prefix();
        Ok(self
            .backend
            .list(prefix)?
            .iter()
            .filter_map(|m| parse_id(&m.name, prefix))
            .collect())
    }

    /// Reads, verifies and opens one snapshot.
    pub fn load_snapshot(&self, id: &SnapshotId) -> Result<Snapshot> {
        let bytes = self.get_verified(ObjectKind::Snapshot, id.as_bytes())?;
        Snapshot::open(
            &bytes,
            self.key.master("reading snapshots")?,
            &ObjectKind::Snapshot.name(&id.to_hex()),
        )
    }

    /// Every snapshot, oldest first. Fails on the first unreadable one.
    pub fn load_snapshots(&self) -> Result<Vec<(SnapshotId, Snapshot)>> {
        let (all, unreadable) = self.load_readable_snapshots()?;
        match unreadable.into_iter().next() {
            Some((_, error)) => Err(error),
            None => Ok(all),
        }
    }

    /// Every snapshot that loads, oldest first, and the ids of those that do not (damaged,
    /// unreadable), with why. Only listing the snapshots, or a key that can read none of
    /// them (put-only), fails the whole call.
    #[allow(clippy::type_complexity)]
    pub fn load_readable_snapshots(
        &self,
    ) -> Result<(Vec<(SnapshotId, Snapshot)>, Vec<(SnapshotId, Error)>)> {
        self.key.master("reading snapshots")?;
        let ids = self.list_snapshot_ids()?;
        let mut all = Vec::with_capacity(ids.len());
        let mut unreadable = Vec::new();
        fan_out::load_in_order(
            &ids,
            self.backend.read_hints().small_reads,
            |id| self.load_snapshot(id),
            |&id, result| {
                match result {
                    Ok(snapshot) => all.push((id, snapshot)),
                    Err(error) => unreadable.push((id, error)),
                }
                Ok::<(), Error>(())
            },
        )?;
        all.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok((all, unreadable))
    }

    /// Finds a snapshot by `latest` or a unique prefix of its id.
    pub fn resolve_snapshot(&self, spec: &str) -> Result<(SnapshotId, Snapshot)> {
        if spec == "latest" {
            return self
                .load_snapshots()?
                .pop()
                .ok_or_else(|| Error::Invalid("the repository has no snapshots".into()));
        }
        let id = self.resolve_snapshot_id(spec)?;
        Ok((id, self.load_snapshot(&id)?))
    }

    /// The snapshot whose id starts with `spec` (hex, at least one digit), without loading
    /// it: the one way to name a snapshot that cannot be read.
    pub fn resolve_snapshot_id(&self, spec: &str) -> Result<SnapshotId> {
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{spec:?} is not a snapshot id: give `latest`, `latest~N` or a hex id prefix"
            )));
        }
        let spec_lower = spec.to_ascii_lowercase();
        let matches: Vec<SnapshotId> = self
            .list_snapshot_ids()?
            .into_iter()
            .filter(|id| id.to_hex().starts_with(&spec_lower))
            .collect();
        match matches.as_slice() {
            [id] => Ok(*id),
            [] => Err(Error::Invalid(format!("no snapshot matches {spec:?}"))),
            _ => Err(Error::Invalid(format!(
                "{} snapshots match {spec:?}; give more digits",
                matches.len()
            ))),
        }
    }

    /// Writes a snapshot: the commit point of a backup. Everything it references must
    /// already be stored and indexed.
    pub fn save_snapshot(
        &self,
        session: &SealingSession,
        snapshot: &Snapshot,
    ) -> Result<SnapshotId> {
        let (id, bytes) = snapshot.seal(session);
        self.put_content_named(&ObjectKind::Snapshot.name(&id.to_hex()), bytes)?;
        Ok(id)
    }

    /// Stores an audit record with a session of its own (records never share a backup's
    /// session, so writing one needs only the writer key).
    pub fn save_audit(&self, record: &crate::audit::AuditRecord) -> Result<crate::id::AuditId> {
        crate::audit::store(self.backend.as_ref(), self.writer_key(), record)
    }

    /// Every audit record that opens, oldest first, and the names of those that do not.
    pub fn load_audit(&self) -> Result<AuditListing> {
        let key = self.master_key("reading audit records")?;
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        let mut named = Vec::new();
        for meta in self.backend.list(ObjectKind::Audit.prefix())? {
            match parse_id::<crate::id::AuditId>(&meta.name, ObjectKind::Audit.prefix()) {
                Some(id) => named.push((id, meta.name)),
                None => unreadable.push(meta.name),
            }
        }
        // One round trip per record: as many at once as the store takes small reads.
        fan_out::load_in_order(
            &named,
            self.backend.read_hints().small_reads,
            |(id, name)| {
                self.get_verified(ObjectKind::Audit, id.as_bytes())
                    .and_then(|bytes| crate::audit::AuditRecord::open(&bytes, key, name))
            },
            |(id, name), opened| {
                match opened {
                    Ok(record) => records.push((*id, record)),
                    Err(_) => unreadable.push(name.clone()),
                }
                Ok::<(), Error>(())
            },
        )?;
        records.sort_by_key(|(id, r)| (r.time, *id));
        Ok((records, unreadable))
    }

    /// Forgets a snapshot: deletes it, or hides it behind a forget marker while its lock
    /// holds ([`crate::forget_marker::forget`]). Needs the full key.
    pub fn forget_snapshot(&self, id: &SnapshotId) -> Result<crate::forget_marker::Forgotten> {
        crate::forget_marker::forget(self, id)
    }

    /// Deletes a snapshot (`snapshots/<hex>`): its commit point only. The trees and data it
    /// references stay in their packs until `prune` removes what no remaining snapshot
    /// uses, so no space is freed yet. Deleting a snapshot that is already gone succeeds.
    pub fn delete_snapshot(&self, id: &SnapshotId) -> Result<()> {
        self.backend
            .delete(&ObjectKind::Snapshot.name(&id.to_hex()))
    }

    /// Starts a pack of `kind` blobs sealed by `session`: written through to the store's
    /// staging area when it has one (a local directory), so the pack never sits in memory
    /// whole; built in memory otherwise (S3 takes it as one request body).
    pub fn start_pack(
        &self,
        kind: crate::blob::BlobKind,
        session: &SealingSession,
    ) -> Result<crate::pack::PackWriter> {
        Ok(
            match self.backend.stage(crate::pack::pack_kind(kind).prefix())? {
                Some(file) => crate::pack::PackWriter::staged(kind, session.clone(), file)?,
                None => crate::pack::PackWriter::new(kind, session.clone()),
            },
        )
    }

    /// Stores a finished pack (see [`BlobWriter::pack_sealed`]); it is not indexed until the
    /// writer that packed it records the returned [`StoredPack`](crate::pack::StoredPack)
    /// with [`BlobWriter::record_uploaded`]. The bytes are handed to the backend, not copied;
    /// a staged pack is published under its name.
    pub fn put_pack(&self, pack: crate::pack::FinishedPack) -> Result<crate::pack::StoredPack> {
        self.put_pack_abandoning(pack, &std::sync::atomic::AtomicBool::new(false))
    }

    /// [`Self::put_pack`], giving the put up once `abandon` is set where the store allows
    /// it ([`Backend::put_if_absent_abandoning`]): an interrupted backup does not wait for
    /// its packs in flight to a slow store. A staged pack (a local directory) is published.
    pub fn put_pack_abandoning(
        &self,
        pack: crate::pack::FinishedPack,
        abandon: &std::sync::atomic::AtomicBool,
    ) -> Result<crate::pack::StoredPack> {
        let name = pack.name();
        content_named_stored(match pack.contents {
            crate::pack::PackContents::Memory(bytes) => {
                self.backend.put_if_absent_abandoning(&name, bytes, abandon)
            }
            crate::pack::PackContents::Staged(file) => self.backend.publish(file, &name),
        })?;
        Ok(crate::pack::StoredPack {
            id: pack.id,
            stored: pack.size,
            entries: pack.entries,
        })
    }

    /// Stores a content-named object: an existing object of that name has the same bytes,
    /// so `AlreadyExists` counts as success.
    pub(crate) fn put_content_named(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        content_named_stored(self.backend.put_if_absent_owned(name, bytes))
    }

    /// Writes `packs` as index segments of at most [`SEGMENT_BLOBS`] blobs each (a pack is
    /// never split), sealed by `session`; returns their ids. Content-named, so rewriting
    /// an identical segment is harmless.
    pub(crate) fn write_index_segments(
        &self,
        packs: Vec<IndexedPack>,
        session: &SealingSession,
    ) -> Result<Vec<IndexId>> {
        let mut written = Vec::new();
        let mut batch: Vec<IndexedPack> = Vec::new();
        let mut batch_blobs = 0;
        for pack in packs {
            if !batch.is_empty() && batch_blobs + pack.blobs.len() > SEGMENT_BLOBS {
                written.push(self.write_index_segment(std::mem::take(&mut batch), session)?);
                batch_blobs = 0;
            }
            batch_blobs += pack.blobs.len();
            batch.push(pack);
        }
        if !batch.is_empty() {
            written.push(self.write_index_segment(batch, session)?);
        }
        Ok(written)
    }

    fn write_index_segment(
        &self,
        packs: Vec<IndexedPack>,
        session: &SealingSession,
    ) -> Result<IndexId> {
        let bytes = encode_segment(&IndexSegment { packs }, self.key.writer(), session);
        let id = IndexId::from_bytes(crate::id::content_hash(&bytes));
        self.put_content_named(&ObjectKind::Index.name(&id.to_hex()), bytes)?;
        Ok(id)
    }

    // ----- key slots -----

    /// The slot this repository was opened with (none when opened with a key file).
    pub fn current_key_slot(&self) -> Option<KeySlotId> {
        self.slot
    }

    /// Every key slot (undecryptable ones are skipped).
    pub fn key_slots(&self) -> Result<Vec<KeySlot>> {
        let mut slots = Vec::new();
        for meta in self.backend.list(ObjectKind::KeySlot.prefix())? {
            let bytes = self.backend.get(&meta.name)?;
            // Only slots whose bytes match their name: `check` reports the others.
            if let Ok(slot) = key_slot_from(&meta.name, &bytes) {
                slots.push(slot);
            }
        }
        slots.sort_by_key(|s| (s.info.created, s.id));
        Ok(slots)
    }

    /// Adds a key slot for `password`, with the repository's default KDF cost.
    pub fn add_key_slot(&self, password: &[u8], info: &KeySlotInfo) -> Result<KeySlotId> {
        let (id, bytes) = KeySlot::seal(
            self.key.master("adding a key slot")?,
            &self.config.header.repository_id,
            password,
            self.config.header.kdf,
            info,
        )?;
        self.backend
            .put_if_absent(&ObjectKind::KeySlot.name(&id.to_hex()), &bytes)?;
        Ok(id)
    }

    /// Replaces the key slot this repository was opened with by a new one for `password`
    /// (`key passwd`): the new slot is stored and proven to open with `password` before
    /// the old one is deleted, so an interruption leaves both, never neither. Returns the
    /// new slot's id. This handle still names the old slot as the one in use.
    pub fn change_password(&self, password: &[u8], info: &KeySlotInfo) -> Result<KeySlotId> {
        let Some(old) = self.slot else {
            return Err(Error::Invalid(
                "the repository was opened with a key file, not a password: use `key add` \
                 and `key remove`"
                    .into(),
            ));
        };
        let master = self.key.master("changing the password")?;
        let new = self.add_key_slot(password, info)?;
        let name = ObjectKind::KeySlot.name(&new.to_hex());
        let bytes = self.backend.get(&name)?;
        let opens =
            key_slot_from(&name, &bytes)?
                .open(password)?
                .is_some_and(|(key, repository_id)| {
                    repository_id == self.config.header.repository_id
                        && key.data_secret() == master.data_secret()
                        && key.writer().writer_secret() == master.writer().writer_secret()
                });
        if !opens {
            return Err(Error::corrupt(
                &name,
                "the new key slot does not open with the new password as stored; the old \
                 slot is kept",
            ));
        }
        self.backend
            .delete(&ObjectKind::KeySlot.name(&old.to_hex()))?;
        Ok(new)
    }

    /// Removes a key slot. The slot in use and the last slot cannot be removed.
    pub fn remove_key_slot(&self, id: &KeySlotId) -> Result<()> {
        if Some(*id) == self.slot {
            return Err(Error::Invalid(
                "refusing to remove the key slot in use; open the repository with another password first".into(),
            ));
        }
        let slots = self.key_slots()?;
        if !slots.iter().any(|s| s.id == *id) {
            return Err(Error::Invalid(format!("no key slot {id}")));
        }
        // Opened with a key file, no slot is in use: the count is what keeps a password.
        if slots.len() <= 1 {
            return Err(Error::Invalid(
                "refusing to remove the last key slot: no password could open the repository \
                 then; add another one first (`bunker key add`)"
                    .into(),
            ));
        }
        self.backend.delete(&ObjectKind::KeySlot.name(&id.to_hex()))
    }
}

/// The outcome of storing a content-named object: one that already exists under its name
/// has the same bytes, so `AlreadyExists` is success.
fn content_named_stored(result: Result<()>) -> Result<()> {
    match result {
        Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The sealed bytes of the blob at `location` in `bytes`, read from offset `read_from` of its
/// pack; an error naming the pack when they are not all there.
fn sealed_in<'b>(
    id: &BlobId,
    location: &BlobLocation,
    bytes: &'b [u8],
    read_from: u64,
) -> Result<&'b [u8]> {
    location
        .offset
        .checked_sub(read_from)
        .and_then(|start| usize::try_from(start).ok())
        .and_then(|start| bytes.get(start..)?.get(..location.length as usize))
        .ok_or_else(|| {
            Error::corrupt(
                crate::pack::pack_name(location.kind, &location.pack),
                format!(
                    "blob {id} at {}+{} is outside the {} bytes read from offset {read_from}",
                    location.offset,
                    location.length,
                    bytes.len()
                ),
            )
        })
}

/// A new repository in memory (password `pw`, a fast KDF) and its store, for unit tests.
#[cfg(test)]
pub(crate) fn in_memory() -> (Arc<crate::backend::MemoryBackend>, Repository) {
    let store = Arc::new(crate::backend::MemoryBackend::new());
    let options = InitOptions {
        kdf: crate::keyslot::KdfParams::insecure_for_tests(),
        ..InitOptions::default()
    };
    let repository = Repository::init(Arc::clone(&store) as Arc<dyn Backend>, b"pw", options)
        .expect("a repository in memory");
    (store, repository)
}

/// The key slot stored as `name` with `bytes`: its name parsed, its bytes hashing to it,
/// decoded.
fn key_slot_from(name: &str, bytes: &[u8]) -> Result<KeySlot> {
    let id = parse_id::<KeySlotId>(name, ObjectKind::KeySlot.prefix())
        .ok_or_else(|| Error::corrupt(name, "not a key slot name"))?;
    verify_content_hash(bytes, id.as_bytes(), name)?;
    KeySlot::decode(bytes, name)
}

#[cfg(test)]
mod tests;
