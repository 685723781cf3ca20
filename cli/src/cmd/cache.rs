//! `bunker cache`: this host's per-repository cache directories, and their cleanup.

use std::io::Write;
use std::time::SystemTime;

use anyhow::{Context, Result};
use bunker_agent::cache_dirs::{self, RepositoryCache};
use bunker_repo_format::tree::Timestamp;
use serde_json::{Value, json};

use super::prune::parse_duration;
use crate::args::{CacheArgs, GlobalOptions};
use crate::output::{bytes, local_time, print_json, rfc3339};
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &CacheArgs) -> Result<u8> {
    let max_unused = parse_duration(&args.max_unused).context("--max-unused")?;
    let root = repo::cache_root(args.cache_dir.as_deref())
        .context("no cache directory: give --cache-dir or set HOME")?;
    let caches = cache_dirs::list(&root)
        .with_context(|| format!("cannot list the cache directory {}", root.display()))?;
    let stale_before = SystemTime::now()
        .checked_sub(max_unused)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut rows = Vec::with_capacity(caches.len());
    let mut failed = 0usize;
    for cache in caches {
        let stale = cache.last_used < stale_before;
        let outcome = if args.cleanup && stale {
            match cache_dirs::remove(&cache) {
                Ok(()) => Outcome::Removed,
                Err(e) => {
                    failed += 1;
                    eprintln!("bunker: cannot remove {}: {e}", cache.path.display());
                    Outcome::Kept
                }
            }
        } else {
            Outcome::Kept
        };
        rows.push((cache, stale, outcome));
    }
    if global.json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(cache, stale, outcome)| {
                json!({
                    "repository_id": cache.repository_id,
                    "path": cache.path.display().to_string(),
                    "bytes": cache.bytes,
                    "last_used": rfc3339(Timestamp::from_system_time(cache.last_used)),
                    "unused": stale,
                    "removed": *outcome == Outcome::Removed,
                })
            })
            .collect();
        print_json(&Value::Array(list))?;
    } else {
        print_table(&root, &rows, args)?;
    }
    Ok(if failed > 0 { exit::FATAL } else { exit::OK })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Kept,
    Removed,
}

fn print_table(
    root: &std::path::Path,
    rows: &[(RepositoryCache, bool, Outcome)],
    args: &CacheArgs,
) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if !rows.is_empty() {
        writeln!(
            out,
            "{:<16}  {:<19}  {:>10}",
            "repository", "last used", "size"
        )?;
    }
    for (cache, stale, outcome) in rows {
        let note = match (outcome, stale) {
            (Outcome::Removed, _) => "removed",
            (Outcome::Kept, true) => "unused",
            (Outcome::Kept, false) => "",
        };
        let line = format!(
            "{:<16}  {:<19}  {:>10}  {note}",
            &cache.repository_id[..16],
            local_time(Timestamp::from_system_time(cache.last_used)),
            bytes(cache.bytes),
        );
        writeln!(out, "{}", line.trim_end())?;
    }
    let size = |removed: bool| -> (usize, u64) {
        rows.iter()
            .filter(|(_, _, outcome)| (*outcome == Outcome::Removed) == removed)
            .fold((0, 0), |(n, b), (cache, _, _)| (n + 1, b + cache.bytes))
    };
    let (kept, kept_bytes) = size(false);
    let (removed, removed_bytes) = size(true);
    let unused = rows
        .iter()
        .filter(|(_, stale, outcome)| *stale && *outcome == Outcome::Kept)
        .count();
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
            "; {unused} unused for more than {}: remove with `bunker cache --cleanup`",
            args.max_unused
        )?;
    }
    writeln!(out)?;
    Ok(())
}
