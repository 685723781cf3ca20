//! Bandwidth limits: a wrapper that paces a store's transfers so that the bytes written
//! (uploads) and read (downloads) stay within a rate each, as restic's `--limit-upload` and
//! `--limit-download` do.
//!
//! Each direction has its own `Pacer`: a transfer waits until the bytes granted before
//! it are paid for at the rate, then goes at full speed, and its own bytes are owed by the
//! next one. Over any stretch of time the bytes moved stay within the rate times that time
//! plus one transfer (a pack: 16 MiB at most). A transfer books its turn before it starts,
//! so transfers from several threads queue in the order they asked; a read settles for the
//! bytes it returned once it has them (a whole object's size is known only then, and a
//! range past the end of an object reads nothing). Idle time earns no credit: a limit
//! stays a limit after a pause.
//!
//! Only object bytes count: requests for names, sizes and listings are small and pass
//! freely. Read-ahead hints ([`Backend::will_read`]) are dropped while downloads are
//! limited, since they would read past the pacer.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use super::{Backend, LockPolicy, ObjectMeta, ReadBytes, ReadHints, StagedFile};
use crate::error::Result;

/// The rates a [`ThrottledBackend`] keeps to, in bytes per second; `None`: no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BandwidthLimits {
    /// Bytes written to the store per second.
    pub upload: Option<NonZeroU64>,
    /// Bytes read from the store per second.
    pub download: Option<NonZeroU64>,
}

impl BandwidthLimits {
    /// True when neither direction is limited.
    pub fn is_unlimited(&self) -> bool {
        self.upload.is_none() && self.download.is_none()
    }
}

/// The most bytes a read books before it starts: more than any range a restore reads.
const MAX_BOOKED: u64 = 64 << 20;

/// Paces transfers in one direction at a rate (see the module documentation).
#[derive(Debug)]
struct Pacer {
    bytes_per_second: NonZeroU64,
    /// When the bytes granted so far are paid for; a transfer may start then.
    paid_until: Mutex<Option<Instant>>,
}

impl Pacer {
    fn new(bytes_per_second: NonZeroU64) -> Self {
        Self {
            bytes_per_second,
            paid_until: Mutex::new(None),
        }
    }

    /// How long `bytes` take at the rate (saturating at a year: a limit that low is a
    /// stop, not a pace).
    fn cost(&self, bytes: u64) -> Duration {
        let nanos = u128::from(bytes) * 1_000_000_000 / u128::from(self.bytes_per_second.get());
        let year = Duration::from_secs(365 * 86_400);
        u64::try_from(nanos)
            .map_or(year, Duration::from_nanos)
            .min(year)
    }

    /// Books a transfer of `bytes` asked for at `now`: returns when it may start (when
    /// the bytes before it are paid for, or `now`), and owes its bytes from then on.
    fn book(&self, now: Instant, bytes: u64) -> Instant {
        let mut paid_until = self
            .paid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let start = paid_until.map_or(now, |paid| paid.max(now));
        *paid_until = Some(start + self.cost(bytes));
        start
    }

    /// Corrects the booking of a transfer that booked `booked` bytes and moved `moved`:
    /// a read learns its size only once done (a range past the end fails and moves none).
    fn settle(&self, booked: u64, moved: u64) {
        let mut paid_until = self
            .paid_until
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(paid) = *paid_until else {
            return;
        };
        *paid_until = Some(if moved >= booked {
            paid + self.cost(moved - booked)
        } else {
            let refund = self.cost(booked - moved);
            paid.checked_sub(refund).unwrap_or(paid)
        });
    }

    /// Waits for the turn of a transfer of `bytes`, booking it; stops waiting once `stop`
    /// is set.
    fn wait_to_send(&self, bytes: u64, stop: Option<&AtomicBool>) {
        sleep_until(self.book(Instant::now(), bytes), stop);
    }
}

/// How often a wait looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Sleeps until `when`, or until `stop` is set: a command being stopped (Ctrl-C, an
/// agent's shutdown) must not sit out a long turn first. What it sends then is little: its
/// own stages stop at their next check.
fn sleep_until(when: Instant, stop: Option<&AtomicBool>) {
    loop {
        let now = Instant::now();
        if when <= now || stop.is_some_and(|stop| stop.load(Ordering::Relaxed)) {
            return;
        }
        let left = when - now;
        std::thread::sleep(if stop.is_some() {
            left.min(STOP_POLL)
        } else {
            left
        });
    }
}

/// A store whose object transfers are paced to [`BandwidthLimits`]. Everything else
/// (names, sizes, listings, locks, hints on how to read it) is the wrapped store's.
pub struct ThrottledBackend<B> {
    inner: B,
    upload: Option<Pacer>,
    download: Option<Pacer>,
    /// Once set, transfers stop waiting for their turn.
    stop: Option<Arc<AtomicBool>>,
}

impl<B: Backend> ThrottledBackend<B> {
    /// Wraps `inner`, pacing it to `limits`.
    pub fn new(inner: B, limits: BandwidthLimits) -> Self {
        Self {
            inner,
            upload: limits.upload.map(Pacer::new),
            download: limits.download.map(Pacer::new),
            stop: None,
        }
    }

    /// Stops waiting for turns once `stop` is set (a command's cancel flag), so that a
    /// stopping command is not held up by the limit.
    pub fn stopping_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    fn before_upload(&self, bytes: u64) {
        if let Some(pacer) = &self.upload {
            pacer.wait_to_send(bytes, self.stop.as_deref());
        }
    }

    /// Runs `read` of `expected` bytes (0 when not known) in its turn, booked up front so
    /// that reads from several threads queue, and settles for the bytes it returned
    /// (`size`). A range far past the end books at most [`MAX_BOOKED`] bytes: it fails and
    /// moves nothing, and others should not wait for it.
    fn download<T>(
        &self,
        expected: u64,
        read: impl FnOnce() -> Result<T>,
        size: impl Fn(&T) -> usize,
    ) -> Result<T> {
        let Some(pacer) = &self.download else {
            return read();
        };
        let booked = expected.min(MAX_BOOKED);
        pacer.wait_to_send(booked, self.stop.as_deref());
        let result = read();
        let moved = result.as_ref().map_or(0, |bytes| size(bytes) as u64);
        pacer.settle(booked, moved);
        result
    }
}

impl<B: Backend> fmt::Debug for ThrottledBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |pacer: &Option<Pacer>| pacer.as_ref().map(|p| p.bytes_per_second.get());
        f.debug_struct("ThrottledBackend")
            .field("inner", &self.inner)
            .field("upload_bytes_per_second", &rate(&self.upload))
            .field("download_bytes_per_second", &rate(&self.download))
            .finish()
    }
}

impl<B: Backend> Backend for ThrottledBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn read_hints(&self) -> ReadHints {
        self.inner.read_hints()
    }

    fn put_concurrency(&self) -> usize {
        self.inner.put_concurrency()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.before_upload(bytes.len() as u64);
        self.inner.put_if_absent(name, bytes)
    }

    fn put_if_absent_owned(&self, name: &str, bytes: Vec<u8>) -> Result<()> {
        self.before_upload(bytes.len() as u64);
        self.inner.put_if_absent_owned(name, bytes)
    }

    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        self.before_upload(bytes.len() as u64);
        self.inner.put_if_absent_abandoning(name, bytes, abandon)
    }

    fn stage(&self, prefix: &str) -> Result<Option<StagedFile>> {
        self.inner.stage(prefix)
    }

    /// A staged object is paced as it is published: its writer blocks there, so the
    /// objects staged after it wait too.
    fn publish(&self, staged: StagedFile, name: &str) -> Result<()> {
        self.before_upload(staged.len());
        self.inner.publish(staged, name)
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.download(0, || self.inner.get(name), Vec::len)
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.download(
            length,
            || self.inner.get_range(name, offset, length),
            Vec::len,
        )
    }

    fn get_range_to_read(&self, name: &str, offset: u64, length: u64) -> Result<ReadBytes> {
        self.download(
            length,
            || self.inner.get_range_to_read(name, offset, length),
            |bytes| bytes.len(),
        )
    }

    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<ReadBytes> {
        self.download(
            length,
            || {
                self.inner
                    .get_range_to_read_abandoning(name, offset, length, abandon)
            },
            |bytes| bytes.len(),
        )
    }

    fn will_read(&self, name: &str, offset: u64, length: u64) {
        if self.download.is_none() {
            self.inner.will_read(name, offset, length);
        }
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.inner.head(name)
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_temps(&self) -> Result<Vec<ObjectMeta>> {
        self.inner.list_temps()
    }

    fn remove_temp(&self, name: &str) -> Result<()> {
        self.inner.remove_temp(name)
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.inner.delete(name)
    }

    fn enable_lock(&self, policy: LockPolicy) -> Result<()> {
        self.inner.enable_lock(policy)
    }

    fn retained_until(&self, name: &str) -> Result<Option<SystemTime>> {
        self.inner.retained_until(name)
    }

    fn extend_retention(&self, name: &str, until: SystemTime) -> Result<()> {
        self.inner.extend_retention(name, until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::backend::testing::conformance;

    const MIB: u64 = 1 << 20;

    fn rate(bytes_per_second: u64) -> Option<NonZeroU64> {
        NonZeroU64::new(bytes_per_second)
    }

    #[test]
    fn each_transfer_waits_for_the_bytes_booked_before_it() {
        let pacer = Pacer::new(NonZeroU64::new(MIB).unwrap());
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // The first goes at once; the next ones queue behind its half second, then behind
        // each other, whoever asks first.
        assert_eq!(pacer.book(at(0), MIB / 2), at(0));
        assert_eq!(pacer.book(at(100), MIB / 4), at(500));
        assert_eq!(pacer.book(at(100), MIB), at(750));
        // After the debt is paid, a transfer goes when it asks, with no credit for the
        // idle time: the one after it waits its full cost.
        assert_eq!(pacer.book(at(5_000), 2 * MIB), at(5_000));
        assert_eq!(pacer.book(at(6_000), 0), at(7_000));
        // A read of unknown size books nothing and settles for what it read; one that
        // read less than it booked gives the rest back.
        pacer.settle(0, MIB / 2);
        assert_eq!(pacer.book(at(7_000), MIB), at(7_500));
        pacer.settle(MIB, MIB / 4);
        assert_eq!(pacer.book(at(7_000), 0), at(7_750));
    }

    #[test]
    fn a_cost_beyond_a_year_is_a_year() {
        let pacer = Pacer::new(NonZeroU64::new(1).unwrap());
        assert_eq!(pacer.cost(u64::MAX), Duration::from_secs(365 * 86_400));
        assert_eq!(pacer.cost(3), Duration::from_secs(3));
        let fast = Pacer::new(NonZeroU64::new(u64::MAX).unwrap());
        assert_eq!(fast.cost(u64::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_set_stop_flag_ends_the_wait_for_a_turn() {
        let limits = BandwidthLimits {
            upload: rate(MIB),
            download: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let store =
            ThrottledBackend::new(MemoryBackend::new(), limits).stopping_when(Arc::clone(&stop));
        // A minute's worth goes at once; the next put would wait that minute.
        store
            .put_if_absent("data/big", &vec![1u8; 60 * MIB as usize])
            .unwrap();
        let started = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                stop.store(true, Ordering::Relaxed);
            });
            store
                .put_if_absent("data/small", b"after the stop")
                .unwrap();
        });
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(30), "{took:?}");
        assert_eq!(store.get("data/small").unwrap(), b"after the stop");
    }

    #[test]
    fn an_abandoned_put_is_given_up_by_the_store_underneath() {
        let limits = BandwidthLimits {
            upload: rate(1 << 30),
            download: None,
        };
        let store = ThrottledBackend::new(MemoryBackend::new(), limits);
        let abandon = AtomicBool::new(false);
        store
            .put_if_absent_abandoning("data/kept", b"kept".to_vec(), &abandon)
            .unwrap();
        abandon.store(true, Ordering::SeqCst);
        assert!(matches!(
            store.put_if_absent_abandoning("data/given-up", b"x".to_vec(), &abandon),
            Err(crate::Error::Abandoned { .. })
        ));
        assert_eq!(store.get("data/kept").unwrap(), b"kept");
        assert!(store.get("data/given-up").is_err());
        assert!(matches!(
            store.get_range_to_read_abandoning("data/kept", 0, 2, &abandon),
            Err(crate::Error::Abandoned { .. })
        ));
        abandon.store(false, Ordering::SeqCst);
        let range = store
            .get_range_to_read_abandoning("data/kept", 0, 2, &abandon)
            .unwrap();
        assert_eq!(&*range, b"ke");
    }

    #[test]
    fn a_throttled_store_keeps_every_contract() {
        let limits = BandwidthLimits {
            upload: rate(1 << 30),
            download: rate(1 << 30),
        };
        conformance(&ThrottledBackend::new(MemoryBackend::new(), limits));
    }

    #[test]
    fn uploads_and_downloads_keep_to_their_rates() {
        let limits = BandwidthLimits {
            upload: rate(2 * MIB),
            download: rate(4 * MIB),
        };
        let store = ThrottledBackend::new(MemoryBackend::new(), limits);
        let object = vec![7u8; (MIB / 2) as usize];
        // Four half-MiB puts at 2 MiB/s: the last waits for the first three, 0.75 s.
        let started = Instant::now();
        for n in 0..4 {
            store.put_if_absent(&format!("data/{n}"), &object).unwrap();
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(750), "{took:?}");

        // Downloads have their own pace: four whole reads at 4 MiB/s take 0.375 s before
        // the last may start, ranges the same; a range past the end owes nothing.
        let started = Instant::now();
        for n in 0..4 {
            assert_eq!(store.get(&format!("data/{n}")).unwrap(), object);
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(375), "{took:?}");
        assert!(store.get_range("data/0", 0, u64::MAX).is_err());
        let started = Instant::now();
        for n in 0..4 {
            let range = store.get_range(&format!("data/{n}"), 0, MIB / 2).unwrap();
            assert_eq!(range, object);
        }
        let took = started.elapsed();
        // The failed range waited for the whole reads' debt and added none (or these would
        // wait for a year).
        assert!(took >= Duration::from_millis(375), "{took:?}");

        // Reads from several threads queue: four half-MiB ranges at once still take
        // 0.375 s before the last starts.
        let store = ThrottledBackend::new(store.inner, limits);
        let started = Instant::now();
        std::thread::scope(|scope| {
            for n in 0..4 {
                let store = &store;
                scope.spawn(move || store.get_range(&format!("data/{n}"), 0, MIB / 2).unwrap());
            }
        });
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(375), "{took:?}");
    }
}
