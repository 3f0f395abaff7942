//! Adaptive NOTIFY pacing (`[sync] pacing = "adaptive"`): the dispatcher keeps the re-syncs in
//! flight — phones notified that have not fetched their main file yet — under a window that
//! follows what the phone listener is serving.
//!
//! [`FetchLatency`] is the signal: every phone request adds its handler latency to a small
//! histogram of atomic counters (one `fetch_add` on the phone path, no lock). Every
//! [`TICK`] the dispatcher takes the histogram's p99 over the interval and steps a [`Window`]:
//! while the p99 stays within the configured bound the window grows (doubling at first, then
//! additively), when it goes over the bound the window halves. `notify_rate` stays the ceiling
//! on the send rate; a re-sync whose phone does not fetch within [`AWAIT_TIMEOUT`] gives its
//! place back, so the window never stalls on phones that went away.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How often the window is stepped.
pub(crate) const TICK: Duration = Duration::from_millis(50);
/// A notified phone that has not fetched within this gives its place in the window back (its
/// NOTIFY is still resent on the usual `ack_timeout_s` schedule).
pub(crate) const AWAIT_TIMEOUT: Duration = Duration::from_secs(15);
/// The window's floor and its first value.
pub(crate) const MIN_WINDOW: f64 = 4.0;
/// The window's ceiling (re-syncs in flight).
pub(crate) const MAX_WINDOW: f64 = 4096.0;

/// Buckets per power of two of the latency histogram (a p99 is known to within 2^(1/4) ≈ 19 %).
const SUB: u32 = 4;
/// Microseconds up to 2^28 (≈ 268 s); longer requests land in the last bucket.
const BUCKETS: usize = (28 * SUB) as usize;

/// Phone request latencies since the last [`FetchLatency::take_p99`], as a lock-free histogram.
pub(crate) struct FetchLatency {
    buckets: [AtomicU64; BUCKETS],
}

impl Default for FetchLatency {
    fn default() -> Self {
        FetchLatency {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// The bucket of `us` microseconds: `SUB` buckets per power of two.
fn bucket(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros();
    let m = (us >> (e - 2)) & 3;
    ((e * SUB + m as u32) as usize - 4).min(BUCKETS - 1)
}

/// The upper bound, in microseconds, of bucket `i`.
fn upper(i: usize) -> u64 {
    if i < 4 {
        return i as u64 + 1;
    }
    let i = i as u32 + 4;
    let (e, m) = (i / SUB, i % SUB);
    (4 + m as u64 + 1) << (e - 2)
}

impl FetchLatency {
    /// One phone request took `d` (the phone path: one atomic add).
    pub(crate) fn record(&self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// The p99 of the requests since the last call (an upper bound, within one bucket), and
    /// how many there were; `None` when there were none. Starts the next interval.
    pub(crate) fn take_p99(&self) -> Option<(Duration, u64)> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        // The rank of the 99th percentile, rounded up: with few samples it is the largest.
        let rank = total - total / 100;
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some((Duration::from_micros(upper(i)), total));
            }
        }
        None
    }
}

/// The window of re-syncs in flight (AIMD with a slow start).
#[derive(Clone, Debug)]
pub(crate) struct Window {
    size: f64,
    bound: Duration,
    slow_start: bool,
}

impl Window {
    /// A window that keeps the phone listener's p99 at or under `bound`.
    pub(crate) fn new(bound: Duration) -> Window {
        Window {
            size: MIN_WINDOW,
            bound,
            slow_start: true,
        }
    }

    /// Re-syncs that may be in flight now (at least one: pacing never stalls).
    pub(crate) fn limit(&self) -> usize {
        self.size as usize
    }

    /// One control step. `p99`: the phone listener's over the last interval (`None`: it served
    /// nothing); `in_flight`: the re-syncs now outstanding. The window grows only when it is
    /// what limits the sends (at least half in use), halves when the p99 is over the bound, and
    /// stays between [`MIN_WINDOW`] and [`MAX_WINDOW`].
    pub(crate) fn step(&mut self, p99: Option<Duration>, in_flight: usize) {
        match p99 {
            Some(p) if p > self.bound => {
                self.slow_start = false;
                self.size = (self.size / 2.0).max(MIN_WINDOW);
            }
            _ if (in_flight as f64) * 2.0 >= self.size => {
                self.size = if self.slow_start {
                    self.size * 2.0
                } else {
                    self.size + (self.size / 8.0).max(1.0)
                }
                .min(MAX_WINDOW);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_millis(50);
    const LOW: Option<Duration> = Some(Duration::from_millis(5));
    const HIGH: Option<Duration> = Some(Duration::from_millis(200));

    #[test]
    fn the_window_grows_while_latency_stays_under_the_bound() {
        let mut w = Window::new(BOUND);
        let first = w.limit();
        for _ in 0..3 {
            let full = w.limit();
            w.step(LOW, full);
        }
        assert_eq!(w.limit(), first * 8, "doubles while in slow start");
        // Nothing served (no samples) while the window is used: still grows.
        let full = w.limit();
        w.step(None, full);
        assert_eq!(w.limit(), first * 16);
    }

    #[test]
    fn the_window_backs_off_when_latency_rises_then_grows_additively() {
        let mut w = Window::new(BOUND);
        for _ in 0..5 {
            let full = w.limit();
            w.step(LOW, full);
        }
        let big = w.limit();
        w.step(HIGH, big);
        assert_eq!(w.limit(), big / 2, "halved");
        let half = w.limit();
        w.step(LOW, half);
        assert_eq!(
            w.limit(),
            half + half / 8,
            "additive once it has backed off"
        );
        for _ in 0..20 {
            w.step(HIGH, 0);
        }
        assert_eq!(w.limit(), MIN_WINDOW as usize, "never below the floor");
    }

    #[test]
    fn the_window_respects_its_ceiling_and_does_not_grow_unused() {
        let mut w = Window::new(BOUND);
        for _ in 0..1000 {
            let full = w.limit();
            w.step(LOW, full);
        }
        assert_eq!(w.limit(), MAX_WINDOW as usize);
        let mut idle = Window::new(BOUND);
        for _ in 0..100 {
            idle.step(LOW, 0);
        }
        assert_eq!(idle.limit(), MIN_WINDOW as usize, "no use, no growth");
    }

    #[test]
    fn the_window_never_stalls() {
        let mut w = Window::new(BOUND);
        for i in 0..500 {
            w.step(if i % 3 == 0 { LOW } else { HIGH }, w.limit());
            assert!(w.limit() >= 1);
        }
    }

    #[test]
    fn the_p99_comes_from_the_last_interval_only() {
        let l = FetchLatency::default();
        assert_eq!(l.take_p99(), None, "nothing served");
        for _ in 0..990 {
            l.record(Duration::from_micros(300));
        }
        for _ in 0..10 {
            l.record(Duration::from_millis(80));
        }
        let (p99, n) = l.take_p99().unwrap();
        assert_eq!(n, 1000);
        assert!(
            p99 >= Duration::from_micros(300) && p99 < Duration::from_micros(400),
            "{p99:?}"
        );
        l.record(Duration::from_millis(80));
        let (p99, n) = l.take_p99().unwrap();
        assert_eq!(n, 1);
        assert!(
            p99 >= Duration::from_millis(80) && p99 < Duration::from_millis(96),
            "{p99:?}"
        );
        assert_eq!(l.take_p99(), None);
    }

    #[test]
    fn every_latency_is_within_its_buckets_bounds() {
        for us in (0..5000).chain([1 << 20, (1 << 20) + 12345, 1 << 27]) {
            let i = bucket(us);
            assert!(us < upper(i), "{us} < upper({i}) = {}", upper(i));
            assert!(i == 0 || us >= upper(i - 1), "{us} >= upper({})", i - 1);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }
}
