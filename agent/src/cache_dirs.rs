//! The local cache directory: one directory per repository, named by the repository's id
//! in hex, holding what this host keeps about it (the files cache, the rolling check's
//! memory of verified packs). Nothing in it is needed for correctness; it saves work.
//!
//! Each command that uses a repository's directory stamps its modification time
//! ([`mark_used`]): a no-change backup rewrites nothing there, so the time of its files
//! would not say when it was last used. [`list`] reads those stamps, so that the
//! directories of repositories no longer backed up can be found and removed
//! (`bunker cache --cleanup`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory of the repository `repository_id` below the cache directory `root`.
pub fn repository_dir(root: &Path, repository_id: &[u8; 32]) -> PathBuf {
    root.join(hex::encode(repository_id))
}

/// Records that `dir` (a repository's cache directory) is in use now. A directory not
/// created yet is left so: whoever writes into it first creates it.
pub fn mark_used(dir: &Path) -> io::Result<()> {
    match fs::File::open(dir) {
        Ok(handle) => handle.set_modified(SystemTime::now()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// One repository's cache directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryCache {
    /// The repository id in hex (the directory's name).
    pub repository_id: String,
    /// The directory.
    pub path: PathBuf,
    /// Bytes of the files below it.
    pub bytes: u64,
    /// When a command last used it (see [`mark_used`]).
    pub last_used: SystemTime,
}

/// The repositories' directories below `root`, least recently used first; none when
/// `root` does not exist. Entries whose names are not repository ids, and symlinks, are
/// not bunker's and are left out.
pub fn list(root: &Path) -> io::Result<Vec<RepositoryCache>> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut caches = Vec::new();
    for entry in entries {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let meta = entry.metadata()?;
        if !is_repository_id(&name) || !meta.is_dir() {
            continue;
        }
        let path = entry.path();
        let bytes = bytes_below(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        caches.push(RepositoryCache {
            repository_id: name,
            bytes,
            last_used: meta.modified()?,
            path,
        });
    }
    caches.sort_by(|a, b| (a.last_used, &a.repository_id).cmp(&(b.last_used, &b.repository_id)));
    Ok(caches)
}

/// Removes a repository's cache directory and everything in it.
pub fn remove(cache: &RepositoryCache) -> io::Result<()> {
    // Does not follow symlinks inside the directory.
    fs::remove_dir_all(&cache.path)
}

fn is_repository_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Bytes of the regular files below `dir`, symlinks not followed.
fn bytes_below(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn set_last_used(dir: &Path, days_ago: u64) {
        let when = SystemTime::now() - Duration::from_secs(days_ago * 86_400);
        fs::File::open(dir).unwrap().set_modified(when).unwrap();
    }

    #[test]
    fn lists_repository_directories_by_last_use_and_removes_one() {
        let root = tempfile::tempdir().unwrap();
        let old = repository_dir(root.path(), &[0xab; 32]);
        let recent = repository_dir(root.path(), &[0x01; 32]);
        fs::create_dir_all(old.join("nested")).unwrap();
        fs::write(old.join("files"), [0u8; 1000]).unwrap();
        fs::write(old.join("nested/verified-packs"), [0u8; 24]).unwrap();
        fs::create_dir(&recent).unwrap();
        fs::write(recent.join("files"), [0u8; 7]).unwrap();
        // Not bunker's: another name, a file named like an id, a symlink to a directory.
        fs::create_dir(root.path().join("notes")).unwrap();
        fs::write(root.path().join(hex::encode([0x02; 32])), b"x").unwrap();
        std::os::unix::fs::symlink(&recent, root.path().join(hex::encode([0x03; 32]))).unwrap();
        set_last_used(&old, 40);
        set_last_used(&recent, 2);

        let caches = list(root.path()).unwrap();
        let names: Vec<&str> = caches.iter().map(|c| c.repository_id.as_str()).collect();
        assert_eq!(names, [hex::encode([0xab; 32]), hex::encode([0x01; 32])]);
        assert_eq!(caches[0].bytes, 1024);
        assert_eq!(caches[1].bytes, 7);
        assert!(caches[0].last_used < caches[1].last_used);

        // A use moves the directory to the end.
        mark_used(&old).unwrap();
        let caches = list(root.path()).unwrap();
        assert_eq!(caches[1].path, old);
        assert!(caches[1].last_used > SystemTime::now() - Duration::from_secs(60));

        remove(&caches[1]).unwrap();
        assert!(!old.exists());
        assert_eq!(list(root.path()).unwrap().len(), 1);
        assert!(root.path().join("notes").is_dir());
        assert!(recent.join("files").is_file());

        // Marking a directory not created yet creates nothing; no root lists nothing.
        mark_used(&old).unwrap();
        assert!(!old.exists());
        assert_eq!(list(&root.path().join("absent")).unwrap(), []);
    }
}
