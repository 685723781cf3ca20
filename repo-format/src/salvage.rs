//! Salvaging damaged packs (`bunker repair packs`).
//!
//! Damage in storage (a flipped bit, a truncated object) loses only the blobs it touches:
//! every other blob of the pack still opens and re-hashes to its id. Salvage copies those
//! into new packs, takes the damaged pack out of the index and deletes it. When this host
//! kept a copy of the pack ([`Repository::metadata_copy`]: tree packs of a remote store),
//! the copy is the pack as it was stored, and every blob is copied from it instead.
//!
//! Why it matters: while the index lists a damaged blob, every backup deduplicates against
//! it, and new snapshots of the same data are broken too. Once salvage has taken it out of
//! the index, the next backup stores it again from the source (a file whose chunks are not
//! all stored is read again, whatever the files cache says), and every snapshot that refers
//! to it, the old ones included, is whole again: blobs are named by their content.
//!
//! The order keeps every readable blob reachable at every step:
//! 1. in a writer session with a heartbeat (so a prune meanwhile counts it as a live
//!    writer), the intact blobs are written to new packs and indexed: until step 2 they
//!    are listed twice;
//! 2. each index segment that lists a damaged pack is replaced: its other packs go into new
//!    segments, stored before the old segment is deleted;
//! 3. the damaged packs are deleted.
//!
//! An interruption leaves duplicates, never less; running salvage again finishes it. Like
//! `repair index`, it rewrites index segments: run it when no prune runs. In a repository
//! under Object Lock, a locked segment cannot be replaced before its lock lapses: the packs
//! it lists stay (reported), and a run after the lapse finishes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use crate::blob::BlobKind;
use crate::check::{error_message, parallel_map};
use crate::config::Operation;
use crate::error::{Error, Result};
use crate::id::{BlobId, IndexId, PackId};
use crate::index::{BlobLocation, IndexSegment, IndexedPack};
use crate::object::verify_content_hash;
use crate::pack::{PackEntry, parse_pack};
use crate::repository::Repository;
use crate::session::ActiveSession;

/// What to salvage.
#[derive(Debug, Clone, Default)]
pub struct SalvageOptions {
    /// The packs to examine (as `check` names them); empty: read every pack in storage.
    pub packs: Vec<PackId>,
    /// Threads reading packs (0 = one per CPU, at most 8).
    pub threads: usize,
    /// Host named in the session heartbeat written while salvaging.
    pub host: String,
}

/// A damaged pack and what salvage makes of it.
#[derive(Debug, Clone)]
pub struct DamagedPack {
    /// The pack.
    pub pack: PackId,
    /// Its object name (`data/ab/ab12...`).
    pub name: String,
    /// What is wrong with it, in words.
    pub damage: Vec<String>,
    /// The blobs that open and re-hash to their id: copied to new packs.
    pub intact: Vec<BlobId>,
    /// The blobs lost, with why: taken out of the index.
    pub lost: Vec<(BlobId, String)>,
    /// Where each intact blob is in the pack.
    locations: Vec<(BlobId, BlobLocation)>,
    /// The blobs are copied from this host's whole copy of the pack
    /// ([`Repository::metadata_copy`]), not from the damaged one in storage.
    pub from_copy: bool,
}

impl DamagedPack {
    /// `pack` (object `name`) with nothing found in it yet.
    fn new(pack: PackId, name: String, from_copy: bool) -> Self {
        Self {
            pack,
            name,
            damage: Vec::new(),
            intact: Vec::new(),
            lost: Vec::new(),
            locations: Vec::new(),
            from_copy,
        }
    }
}

/// What [`apply_pack_salvage`] will do; build it with [`plan_pack_salvage`].
#[derive(Debug, Clone)]
pub struct SalvagePlan {
    /// The damaged packs.
    pub damaged: Vec<DamagedPack>,
    /// Packs read and found intact (left alone).
    pub intact_packs: Vec<String>,
    host: String,
}

/// What [`apply_pack_salvage`] did.
#[derive(Debug, Clone, Default)]
pub struct SalvageReport {
    /// The damaged packs, with the blobs copied and lost.
    pub damaged: Vec<DamagedPack>,
    /// Packs read and found intact.
    pub intact_packs: Vec<String>,
    /// Index segments that listed a damaged pack, replaced.
    pub segments_replaced: Vec<IndexId>,
    /// Such segments Object Lock keeps until their lock lapses, with why: the damaged
    /// packs they list stay indexed (and in storage) until a later run.
    pub segments_left: Vec<(String, String)>,
    /// Index segments written: the copies' and the replacements'.
    pub segments_written: Vec<IndexId>,
    /// Damaged packs deleted.
    pub packs_deleted: Vec<String>,
    /// Damaged packs left in storage (Object Lock), with why.
    pub packs_left: Vec<(String, String)>,
    /// Of the damaged packs, those a locked index segment lists: left as they are, nothing
    /// copied (a subset of `packs_left`, which also names packs copied but not deleted).
    pub untouched: Vec<PackId>,
}

impl SalvageReport {
    /// Blobs copied to new packs: the intact ones of the damaged packs salvage acted on.
    pub fn blobs_copied(&self) -> usize {
        let acted_on = self
            .damaged
            .iter()
            .filter(|d| !self.untouched.contains(&d.pack));
        acted_on.map(|d| d.intact.len()).sum()
    }

    /// Blobs of the damaged packs that do not open: lost, or (in untouched packs) still
    /// indexed until a later run.
    pub fn blobs_lost(&self) -> usize {
        self.damaged.iter().map(|d| d.lost.len()).sum()
    }
}

/// Reads the packs `options` names (or every pack) and works out, for each damaged one,
/// which blobs can be copied and which are lost. Changes nothing. A pack named but missing
/// from storage counts as damaged with every blob the index lists in it lost.
pub fn plan_pack_salvage(repo: &Repository, options: &SalvageOptions) -> Result<SalvagePlan> {
    repo.check_features(Operation::Read)?;
    let indexed = indexed_packs(repo)?;
    let stored = crate::gc::stored_packs(repo)?;
    let mut candidates: Vec<(PackId, BlobKind)> = if options.packs.is_empty() {
        stored.iter().map(|(id, pack)| (*id, pack.kind)).collect()
    } else {
        let mut named = Vec::new();
        for pack in &options.packs {
            let kind = match (stored.get(pack), indexed.get(pack)) {
                (Some(found), _) => found.kind,
                (None, Some(listed)) => listed.kind,
                (None, None) => {
                    return Err(Error::NotFound {
                        object: format!("pack {pack} (neither in storage nor in the index)"),
                    });
                }
            };
            named.push((*pack, kind));
        }
        named
    };
    candidates.sort();
    candidates.dedup();
    let examined = parallel_map(&candidates, options.threads, |(pack, kind)| {
        let listed = indexed.get(pack).map_or(&[][..], |p| p.blobs.as_slice());
        examine(repo, *pack, *kind, listed, stored.contains_key(pack))
    });
    let mut damaged = Vec::new();
    let mut intact_packs = Vec::new();
    for ((pack, kind), result) in candidates.iter().zip(examined) {
        match result? {
            Some(found) => damaged.push(found),
            None => intact_packs.push(crate::pack::pack_name(*kind, pack)),
        }
    }
    Ok(SalvagePlan {
        damaged,
        intact_packs,
        host: options.host.clone(),
    })
}

/// Every pack the index lists, with its blobs as listed (the first segment's, if two list
/// it). Segments that do not load are `repair index`'s to replace; they are skipped here.
fn indexed_packs(repo: &Repository) -> Result<HashMap<PackId, IndexedPack>> {
    let mut packs = HashMap::new();
    repo.for_each_index_segment(|_, segment| {
        match segment {
            Ok(segment) => {
                for pack in segment.packs {
                    packs.entry(pack.id).or_insert(pack);
                }
            }
            Err(e) if e.is_damage() || e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    Ok(packs)
}

/// Reads pack `pack` whole and opens each blob its trailer or the index lists; `None` when
/// nothing is wrong with it. An error that is not damage (storage out of reach) stops.
fn examine(
    repo: &Repository,
    pack: PackId,
    kind: BlobKind,
    listed: &[PackEntry],
    in_storage: bool,
) -> Result<Option<DamagedPack>> {
    let name = crate::pack::pack_name(kind, &pack);
    let found = examine_bytes(repo, pack, kind, listed, in_storage)?;
    let Some(mut damaged) = found else {
        return Ok(None);
    };
    // The pack as it was stored, if this host kept a copy (a tree pack read or written
    // through the metadata copies): every blob it had is salvaged from it.
    if let Some(copy) = repo.metadata_copy(&name) {
        let mut whole = DamagedPack::new(pack, name, true);
        blobs_in(repo, pack, listed, &copy, &mut whole)?;
        // The damage found in storage stays on record; the blobs are the copy's.
        damaged.damage.push(format!(
            "this host's copy of the pack is whole: its {} blobs are salvaged from it",
            whole.intact.len()
        ));
        whole.damage = damaged.damage;
        return Ok(Some(whole));
    }
    Ok(Some(damaged))
}

/// The pack as storage holds it: `None` when it is whole.
fn examine_bytes(
    repo: &Repository,
    pack: PackId,
    kind: BlobKind,
    listed: &[PackEntry],
    in_storage: bool,
) -> Result<Option<DamagedPack>> {
    let name = crate::pack::pack_name(kind, &pack);
    let mut damaged = DamagedPack::new(pack, name.clone(), false);
    let read = if in_storage {
        repo.backend().get(&name)
    } else {
        Err(Error::NotFound {
            object: name.clone(),
        })
    };
    let bytes = match read {
        Ok(bytes) => bytes,
        Err(e) if e.is_damage() || e.is_not_found() => {
            // Nothing to open: every blob the index lists there is lost.
            let why = match e {
                Error::NotFound { .. } => "missing from storage".to_owned(),
                e => error_message(&e),
            };
            damaged.lost = listed
                .iter()
                .map(|entry| (entry.id, format!("{name}: {why}")))
                .collect();
            damaged.damage.push(why);
            return Ok(Some(damaged));
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = verify_content_hash(&bytes, pack.as_bytes(), &name) {
        damaged.damage.push(error_message(&e));
    }
    blobs_in(repo, pack, listed, &bytes, &mut damaged)?;
    Ok((!damaged.damage.is_empty()).then_some(damaged))
}

/// Sorts the blobs of `pack` (stored as `bytes`) into `damaged`'s intact and lost ones,
/// adding what is wrong to its damage.
fn blobs_in(
    repo: &Repository,
    pack: PackId,
    listed: &[PackEntry],
    bytes: &[u8],
    damaged: &mut DamagedPack,
) -> Result<()> {
    let name = damaged.name.clone();
    // Each blob where the trailer puts it, else where the index does.
    let mut candidates: BTreeMap<BlobId, Vec<PackEntry>> = BTreeMap::new();
    match repo
        .master_key("salvaging packs")
        .and_then(|key| parse_pack(bytes, key, &name))
    {
        Ok(trailer) => {
            for entry in trailer.entries {
                candidates.entry(entry.id).or_default().push(entry);
            }
        }
        Err(e) if e.is_damage() => damaged
            .damage
            .push(format!("trailer: {}", error_message(&e))),
        Err(e) => return Err(e),
    }
    for entry in listed {
        let places = candidates.entry(entry.id).or_default();
        if !places.contains(entry) {
            places.push(*entry);
        }
    }
    for (id, places) in candidates {
        let mut why = None;
        for entry in &places {
            let location = entry.location_in(pack);
            match repo.open_blob_in(&id, &location, bytes, 0) {
                Ok(_) => {
                    why = None;
                    damaged.locations.push((id, location));
                    break;
                }
                Err(e) if e.is_damage() => {
                    why.get_or_insert_with(|| {
                        format!("{} blob {id}: {}", entry.kind.name(), error_message(&e))
                    });
                }
                Err(e) => return Err(e),
            }
        }
        match why {
            Some(why) => {
                damaged.damage.push(why.clone());
                damaged.lost.push((id, format!("{name}: {why}")));
            }
            None => damaged.intact.push(id),
        }
    }
    Ok(())
}

/// Copies the intact blobs of the plan's damaged packs into new packs, replaces the index
/// segments that list the damaged packs, then deletes those packs (see the module
/// documentation for why in that order). A damaged pack that a segment under Object Lock
/// lists is left as it is, copies included, until that lock lapses.
pub fn apply_pack_salvage(repo: &Repository, plan: SalvagePlan) -> Result<SalvageReport> {
    let mut report = SalvageReport {
        intact_packs: plan.intact_packs,
        ..SalvageReport::default()
    };
    if plan.damaged.is_empty() {
        return Ok(report);
    }
    repo.check_features(Operation::Write)?;
    repo.check_features(Operation::Prune)?;
    let damaged_packs: HashSet<PackId> = plan.damaged.iter().map(|d| d.pack).collect();

    // The segments to replace: those that list a damaged pack. One Object Lock keeps
    // cannot be replaced before its lock lapses, so the damaged packs it lists stay
    // indexed, and are left alone until a later run.
    let mut replaced: Vec<(IndexId, IndexSegment)> = Vec::new();
    let mut locked_in: HashSet<PackId> = HashSet::new();
    let mut listing: Vec<(IndexId, IndexSegment)> = Vec::new();
    repo.for_each_index_segment(|id, segment| {
        match segment {
            Ok(segment) if segment.packs.iter().any(|p| damaged_packs.contains(&p.id)) => {
                listing.push((id, segment));
            }
            Ok(_) => {}
            Err(e) if e.is_damage() || e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        Ok(())
    })?;
    for (id, segment) in listing {
        let name = crate::object::ObjectKind::Index.name(&id.to_hex());
        match crate::object_lock::locked_until(repo, &name, SystemTime::now())? {
            Some(until) => {
                let until = jiff::Timestamp::try_from(until)
                    .map_or_else(|_| "unknown".to_owned(), |t| t.to_string());
                report
                    .segments_left
                    .push((name, format!("locked until {until}")));
                locked_in.extend(segment.packs.iter().map(|pack| pack.id));
            }
            None => replaced.push((id, segment)),
        }
    }
    let (workable, left): (Vec<DamagedPack>, Vec<DamagedPack>) = plan
        .damaged
        .into_iter()
        .partition(|damaged| !locked_in.contains(&damaged.pack));
    for damaged in &left {
        let why = "a locked index segment lists it".to_owned();
        report.packs_left.push((damaged.name.clone(), why));
        report.untouched.push(damaged.pack);
    }
    if workable.is_empty() {
        report.damaged = left;
        return Ok(report);
    }
    let heartbeat = ActiveSession::start(
        Arc::clone(repo.backend()),
        repo.writer_key(),
        &plan.host,
        "repair",
        true,
    )?;

    // 1. The intact blobs, copied. Read after the heartbeat started (prune's liveness
    // rule); never deduplicated against the damaged packs or packs a GC plan condemned.
    let index = repo.load_index_for_reading()?.index;
    let mut writer = repo.blob_writer(&index);
    writer.exclude_packs(crate::gc::condemned_packs(repo)?);
    writer.exclude_packs(damaged_packs.iter().copied());
    for damaged in &workable {
        if damaged.locations.is_empty() {
            continue;
        }
        let bytes = if damaged.from_copy {
            repo.metadata_copy(&damaged.name)
                .ok_or_else(|| Error::NotFound {
                    object: format!("this host's copy of {}", damaged.name),
                })?
        } else {
            repo.backend().get(&damaged.name)?
        };
        for (id, location) in &damaged.locations {
            let plaintext = repo.open_blob_in(id, location, &bytes, 0)?;
            let (stored, _) = writer.add(location.kind, &plaintext)?;
            if stored != *id {
                return Err(Error::Invalid(format!(
                    "salvaged blob {id} hashed to {stored} when stored again"
                )));
            }
        }
    }
    let (_, copies) = writer.finish()?;
    report.segments_written = copies;

    // 2. The segments that list a damaged pack, replaced by ones without it.
    let kept: Vec<IndexedPack> = replaced
        .iter()
        .flat_map(|(_, segment)| segment.packs.iter())
        .filter(|pack| !damaged_packs.contains(&pack.id))
        .cloned()
        .collect();
    if !kept.is_empty() {
        let written = repo.write_index_segments(kept, &repo.new_session())?;
        report.segments_written.extend(written);
    }
    for (id, _) in &replaced {
        let name = crate::object::ObjectKind::Index.name(&id.to_hex());
        repo.backend().delete(&name)?;
        report.segments_replaced.push(*id);
    }

    // 3. The damaged packs, deleted.
    for damaged in &workable {
        match repo.backend().delete(&damaged.name) {
            Ok(()) => report.packs_deleted.push(damaged.name.clone()),
            Err(e @ Error::Locked { .. }) => report
                .packs_left
                .push((damaged.name.clone(), error_message(&e))),
            Err(e) => return Err(e),
        }
    }
    // Best effort, as for a backup: an unended session only delays garbage collection.
    let _ = heartbeat.end();
    report.damaged = workable.into_iter().chain(left).collect();
    Ok(report)
}

/// The pack named by `text`: its id in hex, or its object name as `check` prints it
/// (`data/ab/<hex>`, `tree/ab/<hex>`).
pub fn parse_pack_name(text: &str) -> Result<PackId> {
    let bad = || Error::Invalid(format!("{text:?} is not a pack id or a pack's name"));
    let pack: PackId = text
        .rsplit('/')
        .next()
        .unwrap_or(text)
        .parse()
        .map_err(|_| bad())?;
    let named = [BlobKind::Data, BlobKind::Tree]
        .iter()
        .any(|kind| crate::pack::pack_name(*kind, &pack) == text);
    if text.contains('/') && !named {
        return Err(bad());
    }
    Ok(pack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Backend;
    use crate::check::{CheckOptions, ReadData, check};
    use crate::repository::in_memory as new_repo;

    /// Stores data blobs of 5,000 bytes `first`, `first + 1`, ... (`count` of them) in one
    /// pack; returns their ids and the pack's name.
    fn store_blobs(repo: &Repository, first: u8, count: u8) -> (Vec<BlobId>, String) {
        let index = repo.load_index().unwrap().index;
        let mut writer = repo.blob_writer(&index);
        let ids: Vec<BlobId> = (first..first + count)
            .map(|n| writer.add(BlobKind::Data, &[n; 5_000]).unwrap().0)
            .collect();
        writer.finish().unwrap();
        let index = repo.load_index().unwrap().index;
        let location = index.get(&ids[0]).unwrap();
        (ids, crate::pack::pack_name(BlobKind::Data, &location.pack))
    }

    fn salvage(repo: &Repository, packs: Vec<PackId>) -> SalvageReport {
        let options = SalvageOptions {
            packs,
            threads: 1,
            host: "h".into(),
        };
        apply_pack_salvage(repo, plan_pack_salvage(repo, &options).unwrap()).unwrap()
    }

    fn healthy(repo: &Repository) -> bool {
        let options = CheckOptions {
            read_data: ReadData::All,
            threads: 1,
        };
        check(repo, options).unwrap().is_healthy()
    }

    #[test]
    fn a_damaged_trailer_loses_nothing_the_index_still_locates() {
        let (backend, repo) = new_repo();
        let (ids, name) = store_blobs(&repo, 0, 3);
        backend.corrupt(&name, |bytes| {
            let last = bytes.len() - 10;
            bytes[last] ^= 0x01;
        });
        assert!(!healthy(&repo));
        let report = salvage(&repo, Vec::new());
        let damaged = &report.damaged[0];
        assert!(
            damaged.damage.iter().any(|d| d.starts_with("trailer: ")),
            "{damaged:?}"
        );
        assert_eq!(damaged.intact.len(), 3);
        assert!(damaged.lost.is_empty());
        assert_eq!(report.packs_deleted, vec![name.clone()]);
        assert!(backend.head(&name).unwrap_err().is_not_found());
        let index = repo.load_index().unwrap().index;
        for (n, id) in ids.iter().enumerate() {
            let location = index.get(id).unwrap();
            assert_ne!(crate::pack::pack_name(location.kind, &location.pack), name);
            assert_eq!(repo.read_blob(&index, id).unwrap(), vec![n as u8; 5_000]);
        }
        assert!(healthy(&repo));
    }

    #[test]
    fn a_truncated_pack_keeps_the_blobs_before_the_cut() {
        let (backend, repo) = new_repo();
        let (ids, name) = store_blobs(&repo, 0, 3);
        let index = repo.load_index().unwrap().index;
        let second = index.get(&ids[1]).unwrap();
        let cut = (second.offset + u64::from(second.length)) as usize;
        backend.corrupt(&name, |bytes| bytes.truncate(cut));
        let report = salvage(&repo, Vec::new());
        let damaged = &report.damaged[0];
        let mut intact = damaged.intact.clone();
        intact.sort();
        let mut expected = ids[..2].to_vec();
        expected.sort();
        assert_eq!(intact, expected, "{damaged:?}");
        assert_eq!(damaged.lost.len(), 1);
        let index = repo.load_index().unwrap().index;
        for (n, id) in ids[..2].iter().enumerate() {
            assert_eq!(repo.read_blob(&index, id).unwrap(), vec![n as u8; 5_000]);
        }
        assert!(!index.contains(&ids[2]));
    }

    #[test]
    fn a_pack_named_but_gone_loses_its_blobs_and_leaves_the_index() {
        let (backend, repo) = new_repo();
        let (ids, name) = store_blobs(&repo, 0, 2);
        let (kept, _) = store_blobs(&repo, 2, 1);
        backend.delete(&name).unwrap();
        let report = salvage(&repo, vec![parse_pack_name(&name).unwrap()]);
        assert_eq!(
            report.damaged[0].damage,
            vec!["missing from storage".to_owned()]
        );
        let lost: Vec<BlobId> = report.damaged[0].lost.iter().map(|(id, _)| *id).collect();
        assert_eq!(lost, ids);
        assert_eq!(report.segments_replaced.len(), 1);
        let index = repo.load_index().unwrap().index;
        assert!(ids.iter().all(|id| !index.contains(id)));
        assert!(
            index.contains(&kept[0]),
            "other segments are left as they are"
        );
        assert!(healthy(&repo));
    }

    #[test]
    fn a_damaged_tree_pack_is_salvaged_whole_from_this_hosts_copy() {
        let copies = tempfile::tempdir().unwrap();
        let (backend, repo) = new_repo();
        let repo = repo.cache_metadata_in(copies.path().join("objects"));
        let tree = crate::tree::Tree::new(Vec::new()).unwrap().encode();
        let index = repo.load_index().unwrap().index;
        let mut writer = repo.blob_writer(&index);
        let (id, _) = writer.add(BlobKind::Tree, &tree).unwrap();
        writer.finish().unwrap();
        let location = repo.load_index().unwrap().index.get(&id).unwrap();
        let name = crate::pack::pack_name(BlobKind::Tree, &location.pack);
        backend.corrupt(&name, |bytes| bytes[60] ^= 1);

        let repo = repo.bypassing_cache();
        assert!(!healthy(&repo));
        let report = salvage(&repo, Vec::new());
        assert_eq!((report.blobs_copied(), report.blobs_lost()), (1, 0));
        assert!(report.damaged[0].from_copy);
        assert_eq!(report.packs_deleted, vec![name.clone()]);
        assert!(backend.get(&name).is_err());
        let index = repo.load_index().unwrap().index;
        assert_eq!(repo.read_blob(&index, &id).unwrap(), tree);
        assert!(healthy(&repo));
    }

    #[test]
    fn a_pack_is_named_by_its_id_or_its_object_name() {
        let id = PackId::from_bytes([0xab; 32]);
        let hex = id.to_hex();
        assert_eq!(parse_pack_name(&hex).unwrap(), id);
        for kind in [BlobKind::Data, BlobKind::Tree] {
            let name = crate::pack::pack_name(kind, &id);
            assert_eq!(parse_pack_name(&name).unwrap(), id, "{name}");
        }
        for bad in [
            "",
            "abc",
            &format!("index/ab/{hex}"),
            &format!("data/cd/{hex}"),
            &format!("{hex}0"),
        ] {
            assert!(parse_pack_name(bad).is_err(), "{bad}");
        }
    }
}
