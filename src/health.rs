//! Liveness and readiness verdicts, as `application/health+json`.
//!
//! Liveness depends only on this process: every worker thread has checked in
//! recently. Readiness also needs the exchange: every planned connection is
//! open and has seen a frame (data or ping) within the stale threshold, the
//! sink can write, and shutdown has not begun. A `warn` status keeps HTTP 200;
//! an active memory alert gives `warn` on both.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use crate::connection::{SlotState, SlotStatus};
use crate::liveness::{Liveness, STALL_AFTER};
use crate::memory::MemoryStatus;
use crate::sink::SinkStats;

/// Verdict of one check or of a whole report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    /// Healthy.
    Pass,
    /// Degraded but serving; HTTP 200.
    Warn,
    /// Not healthy; HTTP 503.
    Fail,
}

impl Status {
    /// Name used in health JSON.
    pub fn name(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }

    /// HTTP status code of a report with this verdict.
    pub fn http_code(self) -> u16 {
        if self == Status::Fail { 503 } else { 200 }
    }
}

/// One named check.
#[derive(Clone, Debug)]
pub struct Check {
    /// Key in the `checks` object, such as `connection:0`.
    pub name: String,
    /// Verdict.
    pub status: Status,
    /// Explanation for an operator.
    pub output: String,
    /// Measured value, such as a frame age in seconds.
    pub observed: Option<f64>,
    /// Unit of `observed`.
    pub unit: Option<&'static str>,
}

/// A liveness or readiness report.
#[derive(Clone, Debug)]
pub struct Report {
    /// Worst verdict of the checks.
    pub status: Status,
    /// Every check made.
    pub checks: Vec<Check>,
}

impl Report {
    fn from_checks(checks: Vec<Check>) -> Report {
        let status = checks.iter().map(|check| check.status).max().unwrap_or(Status::Pass);
        Report { status, checks }
    }

    /// Renders the report as `application/health+json`.
    pub fn to_json(&self) -> String {
        let mut checks = Map::new();
        for check in &self.checks {
            let mut entry = Map::new();
            entry.insert("status".into(), json!(check.status.name()));
            if !check.output.is_empty() {
                entry.insert("output".into(), json!(check.output));
            }
            if let Some(observed) = check.observed {
                entry.insert("observedValue".into(), json!(observed));
            }
            if let Some(unit) = check.unit {
                entry.insert("observedUnit".into(), json!(unit));
            }
            checks.insert(check.name.clone(), Value::Array(vec![Value::Object(entry)]));
        }
        let body = json!({ "status": self.status.name(), "checks": checks });
        body.to_string()
    }
}

/// Inputs of the health verdicts, shared with the HTTP thread.
#[derive(Debug)]
pub struct Health {
    liveness: Arc<Liveness>,
    slots: Vec<Arc<SlotStatus>>,
    sink: Arc<SinkStats>,
    stale_after: Duration,
    stopping: AtomicBool,
    memory: OnceLock<Arc<MemoryStatus>>,
}

impl Health {
    /// Creates the health state.
    pub fn new(
        liveness: Arc<Liveness>,
        slots: Vec<Arc<SlotStatus>>,
        sink: Arc<SinkStats>,
        stale_after: Duration,
    ) -> Health {
        Health {
            liveness,
            slots,
            sink,
            stale_after,
            stopping: AtomicBool::new(false),
            memory: OnceLock::new(),
        }
    }

    /// Adds the `memory` check, `warn` while a memory alert is active, to
    /// liveness and readiness. Only the first call has an effect.
    pub fn attach_memory(&self, memory: Arc<MemoryStatus>) {
        let _ = self.memory.set(memory);
    }

    /// Marks the start of shutdown: readiness fails from now on.
    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// Whether shutdown has begun.
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// Liveness: every worker thread checked in within [`STALL_AFTER`].
    pub fn live(&self) -> Report {
        let workers = self.liveness.snapshot();
        let stalled: Vec<String> = workers
            .iter()
            .filter(|worker| worker.silent_for > STALL_AFTER)
            .map(|worker| {
                format!("{} silent for {:.1} s", worker.name, worker.silent_for.as_secs_f64())
            })
            .collect();
        let check = if stalled.is_empty() {
            Check {
                name: "workers".into(),
                status: Status::Pass,
                output: String::new(),
                observed: Some(workers.len() as f64),
                unit: None,
            }
        } else {
            Check {
                name: "workers".into(),
                status: Status::Fail,
                output: stalled.join("; "),
                observed: Some(stalled.len() as f64),
                unit: None,
            }
        };
        let mut checks = vec![check];
        if let Some(memory) = self.memory.get() {
            checks.push(memory.health_check());
        }
        Report::from_checks(checks)
    }

    /// Readiness: live, connected, fresh, writable and not shutting down.
    pub fn ready(&self) -> Report {
        let mut checks = self.live().checks;
        if self.is_stopping() {
            checks.push(Check {
                name: "shutdown".into(),
                status: Status::Fail,
                output: "shutting down".into(),
                observed: None,
                unit: None,
            });
        }

        let now_ns = unix_nanos();
        for slot in &self.slots {
            checks.push(self.connection_check(slot, now_ns));
        }

        let sink_check = if self.sink.healthy() {
            Check {
                name: "sink".into(),
                status: Status::Pass,
                output: String::new(),
                observed: None,
                unit: None,
            }
        } else {
            Check {
                name: "sink".into(),
                status: Status::Fail,
                output: self.sink.last_error().unwrap_or_else(|| "sink cannot write".into()),
                observed: None,
                unit: None,
            }
        };
        checks.push(sink_check);
        Report::from_checks(checks)
    }

    fn connection_check(&self, slot: &SlotStatus, now_ns: u64) -> Check {
        let snapshot = slot.snapshot();
        let name = format!("connection:{}", snapshot.slot);
        let age = (snapshot.last_frame_ns > 0)
            .then(|| Duration::from_nanos(now_ns.saturating_sub(snapshot.last_frame_ns)));
        let (status, output) = match (snapshot.state, age) {
            (SlotState::Open, Some(age)) if age <= self.stale_after => {
                (Status::Pass, String::new())
            }
            (SlotState::Open, Some(age)) => (
                Status::Fail,
                format!(
                    "no frame for {:.1} s (stale after {:?})",
                    age.as_secs_f64(),
                    self.stale_after
                ),
            ),
            (SlotState::Open, None) => (Status::Fail, "open, no frame received yet".into()),
            (state, _) => {
                let last = snapshot.last_end.as_deref().unwrap_or("not connected yet");
                (Status::Fail, format!("{}: {last}", state.name()))
            }
        };
        let mut state = match snapshot.connection {
            Some(connection) => format!("{} conn={connection}", snapshot.state.name()),
            None => snapshot.state.name().to_string(),
        };
        if let Some(replacement) = snapshot.replacement {
            state.push_str(&format!(", rotating to conn={replacement}"));
        }
        Check {
            name,
            status,
            output: format!("{} ({state}) {}", snapshot.description, output).trim().to_string(),
            observed: age.map(|age| age.as_secs_f64()),
            unit: age.map(|_| "s"),
        }
    }
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(stale_after: Duration) -> (Health, Arc<SlotStatus>) {
        let slot = Arc::new(SlotStatus::new(0, "legacy 1 stream(s)".into()));
        let health = Health::new(
            Arc::new(Liveness::new()),
            vec![slot.clone()],
            Arc::new(SinkStats::default()),
            stale_after,
        );
        (health, slot)
    }

    #[test]
    fn ready_only_while_frames_are_fresh() {
        let (health, slot) = health(Duration::from_secs(60));
        assert_eq!(health.ready().status, Status::Fail);

        slot.set_state(SlotState::Open, Some(1));
        assert_eq!(health.ready().status, Status::Fail, "open without a frame is not ready");

        slot.last_frame_ns.store(unix_nanos(), Ordering::Relaxed);
        assert_eq!(health.ready().status, Status::Pass);

        slot.last_frame_ns.store(unix_nanos() - 61_000_000_000, Ordering::Relaxed);
        let report = health.ready();
        assert_eq!(report.status, Status::Fail);
        assert!(report.to_json().contains("no frame for"), "{}", report.to_json());
    }

    #[test]
    fn readiness_names_connection_and_rotation() {
        let (health, slot) = health(Duration::from_secs(60));
        slot.set_state(SlotState::Open, Some(4));
        slot.last_frame_ns.store(unix_nanos(), Ordering::Relaxed);
        slot.set_replacement(Some(5));
        let json = health.ready().to_json();
        assert!(json.contains("(open conn=4, rotating to conn=5)"), "{json}");
        slot.set_replacement(None);
        slot.set_state(SlotState::Backoff, None);
        let json = health.ready().to_json();
        assert!(json.contains("(backoff)"), "{json}");
    }

    #[test]
    fn shutdown_fails_readiness_not_liveness() {
        let (health, slot) = health(Duration::from_secs(60));
        slot.set_state(SlotState::Open, Some(1));
        slot.last_frame_ns.store(unix_nanos(), Ordering::Relaxed);
        health.begin_shutdown();
        assert_eq!(health.ready().status, Status::Fail);
        assert_eq!(health.live().status, Status::Pass);
        assert_eq!(health.ready().status.http_code(), 503);
    }

    #[test]
    fn report_json_has_health_fields() {
        let (health, _slot) = health(Duration::from_secs(60));
        let json: Value = serde_json::from_str(&health.ready().to_json()).unwrap();
        assert_eq!(json["status"], "fail");
        assert_eq!(json["checks"]["connection:0"][0]["status"], "fail");
        assert_eq!(json["checks"]["workers"][0]["status"], "pass");
    }

    #[test]
    fn memory_alert_warns_but_stays_200() {
        let (health, slot) = health(Duration::from_secs(60));
        slot.set_state(SlotState::Open, Some(1));
        slot.last_frame_ns.store(unix_nanos(), Ordering::Relaxed);
        let memory = Arc::new(MemoryStatus::new());
        health.attach_memory(memory.clone());
        assert_eq!(health.live().status, Status::Pass);
        memory.set_alert(crate::memory::AlertKind::Leak, true);
        assert_eq!(health.live().status, Status::Warn);
        assert_eq!(health.ready().status, Status::Warn);
        assert_eq!(health.ready().status.http_code(), 200);
        let json: Value = serde_json::from_str(&health.live().to_json()).unwrap();
        assert_eq!(json["checks"]["memory"][0]["status"], "warn");
    }
}
