//! Helpers shared by the agent's integration tests.

#![allow(dead_code)] // each test binary uses some of them

/// Deterministic incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Moves the modification time of every regular file under `root` an hour back, so a
/// backup trusts their recorded identities at once: a backup reads a file written in the
/// seconds before it started again the next time (`backup/racy.rs`), as a test that backs
/// up a tree it just wrote would otherwise see.
pub fn age_files(root: &std::path::Path) {
    use std::time::Duration;
    for entry in std::fs::read_dir(root).expect("list a test tree") {
        let entry = entry.expect("list a test tree");
        let kind = entry.file_type().expect("type of a test file");
        if kind.is_dir() {
            age_files(&entry.path());
        } else if kind.is_file() {
            let file = std::fs::File::options()
                .write(true)
                .open(entry.path())
                .expect("open a test file");
            let modified = file.metadata().and_then(|m| m.modified()).expect("mtime");
            file.set_modified(modified - Duration::from_secs(3600))
                .expect("set a test file's mtime");
        }
    }
}
