//! The prefetcher: threads that list directories ahead of the walk, in the walk's order.
//!
//! The walk goes depth first, each directory's entries in name order, and listing a
//! directory (opening it, reading its names, a `stat` per entry, its tree in the parent
//! snapshot) was most of its work where little is read: a no-change backup of the Linux
//! source kept one core busy and left the other idle (docs/PERFORMANCE.md, session 37).
//! The prefetcher's threads list the directories the walk will come to, the first ones
//! first, and the walk [takes](Prefetcher::take) each listing made for it; so listing
//! directories and archiving another go on side by side.
//!
//! Depth first in name order is the order of the directories' paths (compared by their
//! components), which keeps the walk and the prefetcher in step: the prefetcher always
//! lists the first directory, in that order, that it knows of and the walk has not reached,
//! and forgets those the walk went past. It goes into the subdirectories the walk will go
//! into as far as a listing tells: entries captured as directories, on the source path's
//! filesystem when the backup stays on one, without a tag file that leaves them out. Where
//! the two disagree (a tag file written between the two looks), the walk lists a directory
//! itself when it finds no listing for it. A directory the walk lists itself (a source
//! path, one the prefetcher had not reached) hands its subdirectories to the prefetcher.
//!
//! Listings made and not taken yet hold memory and open directories: the prefetcher waits
//! while they hold [`HELD_ENTRIES`] entries or number [`HELD_LISTINGS`]. It also waits
//! while sealing keeps every pool thread busy (a first backup): the walk then reads files
//! most of its time, and lists what it comes to itself as it did before the prefetcher,
//! without the listings' memory held ahead and handed between threads (1-2% more CPU and
//! 10 MB more at the peak in a first backup of the Linux source).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use bunker_repo_format::BlobId;

use super::TagFile;
use super::listing::{Lister, Listing, subtree_of};
use super::seal::SealLoad;
use crate::platform::{CapturedKind, DirHandle};

/// Entries in listings made ahead and not taken yet, at most (a listing with more may be
/// held alone). A captured entry takes a few hundred bytes.
const HELD_ENTRIES: usize = 2 << 10;

/// Listings made ahead and not taken yet, at most: each holds its directory open.
const HELD_LISTINGS: usize = 32;

/// A directory to list: where it is recorded, the path to read it through, and its tree
/// in the parent snapshot.
pub(super) struct Request {
    pub path: PathBuf,
    pub access: PathBuf,
    pub parent: Option<BlobId>,
    /// With `one_file_system`, the device the walk stays on below it.
    pub stay_on: Option<u64>,
    /// The directory holding it, kept open: `access` may name it through that directory's
    /// descriptor (a long path, see [`DirHandle::child`]). Held, never read.
    #[allow(dead_code)]
    pub holder: Option<Arc<DirHandle>>,
}

/// A listing being made, or made.
enum Stage {
    Running,
    Done(Listing),
}

#[derive(Default)]
struct State {
    /// Directories to list, by path: the first is the one the walk comes to first.
    to_list: BTreeMap<PathBuf, Request>,
    /// Listings by directory.
    listings: BTreeMap<PathBuf, Stage>,
    /// The last directory the walk took a listing for (or listed): nothing before it, in
    /// the walk's order, is needed any more.
    walk_at: PathBuf,
    /// Entries in the listings made and not taken.
    held_entries: usize,
    /// The walk waits for a listing being made.
    walk_waits: bool,
    /// Listing threads waiting for a directory to list or room to hold its listing.
    listers_waiting: usize,
    closed: bool,
}

impl State {
    /// Whether the listings made or being made hold all they may: a lister starts no other.
    fn full(&self) -> bool {
        self.held_entries >= HELD_ENTRIES || self.listings.len() >= HELD_LISTINGS
    }

    /// Forgets the directories before `path` in the walk's order, listed or not (the walk
    /// went past them), and `path` itself if it is still to list. Returns what they held,
    /// to be dropped after the lock.
    fn pass(&mut self, path: &Path) -> (Vec<Listing>, BTreeMap<PathBuf, Request>) {
        let mut to_list = self.to_list.split_off(path);
        // The walk takes this one's listing, or makes it.
        let this_one = to_list.remove(path);
        let mut not_listed = std::mem::replace(&mut self.to_list, to_list);
        if let Some(request) = this_one {
            not_listed.insert(request.path.clone(), request);
        }
        let kept = self.listings.split_off(path);
        let passed = std::mem::replace(&mut self.listings, kept);
        let mut dropped = Vec::new();
        for stage in passed.into_values() {
            match stage {
                Stage::Done(listing) => {
                    self.held_entries -= listing.len();
                    dropped.push(listing);
                }
                // Made on, and dropped when it is done.
                Stage::Running => {}
            }
        }
        self.walk_at = path.to_owned();
        (dropped, not_listed)
    }
}

/// Listings made by the prefetching threads ahead of the walk.
#[derive(Default)]
pub(super) struct Prefetcher {
    /// How busy sealing keeps the pool; `None`: never too busy to list ahead.
    seal_load: Option<SealLoad>,
    state: Mutex<State>,
    /// The walk waits on it for a listing being made.
    walk_wakes: Condvar,
    /// The listing threads wait on it for a directory to list, or room to hold a listing.
    listers_wake: Condvar,
}

impl Prefetcher {
    /// A prefetcher that lists ahead only while `seal_load` leaves a pool thread idle.
    pub fn new(seal_load: SealLoad) -> Self {
        Self {
            seal_load: Some(seal_load),
            ..Self::default()
        }
    }

    /// Whether the listing threads may start a listing: room to hold it, and a pool thread
    /// that sealing leaves idle.
    fn may_list(&self, state: &State) -> bool {
        !state.full() && !self.seal_load.as_ref().is_some_and(SealLoad::saturated)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the listing threads that wait, if any (a wake is a system call).
    fn wake_listers(&self, state: &State) {
        if state.listers_waiting > 0 {
            self.listers_wake.notify_all();
        }
    }

    /// The listing of the directory recorded at `path` when the prefetcher made it, or is
    /// making it (this waits for it); `None` when the walk must list it itself.
    pub fn take(&self, path: &Path) -> Option<Listing> {
        let mut state = self.lock();
        let passed = state.pass(path);
        let taken = loop {
            match state.listings.remove(path) {
                Some(Stage::Done(listing)) => {
                    state.held_entries -= listing.len();
                    break Some(listing);
                }
                Some(Stage::Running) => {
                    state.listings.insert(path.to_owned(), Stage::Running);
                    state.walk_waits = true;
                    state = self
                        .walk_wakes
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.walk_waits = false;
                }
                None => break None,
            }
        };
        if self.may_list(&state) {
            self.wake_listers(&state);
        }
        drop(state);
        drop(passed);
        taken
    }

    /// Hands the prefetcher the subdirectories of a directory the walk listed itself.
    pub fn hand_over(&self, requests: Vec<Request>) {
        if requests.is_empty() {
            return;
        }
        let mut state = self.lock();
        let walk_at = state.walk_at.clone();
        let ahead = requests.into_iter().filter(|r| r.path > walk_at);
        state.to_list.extend(ahead.map(|r| (r.path.clone(), r)));
        if self.may_list(&state) {
            self.wake_listers(&state);
        }
    }

    /// Lists directories with `lister`, going into those without one of `tag_files`,
    /// until [`Prefetcher::close`] is called. Several threads may serve at once.
    pub fn serve(&self, lister: &Lister<'_>, tag_files: &[TagFile]) {
        let mut state = self.lock();
        loop {
            if state.closed {
                return;
            }
            let request = if self.may_list(&state) {
                state.to_list.pop_first().map(|(_, request)| request)
            } else {
                None
            };
            let Some(request) = request else {
                state.listers_waiting += 1;
                state = self
                    .listers_wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                state.listers_waiting -= 1;
                continue;
            };
            // The walk is there already, or past it.
            if request.path <= state.walk_at || state.listings.contains_key(&request.path) {
                continue;
            }
            state.listings.insert(request.path.clone(), Stage::Running);
            drop(state);
            let listing = lister.list(&request.path, &request.access, request.parent);
            let subdirectories = subdirectories(&listing, request.stay_on, tag_files);
            state = self.lock();
            // The walk may be waiting for it (`walk_at` is then its path).
            if request.path >= state.walk_at {
                state.held_entries += listing.len();
                state.listings.insert(request.path, Stage::Done(listing));
                if !subdirectories.is_empty() {
                    let ahead = subdirectories.into_iter().map(|r| (r.path.clone(), r));
                    state.to_list.extend(ahead);
                    self.wake_listers(&state);
                }
                if state.walk_waits {
                    self.walk_wakes.notify_one();
                }
            } else {
                // The walk went past it meanwhile.
                state.listings.remove(&request.path);
                if state.walk_waits {
                    self.walk_wakes.notify_one();
                }
                drop(state);
                drop((listing, subdirectories));
                state = self.lock();
            }
        }
    }

    /// Stops [`Prefetcher::serve`] after the listings being made.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.wake_listers(&state);
    }

    /// Closes the prefetcher when dropped: the walk's way out, whatever it is.
    pub fn closing(&self) -> Closing<'_> {
        Closing(self)
    }
}

/// The subdirectories of a listed directory that the walk will go into, in its order: those
/// on the device `stay_on` when given, without one of `tag_files`.
pub(super) fn subdirectories(
    listing: &Listing,
    stay_on: Option<u64>,
    tag_files: &[TagFile],
) -> Vec<Request> {
    let parent = listing.parent.as_ref();
    listing
        .listed
        .iter()
        .zip(&listing.captured)
        .filter_map(|(entry, captured)| {
            let captured = captured.as_ref().ok()?;
            let on_this_filesystem = stay_on.is_none_or(|device| device == captured.meta.device);
            let walked = matches!(captured.kind, CapturedKind::Dir)
                && on_this_filesystem
                && !tag_files.iter().any(|tag| tag.tags(&entry.access));
            walked.then(|| Request {
                path: entry.path.clone(),
                access: entry.access.clone(),
                parent: subtree_of(parent.and_then(|tree| tree.get(&entry.name))),
                stay_on,
                holder: listing.handle.clone(),
            })
        })
        .collect()
}

/// Closes its prefetcher when dropped (see [`Prefetcher::closing`]).
pub(super) struct Closing<'p>(&'p Prefetcher);

impl Drop for Closing<'_> {
    fn drop(&mut self) {
        self.0.close();
    }
}

#[cfg(test)]
impl Prefetcher {
    /// Waits until `listers` listing threads all wait (for a directory to list or for room),
    /// with no listing being made.
    fn wait_until_idle(&self, listers: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            {
                let state = self.lock();
                let running = state.listings.values().any(|s| matches!(s, Stage::Running));
                let no_work = state.to_list.is_empty() || !self.may_list(&state);
                if state.listers_waiting == listers && !running && no_work {
                    return;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the listers never idled"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Waits until a lister is making the listing of `path`; false if it was made first.
    fn wait_until_listing(&self, path: &Path) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self.lock().listings.get(path) {
                Some(Stage::Running) => return true,
                Some(Stage::Done(_)) => return false,
                None => {}
            }
            assert!(std::time::Instant::now() < deadline, "never listed");
            std::thread::yield_now();
        }
    }

    /// Listings made and not taken: their number and their entries.
    fn held(&self) -> (usize, usize) {
        let state = self.lock();
        let done: Vec<&Listing> = state
            .listings
            .values()
            .filter_map(|stage| match stage {
                Stage::Done(listing) => Some(listing),
                Stage::Running => None,
            })
            .collect();
        let entries = done.iter().map(|listing| listing.len()).sum();
        assert_eq!(state.held_entries, entries, "the entries held add up");
        (done.len(), entries)
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use bunker_repo_format::Repository;
    use bunker_repo_format::index::Index;

    use super::super::Excludes;
    use super::super::read::tests::small_chunks_repo;
    use super::*;
    use crate::platform::{Captured, NameCache};

    /// Directories in the walk's order: depth first, names in order.
    const TREE: [&str; 8] = ["a", "a/1", "a/2", "a/2/x", "b", "c", "c/1", "c/1/deep"];

    fn make_tree(root: &Path) {
        for dir in TREE {
            fs::create_dir_all(root.join(dir)).expect("mkdir");
            fs::write(root.join(dir).join("file"), dir).expect("file");
        }
    }

    /// A repository, an empty index, no excludes, and a source directory `src` to fill.
    struct Fixture {
        repo: Repository,
        index: Index,
        excludes: Excludes,
        root: PathBuf,
        _tmp: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let tmp = tempfile::tempdir().expect("tempdir");
            let root = tmp.path().join("src");
            fs::create_dir(&root).expect("src");
            Self {
                repo: small_chunks_repo(&tmp.path().join("repo")),
                index: Index::default(),
                excludes: Excludes::new(&[]).expect("excludes"),
                root,
                _tmp: tmp,
            }
        }

        fn lister(&self) -> Lister<'_> {
            Lister {
                repo: &self.repo,
                index: &self.index,
                excludes: &self.excludes,
                hidden: None,
                names: Arc::new(NameCache::new()),
                trust_parent: true,
                share_captures: false,
            }
        }
    }

    fn names(listing: &Listing) -> Vec<String> {
        listing
            .listed
            .iter()
            .map(|entry| String::from_utf8_lossy(&entry.name).into_owned())
            .collect()
    }

    /// Runs `walk` beside `listers` threads serving `prefetcher`, closed after the walk.
    fn with_listers<R>(
        lister: &Lister<'_>,
        listers: usize,
        walk: impl FnOnce(&Arc<Prefetcher>) -> R,
    ) -> R {
        with_prefetcher(Prefetcher::default(), lister, listers, walk)
    }

    fn with_prefetcher<R>(
        prefetcher: Prefetcher,
        lister: &Lister<'_>,
        listers: usize,
        walk: impl FnOnce(&Arc<Prefetcher>) -> R,
    ) -> R {
        let prefetcher = Arc::new(prefetcher);
        std::thread::scope(|scope| {
            let _closing = prefetcher.closing();
            for _ in 0..listers {
                scope.spawn(|| prefetcher.serve(lister, &[]));
            }
            walk(&prefetcher)
        })
    }

    /// Lists `path` as the walk does when nobody listed it, handing its subdirectories over.
    fn list_here(prefetcher: &Prefetcher, lister: &Lister<'_>, path: &Path) -> Listing {
        assert!(prefetcher.take(path).is_none(), "{}", path.display());
        let listing = lister.list(path, path, None);
        prefetcher.hand_over(subdirectories(&listing, None, &[]));
        listing
    }

    #[test]
    fn the_listers_make_every_listing_the_walk_takes_in_its_order() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        make_tree(root);
        let lister = fixture.lister();
        for listers in [1, 2] {
            with_listers(&lister, listers, |prefetcher| {
                let top = list_here(prefetcher, &lister, root);
                assert_eq!(names(&top), ["a", "b", "c"]);
                prefetcher.wait_until_idle(listers);
                assert_eq!(prefetcher.held().0, TREE.len(), "all listed ahead");
                for dir in TREE {
                    let listing = prefetcher.take(&root.join(dir)).expect(dir);
                    assert!(listing.error.is_none());
                    let captured = listing.captured.iter().filter(|c| c.is_ok()).count();
                    assert_eq!(captured, listing.len(), "{dir}");
                    assert!(names(&listing).contains(&"file".to_owned()), "{dir}");
                }
                assert_eq!(prefetcher.held(), (0, 0));
            });
        }
    }

    #[test]
    fn directories_the_walk_went_past_are_forgotten_and_one_not_listed_is_listed_by_the_walk() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        make_tree(root);
        let lister = fixture.lister();
        with_listers(&lister, 1, |prefetcher| {
            list_here(prefetcher, &lister, root);
            prefetcher.wait_until_idle(1);
            // The walk leaves `a` out (a tag file written meanwhile, say): `a`, `a/1`,
            // `a/2` and `a/2/x` go when it takes `b`.
            let b = prefetcher.take(&root.join("b")).expect("b");
            assert_eq!(names(&b), ["file"]);
            assert_eq!(prefetcher.held().0, 3, "c, c/1, c/1/deep are left");
            // A directory nobody listed (made after its parent was listed) is the walk's.
            fs::create_dir(root.join("c/0")).expect("mkdir c/0");
            list_here(prefetcher, &lister, &root.join("c/0"));
            let c1 = prefetcher.take(&root.join("c/1")).expect("c/1");
            assert_eq!(names(&c1), ["deep", "file"]);
            // Past everything: nothing is held, nothing is listed again.
            assert!(prefetcher.take(&root.join("d")).is_none());
            assert_eq!(prefetcher.held(), (0, 0));
        });
    }

    #[test]
    fn the_listers_stop_at_the_listings_they_may_hold_and_go_on_as_the_walk_takes_them() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        let count = HELD_LISTINGS + 20;
        for i in 0..count {
            fs::create_dir_all(root.join(format!("{i:04}"))).expect("mkdir");
        }
        let lister = fixture.lister();
        with_listers(&lister, 2, |prefetcher| {
            list_here(prefetcher, &lister, root);
            prefetcher.wait_until_idle(2);
            assert_eq!(prefetcher.held().0, HELD_LISTINGS);
            let mut by_listers = 0;
            for i in 0..count {
                let dir = root.join(format!("{i:04}"));
                // Each one taken makes room for one more; a lister behind the walk leaves
                // the walk to list it.
                let listing = match prefetcher.take(&dir) {
                    Some(listing) => {
                        by_listers += 1;
                        listing
                    }
                    None => lister.list(&dir, &dir, None),
                };
                assert!(listing.listed.is_empty() && listing.error.is_none());
                assert!(
                    i >= HELD_LISTINGS || by_listers == i + 1,
                    "{i} listed ahead"
                );
            }
            assert_eq!(prefetcher.held(), (0, 0));
        });
    }

    #[test]
    fn nothing_is_listed_ahead_while_sealing_keeps_the_pool_busy() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        make_tree(root);
        let lister = fixture.lister();
        let busy = Prefetcher::new(SealLoad::saturated_for_tests());
        with_prefetcher(busy, &lister, 2, |prefetcher| {
            list_here(prefetcher, &lister, root);
            prefetcher.wait_until_idle(2);
            assert_eq!(prefetcher.held(), (0, 0));
            // The walk lists each directory itself; what it hands over does not pile up.
            for dir in TREE {
                list_here(prefetcher, &lister, &root.join(dir));
            }
            assert!(prefetcher.lock().to_list.is_empty());
        });
    }

    #[test]
    fn the_walk_waits_for_a_listing_being_made() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        let large = root.join("large");
        fs::create_dir_all(&large).expect("mkdir");
        // Enough entries that listing them takes a while.
        for i in 0..10_000 {
            fs::File::create(large.join(format!("{i:05}"))).expect("file");
        }
        let lister = fixture.lister();
        with_listers(&lister, 1, |prefetcher| {
            list_here(prefetcher, &lister, root);
            let caught_running = prefetcher.wait_until_listing(&large);
            let listing = prefetcher.take(&large).expect("the lister's listing");
            assert_eq!(listing.len(), 10_000);
            assert!(listing.captured.iter().all(Result::is_ok));
            if !caught_running {
                eprintln!("the listing was made before the walk asked: the wait was not tested");
            }
        });
    }

    #[test]
    fn the_walk_goes_into_directories_on_its_filesystem_without_a_tag_file() {
        let fixture = Fixture::new();
        let root = &fixture.root;
        for dir in ["cache", "mount", "plain"] {
            fs::create_dir_all(root.join(dir)).expect("mkdir");
        }
        fs::write(root.join("file"), b"not a directory").expect("file");
        let tag = TagFile::cache_dir();
        fs::write(
            root.join("cache/CACHEDIR.TAG"),
            b"Signature: 8a477f597d28d172789f06886806bc55",
        )
        .expect("tag");
        let mut listing = fixture.lister().list(root, root, None);
        // The entry `mount` as if another filesystem were mounted there.
        let device =
            |captured: &Result<Captured, _>| captured.as_ref().expect("captured").meta.device;
        let here = device(&listing.captured[0]);
        let mount = listing
            .listed
            .iter()
            .position(|e| e.name == b"mount")
            .expect("mount");
        if let Ok(captured) = &mut listing.captured[mount] {
            captured.meta.device = here + 1;
        }
        let walked = |stay_on, tags: &[TagFile]| -> Vec<PathBuf> {
            subdirectories(&listing, stay_on, tags)
                .into_iter()
                .map(|request| request.path)
                .collect()
        };
        let all = [root.join("cache"), root.join("mount"), root.join("plain")];
        assert_eq!(walked(None, &[]), all);
        assert_eq!(walked(Some(here), &[]), [all[0].clone(), all[2].clone()]);
        assert_eq!(
            walked(Some(here), std::slice::from_ref(&tag)),
            [all[2].clone()]
        );
    }
}
