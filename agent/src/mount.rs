//! Snapshots as a read-only filesystem (`bunker mount`), served through FUSE.
//!
//! The layout:
//! - `snapshots/<time>-<short id>/`: each snapshot's tree, from `/` down, as a restore
//!   would write it; `snapshots/latest` links to the newest;
//! - `hosts/<host>/<time>-<short id>` and `tags/<key=value>/<time>-<short id>`: links to the
//!   snapshots of one host, or with one tag, and a `latest` link in each;
//! - `ids/<short id>`: a link to each snapshot.
//!
//! With a [`Refresh`], the list of snapshots is read again when a directory of the layout
//! is looked into and the last reading is older than its period: new snapshots appear
//! (the index is read again for them), forgotten ones go, and the kernel is told to keep
//! what it learns of the layout for a second only. A snapshot's own tree never changes.
//!
//! Directories are loaded when first looked into; an inode is made for each entry seen and
//! kept for the life of the mount, one for all the names of a hard-linked file in a
//! snapshot. A file's content is read blob by blob as it is read
//! (each blob authenticated and re-hashed, as a restore does), through a small cache of
//! recently read blobs, so reading a file in pieces fetches each blob once. Holes read as
//! zeros. A blob that cannot be read fails that read with EIO and is named on stderr; the
//! rest of the filesystem goes on serving.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bunker_repo_format::index::Index;
use bunker_repo_format::snapshot::Snapshot;
use bunker_repo_format::tree::{Entry, Extent, Metadata, Node, Timestamp};
use bunker_repo_format::{BlobId, Repository, SnapshotId};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

/// How long the kernel may cache what it was told of a snapshot's tree: it never changes.
const TTL: Duration = Duration::from_secs(3600);

/// How long the kernel may cache what it was told of the layout when it refreshes.
const LAYOUT_TTL: Duration = Duration::from_secs(1);

/// The directories of the layout, whose inode numbers never change.
const ROOT: INodeNo = INodeNo(1);
const HOSTS: INodeNo = INodeNo(2);
const IDS: INodeNo = INodeNo(3);
const SNAPSHOTS: INodeNo = INodeNo(4);
const TAGS: INodeNo = INodeNo(5);

/// Plaintext bytes of recently read blobs kept for the next reads.
const BLOB_CACHE_BYTES: usize = 64 << 20;

/// Extended attributes: (name, value) pairs.
type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

/// The read-only filesystem of a repository's snapshots.
pub struct SnapshotFs {
    repo: Arc<Repository>,
    /// Read again when a refresh finds new snapshots.
    index: RwLock<Arc<Index>>,
    inodes: RwLock<Inodes>,
    blobs: Mutex<BlobCache>,
    /// Owner and time of the directories and links this filesystem makes up.
    owner: (u32, u32),
    made: SystemTime,
    shown: Mutex<Shown>,
    refresh: Option<Refresh>,
}

/// How a mount keeps its list of snapshots current.
pub struct Refresh {
    /// Read the list again at most this often (zero: at every look into the layout).
    pub every: Duration,
    /// Which snapshots are shown (`--host`, `--tag`, `--path`).
    pub select: Box<dyn Fn(&Snapshot) -> bool + Send + Sync>,
}

/// The snapshots shown, and what the last reading of the list found.
struct Shown {
    /// Oldest first.
    snapshots: Vec<(SnapshotId, Snapshot)>,
    /// Every id the last reading listed, shown or not.
    listed: std::collections::HashSet<SnapshotId>,
    /// The directory inode of each snapshot ever shown (its tree's inodes hang below it).
    dirs: HashMap<SnapshotId, INodeNo>,
    read_at: Instant,
}

/// What an inode is.
#[derive(Debug, Clone)]
enum Kind {
    /// A directory made up by the layout.
    Listing,
    /// A link made up by the layout.
    Link(Vec<u8>),
    /// An entry of a snapshot's tree (a file's extents moved to its [`Layout`]).
    Tree(Box<Entry>),
}

/// A directory's entries, in order and by name.
#[derive(Debug, Default)]
struct Children {
    list: Vec<(Vec<u8>, INodeNo)>,
    by_name: HashMap<Vec<u8>, INodeNo>,
}

impl Children {
    fn new(list: Vec<(Vec<u8>, INodeNo)>) -> Arc<Self> {
        let by_name = list.iter().cloned().collect();
        Arc::new(Children { list, by_name })
    }
}

/// A file's content: its extents, where each starts, and its sizes.
#[derive(Debug)]
struct Layout {
    extents: Vec<Extent>,
    starts: Vec<u64>,
    /// Bytes in all.
    size: u64,
    /// Bytes of data (not holes).
    stored: u64,
}

impl Layout {
    fn new(extents: Vec<Extent>) -> Self {
        let mut starts = Vec::with_capacity(extents.len());
        let (mut size, mut stored) = (0u64, 0u64);
        for extent in &extents {
            starts.push(size);
            size = size.saturating_add(extent.length());
            if let Extent::Chunk { length, .. } = extent {
                stored += u64::from(*length);
            }
        }
        Layout {
            extents,
            starts,
            size,
            stored,
        }
    }
}

#[derive(Debug)]
struct Inode {
    kind: Kind,
    /// The snapshot directory a tree entry is in (the directory's own inode); 0 for the
    /// layout. Hard links are matched within one snapshot.
    snapshot: INodeNo,
    /// A directory's entries (a tree directory's once loaded).
    children: Option<Arc<Children>>,
    /// A file's content.
    layout: Option<Arc<Layout>>,
}

#[derive(Debug, Default)]
struct Inodes {
    /// Inode `n` is `nodes[n - 1]`.
    nodes: Vec<Inode>,
    /// The inode of each hard-linked file seen, by (snapshot directory, device, inode at
    /// backup): its other names in that snapshot are the same inode here too.
    links: HashMap<(INodeNo, u64, u64), INodeNo>,
}

impl Inodes {
    fn add(&mut self, kind: Kind) -> INodeNo {
        self.add_in(kind, INodeNo(0))
    }

    /// Adds a tree entry of the snapshot whose directory is `snapshot` (0: the layout),
    /// or, for another name of a hard-linked file already added, returns its inode.
    fn add_in(&mut self, mut kind: Kind, snapshot: INodeNo) -> INodeNo {
        let link_key = match &kind {
            Kind::Tree(entry)
                if entry.meta.nlinks > 1 && !matches!(entry.node, Node::Dir { .. }) =>
            {
                Some((snapshot, entry.meta.device, entry.meta.inode))
            }
            _ => None,
        };
        if let Some(ino) = link_key.and_then(|key| self.links.get(&key)) {
            return *ino;
        }
        let layout = match &mut kind {
            Kind::Tree(entry) => match &mut entry.node {
                Node::File { extents } => Some(Arc::new(Layout::new(std::mem::take(extents)))),
                _ => None,
            },
            _ => None,
        };
        self.nodes.push(Inode {
            kind,
            snapshot,
            children: None,
            layout,
        });
        let ino = INodeNo(self.nodes.len() as u64);
        if let Some(key) = link_key {
            self.links.insert(key, ino);
        }
        ino
    }

    fn add_listing(&mut self, list: Vec<(Vec<u8>, INodeNo)>) -> INodeNo {
        let ino = self.add(Kind::Listing);
        if let Some(node) = self.get_mut(ino) {
            node.children = Some(Children::new(list));
        }
        ino
    }

    fn get(&self, ino: INodeNo) -> Option<&Inode> {
        let n = usize::try_from(u64::from(ino)).ok()?;
        self.nodes.get(n.checked_sub(1)?)
    }

    fn get_mut(&mut self, ino: INodeNo) -> Option<&mut Inode> {
        let n = usize::try_from(u64::from(ino)).ok()?;
        self.nodes.get_mut(n.checked_sub(1)?)
    }
}

/// Recently read blobs, oldest first out.
#[derive(Debug, Default)]
struct BlobCache {
    blobs: HashMap<BlobId, Arc<Vec<u8>>>,
    order: VecDeque<BlobId>,
    bytes: usize,
}

impl BlobCache {
    fn get(&self, id: &BlobId) -> Option<Arc<Vec<u8>>> {
        self.blobs.get(id).cloned()
    }

    fn insert(&mut self, id: BlobId, data: Arc<Vec<u8>>) {
        if self.blobs.contains_key(&id) {
            return;
        }
        self.bytes += data.len();
        self.blobs.insert(id, data);
        self.order.push_back(id);
        while self.bytes > BLOB_CACHE_BYTES && self.order.len() > 1 {
            if let Some(old) = self.order.pop_front()
                && let Some(data) = self.blobs.remove(&old)
            {
                self.bytes -= data.len();
            }
        }
    }
}

/// The name of a snapshot's directory: `2026-12-05T22:48:50Z-1a2b3c4d`.
pub fn snapshot_dir_name(id: &SnapshotId, snapshot: &Snapshot) -> String {
    let time = jiff::Timestamp::new(snapshot.time.sec, 0)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| snapshot.time.sec.to_string());
    format!("{time}-{}", id.short())
}

/// `text` as one file name: `%`, `/` and NUL escaped as `%25`, `%2F`, `%00` (a host or tag
/// may hold a `/`); `.`, `..` and the empty name as `%2E`, `%2E%2E`, `%`.
fn file_name(text: &str) -> Vec<u8> {
    let escaped = text
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('\0', "%00");
    match escaped.as_str() {
        "" => b"%".to_vec(),
        "." => b"%2E".to_vec(),
        ".." => b"%2E%2E".to_vec(),
        _ => escaped.into_bytes(),
    }
}

/// Fills the layout's directories from `shown`: a snapshot already shown keeps its
/// directory inode (and what the kernel knows below it); links and the host and tag
/// directories are made anew.
fn lay_out(inodes: &mut Inodes, shown: &mut Shown, owner: (u32, u32)) {
    let mut by_name = Vec::new();
    let mut hosts: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut tags: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut ids = Vec::new();
    // A short id two snapshots share (likely among some 100,000) names neither: both go
    // under their full ids.
    let mut shorts: HashMap<String, usize> = HashMap::new();
    for (id, _) in &shown.snapshots {
        *shorts.entry(id.short()).or_default() += 1;
    }
    for (id, snapshot) in &shown.snapshots {
        let name = snapshot_dir_name(id, snapshot).into_bytes();
        let dir = *shown.dirs.entry(*id).or_insert_with(|| {
            let dir = Entry {
                name: name.clone(),
                meta: Metadata {
                    mode: 0o755,
                    mtime: snapshot.time,
                    atime: snapshot.time,
                    ctime: snapshot.time,
                    uid: owner.0,
                    gid: owner.1,
                    ..Metadata::default()
                },
                node: Node::Dir {
                    subtree: snapshot.tree,
                },
            };
            let ino = inodes.add(Kind::Tree(Box::new(dir)));
            if let Some(node) = inodes.get_mut(ino) {
                node.snapshot = ino;
            }
            ino
        });
        by_name.push((name.clone(), dir));
        hosts
            .entry(snapshot.host.clone())
            .or_default()
            .push(name.clone());
        for (key, value) in &snapshot.tags {
            tags.entry(format!("{key}={value}"))
                .or_default()
                .push(name.clone());
        }
        let link = [b"../snapshots/".as_slice(), &name].concat();
        let short = id.short();
        let id_name = if shorts.get(&short) == Some(&1) {
            short
        } else {
            id.to_hex()
        };
        ids.push((id_name.into_bytes(), inodes.add(Kind::Link(link))));
    }
    if let Some((newest, _)) = by_name.last() {
        let newest = newest.clone();
        by_name.push((b"latest".to_vec(), inodes.add(Kind::Link(newest))));
    }
    let mut group_dir = |groups: BTreeMap<String, Vec<Vec<u8>>>| -> Vec<(Vec<u8>, INodeNo)> {
        groups
            .into_iter()
            .map(|(group, names)| {
                let mut links: Vec<(Vec<u8>, INodeNo)> = names
                    .iter()
                    .map(|name| {
                        let target = [b"../../snapshots/".as_slice(), name].concat();
                        (name.clone(), inodes.add(Kind::Link(target)))
                    })
                    .collect();
                if let Some(newest) = names.last() {
                    links.push((b"latest".to_vec(), inodes.add(Kind::Link(newest.clone()))));
                }
                (file_name(&group), inodes.add_listing(links))
            })
            .collect()
    };
    let hosts_listing = group_dir(hosts);
    let tags_listing = group_dir(tags);
    for (ino, list) in [
        (HOSTS, hosts_listing),
        (TAGS, tags_listing),
        (SNAPSHOTS, by_name),
        (IDS, ids),
    ] {
        if let Some(node) = inodes.get_mut(ino) {
            node.children = Some(Children::new(list));
        }
    }
}

impl SnapshotFs {
    /// The filesystem of `snapshots` (oldest first), read through `index`; made-up
    /// directories and links belong to `owner` (uid, gid). Without `refresh` the list is
    /// the one given for the life of the mount.
    pub fn new(
        repo: Arc<Repository>,
        index: Index,
        snapshots: Vec<(SnapshotId, Snapshot)>,
        owner: (u32, u32),
        refresh: Option<Refresh>,
    ) -> Self {
        let mut inodes = Inodes::default();
        for ino in [ROOT, HOSTS, IDS, SNAPSHOTS, TAGS] {
            let added = inodes.add_listing(Vec::new());
            debug_assert_eq!(added, ino);
        }
        if let Some(node) = inodes.get_mut(ROOT) {
            node.children = Some(Children::new(vec![
                (b"hosts".to_vec(), HOSTS),
                (b"ids".to_vec(), IDS),
                (b"snapshots".to_vec(), SNAPSHOTS),
                (b"tags".to_vec(), TAGS),
            ]));
        }
        let mut shown = Shown {
            listed: snapshots.iter().map(|(id, _)| *id).collect(),
            snapshots,
            dirs: HashMap::new(),
            read_at: Instant::now(),
        };
        lay_out(&mut inodes, &mut shown, owner);
        SnapshotFs {
            repo,
            index: RwLock::new(Arc::new(index)),
            inodes: RwLock::new(inodes),
            blobs: Mutex::new(BlobCache::default()),
            owner,
            made: SystemTime::now(),
            shown: Mutex::new(shown),
            refresh,
        }
    }

    fn index(&self) -> Arc<Index> {
        Arc::clone(&self.index.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// True for the directories and links of the layout (not of a snapshot's tree).
    fn is_layout(&self, ino: INodeNo) -> bool {
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        inodes
            .get(ino)
            .is_some_and(|node| !matches!(node.kind, Kind::Tree(_)))
    }

    /// How long the kernel may keep what it is told of `node`.
    fn ttl(&self, node: &Inode) -> &'static Duration {
        match (&self.refresh, &node.kind) {
            (Some(_), Kind::Listing | Kind::Link(_)) => &LAYOUT_TTL,
            _ => &TTL,
        }
    }

    /// Reads the list of snapshots again when `ino` is in the layout and the last reading
    /// is older than the refresh period; lays the layout out again when it changed. A list
    /// that cannot be read leaves the layout as it was (named on stderr).
    fn refresh_for(&self, ino: INodeNo) {
        if self.refresh.is_some() && self.is_layout(ino) {
            self.refresh_if_due();
        }
    }

    /// Reads the list of snapshots again when the last reading is older than the refresh
    /// period (see [`SnapshotFs::refresh_for`]).
    fn refresh_if_due(&self) {
        let Some(refresh) = &self.refresh else {
            return;
        };
        let mut shown = self.shown.lock().unwrap_or_else(PoisonError::into_inner);
        if shown.read_at.elapsed() < refresh.every {
            return;
        }
        shown.read_at = Instant::now();
        let listed: std::collections::HashSet<SnapshotId> = match self.repo.list_snapshot_ids() {
            Ok(ids) => ids.into_iter().collect(),
            Err(e) => {
                eprintln!("bunker: mount: cannot list the snapshots again: {e}");
                return;
            }
        };
        if listed == shown.listed {
            return;
        }
        let mut added = false;
        let new: Vec<SnapshotId> = listed.difference(&shown.listed).copied().collect();
        for id in new {
            match self.repo.load_snapshot(&id) {
                Ok(snapshot) if (refresh.select)(&snapshot) => {
                    shown.snapshots.push((id, snapshot));
                    added = true;
                }
                Ok(_) => {}
                Err(e) => eprintln!(
                    "bunker: mount: snapshot {} cannot be read and is not shown: {e}",
                    id.short()
                ),
            }
        }
        shown.snapshots.retain(|(id, _)| listed.contains(id));
        shown
            .snapshots
            .sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        shown.listed = listed;
        if added {
            // New snapshots' trees and data are in packs the index read at mount lacks.
            match self.repo.load_index_for_reading() {
                Ok(loaded) => {
                    *self.index.write().unwrap_or_else(PoisonError::into_inner) =
                        Arc::new(loaded.index)
                }
                Err(e) => eprintln!("bunker: mount: cannot read the index again: {e}"),
            }
        }
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        lay_out(&mut inodes, &mut shown, self.owner);
    }

    fn attr(&self, ino: INodeNo, node: &Inode) -> FileAttr {
        let mut attr = FileAttr {
            ino,
            size: 0,
            blocks: 0,
            atime: self.made,
            mtime: self.made,
            ctime: self.made,
            crtime: self.made,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            uid: self.owner.0,
            gid: self.owner.1,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        };
        match &node.kind {
            Kind::Listing => {}
            Kind::Link(target) => {
                attr.kind = FileType::Symlink;
                attr.perm = 0o777;
                attr.nlink = 1;
                attr.size = target.len() as u64;
            }
            Kind::Tree(entry) => {
                let meta = &entry.meta;
                attr.kind = file_type(&entry.node);
                attr.perm = (meta.mode & 0o7777) as u16;
                attr.nlink = if attr.kind == FileType::Directory {
                    2
                } else {
                    // Hard-linked files show as one inode (tar and rsync -H keep them so).
                    u32::try_from(meta.nlinks.max(1)).unwrap_or(u32::MAX)
                };
                attr.uid = meta.uid;
                attr.gid = meta.gid;
                // An unrecorded access time reads as the modification time, as restored.
                attr.atime = system_time(meta.atime_or_mtime());
                attr.mtime = system_time(meta.mtime);
                attr.ctime = system_time(meta.ctime);
                attr.crtime = attr.mtime;
                attr.size = entry.size();
                if let Some(layout) = &node.layout {
                    attr.size = layout.size;
                    attr.blocks = layout.stored.div_ceil(512);
                }
                if let Node::CharDevice { rdev } | Node::BlockDevice { rdev } = entry.node {
                    attr.rdev = fuse_device_number(rdev);
                }
            }
        }
        attr
    }

    /// The entries of the directory `ino`, loading its tree the first time.
    fn children(&self, ino: INodeNo) -> Result<Arc<Children>, Errno> {
        let (subtree, snapshot) = {
            let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
            let node = inodes.get(ino).ok_or(Errno::ENOENT)?;
            if let Some(children) = &node.children {
                return Ok(Arc::clone(children));
            }
            match &node.kind {
                Kind::Tree(entry) => match entry.node {
                    Node::Dir { subtree } => (subtree, node.snapshot),
                    _ => return Err(Errno::ENOTDIR),
                },
                Kind::Listing | Kind::Link(_) => return Err(Errno::ENOTDIR),
            }
        };
        let tree = self.repo.load_tree(&self.index(), &subtree).map_err(|e| {
            eprintln!("bunker: mount: cannot read directory tree {subtree}: {e}");
            Errno::EIO
        })?;
        let mut inodes = self.inodes.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have loaded it meanwhile.
        if let Some(children) = inodes.get(ino).and_then(|node| node.children.clone()) {
            return Ok(children);
        }
        let list = tree
            .into_entries()
            .into_iter()
            .map(|entry| {
                let name = entry.name.clone();
                (name, inodes.add_in(Kind::Tree(Box::new(entry)), snapshot))
            })
            .collect();
        let children = Children::new(list);
        if let Some(node) = inodes.get_mut(ino) {
            node.children = Some(Arc::clone(&children));
        }
        Ok(children)
    }

    fn blob(&self, id: &BlobId) -> Result<Arc<Vec<u8>>, Errno> {
        if let Some(data) = self
            .blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Ok(data);
        }
        let data = Arc::new(self.repo.read_blob(&self.index(), id).map_err(|e| {
            eprintln!("bunker: mount: cannot read data blob {id}: {e}");
            Errno::EIO
        })?);
        self.blobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(*id, Arc::clone(&data));
        Ok(data)
    }

    /// Up to `size` bytes of the file `ino` from `offset`.
    fn read_file(&self, ino: INodeNo, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let layout = {
            let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
            let node = inodes.get(ino).ok_or(Errno::ENOENT)?;
            match (&node.layout, &node.kind) {
                (Some(layout), _) => Arc::clone(layout),
                (None, Kind::Listing) => return Err(Errno::EISDIR),
                (None, Kind::Tree(entry)) if matches!(entry.node, Node::Dir { .. }) => {
                    return Err(Errno::EISDIR);
                }
                (None, _) => return Err(Errno::EINVAL),
            }
        };
        let (extents, starts) = (&layout.extents, &layout.starts);
        let end = offset.saturating_add(u64::from(size)).min(layout.size);
        let mut out = Vec::with_capacity(end.saturating_sub(offset) as usize);
        // The extent holding `offset`: the last that starts at or before it.
        let mut i = starts
            .partition_point(|start| *start <= offset)
            .saturating_sub(1);
        let mut position = offset;
        while position < end && i < extents.len() {
            let start = starts[i];
            let length = extents[i].length();
            let from = position - start;
            let to = (end - start).min(length);
            match &extents[i] {
                Extent::Hole { .. } => out.resize(out.len() + (to - from) as usize, 0),
                Extent::Chunk { id, .. } => {
                    let data = self.blob(id)?;
                    let slice = usize::try_from(from)
                        .ok()
                        .zip(usize::try_from(to).ok())
                        .and_then(|(from, to)| data.get(from..to))
                        .ok_or(Errno::EIO)?;
                    out.extend_from_slice(slice);
                }
            }
            position = start + to;
            i += 1;
        }
        Ok(out)
    }

    fn xattrs(&self, ino: INodeNo) -> Result<Xattrs, Errno> {
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        let node = inodes.get(ino).ok_or(Errno::ENOENT)?;
        Ok(match &node.kind {
            Kind::Tree(entry) => entry.meta.xattrs.clone(),
            _ => Vec::new(),
        })
    }
}

fn file_type(node: &Node) -> FileType {
    match node {
        Node::File { .. } => FileType::RegularFile,
        Node::Dir { .. } => FileType::Directory,
        Node::Symlink { .. } => FileType::Symlink,
        Node::Fifo => FileType::NamedPipe,
        Node::Socket => FileType::Socket,
        Node::CharDevice { .. } => FileType::CharDevice,
        Node::BlockDevice { .. } => FileType::BlockDevice,
    }
}

/// `st_rdev` in the kernel's 32-bit encoding, which FUSE attributes carry: the low 8 bits
/// of the minor, 12 bits of major, then the rest of the minor.
fn fuse_device_number(rdev: u64) -> u32 {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)) as u32
}

fn system_time(time: Timestamp) -> SystemTime {
    let seconds = Duration::from_secs(time.sec.unsigned_abs());
    let base = if time.sec >= 0 {
        UNIX_EPOCH + seconds
    } else {
        UNIX_EPOCH - seconds
    };
    base + Duration::from_nanos(u64::from(time.nsec))
}

/// Replies to a size query (`size == 0`) or with `data` if it fits.
fn reply_sized(reply: ReplyXattr, size: u32, data: &[u8]) {
    let length = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(length);
    } else if length > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

impl Filesystem for SnapshotFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.refresh_for(parent);
        let children = match self.children(parent) {
            Ok(children) => children,
            Err(e) => return reply.error(e),
        };
        let Some(ino) = children.by_name.get(name.as_bytes()) else {
            return reply.error(Errno::ENOENT);
        };
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        match inodes.get(*ino) {
            Some(node) => reply.entry(self.ttl(node), &self.attr(*ino, node), Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        match inodes.get(ino) {
            Some(node) => reply.attr(self.ttl(node), &self.attr(ino, node)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        match inodes.get(ino).map(|node| &node.kind) {
            Some(Kind::Link(target)) => reply.data(target),
            Some(Kind::Tree(entry)) => match &entry.node {
                Node::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Some(Kind::Listing) => reply.error(Errno::EINVAL),
            None => reply.error(Errno::ENOENT),
        }
    }

    /// Nothing here ever changes: the kernel may keep what it read for the next opens.
    fn open(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    /// A snapshot's directory never changes: the kernel may keep its listing. The
    /// layout's are listed anew at each open when the mount refreshes.
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.refresh.is_some() && self.is_layout(ino) {
            self.refresh_if_due();
            return reply.opened(FileHandle(0), FopenFlags::empty());
        }
        reply.opened(
            FileHandle(0),
            FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR,
        );
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_file(ino, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let children = match self.children(ino) {
            Ok(children) => children,
            Err(e) => return reply.error(e),
        };
        let inodes = self.inodes.read().unwrap_or_else(PoisonError::into_inner);
        let kind_of = |child: INodeNo| {
            inodes
                .get(child)
                .map_or(FileType::RegularFile, |node| match &node.kind {
                    Kind::Listing => FileType::Directory,
                    Kind::Link(_) => FileType::Symlink,
                    Kind::Tree(entry) => file_type(&entry.node),
                })
        };
        let dots = [
            (b".".as_slice(), ino, FileType::Directory),
            (b"..".as_slice(), ino, FileType::Directory),
        ];
        let entries = dots.into_iter().chain(
            children
                .list
                .iter()
                .map(|(name, child)| (name.as_slice(), *child, kind_of(*child))),
        );
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        for (i, (name, child, kind)) in entries.enumerate().skip(skip) {
            if reply.add(child, i as u64 + 1, kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.xattrs(ino) {
            Ok(xattrs) => match xattrs
                .iter()
                .find(|(key, _)| key.as_slice() == name.as_bytes())
            {
                Some((_, value)) => reply_sized(reply, size, value),
                None => reply.error(Errno::NO_XATTR),
            },
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.xattrs(ino) {
            Ok(xattrs) => {
                let mut names = Vec::new();
                for (key, _) in &xattrs {
                    names.extend_from_slice(key);
                    names.push(0);
                }
                reply_sized(reply, size, &names);
            }
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_tags_become_one_file_name_each() {
        assert_eq!(file_name("web1"), b"web1");
        assert_eq!(file_name("path=/srv/app"), b"path=%2Fsrv%2Fapp");
        assert_eq!(file_name("100%/x"), b"100%25%2Fx");
        assert_eq!(file_name(""), b"%");
        assert_eq!(file_name("."), b"%2E");
        assert_eq!(file_name(".."), b"%2E%2E");
        assert_eq!(file_name("a\0b"), b"a%00b");
    }
}
