//! Work the walking thread shares with idle pool threads.
//!
//! The walk hands the rayon pool its batches to seal, and its own per-file work (capturing
//! metadata, reading small files) is what keeps that pool fed. Handing the per-file work to
//! the pool too, and waiting for it, stalls the walk behind the batches already queued, and
//! then the pool idles while the walk takes the results in. [`share`] does neither: the
//! walking thread works through the items itself while helpers, queued on the pool behind
//! whatever is there, take items too once a pool thread has nothing else to do. The walk
//! waits only for items a helper has already started; a helper that starts after the last
//! item was taken returns at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

/// Items, their results and the work that turns one into the other.
struct Shared<T, R, F> {
    items: Vec<T>,
    work: F,
    /// The next item nobody took yet.
    next: AtomicUsize,
    /// Results by item, and how many are in.
    results: Mutex<(Vec<Option<R>>, usize)>,
    all_in: Condvar,
}

impl<T, R, F: Fn(&T) -> R> Shared<T, R, F> {
    /// Takes items until none is left.
    fn work_through(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            let Some(item) = self.items.get(i) else {
                return;
            };
            let result = (self.work)(item);
            let mut results = self.results.lock().unwrap_or_else(PoisonError::into_inner);
            results.0[i] = Some(result);
            results.1 += 1;
            if results.1 == self.items.len() {
                self.all_in.notify_all();
            }
        }
    }
}

/// Applies `work` to every item, on the calling thread and on pool threads that are idle
/// meanwhile; the results come back in the items' order.
///
/// Must not be called on a pool thread: it would wait on the pool it is part of.
pub(super) fn share<T, R, F>(items: Vec<T>, work: F) -> Vec<R>
where
    T: Send + Sync + 'static,
    R: Send + 'static,
    F: Fn(&T) -> R + Send + Sync + 'static,
{
    let count = items.len();
    let helpers = rayon::current_num_threads().min(count.saturating_sub(1));
    let shared = Arc::new(Shared {
        items,
        work,
        next: AtomicUsize::new(0),
        results: Mutex::new(((0..count).map(|_| None).collect(), 0)),
        all_in: Condvar::new(),
    });
    for _ in 0..helpers {
        let shared = Arc::clone(&shared);
        rayon::spawn(move || shared.work_through());
    }
    shared.work_through();
    let mut results = shared
        .results
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    while results.1 < count {
        results = shared
            .all_in
            .wait(results)
            .unwrap_or_else(PoisonError::into_inner);
    }
    // Every slot is filled: each item was taken once and its result put in.
    std::mem::take(&mut results.0)
        .into_iter()
        .flatten()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use super::*;

    #[test]
    fn every_item_is_worked_once_and_results_keep_their_order() {
        for count in [0usize, 1, 2, 3, 100, 1000] {
            let calls = Arc::new(AtomicUsize::new(0));
            let counted = Arc::clone(&calls);
            let items: Vec<usize> = (0..count).collect();
            let results = share(items, move |&i| {
                counted.fetch_add(1, Ordering::Relaxed);
                i * 2
            });
            assert_eq!(results, (0..count).map(|i| i * 2).collect::<Vec<_>>());
            assert_eq!(calls.load(Ordering::Relaxed), count);
        }
    }

    #[test]
    fn the_caller_finishes_alone_while_the_pool_is_busy() {
        // Occupy every pool thread until the shared work is done: the calling thread must
        // get through all of it by itself.
        let release = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let threads = rayon::current_num_threads();
        for _ in 0..threads {
            let (release, started) = (Arc::clone(&release), Arc::clone(&started));
            rayon::spawn(move || {
                started.fetch_add(1, Ordering::Relaxed);
                while !release.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            });
        }
        while started.load(Ordering::Relaxed) < threads {
            std::thread::sleep(Duration::from_millis(1));
        }
        let caller = std::thread::current().id();
        let results = share((0..50).collect::<Vec<u32>>(), move |&i| {
            (i, std::thread::current().id() == caller)
        });
        release.store(true, Ordering::Relaxed);
        assert_eq!(results.len(), 50);
        for (i, (item, on_caller)) in results.into_iter().enumerate() {
            assert_eq!(item as usize, i);
            assert!(on_caller, "item {i} waited for a busy pool");
        }
    }
}
