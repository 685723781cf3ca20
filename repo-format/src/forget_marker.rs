//! Forget markers (`forgotten/<hex>`): forgetting a snapshot whose object is still locked.
//!
//! In a locked repository a snapshot object cannot be deleted before its retain-until date.
//! `forget` then writes a marker naming it instead. From then on the snapshot is gone for
//! every reader: listing, restore, retention, prune's reachability and `lock extend` (which
//! no longer extends its lock or the locks of packs only it needs). Each prune run
//! ([`finish`]) deletes a forgotten snapshot object once its lock lapses, and the marker once
//! its snapshot is gone and its own lock lapsed.
//!
//! Markers are sealed with the forget key, derived from the data secret (FORMAT.md §13b):
//! only a full-key holder can write one, so a put-only writer cannot get a snapshot deleted.
//! A marker that does not open is ignored (its snapshot stays visible) and `check` reports
//! it: a damaged marker never hides data.

use std::collections::HashSet;
use std::time::SystemTime;

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::{SnapshotId, content_hash};
use crate::object::{HEADER_LEN, ObjectKind};
use crate::object_lock::locked_until;
use crate::repository::Repository;
use crate::tree::{Timestamp, decode_timestamp, encode_timestamp};

const BODY_VERSION: u8 = 1;

/// What the seal binds besides the header (FORMAT.md §13b).
const SEAL_CONTEXT: &[u8] = b"bunker forget marker";

/// One forgotten snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForgetMarker {
    /// When it was forgotten (the writer's clock; informational).
    pub time: Timestamp,
    /// The snapshot forgotten.
    pub snapshot: SnapshotId,
}

fn aad(header: &[u8]) -> Vec<u8> {
    [SEAL_CONTEXT, header].concat()
}

impl ForgetMarker {
    /// Encodes the body plaintext.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        enc.u8(BODY_VERSION);
        encode_timestamp(&mut enc, self.time);
        enc.raw(self.snapshot.as_bytes());
        enc.finish()
    }

    /// Decodes the body plaintext.
    pub fn decode_body(bytes: &[u8]) -> std::result::Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        dec.version("forget marker version", BODY_VERSION)?;
        let time = decode_timestamp(&mut dec, "time")?;
        let snapshot = SnapshotId::from_bytes(dec.array("snapshot")?);
        if dec.remaining() != 0 {
            return Err(DecodeError::invalid("forget marker", "trailing bytes"));
        }
        Ok(ForgetMarker { time, snapshot })
    }

    /// Seals the marker with the forget key; returns its object name and bytes.
    pub fn seal(&self, key: &MasterKey) -> (String, Vec<u8>) {
        let header = ObjectKind::ForgetMarker.header();
        let mut out = header.to_vec();
        key.forget_key()
            .seal_into(&aad(&header), &self.encode_body(), &mut out);
        let name = ObjectKind::ForgetMarker.name(&hex::encode(content_hash(&out)));
        (name, out)
    }

    /// Opens a stored marker.
    pub fn open(bytes: &[u8], key: &MasterKey, object: &str) -> Result<Self> {
        ObjectKind::ForgetMarker.check_header(bytes, object)?;
        let body = key
            .forget_key()
            .open(&aad(&bytes[..HEADER_LEN]), &bytes[HEADER_LEN..])
            .map_err(|_| Error::corrupt(object, "forget marker does not authenticate"))?;
        ForgetMarker::decode_body(&body).map_err(|e| Error::decoding(object, e))
    }
}

/// Every marker of a repository: those that open, and those that do not.
#[derive(Debug, Default)]
pub struct MarkerListing {
    /// Readable markers with their object names.
    pub markers: Vec<(String, ForgetMarker)>,
    /// Markers that could not be read or opened, with why.
    pub unreadable: Vec<(String, Error)>,
}

impl MarkerListing {
    /// The snapshots readable markers forget.
    pub fn forgotten(&self) -> HashSet<SnapshotId> {
        self.markers.iter().map(|(_, m)| m.snapshot).collect()
    }
}

/// Reads every marker. The content hash is verified, so a damaged marker is unreadable.
pub fn list(repo: &Repository, key: &MasterKey) -> Result<MarkerListing> {
    let mut listing = MarkerListing::default();
    // A marker deleted by a concurrent prune is skipped: nothing to hide any more.
    crate::repository::fan_out::read_listed(
        repo.backend().as_ref(),
        ObjectKind::ForgetMarker.prefix(),
        |meta, read| {
            let opened = read.and_then(|bytes| {
                let expected = meta
                    .name
                    .strip_prefix(ObjectKind::ForgetMarker.prefix())
                    .and_then(|hex| hex::decode(hex).ok());
                if expected.as_deref() != Some(content_hash(&bytes).as_slice()) {
                    return Err(Error::corrupt(
                        &meta.name,
                        "content does not match its name (damaged or truncated)",
                    ));
                }
                ForgetMarker::open(&bytes, key, &meta.name)
            });
            match opened {
                Ok(marker) => listing.markers.push((meta.name.clone(), marker)),
                Err(e) => listing.unreadable.push((meta.name.clone(), e)),
            }
            Ok(())
        },
    )?;
    listing.markers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(listing)
}

/// What [`forget`] did with a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forgotten {
    /// Its object was deleted.
    Deleted,
    /// Its object is locked until `until`: a marker (`marker`) hides it, and a prune run
    /// after that date deletes it.
    Hidden {
        /// When the snapshot object's lock lapses.
        until: SystemTime,
        /// The marker's object name.
        marker: String,
    },
}

/// Forgets snapshot `id`: deletes it, or, while its lock holds, writes a marker. Needs the
/// full key.
pub fn forget(repo: &Repository, id: &SnapshotId) -> Result<Forgotten> {
    let key = repo.master_key("forgetting snapshots")?;
    let name = ObjectKind::Snapshot.name(&id.to_hex());
    let now = SystemTime::now();
    if locked_until(repo, &name, now)?.is_none() {
        match repo.delete_snapshot(id) {
            Ok(()) => return Ok(Forgotten::Deleted),
            // The storage's clock disagrees with ours: the lock still holds.
            Err(Error::Locked { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    let marker = ForgetMarker {
        time: Timestamp::now(),
        snapshot: *id,
    };
    let (marker_name, bytes) = marker.seal(key);
    repo.put_content_named(&marker_name, bytes)?;
    let until = repo.backend().retained_until(&name)?.unwrap_or(now);
    Ok(Forgotten::Hidden {
        until,
        marker: marker_name,
    })
}

/// What [`finish`] did.
#[derive(Debug, Clone, Default)]
pub struct Finished {
    /// Forgotten snapshot objects deleted (their locks had lapsed).
    pub snapshots_deleted: usize,
    /// Markers removed (their snapshots gone, their own locks lapsed).
    pub markers_removed: usize,
    /// Objects that stay until their locks lapse, with that date.
    pub held: Vec<(String, SystemTime)>,
}

/// Deletes each forgotten snapshot whose lock has lapsed at `now`, then each marker whose
/// snapshot is gone and whose own lock has lapsed (run by prune). Unreadable markers are
/// left alone.
pub fn finish(repo: &Repository, now: SystemTime) -> Result<Finished> {
    let key = repo.master_key("pruning")?;
    let listing = list(repo, key)?;
    let mut finished = Finished::default();
    for (marker_name, marker) in &listing.markers {
        let name = ObjectKind::Snapshot.name(&marker.snapshot.to_hex());
        let present = match repo.backend().head(&name) {
            Ok(_) => true,
            Err(e) if e.is_not_found() => false,
            Err(e) => return Err(e),
        };
        if present {
            if let Some(until) = locked_until(repo, &name, now)? {
                finished.held.push((name, until));
                continue;
            }
            repo.delete_snapshot(&marker.snapshot)?;
            finished.snapshots_deleted += 1;
        }
        if let Some(until) = locked_until(repo, marker_name, now)? {
            finished.held.push((marker_name.clone(), until));
            continue;
        }
        repo.backend().delete(marker_name)?;
        finished.markers_removed += 1;
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker() -> ForgetMarker {
        ForgetMarker {
            time: Timestamp {
                sec: 1_795_000_000,
                nsec: 9,
            },
            snapshot: SnapshotId::from_bytes([3; 32]),
        }
    }

    #[test]
    fn only_the_full_key_of_the_repository_opens_a_marker() {
        let key = MasterKey::generate();
        let (name, bytes) = marker().seal(&key);
        assert!(name.starts_with("forgotten/"));
        assert_eq!(ForgetMarker::open(&bytes, &key, &name).unwrap(), marker());
        // A repository made by `copy` shares the writer secret but not the data secret.
        let copy = MasterKey::generate_sharing_writer(key.writer());
        assert!(ForgetMarker::open(&bytes, &copy, &name).is_err());
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(ForgetMarker::open(&flipped, &key, &name).is_err());
    }

    #[test]
    fn truncated_or_extended_bodies_are_rejected() {
        let body = marker().encode_body();
        for cut in 0..body.len() {
            assert!(
                ForgetMarker::decode_body(&body[..cut]).is_err(),
                "cut {cut}"
            );
        }
        let mut longer = body.clone();
        longer.push(0);
        assert!(ForgetMarker::decode_body(&longer).is_err());
    }
}
