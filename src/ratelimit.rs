//! Rate limiting of repeated log lines.
//!
//! A fault that repeats thousands of times a second (a full queue, a
//! malformed stream) must leave a trace without flooding the journal: the
//! first occurrence logs, later ones within the interval are counted, and the
//! next line that logs reports how many were suppressed.

use std::time::{Duration, Instant};

/// Allows one log line per interval and counts the rest.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Creates a limiter allowing one line per `interval`.
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter { interval, last: None, suppressed: 0 }
    }

    /// Returns `Some(suppressed)` when a line may be logged now, with the
    /// number of occurrences suppressed since the last logged one; returns
    /// `None` and counts the occurrence otherwise.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_suppressed_lines() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(2)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), Some(2));
        assert_eq!(limiter.allow(start + Duration::from_secs(12)), None);
    }
}
