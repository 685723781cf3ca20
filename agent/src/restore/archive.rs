//! Streaming a directory of a snapshot as a tar archive (`restore SNAPSHOT:DIR --stdout`).
//!
//! Entries are written depth first in name order, each directory before what it holds,
//! with paths relative to the directory streamed (which is `./`), so that extracting the
//! archive into a directory gives what `restore --target` of the same path gives. The
//! format is GNU tar's: long names and link targets as GNU long-name entries, and a PAX
//! extended header before an entry with extended attributes (`SCHILY.xattr.NAME`, as GNU
//! tar's `--xattrs` writes them) or a sub-second modification time. A file's content is
//! streamed as `--stdout` streams one file; holes are written as zeros. Hard links (files
//! with the same device and inode) after the first are link entries. Sockets cannot be
//! archived: each is left out with a warning.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Write};
use std::mem::ManuallyDrop;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use bunker_repo_format::index::Index;
use bunker_repo_format::tree::{Entry, Node, Timestamp};
use bunker_repo_format::{BlobId, Repository};
use tar::{Builder, EntryType, Header};

use super::RestoreError;
use super::stream;
use crate::cancel::Cancel;

/// Tar's block size: headers and padded contents are multiples of it.
const BLOCK: u64 = 512;

/// What an archive holds.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// Entries written (directories, files, links, devices, fifos).
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
    /// What could not be archived as it is (sockets, attributes tar cannot name), one line
    /// each.
    pub warnings: Vec<String>,
}

/// Writes the directory whose tree is `tree` (with its own entry, `None` for a snapshot's
/// root) to `out` as a tar archive, ending it with tar's end-of-archive blocks.
///
/// Fails at the first tree or content that cannot be read, naming it, or at the first
/// write error: an archive cut short is not ended, so extracting it reports the truncation.
pub fn stream_tar(
    repo: &Repository,
    index: &Index,
    tree: &BlobId,
    dir: Option<&Entry>,
    out: &mut dyn Write,
    cancel: &Cancel,
) -> Result<ArchiveSummary, RestoreError> {
    let mut archive = Archive {
        repo,
        index,
        cancel,
        // Never dropped: a builder's drop ends the archive, which an archive cut short by an
        // error must not look like.
        builder: ManuallyDrop::new(Builder::new(out)),
        first_links: HashMap::new(),
        summary: ArchiveSummary::default(),
    };
    if let Some(dir) = dir {
        archive.entry(Path::new("./"), dir)?;
    }
    archive.directory(tree, Path::new(""))?;
    archive.builder.finish().map_err(output)?;
    archive.builder.get_mut().flush().map_err(output)?;
    Ok(archive.summary)
}

struct Archive<'a, 'o> {
    repo: &'a Repository,
    index: &'a Index,
    cancel: &'a Cancel,
    builder: ManuallyDrop<Builder<&'o mut dyn Write>>,
    /// The first path archived of each hard-linked file, by (device, inode).
    first_links: HashMap<(u64, u64), PathBuf>,
    summary: ArchiveSummary,
}

impl Archive<'_, '_> {
    /// Archives the entries of the tree `tree`, found at `path` in the archive.
    fn directory(&mut self, tree: &BlobId, path: &Path) -> Result<(), RestoreError> {
        let loaded = self.repo.load_tree(self.index, tree)?;
        for entry in loaded.entries() {
            if self.cancel.is_cancelled() {
                return Err(RestoreError::Interrupted);
            }
            let child = path.join(OsStr::from_bytes(&entry.name));
            self.entry(&child, entry)?;
            if let Node::Dir { subtree } = &entry.node {
                self.directory(subtree, &child)?;
            }
        }
        Ok(())
    }

    /// Archives one entry (a directory's own entry only: not what it holds).
    fn entry(&mut self, path: &Path, entry: &Entry) -> Result<(), RestoreError> {
        let mut header = Header::new_gnu();
        let meta = &entry.meta;
        header.set_mode(meta.mode & 0o7777);
        header.set_uid(u64::from(meta.uid));
        header.set_gid(u64::from(meta.gid));
        header.set_mtime(u64::try_from(meta.mtime.sec).unwrap_or(0));
        // A name tar cannot hold (too long, not UTF-8) is left out: the numeric id stays.
        if let Ok(user) = std::str::from_utf8(&meta.user) {
            let _ = header.set_username(user);
        }
        if let Ok(group) = std::str::from_utf8(&meta.group) {
            let _ = header.set_groupname(group);
        }
        header.set_size(0);
        let hard_link = (meta.nlinks > 1 && !matches!(entry.node, Node::Dir { .. }))
            .then_some((meta.device, meta.inode));
        if let Some(first) = hard_link
            .and_then(|key| self.first_links.get(&key))
            .cloned()
        {
            header.set_entry_type(EntryType::Link);
            self.builder
                .append_link(&mut header, path, first)
                .map_err(output)?;
            self.summary.entries += 1;
            return Ok(());
        }
        match &entry.node {
            Node::Socket => {
                self.warn(path, "a socket cannot be archived; left out");
                return Ok(());
            }
            Node::Symlink { target } => {
                self.extensions(path, entry)?;
                header.set_entry_type(EntryType::Symlink);
                self.builder
                    .append_link(&mut header, path, OsStr::from_bytes(target))
                    .map_err(output)?;
            }
            Node::File { extents } => {
                self.extensions(path, entry)?;
                let size = entry.size();
                header.set_entry_type(EntryType::Regular);
                header.set_size(size);
                // The header (and any long-name entry) now, the content straight after it.
                self.builder
                    .append_data(&mut header, path, io::empty())
                    .map_err(output)?;
                let out = self.builder.get_mut();
                let written = stream::stream(self.repo, self.index, extents, out, self.cancel)
                    .map_err(|e| match e {
                        RestoreError::Content { message } => RestoreError::Content {
                            message: format!("in {} {message}", path.display()),
                        },
                        other => other,
                    })?;
                if written != size {
                    return Err(RestoreError::Content {
                        message: format!(
                            "in {}: {written} bytes streamed where the snapshot records {size}",
                            path.display()
                        ),
                    });
                }
                pad(out, size).map_err(output)?;
                self.summary.bytes += size;
                if let Some(key) = hard_link {
                    self.first_links.insert(key, path.to_owned());
                }
            }
            node => {
                self.extensions(path, entry)?;
                let (kind, rdev) = match node {
                    Node::Dir { .. } => (EntryType::Directory, None),
                    Node::Fifo => (EntryType::Fifo, None),
                    Node::CharDevice { rdev } => (EntryType::Char, Some(*rdev)),
                    Node::BlockDevice { rdev } => (EntryType::Block, Some(*rdev)),
                    _ => (EntryType::Regular, None),
                };
                header.set_entry_type(kind);
                if let Some(rdev) = rdev {
                    let (major, minor) = device_numbers(rdev);
                    header.set_device_major(major).map_err(output)?;
                    header.set_device_minor(minor).map_err(output)?;
                }
                self.builder
                    .append_data(&mut header, path, io::empty())
                    .map_err(output)?;
            }
        }
        self.summary.entries += 1;
        Ok(())
    }

    /// The PAX extended header an entry needs: its extended attributes and a sub-second
    /// modification time (none when it has neither).
    fn extensions(&mut self, path: &Path, entry: &Entry) -> Result<(), RestoreError> {
        let meta = &entry.meta;
        let mut records: Vec<(String, Vec<u8>)> = Vec::new();
        if meta.mtime.nsec != 0 || meta.mtime.sec < 0 {
            records.push(("mtime".into(), pax_time(meta.mtime).into_bytes()));
        }
        for (name, value) in &meta.xattrs {
            match std::str::from_utf8(name) {
                Ok(name) if !name.contains('=') => {
                    records.push((format!("SCHILY.xattr.{name}"), value.clone()));
                }
                _ => self.warn(
                    path,
                    &format!(
                        "extended attribute {:?} cannot be named in tar; left out",
                        String::from_utf8_lossy(name)
                    ),
                ),
            }
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
            .map_err(output)
    }

    fn warn(&mut self, path: &Path, what: &str) {
        self.summary
            .warnings
            .push(format!("{}: {what}", path.display()));
    }
}

/// A time as a PAX record's decimal seconds: `-1.500000000` is half a second before
/// `-1`, which the timestamp holds as -2 s plus 500 000 000 ns.
fn pax_time(time: Timestamp) -> String {
    if time.sec >= 0 || time.nsec == 0 {
        return format!("{}.{:09}", time.sec, time.nsec);
    }
    let whole = -(time.sec + 1);
    format!("-{whole}.{:09}", 1_000_000_000 - time.nsec)
}

/// Zeros after `size` bytes of content, up to the next block.
fn pad(out: &mut dyn Write, size: u64) -> io::Result<()> {
    let tail = size % BLOCK;
    if tail == 0 {
        return Ok(());
    }
    out.write_all(&[0u8; BLOCK as usize][..(BLOCK - tail) as usize])
}

/// Linux's split of a device number into major and minor.
fn device_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    (major as u32, minor as u32)
}

fn output(source: io::Error) -> RestoreError {
    RestoreError::Output { source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_split_as_linux_does() {
        // makedev(8, 1) and makedev(259, 65536) by glibc's formula.
        assert_eq!(device_numbers(0x801), (8, 1));
        let makedev = |major: u64, minor: u64| {
            ((major & 0xfff) << 8)
                | ((major & !0xfff) << 32)
                | (minor & 0xff)
                | ((minor & !0xff) << 12)
        };
        let rdev = makedev(259, 65536);
        assert_eq!(device_numbers(rdev), (259, 65536));
    }

    #[test]
    fn pax_times_count_fractions_away_from_zero_before_1970() {
        let t = |sec, nsec| pax_time(Timestamp { sec, nsec });
        assert_eq!(t(1_600_000_000, 5), "1600000000.000000005");
        assert_eq!(t(-2, 500_000_000), "-1.500000000");
        assert_eq!(t(-1, 250_000_000), "-0.750000000");
        assert_eq!(t(-86_400, 0), "-86400.000000000");
    }

    #[test]
    fn content_is_padded_to_whole_blocks() {
        let mut out = Vec::new();
        pad(&mut out, 513).unwrap();
        assert_eq!(out.len(), 511);
        let mut out = Vec::new();
        pad(&mut out, 1024).unwrap();
        assert!(out.is_empty());
    }
}
