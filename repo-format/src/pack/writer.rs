//! Building a pack: in memory, or written through to a store's staging area as blobs come
//! (see [`Backend::stage`](crate::backend::Backend::stage)).

use super::{PackEntry, encode_trailer, pack_kind, trailer_aad};
use crate::backend::StagedFile;
use crate::blob::BlobKind;
use crate::crypto::SealingSession;
use crate::error::{Error, Result};
use crate::id::{PackId, content_hash};
use crate::object::{ObjectKind, SESSION_HEADER_LEN};

/// Accumulates sealed blobs of one kind until the pack is full.
#[derive(Debug)]
pub struct PackWriter {
    kind: BlobKind,
    session: SealingSession,
    sink: Sink,
    /// Bytes so far, header included, trailer not.
    len: usize,
    entries: Vec<PackEntry>,
}

/// Where a pack's bytes go.
#[derive(Debug)]
enum Sink {
    /// Kept whole, for one put when the pack is finished.
    Memory(Vec<u8>),
    /// Written to a staged file (which buffers its writes), and hashed on the way.
    Staged {
        file: StagedFile,
        hasher: Box<blake3::Hasher>,
        /// The header, which the trailer's associated data covers.
        header: Vec<u8>,
    },
}

impl Sink {
    /// An error from writing the staged file, naming it (its directory is the repository).
    fn write_error(&self, e: std::io::Error) -> Error {
        match self {
            Sink::Staged { file, .. } => staged_write_error(file, e),
            Sink::Memory(_) => Error::io("writing a pack", e),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Memory(all) => all.extend_from_slice(bytes),
            Sink::Staged { file, hasher, .. } => {
                hasher.update(bytes);
                file.write_all(bytes)?;
            }
        }
        Ok(())
    }
}

/// An error from writing a staged pack, naming its file (in the repository).
fn staged_write_error(file: &StagedFile, e: std::io::Error) -> Error {
    Error::io(format!("writing a pack to {}", file.path().display()), e)
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// Content hash of its bytes.
    pub id: PackId,
    /// Data or tree pack.
    pub kind: ObjectKind,
    /// Size in bytes.
    pub size: u64,
    /// The bytes, or where they wait to be published.
    pub contents: PackContents,
    /// The blobs it holds, in order.
    pub entries: Vec<PackEntry>,
}

/// A finished pack's bytes.
#[derive(Debug)]
pub enum PackContents {
    /// In memory.
    Memory(Vec<u8>),
    /// Written to the store's staging area, to be published under the pack's name.
    Staged(StagedFile),
}

impl FinishedPack {
    /// The pack's object name.
    pub fn name(&self) -> String {
        self.kind.name(&self.id.to_hex())
    }

    /// The bytes of a pack built in memory (`None` for a staged one).
    pub fn bytes(&self) -> Option<&[u8]> {
        match &self.contents {
            PackContents::Memory(bytes) => Some(bytes),
            PackContents::Staged(_) => None,
        }
    }
}

/// A pack that is stored, without its bytes: what a writer needs to index it.
#[derive(Debug)]
pub struct StoredPack {
    /// Content hash of the stored bytes.
    pub id: PackId,
    /// The pack's size in bytes.
    pub stored: u64,
    /// The blobs it holds, in order.
    pub entries: Vec<PackEntry>,
}

impl PackWriter {
    /// Starts an empty pack of `kind` blobs sealed by `session`, built in memory.
    pub fn new(kind: BlobKind, session: SealingSession) -> Self {
        let mut bytes = Vec::with_capacity(1 << 20);
        bytes.extend_from_slice(&pack_kind(kind).header());
        bytes.extend_from_slice(session.public());
        Self {
            kind,
            len: bytes.len(),
            session,
            sink: Sink::Memory(bytes),
            entries: Vec::new(),
        }
    }

    /// Starts an empty pack written through to `file` (from
    /// [`Backend::stage`](crate::backend::Backend::stage)) as blobs are added, so that it
    /// never sits in memory whole. Fails only when the header cannot be written.
    pub fn staged(kind: BlobKind, session: SealingSession, mut file: StagedFile) -> Result<Self> {
        let mut header = pack_kind(kind).header().to_vec();
        header.extend_from_slice(session.public());
        file.write_all(&header)
            .map_err(|e| staged_write_error(&file, e))?;
        let mut hasher = Box::new(blake3::Hasher::new());
        hasher.update(&header);
        Ok(Self {
            kind,
            len: header.len(),
            session,
            sink: Sink::Staged {
                file,
                hasher,
                header,
            },
            entries: Vec::new(),
        })
    }

    /// Appends a blob sealed by this pack's session (see [`crate::blob::seal_blob`]). Fails
    /// only when a staged pack cannot be written.
    pub fn add(
        &mut self,
        entry_id: crate::id::BlobId,
        sealed: &[u8],
        raw_length: u32,
    ) -> Result<()> {
        if let Err(e) = self.sink.append(sealed) {
            return Err(self.sink.write_error(e));
        }
        self.entries.push(PackEntry {
            id: entry_id,
            kind: self.kind,
            offset: self.len as u64,
            length: sealed.len() as u32,
            raw_length,
        });
        self.len += sealed.len();
        Ok(())
    }

    /// Bytes so far (without the trailer).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of blobs added.
    pub fn blob_count(&self) -> usize {
        self.entries.len()
    }

    /// Seals the trailer and names the pack. Fails only when a staged pack cannot be
    /// written.
    pub fn finish(self) -> Result<FinishedPack> {
        let Self {
            kind,
            session,
            sink,
            len,
            entries,
        } = self;
        let header = match &sink {
            Sink::Memory(bytes) => &bytes[..SESSION_HEADER_LEN],
            Sink::Staged { header, .. } => &header[..],
        };
        let aad = trailer_aad(header);
        let mut trailer = Vec::new();
        session
            .key()
            .seal_into(&aad, &encode_trailer(&entries), &mut trailer);
        let trailer_len = trailer.len() as u32;
        trailer.extend_from_slice(&trailer_len.to_le_bytes());
        let size = (len + trailer.len()) as u64;
        let (id, contents) = match sink {
            Sink::Memory(mut bytes) => {
                bytes.extend_from_slice(&trailer);
                (content_hash(&bytes), PackContents::Memory(bytes))
            }
            Sink::Staged {
                mut file,
                mut hasher,
                ..
            } => {
                hasher.update(&trailer);
                file.write_all(&trailer)
                    .map_err(|e| staged_write_error(&file, e))?;
                // `content_hash` is unkeyed BLAKE3, so the running hash is the same.
                (*hasher.finalize().as_bytes(), PackContents::Staged(file))
            }
        };
        Ok(FinishedPack {
            id: PackId::from_bytes(id),
            kind: pack_kind(kind),
            size,
            contents,
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::staged::WRITE_SIZE;
    use crate::backend::{Backend, LocalBackend};
    use crate::blob::seal_blob;
    use crate::crypto::MasterKey;
    use crate::id::BlobId;

    /// Blobs of every size around the staged file's buffer: tiny, just under, exactly at
    /// and well above it, so every branch of the buffered write is taken.
    fn sealed_blobs(master: &MasterKey, session: &SealingSession) -> Vec<(BlobId, Vec<u8>, u32)> {
        [
            10,
            1000,
            WRITE_SIZE - 100,
            WRITE_SIZE,
            3 * WRITE_SIZE + 7,
            5,
            70_000,
        ]
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            // Incompressible, so the sealed sizes stay around the plaintext's.
            let plaintext: Vec<u8> = (0..size)
                .map(|j| {
                    (j as u32)
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(i as u32) as u8
                        ^ (j >> 8) as u8
                })
                .collect();
            let id = BlobId::from_bytes(master.writer().blob_id_bytes(&plaintext));
            let sealed = seal_blob(session.key(), BlobKind::Data, &id, &plaintext, 1);
            (id, sealed, size as u32)
        })
        .collect()
    }

    #[test]
    fn a_staged_pack_stores_the_bytes_and_id_of_the_same_pack_built_in_memory() {
        let dir = tempfile::tempdir().expect("temp dir");
        let backend = LocalBackend::create(dir.path().join("repo")).expect("create");
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let blobs = sealed_blobs(&master, &session);

        let mut in_memory = PackWriter::new(BlobKind::Data, session.clone());
        let file = backend
            .stage("data/")
            .expect("stage")
            .expect("a local store stages");
        let mut staged = PackWriter::staged(BlobKind::Data, session.clone(), file).expect("header");
        for (id, sealed, raw) in &blobs {
            in_memory.add(*id, sealed, *raw).expect("add in memory");
            staged.add(*id, sealed, *raw).expect("add staged");
            assert_eq!(staged.len(), in_memory.len());
        }
        let body_len = in_memory.len();
        let in_memory = in_memory.finish().expect("finish in memory");
        let staged = staged.finish().expect("finish staged");
        let expected = in_memory.bytes().expect("in memory").to_vec();
        assert_eq!(staged.entries, in_memory.entries);
        // The trailers differ (each seal draws its own nonce); everything else is equal.
        assert_eq!(staged.size, expected.len() as u64);
        assert!(staged.bytes().is_none());
        let (id, size, name) = (staged.id, staged.size, staged.name());
        let PackContents::Staged(file) = staged.contents else {
            panic!("a staged pack's contents are a staged file");
        };
        assert_eq!(file.len(), size);
        backend.publish(file, &name).expect("publish");
        let stored = backend.get(&name).expect("read back");
        assert_eq!(
            id.as_bytes(),
            &content_hash(&stored),
            "the id is the stored bytes' hash"
        );
        assert_eq!(
            stored[..body_len],
            expected[..body_len],
            "header and blobs differ"
        );
        let parsed = super::super::parse_pack(&stored, &master, &name).expect("valid pack");
        assert_eq!(parsed.entries, in_memory.entries);
    }
}
