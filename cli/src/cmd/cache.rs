//! `bunker cache`: this host's per-repository cache directories, and their cleanup.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use bunker_agent::cache_dirs::{self, RepositoryCache};
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

use crate::args::{CacheArgs, GlobalOptions};
use crate::output::{bytes, local_time, print_json, rfc3339};
use crate::{exit, repo, values};

pub fn run(global: &GlobalOptions, args: &CacheArgs) -> Result<u8> {
    let max_unused = args.max_unused;
    let root = repo::cache_root(global.cache_dir.as_deref())
        .context("no cache directory: give --cache-dir or set HOME")?;
    let caches = cache_dirs::list(&root)
        .with_context(|| format!("cannot list the cache directory {}", root.display()))?;
    let stale_before = SystemTime::now()
        .checked_sub(max_unused)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut rows = Vec::with_capacity(caches.len());
    let mut failed = false;
    for cache in caches {
        let unused = cache.last_used < stale_before;
        let removed = args.cleanup
            && unused
            && cache_dirs::remove(&cache)
                .inspect_err(|e| {
                    failed = true;
                    eprintln!("bunker: cannot remove {}: {e}", cache.path.display());
                })
                .is_ok();
        rows.push(Row {
            cache,
            unused,
            removed,
        });
    }
    if global.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|row| {
                json!({
                    "repository_id": row.cache.repository_id,
                    "path": row.cache.path.display().to_string(),
                    "bytes": row.cache.bytes,
                    "last_used": rfc3339(Timestamp::from_system_time(row.cache.last_used)),
                    "unused": row.unused,
                    "removed": row.removed,
                })
            })
            .collect();
        print_json(&Value::Array(list))?;
    } else {
        print_table(&root, &rows, &values::duration_text(args.max_unused))?;
    }
    Ok(if failed { exit::FATAL } else { exit::OK })
}

/// One repository's cache directory, judged.
struct Row {
    cache: RepositoryCache,
    /// Not used for longer than `--max-unused`.
    unused: bool,
    /// Removed by `--cleanup`.
    removed: bool,
}

fn print_table(root: &std::path::Path, rows: &[Row], max_unused: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if !rows.is_empty() {
        writeln!(
            out,
            "{:<16}  {:<19}  {:>10}",
            "repository", "last used", "size"
        )?;
    }
    for row in rows {
        let note = match (row.removed, row.unused) {
            (true, _) => "removed",
            (false, true) => "unused",
            (false, false) => "",
        };
        let line = format!(
            "{:<16}  {:<19}  {:>10}  {note}",
            &row.cache.repository_id[..16],
            local_time(Timestamp::from_system_time(row.cache.last_used)),
            bytes(row.cache.bytes),
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    let total = |rows: &mut dyn Iterator<Item = &Row>| {
        rows.fold((0usize, 0u64), |(n, b), row| (n + 1, b + row.cache.bytes))
    };
    let (kept, kept_bytes) = total(&mut rows.iter().filter(|row| !row.removed));
    let (removed, removed_bytes) = total(&mut rows.iter().filter(|row| row.removed));
    let unused = rows.iter().filter(|row| row.unused && !row.removed).count();
    write!(
        out,
        "{kept} cache directories in {} ({})",
        root.display(),
        bytes(kept_bytes)
    )?;
    if removed > 0 {
        write!(out, "; removed {removed} ({})", bytes(removed_bytes))?;
    }
    if unused > 0 {
        write!(
            out,
            "; {unused} unused for more than {max_unused}: remove with `bunker cache --cleanup`"
        )?;
    }
    writeln!(out)?;
    Ok(())
}
