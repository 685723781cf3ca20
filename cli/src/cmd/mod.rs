//! One module per command; each turns its arguments into library calls and prints results.

mod audit;
mod backup;
mod cache;
mod cat;
mod check;
mod copy;
mod diff;
mod find;
mod forget;
mod init;
mod key;
mod lock;
mod ls;
mod mount;
mod policy;
pub(crate) mod prune;
mod recover;
mod repair;
mod report;
mod restore;
pub(crate) mod restores;
mod rewrite;
mod snapshots;
mod stats;
mod tag;
pub(crate) mod verify;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use anyhow::Result;
use bunker_agent::Cancel;

use crate::args::{Cli, Command};

/// Runs the parsed command; returns the exit code for outcomes that are not errors
/// (0, or 3/4/5 for partial results).
pub fn run(cli: Cli, cancel: &Cancel) -> Result<u8> {
    let audited = crate::audit::audited(&cli.command);
    let time = bunker_repo_format::tree::Timestamp::now();
    let started = std::time::Instant::now();
    let result = dispatch(cli, cancel);
    if let Some((operation, target)) = audited {
        crate::audit::record(operation, target, time, started.elapsed(), &result);
    }
    result
}

fn dispatch(cli: Cli, cancel: &Cancel) -> Result<u8> {
    let global = &cli.global;
    match cli.command {
        Command::Init(args) => init::run(global, &args),
        Command::Backup(args) => backup::run(global, &args, cancel),
        Command::Snapshots(args) => snapshots::run(global, &args),
        Command::Ls(args) => ls::run(global, &args),
        Command::Diff(args) => diff::run(global, &args),
        Command::Find(args) => find::run(global, &args),
        Command::Stats(args) => stats::run(global, &args),
        Command::Tag(args) => tag::run(global, &args),
        Command::Rewrite(args) => rewrite::run(global, &args),
        Command::Restore(args) => restore::run(global, &args, cancel),
        Command::Mount(args) => mount::run(global, &args, cancel),
        Command::Check(args) => check::run(global, &args),
        Command::Forget(args) => forget::run(global, &args, cancel),
        Command::Prune(args) => prune::run(global, &args),
        Command::Repair(command) => repair::run(global, command),
        Command::Recover(args) => recover::run(global, &args),
        Command::Key(command) => key::run(global, command),
        Command::Cat(command) => cat::run(global, command),
        Command::Policy(command) => policy::run(global, command),
        Command::Audit => audit::run(global),
        Command::Copy(args) => copy::run(global, &args, cancel),
        Command::Lock(command) => lock::run(global, command),
        Command::Report(args) => report::run(global, &args),
        Command::Verify(args) => verify::run(global, &args, cancel),
        Command::Restores(args) => restores::run(global, &args),
        Command::Cache(args) => cache::run(global, &args),
        Command::Completion(args) => {
            let command = <Cli as clap::CommandFactory>::command();
            crate::output::print_completion(command, "bunker", args.shell)?;
            Ok(crate::exit::OK)
        }
    }
}

/// Splits `SNAPSHOT[:PATH]` at its first `:`; the path (any bytes: file names need not be
/// UTF-8) defaults to `/`.
pub fn split_snapshot_path(spec: &OsStr) -> Result<(&str, PathBuf)> {
    let bytes = spec.as_bytes();
    let (snapshot, path) = match bytes.iter().position(|&b| b == b':') {
        Some(colon) => (&bytes[..colon], &bytes[colon + 1..]),
        None => (bytes, &b""[..]),
    };
    let Ok(snapshot) = std::str::from_utf8(snapshot) else {
        anyhow::bail!(
            "{}: give `latest` or a snapshot id before the `:`",
            spec.to_string_lossy()
        );
    };
    let path = if path.is_empty() {
        PathBuf::from("/")
    } else {
        PathBuf::from(OsStr::from_bytes(path))
    };
    Ok((snapshot, path))
}
