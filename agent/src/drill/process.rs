//! Running the system tools a drill uses (fsck, losetup, mount, PostgreSQL's programs) and
//! summarising their output for a report.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};

/// A command for `program` with the sbin directories, where fsck, losetup and mount live,
/// appended to `PATH`, and no standard input.
pub(super) fn command(program: impl AsRef<OsStr>) -> Command {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut command = Command::new(program);
    command
        .env("PATH", format!("{path}:/usr/sbin:/sbin"))
        .stdin(Stdio::null());
    command
}

/// Runs `command` to completion; `what` names it in the error, which carries the exit
/// status and the first lines the program printed.
pub(super) fn run(command: &mut Command, what: &str) -> Result<Output, String> {
    match command.output() {
        Err(e) => Err(format!("{what} could not run: {e}")),
        Ok(out) if out.status.success() => Ok(out),
        Ok(out) => Err(format!(
            "{what} failed ({}): {}",
            out.status,
            first_lines(&out, 3)
        )),
    }
}

/// The first `n` non-empty lines of a program's stdout and stderr, joined with ` | `.
pub(super) fn first_lines(out: &Output, n: usize) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned()
        + "\n"
        + &String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .take(n)
        .collect();
    lines.join(" | ")
}
