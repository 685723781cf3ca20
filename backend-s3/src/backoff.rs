//! Waits between the attempts of a request that bunker retries itself (`object_store`
//! retries the others): doubling from a first wait up to a ceiling.

use std::time::Duration;

/// The waits of one request's retries.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    ceiling: Duration,
}

impl Backoff {
    /// Waits of `first`, then twice the one before, never more than `ceiling`.
    pub(crate) fn doubling(first: Duration, ceiling: Duration) -> Backoff {
        Backoff {
            next: first,
            ceiling,
        }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.ceiling);
        wait
    }

    /// Sleeps the next wait.
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling() {
        let mut backoff = Backoff::doubling(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<u128> = (0..6).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
    }
}
