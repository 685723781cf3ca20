//! Hook commands: run with `/bin/sh -c` in their own process group, output captured, killed
//! (the whole group) when they overrun their timeout.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

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
        self.code == Some(0) && !self.timed_out
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
        match self.code {
            Some(0) => format!("hook {:?} succeeded in {:.1?}", self.command, self.duration),
            Some(code) => format!("hook {:?} failed with exit code {code}", self.command),
            None => format!("hook {:?} was killed by a signal", self.command),
        }
    }
}

/// Runs `command` with `env` added, waiting at most `timeout`.
pub fn run_hook(command: &str, env: &[(String, String)], timeout: Duration) -> HookRun {
    let started = Instant::now();
    let mut run = HookRun {
        command: command.to_owned(),
        code: None,
        timed_out: false,
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
        thread::spawn(move || {
            let mut kept = Vec::new();
            let mut buffer = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buffer[..n.min(room)]);
            }
            kept
        })
    })
    .collect();
    let group = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() >= timeout => {
                run.timed_out = true;
                let _ = killpg(group, Signal::SIGTERM);
                thread::sleep(Duration::from_millis(200));
                let _ = killpg(group, Signal::SIGKILL);
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    // The group is gone or finished; make sure no grandchild keeps the pipes open.
    let _ = killpg(group, Signal::SIGKILL);
    run.code = status.and_then(|s| s.code());
    for reader in readers {
        if let Ok(bytes) = reader.join() {
            run.output.push_str(&String::from_utf8_lossy(&bytes));
        }
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
        let run = run_hook("true", &[], Duration::from_secs(5));
        assert!(run.succeeded(), "{run:?}");
    }
}
