//! Checking packs: trailers against the index, and every byte when reading data.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::{BlobId, PackId};
use crate::index::BlobLocation;
use crate::object::{ObjectKind, SESSION_HEADER_LEN, verify_content_hash};
use crate::pack::{PackEntry, parse_pack, trailer_location};
use crate::repository::Repository;

use super::*;

pub(crate) struct PackOutcome {
    pub(crate) pack: PackId,
    pub(crate) name: String,
    pub(crate) problems: Vec<Problem>,
    pub(crate) bad_blobs: Vec<(BlobId, String)>,
    /// An error that is not damage (the storage could not be reached): the check stops
    /// with it rather than call the pack damaged.
    pub(crate) fatal: Option<Error>,
    pub(crate) bytes_read: u64,
    pub(crate) fully_read: bool,
}

/// Checks each pack of `work` (in order, on several threads): its trailer against the
/// index, and, when its flag is set and the `deadline` (if any) has not passed, every byte.
/// Past the deadline, one pack is still read in full if none was yet.
pub(crate) fn check_packs(
    repo: &Repository,
    work: &[(PackId, bool)],
    by_pack: &HashMap<PackId, Vec<(BlobId, BlobLocation)>>,
    stored: &HashMap<PackId, crate::gc::StoredPack>,
    threads: usize,
    deadline: Option<Instant>,
) -> Vec<PackOutcome> {
    let read_any = AtomicBool::new(false);
    parallel_map(work, threads, |&(pack, wanted)| {
        let read_data = wanted
            && match deadline {
                None => true,
                Some(deadline) if Instant::now() < deadline => {
                    read_any.store(true, Ordering::Relaxed);
                    true
                }
                Some(_) => !read_any.swap(true, Ordering::Relaxed),
            };
        let expected = by_pack.get(&pack).map(Vec::as_slice).unwrap_or_default();
        match stored.get(&pack) {
            Some(found) => check_one_pack(
                repo,
                pack,
                found.object_kind(),
                found.size,
                expected,
                read_data,
            ),
            // Only stored packs are planned; kept total for safety.
            None => PackOutcome {
                pack,
                name: ObjectKind::DataPack.name(&pack.to_hex()),
                problems: Vec::new(),
                bad_blobs: Vec::new(),
                fatal: None,
                bytes_read: 0,
                fully_read: false,
            },
        }
    })
}

pub(crate) fn check_one_pack(
    repo: &Repository,
    pack: PackId,
    kind: ObjectKind,
    size: u64,
    expected: &[(BlobId, BlobLocation)],
    read_data: bool,
) -> PackOutcome {
    let name = kind.name(&pack.to_hex());
    let mut outcome = PackOutcome {
        pack,
        name: name.clone(),
        problems: Vec::new(),
        bad_blobs: Vec::new(),
        fatal: None,
        bytes_read: 0,
        fully_read: false,
    };
    let fail_all = |outcome: &mut PackOutcome, message: String| {
        outcome.problems.push(Problem {
            object: name.clone(),
            message: message.clone(),
        });
        for (blob, _) in expected {
            outcome
                .bad_blobs
                .push((*blob, format!("{name}: {message}")));
        }
    };
    let trailer = if read_data {
        let bytes = match repo.backend().get(&name) {
            Ok(bytes) => bytes,
            Err(e) if !e.is_damage() => {
                outcome.fatal = Some(e);
                return outcome;
            }
            Err(e) => {
                fail_all(&mut outcome, e.to_string());
                return outcome;
            }
        };
        outcome.bytes_read = bytes.len() as u64;
        outcome.fully_read = true;
        if let Err(e) = verify_content_hash(&bytes, pack.as_bytes(), &name) {
            // Keep going: the trailer and blobs tell which blobs are still intact.
            outcome.problems.push(Problem {
                object: name.clone(),
                message: error_message(&e),
            });
        }
        match repo
            .master_key("checking packs")
            .and_then(|key| parse_pack(&bytes, key, &name))
        {
            Ok(trailer) => {
                for entry in &trailer.entries {
                    let location = entry.location_in(pack);
                    if let Err(e) = repo.open_blob_in(&entry.id, &location, &bytes, 0) {
                        if !e.is_damage() {
                            outcome.fatal = Some(e);
                            return outcome;
                        }
                        // The error names the blob (`blob::open_blob`, `check_hash`).
                        outcome.problems.push(Problem {
                            object: name.clone(),
                            message: error_message(&e),
                        });
                        outcome.bad_blobs.push((
                            entry.id,
                            format!(
                                "{} blob {} in {name} is damaged",
                                entry.kind.name(),
                                entry.id
                            ),
                        ));
                    }
                }
                Ok(trailer.entries)
            }
            Err(e) => Err(e),
        }
    } else {
        read_trailer(repo, &name, size)
    };
    match trailer {
        Ok(entries) => compare_with_index(&name, pack, &entries, expected, &mut outcome),
        Err(e) if !e.is_damage() => outcome.fatal = Some(e),
        Err(e) => fail_all(&mut outcome, error_message(&e)),
    }
    outcome
}

pub(crate) fn error_message(e: &Error) -> String {
    match e {
        Error::Corrupt { reason, .. } => reason.clone(),
        Error::Unsupported { what, .. } => format!("unsupported: {what}"),
        Error::NotFound { .. } => "not found".to_owned(),
        other => other.to_string(),
    }
}

/// Reads and opens a pack's trailer with three range reads (length field, header, trailer).
pub(crate) fn read_trailer(repo: &Repository, name: &str, size: u64) -> Result<Vec<PackEntry>> {
    let backend = repo.backend();
    if size < SESSION_HEADER_LEN as u64 + 4 {
        return Err(Error::corrupt(
            name,
            format!("pack of {size} bytes is truncated"),
        ));
    }
    let length_bytes = backend.get_range(name, size - 4, 4)?;
    let length_field: [u8; 4] = length_bytes
        .as_slice()
        .try_into()
        .map_err(|_| Error::corrupt(name, "short read of the trailer length"))?;
    let (offset, length) = trailer_location(size, length_field, name)?;
    let header = backend.get_range(name, 0, SESSION_HEADER_LEN as u64)?;
    let sealed = backend.get_range(name, offset, length)?;
    Ok(crate::pack::parse_trailer(
        &header,
        &sealed,
        offset,
        repo.master_key("checking packs")?,
        name,
    )?
    .entries)
}

pub(crate) fn compare_with_index(
    name: &str,
    pack: PackId,
    entries: &[PackEntry],
    expected: &[(BlobId, BlobLocation)],
    outcome: &mut PackOutcome,
) {
    let in_trailer: HashMap<BlobId, &PackEntry> = entries.iter().map(|e| (e.id, e)).collect();
    for (blob, location) in expected {
        let agrees = in_trailer.get(blob).is_some_and(|entry| {
            entry.kind == location.kind
                && entry.offset == location.offset
                && entry.length == location.length
                && entry.raw_length == location.raw_length
                && location.pack == pack
        });
        if !agrees {
            outcome.problems.push(Problem {
                object: name.to_owned(),
                message: format!("index entry for blob {blob} disagrees with the pack trailer"),
            });
            outcome.bad_blobs.push((
                *blob,
                format!("index entry for blob {blob} in {name} is wrong"),
            ));
        }
    }
}
