//! Cooperative cancellation: a flag that long operations check between steps, set by a
//! signal handler in the binary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// A shared cancellation flag. Cloning shares the flag.
#[derive(Debug, Clone, Default)]
pub struct Cancel(Arc<AtomicBool>);

impl Cancel {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every holder to stop at the next safe point.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// True once [`Cancel::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Cancel {
    /// The underlying flag, for registering with a signal handler.
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

/// A flag of its own for one job: set when its parent flag is (a shutdown) or once its
/// time limit has passed, by a watcher thread that [`Deadline::finish`] ends.
#[derive(Debug)]
pub struct Deadline {
    cancel: Cancel,
    done: mpsc::Sender<()>,
    watcher: thread::JoinHandle<bool>,
}

impl Deadline {
    /// Starts watching `parent` and the clock.
    pub fn start(parent: &Cancel, limit: Duration) -> Self {
        let cancel = Cancel::new();
        let (done, finished) = mpsc::channel::<()>();
        let watcher = {
            let cancel = cancel.clone();
            let parent = parent.clone();
            thread::spawn(move || {
                let started = Instant::now();
                loop {
                    match finished.recv_timeout(Duration::from_millis(100)) {
                        Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return false,
                        Err(mpsc::RecvTimeoutError::Timeout) => {}
                    }
                    if parent.is_cancelled() {
                        cancel.cancel();
                        return false;
                    }
                    if started.elapsed() >= limit {
                        cancel.cancel();
                        return true;
                    }
                }
            })
        };
        Deadline {
            cancel,
            done,
            watcher,
        }
    }

    /// The job's flag.
    pub fn cancel(&self) -> &Cancel {
        &self.cancel
    }

    /// Stops watching; true when the time limit (not the parent) set the flag.
    pub fn finish(self) -> bool {
        let _ = self.done.send(());
        self.watcher.join().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_follows_its_parent_and_the_clock() {
        let parent = Cancel::new();
        let deadline = Deadline::start(&parent, Duration::from_millis(150));
        thread::sleep(Duration::from_millis(400));
        assert!(deadline.cancel().is_cancelled());
        assert!(!parent.is_cancelled());
        assert!(deadline.finish(), "the limit set it");

        let deadline = Deadline::start(&parent, Duration::from_secs(60));
        parent.cancel();
        thread::sleep(Duration::from_millis(300));
        assert!(deadline.cancel().is_cancelled());
        assert!(!deadline.finish(), "the parent set it");

        let deadline = Deadline::start(&Cancel::new(), Duration::from_secs(60));
        assert!(!deadline.cancel().is_cancelled());
        assert!(!deadline.finish());
    }
}
