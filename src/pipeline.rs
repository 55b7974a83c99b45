//! The pipeline thread: parses frame batches, drops duplicates, records
//! gaps and appends records to the cache ring.
//!
//! Runs on its own thread, fed by the readers through a bounded channel. It
//! appends each frame batch to the ring under one lock and never waits for
//! the sink. It takes no lock per frame: per-stream counters are atomics,
//! and the shared per-stream table is locked only when a new stream appears.
//! It never stops for bad input: malformed frames and gaps are counted,
//! logged at a limited rate, and skipped or recorded. During a
//! make-before-break overlap it copies the new connection's events that run
//! ahead of the old one, at most [`MAX_HELD_EVENTS`] per stream, until the
//! two connections' sequences meet, the overlap deadline passes or the old
//! connection ends (a reader's end marker follows its last frames). Events
//! held for a replacement that ends first are kept and stored in key order
//! unless the old connection delivers them itself.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::frame::{ConnectionId, FrameBatch};
use crate::liveness::{CHECKIN_INTERVAL, Checkin};
use crate::lograte::LogLimiter;
use crate::metrics::{Counter, Exposition, MetricType, PREFIX};
use crate::parse::{Event, Ids, ParseErrorKind, Parsed, parse_frame};
use crate::record::{self, RecordKind};
use crate::ring::{RecordBatch, Ring};
use crate::sequence::{Rule, StreamSequence, Verdict};
use crate::venue::Venue;

/// Settings of the pipeline.
#[derive(Clone, Debug)]
pub struct PipelineSettings {
    /// Venue, written into every record and deciding the depth gap rule.
    pub venue: Venue,
    /// Payload digests kept per stream for streams without ids.
    pub dedup_window: usize,
    /// Streams whose sequence and counters are tracked. Events of further
    /// streams are still stored, but not checked for duplicates or gaps, and
    /// counted in `binance_ingest_untracked_events_total`.
    pub max_streams: usize,
}

/// Events of the new connection held per stream during an overlap, at
/// most. Past this the stream switches without proof, and a hole before the
/// held events becomes a gap record.
pub const MAX_HELD_EVENTS: usize = 10_000;

/// A control event the pipeline found in the data, for the scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// The server announced that it will close this connection soon.
    ServerShutdown {
        /// Connection that carried the announcement.
        connection: ConnectionId,
    },
    /// Every stream of an overlap switched to the new connection, so the
    /// old one may close.
    OverlapDone {
        /// Connection being replaced.
        old: ConnectionId,
        /// Its replacement.
        new: ConnectionId,
        /// False when the deadline passed before every stream met.
        met: bool,
    },
}

/// A request from the scheduler to the pipeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Control {
    /// `new` is about to open as the replacement of `old`, carrying
    /// `streams`. Sent before the replacement's reader starts.
    BeginOverlap {
        /// Connection being replaced; the authority until the streams meet.
        old: ConnectionId,
        /// Its replacement.
        new: ConnectionId,
        /// Streams both connections carry.
        streams: Vec<String>,
        /// Time from the new connection's open, and again from its first
        /// data frame, until every stream switches, met or not.
        timeout: Duration,
    },
    /// The replacement's handshake completed. Its overlap expires after
    /// the timeout from now unless its first data frame restarts it, so a
    /// replacement that carries only quiet streams still takes over.
    ReplacementOpened {
        /// The replacement.
        new: ConnectionId,
    },
    /// The replacement failed or ended; `old` stays the authority. The
    /// replacement's held events are kept and stored in key order as the
    /// old connection passes them, or all at once when it ends.
    CancelOverlap {
        /// The failed replacement.
        new: ConnectionId,
    },
}

/// Counters of one tracked stream.
#[derive(Debug, Default)]
struct StreamCounters {
    events: Counter,
    duplicates: Counter,
    gaps: Counter,
    missing: Counter,
    last_received_ns: AtomicU64,
}

/// Counters of the pipeline, read by the HTTP threads.
#[derive(Debug, Default)]
pub struct PipelineStats {
    frames: Counter,
    replies: Counter,
    server_shutdowns: Counter,
    notices_dropped: Counter,
    untracked_events: Counter,
    overlaps_met: Counter,
    overlaps_expired: Counter,
    overlaps_old_ended: Counter,
    overlaps_superseded: Counter,
    overlaps_stopped: Counter,
    held_events: Counter,
    parse_errors: [Counter; ParseErrorKind::ALL.len()],
    /// At most `max_streams` entries; locked only to add a stream and to
    /// render metrics.
    streams: Mutex<HashMap<Box<str>, Arc<StreamCounters>>>,
}

impl PipelineStats {
    /// Creates zeroed statistics.
    pub fn new() -> PipelineStats {
        PipelineStats::default()
    }

    fn stream_table(&self) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Arc<StreamCounters>>> {
        // The table holds only counters, so a poisoned lock is still usable.
        self.streams.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn register(&self, stream: &str) -> Arc<StreamCounters> {
        let counters = Arc::new(StreamCounters::default());
        self.stream_table().insert(stream.into(), counters.clone());
        counters
    }

    /// Frames received, of every kind.
    pub fn frames_total(&self) -> u64 {
        self.frames.get()
    }

    /// Frames counted under `kind`.
    pub fn parse_errors(&self, kind: ParseErrorKind) -> u64 {
        self.parse_errors[kind.index()].get()
    }

    /// Returns each tracked stream with the receive time (ns since the Unix
    /// epoch) of its newest stored event, sorted by stream name. Streams that
    /// have stored nothing yet are left out.
    pub fn stream_last_event(&self) -> Vec<(String, u64)> {
        let mut streams: Vec<(String, u64)> = self
            .stream_table()
            .iter()
            .map(|(stream, counters)| {
                (stream.to_string(), counters.last_received_ns.load(Ordering::Relaxed))
            })
            .filter(|(_, received_ns)| *received_ns > 0)
            .collect();
        streams.sort();
        streams
    }

    /// Writes the pipeline's metric families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let name = |suffix: &str| format!("{PREFIX}{suffix}");
        out.single_u64(
            &name("frames_total"),
            MetricType::Counter,
            "WebSocket data frames received by the pipeline, of every kind.",
            self.frames.get(),
        );
        out.single_u64(
            &name("replies_total"),
            MetricType::Counter,
            "Replies to requests (result or error frames), not stored.",
            self.replies.get(),
        );
        out.single_u64(
            &name("server_shutdown_notices_total"),
            MetricType::Counter,
            "serverShutdown announcements received.",
            self.server_shutdowns.get(),
        );
        out.single_u64(
            &name("notices_dropped_total"),
            MetricType::Counter,
            "Notices to the scheduler dropped because its queue was full or closed.",
            self.notices_dropped.get(),
        );
        out.single_u64(
            &name("untracked_events_total"),
            MetricType::Counter,
            "Events stored without duplicate or gap checks because the stream table was full.",
            self.untracked_events.get(),
        );
        let overlaps = name("overlaps_total");
        out.family(&overlaps, MetricType::Counter, "Connection overlaps finished, by outcome.");
        out.sample_u64(&overlaps, &[("outcome", "met")], self.overlaps_met.get());
        out.sample_u64(&overlaps, &[("outcome", "deadline")], self.overlaps_expired.get());
        out.sample_u64(&overlaps, &[("outcome", "old_ended")], self.overlaps_old_ended.get());
        out.sample_u64(&overlaps, &[("outcome", "superseded")], self.overlaps_superseded.get());
        out.sample_u64(&overlaps, &[("outcome", "stopped")], self.overlaps_stopped.get());
        out.single_u64(
            &name("overlap_held_events_total"),
            MetricType::Counter,
            "Events of a new connection held until its sequence met the old one's.",
            self.held_events.get(),
        );
        let parse_errors = name("parse_errors_total");
        out.family(&parse_errors, MetricType::Counter, "Frames skipped as not market data.");
        for kind in ParseErrorKind::ALL {
            let value = self.parse_errors[kind.index()].get();
            out.sample_u64(&parse_errors, &[("kind", kind.label())], value);
        }
        self.write_stream_metrics(out);
    }

    fn write_stream_metrics(&self, out: &mut Exposition) {
        let mut streams: Vec<(Box<str>, Arc<StreamCounters>)> = self
            .stream_table()
            .iter()
            .map(|(stream, counters)| (stream.clone(), counters.clone()))
            .collect();
        streams.sort_by(|left, right| left.0.cmp(&right.0));
        let families: [(&str, &str, CounterOf); 4] = [
            ("events_total", "Events stored, per stream.", |c| c.events.get()),
            ("duplicates_dropped_total", "Duplicate events dropped, per stream.", |c| {
                c.duplicates.get()
            }),
            ("gaps_total", "Sequence gaps detected, per stream.", |c| c.gaps.get()),
            (
                "missing_events_total",
                "Events missing in gaps, per stream, where ids count events (trade, aggTrade).",
                |c| c.missing.get(),
            ),
        ];
        for (suffix, help, value) in families {
            let family = format!("{PREFIX}{suffix}");
            out.family(&family, MetricType::Counter, help);
            for (stream, counters) in &streams {
                out.sample_u64(&family, &[("stream", stream)], value(counters));
            }
        }
        let age = format!("{PREFIX}stream_last_event_age_seconds");
        out.family(&age, MetricType::Gauge, "Seconds since the newest stored event, per stream.");
        let now_ns = unix_now_ns();
        for (stream, counters) in &streams {
            let last = counters.last_received_ns.load(Ordering::Relaxed);
            if last > 0 {
                let seconds = now_ns.saturating_sub(last) as f64 / 1e9;
                out.sample_f64(&age, &[("stream", stream)], seconds);
            }
        }
    }
}

/// Reads one counter of a stream.
type CounterOf = fn(&StreamCounters) -> u64;

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX))
}

/// Starts the pipeline thread. It exits after `frames` is disconnected and
/// drained, and then closes the ring.
pub fn spawn(
    settings: PipelineSettings,
    frames: Receiver<FrameBatch>,
    ring: Arc<Ring>,
    stats: Arc<PipelineStats>,
    notices: Sender<Notice>,
    checkin: Checkin,
) -> io::Result<JoinHandle<()>> {
    let control = crossbeam_channel::never();
    spawn_with_control(settings, frames, control, ring, stats, notices, checkin)
}

/// Like [`spawn`], with overlap requests from the scheduler on `control`.
/// Requests are taken before frames, so a `BeginOverlap` sent before the
/// replacement starts is in force before its first frame.
pub fn spawn_with_control(
    settings: PipelineSettings,
    frames: Receiver<FrameBatch>,
    control: Receiver<Control>,
    ring: Arc<Ring>,
    stats: Arc<PipelineStats>,
    notices: Sender<Notice>,
    checkin: Checkin,
) -> io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("pipeline".to_string()).spawn(move || {
        let mut pipeline = Pipeline::new(settings, ring.clone(), stats, notices);
        let tick = CHECKIN_INTERVAL.min(std::time::Duration::from_millis(20));
        loop {
            checkin.beat();
            while let Ok(request) = control.try_recv() {
                pipeline.control(request);
            }
            match frames.recv_timeout(tick) {
                Ok(batch) => pipeline.process(&batch),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            pipeline.check_overlaps(Instant::now());
        }
        pipeline.settle();
        ring.close();
        log::info!("pipeline stopped frames={}", pipeline.stats.frames.get());
    })
}

/// Sequence state and counters of one tracked stream.
struct Tracked {
    sequence: StreamSequence,
    counters: Arc<StreamCounters>,
    /// Events of an overlap's new connection, ahead of the old one.
    held: VecDeque<HeldEvent>,
    /// Held events of a replacement that ended before its overlap met, in
    /// key order. Each is observed just before the first authority event
    /// with a higher key, so it is stored only if the old connection did
    /// not deliver it, and all are observed when `orphans_authority` ends.
    orphans: VecDeque<HeldEvent>,
    /// The old connection that was the authority when the orphans' overlap
    /// was cancelled.
    orphans_authority: Option<ConnectionId>,
}

/// A copy of a held event, observed again when its stream switches.
struct HeldEvent {
    connection: ConnectionId,
    received_ns: u64,
    ids: Ids,
    data: Vec<u8>,
}

/// Reason an overlap ended before every stream met.
#[derive(Clone, Copy, Debug)]
enum OverlapEnd {
    /// The overlap timeout passed.
    Deadline,
    /// The old connection ended.
    OldEnded,
    /// A new overlap began on the same streams.
    Superseded,
    /// The pipeline stopped.
    Stopped,
}

/// An overlap waiting for its streams to switch.
struct ActiveOverlap {
    old: ConnectionId,
    new: ConnectionId,
    streams: Vec<Box<str>>,
    timeout: Duration,
    /// Set when the new connection opens, and again at its first frame.
    /// Until it opens the overlap neither finishes nor expires, so a slow
    /// handshake cannot hand the streams to a connection that is not there.
    deadline: Option<Instant>,
    /// Whether the new connection delivered a frame.
    delivered: bool,
}

/// Connections whose end the pipeline remembers, so an overlap announced
/// after its old connection already ended does not wait on it.
const ENDED_REMEMBERED: usize = 64;

/// State owned by the pipeline thread.
pub struct Pipeline {
    settings: PipelineSettings,
    ring: Arc<Ring>,
    stats: Arc<PipelineStats>,
    notices: Sender<Notice>,
    streams: HashMap<Box<str>, Tracked, BuildHasherDefault<StreamNameHasher>>,
    records: RecordBatch,
    limits: Limits,
    overlaps: Vec<ActiveOverlap>,
    /// The newest [`ENDED_REMEMBERED`] connections that ended.
    ended: VecDeque<ConnectionId>,
}

#[derive(Default)]
struct Limits {
    parse_errors: [LogLimiter; ParseErrorKind::ALL.len()],
    gaps: LogLimiter,
    untracked: LogLimiter,
    notices: LogLimiter,
    oversized: LogLimiter,
}

impl Pipeline {
    /// Creates the pipeline state; [`spawn`] runs it on its own thread.
    /// Exposed for benchmarks and tests that drive it on the caller's thread.
    pub fn new(
        settings: PipelineSettings,
        ring: Arc<Ring>,
        stats: Arc<PipelineStats>,
        notices: Sender<Notice>,
    ) -> Pipeline {
        Pipeline {
            settings,
            ring,
            stats,
            notices,
            streams: HashMap::default(),
            records: RecordBatch::new(),
            limits: Limits::default(),
            overlaps: Vec::new(),
            ended: VecDeque::new(),
        }
    }

    /// Applies a request of the scheduler.
    pub fn control(&mut self, request: Control) {
        match request {
            Control::BeginOverlap { old, new, streams, timeout } => {
                if self.ended.contains(&old) {
                    // The old connection's last frames are processed, so
                    // the new one is the only source: no authority to meet.
                    log::debug!("overlap skipped, old connection ended old={old} new={new}");
                    return;
                }
                // An earlier overlap on these streams that is still open
                // (its old connection ended first) ends now, so each stream
                // has one authority and one queue of held events.
                self.records.clear();
                while let Some(index) = self.overlaps.iter().position(|overlap| {
                    overlap.streams.iter().any(|known| streams.iter().any(|s| **s == **known))
                }) {
                    let earlier = self.overlaps.swap_remove(index);
                    self.finish_overlap(earlier, OverlapEnd::Superseded);
                }
                self.append_records(0);
                for stream in &streams {
                    if !self.streams.contains_key(stream.as_str()) {
                        self.start_tracking(stream);
                    }
                    if let Some(tracked) = self.streams.get_mut(stream.as_str()) {
                        tracked.sequence.begin_overlap(old, new);
                    }
                }
                log::debug!("overlap begins old={old} new={new} streams={}", streams.len());
                let streams = streams.into_iter().map(String::into_boxed_str).collect();
                let overlap =
                    ActiveOverlap { old, new, streams, timeout, deadline: None, delivered: false };
                self.overlaps.push(overlap);
            }
            Control::ReplacementOpened { new } => {
                for overlap in &mut self.overlaps {
                    if overlap.new == new && overlap.deadline.is_none() {
                        overlap.deadline = Some(Instant::now() + overlap.timeout);
                    }
                }
            }
            Control::CancelOverlap { new } => {
                self.records.clear();
                self.cancel_overlap(new);
                self.append_records(0);
            }
        }
    }

    /// Ends the overlap whose new connection is `new`, keeping the old one
    /// as the authority. The held events become orphans of their streams.
    fn cancel_overlap(&mut self, new: ConnectionId) {
        let Some(position) = self.overlaps.iter().position(|o| o.new == new) else {
            return;
        };
        let overlap = self.overlaps.swap_remove(position);
        let mut orphaned = 0;
        for stream in &overlap.streams {
            let Some(tracked) = self.streams.get_mut(stream) else { continue };
            tracked.sequence.cancel_overlap();
            orphaned += tracked.held.len();
            let held = std::mem::take(&mut tracked.held);
            tracked.orphans.extend(held);
            let sequence = &tracked.sequence;
            tracked.orphans.make_contiguous().sort_by_key(|event| sequence.key(&event.ids));
            tracked.orphans_authority = Some(overlap.old);
        }
        log::debug!("overlap cancelled old={} new={new} orphaned={orphaned}", overlap.old);
        if self.ended.contains(&overlap.old) {
            self.flush_orphans_of(overlap.old);
        }
    }

    /// Hands the streams of `connection` to the other connection of its
    /// overlap, once all of its frames are processed. An ended old
    /// connection makes the replacement the authority at once, releasing
    /// its held events. An ended replacement leaves its held events as
    /// orphans. Orphans whose authority ended are observed now.
    fn connection_ended(&mut self, connection: ConnectionId) {
        if self.ended.len() >= ENDED_REMEMBERED {
            self.ended.pop_front();
        }
        self.ended.push_back(connection);
        while let Some(index) = self.overlaps.iter().position(|o| o.old == connection) {
            let overlap = self.overlaps.swap_remove(index);
            log::info!(
                "old connection ended during the overlap, new one takes over old={connection} new={}",
                overlap.new
            );
            self.finish_overlap(overlap, OverlapEnd::OldEnded);
        }
        self.cancel_overlap(connection);
        self.flush_orphans_of(connection);
    }

    /// Stores every event still held or orphaned, when no frame can follow.
    fn settle(&mut self) {
        self.records.clear();
        while let Some(overlap) = self.overlaps.pop() {
            self.finish_overlap(overlap, OverlapEnd::Stopped);
        }
        let streams: Vec<Box<str>> = self
            .streams
            .iter()
            .filter(|(_, tracked)| !tracked.orphans.is_empty())
            .map(|(stream, _)| stream.clone())
            .collect();
        for stream in streams {
            self.observe_orphans(&stream, None);
        }
        self.append_records(0);
    }

    /// Observes every orphan whose authority was `connection`, in order.
    fn flush_orphans_of(&mut self, connection: ConnectionId) {
        let streams: Vec<Box<str>> = self
            .streams
            .iter()
            .filter(|(_, t)| !t.orphans.is_empty() && t.orphans_authority == Some(connection))
            .map(|(stream, _)| stream.clone())
            .collect();
        for stream in streams {
            self.observe_orphans(&stream, None);
        }
    }

    /// Observes the orphans of `stream` with a key below `bound` (all when
    /// `bound` is `None`), in key order.
    fn observe_orphans(&mut self, stream: &str, bound: Option<(u64, u64)>) {
        let Some(tracked) = self.streams.get_mut(stream) else { return };
        let mut due = Vec::new();
        while let Some(front) = tracked.orphans.front() {
            let key = tracked.sequence.key(&front.ids);
            if bound.is_some_and(|bound| key.is_some_and(|key| key >= bound)) {
                break;
            }
            due.extend(tracked.orphans.pop_front());
        }
        if tracked.orphans.is_empty() {
            tracked.orphans_authority = None;
        }
        for event in due {
            let view = Event { stream, data: &event.data, ids: event.ids };
            self.handle_event(event.connection, event.received_ns, &view);
        }
    }

    /// Finishes overlaps whose streams all switched, and switches the rest
    /// of an overlap whose deadline passed at `now`; a hole then becomes a
    /// gap record. Sends [`Notice::OverlapDone`] for each finished overlap.
    pub fn check_overlaps(&mut self, now: Instant) {
        if self.overlaps.is_empty() {
            return;
        }
        self.records.clear();
        let mut index = 0;
        while index < self.overlaps.len() {
            let overlap = &self.overlaps[index];
            let Some(deadline) = overlap.deadline else {
                index += 1;
                continue;
            };
            let pending: Vec<Box<str>> = overlap
                .streams
                .iter()
                .filter(|stream| self.streams.get(*stream).is_some_and(|t| t.sequence.in_overlap()))
                .cloned()
                .collect();
            let expired = now >= deadline;
            if !pending.is_empty() && !expired {
                index += 1;
                continue;
            }
            let overlap = self.overlaps.swap_remove(index);
            self.finish_overlap(overlap, OverlapEnd::Deadline);
        }
        self.append_records(0);
    }

    /// Switches every stream of `overlap` that has not met yet, releasing
    /// its held events, and reports the end to the scheduler. `cause` is
    /// counted when some stream had not met.
    fn finish_overlap(&mut self, overlap: ActiveOverlap, cause: OverlapEnd) {
        let pending: Vec<Box<str>> = overlap
            .streams
            .iter()
            .filter(|stream| self.streams.get(*stream).is_some_and(|t| t.sequence.in_overlap()))
            .cloned()
            .collect();
        for stream in &pending {
            let Some(tracked) = self.streams.get_mut(stream) else { continue };
            if tracked.held.is_empty() {
                // A quiet stream: with nothing held there is nothing to meet.
                log::debug!(
                    "overlap ended with nothing held stream={stream} old={} new={}",
                    overlap.old,
                    overlap.new
                );
            } else {
                log::warn!(
                    "overlap ended before the sequences met stream={stream} old={} new={}",
                    overlap.old,
                    overlap.new
                );
            }
            tracked.sequence.force_switch();
            self.release_held(stream);
        }
        let met = pending.is_empty();
        let counter = match cause {
            _ if met => &self.stats.overlaps_met,
            OverlapEnd::Deadline => &self.stats.overlaps_expired,
            OverlapEnd::OldEnded => &self.stats.overlaps_old_ended,
            OverlapEnd::Superseded => &self.stats.overlaps_superseded,
            OverlapEnd::Stopped => &self.stats.overlaps_stopped,
        };
        counter.inc();
        let notice = Notice::OverlapDone { old: overlap.old, new: overlap.new, met };
        self.send_notice(notice, overlap.old);
    }

    /// Observes the held events of `stream` again, after it switched.
    fn release_held(&mut self, stream: &str) {
        let Some(tracked) = self.streams.get_mut(stream) else { return };
        let _ = tracked.sequence.take_release();
        let held = std::mem::take(&mut tracked.held);
        for event in held {
            let view = Event { stream, data: &event.data, ids: event.ids };
            self.handle_event(event.connection, event.received_ns, &view);
        }
    }

    /// Processes one frame batch and appends its records to the ring under
    /// one lock.
    pub fn process(&mut self, batch: &FrameBatch) {
        self.records.clear();
        let connection = batch.connection();
        if batch.is_end() {
            self.connection_ended(connection);
            self.append_records(connection);
            return;
        }
        for overlap in &mut self.overlaps {
            if overlap.new == connection && !overlap.delivered {
                overlap.delivered = true;
                overlap.deadline = Some(Instant::now() + overlap.timeout);
            }
        }
        self.stats.frames.add(batch.len() as u64);
        for frame in batch.iter() {
            match parse_frame(frame.kind, frame.payload) {
                Parsed::Event(event) => self.handle_event(connection, frame.received_ns, &event),
                Parsed::Reply => self.stats.replies.inc(),
                Parsed::ServerShutdown => self.handle_server_shutdown(connection),
                Parsed::Invalid(kind) => {
                    self.stats.parse_errors[kind.index()].inc();
                    let limiter = &mut self.limits.parse_errors[kind.index()];
                    if let Some(suppressed) = limiter.allow(Instant::now()) {
                        log::warn!(
                            "skipped frame that is not market data kind={} conn={connection} bytes={} suppressed={suppressed}",
                            kind.label(),
                            frame.payload.len()
                        );
                    }
                }
            }
        }
        self.append_records(connection);
    }

    fn append_records(&mut self, connection: ConnectionId) {
        if self.records.is_empty() {
            return;
        }
        let appended = self.ring.append(&self.records);
        if appended < self.records.len()
            && let Some(suppressed) = self.limits.oversized.allow(Instant::now())
        {
            log::warn!(
                "rejected records larger than the cache ring count={} capacity_bytes={} conn={connection} suppressed={suppressed}",
                self.records.len() - appended,
                self.ring.capacity()
            );
        }
    }

    fn handle_server_shutdown(&mut self, connection: ConnectionId) {
        self.stats.server_shutdowns.inc();
        log::info!("server announced shutdown conn={connection}");
        self.send_notice(Notice::ServerShutdown { connection }, connection);
    }

    fn send_notice(&mut self, notice: Notice, connection: ConnectionId) {
        if self.notices.try_send(notice).is_err() {
            self.stats.notices_dropped.inc();
            if let Some(suppressed) = self.limits.notices.allow(Instant::now()) {
                log::warn!(
                    "dropped notice, scheduler queue full or closed conn={connection} suppressed={suppressed}"
                );
            }
        }
    }

    fn handle_event(&mut self, connection: ConnectionId, received_ns: u64, event: &Event<'_>) {
        if !self.streams.contains_key(event.stream) {
            self.start_tracking(event.stream);
        }
        let venue = self.settings.venue;
        let Some(tracked) = self.streams.get_mut(event.stream) else {
            self.stats.untracked_events.inc();
            push_event(&mut self.records, venue, connection, received_ns, event);
            return;
        };
        if !tracked.orphans.is_empty() && !tracked.sequence.is_held_source(connection) {
            // Orphans below this event's key come first, so an authority
            // event never passes an event that was received but not stored.
            if let Some(key) = tracked.sequence.key(&event.ids) {
                self.observe_orphans(event.stream, Some(key));
            }
        }
        let Some(tracked) = self.streams.get_mut(event.stream) else { return };
        let verdict = tracked.sequence.observe(connection, &event.ids, event.data);
        let mut release = tracked.sequence.take_release();
        match verdict {
            Verdict::Duplicate => tracked.counters.duplicates.inc(),
            Verdict::Held => {
                self.stats.held_events.inc();
                // The stream is alive although nothing is stored yet, so
                // the per-stream watchdog must not end its only source.
                tracked.counters.last_received_ns.store(received_ns, Ordering::Relaxed);
                tracked.held.push_back(HeldEvent {
                    connection,
                    received_ns,
                    ids: event.ids,
                    data: event.data.to_vec(),
                });
                if tracked.held.len() >= MAX_HELD_EVENTS {
                    log::warn!(
                        "overlap hold bound reached, switching without proof stream={} held={}",
                        event.stream,
                        tracked.held.len()
                    );
                    tracked.sequence.force_switch();
                    release = true;
                }
            }
            Verdict::Gap(gap) => {
                tracked.counters.gaps.inc();
                tracked.counters.missing.add(gap.missing.unwrap_or(0));
                self.records.push_with(received_ns, RecordKind::Gap, event.stream, |out| {
                    record::push_gap_line(out, received_ns, venue, event.stream, connection, &gap)
                });
                if let Some(suppressed) = self.limits.gaps.allow(Instant::now()) {
                    let show = |id: Option<u64>| {
                        id.map_or_else(|| "unknown".to_string(), |id| id.to_string())
                    };
                    log::warn!(
                        "sequence gap stream={} conn={connection} rule={} first={} last={} missing={} suppressed={suppressed}",
                        event.stream,
                        gap.rule,
                        show(gap.first),
                        show(gap.last),
                        show(gap.missing)
                    );
                }
                store(tracked, &mut self.records, venue, connection, received_ns, event);
            }
            Verdict::New => {
                store(tracked, &mut self.records, venue, connection, received_ns, event);
            }
        }
        if release {
            // The stream switched: observe the held events again, in order.
            self.release_held(event.stream);
        }
    }

    /// Adds `stream` to the tracked streams unless the table is full.
    fn start_tracking(&mut self, stream: &str) {
        if self.streams.len() >= self.settings.max_streams {
            if let Some(suppressed) = self.limits.untracked.allow(Instant::now()) {
                log::warn!(
                    "stream table full, storing without duplicate checks stream={stream} max_streams={} suppressed={suppressed}",
                    self.settings.max_streams
                );
            }
            return;
        }
        let rule = Rule::for_stream(self.settings.venue, stream);
        let tracked = Tracked {
            sequence: StreamSequence::new(rule, self.settings.dedup_window),
            counters: self.stats.register(stream),
            held: VecDeque::new(),
            orphans: VecDeque::new(),
            orphans_authority: None,
        };
        self.streams.insert(stream.into(), tracked);
    }
}

/// Hasher of the pipeline's stream table, looked up about three times per
/// event: the multiply-rotate word hash of rustc's `FxHasher`, which costs a
/// fraction of the default SipHash on names of 10 to 40 bytes. It does not
/// resist chosen collisions. That is acceptable here because the table
/// contains at most `max_streams` names, all sent by the TLS-verified server.
#[derive(Default, Clone, Copy)]
struct StreamNameHasher {
    hash: u64,
}

impl StreamNameHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    #[inline]
    fn add_word(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for StreamNameHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add_word(u64::from_le_bytes(word));
        }
        let tail = chunks.remainder();
        if !tail.is_empty() {
            let mut word = [0u8; 8];
            word[..tail.len()].copy_from_slice(tail);
            self.add_word(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, byte: u8) {
        self.add_word(u64::from(byte));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// Counts and stores one accepted event.
fn store(
    tracked: &Tracked,
    records: &mut RecordBatch,
    venue: Venue,
    connection: ConnectionId,
    received_ns: u64,
    event: &Event<'_>,
) {
    tracked.counters.events.inc();
    tracked.counters.last_received_ns.store(received_ns, Ordering::Relaxed);
    push_event(records, venue, connection, received_ns, event);
}

fn push_event(
    records: &mut RecordBatch,
    venue: Venue,
    connection: ConnectionId,
    received_ns: u64,
    event: &Event<'_>,
) {
    records.push_with(received_ns, RecordKind::Event, event.stream, |out| {
        record::push_event_line(out, received_ns, venue, event.stream, connection, event.data)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameKind;
    use crate::ring::Cursor;

    fn pipeline(max_streams: usize) -> (Pipeline, Arc<Ring>, Receiver<Notice>) {
        let ring = Arc::new(Ring::new(1 << 20));
        let (sender, receiver) = crossbeam_channel::bounded(1);
        let settings = PipelineSettings { venue: Venue::Spot, dedup_window: 16, max_streams };
        let stats = Arc::new(PipelineStats::new());
        (Pipeline::new(settings, ring.clone(), stats, sender), ring, receiver)
    }

    fn batch(connection: ConnectionId, frames: &[&str]) -> FrameBatch {
        let mut batch = FrameBatch::new(connection, 1024);
        for (index, frame) in frames.iter().enumerate() {
            batch.push(FrameKind::Text, 1000 + index as u64, frame.as_bytes());
        }
        batch
    }

    fn stored_lines(ring: &Ring) -> Vec<String> {
        let mut cursor = Cursor::default();
        let mut out = RecordBatch::new();
        ring.read(&mut cursor, &mut out, usize::MAX);
        out.iter().map(|record| String::from_utf8_lossy(record.line).into_owned()).collect()
    }

    #[test]
    fn pipeline_stores_counts_and_notifies() {
        let (mut pipeline, ring, notices) = pipeline(8);
        pipeline.process(&batch(
            3,
            &[
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":100}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":100}}"#,
                r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":104}}"#,
                r#"{"result":null,"id":1}"#,
                r#"{"stream":"!serverShutdown","data":{"e":"serverShutdown","E":1}}"#,
                "not json",
            ],
        ));
        let lines = stored_lines(&ring);
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            r#"{"recv_ns":1000,"venue":"spot","stream":"btcusdt@trade","conn":3,"data":{"e":"trade","t":100}}"#
        );
        assert!(lines[1].contains(r#""gap":{"first":101,"last":103,"missing":3,"rule":"trade"}"#));
        assert!(lines[2].ends_with(r#""data":{"e":"trade","t":104}}"#));
        assert_eq!(notices.try_recv(), Ok(Notice::ServerShutdown { connection: 3 }));

        let stats = &pipeline.stats;
        assert_eq!(stats.frames_total(), 6);
        assert_eq!(stats.replies.get(), 1);
        assert_eq!(stats.server_shutdowns.get(), 1);
        assert_eq!(stats.parse_errors(ParseErrorKind::InvalidJson), 1);
        let mut out = Exposition::new();
        stats.write_metrics(&mut out);
        let body = out.finish();
        assert!(body.contains("binance_ingest_events_total{stream=\"btcusdt@trade\"} 2\n"));
        assert!(
            body.contains("binance_ingest_duplicates_dropped_total{stream=\"btcusdt@trade\"} 1\n")
        );
        assert!(body.contains("binance_ingest_gaps_total{stream=\"btcusdt@trade\"} 1\n"));
        assert!(body.contains("binance_ingest_missing_events_total{stream=\"btcusdt@trade\"} 3\n"));
        assert!(body.contains("binance_ingest_parse_errors_total{kind=\"invalid_json\"} 1\n"));
        assert_eq!(stats.stream_last_event(), [("btcusdt@trade".to_string(), 1002)]);
    }

    fn trades(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
        range.map(|t| format!(r#"{{"stream":"a@trade","data":{{"t":{t}}}}}"#)).collect()
    }

    fn process_trades(pipeline: &mut Pipeline, connection: ConnectionId, frames: &[String]) {
        let frames: Vec<&str> = frames.iter().map(String::as_str).collect();
        pipeline.process(&batch(connection, &frames));
    }

    fn begin(pipeline: &mut Pipeline, timeout: Duration) {
        let streams = vec!["a@trade".to_string()];
        pipeline.control(Control::BeginOverlap { old: 1, new: 2, streams, timeout });
    }

    fn stored_trade_ids(ring: &Ring) -> Vec<u64> {
        stored_lines(ring)
            .iter()
            .filter(|line| !line.contains("\"gap\""))
            .filter_map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).ok()?;
                value["data"]["t"].as_u64()
            })
            .collect()
    }

    #[test]
    fn overlap_holds_events_until_met() {
        let (mut pipeline, ring, notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(13..=20));
        let start = Instant::now();
        pipeline.check_overlaps(start);
        assert_eq!(notices.try_recv(), Err(crossbeam_channel::TryRecvError::Empty));
        process_trades(&mut pipeline, 1, &trades(11..=14));
        pipeline.check_overlaps(start);
        assert_eq!(notices.try_recv(), Ok(Notice::OverlapDone { old: 1, new: 2, met: true }));
        process_trades(&mut pipeline, 1, &trades(15..=16));
        process_trades(&mut pipeline, 2, &trades(21..=21));
        assert_eq!(stored_trade_ids(&ring), (1..=21).collect::<Vec<u64>>());
        assert!(!stored_lines(&ring).iter().any(|line| line.contains("\"gap\"")));
        assert_eq!(pipeline.stats.overlaps_met.get(), 1);
    }

    #[test]
    fn overlap_deadline_records_gap() {
        let (mut pipeline, ring, notices) = pipeline(8);
        let timeout = Duration::from_millis(300);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, timeout);
        pipeline.check_overlaps(Instant::now() + timeout * 10);
        assert!(notices.try_recv().is_err(), "no deadline before the new connection delivers");
        let before_first = Instant::now();
        process_trades(&mut pipeline, 2, &trades(15..=16));
        pipeline.check_overlaps(before_first + timeout - Duration::from_millis(1));
        assert!(notices.try_recv().is_err(), "before the deadline");
        pipeline.check_overlaps(Instant::now() + timeout);
        assert_eq!(notices.try_recv(), Ok(Notice::OverlapDone { old: 1, new: 2, met: false }));
        let lines = stored_lines(&ring);
        assert!(lines.iter().any(|line| line.contains(r#""first":11,"last":14,"missing":4"#)));
        assert_eq!(stored_trade_ids(&ring), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16]);
        assert_eq!(pipeline.stats.overlaps_expired.get(), 1);
    }

    #[test]
    fn quiet_replacement_expires_from_open() {
        let (mut pipeline, ring, notices) = pipeline(8);
        let timeout = Duration::from_millis(300);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, timeout);
        pipeline.control(Control::ReplacementOpened { new: 2 });
        pipeline.check_overlaps(Instant::now() + timeout);
        assert_eq!(notices.try_recv(), Ok(Notice::OverlapDone { old: 1, new: 2, met: false }));
        process_trades(&mut pipeline, 2, &trades(11..=12));
        assert_eq!(stored_trade_ids(&ring), (1..=12).collect::<Vec<u64>>());
        assert!(!stored_lines(&ring).iter().any(|line| line.contains("\"gap\"")));
    }

    #[test]
    fn hold_bound_switches_without_proof() {
        // A ring large enough that no record of the 10 000 is evicted.
        let ring = Arc::new(Ring::new(8 << 20));
        let (sender, _notices) = crossbeam_channel::bounded(1);
        let settings = PipelineSettings { venue: Venue::Spot, dedup_window: 16, max_streams: 8 };
        let mut pipeline =
            Pipeline::new(settings, ring.clone(), Arc::new(PipelineStats::new()), sender);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        let ahead = 20..=(19 + MAX_HELD_EVENTS as u64);
        process_trades(&mut pipeline, 2, &trades(ahead.clone()));
        let ids = stored_trade_ids(&ring);
        assert_eq!(ids.len(), 10 + MAX_HELD_EVENTS, "held events stored once the bound is hit");
        assert_eq!(ids.last(), Some(ahead.end()));
        let gap = r#""first":11,"last":19,"missing":9"#;
        assert!(stored_lines(&ring).iter().any(|line| line.contains(gap)));
    }

    #[test]
    fn new_overlap_ends_open_one() {
        let (mut pipeline, ring, notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(12..=13));
        // Connection 1 ended before the streams met; 2 rotates to 3.
        let streams = vec!["a@trade".to_string()];
        let timeout = Duration::from_secs(5);
        pipeline.control(Control::BeginOverlap { old: 2, new: 3, streams, timeout });
        assert_eq!(notices.try_recv(), Ok(Notice::OverlapDone { old: 1, new: 2, met: false }));
        process_trades(&mut pipeline, 3, &trades(13..=14));
        process_trades(&mut pipeline, 2, &trades(14..=15));
        assert_eq!(stored_trade_ids(&ring), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13, 14, 15]);
        assert!(stored_lines(&ring).iter().any(|line| line.contains(r#""first":11,"last":11"#)));
        assert_eq!(pipeline.stats.overlaps_superseded.get(), 1);
        assert_eq!(pipeline.stats.overlaps_expired.get(), 0, "no deadline passed");
    }

    #[test]
    fn old_end_hands_streams_to_new() {
        let (mut pipeline, ring, notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(13..=20));
        pipeline.process(&FrameBatch::end_of(1));
        assert_eq!(notices.try_recv(), Ok(Notice::OverlapDone { old: 1, new: 2, met: false }));
        process_trades(&mut pipeline, 2, &trades(21..=22));
        // The replacement ends too; a plain reconnect follows.
        pipeline.process(&FrameBatch::end_of(2));
        process_trades(&mut pipeline, 3, &trades(23..=24));
        let mut expected: Vec<u64> = (1..=10).collect();
        expected.extend(13..=24);
        assert_eq!(stored_trade_ids(&ring), expected);
        let gaps: Vec<String> =
            stored_lines(&ring).into_iter().filter(|line| line.contains("\"gap\"")).collect();
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!(gaps[0].contains(r#""first":11,"last":12,"missing":2"#), "{gaps:?}");
        let duplicates = pipeline.streams["a@trade"].counters.duplicates.get();
        assert_eq!(duplicates, 0);
        assert_eq!(pipeline.stats.overlaps_old_ended.get(), 1);
        assert_eq!(pipeline.stats.overlaps_expired.get(), 0, "no deadline passed");
    }

    #[test]
    fn overlap_after_old_ended_is_skipped() {
        let (mut pipeline, ring, _notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        pipeline.process(&FrameBatch::end_of(1));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(11..=12));
        assert_eq!(stored_trade_ids(&ring), (1..=12).collect::<Vec<u64>>());
    }

    #[test]
    fn ended_replacement_keeps_held_events() {
        let (mut pipeline, ring, _notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(12..=15));
        assert_eq!(pipeline.stats.stream_last_event()[0].1, 1003, "held events count as alive");
        pipeline.process(&FrameBatch::end_of(2));
        pipeline.check_overlaps(Instant::now() + Duration::from_secs(60));
        process_trades(&mut pipeline, 1, &trades(11..=12));
        assert_eq!(stored_trade_ids(&ring), (1..=12).collect::<Vec<u64>>());
        // The old connection ends before it delivers 13 to 15.
        pipeline.process(&FrameBatch::end_of(1));
        assert_eq!(stored_trade_ids(&ring), (1..=15).collect::<Vec<u64>>());
        assert!(!stored_lines(&ring).iter().any(|line| line.contains("\"gap\"")));
    }

    #[test]
    fn orphans_fill_what_the_old_skips() {
        let (mut pipeline, ring, _notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(11..=13));
        pipeline.process(&FrameBatch::end_of(2));
        // The old connection lost 11 and 12 but goes on.
        process_trades(&mut pipeline, 1, &trades(13..=14));
        assert_eq!(stored_trade_ids(&ring), (1..=14).collect::<Vec<u64>>());
        assert!(!stored_lines(&ring).iter().any(|line| line.contains("\"gap\"")));
    }

    #[test]
    fn cancelled_overlap_keeps_old_authority() {
        let (mut pipeline, ring, _notices) = pipeline(8);
        process_trades(&mut pipeline, 1, &trades(1..=10));
        begin(&mut pipeline, Duration::from_secs(5));
        process_trades(&mut pipeline, 2, &trades(12..=13));
        pipeline.control(Control::CancelOverlap { new: 2 });
        process_trades(&mut pipeline, 1, &trades(11..=13));
        assert_eq!(stored_trade_ids(&ring), (1..=13).collect::<Vec<u64>>());
    }

    #[test]
    fn streams_beyond_bound_are_stored_untracked() {
        let (mut pipeline, ring, _notices) = pipeline(1);
        let frame_a = r#"{"stream":"a@trade","data":{"t":1}}"#;
        let frame_b = r#"{"stream":"b@trade","data":{"t":1}}"#;
        pipeline.process(&batch(1, &[frame_a, frame_b, frame_b, frame_a]));
        assert_eq!(stored_lines(&ring).len(), 3, "b is not checked for duplicates");
        assert_eq!(pipeline.stats.untracked_events.get(), 2);
        assert_eq!(pipeline.stats.stream_table().len(), 1);
    }

    #[test]
    fn full_notice_queue_never_blocks() {
        let (mut pipeline, _ring, _notices) = pipeline(8);
        let shutdown = r#"{"stream":"!serverShutdown","data":{"E":1}}"#;
        pipeline.process(&batch(1, &[shutdown, shutdown, shutdown]));
        assert_eq!(pipeline.stats.server_shutdowns.get(), 3);
        assert_eq!(pipeline.stats.notices_dropped.get(), 2);
    }
}
