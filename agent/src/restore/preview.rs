//! `restore --dry-run`: what a restore would do to its target, found without writing.
//!
//! The walk selects entries as the restore does (the filter included) and leaves every
//! write out. Each file the snapshot holds is checked as a resumed restore checks it
//! ([`already_restored`]: read and hashed chunk by chunk, no repository traffic), so the
//! figures say what would be written and what is already in place; each chunk that would be
//! written is looked up in the index, so content the repository lost is named before a
//! restore runs into it. Entries the overwrite mode would keep are counted as kept, by the
//! rule the restore applies ([`judge`]). With `delete`, the sweep counts what would go.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bunker_repo_format::tree::{Entry, Extent, Node};
use bunker_repo_format::{BlobId, Repository, index::Index};

use super::delete::Sweep;
use super::overwrite::{Verdict, directory_not_restored, judge};
use super::plan::{data_bytes, missing_blob};
use super::resume::already_restored;
use super::select::Decision;
use super::{RestoreError, RestoreOptions, RestoreOutcome};
use crate::cancel::Cancel;
use crate::navigate::Located;

/// What restoring `located` (found at `path` in the snapshot) into `target` would do: the
/// counts of a [`RestoreOutcome`], `bytes` being what would be written and `errors` the
/// content that could not be.
pub(super) fn preview(
    repo: &Repository,
    index: &Index,
    located: &Located,
    path: &Path,
    target: &Path,
    options: &RestoreOptions,
    cancel: &Cancel,
) -> Result<RestoreOutcome, RestoreError> {
    let mut walk = Walk {
        repo,
        index,
        options,
        cancel,
        links_seen: HashSet::new(),
        out: RestoreOutcome::default(),
    };
    let snapshot_path = Path::new("/").join(path);
    let inside = options.filter.starts_inside();
    match located {
        Located::Dir { tree, .. } => {
            walk.tree(tree, target, &snapshot_path, inside)?;
        }
        Located::Other(entry) => {
            let name = OsStr::from_bytes(&entry.name);
            let parent = snapshot_path.parent().unwrap_or(&snapshot_path);
            walk.entry(entry, &target.join(name), &parent.join(name), inside)?;
        }
    }
    if let (true, Located::Dir { tree, .. }) = (options.delete, located) {
        let sweep = Sweep {
            repo,
            index,
            options,
            snapshot_path: path,
            remove: false,
            cancel,
        };
        sweep.record(tree, target, &mut walk.out)?;
    }
    Ok(walk.out)
}

struct Walk<'a> {
    repo: &'a Repository,
    index: &'a Index,
    options: &'a RestoreOptions,
    cancel: &'a Cancel,
    /// Inodes of hard-linked files seen: their other names would be links, not writes.
    links_seen: HashSet<(u64, u64)>,
    out: RestoreOutcome,
}

impl Walk<'_> {
    /// The entries of `tree` restored into `disk` (at `snapshot` in the snapshot); returns
    /// how many would be restored.
    fn tree(
        &mut self,
        tree: &BlobId,
        disk: &Path,
        snapshot: &Path,
        inside: bool,
    ) -> Result<u64, RestoreError> {
        let tree = match self.repo.load_tree(self.index, tree) {
            Ok(tree) => tree,
            Err(e) => {
                let message = format!("{}: directory contents lost: {e}", disk.display());
                self.out.errors.push(message);
                return Ok(0);
            }
        };
        let mut restored = 0;
        for entry in tree.entries() {
            if self.cancel.is_cancelled() {
                return Err(RestoreError::Interrupted);
            }
            let name = OsStr::from_bytes(&entry.name);
            restored += self.entry(entry, &disk.join(name), &snapshot.join(name), inside)?;
        }
        Ok(restored)
    }

    /// One entry that would be restored at `disk`; returns how many entries would be
    /// restored with it (0 when the filter leaves it out).
    fn entry(
        &mut self,
        entry: &Entry,
        disk: &Path,
        snapshot: &Path,
        inside: bool,
    ) -> Result<u64, RestoreError> {
        let is_dir = matches!(entry.node, Node::Dir { .. });
        let decision = self.options.filter.decide(snapshot, is_dir, inside);
        if decision == Decision::Skip {
            return Ok(0);
        }
        if matches!(entry.node, Node::Socket) {
            self.out.sockets_not_restored += 1;
            return Ok(0);
        }
        let verdict = match judge(self.options.overwrite, disk, entry) {
            Ok(verdict) => verdict,
            Err(e) => {
                let message = format!("{}: could not check what is there: {e}", disk.display());
                self.out.errors.push(message);
                if matches!(entry.node, Node::File { .. }) {
                    self.out.files += 1;
                    self.out.files_failed += 1;
                }
                return Ok(1);
            }
        };
        if verdict == Verdict::Keep {
            self.out.kept += 1;
            match entry.node {
                Node::File { .. } => {
                    self.out.files += 1;
                    self.out.files_kept += 1;
                }
                Node::Dir { .. } => {
                    let warning = directory_not_restored(disk, self.options.overwrite);
                    self.out.warnings.push(warning);
                }
                _ => self.out.others += 1,
            }
            return Ok(1);
        }
        match &entry.node {
            Node::Socket => Ok(0),
            Node::Dir { subtree } => {
                let inside = decision == Decision::Restore;
                let below = self.tree(subtree, disk, snapshot, inside)?;
                if decision == Decision::Explore && below == 0 {
                    return Ok(0);
                }
                self.out.dirs += 1;
                Ok(below + 1)
            }
            Node::File { extents } => {
                self.out.files += 1;
                let meta = &entry.meta;
                if meta.nlinks > 1 && !self.links_seen.insert((meta.device, meta.inode)) {
                    return Ok(1);
                }
                if verdict == Verdict::InPlace {
                    self.out.files_skipped += 1;
                    self.out.bytes_skipped += entry.size();
                } else {
                    self.file(extents, disk);
                }
                Ok(1)
            }
            _ => {
                self.out.others += 1;
                Ok(1)
            }
        }
    }

    /// A file: in place already, or its data to write (each chunk found in the index).
    fn file(&mut self, extents: &[Extent], disk: &Path) {
        let size = extents.iter().map(Extent::length).sum::<u64>();
        match already_restored(self.repo, disk, extents, size) {
            Ok(true) => {
                self.out.files_skipped += 1;
                self.out.bytes_skipped += size;
            }
            Ok(false) => {
                self.out.bytes += data_bytes(extents);
                let mut offset = 0;
                let mut complete = true;
                for extent in extents {
                    if let Extent::Chunk { id, .. } = extent
                        && self.index.get(id).is_none()
                    {
                        let lost = missing_blob(self.index, id, offset);
                        self.out.errors.push(format!("{}: {lost}", disk.display()));
                        complete = false;
                    }
                    offset += extent.length();
                }
                if !complete {
                    self.out.files_failed += 1;
                }
            }
            Err(e) => {
                let message = format!("{}: could not check the existing file: {e}", disk.display());
                self.out.errors.push(message);
                self.out.files_failed += 1;
            }
        }
    }
}
