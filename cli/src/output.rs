//! Text and JSON renderings shared by several commands.

use std::io::{self, Write};

use bunker_repo_format::SnapshotId;
use bunker_repo_format::snapshot::{Snapshot, Summary};
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

/// RFC 3339 in UTC with nanoseconds when there are any.
pub fn rfc3339(t: Timestamp) -> String {
    jiff::Timestamp::new(t.sec, t.nsec as i32)
        .map(|ts| ts.to_string())
        .unwrap_or_else(|_| format!("@{}.{:09}", t.sec, t.nsec))
}

/// Local date and time to the second, for tables.
pub fn local_time(t: Timestamp) -> String {
    jiff::Timestamp::new(t.sec, 0)
        .map(|ts| {
            ts.to_zoned(jiff::tz::TimeZone::system())
                .strftime("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| rfc3339(t))
}

/// `1.5 GiB`-style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// `n` and the noun for that many: `1 file`, `0 files`, `2 directories`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A tree's entries in words: `3 files (12 B), 1 directory, 0 other entries`.
pub fn entries(files: u64, bytes_of_files: u64, dirs: u64, others: u64) -> String {
    format!(
        "{} ({}), {}, {}",
        count(files, "file", "files"),
        bytes(bytes_of_files),
        count(dirs, "directory", "directories"),
        count(others, "other entry", "other entries"),
    )
}

/// The summary as JSON.
pub fn summary_json(s: &Summary) -> Value {
    json!({
        "files": s.files,
        "dirs": s.dirs,
        "others": s.others,
        "bytes": s.bytes,
        "files_new": s.files_new,
        "files_changed": s.files_changed,
        "files_unchanged": s.files_unchanged,
        "bytes_read": s.bytes_read,
        "bytes_added": s.bytes_added,
        "bytes_stored": s.bytes_stored,
        "data_blobs_added": s.data_blobs_added,
        "tree_blobs_added": s.tree_blobs_added,
        "duration_ms": s.duration_ms,
        "errors": s.errors,
    })
}

/// `key=value` strings of a snapshot's tags.
pub fn tag_strings(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .tags
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect()
}

/// Paths as (lossy) strings.
pub fn path_strings(snapshot: &Snapshot) -> Vec<String> {
    snapshot
        .paths
        .iter()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect()
}

/// A snapshot as JSON.
pub fn snapshot_json(id: &SnapshotId, snapshot: &Snapshot) -> Value {
    json!({
        "id": id.to_hex(),
        "short_id": id.short(),
        "time": rfc3339(snapshot.time),
        "host": snapshot.host,
        "username": snapshot.username,
        "paths": path_strings(snapshot),
        "tags": tag_strings(snapshot),
        "parent": snapshot.parent.map(|p| p.to_hex()),
        "tree": snapshot.tree.to_hex(),
        "source_kind": snapshot.source_kind.name(),
        "consistency": snapshot.consistency.name(),
        "consistency_detail": snapshot.consistency_detail,
        "excludes": snapshot.excludes,
        "summary": summary_json(&snapshot.summary),
        "errors": snapshot.errors,
        "program_version": snapshot.program_version,
    })
}

/// Prints a JSON value on one line.
pub fn print_json(value: &Value) -> io::Result<()> {
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, value).map_err(io::Error::from)?;
    writeln!(out)
}

/// Prints the `shell` completion script of the program `name` whose arguments `command`
/// describes.
pub fn print_completion(
    mut command: clap::Command,
    name: &str,
    shell: clap_complete::Shell,
) -> io::Result<()> {
    // Into memory first: the generator panics on a failed write (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, name, &mut script);
    io::stdout().lock().write_all(&script)
}

/// Sets `key` of the JSON object `value` to `bytes` (a path, a name, a link target) as
/// text; bytes that are not UTF-8 show there as U+FFFD, so they also go under `KEY_hex`,
/// exact, in hex: what a script needs to name the entry again (`restore SNAPSHOT:PATH`
/// takes any bytes).
pub fn set_bytes(value: &mut Value, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => value[key] = Value::from(text),
        Err(_) => {
            value[key] = Value::from(String::from_utf8_lossy(bytes).into_owned());
            value[format!("{key}_hex")] = Value::from(hex::encode(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_take_the_noun_for_that_many() {
        assert_eq!(count(0, "file", "files"), "0 files");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(2, "directory", "directories"), "2 directories");
        assert_eq!(
            entries(1, 12, 1, 3),
            "1 file (12 B), 1 directory, 3 other entries"
        );
        assert_eq!(
            entries(2, 2048, 0, 1),
            "2 files (2.00 KiB), 0 directories, 1 other entry"
        );
    }
}
