//! Child processes the agent waits for (hooks, command sources, smoke commands, a drill's
//! database tools): each runs in a process group of its own, and when its time is up or
//! its job is cancelled (a source's `timeout`, SIGTERM, the daemon's shutdown) the whole
//! group is stopped: SIGTERM, then SIGKILL for what is left after a grace period. So a
//! command that hangs, or prints nothing, never holds a job (or a frozen filesystem) past
//! its limit.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::cancel::Cancel;

/// How long a stopped group has between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_millis(500);

/// How often a wait looks at the child, the clock and the cancel flag.
const POLL: Duration = Duration::from_millis(20);

/// Why a child was stopped before it ended on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Its time limit passed.
    TimedOut,
    /// Its job was cancelled.
    Cancelled,
}

/// How a supervised child ended.
#[derive(Debug)]
pub struct Ended {
    /// Its exit status; `None` if it could not be waited for.
    pub status: Option<ExitStatus>,
    /// Set when it was stopped, and why.
    pub stopped: Option<Stopped>,
}

/// Waits for `child`, which must lead its own process group (spawned with
/// `process_group(0)`), stopping the group once `deadline` passes or `cancel` is set.
pub fn wait(child: &mut Child, deadline: Option<Instant>, cancel: &Cancel) -> Ended {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ended {
                    status: Some(status),
                    stopped: None,
                };
            }
            Ok(None) => {}
            Err(_) => {
                return Ended {
                    status: None,
                    stopped: None,
                };
            }
        }
        let stopped = if cancel.is_cancelled() {
            Some(Stopped::Cancelled)
        } else if deadline.is_some_and(|d| Instant::now() >= d) {
            Some(Stopped::TimedOut)
        } else {
            None
        };
        if let Some(stopped) = stopped {
            let leader = child.id();
            stop_group(leader, || matches!(child.try_wait(), Ok(Some(_))));
            return Ended {
                status: child.wait().ok(),
                stopped: Some(stopped),
            };
        }
        thread::sleep(POLL);
    }
}

/// Stops the process group led by `leader`: SIGTERM, then SIGKILL unless `ended` says the
/// leader is gone within [`GRACE`] (what it left behind in its group goes with SIGKILL).
pub fn stop_group(leader: u32, mut ended: impl FnMut() -> bool) {
    let pid = Pid::from_raw(i32::try_from(leader).unwrap_or(i32::MAX));
    // A child left in its parent's group (a command run from a terminal) has no group of
    // its own: the signals go to it alone.
    let own_group = killpg(pid, Signal::SIGTERM).is_ok();
    if !own_group {
        let _ = kill(pid, Signal::SIGTERM);
    }
    let started = Instant::now();
    while started.elapsed() < GRACE && !ended() {
        thread::sleep(POLL);
    }
    if own_group {
        // What the leader left behind in its group goes too.
        let _ = killpg(pid, Signal::SIGKILL);
    } else if !ended() {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// Runs `body` while a watcher stops the process group led by `leader` once `cancel` is
/// set: for children whose owner is busy reading their output (a command source) rather
/// than waiting for them.
pub fn stop_on_cancel<T>(leader: u32, cancel: &Cancel, body: impl FnOnce() -> T) -> T {
    let finished = AtomicBool::new(false);
    thread::scope(|scope| {
        scope.spawn(|| {
            while !finished.load(Ordering::SeqCst) {
                if cancel.is_cancelled() {
                    stop_group(leader, || finished.load(Ordering::SeqCst));
                    return;
                }
                thread::sleep(POLL);
            }
        });
        let result = body();
        finished.store(true, Ordering::SeqCst);
        result
    })
}

/// How long the output of a command that has ended is still read: a background process it
/// left running may hold its pipes open for as long as it runs.
pub const OUTPUT_DRAIN: Duration = Duration::from_secs(1);

/// Runs `command` in a process group of its own, capturing its standard output and error,
/// until it ends, `deadline` passes or `cancel` is set (then the group is stopped).
pub fn output(
    command: &mut Command,
    deadline: Option<Instant>,
    cancel: &Cancel,
) -> io::Result<(Output, Option<Stopped>)> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let read = |pipe: Option<Box<dyn Read + Send>>| {
        let (sent, received) = mpsc::channel();
        if let Some(mut pipe) = pipe {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                let _ = sent.send(bytes);
            });
        }
        received
    };
    let stdout = read(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = read(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let ended = wait(&mut child, deadline, cancel);
    let status = ended
        .status
        .ok_or_else(|| io::Error::other("the command could not be waited for"))?;
    let drained = Instant::now() + OUTPUT_DRAIN;
    let collect = |received: mpsc::Receiver<Vec<u8>>| {
        received
            .recv_timeout(drained.saturating_duration_since(Instant::now()))
            .unwrap_or_default()
    };
    let output = Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    };
    Ok((output, ended.stopped))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> Child {
        Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn sh")
    }

    #[test]
    fn output_is_captured_and_a_hung_command_stopped() {
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg("echo out; echo err >&2; exit 2");
        let (out, stopped) = output(&mut command, None, &Cancel::new()).expect("runs");
        assert_eq!(
            (out.stdout, out.stderr),
            (b"out\n".to_vec(), b"err\n".to_vec())
        );
        assert_eq!((out.status.code(), stopped), (Some(2), None));

        let started = Instant::now();
        let mut command = Command::new("/bin/sh");
        command.arg("-c").arg("echo partial; sleep 30");
        let deadline = Some(Instant::now() + Duration::from_millis(200));
        let (out, stopped) = output(&mut command, deadline, &Cancel::new()).expect("runs");
        assert_eq!(stopped, Some(Stopped::TimedOut));
        assert_eq!(out.stdout, b"partial\n");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_child_that_ends_is_waited_for() {
        let mut child = spawn("exit 3");
        let ended = wait(&mut child, None, &Cancel::new());
        assert_eq!(ended.status.and_then(|s| s.code()), Some(3));
        assert_eq!(ended.stopped, None);
    }

    #[test]
    fn a_deadline_or_a_cancel_stops_the_whole_group() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("survived");
        let started = Instant::now();
        let mut child = spawn(&format!("(sleep 1; touch '{}') & sleep 30", flag.display()));
        let deadline = Some(Instant::now() + Duration::from_millis(200));
        let ended = wait(&mut child, deadline, &Cancel::new());
        assert_eq!(ended.stopped, Some(Stopped::TimedOut));
        assert!(started.elapsed() < Duration::from_secs(5));
        // The background process went with the group.
        thread::sleep(Duration::from_millis(1500));
        assert!(!flag.exists(), "the group outlived its stop");

        let cancel = Cancel::new();
        let mut child = spawn("trap '' TERM; sleep 30");
        let setter = {
            let cancel = cancel.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let started = Instant::now();
        let ended = wait(&mut child, None, &cancel);
        setter.join().expect("setter");
        assert_eq!(ended.stopped, Some(Stopped::Cancelled));
        // SIGTERM was ignored: SIGKILL after the grace.
        assert!(started.elapsed() < GRACE + Duration::from_secs(3));
    }

    #[test]
    fn stop_on_cancel_ends_a_child_its_owner_is_reading() {
        let cancel = Cancel::new();
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg("sleep 30")
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let mut stdout = child.stdout.take().expect("stdout");
        let setter = {
            let cancel = cancel.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(100));
                cancel.cancel();
            })
        };
        let started = Instant::now();
        let read = stop_on_cancel(child.id(), &cancel, || {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut stdout, &mut out).map(|_| out.len())
        });
        setter.join().expect("setter");
        assert_eq!(read.ok(), Some(0));
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = child.wait();
    }
}
