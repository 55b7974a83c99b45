//! Reconnect delays: capped exponential backoff with full jitter.
//!
//! Pure logic with no clock of its own, so tests drive it step by step. The
//! step counter resets only when the caller says a connection was healthy
//! (it stayed up and delivered data long enough), so a server that accepts
//! and drops at once still gets backed off.

use std::time::{Duration, Instant};

/// Backoff state of one connection slot.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    step: u32,
    rng: Rng,
}

impl Backoff {
    /// Creates a backoff whose n-th delay is drawn uniformly from
    /// `[0, min(cap, base * 2^n)]`.
    pub fn new(base: Duration, cap: Duration, seed: u64) -> Backoff {
        Backoff { base, cap: cap.max(base), step: 0, rng: Rng::new(seed) }
    }

    /// Returns the delay before the next attempt and advances the step.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.step = self.step.saturating_add(1);
        ceiling.mul_f64(self.rng.next_f64())
    }

    /// Upper bound of the next delay.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.step.min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// Number of delays handed out since the last reset.
    pub fn step(&self) -> u32 {
        self.step
    }

    /// Starts again from the first step, after a healthy connection.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

/// Small xorshift64* generator for jitter. Not for anything secret.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Creates a generator; a zero seed is replaced, since xorshift would
    /// stay at zero.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 { 0x9e37_79b9_7f4a_7c15 } else { seed })
    }

    /// Seeds from the clock, the process id and `salt`, so that processes
    /// and connection slots started together do not draw the same delays.
    pub fn from_entropy(salt: u64) -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        Rng::new(nanos ^ pid.rotate_left(32) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Next raw value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform value in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Process-wide cap on connection attempts in a sliding window.
///
/// Binance bans an IP that makes more than 300 connection attempts in
/// 5 minutes. Backoff alone keeps one slot far below that, but many slots
/// failing together could still add up, so every attempt also takes a place
/// here and waits when none is free.
#[derive(Debug)]
pub struct AttemptBudget {
    window: Duration,
    max: usize,
    recent: std::collections::VecDeque<Instant>,
}

impl AttemptBudget {
    /// Creates a budget of `max` attempts per `window`.
    pub fn new(max: usize, window: Duration) -> AttemptBudget {
        AttemptBudget { window, max: max.max(1), recent: std::collections::VecDeque::new() }
    }

    /// Takes a place for an attempt at `now` and returns `None`, or returns
    /// the earliest time a place frees up.
    pub fn try_take(&mut self, now: Instant) -> Option<Instant> {
        while let Some(oldest) = self.recent.front() {
            if now.saturating_duration_since(*oldest) >= self.window {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        if self.recent.len() < self.max {
            self.recent.push_back(now);
            return None;
        }
        self.recent.front().map(|oldest| *oldest + self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_under_doubling_ceiling() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 42);
        let expected = [1, 2, 4, 8, 16, 32, 60, 60, 60];
        for ceiling in expected {
            assert_eq!(backoff.ceiling(), Duration::from_secs(ceiling));
            let delay = backoff.next_delay();
            assert!(delay <= Duration::from_secs(ceiling), "{delay:?} over {ceiling} s");
        }
        assert_eq!(backoff.step(), 9);
    }

    #[test]
    fn reset_returns_to_first_step() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 7);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_delays() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(1), 99);
        let delays: Vec<Duration> = (0..1000).map(|_| backoff.next_delay()).collect();
        let mean = delays.iter().sum::<Duration>() / 1000;
        assert!(mean > Duration::from_millis(400) && mean < Duration::from_millis(600), "{mean:?}");
        let short = delays.iter().filter(|d| **d < Duration::from_millis(100)).count();
        assert!(short > 50 && short < 150, "{short} of 1000 under 100 ms");
    }

    #[test]
    fn huge_step_does_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 1);
        for _ in 0..200 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
    }

    #[test]
    fn attempt_budget_waits_for_window() {
        let start = Instant::now();
        let mut budget = AttemptBudget::new(3, Duration::from_secs(300));
        for i in 0..3 {
            assert_eq!(budget.try_take(start + Duration::from_secs(i)), None);
        }
        let wait = budget.try_take(start + Duration::from_secs(10));
        assert_eq!(wait, Some(start + Duration::from_secs(300)));
        assert_eq!(budget.try_take(start + Duration::from_secs(300)), None);
    }
}
