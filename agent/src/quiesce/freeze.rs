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
            if let Some(mut stdin) = child.stdin.take() {
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
