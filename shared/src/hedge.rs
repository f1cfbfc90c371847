//! When a hedged read asks one more replica.
//!
//! A hedged read asks R replicas and brings in another when R answers have not come within a
//! delay (see `ringkv_net::fanout::read_hedged`). A fixed delay misfires under load: once the
//! median read takes longer than the delay, most reads hedge and cost as much as asking all N.
//! [`HedgePolicy::Percentile`] instead follows the latency reads actually see: the delay is
//! the given percentile of recent quorum latencies, so about that share of reads finish
//! without a hedge whatever the load (the "hedged requests" of Dean and Barroso's *The Tail
//! at Scale*).
//!
//! [`Hedger`] is shared by the callers of one client or router; it is lock-free (atomic
//! counters) and has no clock of its own: callers record the latencies they measured.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long a hedged read waits for R answers before asking another replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HedgePolicy {
    /// Always this long.
    Fixed(Duration),
    /// This percentile (1 to 99) of the latencies of recent reads. Until
    /// [`MIN_SAMPLES`] reads have been recorded there is no estimate, and reads ask all N.
    Percentile(u8),
}

impl HedgePolicy {
    /// Checks the policy's bounds; the error names what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Self::Fixed(d) if d.is_zero() => Err("a fixed hedge delay must be positive".into()),
            Self::Percentile(p) if !(1..=99).contains(&p) => {
                Err(format!("hedge percentile {p} is not between 1 and 99"))
            }
            _ => Ok(()),
        }
    }
}

/// Reads recorded before a [`HedgePolicy::Percentile`] delay is trusted.
pub const MIN_SAMPLES: u32 = 100;

/// Samples the window holds before halving every count, so that old latencies fade: the
/// estimate follows a change in load within a few thousand reads.
pub const WINDOW: u32 = 2048;

/// Latencies below this count as this (finer detail does not matter for a hedge delay).
const FLOOR_US: u64 = 4;
/// Latencies above this count as this (about 67 s, beyond any read timeout).
const CEILING_US: u64 = 1 << 26;
/// Quarter-octave buckets from `FLOOR_US` (log2 = 2) to `CEILING_US` (log2 = 26).
const BUCKETS: usize = 4 * (26 - 2) + 4;

/// A decaying histogram of latencies in quarter-octave buckets (each bucket's bounds are
/// within 19% of each other).
#[derive(Debug)]
pub struct LatencyWindow {
    buckets: [AtomicU32; BUCKETS],
    count: AtomicU32,
}

impl Default for LatencyWindow {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU32::new(0)),
            count: AtomicU32::new(0),
        }
    }
}

/// The bucket holding `us` microseconds.
fn bucket(us: u64) -> usize {
    let v = us.clamp(FLOOR_US, CEILING_US);
    let log = 63 - v.leading_zeros() as usize; // 2..=26
    let quarter = ((v >> (log - 2)) & 3) as usize;
    (log - 2) * 4 + quarter
}

/// The upper bound of bucket `i`, in microseconds.
fn upper_bound_us(i: usize) -> u64 {
    let (log, quarter) = (i / 4 + 2, (i % 4) as u64);
    (5 + quarter) << (log - 2)
}

impl LatencyWindow {
    /// Adds one latency; every [`WINDOW`] samples, halves all counts.
    pub fn record(&self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket(us)].fetch_add(1, Ordering::Relaxed);
        let seen = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        // The caller that fills the window halves it; a concurrent record may land on either
        // side of the halving, which only blurs the estimate by one sample.
        if seen >= WINDOW
            && self
                .count
                .compare_exchange(seen, seen / 2, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            for b in &self.buckets {
                // fetch_update never fails with a closure that always returns Some.
                let _ = b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| Some(c / 2));
            }
        }
    }

    /// The `percentile` (0 to 100) of the recorded latencies: the upper bound of the bucket
    /// holding it. `None` with fewer than [`MIN_SAMPLES`] samples.
    pub fn percentile(&self, percentile: u8) -> Option<Duration> {
        let counts: [u64; BUCKETS] =
            std::array::from_fn(|i| u64::from(self.buckets[i].load(Ordering::Relaxed)));
        let total: u64 = counts.iter().sum();
        if total < u64::from(MIN_SAMPLES) {
            return None;
        }
        let rank = (total * u64::from(percentile.min(100)))
            .div_ceil(100)
            .max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound_us(i)));
            }
        }
        Some(Duration::from_micros(CEILING_US))
    }
}

/// Recompute a percentile delay after this many new samples (it is a scan of the buckets).
const REFRESH_EVERY: u64 = 32;

/// A [`HedgePolicy`] with the latency record it needs; shared by all reads of one client or
/// router.
#[derive(Debug)]
pub struct Hedger {
    policy: HedgePolicy,
    window: LatencyWindow,
    recorded: AtomicU64,
    /// The current percentile delay in microseconds; 0 while there is none.
    cached_us: AtomicU64,
}

impl Hedger {
    /// A hedger following `policy` (check it with [`HedgePolicy::validate`] first).
    pub fn new(policy: HedgePolicy) -> Self {
        Self {
            policy,
            window: LatencyWindow::default(),
            recorded: AtomicU64::new(0),
            cached_us: AtomicU64::new(0),
        }
    }

    /// The policy this hedger follows.
    pub fn policy(&self) -> HedgePolicy {
        self.policy
    }

    /// The delay for the next read, or `None` when there is no estimate yet (the read then
    /// asks all N replicas at once).
    pub fn delay(&self) -> Option<Duration> {
        match self.policy {
            HedgePolicy::Fixed(d) => Some(d),
            HedgePolicy::Percentile(_) => match self.cached_us.load(Ordering::Relaxed) {
                0 => None,
                us => Some(Duration::from_micros(us)),
            },
        }
    }

    /// Records how long a successful read took to reach its quorum. Only a percentile policy
    /// keeps it.
    pub fn record(&self, latency: Duration) {
        let HedgePolicy::Percentile(p) = self.policy else {
            return;
        };
        self.window.record(latency);
        let n = self.recorded.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_multiple_of(REFRESH_EVERY)
            && let Some(d) = self.window.percentile(p)
        {
            let us = u64::try_from(d.as_micros()).unwrap_or(CEILING_US).max(1);
            self.cached_us.store(us, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_cover_the_range_in_order() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(4), 0);
        assert_eq!(bucket(CEILING_US), BUCKETS - 4);
        assert_eq!(bucket(u64::MAX), BUCKETS - 4);
        let mut last = 0;
        for us in 4..100_000u64 {
            let b = bucket(us);
            assert!(b >= last, "bucket of {us} went backwards");
            assert!(us < upper_bound_us(b), "{us} above its bucket's bound");
            if b > 0 {
                assert!(us >= upper_bound_us(b - 1), "{us} below its bucket");
            }
            last = b;
        }
    }

    proptest! {
        #[test]
        fn a_bucket_bound_is_within_a_quarter_octave(us in FLOOR_US..CEILING_US) {
            let bound = upper_bound_us(bucket(us));
            prop_assert!(bound > us);
            prop_assert!(bound as f64 <= us as f64 * 1.25 + 1.0, "{us} -> {bound}");
        }
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let w = LatencyWindow::default();
        assert_eq!(w.percentile(50), None, "no estimate from nothing");
        // 1..=1000 µs, each once: the p50 is 500 µs and the p90 900 µs, up to a bucket.
        for us in 1..=1000u64 {
            w.record(Duration::from_micros(us));
        }
        let p50 = w.percentile(50).unwrap().as_micros() as u64;
        let p90 = w.percentile(90).unwrap().as_micros() as u64;
        assert!((500..=625).contains(&p50), "p50 {p50}");
        assert!((900..=1125).contains(&p90), "p90 {p90}");
        assert!(w.percentile(100).unwrap() >= Duration::from_micros(1000));
    }

    #[test]
    fn the_window_forgets_old_latencies() {
        let w = LatencyWindow::default();
        for _ in 0..WINDOW {
            w.record(Duration::from_millis(10));
        }
        assert!(w.percentile(90).unwrap() >= Duration::from_millis(10));
        // Load drops: after a few windows of 200 µs reads, the p90 follows.
        for _ in 0..4 * WINDOW {
            w.record(Duration::from_micros(200));
        }
        let p90 = w.percentile(90).unwrap();
        assert!(p90 <= Duration::from_micros(250), "p90 stuck at {p90:?}");
        let total: u32 = w.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum();
        assert!(total <= WINDOW, "the window holds {total} samples");
    }

    #[test]
    fn a_percentile_hedger_waits_for_samples_then_follows_them() {
        let h = Hedger::new(HedgePolicy::Percentile(90));
        for _ in 0..MIN_SAMPLES - 1 {
            h.record(Duration::from_millis(1));
        }
        assert_eq!(h.delay(), None, "too few samples: ask all N");
        for _ in 0..2 * REFRESH_EVERY {
            h.record(Duration::from_millis(1));
        }
        let d = h.delay().expect("an estimate after enough samples");
        assert!(
            (Duration::from_millis(1)..=Duration::from_micros(1250)).contains(&d),
            "{d:?}"
        );
    }

    #[test]
    fn a_fixed_hedger_ignores_latencies() {
        let h = Hedger::new(HedgePolicy::Fixed(Duration::from_millis(2)));
        for _ in 0..1000 {
            h.record(Duration::from_micros(100));
        }
        assert_eq!(h.delay(), Some(Duration::from_millis(2)));
    }

    #[test]
    fn policies_are_validated() {
        assert!(HedgePolicy::Fixed(Duration::ZERO).validate().is_err());
        assert!(HedgePolicy::Percentile(0).validate().is_err());
        assert!(HedgePolicy::Percentile(100).validate().is_err());
        assert!(HedgePolicy::Percentile(90).validate().is_ok());
        assert!(
            HedgePolicy::Fixed(Duration::from_micros(1))
                .validate()
                .is_ok()
        );
    }
}
