//! The filesystem check of a restored volume image.

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `fsck -n -f IMAGE` (check only, even when marked clean); returns why it failed
/// (with the first lines fsck printed), or `None` when it exited 0.
pub(super) fn run(image: &Path) -> Option<String> {
    let output = Command::new("fsck")
        .arg("-n")
        .arg("-f")
        .arg(image)
        .env("PATH", path_with_sbin())
        .stdin(Stdio::null())
        .output();
    match output {
        Err(e) => Some(format!("fsck of {} could not run: {e}", image.display())),
        Ok(out) if out.status.success() => None,
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .take(3)
                .collect();
            Some(format!(
                "fsck of {} failed ({}): {}",
                image.display(),
                out.status,
                lines.join(" | ")
            ))
        }
    }
}

/// `PATH` with the sbin directories, where fsck lives, appended.
fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/sbin:/sbin")
}
