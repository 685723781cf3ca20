//! A fault-injecting wrapper for any [`Backend`], for tests and simulations.
//!
//! [`FaultyBackend`] passes every call to the backend it wraps, except that, decided by a
//! seeded deterministic generator (splitmix64), some calls fail with [`Error::Io`]:
//!
//! - per-operation error rates ([`FaultRates`]) for `put_if_absent`, `get`, `get_range`,
//!   `head`, `list` and `delete`. A failed put either leaves no object, or (with the
//!   probability [`FaultRates::put_lands`]) leaves the object fully written and still
//!   reports an error, as a storage service does when the connection drops after the write;
//!   a failed delete may likewise have happened ([`FaultRates::delete_lands`]);
//! - a crash switch ([`FaultyBackend::crash_after`]): after `n` more operations every call
//!   fails, as for a process that died. The operation at the crash point dies *during* the
//!   call: a put or delete there may or may not have reached storage.
//!
//! With the same seed, rates and sequence of calls, the same calls fail. With every fault
//! off (the state after [`FaultyBackend::new`]) the wrapper is transparent and passes
//! [`testing::conformance`](super::testing::conformance).

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{Backend, ObjectMeta};
use crate::error::{Error, Result};

/// Probabilities, each in `0.0..=1.0`, that a call of each kind fails.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultRates {
    /// `put_if_absent` fails.
    pub put: f64,
    /// A failed `put_if_absent` (injected or at the crash point) wrote the object anyway.
    pub put_lands: f64,
    /// `get` fails.
    pub get: f64,
    /// `get_range` fails.
    pub get_range: f64,
    /// `head` fails.
    pub head: f64,
    /// `list` fails.
    pub list: f64,
    /// `delete` fails.
    pub delete: f64,
    /// A failed `delete` (injected or at the crash point) removed the object anyway.
    pub delete_lands: f64,
}

impl FaultRates {
    /// No faults at all.
    pub const NONE: Self = Self {
        put: 0.0,
        put_lands: 0.0,
        get: 0.0,
        get_range: 0.0,
        head: 0.0,
        list: 0.0,
        delete: 0.0,
        delete_lands: 0.0,
    };

    /// The same error rate for every operation; half of the failed puts and deletes
    /// happen anyway.
    pub fn uniform(rate: f64) -> Self {
        Self {
            put: rate,
            put_lands: 0.5,
            get: rate,
            get_range: rate,
            head: rate,
            list: rate,
            delete: rate,
            delete_lands: 0.5,
        }
    }
}

/// The operations of the [`Backend`] trait that can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `put_if_absent`.
    Put,
    /// `get`.
    Get,
    /// `get_range`.
    GetRange,
    /// `head`.
    Head,
    /// `list`.
    List,
    /// `delete`.
    Delete,
}

impl Call {
    /// Lower-case name of the call.
    pub fn name(self) -> &'static str {
        match self {
            Call::Put => "put_if_absent",
            Call::Get => "get",
            Call::GetRange => "get_range",
            Call::Head => "head",
            Call::List => "list",
            Call::Delete => "delete",
        }
    }

    fn rate(self, rates: &FaultRates) -> f64 {
        match self {
            Call::Put => rates.put,
            Call::Get => rates.get,
            Call::GetRange => rates.get_range,
            Call::Head => rates.head,
            Call::List => rates.list,
            Call::Delete => rates.delete,
        }
    }
}

/// What the wrapper decided for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Pass the call through.
    Pass,
    /// Fail without touching storage.
    Fail,
    /// Perform the call, then report an error anyway.
    LandThenFail,
}

/// splitmix64: tiny, fast, and good enough to decide faults.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        // 53 random bits as a float in [0, 1).
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    rates: FaultRates,
    enabled: bool,
    /// Operations left before the crash; `None`: no crash armed.
    crash_in: Option<u64>,
    crashed: bool,
    operations: u64,
    injected: u64,
}

/// A [`Backend`] that injects errors and crashes into calls to another backend.
pub struct FaultyBackend<B: Backend> {
    inner: B,
    state: Mutex<State>,
}

impl<B: Backend> fmt::Debug for FaultyBackend<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("FaultyBackend")
            .field("inner", &self.inner)
            .field("rates", &state.rates)
            .field("enabled", &state.enabled)
            .field("crash_in", &state.crash_in)
            .field("crashed", &state.crashed)
            .finish_non_exhaustive()
    }
}

impl<B: Backend> FaultyBackend<B> {
    /// Wraps `inner` with every fault off; `seed` drives every later random decision.
    pub fn new(inner: B, seed: u64) -> Self {
        Self {
            inner,
            state: Mutex::new(State {
                rng: SplitMix64(seed ^ 0x5EED_FA17_0000_0001),
                rates: FaultRates::NONE,
                enabled: true,
                crash_in: None,
                crashed: false,
                operations: 0,
                injected: 0,
            }),
        }
    }

    /// Sets the error rates (builder form of [`FaultyBackend::set_rates`]).
    pub fn with_rates(self, rates: FaultRates) -> Self {
        self.set_rates(rates);
        self
    }

    /// Sets the error rates.
    pub fn set_rates(&self, rates: FaultRates) {
        self.lock().rates = rates;
    }

    /// The error rates in effect.
    pub fn rates(&self) -> FaultRates {
        self.lock().rates
    }

    /// Master switch: while off, every call passes through untouched (a crashed backend
    /// works again) and no random decision is drawn. On by default.
    pub fn set_enabled(&self, enabled: bool) {
        self.lock().enabled = enabled;
    }

    /// Arms the crash switch: the next `n` operations run as usual (subject to the error
    /// rates), the one after dies mid-call, and every call from then on fails.
    pub fn crash_after(&self, n: u64) {
        let mut state = self.lock();
        state.crash_in = Some(n);
    }

    /// Crashes now: every later call fails.
    pub fn crash_now(&self) {
        let mut state = self.lock();
        state.crash_in = None;
        state.crashed = true;
    }

    /// True once the crash point has been reached.
    pub fn is_crashed(&self) -> bool {
        self.lock().crashed
    }

    /// Clears a crash and disarms the crash switch (a restarted process).
    pub fn restart(&self) {
        let mut state = self.lock();
        state.crash_in = None;
        state.crashed = false;
    }

    /// Operations called so far (failed ones included).
    pub fn operations(&self) -> u64 {
        self.lock().operations
    }

    /// Calls that failed because of this wrapper (injected errors and crashed calls).
    pub fn injected_faults(&self) -> u64 {
        self.lock().injected
    }

    /// The wrapped backend.
    pub fn inner(&self) -> &B {
        &self.inner
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides the fate of one call.
    fn fate(&self, op: Call) -> Fate {
        let mut state = self.lock();
        state.operations += 1;
        if !state.enabled {
            return Fate::Pass;
        }
        if state.crashed {
            state.injected += 1;
            return Fate::Fail;
        }
        let lands = match op {
            Call::Put => state.rates.put_lands,
            Call::Delete => state.rates.delete_lands,
            _ => 0.0,
        };
        match state.crash_in {
            Some(0) => {
                state.crash_in = None;
                state.crashed = true;
                state.injected += 1;
                return if state.rng.chance(lands) {
                    Fate::LandThenFail
                } else {
                    Fate::Fail
                };
            }
            Some(left) => state.crash_in = Some(left - 1),
            None => {}
        }
        let rate = op.rate(&state.rates);
        if !state.rng.chance(rate) {
            return Fate::Pass;
        }
        state.injected += 1;
        if state.rng.chance(lands) {
            Fate::LandThenFail
        } else {
            Fate::Fail
        }
    }

    fn error(&self, op: Call, name: &str) -> Error {
        let what = if self.lock().crashed {
            "crashed"
        } else {
            "injected fault"
        };
        Error::io(
            format!("{} {name}", op.name()),
            std::io::Error::other(format!("{what} ({})", self.inner.location())),
        )
    }

    /// Runs `call` unless the fate says otherwise.
    fn run<T>(&self, op: Call, name: &str, call: impl FnOnce() -> Result<T>) -> Result<T> {
        match self.fate(op) {
            Fate::Pass => call(),
            Fate::Fail => Err(self.error(op, name)),
            Fate::LandThenFail => {
                // What the call did is lost with the connection; only the error arrives.
                let _ = call();
                Err(self.error(op, name))
            }
        }
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn location(&self) -> String {
        self.inner.location()
    }

    fn read_hints(&self) -> super::ReadHints {
        self.inner.read_hints()
    }

    fn put_concurrency(&self) -> usize {
        self.inner.put_concurrency()
    }

    fn put_if_absent(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.run(Call::Put, name, || self.inner.put_if_absent(name, bytes))
    }

    fn put_if_absent_abandoning(
        &self,
        name: &str,
        bytes: Vec<u8>,
        abandon: &AtomicBool,
    ) -> Result<()> {
        self.run(Call::Put, name, move || {
            self.inner.put_if_absent_abandoning(name, bytes, abandon)
        })
    }

    fn get(&self, name: &str) -> Result<Vec<u8>> {
        self.run(Call::Get, name, || self.inner.get(name))
    }

    fn get_range(&self, name: &str, offset: u64, length: u64) -> Result<Vec<u8>> {
        self.run(Call::GetRange, name, || {
            self.inner.get_range(name, offset, length)
        })
    }

    fn get_range_to_read_abandoning(
        &self,
        name: &str,
        offset: u64,
        length: u64,
        abandon: &AtomicBool,
    ) -> Result<super::ReadBytes> {
        self.run(Call::GetRange, name, || {
            self.inner
                .get_range_to_read_abandoning(name, offset, length, abandon)
        })
    }

    fn head(&self, name: &str) -> Result<ObjectMeta> {
        self.run(Call::Head, name, || self.inner.head(name))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.run(Call::List, prefix, || self.inner.list(prefix))
    }

    fn delete(&self, name: &str) -> Result<()> {
        self.run(Call::Delete, name, || self.inner.delete(name))
    }

    fn enable_lock(&self, policy: super::LockPolicy) -> Result<()> {
        self.inner.enable_lock(policy)
    }

    fn retained_until(&self, name: &str) -> Result<Option<std::time::SystemTime>> {
        self.run(Call::Head, name, || self.inner.retained_until(name))
    }

    fn extend_retention(&self, name: &str, until: std::time::SystemTime) -> Result<()> {
        self.run(Call::Put, name, || self.inner.extend_retention(name, until))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::MemoryBackend;
    use crate::backend::testing::conformance;

    #[test]
    fn passes_conformance_with_faults_off() {
        conformance(&FaultyBackend::new(MemoryBackend::new(), 1));
    }

    #[test]
    fn passes_conformance_when_disabled() {
        let backend =
            FaultyBackend::new(MemoryBackend::new(), 2).with_rates(FaultRates::uniform(1.0));
        backend.crash_after(0);
        backend.set_enabled(false);
        conformance(&backend);
    }

    #[test]
    fn rate_one_always_fails_and_a_failed_put_leaves_nothing() {
        let backend = FaultyBackend::new(MemoryBackend::new(), 3).with_rates(FaultRates {
            put: 1.0,
            ..FaultRates::NONE
        });
        for i in 0..20 {
            let name = format!("data/x{i}");
            assert!(matches!(
                backend.put_if_absent(&name, b"x"),
                Err(Error::Io { .. })
            ));
            assert!(
                backend.inner().head(&name).is_err(),
                "{name} must not exist"
            );
        }
        assert_eq!(backend.injected_faults(), 20);
        assert!(backend.list("").expect("list is not faulty").is_empty());
    }

    #[test]
    fn a_failed_put_may_land() {
        let backend = FaultyBackend::new(MemoryBackend::new(), 4).with_rates(FaultRates {
            put: 1.0,
            put_lands: 1.0,
            ..FaultRates::NONE
        });
        assert!(backend.put_if_absent("data/a", b"abc").is_err());
        assert_eq!(backend.inner().get("data/a").expect("landed"), b"abc");
    }

    #[test]
    fn every_operation_can_fail() {
        let inner = MemoryBackend::new();
        inner.put_if_absent("data/a", b"abc").expect("put");
        let backend = FaultyBackend::new(inner, 5).with_rates(FaultRates {
            delete_lands: 0.0,
            ..FaultRates::uniform(1.0)
        });
        assert!(backend.get("data/a").is_err());
        assert!(backend.get_range("data/a", 0, 1).is_err());
        assert!(backend.head("data/a").is_err());
        assert!(backend.list("data/").is_err());
        assert!(backend.delete("data/a").is_err());
        assert_eq!(backend.inner().get("data/a").expect("not deleted"), b"abc");
        backend.set_rates(FaultRates::NONE);
        assert_eq!(backend.get("data/a").expect("get"), b"abc");
    }

    #[test]
    fn rates_are_roughly_respected_and_deterministic() {
        let run = |seed| {
            let inner = MemoryBackend::new();
            inner.put_if_absent("x", b"x").expect("put");
            let backend = FaultyBackend::new(inner, seed).with_rates(FaultRates {
                get: 0.25,
                ..FaultRates::NONE
            });
            (0..4000)
                .map(|_| matches!(backend.get("x"), Err(Error::Io { .. })))
                .collect::<Vec<bool>>()
        };
        let a = run(7);
        assert_eq!(a, run(7), "same seed, same faults");
        assert_ne!(a, run(8), "another seed, other faults");
        let failed = a.iter().filter(|f| **f).count();
        assert!(
            (850..1150).contains(&failed),
            "{failed} of 4000 calls failed at rate 0.25"
        );
    }

    #[test]
    fn crash_after_n_operations() {
        let backend = FaultyBackend::new(MemoryBackend::new(), 6);
        backend.crash_after(3);
        backend.put_if_absent("a/1", b"1").expect("1st");
        backend.put_if_absent("a/2", b"2").expect("2nd");
        assert_eq!(backend.list("a/").expect("3rd").len(), 2);
        assert!(!backend.is_crashed());
        assert!(backend.put_if_absent("a/3", b"3").is_err(), "4th dies");
        assert!(backend.is_crashed());
        for _ in 0..5 {
            assert!(backend.get("a/1").is_err());
            assert!(backend.list("").is_err());
            assert!(backend.delete("a/1").is_err());
        }
        assert_eq!(backend.inner().get("a/1").expect("still there"), b"1");
        backend.restart();
        assert_eq!(backend.get("a/1").expect("works again"), b"1");
    }

    #[test]
    fn a_put_at_the_crash_point_may_land() {
        let backend = FaultyBackend::new(MemoryBackend::new(), 9).with_rates(FaultRates {
            put_lands: 1.0,
            ..FaultRates::NONE
        });
        backend.crash_after(0);
        assert!(backend.put_if_absent("a/1", b"1").is_err());
        assert_eq!(backend.inner().get("a/1").expect("landed"), b"1");
        assert!(backend.put_if_absent("a/2", b"2").is_err());
        assert!(
            backend.inner().head("a/2").is_err(),
            "nothing lands after the crash"
        );
    }
}
