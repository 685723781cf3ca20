//! `restore --delete`: what the target holds and the snapshot does not goes, so that the
//! restored directory ends up as the snapshot has it (a sync, as restic's `--delete`).
//!
//! The sweep runs after the restore, and only after one without errors: a restore that
//! could not finish deletes nothing. An entry is a candidate only inside a path the backup
//! was given (`/srv/app`, not `/srv` or `/`, which the snapshot holds only as the way to
//! it: a snapshot of `/etc` says nothing about what else `/` should hold), and only when
//! the restore would have restored it had the snapshot held it: with
//! `--include`/`--exclude`, what the patterns leave out stays. Entries the snapshot holds are never touched here (the restore
//! put them in place). Nothing outside the target is reached: symlinks are removed, never
//! followed, and a directory on another filesystem (a mount point) is left, with a note.

use std::collections::HashMap;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::tree::Node;
use bunker_repo_format::{BlobId, Repository, index::Index};

use super::select::Decision;
use super::{RestoreError, RestoreOptions, RestoreOutcome};
use crate::cancel::Cancel;

/// What a sweep removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deleted {
    /// The entries removed whole, each with everything below it, in walk order.
    pub paths: Vec<PathBuf>,
    /// Entries removed, those below removed directories included.
    pub entries: u64,
    /// Bytes of the regular files among them.
    pub bytes: u64,
    /// Entries that could not be removed (or read), each naming its path.
    pub errors: Vec<String>,
    /// Directories left because they are on another filesystem, each naming its path.
    pub kept: Vec<String>,
}

/// Where a sweep runs and what it may remove.
pub(super) struct Sweep<'a> {
    pub repo: &'a Repository,
    pub index: &'a Index,
    /// The restore's: its filter selects entries, and only what lies inside one of its
    /// `backed_up` paths is removed (none given: everything counts as inside).
    pub options: &'a RestoreOptions,
    /// The snapshot path the target stands for.
    pub snapshot_path: &'a Path,
    /// False for a dry run: count, remove nothing.
    pub remove: bool,
    pub cancel: &'a Cancel,
}

impl Sweep<'_> {
    /// Sweeps `target` ([`Sweep::run`]) and adds what it did to `outcome`: its errors, its
    /// notes as warnings, and `deleted`.
    pub fn record(
        &self,
        tree: &BlobId,
        target: &Path,
        outcome: &mut RestoreOutcome,
    ) -> Result<(), RestoreError> {
        let deleted = self.run(tree, target)?;
        outcome.errors.extend(deleted.errors.iter().cloned());
        outcome.warnings.extend(deleted.kept.iter().cloned());
        outcome.deleted = Some(deleted);
        Ok(())
    }

    /// Removes from `target` what the directory tree `tree` (restored into it) does not
    /// hold; a target that does not exist holds nothing to remove.
    fn run(&self, tree: &BlobId, target: &Path) -> Result<Deleted, RestoreError> {
        if !target.exists() {
            return Ok(Deleted::default());
        }
        let device = fs::metadata(target)
            .map_err(|source| RestoreError::Target {
                path: target.to_owned(),
                source,
            })?
            .dev();
        let mut walk = Walk {
            sweep: self,
            device,
            out: Deleted::default(),
        };
        let base = Path::new("/").join(self.snapshot_path);
        walk.dir(
            Some(tree),
            target,
            &base,
            self.options.filter.starts_inside(),
        )?;
        Ok(walk.out)
    }
}

struct Walk<'a> {
    sweep: &'a Sweep<'a>,
    /// The target's filesystem: nothing on another is removed.
    device: u64,
    out: Deleted,
}

impl Walk<'_> {
    /// Sweeps the directory `disk`, restored from `tree` (`None`: a directory the snapshot
    /// does not hold, explored for the entries the filter selects in it); `snapshot` is
    /// its path in the snapshot, `inside` as for [`RestoreFilter::decide`](super::select::RestoreFilter::decide).
    fn dir(
        &mut self,
        tree: Option<&BlobId>,
        disk: &Path,
        snapshot: &Path,
        inside: bool,
    ) -> Result<(), RestoreError> {
        let held: HashMap<Vec<u8>, Node> = match tree {
            None => HashMap::new(),
            Some(tree) => match self.sweep.repo.load_tree(self.sweep.index, tree) {
                Ok(tree) => tree
                    .entries()
                    .iter()
                    .map(|entry| (entry.name.clone(), entry.node.clone()))
                    .collect(),
                Err(e) => {
                    self.problem(disk, format!("not swept: its contents are lost: {e}"));
                    return Ok(());
                }
            },
        };
        let mut names = match fs::read_dir(disk).and_then(|entries| {
            entries
                .map(|entry| entry.map(|e| e.file_name()))
                .collect::<Result<Vec<_>, _>>()
        }) {
            Ok(names) => names,
            Err(e) => {
                self.problem(disk, format!("not swept: could not list it: {e}"));
                return Ok(());
            }
        };
        names.sort();
        for name in names {
            if self.sweep.cancel.is_cancelled() {
                return Err(RestoreError::Interrupted);
            }
            let path = disk.join(&name);
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                Err(e) => {
                    self.problem(&path, format!("could not read it: {e}"));
                    continue;
                }
            };
            let in_snapshot = snapshot.join(&name);
            let decide = |is_dir| {
                let filter = &self.sweep.options.filter;
                filter.decide(&in_snapshot, is_dir, inside)
            };
            let backed_up = &self.sweep.options.backed_up;
            let backed_up =
                backed_up.is_empty() || backed_up.iter().any(|p| in_snapshot.starts_with(p));
            match held.get(name.as_bytes()) {
                Some(Node::Dir { .. }) if meta.is_dir() && meta.dev() != self.device => {
                    let note =
                        format!("{}: not swept: it is on another filesystem", path.display());
                    self.out.kept.push(note);
                }
                Some(Node::Dir { subtree }) if meta.is_dir() => match decide(true) {
                    Decision::Skip => {}
                    decision => {
                        let inside = decision == Decision::Restore;
                        self.dir(Some(subtree), &path, &in_snapshot, inside)?;
                    }
                },
                // The snapshot holds it: the restore put it there.
                Some(_) => {}
                // On the way to a backed-up path, not in one: not the snapshot's to judge.
                None if !backed_up => {}
                None => match decide(meta.is_dir()) {
                    Decision::Skip => {}
                    Decision::Restore => {
                        if self.remove_all(&path, &meta) {
                            self.out.paths.push(path);
                        }
                    }
                    Decision::Explore => self.dir(None, &path, &in_snapshot, false)?,
                },
            }
        }
        Ok(())
    }

    /// Removes `path` and everything below it (counts it, in a dry run); true when all of
    /// it went.
    fn remove_all(&mut self, path: &Path, meta: &Metadata) -> bool {
        let remove = self.sweep.remove;
        if !meta.is_dir() {
            if remove && let Err(e) = fs::remove_file(path) {
                self.problem(path, format!("could not delete it: {e}"));
                return false;
            }
            self.out.entries += 1;
            if meta.is_file() {
                self.out.bytes += meta.len();
            }
            return true;
        }
        if meta.dev() != self.device {
            let note = format!(
                "{}: not deleted: it is on another filesystem",
                path.display()
            );
            self.out.kept.push(note);
            return false;
        }
        let entries = match fs::read_dir(path) {
            Ok(entries) => entries,
            Err(e) => {
                self.problem(path, format!("could not list it to delete it: {e}"));
                return false;
            }
        };
        let mut all_gone = true;
        for entry in entries {
            let child = match entry {
                Ok(entry) => entry.path(),
                Err(e) => {
                    self.problem(path, format!("could not list it to delete it: {e}"));
                    all_gone = false;
                    continue;
                }
            };
            all_gone &= match fs::symlink_metadata(&child) {
                Ok(meta) => self.remove_all(&child, &meta),
                Err(e) => {
                    self.problem(&child, format!("could not read it: {e}"));
                    false
                }
            };
        }
        if !all_gone {
            return false;
        }
        if remove && let Err(e) = fs::remove_dir(path) {
            self.problem(path, format!("could not delete it: {e}"));
            return false;
        }
        self.out.entries += 1;
        true
    }

    fn problem(&mut self, path: &Path, message: impl std::fmt::Display) {
        self.out
            .errors
            .push(format!("{}: {message}", path.display()));
    }
}
