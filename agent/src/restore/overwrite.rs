//! `restore --overwrite`: what a restore does with an entry the target already holds.
//!
//! The default, [`Overwrite::Always`], makes the target match the snapshot: an existing
//! file is read and hashed and left alone only when its content is the snapshot's
//! (see [`super::resume`]); anything else in the way is replaced. The other modes leave
//! existing entries untouched, content and metadata alike, by a rule that needs one
//! `lstat` and no reading: `never` keeps whatever is there, `if-newer` keeps what is at
//! least as new (modification time) as the snapshot's entry, and `if-changed` takes a
//! regular file of the snapshot's size and modification time as in place without reading
//! it (its metadata is still applied). A directory the target holds where the snapshot has
//! one is always merged into; these rules govern the entries in it, and a non-directory
//! where the snapshot has a directory.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use bunker_repo_format::tree::{Entry, Node, Timestamp};

use super::resume::existing;

/// What a restore does with an entry the target already holds where the snapshot has one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Overwrite {
    /// Replace it unless it is a file with the snapshot's content (read and hashed).
    #[default]
    Always,
    /// As `Always`, but a regular file of the snapshot's size and modification time is
    /// taken as in place without reading it.
    IfChanged,
    /// Replace it only when the snapshot's entry is newer (modification time).
    IfNewer,
    /// Never replace it.
    Never,
}

impl Overwrite {
    /// The mode's name on the command line (`always`, `if-changed`, `if-newer`, `never`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::IfChanged => "if-changed",
            Self::IfNewer => "if-newer",
            Self::Never => "never",
        }
    }

    /// The mode a verified restore (`--verify`) uses: it takes nothing on trust, so
    /// `if-changed` reads and hashes a file of the snapshot's size and time as `always`
    /// does, and rewrites it when it differs, rather than take it as in place.
    pub fn verified(self) -> Self {
        match self {
            Self::IfChanged => Self::Always,
            other => other,
        }
    }
}

/// What the mode decides for one entry of the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Restore it as `Always` does (nothing there, a directory to merge into, or an entry
    /// the mode lets the restore replace).
    Restore,
    /// A regular file taken as in place by its size and time: not read, not written; its
    /// metadata is applied.
    InPlace,
    /// Leave what is there as it is, metadata included.
    Keep,
}

/// The verdict of `mode` on the snapshot's `entry` at `path`. An `lstat` failure other
/// than "not found" is an error.
pub(super) fn judge(mode: Overwrite, path: &Path, entry: &Entry) -> io::Result<Verdict> {
    if mode == Overwrite::Always {
        return Ok(Verdict::Restore);
    }
    let (node, meta) = (&entry.node, &entry.meta);
    let Some(existing) = existing(path)? else {
        return Ok(Verdict::Restore);
    };
    let is_dir = matches!(node, Node::Dir { .. });
    if is_dir && existing.is_dir() {
        return Ok(Verdict::Restore);
    }
    let existing_mtime = Timestamp {
        sec: existing.mtime(),
        nsec: u32::try_from(existing.mtime_nsec()).unwrap_or(0),
    };
    Ok(match mode {
        Overwrite::Always => Verdict::Restore,
        Overwrite::Never => Verdict::Keep,
        Overwrite::IfNewer if meta.mtime > existing_mtime => Verdict::Restore,
        Overwrite::IfNewer => Verdict::Keep,
        // One name only: metadata applied to a file with others would reach them too.
        Overwrite::IfChanged
            if matches!(node, Node::File { .. })
                && existing.is_file()
                && existing.len() == entry.size()
                && existing.nlink() == 1
                && existing_mtime == meta.mtime =>
        {
            Verdict::InPlace
        }
        Overwrite::IfChanged => Verdict::Restore,
    })
}

/// The warning for a non-directory at `path` that `mode` kept where the snapshot has a
/// directory: that directory is not restored.
pub(super) fn directory_not_restored(path: &Path, mode: Overwrite) -> String {
    format!(
        "{}: kept (--overwrite {}): the snapshot's directory is not restored over it",
        path.display(),
        mode.name()
    )
}

#[cfg(test)]
mod tests {
    use std::fs::{self, File, FileTimes};
    use std::time::{Duration, UNIX_EPOCH};

    use bunker_repo_format::tree::{Extent, Metadata};

    use super::*;

    /// An entry of the snapshot: `node`, modified at `sec` seconds and `nsec`.
    fn entry(node: Node, sec: i64, nsec: u32) -> Entry {
        Entry {
            name: b"f".to_vec(),
            meta: Metadata {
                mtime: Timestamp { sec, nsec },
                ..Metadata::default()
            },
            node,
        }
    }

    /// A file of `size` bytes (one hole: only its length matters here).
    fn file_node(size: u64) -> Node {
        Node::File {
            extents: vec![Extent::Hole { length: size }],
        }
    }

    fn dir_node() -> Node {
        Node::Dir {
            subtree: bunker_repo_format::BlobId::from_bytes([0; 32]),
        }
    }

    /// A five-byte file at `path` modified at `sec` seconds and 500 ns.
    fn existing_file(path: &Path, sec: u64) {
        fs::write(path, b"hello").expect("write");
        let time = UNIX_EPOCH + Duration::new(sec, 500);
        let file = File::options().write(true).open(path).expect("open");
        file.set_times(FileTimes::new().set_modified(time))
            .expect("set times");
    }

    #[test]
    fn each_mode_judges_an_existing_file_by_its_rule() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        existing_file(&path, 1_000);
        let judged = |mode, (sec, nsec), size| {
            judge(mode, &path, &entry(file_node(size), sec, nsec)).expect("judge")
        };
        let same = (1_000, 500);
        let newer = (1_000, 501);
        let older = (999, 999_999_999);
        assert_eq!(judged(Overwrite::Always, same, 5), Verdict::Restore);
        assert_eq!(judged(Overwrite::Never, newer, 5), Verdict::Keep);
        assert_eq!(judged(Overwrite::IfNewer, newer, 5), Verdict::Restore);
        assert_eq!(judged(Overwrite::IfNewer, same, 5), Verdict::Keep);
        assert_eq!(judged(Overwrite::IfNewer, older, 5), Verdict::Keep);
        assert_eq!(judged(Overwrite::IfChanged, same, 5), Verdict::InPlace);
        assert_eq!(judged(Overwrite::IfChanged, same, 6), Verdict::Restore);
        assert_eq!(judged(Overwrite::IfChanged, newer, 5), Verdict::Restore);
        // A second name makes it not in place: its metadata would reach the other.
        fs::hard_link(&path, dir.path().join("g")).expect("link");
        assert_eq!(judged(Overwrite::IfChanged, same, 5), Verdict::Restore);
    }

    #[test]
    fn nothing_there_is_restored_and_a_directory_is_merged_into() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        for mode in [Overwrite::Never, Overwrite::IfNewer, Overwrite::IfChanged] {
            let verdict = judge(mode, &missing, &entry(file_node(0), 0, 0)).expect("judge");
            assert_eq!(verdict, Verdict::Restore, "{mode:?}");
            let verdict = judge(mode, dir.path(), &entry(dir_node(), 0, 0)).expect("judge");
            assert_eq!(verdict, Verdict::Restore, "{mode:?}");
        }
        // A file where the snapshot has a directory is kept by `never`.
        let file = dir.path().join("f");
        existing_file(&file, 1);
        let verdict = judge(Overwrite::Never, &file, &entry(dir_node(), 0, 0)).expect("judge");
        assert_eq!(verdict, Verdict::Keep);
        let newer = entry(dir_node(), 2, 0);
        let verdict = judge(Overwrite::IfNewer, &file, &newer).expect("judge");
        assert_eq!(verdict, Verdict::Restore);
    }
}
