//! `bunker rewrite`.

use std::io::Write;

use anyhow::{Result, bail};
use bunker_agent::backup::Excludes;
use bunker_agent::platform;
use bunker_agent::rewrite::{Skipped, apply_rewrite, plan_rewrite};
use serde_json::json;

use crate::args::{GlobalOptions, RewriteArgs};
use crate::output::{bytes, print_json};
use crate::select::chosen_snapshots;
use crate::{exit, lists, repo};

/// Exit 0 when every selected snapshot was rewritten or needed nothing; 4 when some
/// snapshot's tree cannot be read (it is left as it is).
pub fn run(global: &GlobalOptions, args: &RewriteArgs) -> Result<u8> {
    let patterns = lists::exclude_patterns(&args.excludes, &args.exclude_file)?;
    if patterns.is_empty() {
        bail!("give the patterns of what to leave out: --exclude or --exclude-file");
    }
    let excludes = Excludes::new(&patterns)?;
    let repository = repo::open(global, "rewrite")?;
    let filter = args.select.filter()?;
    let snapshots = chosen_snapshots(&repository, &filter, &args.snapshots)?;
    let plan = plan_rewrite(&repository, &snapshots, &excludes)?;
    let written = if args.dry_run {
        Vec::new()
    } else {
        apply_rewrite(&repository, &plan, &platform::hostname(), args.forget)?
    };
    let new_id = |i: usize| written.get(i).map(|w| w.new);
    let damaged = plan
        .skipped
        .iter()
        .any(|(_, why)| matches!(why, Skipped::Unreadable { .. }));
    let skipped_text = |why: &Skipped| match why {
        Skipped::NotFiles(kind) => format!("a {} snapshot is not a tree of files", kind.name()),
        Skipped::WouldBeEmpty => "every file it holds matches: forget it instead".to_owned(),
        Skipped::Unreadable { path, reason } => {
            format!("{} cannot be read: {reason}", path.display())
        }
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "forget": args.forget && !args.dry_run,
            "rewritten": plan.rewrites.iter().enumerate().map(|(i, r)| json!({
                "old": r.old.to_hex(),
                "new": new_id(i).map(|id| id.to_hex()),
                "removed": r.removed.iter().map(|path| path.to_string_lossy()).collect::<Vec<_>>(),
                "removed_files": r.removed_figures.files,
                "removed_dirs": r.removed_figures.dirs,
                "removed_others": r.removed_figures.others,
                "removed_bytes": r.removed_figures.bytes,
            })).collect::<Vec<_>>(),
            "unchanged": plan.unchanged,
            "skipped": plan.skipped.iter().map(|(id, why)| json!({
                "id": id.to_hex(),
                "reason": skipped_text(why),
            })).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        for (i, rewrite) in plan.rewrites.iter().enumerate() {
            let figures = &rewrite.removed_figures;
            let left_out = format!(
                "leaving out {} files, {} directories, {} other entries ({}):",
                figures.files,
                figures.dirs,
                figures.others,
                bytes(figures.bytes)
            );
            match new_id(i) {
                Some(new) => writeln!(
                    out,
                    "snapshot {} rewritten as {}{}, {left_out}",
                    rewrite.old.short(),
                    new.short(),
                    if args.forget {
                        " (original forgotten)"
                    } else {
                        ""
                    }
                )?,
                None => writeln!(
                    out,
                    "would rewrite snapshot {}, {left_out}",
                    rewrite.old.short()
                )?,
            }
            for path in &rewrite.removed {
                writeln!(out, "  {}", path.display())?;
            }
        }
        for (id, why) in &plan.skipped {
            let level = if matches!(why, Skipped::Unreadable { .. }) {
                "error"
            } else {
                "note"
            };
            writeln!(
                out,
                "{level}: snapshot {} left as it is: {}",
                id.short(),
                skipped_text(why)
            )?;
        }
        writeln!(
            out,
            "{} snapshot(s) {}, {} with nothing to leave out, {} left as they are{}",
            plan.rewrites.len(),
            if args.dry_run {
                "to rewrite"
            } else {
                "rewritten"
            },
            plan.unchanged,
            plan.skipped.len(),
            match (args.dry_run, args.forget, plan.rewrites.is_empty()) {
                (false, false, false) =>
                    "; the originals stay: forget them (or rerun with --forget) and prune to free their space",
                (false, true, false) => "; originals forgotten: prune frees their space",
                _ => "",
            }
        )?;
    }
    Ok(if damaged {
        exit::DAMAGE_FOUND
    } else {
        exit::OK
    })
}
