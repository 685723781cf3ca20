//! The `bunker` and `bunker-agent` commands. Thin: arguments in, library calls, results out.
//!
//! Both binaries are a `main` that calls [`bunker_main`] or [`agent_main`]; they share the
//! repository opening, password handling, output and exit-code modules here.

mod agent_cli;
mod args;
mod audit;
mod cmd;
mod exit;
mod lists;
mod output;
mod password;
mod policy_file;
mod progress;
mod repo;
mod select;
#[cfg(test)]
mod test_support;
mod values;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bunker_agent::Cancel;
use clap::Parser;

/// First SIGINT/SIGTERM: stop at the next safe point (exit 130). Second: exit at once.
fn install_signal_handlers(cancel: &Cancel) {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for signal in [SIGINT, SIGTERM] {
        // Registration order matters: the shutdown check runs before the flag is set, so
        // only a signal that finds the flag already set exits immediately.
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(exit::INTERRUPTED),
            cancel.flag(),
        );
        let _ = signal_hook::flag::register(signal, cancel.flag());
    }
}

/// Installed first, before the arguments are parsed: while the returned switch is on, the
/// first SIGINT/SIGTERM exits at once (exit 130), as a kill would. It stays on for a
/// command that has no safe points to stop at (it reads, or every step of it is crash-safe:
/// check, prune, repair, lock, ...) rather than ignore the signal until the command ends;
/// before a command starts there is nothing to stop safely either (without it, a SIGTERM in
/// the first milliseconds killed the process with exit 143).
fn install_immediate_exit() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let immediate = Arc::new(AtomicBool::new(true));
    for signal in [SIGINT, SIGTERM] {
        let _ = signal_hook::flag::register_conditional_shutdown(
            signal,
            i32::from(exit::INTERRUPTED),
            Arc::clone(&immediate),
        );
    }
    immediate
}

/// `bunker`.
pub fn bunker_main() -> ExitCode {
    let immediate = install_immediate_exit();
    let cli = args::Cli::parse();
    let cancel = Cancel::new();
    repo::stop_waiting_when(&cancel);
    if cli.command.stops_at_safe_points() {
        install_signal_handlers(&cancel);
        // Only now: a signal in between still exits at once, and none is lost.
        immediate.store(false, Ordering::SeqCst);
    }
    // Every command that walks a tree (backup, restore, ls, diff, verify, ...) walks it on
    // a stack deep enough for the deepest tree a backup records.
    match bunker_agent::deep_stack::run("bunker", || cmd::run(cli, &cancel)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            let outcome = exit::classify(&error);
            if outcome.print {
                eprintln!("bunker: {}", exit::message(&error));
            }
            outcome.code
        }
    }
}

/// `bunker-agent`.
pub fn agent_main() -> ExitCode {
    bunker_agent::deep_stack::run("bunker-agent", agent_cli::main)
}
