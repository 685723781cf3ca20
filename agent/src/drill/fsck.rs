//! The filesystem check of a restored volume image.

use std::path::Path;

use super::process;

/// Runs `fsck -n -f IMAGE` (check only, even when marked clean); returns why it failed
/// (with the first lines fsck printed), or `None` when it exited 0.
pub(super) fn run(image: &Path) -> Option<String> {
    let what = format!("fsck of {}", image.display());
    process::run(
        process::command("fsck").arg("-n").arg("-f").arg(image),
        &what,
    )
    .err()
}
