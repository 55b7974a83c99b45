//! The scheduler thread: which connections exist, when they reconnect, and
//! when one replaces another.
//!
//! Each slot of the connection plan has at most one current connection and,
//! while a replacement is under way, one replacement. A connection that ends
//! while the service still wants it is reconnected after a backoff delay. A
//! `serverShutdown` notice, or the timer thread's rotation deadline, replaces
//! the connection make-before-break: the scheduler tells the pipeline that an
//! overlap begins, starts the replacement, and closes the old connection with
//! code 1000 once the pipeline reports that every stream switched to the new
//! one (or the overlap deadline passed). This thread never reads a socket and
//! never waits on a reader, except to join one that has ended.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::backoff::{AttemptBudget, Backoff, Rng};
use crate::connection::ConnectionClock;
use crate::connection::{ConnectionStats, EndReason, SlotState, SlotStatus};
use crate::frame::{ConnectionId, FrameSender};
use crate::liveness::{Checkin, Liveness};
use crate::pipeline::{Control, Notice};
use crate::plan::ConnectionPlan;
use crate::reader::{self, Command, ReaderEvent, ReaderHandle, ReaderSettings, ReaderTask};
use crate::timer::{StreamAges, Timer, TimerEvent, TimerSettings};

/// Time the scheduler waits past the pipeline's overlap deadline for its
/// report before it closes the old connection anyway.
const OVERLAP_GRACE: Duration = Duration::from_secs(2);

/// Connection attempts allowed per [`ATTEMPT_WINDOW`], process-wide: a third
/// of Binance's limit of 300.
pub const MAX_ATTEMPTS_PER_WINDOW: usize = 100;

/// Window of [`MAX_ATTEMPTS_PER_WINDOW`].
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(300);

/// Wait after HTTP 418 (IP banned) when the response has no `Retry-After`.
const BAN_WAIT: Duration = Duration::from_secs(300);

/// Wait after HTTP 429 (too many requests) without `Retry-After`.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// How long shutdown waits for readers to close and hand over their frames.
const STOP_WAIT: Duration = Duration::from_secs(20);

/// Settings of the scheduler.
#[derive(Clone, Debug)]
pub struct SchedulerSettings {
    /// First backoff step.
    pub reconnect_min: Duration,
    /// Backoff cap.
    pub reconnect_max: Duration,
    /// Uptime with data after which a connection's end resets the backoff.
    pub healthy_after: Duration,
    /// Maximum overlap of an old and a new connection before every stream
    /// switches, met or not.
    pub overlap_timeout: Duration,
    /// Heartbeat, watchdog and rotation intervals for the timer thread.
    pub timer: TimerSettings,
    /// Reader settings.
    pub reader: ReaderSettings,
}

/// Handle of the scheduler thread.
#[derive(Debug)]
pub struct SchedulerHandle {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl SchedulerHandle {
    /// Closes every connection with code 1000, waits for the readers to hand
    /// over their last frames, and joins the thread.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::error!("scheduler thread panicked");
        }
    }
}

/// Channels and shared state the scheduler works with.
pub struct SchedulerContext {
    /// Queue to the pipeline; cloned for each reader.
    pub frames: FrameSender,
    /// Notices from the pipeline.
    pub notices: Receiver<Notice>,
    /// Status of every slot, in plan order.
    pub slots: Vec<Arc<SlotStatus>>,
    /// Shared counters.
    pub stats: Arc<ConnectionStats>,
    /// Check-in registry, for the scheduler and its readers.
    pub liveness: Arc<Liveness>,
    /// Overlap requests to the pipeline.
    pub control: Sender<Control>,
    /// Newest stored event per stream, for opt-in stream thresholds.
    pub stream_ages: StreamAges,
}

/// Starts the scheduler thread, which opens every planned connection.
///
/// # Errors
///
/// Fails when the operating system cannot start a thread.
pub fn spawn(
    settings: SchedulerSettings,
    plans: Vec<ConnectionPlan>,
    context: SchedulerContext,
) -> io::Result<SchedulerHandle> {
    let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
    let checkin = context.liveness.register("scheduler");
    let (timer_events, timer_rx) = crossbeam_channel::bounded(256);
    let timer = Timer::spawn(
        settings.timer.clone(),
        timer_events,
        context.stats.clone(),
        context.stream_ages.clone(),
        context.liveness.register("timer"),
    )?;
    let thread = std::thread::Builder::new().name("scheduler".into()).spawn(move || {
        let mut scheduler = Scheduler::new(settings, plans, context, checkin, timer, timer_rx);
        scheduler.run(&stop_rx);
    })?;
    Ok(SchedulerHandle { stop, thread })
}

struct Slot {
    plan: ConnectionPlan,
    status: Arc<SlotStatus>,
    current: Option<ReaderHandle>,
    replacement: Option<ReaderHandle>,
    retired: Vec<ReaderHandle>,
    backoff: Backoff,
    retry_at: Option<Instant>,
    replace_at: Option<Instant>,
    /// When the scheduler closes the old connection even without the
    /// pipeline's report; set at the replacement's open and again at its
    /// first data.
    overlap_until: Option<Instant>,
    /// Whether a connection was attempted before, so the next attempt is a
    /// reconnect.
    attempted: bool,
    /// Whether the slot waits out HTTP 429 or 418.
    rate_limited: bool,
    /// Why the replacement must rotate as soon as it becomes current: its
    /// rotation fell due, or the server announced a shutdown, before the
    /// switch.
    rotate_after_switch: Option<&'static str>,
}

struct Scheduler {
    settings: SchedulerSettings,
    context: SchedulerContext,
    slots: Vec<Slot>,
    events: Sender<ReaderEvent>,
    event_rx: Receiver<ReaderEvent>,
    budget: AttemptBudget,
    next_connection: ConnectionId,
    checkin: Checkin,
    timer: Option<Timer>,
    timer_rx: Receiver<TimerEvent>,
}

impl Scheduler {
    fn new(
        settings: SchedulerSettings,
        plans: Vec<ConnectionPlan>,
        context: SchedulerContext,
        checkin: Checkin,
        timer: Timer,
        timer_rx: Receiver<TimerEvent>,
    ) -> Scheduler {
        let slots = plans
            .into_iter()
            .zip(context.slots.iter().cloned())
            .map(|(plan, status)| Slot {
                backoff: Backoff::new(
                    settings.reconnect_min,
                    settings.reconnect_max,
                    Rng::from_entropy(plan.slot as u64).next_u64(),
                ),
                plan,
                status,
                current: None,
                replacement: None,
                retired: Vec::new(),
                retry_at: Some(Instant::now()),
                replace_at: None,
                overlap_until: None,
                attempted: false,
                rate_limited: false,
                rotate_after_switch: None,
            })
            .collect();
        let (events, event_rx) = crossbeam_channel::unbounded();
        Scheduler {
            settings,
            context,
            slots,
            events,
            event_rx,
            budget: AttemptBudget::new(MAX_ATTEMPTS_PER_WINDOW, ATTEMPT_WINDOW),
            next_connection: 1,
            checkin,
            timer: Some(timer),
            timer_rx,
        }
    }

    fn run(&mut self, stop: &Receiver<()>) {
        log::info!("scheduler started with {} connection(s)", self.slots.len());
        let tick = crossbeam_channel::tick(crate::liveness::CHECKIN_INTERVAL);
        let mut notices = self.context.notices.clone();
        loop {
            self.checkin.beat();
            self.start_due(Instant::now());
            select! {
                recv(self.event_rx) -> event => {
                    if let Ok(event) = event {
                        self.on_event(event);
                    }
                }
                recv(self.timer_rx) -> event => {
                    if let Ok(TimerEvent::RotateDue { slot, connection }) = event {
                        self.on_rotate_due(slot, connection);
                    }
                }
                recv(notices) -> notice => match notice {
                    Ok(Notice::ServerShutdown { connection }) => self.on_server_shutdown(connection),
                    Ok(Notice::OverlapDone { old, new, met }) => self.on_overlap_done(old, new, met),
                    // The pipeline has exited; a disconnected channel would
                    // otherwise be ready at once, forever.
                    Err(_) => notices = crossbeam_channel::never(),
                },
                recv(tick) -> _ => {}
                recv(stop) -> _ => break,
            }
        }
        self.shutdown();
    }

    /// Starts connections whose backoff has expired.
    fn start_due(&mut self, now: Instant) {
        let mut backoff_ms = 0u64;
        for index in 0..self.slots.len() {
            let slot = &self.slots[index];
            if let Some(at) = slot.retry_at {
                if at <= now && slot.current.is_none() {
                    self.start(index, false, now);
                } else {
                    backoff_ms += at.saturating_duration_since(now).as_millis() as u64;
                }
            }
            let slot = &self.slots[index];
            if slot.replace_at.is_some_and(|at| at <= now) && slot.replacement.is_none() {
                if slot.current.is_some() {
                    self.start(index, true, now);
                } else {
                    // The old connection is gone; a plain reconnect follows.
                    self.slots[index].replace_at = None;
                }
            }
            let slot = &self.slots[index];
            if slot.overlap_until.is_some_and(|at| at <= now) && slot.replacement.is_some() {
                log::warn!("slot={index} pipeline did not report the overlap's end in time");
                self.switch_to_replacement(index);
            }
        }
        self.context.stats.backoff_ms.set(backoff_ms);
    }

    fn start(&mut self, index: usize, replacement: bool, now: Instant) {
        if let Some(free_at) = self.budget.try_take(now) {
            log::warn!(
                "connection attempts reached {MAX_ATTEMPTS_PER_WINDOW} in {ATTEMPT_WINDOW:?}, \
                 slot={index} waits {:?}",
                free_at - now
            );
            let slot = &mut self.slots[index];
            if replacement {
                slot.replace_at = Some(free_at);
            } else {
                slot.retry_at = Some(free_at);
            }
            return;
        }

        let connection = self.next_connection;
        self.next_connection += 1;
        let slot = &mut self.slots[index];
        if replacement {
            self.context.stats.replacement_attempts.inc();
        } else if slot.attempted {
            self.context.stats.reconnect_attempts.inc();
        }
        slot.attempted = true;
        if replacement && let Some(old) = slot.current.as_ref() {
            // Sent before the reader starts, so it is in force before the
            // replacement's first frame reaches the pipeline.
            let begin = Control::BeginOverlap {
                old: old.connection,
                new: connection,
                streams: slot.plan.streams.clone(),
                timeout: self.settings.overlap_timeout,
            };
            if self.context.control.try_send(begin).is_err() {
                log::warn!("slot={index} pipeline control queue full; overlap not announced");
            }
        }
        let task = ReaderTask {
            slot: index,
            connection,
            path_and_query: slot.plan.path_and_query(),
            settings: self.settings.reader.clone(),
            frames: self.context.frames.clone(),
            events: self.events.clone(),
            status: slot.status.clone(),
            stats: self.context.stats.clone(),
            checkin: self.context.liveness.register(&format!("reader-{index}-{connection}")),
            clock: Arc::new(ConnectionClock::default()),
        };
        // The slot names its new connection before the reader starts, so
        // the reader's own "open" update, which applies only to the slot's
        // current connection, cannot arrive first and be ignored.
        if !replacement {
            slot.status.set_state(SlotState::Connecting, Some(connection));
        }
        match reader::spawn(task) {
            Ok(handle) if replacement => {
                slot.replace_at = None;
                slot.status.set_replacement(Some(connection));
                slot.replacement = Some(handle);
            }
            Ok(handle) => {
                slot.retry_at = None;
                slot.current = Some(handle);
            }
            Err(error) => {
                if replacement {
                    let _ =
                        self.context.control.try_send(Control::CancelOverlap { new: connection });
                }
                let delay = slot.backoff.next_delay();
                log::error!(
                    "slot={index} failed to start a reader thread: {error}; retry in {delay:?}"
                );
                if replacement {
                    slot.replace_at = Some(now + delay);
                } else {
                    slot.status.set_state(SlotState::Backoff, None);
                    slot.retry_at = Some(now + delay);
                }
            }
        }
    }

    fn on_event(&mut self, event: ReaderEvent) {
        match event {
            ReaderEvent::Opened { slot, connection } => {
                let role = if self.is_replacement(slot, connection) { "replacement " } else { "" };
                let entry = &mut self.slots[slot];
                if entry.rate_limited {
                    entry.rate_limited = false;
                    if !self.slots.iter().any(|s| s.rate_limited) {
                        self.context.stats.rate_limited.set(0);
                    }
                }
                if !role.is_empty() {
                    // Quiet streams may deliver no data on the replacement,
                    // so the overlap deadline also runs from its open.
                    self.slots[slot].overlap_until =
                        Some(Instant::now() + self.settings.overlap_timeout + OVERLAP_GRACE);
                    let opened = Control::ReplacementOpened { new: connection };
                    if self.context.control.try_send(opened).is_err() {
                        log::warn!("slot={slot} pipeline control queue full; open not announced");
                    }
                }
                let entry = &self.slots[slot];
                if !role.is_empty()
                    && let Some(current) = entry.current.as_ref()
                {
                    // The replacement's reader marked the slot as its own;
                    // the old connection serves the slot until the switch.
                    entry.status.set_state(SlotState::Open, Some(current.connection));
                }
                let handle = [entry.current.as_ref(), entry.replacement.as_ref()]
                    .into_iter()
                    .flatten()
                    .find(|handle| handle.connection == connection);
                if let (Some(handle), Some(timer)) = (handle, self.timer.as_ref()) {
                    timer.watch(
                        slot,
                        connection,
                        handle.commands.clone(),
                        handle.clock.clone(),
                        &entry.plan.streams,
                    );
                }
                log::info!(
                    "connected {role}slot={slot} conn={connection} route={} streams={}",
                    entry.plan.route.name(),
                    entry.plan.streams.len()
                );
            }
            ReaderEvent::FirstData { slot, connection } => {
                if self.is_replacement(slot, connection) {
                    let entry = &mut self.slots[slot];
                    entry.overlap_until =
                        Some(Instant::now() + self.settings.overlap_timeout + OVERLAP_GRACE);
                    log::debug!("slot={slot} replacement conn={connection} delivers data");
                }
            }
            ReaderEvent::Ended { slot, connection, reason, uptime, frames } => {
                self.on_ended(slot, connection, reason, uptime, frames);
            }
        }
    }

    fn is_replacement(&self, slot: usize, connection: ConnectionId) -> bool {
        self.slots[slot].replacement.as_ref().is_some_and(|handle| handle.connection == connection)
    }

    /// Makes the replacement current and closes the old connection with
    /// code 1000, once every stream switched to the replacement.
    fn switch_to_replacement(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        slot.overlap_until = None;
        slot.status.set_replacement(None);
        let Some(replacement) = slot.replacement.take() else { return };
        let new_connection = replacement.connection;
        if let Some(old) = slot.current.replace(replacement) {
            log::info!(
                "rotated slot={index} conn={} to conn={new_connection}, closing the old one",
                old.connection
            );
            let _ = old.commands.try_send(Command::Retire);
            slot.retired.push(old);
        }
        slot.status.set_state(SlotState::Open, Some(new_connection));
        self.start_deferred_rotation(index);
    }

    /// Starts the rotation that fell due while the slot's current
    /// connection was still a replacement, once no retired connection of
    /// the slot is still closing.
    fn start_deferred_rotation(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        if !slot.retired.is_empty() {
            // Waits for the retired connection to close, so a slot never
            // has more than two connections open.
            return;
        }
        let Some(cause) = slot.rotate_after_switch.take() else { return };
        let Some(current) = slot.current.as_ref() else { return };
        if slot.replacement.is_some() || slot.replace_at.is_some() {
            return;
        }
        log::info!(
            "deferred rotation slot={index} conn={} cause={cause}, opening a replacement",
            current.connection
        );
        self.context.stats.rotations.inc(cause);
        slot.replace_at = Some(Instant::now());
    }

    fn on_overlap_done(&mut self, old: ConnectionId, new: ConnectionId, met: bool) {
        let Some(index) = self.slots.iter().position(|slot| {
            slot.replacement.as_ref().is_some_and(|handle| handle.connection == new)
        }) else {
            log::debug!("overlap old={old} new={new} ended after the old connection did");
            return;
        };
        if !met {
            log::warn!("slot={index} overlap old={old} new={new} ended at its deadline");
        }
        self.switch_to_replacement(index);
    }

    fn on_rotate_due(&mut self, index: usize, connection: ConnectionId) {
        let Some(slot) = self.slots.get_mut(index) else { return };
        if slot.replacement.as_ref().is_some_and(|h| h.connection == connection) {
            // The timer fires once per connection, so the rotation waits
            // for the switch instead of being lost.
            log::info!(
                "rotation due slot={index} conn={connection} before it replaced the old one, \
                 rotating after the switch"
            );
            slot.rotate_after_switch.get_or_insert("schedule");
            return;
        }
        let is_current = slot.current.as_ref().is_some_and(|h| h.connection == connection);
        if !is_current || slot.replacement.is_some() || slot.replace_at.is_some() {
            return;
        }
        log::info!("rotation due slot={index} conn={connection}, opening a replacement");
        self.context.stats.rotations.inc("schedule");
        slot.replace_at = Some(Instant::now());
    }

    fn on_server_shutdown(&mut self, connection: ConnectionId) {
        let found = self.slots.iter().position(|slot| {
            slot.current.as_ref().is_some_and(|handle| handle.connection == connection)
        });
        let Some(index) = found else {
            self.on_replacement_shutdown(connection);
            return;
        };
        let slot = &mut self.slots[index];
        if slot.replacement.is_none() && slot.replace_at.is_none() {
            log::info!("serverShutdown on slot={index} conn={connection}, opening a replacement");
            self.context.stats.rotations.inc("server_shutdown");
            slot.replace_at = Some(Instant::now());
        }
    }

    /// Remembers a `serverShutdown` on a replacement, so it rotates as
    /// soon as it becomes current, before the server closes it.
    fn on_replacement_shutdown(&mut self, connection: ConnectionId) {
        let found = self.slots.iter().position(|slot| {
            slot.replacement.as_ref().is_some_and(|handle| handle.connection == connection)
        });
        let Some(index) = found else {
            log::info!("serverShutdown on conn={connection}, which is no longer open");
            return;
        };
        log::info!(
            "serverShutdown on replacement slot={index} conn={connection}, \
             rotating after the switch"
        );
        self.slots[index].rotate_after_switch = Some("server_shutdown");
    }

    fn on_ended(
        &mut self,
        index: usize,
        connection: ConnectionId,
        reason: EndReason,
        uptime: Option<Duration>,
        frames: u64,
    ) {
        self.context.stats.count_end(&reason, uptime.is_some());
        if let Some(timer) = self.timer.as_ref() {
            timer.unwatch(connection);
        }
        if let EndReason::Rejected { status, .. } = &reason {
            self.context.stats.rejections.inc(&status.to_string());
            if matches!(status, 403 | 451) {
                self.context.stats.access_denied.set(1);
            }
        }
        let healthy_after = self.settings.healthy_after;
        let slot = &mut self.slots[index];
        slot.status.set_last_end(reason.to_string());

        if let Some(position) = slot.retired.iter().position(|h| h.connection == connection) {
            join_reader(slot.retired.swap_remove(position));
            log::debug!("slot={index} conn={connection} retired: {reason}");
            self.start_deferred_rotation(index);
            return;
        }
        if slot.replacement.as_ref().is_some_and(|h| h.connection == connection) {
            if let Some(handle) = slot.replacement.take() {
                join_reader(handle);
            }
            slot.overlap_until = None;
            slot.rotate_after_switch = None;
            slot.status.set_replacement(None);
            // The reader's end marker, behind its last frames, tells the
            // pipeline to keep the old connection as the authority.
            let delay = reconnect_delay(&reason, &mut slot.backoff);
            if matches!(reason, EndReason::Rejected { status: 418 | 429, .. }) {
                slot.rate_limited = true;
                self.context.stats.rate_limited.set(1);
            }
            slot.replace_at = Some(Instant::now() + delay);
            let delay_ms = delay.as_millis();
            if needs_operator(&reason) {
                log::error!(
                    "replacement slot={index} conn={connection} failed: {reason}; \
                     retry in {delay_ms} ms (step {})",
                    slot.backoff.step()
                );
            } else {
                log::warn!(
                    "replacement slot={index} conn={connection} failed: {reason}; \
                     retry in {delay_ms} ms (step {})",
                    slot.backoff.step()
                );
            }
            return;
        }
        if slot.current.as_ref().is_none_or(|h| h.connection != connection) {
            return;
        }
        if let Some(handle) = slot.current.take() {
            join_reader(handle);
        }

        if let Some(replacement) = slot.replacement.take() {
            // The old connection ended before every stream switched. The
            // replacement takes over at once, and the pipeline's overlap
            // deadline settles the streams that have not met.
            log::warn!(
                "slot={index} conn={connection} ended: {reason}; replacement conn={} takes over",
                replacement.connection
            );
            slot.status.set_state(SlotState::Open, Some(replacement.connection));
            slot.status.set_replacement(None);
            slot.overlap_until = None;
            slot.current = Some(replacement);
            self.start_deferred_rotation(index);
            return;
        }

        if uptime.is_some_and(|up| up >= healthy_after) && frames > 0 {
            slot.backoff.reset();
        }
        let delay = reconnect_delay(&reason, &mut slot.backoff);
        if matches!(reason, EndReason::Rejected { status: 418 | 429, .. }) {
            slot.rate_limited = true;
            self.context.stats.rate_limited.set(1);
        }
        slot.retry_at = Some(Instant::now() + delay);
        slot.status.set_state(SlotState::Backoff, None);
        let up = uptime.map_or_else(
            || "never opened".to_string(),
            |up| format!("up {:.1} s", up.as_secs_f64()),
        );
        let delay_ms = delay.as_millis();
        if needs_operator(&reason) {
            log::error!(
                "slot={index} conn={connection} {reason}; reconnect in {delay_ms} ms (step {})",
                slot.backoff.step()
            );
        } else {
            log::warn!(
                "disconnected slot={index} conn={connection} ({up}, {frames} frames): {reason}; \
                 reconnect in {delay_ms} ms (step {})",
                slot.backoff.step()
            );
        }
    }

    fn shutdown(&mut self) {
        let mut handles: Vec<ReaderHandle> = Vec::new();
        for slot in &mut self.slots {
            slot.retry_at = None;
            slot.replace_at = None;
            handles.extend(slot.current.take());
            handles.extend(slot.replacement.take());
            handles.append(&mut slot.retired);
        }
        log::info!("closing {} connection(s)", handles.len());
        for handle in &handles {
            let _ = handle.commands.try_send(Command::Close);
        }

        let deadline = Instant::now() + STOP_WAIT;
        let mut open: Vec<ConnectionId> = handles.iter().map(|h| h.connection).collect();
        while !open.is_empty() {
            self.checkin.beat();
            match self.event_rx.recv_deadline(deadline) {
                Ok(ReaderEvent::Ended { slot, connection, reason, .. }) => {
                    open.retain(|id| *id != connection);
                    log::info!("closed slot={slot} conn={connection}: {reason}");
                }
                Ok(_) => {}
                Err(_) => {
                    log::error!("{} connection(s) did not close within {STOP_WAIT:?}", open.len());
                    break;
                }
            }
        }
        for handle in handles {
            if open.contains(&handle.connection) {
                continue;
            }
            join_reader(handle);
        }
        self.context.stats.backoff_ms.set(0);
        if let Some(timer) = self.timer.take() {
            timer.stop();
        }
        log::info!("scheduler stopped");
    }
}

/// Delay before reconnecting after `reason`. HTTP 429 and 418 wait at least
/// the server's `Retry-After`, or minutes when it gave none.
pub fn reconnect_delay(reason: &EndReason, backoff: &mut Backoff) -> Duration {
    let delay = backoff.next_delay();
    match reason {
        EndReason::Rejected { status: 429, retry_after } => {
            delay.max(retry_after.unwrap_or(RATE_LIMIT_WAIT))
        }
        EndReason::Rejected { status: 418, retry_after } => {
            delay.max(retry_after.unwrap_or(BAN_WAIT))
        }
        _ => delay,
    }
}

/// Returns whether a person must act on `reason`: a ban, a rate limit,
/// denied access, or a certificate that does not verify, which retrying
/// cannot fix.
fn needs_operator(reason: &EndReason) -> bool {
    matches!(
        reason,
        EndReason::Rejected { status: 418 | 429 | 403 | 451, .. } | EndReason::Tls { .. }
    )
}

fn join_reader(handle: ReaderHandle) {
    let connection = handle.connection;
    if handle.thread.join().is_err() {
        log::error!("reader thread of conn={connection} panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_sets_the_minimum_delay() {
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(20), 5);
        let limited =
            EndReason::Rejected { status: 429, retry_after: Some(Duration::from_secs(3)) };
        assert_eq!(reconnect_delay(&limited, &mut backoff), Duration::from_secs(3));
        let banned = EndReason::Rejected { status: 418, retry_after: None };
        assert_eq!(reconnect_delay(&banned, &mut backoff), BAN_WAIT);
        assert!(reconnect_delay(&EndReason::Eof, &mut backoff) <= Duration::from_millis(20));
    }
}
