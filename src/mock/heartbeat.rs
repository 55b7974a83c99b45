//! Server pings and the pong deadline of one connection.
//!
//! State only, owned by the connection thread; it decides when to ping and
//! when a connection has gone too long without the matching pong, but
//! never writes to the socket itself.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Ping schedule and outstanding pings of one connection.
#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    counter: u64,
    /// Payloads of pings still waiting for their pong, oldest first, with
    /// their send times.
    outstanding: VecDeque<(Vec<u8>, Instant)>,
}

impl Heartbeat {
    /// Pings every `interval` from `now`; a ping whose pong has not arrived
    /// after `timeout` ends the connection.
    pub fn new(interval: Duration, timeout: Duration, now: Instant) -> Heartbeat {
        Heartbeat {
            interval,
            timeout,
            next_ping: now + interval,
            counter: 0,
            outstanding: VecDeque::new(),
        }
    }

    /// Returns the payload of a ping to send when one is due at `now`, and
    /// schedules the next one.
    pub fn ping_due(&mut self, now: Instant, unix_ms: u64) -> Option<Vec<u8>> {
        if now < self.next_ping {
            return None;
        }
        self.counter += 1;
        self.next_ping = now + self.interval;
        let payload = format!("{unix_ms}-{}", self.counter).into_bytes();
        self.outstanding.push_back((payload.clone(), now));
        Some(payload)
    }

    /// Records a pong. A pong that echoes an outstanding ping clears it and
    /// every older one; an unsolicited pong clears nothing, as on Binance.
    /// Returns whether it matched.
    pub fn on_pong(&mut self, payload: &[u8]) -> bool {
        match self.outstanding.iter().position(|(sent, _)| sent.as_slice() == payload) {
            Some(index) => {
                self.outstanding.drain(..=index);
                true
            }
            None => false,
        }
    }

    /// Whether the oldest outstanding ping has waited longer than the
    /// timeout at `now`.
    pub fn timed_out(&self, now: Instant) -> bool {
        self.outstanding.front().is_some_and(|(_, sent)| now.duration_since(*sent) > self.timeout)
    }

    /// Moves every deadline `by` later, after a stall during which the
    /// server neither pinged nor read.
    pub fn postpone(&mut self, by: Duration) {
        self.next_ping += by;
        for (_, sent) in &mut self.outstanding {
            *sent += by;
        }
    }

    /// Time of the next ping.
    pub fn next_ping(&self) -> Instant {
        self.next_ping
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_on_interval_and_times_out_without_pong() {
        let start = Instant::now();
        let mut heartbeat = Heartbeat::new(Duration::from_secs(20), Duration::from_secs(60), start);
        assert!(heartbeat.ping_due(start, 1).is_none());
        let payload = heartbeat.ping_due(start + Duration::from_secs(20), 2).unwrap();
        assert!(!heartbeat.timed_out(start + Duration::from_secs(79)));
        assert!(heartbeat.timed_out(start + Duration::from_secs(81)));
        assert!(!heartbeat.on_pong(b"unsolicited"));
        assert!(heartbeat.on_pong(&payload));
        assert!(!heartbeat.timed_out(start + Duration::from_secs(81)));
    }

    #[test]
    fn matching_pong_clears_older_pings() {
        let start = Instant::now();
        let mut heartbeat = Heartbeat::new(Duration::from_secs(1), Duration::from_secs(3), start);
        let _first = heartbeat.ping_due(start + Duration::from_secs(1), 1).unwrap();
        let second = heartbeat.ping_due(start + Duration::from_secs(2), 2).unwrap();
        assert!(heartbeat.on_pong(&second));
        assert!(!heartbeat.timed_out(start + Duration::from_secs(10)));
    }
}
