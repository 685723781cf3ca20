//! The smoke step: a shell command run against the restored data.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `command` with `sh -c`, with `BUNKER_RESTORE_DIR`, `BUNKER_SNAPSHOT`, for a
/// volume `BUNKER_RESTORE_IMAGE`, and `extra` (a database drill's `PG*` variables) in its
/// environment; its output goes to stderr. Returns why it failed, or `None` when it
/// exited 0.
pub(super) fn run(
    command: &str,
    dir: &Path,
    snapshot: &str,
    image: Option<&Path>,
    extra: &[(&str, String)],
) -> Option<String> {
    let mut child = Command::new("sh");
    child
        .arg("-c")
        .arg(command)
        .env("BUNKER_RESTORE_DIR", dir)
        .env("BUNKER_SNAPSHOT", snapshot)
        .stdin(Stdio::null())
        .stdout(std::io::stderr());
    if let Some(image) = image {
        child.env("BUNKER_RESTORE_IMAGE", image);
    }
    child.envs(extra.iter().map(|(k, v)| (k, v)));
    match child.status() {
        Err(e) => Some(format!("smoke command {command:?} could not run: {e}")),
        Ok(status) if status.success() => None,
        Ok(status) => Some(format!("smoke command {command:?} failed: {status}")),
    }
}
