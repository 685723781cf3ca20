//! Mounting a restored volume image read-only, so the smoke command can look inside it.
//!
//! The image is attached to a read-only loop device (`losetup --read-only`), its
//! filesystem found with `blkid`, and mounted `ro` on a fresh private directory; ext3/ext4
//! also get `noload` and XFS `norecovery`, so a journal left by a crash-consistent backup is
//! not replayed (nothing is written to the image). [`Mounted`] undoes all of it when
//! dropped: unmount, detach the loop device, remove the mountpoint. That happens on every
//! path out of a drill: success, a failing smoke command, an error, cancellation.

use std::fs;
use std::path::{Path, PathBuf};

use super::process;

/// A restored image mounted read-only; unmounted and detached when dropped.
#[derive(Debug)]
pub(super) struct Mounted {
    /// The mountpoint, a private directory made for this mount.
    point: Option<PathBuf>,
    /// The loop device the image is attached to.
    device: Option<PathBuf>,
    /// True while the filesystem is mounted on `point`.
    mounted: bool,
}

/// Mounts `image` read-only on a new temporary directory. The error says which step
/// failed and what the tool printed; whatever was set up before is undone.
pub(super) fn mount_read_only(image: &Path) -> Result<Mounted, String> {
    let mut mounted = Mounted {
        point: None,
        device: None,
        mounted: false,
    };
    let point = super::private_temp_dir("mount")
        .map_err(|e| format!("cannot make a mountpoint for {}: {e}", image.display()))?;
    mounted.point = Some(point.clone());
    let out = process::run(
        process::command("losetup")
            .args(["--find", "--show", "--read-only"])
            .arg(image),
        &format!("attaching {} to a loop device", image.display()),
    )?;
    let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    mounted.device = Some(device.clone());
    // blkid exits 2 when it finds no filesystem; mount then tries itself and says why.
    let filesystem = process::command("blkid")
        .args(["-o", "value", "-s", "TYPE"])
        .arg(&device)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut options = "ro".to_owned();
    match filesystem.as_str() {
        "ext3" | "ext4" => options.push_str(",noload"),
        "xfs" => options.push_str(",norecovery"),
        _ => {}
    }
    let mut mount = process::command("mount");
    if !filesystem.is_empty() {
        mount.args(["-t", filesystem.as_str()]);
    }
    mount
        .args(["-o", options.as_str()])
        .arg(&device)
        .arg(&point);
    let shown = if filesystem.is_empty() {
        "unknown filesystem".to_owned()
    } else {
        filesystem
    };
    process::run(
        &mut mount,
        &format!(
            "mounting {} ({shown}) read-only on {}",
            image.display(),
            point.display()
        ),
    )?;
    mounted.mounted = true;
    Ok(mounted)
}

impl Mounted {
    /// Where the filesystem is mounted.
    pub(super) fn path(&self) -> &Path {
        self.point.as_deref().unwrap_or(Path::new(""))
    }

    /// Unmounts, detaches and removes the mountpoint now; returns what could not be
    /// undone cleanly (a busy mount is detached lazily and named here).
    pub(super) fn release(mut self) -> Vec<String> {
        self.undo()
    }

    fn undo(&mut self) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.mounted
            && let Some(point) = &self.point
        {
            let unmounted = process::run(
                process::command("umount").arg(point),
                &format!("unmounting {}", point.display()),
            );
            if let Err(e) = unmounted {
                // Something (a process the smoke command left behind) still uses it: detach
                // it from the tree now; the kernel lets go once the last user does.
                let lazy = process::run(
                    process::command("umount").arg("--lazy").arg(point),
                    &format!("lazily unmounting {}", point.display()),
                );
                match lazy {
                    Ok(_) => warnings.push(format!("{e}; it was detached lazily")),
                    Err(lazy) => {
                        warnings.push(lazy);
                        // Still mounted: leave the loop device and the directory alone.
                        self.mounted = false;
                        self.device = None;
                        self.point = None;
                        return warnings;
                    }
                }
            }
            self.mounted = false;
        }
        if let Some(device) = self.device.take()
            && let Err(e) = process::run(
                process::command("losetup").arg("--detach").arg(&device),
                &format!("detaching {}", device.display()),
            )
        {
            warnings.push(e);
        }
        if let Some(point) = self.point.take()
            && let Err(e) = fs::remove_dir(&point)
        {
            warnings.push(format!(
                "could not remove the mountpoint {}: {e}",
                point.display()
            ));
        }
        warnings
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = self.undo();
    }
}
