//! Which way a large file's whole blocks go: directly to the device or through the page
//! cache, chosen write by write by what each way has cost lately ([`Routes`]). The writes
//! themselves are made by [`DirectFile`](super::direct::DirectFile).

use std::time::Duration;

/// The two ways whole blocks can reach a large file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Route {
    /// `O_DIRECT`: the write returns once the device has the bytes.
    Direct = 0,
    /// Through the page cache: the write returns once the bytes are copied there.
    Buffered = 1,
}

/// Bytes of a file written directly before buffered writes are tried: a file that size is
/// over before the choice would pay back, and smaller files' writes stay predictable.
const WARM_UP: u64 = 64 << 20;

/// After the warm-up, the dearer route is taken once in `PROBE_EVERY * r * r` writes (at
/// most [`PROBE_MOST`]), `r` being how many times the cheaper route's cost it had, so that
/// its cost stays known as the machine's state changes. The probes then cost at most 1/64
/// of the writing time, at `r = 2`.
const PROBE_EVERY: f64 = 16.0;

/// The longest run of writes between two probes.
const PROBE_MOST: f64 = 1024.0;

/// The write size whose cost weighs in full (a quarter of the average, a half for a
/// probe); a smaller write weighs in proportion to its bytes. Costs are per byte, and a
/// write's fixed latency makes a small write dear per byte: an 8 KiB direct write (a block
/// two blobs share) took 0.8 ms, 100 ns a byte against the 1 ns of the 1 MiB writes around
/// it, and weighed in full it made direct writes look 16 times dearer than they were, so
/// the restore went buffered (docs/PERFORMANCE.md, session 40).
const FULL_WEIGHT_BYTES: f64 = (1 << 20) as f64;

/// A write counts as costing at most this many times its route's average: one write
/// stalled behind something else moves the average less than twofold, where a lasting
/// change still takes over within a few writes (a route 40 times dearer, within three).
const SPIKE_LIMIT: f64 = 4.0;

/// Picks the route of each write of a large file's whole blocks by what each route has cost
/// per byte lately, as a writing thread waits for it.
///
/// Neither route is faster everywhere. On one benchmark virtual machine, buffered writes of
/// 2 GiB took 5.5 s (each new page-cache page faulted in the host too) and direct ones 1 s;
/// on another, buffered 1.4 s and direct 5.4 s (a slow disk behind a fast page cache).
/// A buffered write is also slowed once the kernel throttles writers with too much dirty
/// memory, which the measure sees. Writes start direct ([`WARM_UP`]), then each route is
/// measured and the cheaper one taken, but for rare probes of the other ([`PROBE_EVERY`]).
///
/// A probe runs alone: a write overlapping the other route's may wait for it (ext4 holds
/// the file's lock through a buffered write, and a direct write holds it shared), which
/// would make the route in use look cheap and the probed one dear. So no write starts
/// while a probe waits or runs ([`Routes::probing`]), and the probe starts once the writes
/// in flight are done. The route in use has its writing threads side by side, each write
/// taking longer for sharing the disk or the lock, so its cost is divided by the writes
/// that were in flight with it. Each route's cost is a moving average over its recent
/// bytes: a write weighs by its size ([`FULL_WEIGHT_BYTES`]) and counts as at most a few
/// times the average ([`SPIKE_LIMIT`]).
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// Bytes written so far, both routes.
    written: u64,
    /// Nanoseconds per byte of each route's recent writes (a moving average), once known.
    cost: [Option<f64>; 2],
    /// Writes since the dearer route was last taken.
    since_probe: u32,
    /// Writes in flight, both routes.
    in_flight: u32,
    /// A probe was chosen and has not been recorded yet.
    probe_pending: bool,
}

/// A write's route, and what [`Routes::record`] needs to weigh its time.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ticket {
    /// The route to take.
    pub route: Route,
    /// Taken to measure the dearer (or unmeasured) route.
    pub probe: bool,
    /// Writes in flight when this one started, itself included.
    sharing: u32,
}

impl Routes {
    /// The route for the next write; its [`Ticket`] goes back to [`Routes::record`]. Call
    /// only when not [`Routes::probing`]; a probe's write waits for [`Routes::is_alone`].
    pub fn choose(&mut self) -> Ticket {
        let (route, probe) = self.pick();
        self.in_flight += 1;
        self.probe_pending |= probe;
        Ticket {
            route,
            probe,
            sharing: self.in_flight,
        }
    }

    /// A probe waits or runs: no other write may start.
    pub fn probing(&self) -> bool {
        self.probe_pending
    }

    /// No write is in flight but the caller's.
    pub fn is_alone(&self) -> bool {
        self.in_flight <= 1
    }

    fn pick(&mut self) -> (Route, bool) {
        if self.written < WARM_UP {
            return (Route::Direct, false);
        }
        let [Some(direct), Some(buffered)] = self.cost else {
            return match self.cost[0] {
                None => (Route::Direct, false),
                Some(_) => (Route::Buffered, true),
            };
        };
        let (cheaper, dearer) = if buffered < direct {
            ((Route::Buffered, buffered), (Route::Direct, direct))
        } else {
            ((Route::Direct, direct), (Route::Buffered, buffered))
        };
        let ratio = dearer.1 / cheaper.1.max(f64::MIN_POSITIVE);
        self.since_probe += 1;
        if f64::from(self.since_probe) >= (PROBE_EVERY * ratio * ratio).min(PROBE_MOST) {
            self.since_probe = 0;
            return (dearer.0, true);
        }
        (cheaper.0, false)
    }

    /// Records that the write `ticket` was for, of `bytes`, took `elapsed` (0 bytes for one
    /// that failed).
    pub fn record(&mut self, ticket: Ticket, bytes: u64, elapsed: Duration) {
        // The writes it shared the disk or the lock with: those at its start or its end.
        let sharing = if ticket.probe {
            self.probe_pending = false;
            1
        } else {
            ticket.sharing.max(self.in_flight).max(1)
        };
        self.in_flight = self.in_flight.saturating_sub(1);
        self.written += bytes;
        if bytes == 0 {
            return;
        }
        let cost = elapsed.as_nanos() as f64 / bytes as f64 / f64::from(sharing);
        let slot = &mut self.cost[ticket.route as usize];
        *slot = Some(match *slot {
            // A probe of FULL_WEIGHT_BYTES weighs half (it is rare), a write of the route
            // in use a quarter: a few writes follow a change, one slow write does not flip
            // the choice. The part of the average that stays shrinks with each byte.
            Some(average) => {
                let kept: f64 = if ticket.probe { 0.5 } else { 0.75 };
                let weight = 1.0 - kept.powf(bytes as f64 / FULL_WEIGHT_BYTES);
                average + (cost.min(average * SPIKE_LIMIT) - average) * weight
            }
            None => cost,
        });
    }
}

#[cfg(test)]
impl Routes {
    /// Past the warm-up, with both routes' costs known (nanoseconds per byte).
    pub(super) fn measured(direct: f64, buffered: f64) -> Self {
        Self {
            written: WARM_UP,
            cost: [Some(direct), Some(buffered)],
            ..Self::default()
        }
    }

    /// The next write probes.
    pub(super) fn probe_next(&mut self) {
        self.since_probe = u32::MAX - 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size the writes below are recorded with: a write that weighs in full.
    const BLOCK: u64 = FULL_WEIGHT_BYTES as u64;

    /// The routes chosen for `writes` writes of one block each, a write by a route recorded
    /// as costing `cost[route]` nanoseconds per byte (direct, then buffered).
    fn drive(routes: &mut Routes, writes: usize, cost: [u64; 2]) -> Vec<Route> {
        (0..writes)
            .map(|_| {
                let ticket = routes.choose();
                let route = ticket.route;
                let per_byte = cost[route as usize];
                routes.record(ticket, BLOCK, Duration::from_nanos(per_byte * BLOCK));
                route
            })
            .collect()
    }

    fn count(routes: &[Route], route: Route) -> usize {
        routes.iter().filter(|r| **r == route).count()
    }

    #[test]
    fn writes_go_direct_until_the_warm_up_then_by_cost() {
        let mut routes = Routes::default();
        let warm_up = drive(&mut routes, (WARM_UP / BLOCK) as usize, [5, 5]);
        assert!(warm_up.iter().all(|r| *r == Route::Direct), "{warm_up:?}");

        // Buffered writes cost a fifth: after one probe, nearly all go buffered.
        let chosen = drive(&mut routes, 2000, [5, 1]);
        assert_eq!(
            chosen[0],
            Route::Buffered,
            "the untried route is tried first"
        );
        let direct = count(&chosen, Route::Direct);
        assert!((1..=10).contains(&direct), "{direct} direct probes of 2000");

        // The page cache fills and buffered writes slow down 40-fold: direct takes over
        // after three slow ones (the first four writes may hold a probe and those three).
        let chosen = drive(&mut routes, 2000, [5, 40]);
        assert_eq!(
            chosen[4..14],
            [Route::Direct; 10][..],
            "{:?}",
            &chosen[..14]
        );
        let buffered = count(&chosen, Route::Buffered);
        assert!(
            (1..=10).contains(&buffered),
            "{buffered} buffered probes of 2000"
        );
    }

    #[test]
    fn a_probe_runs_alone_and_writes_side_by_side_are_weighed_by_their_sharing() {
        let mut routes = Routes::measured(5.0, 1.0);
        let nanos = |per_byte: u64| Duration::from_nanos(per_byte * BLOCK);
        // Two buffered writes side by side, each taking twice its own time.
        let (first, second) = (routes.choose(), routes.choose());
        assert_eq!(
            (first.route, second.route),
            (Route::Buffered, Route::Buffered)
        );
        assert!(!routes.is_alone());
        routes.record(first, BLOCK, nanos(2));
        routes.record(second, BLOCK, nanos(2));
        assert_eq!(routes.cost, [Some(5.0), Some(1.0)]);

        routes.probe_next();
        let probe = routes.choose();
        assert_eq!(probe.route, Route::Direct);
        assert!(routes.probing() && routes.is_alone());
        routes.record(probe, BLOCK, nanos(9));
        assert!(!routes.probing());
        assert_eq!(routes.cost, [Some(7.0), Some(1.0)]);

        // Alone, a buffered write 101 times dearer counts as four times: one stall does not
        // flip the choice.
        let alone = routes.choose();
        routes.record(alone, BLOCK, nanos(101));
        assert_eq!(routes.cost, [Some(7.0), Some(1.75)]);
        let next = routes.choose();
        assert_eq!(next.route, Route::Buffered);
        routes.record(next, 0, Duration::ZERO);
        assert_eq!(routes.written, WARM_UP + 4 * BLOCK);
        assert_eq!(routes.in_flight, 0);
    }

    #[test]
    fn a_write_weighs_by_its_bytes() {
        // An 8 KiB write at 100 ns a byte (its fixed latency, spread over few bytes) barely
        // moves the average of 1 MiB writes at 1 ns a byte; a 1 MiB one moves it by a
        // quarter of its (limited) difference.
        let mut routes = Routes::measured(1.0, 5.0);
        let small = routes.choose();
        assert_eq!(small.route, Route::Direct);
        routes.record(small, 8192, Duration::from_nanos(100 * 8192));
        let direct = routes.cost[0].expect("measured");
        assert!((1.0..1.01).contains(&direct), "{direct}");
        let large = routes.choose();
        routes.record(large, BLOCK, Duration::from_nanos(100 * BLOCK));
        let moved = routes.cost[0].expect("measured");
        assert!((direct + 0.74..direct + 0.76).contains(&moved), "{moved}");
    }

    #[test]
    fn close_costs_are_probed_more_often_than_far_ones() {
        let probes = |dearer: u64| {
            let mut routes = Routes::default();
            drive(&mut routes, (WARM_UP / BLOCK) as usize, [10, 10]);
            let chosen = drive(&mut routes, 4000, [10, dearer]);
            count(&chosen, Route::Buffered)
        };
        let (close, far) = (probes(12), probes(40));
        assert!(
            close > 2 * far && far >= 3,
            "probes: {close} at 1.2x, {far} at 4x"
        );
    }
}
