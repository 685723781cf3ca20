//! Directory trees: a directory is a sorted list of entries with full metadata; a tree is
//! stored as a blob of kind [`BlobKind::Tree`](crate::BlobKind::Tree), so unchanged subtrees
//! deduplicate like file data.

use crate::codec::{DecodeError, Decoder, Encoder};
use crate::id::BlobId;

/// Version byte of the tree encoding written by this build.
pub const TREE_VERSION: u8 = 1;

/// The deepest a tree may nest: a snapshot's root tree is at depth 0, the tree of a
/// directory in it at depth 1, and so on. A reader refuses a tree deeper than this (format
/// §12), so that every walk of a snapshot stays within a bounded stack; a writer records a
/// directory at this depth empty and flagged incomplete.
pub const MAX_TREE_DEPTH: usize = 4096;

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds (negative before 1970).
    pub sec: i64,
    /// Nanoseconds, `0..1_000_000_000`.
    pub nsec: u32,
}

impl Timestamp {
    /// The system clock now (a client's clock: informational, never used for GC timing).
    pub fn now() -> Self {
        Self::from_system_time(std::time::SystemTime::now())
    }

    /// `time` as a timestamp; a time before 1970 (no clock here gives one) as the epoch.
    pub fn from_system_time(time: std::time::SystemTime) -> Self {
        let since = time
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Self {
            sec: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            nsec: since.subsec_nanos(),
        }
    }
}

/// Metadata every kind of entry has.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Permission bits including setuid, setgid and sticky (`mode & 0o7777`).
    pub mode: u32,
    /// Owner's numeric id.
    pub uid: u32,
    /// Group's numeric id.
    pub gid: u32,
    /// Owner's name when it was known at backup time.
    pub user: Vec<u8>,
    /// Group's name when it was known at backup time.
    pub group: Vec<u8>,
    /// Modification time.
    pub mtime: Timestamp,
    /// Access time (recorded, restored for files and directories).
    pub atime: Timestamp,
    /// Status change time (recorded for the files cache; cannot be restored).
    pub ctime: Timestamp,
    /// Device of the source filesystem (`st_dev`).
    pub device: u64,
    /// Inode number on the source filesystem.
    pub inode: u64,
    /// Hard link count at backup time; entries with `nlinks > 1` and equal
    /// `(device, inode)` are restored as hard links of each other.
    pub nlinks: u64,
    /// Extended attributes, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// [`EntryFlags`] bits.
    pub flags: u8,
}

impl Metadata {
    /// The access time to give the entry back: the recorded one, or the modification time
    /// when none was recorded (all zero, FORMAT.md).
    pub fn atime_or_mtime(&self) -> Timestamp {
        if self.atime == Timestamp::default() {
            self.mtime
        } else {
            self.atime
        }
    }
}

/// Bits of [`Metadata::flags`].
#[derive(Debug)]
pub struct EntryFlags;

impl EntryFlags {
    /// The file changed while it was read: its content is a mix of before and after.
    pub const CHANGED_DURING_BACKUP: u8 = 1;
    /// Some of the entry's content or metadata could not be read (see the snapshot's errors).
    pub const INCOMPLETE: u8 = 2;
    const ALL: u8 = Self::CHANGED_DURING_BACKUP | Self::INCOMPLETE;
}

/// One piece of a file's content, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent {
    /// Bytes stored as a data blob.
    Chunk {
        /// The blob holding the bytes.
        id: BlobId,
        /// Its plaintext length.
        length: u32,
    },
    /// A hole: `length` zero bytes that occupy no disk space.
    Hole {
        /// Length in bytes.
        length: u64,
    },
}

impl Extent {
    /// Bytes of the file this extent covers.
    pub fn length(&self) -> u64 {
        match *self {
            Extent::Chunk { length, .. } => u64::from(length),
            Extent::Hole { length } => length,
        }
    }
}

/// What an entry is, with what only that kind has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Its content, in order; lengths add up to the file's size.
        extents: Vec<Extent>,
    },
    /// A directory and the tree blob listing its entries.
    Dir {
        /// Tree blob of the directory's entries.
        subtree: BlobId,
    },
    /// A symbolic link.
    Symlink {
        /// The link's target, as raw bytes.
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix domain socket (recorded; restored as nothing).
    Socket,
    /// A character device.
    CharDevice {
        /// Device number (`st_rdev`).
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number (`st_rdev`).
        rdev: u64,
    },
}

impl Node {
    fn tag(&self) -> u8 {
        match self {
            Node::File { .. } => 1,
            Node::Dir { .. } => 2,
            Node::Symlink { .. } => 3,
            Node::Fifo => 4,
            Node::Socket => 5,
            Node::CharDevice { .. } => 6,
            Node::BlockDevice { .. } => 7,
        }
    }

    /// Short lower-case name of the kind (`file`, `dir`, `symlink`, ...).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Node::File { .. } => "file",
            Node::Dir { .. } => "dir",
            Node::Symlink { .. } => "symlink",
            Node::Fifo => "fifo",
            Node::Socket => "socket",
            Node::CharDevice { .. } => "chardev",
            Node::BlockDevice { .. } => "blockdev",
        }
    }
}

/// One name in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name, raw bytes: never empty, no `/` or NUL, not `.` or `..`.
    pub name: Vec<u8>,
    /// Kind-independent metadata.
    pub meta: Metadata,
    /// The kind and its specifics.
    pub node: Node,
}

impl Entry {
    /// Size in bytes: the content length of a file, the target length of a symlink, else 0.
    pub fn size(&self) -> u64 {
        match &self.node {
            Node::File { extents } => extents
                .iter()
                .fold(0u64, |total, extent| total.saturating_add(extent.length())),
            Node::Symlink { target } => target.len() as u64,
            _ => 0,
        }
    }
}

/// A directory listing, sorted by name with no duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: Vec<Entry>,
}

/// True when `name` may appear in a directory.
pub fn is_valid_name(name: &[u8]) -> bool {
    !name.is_empty() && name != b"." && name != b".." && !name.contains(&b'/') && !name.contains(&0)
}

impl Tree {
    /// Builds a tree, sorting entries by name.
    ///
    /// Fails on an invalid or duplicate name.
    pub fn new(mut entries: Vec<Entry>) -> Result<Self, DecodeError> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Self::validate(&entries)?;
        Ok(Self { entries })
    }

    /// Checks what decoding checks, so that no tree is written that cannot be read back:
    /// valid, sorted, unique names; mode within 0o7777; nanoseconds below 10^9; known flag
    /// bits; non-empty extents whose lengths add up without overflow.
    fn validate(entries: &[Entry]) -> Result<(), DecodeError> {
        for entry in entries {
            let name = || String::from_utf8_lossy(&entry.name).into_owned();
            if !is_valid_name(&entry.name) {
                return Err(DecodeError::invalid(
                    "entry name",
                    format!("{:?} is not a valid file name", name()),
                ));
            }
            let meta = &entry.meta;
            if meta.mode & !0o7777 != 0 {
                return Err(DecodeError::invalid(
                    "mode",
                    format!("{:?}: {:o} has bits beyond 0o7777", name(), meta.mode),
                ));
            }
            if [meta.mtime, meta.atime, meta.ctime]
                .iter()
                .any(|t| t.nsec >= 1_000_000_000)
            {
                return Err(DecodeError::invalid(
                    "timestamp",
                    format!("{:?}: nanoseconds out of range", name()),
                ));
            }
            if meta.flags & !EntryFlags::ALL != 0 {
                return Err(DecodeError::invalid(
                    "flags",
                    format!("{:?}: unknown bits {:#x}", name(), meta.flags),
                ));
            }
            if let Node::File { extents } = &entry.node {
                let mut total = 0u64;
                for extent in extents {
                    if extent.length() == 0 {
                        return Err(DecodeError::invalid(
                            "extent length",
                            format!("{:?}: zero-length extent", name()),
                        ));
                    }
                    total = total.checked_add(extent.length()).ok_or_else(|| {
                        DecodeError::invalid(
                            "extent length",
                            format!("{:?}: file size overflows", name()),
                        )
                    })?;
                }
            }
        }
        for pair in entries.windows(2) {
            if pair[0].name >= pair[1].name {
                return Err(DecodeError::invalid(
                    "entry name",
                    format!(
                        "{:?} is duplicated or out of order",
                        String::from_utf8_lossy(&pair[1].name)
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Entries in name order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Consumes the tree, returning its entries in name order.
    pub fn into_entries(self) -> Vec<Entry> {
        self.entries
    }

    /// Finds an entry by name.
    pub fn get(&self, name: &[u8]) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_slice().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Encodes the tree (the plaintext of a tree blob).
    pub fn encode(&self) -> Vec<u8> {
        let mut enc = Encoder::new();
        enc.u8(TREE_VERSION).count(self.entries.len());
        for entry in &self.entries {
            encode_entry(&mut enc, entry);
        }
        enc.finish()
    }

    /// Decodes and validates a tree blob's plaintext.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        dec.version("tree version", TREE_VERSION)?;
        let count = dec.count(MIN_ENTRY_LEN, "tree entry count")?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(decode_entry(&mut dec)?);
        }
        dec.finish()?;
        Self::validate(&entries)?;
        Ok(Self { entries })
    }
}

/// Smallest possible encoded entry, used to bound forged counts.
const MIN_ENTRY_LEN: usize = 4 + 1 + 12 + 8 + 36 + 24 + 1 + 4;

/// Writes a [`Timestamp`] as [`decode_timestamp`] reads it.
pub(crate) fn encode_timestamp(enc: &mut Encoder, t: Timestamp) {
    enc.i64(t.sec).u32(t.nsec);
}

/// Reads a [`Timestamp`], refusing nanoseconds of a second or more.
pub(crate) fn decode_timestamp(
    dec: &mut Decoder<'_>,
    field: &'static str,
) -> Result<Timestamp, DecodeError> {
    let sec = dec.i64(field)?;
    let nsec = dec.u32(field)?;
    if nsec >= 1_000_000_000 {
        return Err(DecodeError::invalid(field, format!("{nsec} nanoseconds")));
    }
    Ok(Timestamp { sec, nsec })
}

fn encode_entry(enc: &mut Encoder, entry: &Entry) {
    let meta = &entry.meta;
    enc.bytes(&entry.name).u8(entry.node.tag());
    enc.u32(meta.mode).u32(meta.uid).u32(meta.gid);
    enc.bytes(&meta.user).bytes(&meta.group);
    encode_timestamp(enc, meta.mtime);
    encode_timestamp(enc, meta.atime);
    encode_timestamp(enc, meta.ctime);
    enc.u64(meta.device)
        .u64(meta.inode)
        .u64(meta.nlinks)
        .u8(meta.flags);
    enc.count(meta.xattrs.len());
    for (name, value) in &meta.xattrs {
        enc.bytes(name).bytes(value);
    }
    match &entry.node {
        Node::File { extents } => {
            enc.count(extents.len());
            for extent in extents {
                match *extent {
                    Extent::Chunk { id, length } => {
                        enc.u8(0).raw(id.as_bytes()).u32(length);
                    }
                    Extent::Hole { length } => {
                        enc.u8(1).u64(length);
                    }
                }
            }
        }
        Node::Dir { subtree } => {
            enc.raw(subtree.as_bytes());
        }
        Node::Symlink { target } => {
            enc.bytes(target);
        }
        Node::Fifo | Node::Socket => {}
        Node::CharDevice { rdev } | Node::BlockDevice { rdev } => {
            enc.u64(*rdev);
        }
    }
}

fn decode_entry(dec: &mut Decoder<'_>) -> Result<Entry, DecodeError> {
    let name = dec.bytes("entry name")?.to_vec();
    let tag = dec.u8("entry kind")?;
    let mode = dec.u32("mode")?;
    if mode & !0o7777 != 0 {
        return Err(DecodeError::invalid(
            "mode",
            format!("{mode:o} has bits beyond 0o7777"),
        ));
    }
    let uid = dec.u32("uid")?;
    let gid = dec.u32("gid")?;
    let user = dec.bytes("user name")?.to_vec();
    let group = dec.bytes("group name")?.to_vec();
    let mtime = decode_timestamp(dec, "mtime")?;
    let atime = decode_timestamp(dec, "atime")?;
    let ctime = decode_timestamp(dec, "ctime")?;
    let device = dec.u64("device")?;
    let inode = dec.u64("inode")?;
    let nlinks = dec.u64("link count")?;
    let flags = dec.u8("flags")?;
    if flags & !EntryFlags::ALL != 0 {
        return Err(DecodeError::invalid(
            "flags",
            format!("unknown bits {flags:#x}"),
        ));
    }
    let xattr_count = dec.count(8, "xattr count")?;
    let mut xattrs = Vec::with_capacity(xattr_count);
    for _ in 0..xattr_count {
        let name = dec.bytes("xattr name")?.to_vec();
        let value = dec.bytes("xattr value")?.to_vec();
        xattrs.push((name, value));
    }
    let node = match tag {
        1 => {
            let count = dec.count(9, "extent count")?;
            let mut extents = Vec::with_capacity(count);
            for _ in 0..count {
                let extent = match dec.u8("extent kind")? {
                    0 => Extent::Chunk {
                        id: BlobId::from_bytes(dec.array("extent blob id")?),
                        length: dec.u32("extent length")?,
                    },
                    1 => Extent::Hole {
                        length: dec.u64("hole length")?,
                    },
                    other => {
                        return Err(DecodeError::invalid(
                            "extent kind",
                            format!("unknown kind {other}"),
                        ));
                    }
                };
                if extent.length() == 0 {
                    return Err(DecodeError::invalid("extent length", "zero-length extent"));
                }
                extents.push(extent);
            }
            Node::File { extents }
        }
        2 => Node::Dir {
            subtree: BlobId::from_bytes(dec.array("subtree id")?),
        },
        3 => Node::Symlink {
            target: dec.bytes("symlink target")?.to_vec(),
        },
        4 => Node::Fifo,
        5 => Node::Socket,
        6 => Node::CharDevice {
            rdev: dec.u64("rdev")?,
        },
        7 => Node::BlockDevice {
            rdev: dec.u64("rdev")?,
        },
        other => {
            return Err(DecodeError::invalid(
                "entry kind",
                format!("unknown kind {other}"),
            ));
        }
    };
    Ok(Entry {
        name,
        meta: Metadata {
            mode,
            uid,
            gid,
            user,
            group,
            mtime,
            atime,
            ctime,
            device,
            inode,
            nlinks,
            xattrs,
            flags,
        },
        node,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    fn timestamp() -> impl Strategy<Value = Timestamp> {
        (any::<i64>(), 0u32..1_000_000_000).prop_map(|(sec, nsec)| Timestamp { sec, nsec })
    }

    fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..max)
    }

    fn extent() -> impl Strategy<Value = Extent> {
        prop_oneof![
            (any::<[u8; 32]>(), 1u32..).prop_map(|(id, length)| Extent::Chunk {
                id: BlobId::from_bytes(id),
                length
            }),
            (1u64..1 << 48).prop_map(|length| Extent::Hole { length }),
        ]
    }

    fn node() -> impl Strategy<Value = Node> {
        prop_oneof![
            proptest::collection::vec(extent(), 0..5).prop_map(|extents| Node::File { extents }),
            any::<[u8; 32]>().prop_map(|id| Node::Dir {
                subtree: BlobId::from_bytes(id)
            }),
            bytes(300).prop_map(|target| Node::Symlink { target }),
            Just(Node::Fifo),
            Just(Node::Socket),
            any::<u64>().prop_map(|rdev| Node::CharDevice { rdev }),
            any::<u64>().prop_map(|rdev| Node::BlockDevice { rdev }),
        ]
    }

    pub(crate) fn entry() -> impl Strategy<Value = Entry> {
        let name = proptest::collection::vec(
            any::<u8>().prop_filter("no / or NUL", |b| *b != b'/' && *b != 0),
            1..255,
        )
        .prop_filter("not . or ..", |n| n != b"." && n != b"..");
        let meta = (
            (
                0u32..0o10000,
                any::<u32>(),
                any::<u32>(),
                bytes(16),
                bytes(16),
            ),
            (timestamp(), timestamp(), timestamp()),
            (any::<u64>(), any::<u64>(), any::<u64>(), 0u8..4),
            proptest::collection::vec((bytes(20), bytes(40)), 0..3),
        )
            .prop_map(
                |(
                    (mode, uid, gid, user, group),
                    (mtime, atime, ctime),
                    (device, inode, nlinks, flags),
                    xattrs,
                )| Metadata {
                    mode,
                    uid,
                    gid,
                    user,
                    group,
                    mtime,
                    atime,
                    ctime,
                    device,
                    inode,
                    nlinks,
                    xattrs,
                    flags,
                },
            );
        (name, meta, node()).prop_map(|(name, meta, node)| Entry { name, meta, node })
    }

    proptest! {
        #[test]
        fn tree_round_trips(entries in proptest::collection::vec(entry(), 0..8)) {
            let mut entries = entries;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            let tree = Tree::new(entries).unwrap();
            let decoded = Tree::decode(&tree.encode()).unwrap();
            prop_assert_eq!(decoded, tree);
        }

        #[test]
        fn truncated_tree_never_panics(entries in proptest::collection::vec(entry(), 1..4), cut: usize) {
            let mut entries = entries;
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            entries.dedup_by(|a, b| a.name == b.name);
            let bytes = Tree::new(entries).unwrap().encode();
            let cut = cut % bytes.len();
            prop_assert!(Tree::decode(&bytes[..cut]).is_err());
        }
    }

    /// Found by the `tree` fuzz target: extents whose lengths overflow `u64` when added.
    #[test]
    fn regression_fuzz_overflowing_file_size_is_rejected() {
        let entry = Entry {
            name: b"f".to_vec(),
            meta: Metadata::default(),
            node: Node::File {
                extents: vec![
                    Extent::Hole { length: u64::MAX },
                    Extent::Hole { length: 1 },
                ],
            },
        };
        assert_eq!(entry.size(), u64::MAX);
        assert!(Tree::new(vec![entry.clone()]).is_err());
        let mut enc = Encoder::new();
        enc.u8(TREE_VERSION).count(1);
        encode_entry(&mut enc, &entry);
        assert!(Tree::decode(&enc.finish()).is_err());
    }

    #[test]
    fn encoder_refuses_what_the_decoder_would_refuse() {
        let mut entry = Entry {
            name: b"f".to_vec(),
            meta: Metadata::default(),
            node: Node::Fifo,
        };
        entry.meta.mode = 0o100644;
        assert!(Tree::new(vec![entry.clone()]).is_err());
        entry.meta.mode = 0o644;
        entry.meta.mtime.nsec = 1_000_000_000;
        assert!(Tree::new(vec![entry]).is_err());
    }

    #[test]
    fn duplicate_and_bad_names_are_rejected() {
        let entry = |name: &[u8]| Entry {
            name: name.to_vec(),
            meta: Metadata::default(),
            node: Node::Fifo,
        };
        assert!(Tree::new(vec![entry(b"a"), entry(b"a")]).is_err());
        assert!(Tree::new(vec![entry(b"a/b")]).is_err());
        assert!(Tree::new(vec![entry(b"..")]).is_err());
        assert!(Tree::new(vec![entry(b"")]).is_err());
        let tree = Tree::new(vec![entry(b"b"), entry(b"a")]).expect("valid");
        assert_eq!(tree.entries()[0].name, b"a");
        assert!(tree.get(b"b").is_some());
        assert!(tree.get(b"c").is_none());
    }
}
