//! Connection state shared by the scheduler, the readers and the HTTP
//! thread: end reasons, live slot status and reader counters.

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::frame::ConnectionId;
use crate::metrics::{Counter, Exposition, MetricType};

/// Reason a connection ended. The scheduler picks the backoff from this, and
/// the `reason` label of the disconnect counter is [`EndReason::label`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The server sent a close frame.
    ClosedByServer {
        /// Close code, if the frame had one.
        code: Option<u16>,
        /// Close reason text.
        reason: String,
    },
    /// The TCP stream ended without a close frame.
    Eof,
    /// A read or write failed, for example a connection reset.
    Io(String),
    /// TCP connect failed: refused, unreachable, timed out, or DNS failed.
    ConnectFailed(String),
    /// The TLS handshake failed; certificate problems land here.
    Tls {
        /// Metric label from [`crate::tls::failure_label`].
        label: &'static str,
        /// Plain-words explanation.
        message: String,
    },
    /// The server rejected the WebSocket handshake with an HTTP error status.
    Rejected {
        /// HTTP status, such as 429 or 418.
        status: u16,
        /// `Retry-After` of the response.
        retry_after: Option<Duration>,
    },
    /// The server broke the WebSocket protocol (bad frame, invalid UTF-8 in
    /// a text message, reserved bits set).
    Protocol(String),
    /// A message exceeded the configured size limit.
    TooLarge(String),
    /// No frame arrived within the connect timeout while handshaking.
    HandshakeTimeout,
    /// The service closed the connection on purpose (shutdown).
    Stopped,
    /// The service closed it after a make-before-break rotation.
    Rotated,
    /// A watchdog of the timer thread gave up on the connection.
    Watchdog(WatchdogKind),
}

/// Watchdog that ended a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchdogKind {
    /// No frame of any kind within the stale threshold, or within the
    /// data threshold when that is the shorter one.
    Stale,
    /// Frames, but no data frame within the data threshold.
    NoData,
    /// A client ping got no pong within the pong timeout.
    PongTimeout,
    /// A stream with an opt-in threshold stored nothing within it.
    StreamStale(String),
}

impl WatchdogKind {
    /// Label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            WatchdogKind::Stale => "stale",
            WatchdogKind::NoData => "no_data",
            WatchdogKind::PongTimeout => "pong_timeout",
            WatchdogKind::StreamStale(_) => "stream_stale",
        }
    }
}

impl EndReason {
    /// Label for the `reason` of `binance_ingest_disconnects_total`: the
    /// close code as digits, or a word for the other causes.
    pub fn label(&self) -> String {
        match self {
            // Standard and Binance close codes get their own label. Any
            // other code the server sends shares one, so a server cannot
            // grow the metric without bound.
            EndReason::ClosedByServer { code: Some(code @ 1000..=1015), .. } => code.to_string(),
            EndReason::ClosedByServer { code: Some(_), .. } => "close_other".into(),
            EndReason::ClosedByServer { code: None, .. } => "close_without_code".into(),
            EndReason::Eof => "eof".into(),
            EndReason::Io(_) => "io".into(),
            EndReason::ConnectFailed(_) => "connect_failed".into(),
            EndReason::Tls { .. } => "tls".into(),
            EndReason::Rejected { status, .. } => format!("http_{status}"),
            EndReason::Protocol(_) => "protocol".into(),
            EndReason::TooLarge(_) => "too_large".into(),
            EndReason::HandshakeTimeout => "handshake_timeout".into(),
            EndReason::Stopped => "stopped".into(),
            EndReason::Rotated => "rotated".into(),
            EndReason::Watchdog(kind) => kind.label().into(),
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::ClosedByServer { code, reason } => {
                let code = code.map_or_else(|| "none".to_string(), |code| code.to_string());
                write!(f, "closed by server, code={code} reason={reason:?}")
            }
            EndReason::Eof => f.write_str("connection ended without a close frame"),
            EndReason::Io(error) => write!(f, "I/O error: {error}"),
            EndReason::ConnectFailed(error) => write!(f, "connect failed: {error}"),
            EndReason::Tls { message, .. } => f.write_str(message),
            EndReason::Rejected { status, retry_after } => match retry_after {
                Some(wait) => {
                    write!(f, "handshake rejected with HTTP {status}, retry after {wait:?}")
                }
                None => write!(f, "handshake rejected with HTTP {status}"),
            },
            EndReason::Protocol(error) => write!(f, "protocol error: {error}"),
            EndReason::TooLarge(error) => write!(f, "message too large: {error}"),
            EndReason::HandshakeTimeout => f.write_str("handshake timed out"),
            EndReason::Stopped => f.write_str("closed by this service"),
            EndReason::Rotated => f.write_str("closed by this service after rotation"),
            EndReason::Watchdog(WatchdogKind::Stale) => {
                f.write_str("no frame of any kind within the stale or data threshold")
            }
            EndReason::Watchdog(WatchdogKind::NoData) => {
                f.write_str("no data frame within the data threshold")
            }
            EndReason::Watchdog(WatchdogKind::PongTimeout) => {
                f.write_str("no pong within the pong timeout")
            }
            EndReason::Watchdog(WatchdogKind::StreamStale(stream)) => {
                write!(f, "stream {stream} stored nothing within its threshold")
            }
        }
    }
}

/// Lifecycle state of a planned connection slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// TCP, TLS or WebSocket handshake in progress.
    Connecting,
    /// Handshake done, frames flowing or awaited.
    Open,
    /// Waiting out a backoff delay before the next attempt.
    Backoff,
    /// Closing because the service is shutting down.
    Closing,
}

impl SlotState {
    /// Lowercase name for health output.
    pub fn name(self) -> &'static str {
        match self {
            SlotState::Connecting => "connecting",
            SlotState::Open => "open",
            SlotState::Backoff => "backoff",
            SlotState::Closing => "closing",
        }
    }
}

/// Live status of one slot, written by the scheduler and its reader.
#[derive(Debug)]
pub struct SlotStatus {
    /// Position in the connection plan.
    pub slot: usize,
    /// Path family and streams, for health output.
    pub description: String,
    /// Receive time (ns since the epoch) of the last frame of any kind,
    /// pings included, on the current connection; 0 before the first.
    pub last_frame_ns: AtomicU64,
    inner: Mutex<SlotInner>,
}

#[derive(Debug, Clone)]
struct SlotInner {
    state: SlotState,
    connection: Option<ConnectionId>,
    replacement: Option<ConnectionId>,
    last_end: Option<String>,
}

/// Copy of a slot's status for health output.
#[derive(Debug, Clone)]
pub struct SlotSnapshot {
    /// Position in the connection plan.
    pub slot: usize,
    /// Path family and streams.
    pub description: String,
    /// Lifecycle state.
    pub state: SlotState,
    /// Current connection id, if a connection exists.
    pub connection: Option<ConnectionId>,
    /// Connection that is taking over from the current one, during a
    /// make-before-break rotation.
    pub replacement: Option<ConnectionId>,
    /// Receive time of the last frame, ns since the epoch; 0 for none.
    pub last_frame_ns: u64,
    /// Reason the previous connection ended, if one did.
    pub last_end: Option<String>,
}

impl SlotStatus {
    /// Creates the status of a slot that is about to connect.
    pub fn new(slot: usize, description: String) -> SlotStatus {
        SlotStatus {
            slot,
            description,
            last_frame_ns: AtomicU64::new(0),
            inner: Mutex::new(SlotInner {
                state: SlotState::Connecting,
                connection: None,
                replacement: None,
                last_end: None,
            }),
        }
    }

    /// Records a state change.
    pub fn set_state(&self, state: SlotState, connection: Option<ConnectionId>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.state = state;
        inner.connection = connection;
        if state != SlotState::Open {
            self.last_frame_ns.store(0, Ordering::Relaxed);
        }
    }

    /// Records a state change reported by the reader of `connection`, but
    /// only while that connection is the slot's current one. A replacement
    /// opening, or a retired connection closing, during a rotation must not
    /// overwrite the state of the connection that serves the slot.
    pub fn set_state_if_current(&self, state: SlotState, connection: ConnectionId) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if inner.connection != Some(connection) {
            return;
        }
        inner.state = state;
        if state != SlotState::Open {
            self.last_frame_ns.store(0, Ordering::Relaxed);
        }
    }

    /// Records the connection taking over during a rotation, or its end.
    pub fn set_replacement(&self, replacement: Option<ConnectionId>) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.replacement = replacement;
    }

    /// Records why the last connection ended.
    pub fn set_last_end(&self, reason: String) {
        let mut inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.last_end = Some(reason);
    }

    /// Copies the status.
    pub fn snapshot(&self) -> SlotSnapshot {
        let inner = self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        SlotSnapshot {
            slot: self.slot,
            description: self.description.clone(),
            state: inner.state,
            connection: inner.connection,
            replacement: inner.replacement,
            last_frame_ns: self.last_frame_ns.load(Ordering::Relaxed),
            last_end: inner.last_end,
        }
    }
}

/// Live timing of one connection, written by its reader and read by the
/// timer thread. Times are ns since the Unix epoch; 0 means never.
#[derive(Debug, Default)]
pub struct ConnectionClock {
    /// Handshake completed.
    pub opened_ns: AtomicU64,
    /// Last frame of any kind received.
    pub last_frame_ns: AtomicU64,
    /// Last data frame received.
    pub last_data_ns: AtomicU64,
    /// Last client ping sent; 0 while none is waiting for its pong.
    pub ping_outstanding_ns: AtomicU64,
}

/// Upper bounds, in seconds, of the pong round-trip histogram buckets.
pub const PONG_RTT_BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0];

/// A fixed-bucket histogram of durations, lock-free.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; PONG_RTT_BUCKETS.len()],
    count: Counter,
    sum_ns: Counter,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, value: Duration) {
        let seconds = value.as_secs_f64();
        for (bound, bucket) in PONG_RTT_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.inc();
            }
        }
        self.count.inc();
        self.sum_ns.add(u64::try_from(value.as_nanos()).unwrap_or(u64::MAX));
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    fn write(&self, out: &mut Exposition, name: &str, help: &str) {
        out.family(name, MetricType::Histogram, help);
        let bucket = format!("{name}_bucket");
        for (bound, counter) in PONG_RTT_BUCKETS.iter().zip(&self.buckets) {
            out.sample_u64(&bucket, &[("le", &bound.to_string())], counter.get());
        }
        out.sample_u64(&bucket, &[("le", "+Inf")], self.count.get());
        out.sample_f64(&format!("{name}_sum"), &[], self.sum_ns.get() as f64 / 1e9);
        out.sample_u64(&format!("{name}_count"), &[], self.count.get());
    }
}

/// Reasons a connection attempt ends before the WebSocket handshake
/// completes. Each is exported at 0 from start, so `increase()` counts the
/// first failure. A handshake rejected with an HTTP status adds the label
/// `http_<status>`.
pub const CONNECT_FAILURE_REASONS: [&str; 5] =
    ["connect_failed", "tls", "handshake_timeout", "protocol", "io"];

/// Counters keyed by a small set of labels, such as rotation causes.
#[derive(Debug, Default)]
pub struct LabeledCounter(Mutex<Vec<(String, u64)>>);

impl LabeledCounter {
    /// Adds one under `label`.
    pub fn inc(&self, label: &str) {
        let mut table = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        match table.iter_mut().find(|(known, _)| known == label) {
            Some((_, count)) => *count += 1,
            None => table.push((label.to_string(), 1)),
        }
    }

    /// Count under `label`.
    pub fn get(&self, label: &str) -> u64 {
        let table = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.iter().find(|(known, _)| known == label).map_or(0, |(_, count)| *count)
    }

    fn write(&self, out: &mut Exposition, name: &str, label: &str, help: &str) {
        self.write_with_known(out, name, label, help, &[]);
    }

    /// Writes the family with a sample for each of `known`, at 0 until
    /// counted, followed by the other labels counted so far.
    fn write_with_known(
        &self,
        out: &mut Exposition,
        name: &str,
        label: &str,
        help: &str,
        known: &[&str],
    ) {
        out.family(name, MetricType::Counter, help);
        let table = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for value in known {
            let count = table.iter().find(|(seen, _)| seen == value).map_or(0, |(_, count)| *count);
            out.sample_u64(name, &[(label, value)], count);
        }
        for (value, count) in table.iter().filter(|(seen, _)| !known.contains(&seen.as_str())) {
            out.sample_u64(name, &[(label, value)], *count);
        }
    }
}

/// Counters of the reader threads and the scheduler.
#[derive(Debug, Default)]
pub struct ConnectionStats {
    /// Connection attempts started.
    pub attempts: Counter,
    /// Handshakes completed.
    pub connects: Counter,
    /// Connections currently open.
    pub open: Counter,
    /// Data frames received.
    pub frames: Counter,
    /// Payload bytes of data frames received.
    pub bytes: Counter,
    /// Ping frames received from servers.
    pub pings_received: Counter,
    /// Pongs delayed to keep the pong spacing (340 ms). Each one replies to
    /// the latest of the pings received meanwhile.
    pub pongs_delayed: Counter,
    /// Frames dropped because the pipeline queue stayed full.
    pub frames_dropped: Counter,
    /// Batches handed to the pipeline.
    pub batches: Counter,
    /// Current backoff delay being waited out, in milliseconds, summed over slots.
    pub backoff_ms: Counter,
    /// Attempts started after a connection of the slot ended or failed.
    pub reconnect_attempts: Counter,
    /// Attempts started to replace an open connection (rotations).
    pub replacement_attempts: Counter,
    /// Attempts that ended before the WebSocket handshake completed, by
    /// cause (the labels of `disconnects_total`).
    pub connect_failures: LabeledCounter,
    /// Client pings sent.
    pub pings_sent: Counter,
    /// Pongs received for client pings.
    pub pongs_received: Counter,
    /// Client pings whose pong did not come within the pong timeout.
    pub pong_timeouts: Counter,
    /// Round-trip time of client pings.
    pub pong_rtt: Histogram,
    /// Rotations started, by cause (`schedule`, `server_shutdown`).
    pub rotations: LabeledCounter,
    /// Connections ended by a watchdog, by kind.
    pub watchdog_kills: LabeledCounter,
    /// Handshakes rejected with an HTTP status, by status.
    pub rejections: LabeledCounter,
    /// 1 while a slot waits out HTTP 429 or 418, else 0.
    pub rate_limited: Counter,
    /// 1 after HTTP 403 or 451 until a handshake succeeds, else 0.
    pub access_denied: Counter,
    disconnects: Mutex<Vec<(String, u64)>>,
    tls_errors: Mutex<Vec<(&'static str, u64)>>,
}

impl ConnectionStats {
    /// Counts the end of a connection by its reason label: as a disconnect
    /// when it was `established` (the WebSocket handshake completed), else
    /// as a connect failure. A TLS failure also counts by its TLS cause.
    pub fn count_end(&self, reason: &EndReason, established: bool) {
        let label = reason.label();
        if established {
            let mut table =
                self.disconnects.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match table.iter_mut().find(|(known, _)| *known == label) {
                Some((_, count)) => *count += 1,
                None => table.push((label, 1)),
            }
        } else {
            self.connect_failures.inc(&label);
        }

        if let EndReason::Tls { label, .. } = reason {
            let mut table = self.tls_errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match table.iter_mut().find(|(known, _)| known == label) {
                Some((_, count)) => *count += 1,
                None => table.push((label, 1)),
            }
        }
    }

    /// Returns the disconnect count for one reason label.
    pub fn disconnects(&self, label: &str) -> u64 {
        let table = self.disconnects.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        table.iter().find(|(known, _)| known == label).map_or(0, |(_, count)| *count)
    }

    /// Writes the connection metric families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let p = crate::metrics::PREFIX;
        let counters = [
            ("connect_attempts_total", "WebSocket connection attempts started.", &self.attempts),
            ("connects_total", "WebSocket handshakes completed.", &self.connects),
            ("frames_received_total", "Data frames received from the exchange.", &self.frames),
            ("received_bytes_total", "Payload bytes of data frames received.", &self.bytes),
            ("server_pings_total", "Ping frames received from the exchange.", &self.pings_received),
            (
                "pongs_delayed_total",
                "Pongs held back to keep at most 3 a second; each answers the latest ping.",
                &self.pongs_delayed,
            ),
            (
                "frames_dropped_total",
                "Frames dropped by a reader because the pipeline queue stayed full.",
                &self.frames_dropped,
            ),
            ("frame_batches_total", "Frame batches handed to the pipeline.", &self.batches),
        ];
        for (name, help, counter) in counters {
            out.single_u64(&format!("{p}{name}"), MetricType::Counter, help, counter.get());
        }
        out.single_u64(
            &format!("{p}connections_open"),
            MetricType::Gauge,
            "WebSocket connections currently open.",
            self.open.get(),
        );
        out.single_f64(
            &format!("{p}backoff_seconds"),
            MetricType::Gauge,
            "Reconnect delay currently being waited out, summed over connection slots.",
            self.backoff_ms.get() as f64 / 1000.0,
        );

        let name = format!("{p}reconnect_attempts_total");
        out.family(
            &name,
            MetricType::Counter,
            "Connection attempts after a connection ended or failed (kind=reconnect), \
             or to replace an open one in a rotation (kind=replacement).",
        );
        out.sample_u64(&name, &[("kind", "reconnect")], self.reconnect_attempts.get());
        out.sample_u64(&name, &[("kind", "replacement")], self.replacement_attempts.get());

        let lifecycle = [
            ("client_pings_total", "Ping frames sent by this service.", &self.pings_sent),
            (
                "pongs_received_total",
                "Pong frames received for client pings.",
                &self.pongs_received,
            ),
            (
                "pong_timeouts_total",
                "Client pings without a pong within the pong timeout.",
                &self.pong_timeouts,
            ),
        ];
        for (name, help, counter) in lifecycle {
            out.single_u64(&format!("{p}{name}"), MetricType::Counter, help, counter.get());
        }
        out.single_u64(
            &format!("{p}rate_limited"),
            MetricType::Gauge,
            "1 while a connection waits out HTTP 429 or 418 (alert), else 0.",
            self.rate_limited.get(),
        );
        out.single_u64(
            &format!("{p}access_denied"),
            MetricType::Gauge,
            "1 after HTTP 403 or 451 until a handshake succeeds (alert), else 0.",
            self.access_denied.get(),
        );
        self.pong_rtt.write(
            out,
            &format!("{p}pong_rtt_seconds"),
            "Round-trip time from a client ping to its pong.",
        );
        self.rotations.write(
            out,
            &format!("{p}rotations_total"),
            "cause",
            "Make-before-break rotations started, by cause.",
        );
        self.watchdog_kills.write(
            out,
            &format!("{p}watchdog_kills_total"),
            "kind",
            "Connections ended by a watchdog, by kind.",
        );
        self.rejections.write(
            out,
            &format!("{p}handshake_rejections_total"),
            "status",
            "WebSocket handshakes rejected with an HTTP status.",
        );

        self.connect_failures.write_with_known(
            out,
            &format!("{p}connect_failures_total"),
            "reason",
            "Connection attempts that failed before the WebSocket handshake completed, by cause.",
            &CONNECT_FAILURE_REASONS,
        );
        let name = format!("{p}disconnects_total");
        out.family(
            &name,
            MetricType::Counter,
            "Established connections ended, by close code or cause.",
        );
        let table = self.disconnects.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (label, count) in table.iter() {
            out.sample_u64(&name, &[("reason", label)], *count);
        }
        drop(table);

        let name = format!("{p}tls_errors_total");
        out.family(&name, MetricType::Counter, "TLS handshakes that failed, by cause.");
        let table = self.tls_errors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for (label, count) in table.iter() {
            out.sample_u64(&name, &[("reason", label)], *count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_current_connection_changes_slot_state() {
        let slot = SlotStatus::new(0, "legacy 1 stream(s)".into());
        slot.set_state(SlotState::Connecting, Some(4));
        slot.set_state_if_current(SlotState::Open, 5);
        assert_eq!(slot.snapshot().state, SlotState::Connecting, "replacement must not take over");
        slot.set_state_if_current(SlotState::Open, 4);
        assert_eq!(slot.snapshot().state, SlotState::Open);
        assert_eq!(slot.snapshot().connection, Some(4));
        slot.set_state_if_current(SlotState::Closing, 3);
        assert_eq!(slot.snapshot().state, SlotState::Open, "a retired connection closing");
    }

    #[test]
    fn end_reason_labels_use_close_codes() {
        let closed = EndReason::ClosedByServer { code: Some(1001), reason: "going away".into() };
        assert_eq!(closed.label(), "1001");
        let odd = EndReason::ClosedByServer { code: Some(4321), reason: String::new() };
        assert_eq!(odd.label(), "close_other", "server-chosen codes share one label");
        assert_eq!(EndReason::Eof.label(), "eof");
        let rejected = EndReason::Rejected { status: 429, retry_after: None };
        assert_eq!(rejected.label(), "http_429");
    }

    #[test]
    fn disconnects_are_counted_by_label() {
        let stats = ConnectionStats::default();
        stats.count_end(&EndReason::Eof, true);
        stats.count_end(&EndReason::Eof, true);
        stats.count_end(&EndReason::Tls { label: "unknown_issuer", message: "x".into() }, false);
        assert_eq!(stats.disconnects("eof"), 2);
        assert_eq!(stats.disconnects("tls"), 0, "a failed handshake is no disconnect");
        assert_eq!(stats.connect_failures.get("tls"), 1);
        let mut out = Exposition::new();
        stats.write_metrics(&mut out);
        let body = out.finish();
        assert!(body.contains("binance_ingest_disconnects_total{reason=\"eof\"} 2"), "{body}");
        assert!(body.contains("binance_ingest_connect_failures_total{reason=\"tls\"} 1"));
        assert!(body.contains("binance_ingest_connect_failures_total{reason=\"io\"} 0"));
        assert!(body.contains("binance_ingest_tls_errors_total{reason=\"unknown_issuer\"} 1"));
    }

    #[test]
    fn connect_failures_start_at_zero() {
        let mut out = Exposition::new();
        ConnectionStats::default().write_metrics(&mut out);
        let body = out.finish();
        for reason in CONNECT_FAILURE_REASONS {
            let sample =
                format!("binance_ingest_connect_failures_total{{reason=\"{reason}\"}} 0\n");
            assert!(body.contains(&sample), "no {sample} in\n{body}");
        }
        // The list names the labels of the reasons a connect can end with.
        let reasons = [
            EndReason::ConnectFailed(String::new()),
            EndReason::Tls { label: "unknown_issuer", message: String::new() },
            EndReason::HandshakeTimeout,
            EndReason::Protocol(String::new()),
            EndReason::Io(String::new()),
        ];
        for (reason, label) in reasons.iter().zip(CONNECT_FAILURE_REASONS) {
            assert_eq!(reason.label(), label);
        }
    }

    #[test]
    fn reconnect_attempts_are_labeled_by_kind() {
        let stats = ConnectionStats::default();
        stats.reconnect_attempts.inc();
        stats.replacement_attempts.add(2);
        let mut out = Exposition::new();
        stats.write_metrics(&mut out);
        let body = out.finish();
        assert!(body.contains("reconnect_attempts_total{kind=\"reconnect\"} 1"), "{body}");
        assert!(body.contains("reconnect_attempts_total{kind=\"replacement\"} 2"), "{body}");
    }
}
