//! `bunker restores [--json] [--all]` and `bunker restores expire`; also what `restore`
//! needs for self-service restores: the policy in effect, the lease directory, the clock
//! and the invoking user.

use std::io::Write;

use anyhow::{Context, Result, bail};
use bunker_agent::lease::{self, Lease, LeaseDir, Listed, RestoreRoots};
use bunker_agent::platform;
use bunker_agent::policy::Policy;
use serde_json::{Value, json};

use crate::args::{
    GlobalOptions, PolicyFileArg, RestoresArgs, RestoresCommand, RestoresExpireArgs,
};
use crate::output::{bytes, print_json};
use crate::policy_file::PolicyFile;
use crate::{audit, exit, repo};

/// The agent policy a command follows (see [`PolicyFile::in_effect`]).
pub(crate) fn policy_in_effect(arg: &PolicyFileArg) -> Result<Option<Policy>> {
    Ok(PolicyFile::in_effect(arg)?.map(|file| file.policy))
}

/// The restore roots of `policy` (none: restores may go anywhere).
pub(crate) fn restore_roots(policy: Option<&Policy>) -> Result<RestoreRoots> {
    let roots = policy
        .map(|p| p.agent.restore_roots.as_slice())
        .unwrap_or(&[]);
    Ok(RestoreRoots::new(roots)?)
}

/// `<agent.state_dir>/restores` under a policy, else the user's state directory.
pub(crate) fn lease_dir(policy: Option<&Policy>) -> Result<LeaseDir> {
    LeaseDir::locate(policy.map(|p| p.agent.state_dir.as_path())).context(
        "no directory for restore leases: set XDG_STATE_HOME or HOME, or use a policy with agent.state_dir",
    )
}

/// Now, in Unix seconds. Tests move the clock with `BUNKER_TEST_NOW` (RFC 3339 or Unix
/// seconds); nothing else should set it.
pub(crate) fn now() -> Result<i64> {
    match std::env::var("BUNKER_TEST_NOW") {
        Ok(text) if !text.is_empty() => match text.parse::<i64>() {
            Ok(second) => Ok(second),
            Err(_) => Ok(text
                .parse::<jiff::Timestamp>()
                .with_context(|| format!("BUNKER_TEST_NOW={text:?}"))?
                .as_second()),
        },
        _ => Ok(jiff::Timestamp::now().as_second()),
    }
}

/// The user a restore is for: `SUDO_USER` when running as root under sudo, else the
/// effective user.
pub(crate) fn invoking_user() -> String {
    if platform::is_root()
        && let Ok(user) = std::env::var("SUDO_USER")
        && !user.is_empty()
    {
        return user;
    }
    platform::username()
}

/// An RFC 3339 UTC time of a Unix second.
pub(crate) fn time_text(second: i64) -> String {
    jiff::Timestamp::from_second(second)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| second.to_string())
}

pub fn run(global: &GlobalOptions, args: &RestoresArgs) -> Result<u8> {
    match &args.command {
        Some(RestoresCommand::Expire(expire)) => run_expire(global, expire),
        None => list(global, args),
    }
}

fn lease_json(lease: &Lease, now: i64) -> Value {
    json!({
        "id": lease.id,
        "owner": lease.owner,
        "host": lease.host,
        "source": lease.source,
        "snapshot_id": lease.snapshot,
        "path": lease.path,
        "target": lease.target.display().to_string(),
        "kind": lease.kind,
        "bytes": lease.bytes,
        "created": time_text(lease.created),
        "expires": time_text(lease.expires),
        "expired": lease.is_expired(now),
    })
}

fn list(global: &GlobalOptions, args: &RestoresArgs) -> Result<u8> {
    let policy = policy_in_effect(&args.policy)?;
    let dir = lease_dir(policy.as_ref())?;
    let now = now()?;
    let user = invoking_user();
    let listed: Vec<Listed> = dir
        .list()?
        .into_iter()
        .filter(|l| args.all || l.lease.as_ref().is_ok_and(|lease| lease.owner == user))
        .collect();
    if global.json {
        let items: Vec<Value> = listed
            .iter()
            .map(|l| match &l.lease {
                Ok(lease) => lease_json(lease, now),
                Err(e) => json!({"file": l.file.display().to_string(), "error": e.to_string()}),
            })
            .collect();
        print_json(&Value::Array(items))?;
        return Ok(exit::OK);
    }
    let mut out = std::io::stdout().lock();
    if listed.is_empty() {
        writeln!(out, "no restores in {}", dir.path().display())?;
        return Ok(exit::OK);
    }
    writeln!(
        out,
        "{:<16}  {:<10}  {:<14}  {:<8}  {:>10}  {:<20}  {:<8}  target",
        "lease", "owner", "source", "snapshot", "size", "expires", "state"
    )?;
    for l in &listed {
        match &l.lease {
            Ok(lease) => writeln!(
                out,
                "{:<16}  {:<10}  {:<14}  {:<8}  {:>10}  {:<20}  {:<8}  {}",
                lease.id,
                lease.owner,
                if lease.source.is_empty() {
                    "-"
                } else {
                    &lease.source
                },
                lease.snapshot.get(..8).unwrap_or(&lease.snapshot),
                bytes(lease.bytes),
                time_text(lease.expires),
                if lease.is_expired(now) {
                    "EXPIRED"
                } else {
                    "active"
                },
                lease.target.display()
            )?,
            Err(e) => writeln!(out, "unreadable: {e}")?,
        }
    }
    Ok(exit::OK)
}

fn run_expire(global: &GlobalOptions, args: &RestoresExpireArgs) -> Result<u8> {
    let policy = policy_in_effect(&args.policy)?;
    let dir = lease_dir(policy.as_ref())?;
    let roots = restore_roots(policy.as_ref())?;
    let now = now()?;
    let user = invoking_user();
    let known: Vec<String> = dir
        .list()?
        .into_iter()
        .filter_map(|l| l.lease.ok().map(|lease| lease.id))
        .collect();
    let mut chosen = Vec::new();
    for prefix in &args.leases {
        let matches: Vec<&String> = known
            .iter()
            .filter(|id| id.starts_with(prefix.as_str()))
            .collect();
        match matches.as_slice() {
            [one] => chosen.push((*one).clone()),
            [] => bail!("no restore lease {prefix:?} in {}", dir.path().display()),
            _ => bail!("lease prefix {prefix:?} is ambiguous"),
        }
    }
    let due = |lease: &Lease| {
        let named = chosen.contains(&lease.id);
        if !chosen.is_empty() && !named {
            return false;
        }
        lease.is_expired(now) || (args.now && (named || lease.owner == user))
    };
    let done = lease::expire(&dir, &roots, now, &due)?;
    let repository = if done.is_empty() || global.repo.is_none() {
        None
    } else {
        match repo::open_writer(global) {
            Ok(repository) => Some(repository),
            Err(e) => {
                eprintln!(
                    "bunker: warning: audit records go to the local log only: {}",
                    crate::exit::message(&e)
                );
                None
            }
        }
    };
    let host = platform::hostname();
    let mut failed = 0;
    for expiry in &done {
        audit::write(
            repository.as_ref(),
            &lease::audit_record(expiry, &host, &platform::username()),
        );
        if let Some(error) = expiry.action.error() {
            failed += 1;
            eprintln!("bunker: restore lease {}: {error}", expiry.lease.id);
        }
    }
    if global.json {
        print_json(&Value::Array(
            done.iter()
                .map(|e| {
                    json!({
                        "lease": e.lease.id,
                        "owner": e.lease.owner,
                        "target": e.lease.target.display().to_string(),
                        "snapshot_id": e.lease.snapshot,
                        "outcome": e.action.outcome(),
                        "error": e.action.error(),
                    })
                })
                .collect(),
        ))?;
    } else {
        let mut out = std::io::stdout().lock();
        for e in &done {
            writeln!(
                out,
                "{} {} ({}): {}",
                e.lease.id,
                e.lease.target.display(),
                e.lease.owner,
                e.action.outcome()
            )?;
        }
        if done.is_empty() {
            writeln!(out, "no restore is due")?;
        }
    }
    Ok(if failed == 0 { exit::OK } else { exit::FATAL })
}
