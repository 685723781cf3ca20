//! Built-in `fsfreeze`: FIFREEZE / FITHAW on a mounted filesystem, with the thaw guaranteed.
//!
//! A frozen filesystem blocks every writer on the host, so a thaw must happen whatever
//! goes wrong:
//! - [`Frozen`] thaws when dropped (success, error, timeout and cancellation all drop it);
//! - a **watchdog** process, started *before* the freeze, thaws when the agent's pipe to it
//!   closes without the word `thawed` (the agent died, even by SIGKILL) or when the
//!   freeze has lasted longer than its limit (the agent hung).
//!
//! Nothing the agent writes while the filesystem is frozen may live on it: the repository,
//! the cache and the agent's state must be elsewhere, or the agent deadlocks itself.
//! [`check_freezable`] refuses a path that is not a mount point, and a filesystem that
//! holds the repository, the cache or the state directory, before anything is frozen.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// What the agent writes to its watchdog after a normal thaw.
const THAWED: &str = "thawed";

#[allow(unsafe_code)]
mod ioctl {
    //! The two ioctls. `_IOWR('X', 119, int)` and `_IOWR('X', 120, int)` from
    //! `linux/fs.h`; the kernel ignores the argument.
    use nix::libc::c_int;

    nix::ioctl_readwrite!(fifreeze, b'X', 119, c_int);
    nix::ioctl_readwrite!(fithaw, b'X', 120, c_int);

    /// Freezes the filesystem `fd` (a directory on it) is on.
    pub fn freeze(fd: c_int) -> nix::Result<()> {
        let mut unused: c_int = 0;
        // SAFETY: FIFREEZE reads no memory through its argument; `unused` outlives the call
        // and `fd` is an open descriptor owned by the caller.
        unsafe { fifreeze(fd, &mut unused) }.map(drop)
    }

    /// Thaws it.
    pub fn thaw(fd: c_int) -> nix::Result<()> {
        let mut unused: c_int = 0;
        // SAFETY: as for `freeze`.
        unsafe { fithaw(fd, &mut unused) }.map(drop)
    }
}

/// Why a freeze or thaw failed.
#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    /// The mount point could not be opened.
    #[error("cannot open {}: {source}", mount.display())]
    Open {
        /// The mount point.
        mount: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The kernel refused to freeze (not root, not a mount point, unsupported filesystem,
    /// already frozen).
    #[error("cannot freeze {}: {source}", mount.display())]
    Freeze {
        /// The mount point.
        mount: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// The kernel refused to thaw.
    #[error("cannot thaw {}: {source}", mount.display())]
    Thaw {
        /// The mount point.
        mount: PathBuf,
        /// Why.
        source: nix::Error,
    },
    /// Not frozen, on purpose: the path is not a mount point (freezing it would freeze the
    /// whole filesystem it is on), or something the agent writes lives on it.
    #[error("refusing to freeze {}: {reason}", mount.display())]
    Refused {
        /// The path given.
        mount: PathBuf,
        /// Why.
        reason: String,
    },
    /// The watchdog process could not be started.
    #[error("cannot start the thaw watchdog for {}: {source}", mount.display())]
    Watchdog {
        /// The mount point.
        mount: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// How to start the watchdog: a program and its arguments, to which the mount point and
/// the limit in seconds are appended. The program must call [`watchdog`] with its stdin.
#[derive(Debug, Clone)]
pub struct WatchdogCommand {
    /// The program (normally the agent's own executable).
    pub program: PathBuf,
    /// Arguments before the mount point and the limit.
    pub args: Vec<String>,
}

/// Checks that `mount` is a mount point (FIFREEZE freezes the whole filesystem a path is
/// on, so `/srv/app` on the root filesystem would freeze `/`) and that none of `writes`
/// (the repository, caches, state: what the agent writes while it is frozen) is on it.
pub fn check_freezable(mount: &Path, writes: &[PathBuf]) -> Result<(), FreezeError> {
    let refused = |reason: String| FreezeError::Refused {
        mount: mount.to_owned(),
        reason,
    };
    let canonical = std::fs::canonicalize(mount).map_err(|source| FreezeError::Open {
        mount: mount.to_owned(),
        source,
    })?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| refused(format!("cannot read /proc/self/mountinfo: {e}")))?;
    if !mount_points(&mounts).any(|point| point == canonical) {
        return Err(refused(format!(
            "{} is not a mount point; give the mount point of its filesystem",
            canonical.display()
        )));
    }
    use std::os::unix::fs::MetadataExt;
    let device = std::fs::metadata(&canonical)
        .map_err(|source| FreezeError::Open {
            mount: mount.to_owned(),
            source,
        })?
        .dev();
    for path in writes {
        // The nearest existing ancestor tells the filesystem of a path not made yet.
        let on = path
            .ancestors()
            .find_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.dev());
        if on == Some(device) {
            return Err(refused(format!(
                "{} is on it, and the agent writes there while the filesystem is frozen",
                path.display()
            )));
        }
    }
    Ok(())
}

/// The mount points listed in `mountinfo` (the fifth field, octal escapes decoded).
fn mount_points(mountinfo: &str) -> impl Iterator<Item = PathBuf> + '_ {
    mountinfo.lines().filter_map(|line| {
        let field = line.split(' ').nth(4)?;
        let mut bytes = Vec::with_capacity(field.len());
        let raw = field.as_bytes();
        let mut i = 0;
        while i < raw.len() {
            let escaped = raw.get(i + 1..i + 4).and_then(|digits| {
                std::str::from_utf8(digits)
                    .ok()
                    .and_then(|d| u8::from_str_radix(d, 8).ok())
            });
            match (raw[i], escaped) {
                (b'\\', Some(byte)) => {
                    bytes.push(byte);
                    i += 4;
                }
                (byte, _) => {
                    bytes.push(byte);
                    i += 1;
                }
            }
        }
        use std::os::unix::ffi::OsStringExt;
        Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
    })
}

/// A frozen filesystem. Thaws on [`Frozen::thaw`] or when dropped.
#[derive(Debug)]
pub struct Frozen {
    mount: PathBuf,
    dir: File,
    watchdog: Option<Child>,
    thawed: bool,
}

/// Freezes the filesystem mounted at `mount`. With `watchdog`, the watchdog process is
/// started first and thaws after `limit` or when this process dies.
pub fn freeze(
    mount: &Path,
    limit: Duration,
    watchdog: Option<&WatchdogCommand>,
) -> Result<Frozen, FreezeError> {
    let dir = File::open(mount).map_err(|source| FreezeError::Open {
        mount: mount.to_owned(),
        source,
    })?;
    let watchdog = match watchdog {
        Some(command) => Some(
            Command::new(&command.program)
                .args(&command.args)
                .arg(mount)
                .arg(limit.as_secs().max(1).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                // A group of its own: a SIGKILL sent to the agent's process group (`timeout
                // -s KILL`, a shell's job control) does not take the watchdog with it.
                .process_group(0)
                .spawn()
                .map_err(|source| FreezeError::Watchdog {
                    mount: mount.to_owned(),
                    source,
                })?,
        ),
        None => None,
    };
    let mut frozen = Frozen {
        mount: mount.to_owned(),
        dir,
        watchdog,
        // Nothing to thaw until the freeze succeeds.
        thawed: true,
    };
    ioctl::freeze(frozen.dir.as_raw_fd()).map_err(|source| FreezeError::Freeze {
        mount: mount.to_owned(),
        source,
    })?;
    frozen.thawed = false;
    Ok(frozen)
}

impl Frozen {
    /// The mount point.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// Thaws now and dismisses the watchdog.
    pub fn thaw(mut self) -> Result<(), FreezeError> {
        self.thaw_inner()
    }

    fn thaw_inner(&mut self) -> Result<(), FreezeError> {
        let result = if self.thawed {
            Ok(())
        } else {
            match ioctl::thaw(self.dir.as_raw_fd()) {
                // EINVAL: not frozen any more (the watchdog's limit came first).
                Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
                Err(source) => Err(FreezeError::Thaw {
                    mount: self.mount.clone(),
                    source,
                }),
            }
        };
        self.thawed = true;
        if let Some(mut child) = self.watchdog.take() {
            // Dismissed only when the thaw worked; otherwise the pipe just closes, and the
            // watchdog tries the thaw itself, as when the agent dies.
            if let Some(mut stdin) = child.stdin.take()
                && result.is_ok()
            {
                let _ = writeln!(stdin, "{THAWED}");
            }
            let _ = child.wait();
        }
        result
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = self.thaw_inner();
    }
}

/// Thaws `mount` (used by the watchdog, and by `bunker-agent thaw` by hand).
pub fn thaw_mount(mount: &Path) -> Result<(), FreezeError> {
    let dir = File::open(mount).map_err(|source| FreezeError::Open {
        mount: mount.to_owned(),
        source,
    })?;
    match ioctl::thaw(dir.as_raw_fd()) {
        Ok(()) | Err(nix::Error::EINVAL) => Ok(()),
        Err(source) => Err(FreezeError::Thaw {
            mount: mount.to_owned(),
            source,
        }),
    }
}

/// What ended a watchdog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogEnd {
    /// The agent thawed and said so.
    Dismissed,
    /// The agent's pipe closed without a word: it died. The watchdog thawed.
    AgentGone,
    /// The freeze outlasted its limit. The watchdog thawed.
    Expired,
}

/// The watchdog's loop: waits for `thawed` on `input`; thaws `mount` if `input` closes
/// first or `limit` passes.
pub fn watchdog(
    mount: &Path,
    limit: Duration,
    input: impl Read + Send + 'static,
) -> Result<WatchdogEnd, FreezeError> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut lines = BufReader::new(input).lines();
        let dismissed = matches!(lines.next(), Some(Ok(line)) if line.trim() == THAWED);
        let _ = sender.send(dismissed);
    });
    let end = match receiver.recv_timeout(limit) {
        Ok(true) => return Ok(WatchdogEnd::Dismissed),
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => WatchdogEnd::AgentGone,
        Err(mpsc::RecvTimeoutError::Timeout) => WatchdogEnd::Expired,
    };
    thaw_mount(mount)?;
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_are_read_from_mountinfo_with_escapes() {
        let mountinfo = "22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n\
                         40 22 7:0 / /srv/my\\040data rw - ext4 /dev/loop0 rw\n";
        let points: Vec<PathBuf> = mount_points(mountinfo).collect();
        assert_eq!(points, [PathBuf::from("/"), PathBuf::from("/srv/my data")]);
    }

    #[test]
    fn a_directory_that_is_not_a_mount_point_or_holds_the_repository_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inside = dir.path().join("app");
        std::fs::create_dir(&inside).expect("mkdir");
        let err = check_freezable(&inside, &[]).unwrap_err();
        assert!(
            matches!(&err, FreezeError::Refused { reason, .. } if reason.contains("not a mount point")),
            "{err}"
        );
        // The mount point the temporary directory is on: a repository below it is on it.
        use std::os::unix::fs::MetadataExt;
        let dev = |p: &Path| std::fs::metadata(p).expect("stat").dev();
        let canonical = std::fs::canonicalize(dir.path()).expect("canonical");
        let mount = canonical
            .ancestors()
            .find(|p| p.parent().is_none_or(|parent| dev(parent) != dev(p)))
            .expect("a mount point");
        let err = check_freezable(mount, &[dir.path().join("repo")]).unwrap_err();
        assert!(
            matches!(&err, FreezeError::Refused { reason, .. } if reason.contains("writes there")),
            "{err}"
        );
        assert!(check_freezable(mount, &[]).is_ok(), "{}", mount.display());
    }
}
