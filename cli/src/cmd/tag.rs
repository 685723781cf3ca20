//! `bunker tag`.

use std::io::Write;

use anyhow::{Result, bail};
use bunker_agent::platform;
use bunker_repo_format::retag::{TagChange, retag};
use serde_json::json;

use crate::args::{GlobalOptions, TagArgs};
use crate::output::print_json;
use crate::select::chosen_snapshots;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &TagArgs) -> Result<u8> {
    let change = TagChange {
        set: (!args.set.is_empty()).then(|| args.set.clone()),
        add: args.add.clone(),
        remove: args.remove.clone(),
    };
    if change.is_empty() {
        bail!("give the tags to change: --set, --add or --remove KEY=VALUE");
    }
    let filter = args.select.filter()?;
    // Every snapshot of a repository by mistake is not undone by a second `tag`.
    if args.snapshots.is_empty() && filter.is_empty() {
        bail!(
            "name the snapshots to change (ids, `latest`) or select them with --host, --tag or \
             --path"
        );
    }
    let repository = repo::open(global, "tag")?;
    let snapshots = chosen_snapshots(&repository, &filter, &args.snapshots)?;
    let changed = retag(&repository, &snapshots, &change, &platform::hostname())?;
    let tag_text = |tags: &[(String, String)]| {
        tags.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    };
    if global.json {
        print_json(&json!({
            "changed": changed.iter().map(|c| json!({
                "old": c.old.to_hex(),
                "new": c.new.to_hex(),
                "tags": tag_text(&c.tags),
            })).collect::<Vec<_>>(),
            "unchanged": snapshots.len() - changed.len(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for c in &changed {
            writeln!(
                out,
                "snapshot {} is now {}: {}",
                c.old.short(),
                c.new.short(),
                tag_text(&c.tags).join(", ")
            )?;
        }
        writeln!(
            out,
            "{} snapshot(s) changed, {} already had those tags",
            changed.len(),
            snapshots.len() - changed.len()
        )?;
    }
    Ok(exit::OK)
}
