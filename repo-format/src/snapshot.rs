//! Snapshots: the manifest of one backup, and the single commit point of a backup.
//!
//! Object layout: header (8) || session public key (32) || body sealed with the session key
//! (associated data `"bunker snapshot"` || the 40 header bytes).

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::{MasterKey, SealingSession};
use crate::error::{Error, Result};
use crate::id::{BlobId, SnapshotId};
use crate::object::{ObjectKind, open_session_object, seal_session_object};
use crate::tree::{Timestamp, decode_timestamp, encode_timestamp};

const BODY_VERSION: u8 = 1;

/// What was backed up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceKind {
    /// Files and directories.
    #[default]
    Files,
    /// A block device or disk image.
    Volume,
    /// The output of a command (e.g. a database dump).
    Stream,
}

impl SourceKind {
    /// `files`, `volume` or `stream`.
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Files => "files",
            SourceKind::Volume => "volume",
            SourceKind::Stream => "stream",
        }
    }
}

/// How consistent the captured data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsistencyLevel {
    /// Nothing was done to quiesce the source: files may be mutually inconsistent.
    #[default]
    None,
    /// A point-in-time image (filesystem freeze or snapshot).
    Crash,
    /// The application itself produced a consistent state (hooks, dump).
    Application,
}

impl ConsistencyLevel {
    /// `none`, `crash` or `application`.
    pub fn name(self) -> &'static str {
        match self {
            ConsistencyLevel::None => "none",
            ConsistencyLevel::Crash => "crash",
            ConsistencyLevel::Application => "application",
        }
    }
}

/// Figures about the backup that made the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Other entries (symlinks, devices, fifos, sockets).
    pub others: u64,
    /// Bytes of file content in the snapshot.
    pub bytes: u64,
    /// Files that were not in the parent snapshot.
    pub files_new: u64,
    /// Files that were read again because they changed.
    pub files_changed: u64,
    /// Files taken unchanged from the parent without reading them.
    pub files_unchanged: u64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes of blobs that were new to the repository.
    pub bytes_added: u64,
    /// Bytes of packs written (after compression and sealing).
    pub bytes_stored: u64,
    /// New data blobs.
    pub data_blobs_added: u64,
    /// New tree blobs.
    pub tree_blobs_added: u64,
    /// Wall time of the backup in milliseconds.
    pub duration_ms: u64,
    /// Entries that could not be read completely.
    pub errors: u64,
}

/// A snapshot's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// When the backup started (or the time given with `--time`).
    pub time: Timestamp,
    /// Host name that made it.
    pub host: String,
    /// User that made it.
    pub username: String,
    /// Absolute source paths, raw bytes.
    pub paths: Vec<Vec<u8>>,
    /// `key=value` tags, as pairs.
    pub tags: Vec<(String, String)>,
    /// The snapshot this one was based on.
    pub parent: Option<SnapshotId>,
    /// Root tree.
    pub tree: BlobId,
    /// What was backed up.
    pub source_kind: SourceKind,
    /// How consistent the data is.
    pub consistency: ConsistencyLevel,
    /// What the quiesce step did, in words.
    pub consistency_detail: String,
    /// Exclude patterns in effect.
    pub excludes: Vec<String>,
    /// Figures.
    pub summary: Summary,
    /// Entries that could not be read, with the reason (at most a few thousand kept).
    pub errors: Vec<String>,
    /// Version of the program that wrote it.
    pub program_version: String,
}

/// What a snapshot written by this build records as its `program_version`.
pub const PROGRAM_VERSION: &str = concat!("bunker ", env!("CARGO_PKG_VERSION"));

/// The tag `rewrite` adds to the snapshot it writes: `rewritten=<original's short id>`.
pub const REWRITTEN_TAG: &str = "rewritten";
/// The tag `repair snapshots` adds to a replacement: `repaired=<original's short id>`.
pub const REPAIRED_TAG: &str = "repaired";

/// True for the tags that say where a snapshot came from ([`REWRITTEN_TAG`],
/// [`REPAIRED_TAG`]) rather than what it holds: grouping by tags leaves them out, so a
/// rewritten snapshot stays in its original's group.
pub fn is_provenance_tag(key: &str) -> bool {
    key == REWRITTEN_TAG || key == REPAIRED_TAG
}

/// What the body's seal binds besides the header (FORMAT.md).
const SEAL_CONTEXT: &[u8] = b"bunker snapshot";

impl Snapshot {
    /// Encodes the body plaintext.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        enc.u8(BODY_VERSION);
        encode_timestamp(&mut enc, self.time);
        enc.str(&self.host).str(&self.username);
        enc.count(self.paths.len());
        for path in &self.paths {
            enc.bytes(path);
        }
        enc.count(self.tags.len());
        for (key, value) in &self.tags {
            enc.str(key).str(value);
        }
        match &self.parent {
            Some(parent) => enc.u8(1).raw(parent.as_bytes()),
            None => enc.u8(0),
        };
        enc.raw(self.tree.as_bytes());
        enc.u8(match self.source_kind {
            SourceKind::Files => 0,
            SourceKind::Volume => 1,
            SourceKind::Stream => 2,
        });
        enc.u8(match self.consistency {
            ConsistencyLevel::None => 0,
            ConsistencyLevel::Crash => 1,
            ConsistencyLevel::Application => 2,
        });
        enc.str(&self.consistency_detail);
        enc.count(self.excludes.len());
        for exclude in &self.excludes {
            enc.str(exclude);
        }
        let s = &self.summary;
        for value in [
            s.files,
            s.dirs,
            s.others,
            s.bytes,
            s.files_new,
            s.files_changed,
            s.files_unchanged,
            s.bytes_read,
            s.bytes_added,
            s.bytes_stored,
            s.data_blobs_added,
            s.tree_blobs_added,
            s.duration_ms,
            s.errors,
        ] {
            enc.u64(value);
        }
        enc.count(self.errors.len());
        for error in &self.errors {
            enc.str(error);
        }
        enc.str(&self.program_version);
        enc.finish()
    }

    /// Decodes the body plaintext.
    pub fn decode_body(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        dec.version("snapshot version", BODY_VERSION)?;
        let time = decode_timestamp(&mut dec, "time")?;
        let host = dec.string("host")?;
        let username = dec.string("username")?;
        let path_count = dec.count(4, "path count")?;
        let mut paths = Vec::with_capacity(path_count);
        for _ in 0..path_count {
            paths.push(dec.bytes("path")?.to_vec());
        }
        let tag_count = dec.count(8, "tag count")?;
        let mut tags = Vec::with_capacity(tag_count);
        for _ in 0..tag_count {
            tags.push((dec.string("tag key")?, dec.string("tag value")?));
        }
        let parent = match dec.u8("parent flag")? {
            0 => None,
            1 => Some(SnapshotId::from_bytes(dec.array("parent")?)),
            other => return Err(DecodeError::invalid("parent flag", format!("{other}"))),
        };
        let tree = BlobId::from_bytes(dec.array("tree")?);
        let source_kind = match dec.u8("source kind")? {
            0 => SourceKind::Files,
            1 => SourceKind::Volume,
            2 => SourceKind::Stream,
            other => return Err(DecodeError::invalid("source kind", format!("{other}"))),
        };
        let consistency = match dec.u8("consistency")? {
            0 => ConsistencyLevel::None,
            1 => ConsistencyLevel::Crash,
            2 => ConsistencyLevel::Application,
            other => return Err(DecodeError::invalid("consistency", format!("{other}"))),
        };
        let consistency_detail = dec.string("consistency detail")?;
        let exclude_count = dec.count(4, "exclude count")?;
        let mut excludes = Vec::with_capacity(exclude_count);
        for _ in 0..exclude_count {
            excludes.push(dec.string("exclude")?);
        }
        let mut values = [0u64; 14];
        for value in &mut values {
            *value = dec.u64("summary")?;
        }
        let [
            files,
            dirs,
            others,
            bytes,
            files_new,
            files_changed,
            files_unchanged,
            bytes_read,
            bytes_added,
            bytes_stored,
            data_blobs_added,
            tree_blobs_added,
            duration_ms,
            errors_count,
        ] = values;
        let error_count = dec.count(4, "error count")?;
        let mut errors = Vec::with_capacity(error_count);
        for _ in 0..error_count {
            errors.push(dec.string("error")?);
        }
        let program_version = dec.string("program version")?;
        dec.finish()?;
        Ok(Snapshot {
            time,
            host,
            username,
            paths,
            tags,
            parent,
            tree,
            source_kind,
            consistency,
            consistency_detail,
            excludes,
            summary: Summary {
                files,
                dirs,
                others,
                bytes,
                files_new,
                files_changed,
                files_unchanged,
                bytes_read,
                bytes_added,
                bytes_stored,
                data_blobs_added,
                tree_blobs_added,
                duration_ms,
                errors: errors_count,
            },
            errors,
            program_version,
        })
    }

    /// Seals the snapshot into its stored form and names it.
    pub fn seal(&self, session: &SealingSession) -> (SnapshotId, Vec<u8>) {
        let out = seal_session_object(
            ObjectKind::Snapshot,
            SEAL_CONTEXT,
            session,
            &self.encode_body(),
        );
        (SnapshotId::from_bytes(crate::id::content_hash(&out)), out)
    }

    /// Opens a stored snapshot.
    pub fn open(bytes: &[u8], key: &MasterKey, object: &str) -> Result<Self> {
        let body = open_session_object(
            ObjectKind::Snapshot,
            SEAL_CONTEXT,
            bytes,
            key,
            object,
            "snapshot",
        )?;
        Snapshot::decode_body(&body).map_err(|e| Error::decoding(object, e))
    }

    /// The value of tag `key`, if set.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
impl Snapshot {
    /// A snapshot of `tree` for the crate's tests: host `h`, user `u`, at the epoch, no
    /// paths, tags or errors; a test sets what it needs with struct update syntax.
    pub(crate) fn of_tree_for_tests(tree: BlobId) -> Self {
        Self {
            time: Timestamp::default(),
            host: "h".into(),
            username: "u".into(),
            paths: vec![],
            tags: vec![],
            parent: None,
            tree,
            source_kind: SourceKind::default(),
            consistency: ConsistencyLevel::default(),
            consistency_detail: String::new(),
            excludes: vec![],
            summary: Summary::default(),
            errors: vec![],
            program_version: "t".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn snapshot_strategy() -> impl Strategy<Value = Snapshot> {
        (
            (any::<i64>(), 0u32..1_000_000_000, ".{0,20}", ".{0,10}"),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..3),
            proptest::collection::vec(("[a-z]{1,8}", ".{0,10}"), 0..3),
            (
                proptest::option::of(any::<[u8; 32]>()),
                any::<[u8; 32]>(),
                0u8..3,
                0u8..3,
            ),
            (
                any::<[u64; 14]>(),
                proptest::collection::vec(".{0,30}", 0..3),
            ),
        )
            .prop_map(
                |(
                    (sec, nsec, host, username),
                    paths,
                    tags,
                    (parent, tree, kind, level),
                    (v, errors),
                )| Snapshot {
                    time: Timestamp { sec, nsec },
                    host,
                    username,
                    paths,
                    tags,
                    parent: parent.map(SnapshotId::from_bytes),
                    tree: BlobId::from_bytes(tree),
                    source_kind: [SourceKind::Files, SourceKind::Volume, SourceKind::Stream]
                        [kind as usize],
                    consistency: [
                        ConsistencyLevel::None,
                        ConsistencyLevel::Crash,
                        ConsistencyLevel::Application,
                    ][level as usize],
                    consistency_detail: "fsfreeze /srv".into(),
                    excludes: vec!["*.tmp".into()],
                    summary: Summary {
                        files: v[0],
                        dirs: v[1],
                        others: v[2],
                        bytes: v[3],
                        files_new: v[4],
                        files_changed: v[5],
                        files_unchanged: v[6],
                        bytes_read: v[7],
                        bytes_added: v[8],
                        bytes_stored: v[9],
                        data_blobs_added: v[10],
                        tree_blobs_added: v[11],
                        duration_ms: v[12],
                        errors: v[13],
                    },
                    errors,
                    program_version: "0.1.0".into(),
                },
            )
    }

    proptest! {
        #[test]
        fn sealed_snapshot_round_trips(snapshot in snapshot_strategy()) {
            let master = MasterKey::generate();
            let session = master.writer().new_session();
            let (id, bytes) = snapshot.seal(&session);
            prop_assert_eq!(id.as_bytes(), &crate::id::content_hash(&bytes));
            prop_assert_eq!(Snapshot::open(&bytes, &master, "s").unwrap(), snapshot);
        }

        #[test]
        fn truncated_body_never_panics(snapshot in snapshot_strategy(), cut: usize) {
            let body = snapshot.encode_body();
            prop_assert!(Snapshot::decode_body(&body[..cut % body.len()]).is_err());
        }

        /// A body of another version authenticates, so it is a newer format's snapshot
        /// (§16: *unsupported*), not a damaged one.
        #[test]
        fn a_newer_body_version_is_unsupported(snapshot in snapshot_strategy(), version in 2u8..) {
            let master = MasterKey::generate();
            let session = master.writer().new_session();
            let mut body = snapshot.encode_body();
            body[0] = version;
            let bytes = seal_session_object(ObjectKind::Snapshot, SEAL_CONTEXT, &session, &body);
            match Snapshot::open(&bytes, &master, "s") {
                Err(Error::Unsupported { object, what }) => {
                    prop_assert_eq!(object, "s");
                    prop_assert_eq!(
                        what,
                        format!("snapshot version {version} is not supported (this build reads 1)")
                    );
                }
                other => prop_assert!(false, "expected unsupported, got {:?}", other),
            }
        }
    }
}
