//! The adaptive admission limit: how many sagas of one definition this
//! replica lets run at once. Pure: fed each finished saga's latency, it
//! answers with a limit; the service keeps one per definition.
//!
//! Why adaptive. A saga's deadline runs from its creation, and by Little's
//! law a saga's latency is about `in flight / throughput`. A fixed limit is
//! right for one throughput only: 200 in flight finish in ~1 s on SQS and in
//! ~120 s on the AWS emulator under load (measured: 3.4 order sagas/s), which
//! is the example's whole 2-minute deadline — one saga in 400 missed it.
//! Throughput is what the system happens to do (worker replicas, a slow
//! database, a rollout), so the limit follows it: it aims at a latency of
//! [`TARGET_SHARE`] of the saga's own deadline.
//!
//! The rule (a gradient controller, like TCP's congestion window or
//! Netflix's concurrency limits): each finished saga with latency `w` and
//! deadline `d` moves the limit by `g − 1`, where the gradient
//! `g = clamp(target / w, 1/2, 2)` and `target = d × TARGET_SHARE`. About
//! `limit` sagas finish per latency period, so per period the limit is
//! multiplied by about `g`: it doubles at most while sagas are fast and
//! halves at most while they are slow, and stays put at the target.
//! It never grows while fewer than half its slots are used (nothing would
//! test the larger value), so an idle period does not leave a large limit
//! for the next burst to flood. It starts at [`INITIAL_LIMIT`] and stays
//! between [`MIN_LIMIT`] and the configured maximum.

/// A saga should finish within this share of its deadline: the margin
/// leaves room for the tail (retries with backoff, a slow step) above the
/// mean latency the limit steers.
pub const TARGET_SHARE: f64 = 0.25;

/// The limit before any saga has finished: small enough that a first burst
/// on a slow system finishes well within a deadline (20 order sagas take
/// ~6 s on the emulator at its slowest measured rate), and on SQS it
/// reaches 200 within a few seconds of doubling.
pub const INITIAL_LIMIT: u64 = 20;

/// The limit never goes below this, so a definition whose sagas are slow
/// by nature (latency above its target even alone) still makes progress.
pub const MIN_LIMIT: u64 = 10;

/// One definition's admission limit.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveLimit {
    /// The current limit, fractional so that small steps add up.
    limit: f64,
    /// Its bounds.
    min: f64,
    max: f64,
}

impl AdaptiveLimit {
    /// A limit starting at [`INITIAL_LIMIT`], bounded by [`MIN_LIMIT`] and
    /// `max` (both clamped so that `min ≤ max`).
    pub fn new(max: u64) -> AdaptiveLimit {
        let max = max.max(1) as f64;
        let min = (MIN_LIMIT as f64).min(max);
        AdaptiveLimit { limit: (INITIAL_LIMIT as f64).clamp(min, max), min, max }
    }

    /// The number of sagas that may be in flight now.
    pub fn limit(&self) -> u64 {
        self.limit.floor() as u64
    }

    /// A saga finished (completed, compensated or handed to an operator)
    /// `latency_ms` after it was created, with a deadline of `deadline_ms`;
    /// `in_flight` sagas were in flight when it finished, itself included.
    pub fn on_finish(&mut self, latency_ms: u64, deadline_ms: u64, in_flight: u64) {
        let target = deadline_ms as f64 * TARGET_SHARE;
        let gradient = if latency_ms == 0 { 2.0 } else { (target / latency_ms as f64).clamp(0.5, 2.0) };
        if gradient > 1.0 && (in_flight as f64) < self.limit / 2.0 {
            return;
        }
        self.limit = (self.limit + gradient - 1.0).clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `n` finishes of the same latency (deadline 120 s, the limit
    /// fully used) and returns the limit after them.
    fn after(start: &AdaptiveLimit, n: usize, latency_ms: u64) -> u64 {
        let mut l = start.clone();
        for _ in 0..n {
            let used = l.limit();
            l.on_finish(latency_ms, 120_000, used);
        }
        l.limit()
    }

    #[test]
    fn the_limit_follows_latency_against_the_target() {
        let fresh = AdaptiveLimit::new(200);
        assert_eq!(fresh.limit(), INITIAL_LIMIT);
        // (finishes, latency ms, limit after): target is 30 s.
        let cases = [
            (20, 1_000, 40),    // fast: +1 per finish, doubles in one generation
            (200, 1_000, 200),  // and stops at the maximum
            (20, 30_000, 20),   // at the target: stays
            (10, 60_000, 15),   // twice the target: −½ per finish
            (100, 600_000, 10), // far too slow: down to the minimum, not below
            (10, 20_000, 25),   // a bit fast: +½ per finish
        ];
        for (n, latency, want) in cases {
            assert_eq!(after(&fresh, n, latency), want, "{n} finishes at {latency} ms");
        }
    }

    #[test]
    fn an_idle_limit_does_not_grow() {
        let mut l = AdaptiveLimit::new(200);
        for _ in 0..1_000 {
            l.on_finish(100, 120_000, 1);
        }
        assert_eq!(l.limit(), INITIAL_LIMIT, "one saga at a time tests nothing above it");
        // But slowness shrinks it whatever the use.
        l.on_finish(120_000, 120_000, 1);
        assert!(l.limit() < INITIAL_LIMIT);
    }

    #[test]
    fn bounds_hold_for_tiny_maxima() {
        assert_eq!(AdaptiveLimit::new(5).limit(), 5);
        assert_eq!(after(&AdaptiveLimit::new(5), 50, 600_000), 5);
        assert_eq!(AdaptiveLimit::new(0).limit(), 1);
    }

    /// A closed loop: a system that finishes `rate` sagas a second, so a
    /// saga admitted with `n` in flight takes `n / rate` seconds. The limit
    /// settles where the latency meets the target (30 s at a 2 min
    /// deadline), whatever the rate: 3.4/s (the loaded emulator) gives ~100.
    #[test]
    fn a_closed_loop_settles_at_the_target_latency() {
        for (rate, want) in [(3.4_f64, 102_u64), (1.0, 30), (100.0, 200)] {
            let mut l = AdaptiveLimit::new(200);
            for _ in 0..5_000 {
                let n = l.limit();
                l.on_finish((n as f64 / rate * 1000.0) as u64, 120_000, n);
            }
            let got = l.limit();
            assert!(got.abs_diff(want) <= 2, "rate {rate}/s: limit {got}, want about {want}");
        }
    }
}
