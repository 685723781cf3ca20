//! Hook commands: run with `/bin/sh -c` in their own process group, output captured, killed
//! (the whole group) when they overrun their timeout or their job is cancelled.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::cancel::Cancel;
use crate::supervise::{self, OUTPUT_DRAIN, Stopped};

/// Most output kept per hook (the tail is dropped).
const MAX_OUTPUT: usize = 64 << 10;

/// What one hook run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRun {
    /// The command line.
    pub command: String,
    /// Exit code; `None` when killed by a signal or not started.
    pub code: Option<i32>,
    /// It overran its timeout and was killed.
    pub timed_out: bool,
    /// Its job was cancelled (a shutdown, the source's timeout) and it was killed.
    pub cancelled: bool,
    /// Standard output and error, interleaved as they were read, lossy UTF-8.
    pub output: String,
    /// How long it ran.
    pub duration: Duration,
    /// Why it could not be started, if it could not.
    pub spawn_error: Option<String>,
}

impl HookRun {
    /// True when it ran to completion with exit code 0.
    pub fn succeeded(&self) -> bool {
        self.code == Some(0) && !self.timed_out && !self.cancelled
    }

    /// One line for logs and errors.
    pub fn describe(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return format!("hook {:?} could not start: {e}", self.command);
        }
        if self.timed_out {
            return format!(
                "hook {:?} timed out after {:.0?} and was killed",
                self.command, self.duration
            );
        }
        if self.cancelled {
            return format!(
                "hook {:?} was stopped after {:.1?}: its job was cancelled",
                self.command, self.duration
            );
        }
        match self.code {
            Some(0) => format!("hook {:?} succeeded in {:.1?}", self.command, self.duration),
            Some(code) => format!("hook {:?} failed with exit code {code}", self.command),
            None => format!("hook {:?} was killed by a signal", self.command),
        }
    }
}

/// Runs `command` with `env` added, waiting at most `timeout`; its process group is stopped
/// when that passes or `cancel` is set. Background processes it starts (`... &`) are left
/// running once it ends; what they print after [`OUTPUT_DRAIN`] is not captured.
pub fn run_hook(
    command: &str,
    env: &[(String, String)],
    timeout: Duration,
    cancel: &Cancel,
) -> HookRun {
    let started = Instant::now();
    let mut run = HookRun {
        command: command.to_owned(),
        code: None,
        timed_out: false,
        cancelled: false,
        output: String::new(),
        duration: Duration::ZERO,
        spawn_error: None,
    };
    let spawned = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            run.spawn_error = Some(e.to_string());
            return run;
        }
    };
    let captured = Arc::new(Mutex::new(Vec::new()));
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|mut reader| {
        let captured = Arc::clone(&captured);
        thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let Ok(mut kept) = captured.lock() else { break };
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
        })
    })
    .collect();
    let ended = supervise::wait(&mut child, Some(started + timeout), cancel);
    run.timed_out = ended.stopped == Some(Stopped::TimedOut);
    run.cancelled = ended.stopped == Some(Stopped::Cancelled);
    run.code = ended.status.and_then(|s| s.code());
    let drained = Instant::now();
    while readers.iter().any(|r| !r.is_finished()) && drained.elapsed() < OUTPUT_DRAIN {
        thread::sleep(Duration::from_millis(10));
    }
    // Readers still blocked on a pipe a background process holds end with it.
    for reader in readers.into_iter().filter(|r| r.is_finished()) {
        let _ = reader.join();
    }
    if let Ok(kept) = captured.lock() {
        run.output = String::from_utf8_lossy(&kept).into_owned();
    }
    run.duration = started.elapsed();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_exit_code_are_captured() {
        let run = run_hook(
            "echo out; echo err >&2; echo \"$BUNKER_SOURCE\"; exit 4",
            &[("BUNKER_SOURCE".into(), "db".into())],
            Duration::from_secs(10),
            &Cancel::new(),
        );
        assert_eq!(run.code, Some(4));
        assert!(!run.succeeded());
        assert!(run.output.contains("out\n"), "{run:?}");
        assert!(run.output.contains("err\n"), "{run:?}");
        assert!(run.output.contains("db\n"), "{run:?}");
        assert!(run.describe().contains("exit code 4"));
    }

    #[test]
    fn an_overrunning_hook_and_its_children_are_killed() {
        let started = Instant::now();
        let run = run_hook(
            "sleep 30 & sleep 30; echo never",
            &[],
            Duration::from_millis(300),
            &Cancel::new(),
        );
        assert!(run.timed_out);
        assert!(!run.succeeded());
        assert!(!run.output.contains("never"));
        // The background sleep held the pipe: it must have been killed with the group.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
        assert!(run.describe().contains("timed out"));
    }

    #[test]
    fn success() {
        let run = run_hook("true", &[], Duration::from_secs(5), &Cancel::new());
        assert!(run.succeeded(), "{run:?}");
    }

    #[test]
    fn a_background_process_is_left_running_and_does_not_hold_the_hook() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flag = dir.path().join("alive");
        let started = Instant::now();
        // One in the hook's group, one in a session of its own: both keep the pipes.
        let script = format!(
            "(sleep 2; touch '{}') & setsid sleep 5 & echo started",
            flag.display()
        );
        let run = run_hook(&script, &[], Duration::from_secs(30), &Cancel::new());
        assert!(run.succeeded(), "{run:?}");
        assert!(run.output.contains("started"), "{run:?}");
        assert!(started.elapsed() < Duration::from_millis(1800), "{run:?}");
        // The background process was not killed when the hook ended.
        thread::sleep(Duration::from_millis(2500));
        assert!(flag.exists(), "the hook's background process was killed");
    }

    #[test]
    fn a_cancelled_job_stops_its_hook() {
        let cancel = Cancel::new();
        let setter = {
            let cancel = cancel.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(200));
                cancel.cancel();
            })
        };
        let started = Instant::now();
        let run = run_hook("sleep 30", &[], Duration::from_secs(60), &cancel);
        setter.join().expect("setter");
        assert!(
            run.cancelled && !run.timed_out && !run.succeeded(),
            "{run:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5), "{run:?}");
        assert!(run.describe().contains("cancelled"), "{run:?}");
    }
}
