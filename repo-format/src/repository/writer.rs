//! Writing blobs: deduplicate, seal, pack, upload, index.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::Repository;
use crate::blob::{BlobKind, MAX_BLOB_LENGTH, seal_blob_verified};
use crate::crypto::SealingSession;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{BlobIdSet, Index, IndexedPack};
use crate::pack::{FinishedPack, PackWriter, StoredPack};

/// Figures about what a [`BlobWriter`] stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// New data blobs.
    pub data_blobs: u64,
    /// New tree blobs.
    pub tree_blobs: u64,
    /// Plaintext bytes of new blobs.
    pub bytes_added: u64,
    /// Plaintext bytes of the new data blobs (a part of `bytes_added`).
    pub data_bytes_added: u64,
    /// Bytes of packs uploaded.
    pub bytes_stored: u64,
    /// Packs uploaded.
    pub packs: u64,
}

/// A blob sealed and ready to go into a pack. Sealing is CPU work that callers may run in
/// parallel ([`BlobWriter::seal`] takes `&self`).
#[derive(Debug)]
pub struct SealedBlob {
    /// The blob's id.
    pub id: BlobId,
    /// Data or tree.
    pub kind: BlobKind,
    /// Sealed bytes.
    pub sealed: Vec<u8>,
    /// Plaintext length.
    pub raw_length: u32,
}

/// One writer session: every blob it stores is sealed under its session key.
///
/// Blobs already in the index or added earlier in the session are not stored again. Packs
/// are uploaded as they fill; [`BlobWriter::finish`] uploads the rest and writes the index
/// segment that makes them known. Nothing is visible to readers until a snapshot refers to it.
#[derive(Debug)]
pub struct BlobWriter<'a> {
    repo: &'a Repository,
    known: &'a Index,
    excluded: HashSet<PackId>,
    depends_on: HashSet<PackId>,
    session: SealingSession,
    /// Blobs packed by this session.
    added: BlobIdSet,
    data_pack: Option<PackWriter>,
    tree_pack: Option<PackWriter>,
    unindexed: Vec<IndexedPack>,
    unindexed_blobs: usize,
    segments: Vec<IndexId>,
    uploaded: Vec<(PackId, BlobKind)>,
    index_interval: Option<std::time::Duration>,
    /// When the oldest pack not yet in a segment was uploaded.
    unindexed_since: Option<std::time::Instant>,
    /// Once set, the packs this writer uploads itself are given up where the store allows.
    abandon: Arc<AtomicBool>,
    stats: WriteStats,
}

impl<'a> BlobWriter<'a> {
    pub(super) fn new(repo: &'a Repository, known: &'a Index) -> Self {
        Self {
            repo,
            known,
            excluded: HashSet::new(),
            depends_on: HashSet::new(),
            session: repo.new_session(),
            added: BlobIdSet::new(),
            data_pack: None,
            tree_pack: None,
            unindexed: Vec::new(),
            unindexed_blobs: 0,
            segments: Vec::new(),
            uploaded: Vec::new(),
            index_interval: None,
            unindexed_since: None,
            abandon: Arc::new(AtomicBool::new(false)),
            stats: WriteStats::default(),
        }
    }

    /// Gives up the pack uploads this writer makes itself ([`Self::add`], [`Self::flush`])
    /// once `flag` is set, where the store allows it
    /// ([`Repository::put_pack_abandoning`]): an interrupted command does not wait for its
    /// packs in flight to a slow store. They fail with [`Error::Abandoned`](crate::Error::Abandoned);
    /// [`Self::index_uploaded`] still indexes those stored before.
    pub fn abandon_uploads_when(&mut self, flag: Arc<AtomicBool>) {
        self.abandon = flag;
    }

    /// The session sealing this writer's objects (use it for the snapshot too).
    pub fn session(&self) -> &SealingSession {
        &self.session
    }

    /// Also writes an index segment, after a pack upload, once the oldest unindexed pack is
    /// `interval` old, so that a killed writer loses at most that much work to the next run
    /// (without it, segments are written every 100,000 blobs and at the
    /// end). `Duration::ZERO` indexes every pack as soon as it is uploaded.
    pub fn set_index_interval(&mut self, interval: std::time::Duration) {
        self.index_interval = Some(interval);
    }

    /// Treats every blob stored in `packs` as absent: condemned packs (named by a GC plan)
    /// and packs found missing. Such blobs are stored anew when needed.
    pub fn exclude_packs(&mut self, packs: impl IntoIterator<Item = PackId>) {
        self.excluded.extend(packs);
    }

    fn known_location(&self, id: &BlobId) -> Option<PackId> {
        self.known
            .get(id)
            .map(|location| location.pack)
            .filter(|pack| !self.excluded.contains(pack))
    }

    /// True when the blob is already stored (outside excluded packs) or pending in this
    /// session. Does not record a dependency: see [`BlobWriter::reuse`].
    pub fn contains(&self, id: &BlobId) -> bool {
        self.added.contains(id) || self.known_location(id).is_some()
    }

    /// Like [`BlobWriter::contains`], and when the blob is an existing one, records its
    /// pack as something this session's snapshot will depend on.
    pub fn reuse(&mut self, id: &BlobId) -> bool {
        if self.added.contains(id) {
            return true;
        }
        match self.known_location(id) {
            Some(pack) => {
                self.depends_on.insert(pack);
                true
            }
            None => false,
        }
    }

    /// Packs this session's snapshot will depend on: existing ones it deduplicated against
    /// and the ones it uploaded. If one of them disappeared before the snapshot is written,
    /// the snapshot would be broken.
    pub fn dependencies(&self) -> &HashSet<PackId> {
        &self.depends_on
    }

    /// Seals a blob and verifies it (opened again and re-hashed, see
    /// [`seal_blob_verified`]); CPU only, safe to call from many threads.
    pub fn seal(&self, kind: BlobKind, id: BlobId, plaintext: &[u8]) -> Result<SealedBlob> {
        let sealed = seal_blob_verified(
            self.session.key(),
            self.repo.writer_key(),
            kind,
            &id,
            plaintext,
            self.repo.config.params.compression_level,
        )?;
        Ok(SealedBlob {
            id,
            kind,
            sealed,
            raw_length: u32::try_from(plaintext.len()).unwrap_or(u32::MAX),
        })
    }

    /// Adds a sealed blob unless it is already known; returns whether it was new.
    pub fn add_sealed(&mut self, blob: SealedBlob) -> Result<bool> {
        let (new, full) = self.pack_sealed(blob)?;
        if let Some(full) = full {
            self.upload(full)?;
        }
        Ok(new)
    }

    /// Like [`BlobWriter::add_sealed`], but a pack that fills up is returned instead of
    /// uploaded: the caller uploads it (possibly on another thread) and then reports it
    /// with [`BlobWriter::record_uploaded`]. Returns whether the blob was new.
    pub fn pack_sealed(&mut self, blob: SealedBlob) -> Result<(bool, Option<FinishedPack>)> {
        if self.reuse(&blob.id) {
            return Ok((false, None));
        }
        if blob.raw_length > MAX_BLOB_LENGTH {
            return Err(Error::Invalid(format!(
                "{} blob {} of {} bytes exceeds the {MAX_BLOB_LENGTH}-byte blob limit",
                blob.kind.name(),
                blob.id,
                blob.raw_length
            )));
        }
        let target = self.repo.config.params.pack_size as usize;
        let slot = match blob.kind {
            BlobKind::Data => &mut self.data_pack,
            BlobKind::Tree => &mut self.tree_pack,
        };
        let pack = match slot {
            Some(pack) => pack,
            None => slot.insert(self.repo.start_pack(blob.kind, &self.session)?),
        };
        if let Err(e) = pack.add(blob.id, &blob.sealed, blob.raw_length) {
            // Part of the blob may be written: the pack is abandoned (its staged file
            // removed), never finished with a wrong layout.
            *slot = None;
            return Err(e);
        }
        let full = if pack.len() >= target {
            slot.take().map(PackWriter::finish).transpose()?
        } else {
            None
        };
        self.added.insert(&blob.id);
        match blob.kind {
            BlobKind::Data => {
                self.stats.data_blobs += 1;
                self.stats.data_bytes_added += u64::from(blob.raw_length);
            }
            BlobKind::Tree => self.stats.tree_blobs += 1,
        }
        self.stats.bytes_added += u64::from(blob.raw_length);
        Ok((true, full))
    }

    /// Finishes the open packs and returns them for the caller to upload and report with
    /// [`BlobWriter::record_uploaded`] (see [`BlobWriter::pack_sealed`]).
    pub fn take_open_packs(&mut self) -> Result<Vec<FinishedPack>> {
        [self.data_pack.take(), self.tree_pack.take()]
            .into_iter()
            .flatten()
            .map(PackWriter::finish)
            .collect()
    }

    /// Hashes, seals and adds a blob; returns its id and whether it was new.
    pub fn add(&mut self, kind: BlobKind, plaintext: &[u8]) -> Result<(BlobId, bool)> {
        let id = self.repo.blob_id(plaintext);
        if self.reuse(&id) {
            return Ok((id, false));
        }
        let sealed = self.seal(kind, id, plaintext)?;
        Ok((id, self.add_sealed(sealed)?))
    }

    fn upload(&mut self, finished: FinishedPack) -> Result<()> {
        let stored = self.repo.put_pack_abandoning(finished, &self.abandon)?;
        self.record_uploaded(stored)
    }

    /// Records a pack uploaded by the caller (see [`BlobWriter::pack_sealed`] and
    /// [`Repository::put_pack`]). Writes an index segment when enough blobs wait for one.
    pub fn record_uploaded(&mut self, pack: StoredPack) -> Result<()> {
        let StoredPack {
            id,
            stored,
            entries,
        } = pack;
        self.stats.bytes_stored += stored;
        self.stats.packs += 1;
        // Until the snapshot exists nothing references this pack: a prune that takes this
        // session for dead may condemn it, so the commit check must cover it too.
        self.depends_on.insert(id);
        self.unindexed_blobs += entries.len();
        let kind = entries.first().map_or(BlobKind::Data, |e| e.kind);
        self.uploaded.push((id, kind));
        self.unindexed.push(IndexedPack {
            id,
            kind,
            blobs: entries,
        });
        let since = *self
            .unindexed_since
            .get_or_insert_with(std::time::Instant::now);
        let due = self
            .index_interval
            .is_some_and(|interval| since.elapsed() >= interval);
        // A segment before the session ends, so an interrupted backup leaves indexed packs
        // that the next run deduplicates against.
        if due || self.unindexed_blobs >= super::SEGMENT_BLOBS {
            self.write_segment()?;
        }
        Ok(())
    }

    fn write_segment(&mut self) -> Result<()> {
        if self.unindexed.is_empty() {
            return Ok(());
        }
        self.unindexed_blobs = 0;
        self.unindexed_since = None;
        let written = self
            .repo
            .write_index_segments(std::mem::take(&mut self.unindexed), &self.session)?;
        self.segments.extend(written);
        Ok(())
    }

    /// Uploads the open packs and writes their index segment. After this returns, every
    /// blob added is stored and indexed, so a snapshot may reference it.
    pub fn flush(&mut self) -> Result<()> {
        for pack in self.take_open_packs()? {
            self.upload(pack)?;
        }
        self.write_segment()
    }

    /// Writes the index segment of the packs uploaded so far and leaves the open ones
    /// aside (they go with the writer): after a failed upload, what was stored is indexed
    /// for the next run to reuse, without trying the store again with the rest.
    pub fn index_uploaded(&mut self) -> Result<()> {
        self.write_segment()
    }

    /// Flushes and returns what was stored and the index segments written.
    pub fn finish(mut self) -> Result<(WriteStats, Vec<IndexId>)> {
        self.flush()?;
        Ok((self.stats, self.segments))
    }

    /// The packs uploaded since the last call (for callers that read back what they sent).
    pub fn take_uploaded(&mut self) -> Vec<(PackId, BlobKind)> {
        std::mem::take(&mut self.uploaded)
    }

    /// Figures so far.
    pub fn stats(&self) -> WriteStats {
        self.stats
    }
}
