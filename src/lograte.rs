//! Rate limit for repeated log lines.
//!
//! Used by the pipeline and the sink, each on its own thread, so a flood of
//! bad frames or a failing disk writes at most one line per kind and
//! interval. It never blocks and never allocates after creation.

use std::time::{Duration, Instant};

/// Interval between two log lines of one kind: 10 s.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Gate for one kind of repeated log line.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// Creates a limiter that lets one line through per `interval`.
    pub const fn new(interval: Duration) -> LogLimiter {
        LogLimiter { interval, last: None, suppressed: 0 }
    }

    /// Returns `Some(suppressed)` when a line may be logged now, with the
    /// number of lines held back since the last one, else counts this line
    /// as suppressed and returns `None`.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.interval => {
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

impl Default for LogLimiter {
    fn default() -> Self {
        LogLimiter::new(LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_suppresses_within_interval() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(limiter.allow(start), Some(0));
        assert_eq!(limiter.allow(start + Duration::from_secs(1)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(9)), None);
        assert_eq!(limiter.allow(start + Duration::from_secs(10)), Some(2));
        assert_eq!(limiter.allow(start + Duration::from_secs(11)), None);
    }
}
