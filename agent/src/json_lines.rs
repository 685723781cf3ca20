//! Append-only logs of JSON lines (the agent's job journal, the local audit log).
//!
//! Several processes may append to one log at once (a cron `check`, a backup, the agent's
//! jobs). Each line goes to the file in a single `write` on a descriptor opened with
//! `O_APPEND`, which the kernel applies atomically at the end of the file, so lines from
//! different writers never interleave. Formatting a `serde_json::Value` straight into the
//! file would issue one `write` per token and let another writer's line land inside it.

use std::io::{self, Write};
use std::path::Path;

/// Appends `line` and a newline to the log at `path` in one write, creating the file and
/// its directory when missing.
pub fn append(path: &Path, line: &serde_json::Value) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = line.to_string();
    text.push('\n');
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_never_split_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/jobs.jsonl");
        const WRITERS: usize = 4;
        const LINES: usize = 200;
        std::thread::scope(|scope| {
            for writer in 0..WRITERS {
                let path = &path;
                scope.spawn(move || {
                    for line in 0..LINES {
                        // Many fields, so that formatting token by token would take many
                        // writes per line.
                        let fields: serde_json::Map<String, serde_json::Value> = (0..40)
                            .map(|field| (format!("field{field}"), serde_json::json!(line)))
                            .collect();
                        let value = serde_json::json!({
                            "writer": writer,
                            "line": line,
                            "fields": fields,
                        });
                        append(path, &value).unwrap();
                    }
                });
            }
        });
        let text = std::fs::read_to_string(&path).unwrap();
        let mut seen = vec![0usize; WRITERS];
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a line does not parse ({e}): {line}"));
            let writer = value["writer"].as_u64().unwrap() as usize;
            assert_eq!(value["line"].as_u64().unwrap() as usize, seen[writer]);
            assert_eq!(value["fields"]["field39"], value["line"]);
            seen[writer] += 1;
        }
        assert_eq!(seen, vec![LINES; WRITERS]);
    }
}
