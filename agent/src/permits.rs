//! A counting semaphore that bounds the work a thread hands to the rayon pool: memory stays
//! flat however fast the producer is.

use std::sync::{Condvar, Mutex, PoisonError};

/// Permits for pieces of work in flight; each is taken before the work is handed over and
/// given back when it is done.
#[derive(Debug, Default)]
pub(crate) struct Permits {
    used: Mutex<usize>,
    freed: Condvar,
}

impl Permits {
    /// Permits already taken, for tests that need a busy pool.
    #[cfg(test)]
    pub(crate) fn taken(used: usize) -> Self {
        Self {
            used: Mutex::new(used),
            freed: Condvar::new(),
        }
    }

    /// Waits until fewer than `limit` are taken, then takes one.
    pub(crate) fn acquire(&self, limit: usize) {
        let mut used = self.lock();
        while *used >= limit {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += 1;
    }

    /// Like [`Permits::acquire`], returning the permit, which is given back when dropped
    /// (a panicking task's included).
    pub(crate) fn take(&self, limit: usize) -> Permit<'_> {
        self.acquire(limit);
        Permit(self)
    }

    /// Gives one back.
    pub(crate) fn release(&self) {
        let mut used = self.lock();
        *used = used.saturating_sub(1);
        self.freed.notify_all();
    }

    /// How many are taken.
    pub(crate) fn in_use(&self) -> usize {
        *self.lock()
    }

    /// Waits until every permit is back.
    pub(crate) fn wait_idle(&self) {
        let mut used = self.lock();
        while *used > 0 {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A permit taken with [`Permits::take`]; dropping it gives it back.
#[derive(Debug)]
pub(crate) struct Permit<'a>(&'a Permits);

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn acquire_waits_for_a_release_at_the_limit() {
        let permits = Arc::new(Permits::default());
        permits.acquire(2);
        permits.acquire(2);
        assert_eq!(permits.in_use(), 2);
        let waiting = {
            let permits = Arc::clone(&permits);
            std::thread::spawn(move || {
                permits.acquire(2);
                permits.in_use()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiting.is_finished(),
            "a third permit was taken at a limit of two"
        );
        permits.release();
        assert_eq!(waiting.join().expect("join"), 2);
        permits.release();
        permits.release();
        permits.wait_idle();
        assert_eq!(permits.in_use(), 0);
    }

    #[test]
    fn a_taken_permit_is_given_back_when_dropped() {
        let permits = Permits::default();
        let permit = permits.take(1);
        assert_eq!(permits.in_use(), 1);
        drop(permit);
        assert_eq!(permits.in_use(), 0);
    }
}
