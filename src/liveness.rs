//! Check-ins of long-lived worker threads, read by `/livez`.
//!
//! Every worker calls [`Checkin::beat`] at least every
//! [`CHECKIN_INTERVAL`], also when it has no work. A worker that has not
//! checked in for [`STALL_AFTER`] counts as stalled, and `/livez` fails.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often a healthy worker checks in at the least.
pub const CHECKIN_INTERVAL: Duration = Duration::from_millis(250);

/// Silence after which a worker counts as stalled. Long enough to ride out a
/// slow fsync, short enough for a health check to catch a deadlock.
pub const STALL_AFTER: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Slot {
    name: String,
    last_beat_ms: AtomicU64,
    finished: AtomicBool,
}

/// Registry of worker check-ins.
#[derive(Debug)]
pub struct Liveness {
    origin: Instant,
    slots: Mutex<Vec<Arc<Slot>>>,
}

/// Handle a worker uses to check in. Dropping it marks the worker finished,
/// so a thread that exits on purpose does not count as stalled.
#[derive(Debug)]
pub struct Checkin {
    origin: Instant,
    slot: Arc<Slot>,
}

/// State of one worker at the time of a [`Liveness::snapshot`].
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerState {
    /// Thread name.
    pub name: String,
    /// Time since the last check-in.
    pub silent_for: Duration,
    /// Whether the worker has exited.
    pub finished: bool,
}

impl Default for Liveness {
    fn default() -> Self {
        Liveness { origin: Instant::now(), slots: Mutex::new(Vec::new()) }
    }
}

impl Liveness {
    /// Creates an empty registry.
    pub fn new() -> Liveness {
        Liveness::default()
    }

    /// Registers a worker and returns its check-in handle. The worker counts
    /// as checked in now.
    pub fn register(&self, name: &str) -> Checkin {
        let slot = Arc::new(Slot {
            name: name.to_string(),
            last_beat_ms: AtomicU64::new(elapsed_ms(self.origin)),
            finished: AtomicBool::new(false),
        });
        let mut slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slots.retain(|old| !old.finished.load(Ordering::Relaxed));
        slots.push(slot.clone());
        Checkin { origin: self.origin, slot }
    }

    /// Returns the state of every registered worker that has not finished.
    pub fn snapshot(&self) -> Vec<WorkerState> {
        let now_ms = elapsed_ms(self.origin);
        let slots = self.slots.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        slots
            .iter()
            .map(|slot| WorkerState {
                name: slot.name.clone(),
                silent_for: Duration::from_millis(
                    now_ms.saturating_sub(slot.last_beat_ms.load(Ordering::Relaxed)),
                ),
                finished: slot.finished.load(Ordering::Relaxed),
            })
            .filter(|state| !state.finished)
            .collect()
    }

    /// Returns the names of workers silent for longer than `limit`.
    pub fn stalled(&self, limit: Duration) -> Vec<String> {
        self.snapshot()
            .into_iter()
            .filter(|state| state.silent_for > limit)
            .map(|state| state.name)
            .collect()
    }
}

impl Checkin {
    /// Records that the worker is alive now.
    pub fn beat(&self) {
        self.slot.last_beat_ms.store(elapsed_ms(self.origin), Ordering::Relaxed);
    }
}

impl Drop for Checkin {
    fn drop(&mut self) {
        self.slot.finished.store(true, Ordering::Relaxed);
    }
}

fn elapsed_ms(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropped_checkin_is_not_stalled() {
        let liveness = Liveness::new();
        let checkin = liveness.register("sink");
        assert_eq!(liveness.snapshot().len(), 1);
        drop(checkin);
        assert!(liveness.snapshot().is_empty());
        assert!(liveness.stalled(Duration::ZERO).is_empty());
    }

    #[test]
    fn silent_worker_is_stalled() {
        let liveness = Liveness::new();
        let _checkin = liveness.register("pipeline");
        let deadline = Instant::now() + Duration::from_secs(5);
        while liveness.stalled(Duration::from_millis(5)).is_empty() {
            assert!(Instant::now() < deadline, "worker never counted as stalled");
            std::thread::yield_now();
        }
        assert_eq!(liveness.stalled(Duration::from_millis(5)), vec!["pipeline".to_string()]);
    }
}
