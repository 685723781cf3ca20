//! `bunker lock extend`.

use std::io::Write;

use anyhow::Result;
use bunker_repo_format::config::Operation;
use bunker_repo_format::object_lock::{extend, extend_plan};
use serde_json::json;

use crate::args::{GlobalOptions, LockCommand};
use crate::cmd::prune::date;
use crate::output::print_json;
use crate::{exit, repo};

pub fn run(global: &GlobalOptions, command: LockCommand) -> Result<u8> {
    let LockCommand::Extend(args) = command;
    let repository = repo::open(global, "extending locks")?;
    repository.check_features(Operation::Prune)?;
    let plan = extend_plan(&repository)?;
    let extended = if args.dry_run {
        0
    } else {
        extend(&repository, &plan)?
    };
    if global.json {
        print_json(&json!({
            "dry_run": args.dry_run,
            "mode": plan.policy.mode.to_string(),
            "period_seconds": plan.policy.period.as_secs(),
            "expiry": date(plan.expiry),
            "extend_to": date(plan.extend_to),
            "checked": plan.checked,
            "to_extend": plan.extend.iter().map(|(name, until)| json!({
                "object": name,
                "until": until.map(date),
            })).collect::<Vec<_>>(),
            "extended": extended,
        }))?;
    } else {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{} objects live snapshots need; {} locked until before {}",
            plan.checked,
            plan.extend.len(),
            date(plan.expiry)
        )?;
        if args.dry_run {
            for (name, until) in &plan.extend {
                let until = until.map_or_else(|| "not locked".to_owned(), date);
                writeln!(
                    out,
                    "would extend {name} ({until}) to {}",
                    date(plan.extend_to)
                )?;
            }
            writeln!(out, "dry run: nothing changed")?;
        } else {
            writeln!(out, "extended {extended} locks to {}", date(plan.extend_to))?;
        }
    }
    Ok(exit::OK)
}
