//! Audit records (`audit/<hex>`): who did what to the repository, where, and how it went.
//!
//! Every backup, restore, forget, prune, check and verify writes one. Records are immutable
//! objects like snapshots, sealed the same way: a writer (even one holding only a put-only
//! key) can add records but not read them; holders of a full key read them all. They are
//! never referenced by snapshots, so prune leaves them alone.

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::{MasterKey, SealingSession};
use crate::error::{Error, Result};
use crate::id::{AuditId, SnapshotId};
use crate::object::{ObjectKind, open_session_object, seal_session_object};
use crate::tree::{Timestamp, decode_timestamp, encode_timestamp};

const BODY_VERSION: u8 = 1;

/// One audit record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When the operation started.
    pub time: Timestamp,
    /// The host it ran on.
    pub host: String,
    /// The user it ran as.
    pub user: String,
    /// `backup`, `restore`, `forget`, `prune`, `check`, `verify`, ...
    pub operation: String,
    /// What it acted on: source paths, a restore target, a snapshot spec.
    pub target: String,
    /// `succeeded`, `failed`, `partial`, `damage-found`, ...
    pub outcome: String,
    /// How long it took.
    pub duration_ms: u64,
    /// The snapshot it wrote or read, if one.
    pub snapshot: Option<SnapshotId>,
    /// Anything else worth keeping, as key/value pairs in the writer's order.
    pub details: Vec<(String, String)>,
}

/// What the body's seal binds besides the header (FORMAT.md).
const SEAL_CONTEXT: &[u8] = b"bunker audit";

impl AuditRecord {
    /// Encodes the body plaintext.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        enc.u8(BODY_VERSION);
        encode_timestamp(&mut enc, self.time);
        enc.str(&self.host).str(&self.user);
        enc.str(&self.operation)
            .str(&self.target)
            .str(&self.outcome);
        enc.u64(self.duration_ms);
        match &self.snapshot {
            Some(id) => enc.u8(1).raw(id.as_bytes()),
            None => enc.u8(0),
        };
        enc.count(self.details.len());
        for (key, value) in &self.details {
            enc.str(key).str(value);
        }
        enc.finish()
    }

    /// Decodes the body plaintext.
    pub fn decode_body(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        dec.version("audit version", BODY_VERSION)?;
        let time = decode_timestamp(&mut dec, "time")?;
        let host = dec.string("host")?;
        let user = dec.string("user")?;
        let operation = dec.string("operation")?;
        let target = dec.string("target")?;
        let outcome = dec.string("outcome")?;
        let duration_ms = dec.u64("duration")?;
        let snapshot = match dec.u8("snapshot flag")? {
            0 => None,
            1 => Some(SnapshotId::from_bytes(dec.array("snapshot")?)),
            other => return Err(DecodeError::invalid("snapshot flag", format!("{other}"))),
        };
        let count = dec.count(8, "detail count")?;
        let mut details = Vec::with_capacity(count);
        for _ in 0..count {
            details.push((dec.string("detail key")?, dec.string("detail value")?));
        }
        if dec.remaining() != 0 {
            return Err(DecodeError::invalid("audit record", "trailing bytes"));
        }
        Ok(AuditRecord {
            time,
            host,
            user,
            operation,
            target,
            outcome,
            duration_ms,
            snapshot,
            details,
        })
    }

    /// Seals the record into an object; returns its id (the content hash) and bytes.
    pub fn seal(&self, session: &SealingSession) -> (AuditId, Vec<u8>) {
        let out = seal_session_object(
            ObjectKind::Audit,
            SEAL_CONTEXT,
            session,
            &self.encode_body(),
        );
        (AuditId::from_bytes(crate::id::content_hash(&out)), out)
    }

    /// Opens a stored record.
    pub fn open(bytes: &[u8], key: &MasterKey, object: &str) -> Result<Self> {
        let body = open_session_object(
            ObjectKind::Audit,
            SEAL_CONTEXT,
            bytes,
            key,
            object,
            "audit record",
        )?;
        AuditRecord::decode_body(&body).map_err(|e| Error::decoding(object, e))
    }
}

/// Stores `record` under a session of its own: needs only the writer key, so any writer
/// can leave a record. An existing object of the same name has the same bytes.
pub fn store(
    backend: &dyn crate::backend::Backend,
    writer: &crate::crypto::WriterKey,
    record: &AuditRecord,
) -> Result<AuditId> {
    let session = writer.new_session();
    let (id, bytes) = record.seal(&session);
    match backend.put_if_absent(&ObjectKind::Audit.name(&id.to_hex()), &bytes) {
        Ok(()) => Ok(id),
        Err(crate::error::Error::AlreadyExists { .. }) => Ok(id),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> AuditRecord {
        AuditRecord {
            time: Timestamp {
                sec: 1_795_000_000,
                nsec: 5,
            },
            host: "web-1".into(),
            user: "root".into(),
            operation: "restore".into(),
            target: "/srv/restore".into(),
            outcome: "succeeded".into(),
            duration_ms: 1234,
            snapshot: Some(SnapshotId::from_bytes([7; 32])),
            details: vec![("files".into(), "12".into())],
        }
    }

    #[test]
    fn sealed_records_round_trip_and_only_readers_open_them() {
        let master = MasterKey::generate();
        let session = master.writer().new_session();
        let (id, bytes) = record().seal(&session);
        assert_eq!(id.as_bytes(), &crate::id::content_hash(&bytes));
        assert_eq!(AuditRecord::open(&bytes, &master, "a").unwrap(), record());
        let other = MasterKey::generate();
        assert!(AuditRecord::open(&bytes, &other, "a").is_err());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(AuditRecord::open(&flipped, &master, "a").is_err());
    }

    #[test]
    fn truncated_or_extended_bodies_are_rejected() {
        let body = record().encode_body();
        for cut in 0..body.len() {
            assert!(AuditRecord::decode_body(&body[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(AuditRecord::decode_body(&longer).is_err());
        assert_eq!(AuditRecord::decode_body(&body).unwrap(), record());
    }
}
