//! `bunker recover`.

use std::io::Write;

use anyhow::Result;
use bunker_agent::platform;
use bunker_repo_format::recover::{RecoverOptions, apply_recover, plan_recover};
use bunker_repo_format::tree::Timestamp;
use serde_json::json;

use crate::args::{GlobalOptions, RecoverArgs};
use crate::output::print_json;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, args: &RecoverArgs) -> Result<u8> {
    let repository = repo::open(global, "recover")?;
    let plan = plan_recover(&repository)?;
    for (id, why) in &plan.unreadable {
        eprintln!(
            "warning: tree {id} could not be read ({why}): what only it lists is recovered on its own"
        );
    }
    for (root, why) in &plan.incomplete {
        eprintln!(
            "warning: /{} is incomplete ({why}): its restore lacks what is gone",
            root.to_hex()
        );
    }
    // Exit 4 when something below a recovered tree is gone: the data is not all back.
    let code = if plan.incomplete.is_empty() {
        exit::OK
    } else {
        exit::DAMAGE_FOUND
    };
    let snapshot = if args.dry_run {
        None
    } else {
        let options = RecoverOptions {
            host: platform::hostname(),
            username: platform::username(),
            time: Timestamp::now(),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        };
        apply_recover(&repository, &plan, &options)?
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "trees": plan.trees,
            "roots": plan.roots.iter().map(|id| id.to_hex()).collect::<Vec<_>>(),
            "unreadable": plan.unreadable.iter().map(|(id, why)| json!({"tree": id.to_hex(), "reason": why})).collect::<Vec<_>>(),
            "incomplete": plan.incomplete.iter().map(|(id, why)| json!({"tree": id.to_hex(), "reason": why})).collect::<Vec<_>>(),
            "snapshot_id": snapshot.map(|id| id.to_hex()),
        }))?;
        return Ok(code);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} trees read; {} reached by no snapshot",
        plan.trees,
        plan.roots.len()
    )?;
    for id in &plan.roots {
        writeln!(out, "  {id}")?;
    }
    match snapshot {
        Some(id) => writeln!(
            out,
            "snapshot {} holds them, each as the directory /<tree id>",
            id.short()
        )?,
        None if args.dry_run && !plan.roots.is_empty() => {
            writeln!(out, "dry run: nothing written")?;
        }
        None => writeln!(out, "nothing to recover")?,
    }
    Ok(code)
}
