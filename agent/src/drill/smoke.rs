//! The smoke step: a shell command run against the restored data.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cancel::Cancel;
use crate::supervise::{self, Stopped};

/// Runs `command` with `sh -c`, with `BUNKER_RESTORE_DIR`, `BUNKER_SNAPSHOT`, for a
/// volume `BUNKER_RESTORE_IMAGE`, and `extra` (a database drill's `PG*` variables) in its
/// environment; its output goes to stderr. Returns why it failed, or `None` when it
/// exited 0. A cancelled drill (its time limit, a shutdown) stops it, with its process
/// group.
pub(super) fn run(
    command: &str,
    dir: &Path,
    snapshot: &str,
    image: Option<&Path>,
    extra: &[(&str, String)],
    cancel: &Cancel,
) -> Option<String> {
    let mut child = Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env("BUNKER_RESTORE_DIR", dir)
        .env("BUNKER_SNAPSHOT", snapshot)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .process_group(0);
    if let Some(image) = image {
        child.env("BUNKER_RESTORE_IMAGE", image);
    }
    child.envs(extra.iter().map(|(k, v)| (k, v)));
    let mut child = match child.spawn() {
        Ok(child) => child,
        Err(e) => return Some(format!("smoke command {command:?} could not run: {e}")),
    };
    let ended = supervise::wait(&mut child, None, cancel);
    match (ended.stopped, ended.status) {
        (Some(Stopped::Cancelled | Stopped::TimedOut), _) => Some(format!(
            "smoke command {command:?} was stopped: the drill was cancelled or ran out of time"
        )),
        (None, Some(status)) if status.success() => None,
        (None, Some(status)) => Some(format!("smoke command {command:?} failed: {status}")),
        (None, None) => Some(format!("smoke command {command:?} could not be waited for")),
    }
}
