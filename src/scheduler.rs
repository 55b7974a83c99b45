//! The scheduler thread: which connections exist, when they reconnect, and
//! when one replaces another.
//!
//! Each slot of the connection plan has at most one current connection and,
//! while a replacement is under way, one replacement. A connection that ends
//! while the service still wants it is reconnected after a backoff delay. A
//! `serverShutdown` notice replaces the connection make-before-break: the
//! replacement opens, and the old one closes with code 1000 only once the
//! replacement has delivered data. The pipeline drops the duplicates of the
//! overlap.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select};

use crate::backoff::{AttemptBudget, Backoff, Rng};
use crate::connection::{ConnectionStats, EndReason, SlotState, SlotStatus};
use crate::frame::{ConnectionId, FrameBatch};
use crate::liveness::{Checkin, Liveness};
use crate::pipeline::Notice;
use crate::plan::ConnectionPlan;
use crate::reader::{self, Command, ReaderEvent, ReaderHandle, ReaderSettings, ReaderTask};

/// A connection that stayed up this long and delivered data resets the
/// backoff of its slot.
pub const HEALTHY_AFTER: Duration = Duration::from_secs(60);

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
    pub frames: Sender<FrameBatch>,
    /// Notices from the pipeline.
    pub notices: Receiver<Notice>,
    /// Status of every slot, in plan order.
    pub slots: Vec<Arc<SlotStatus>>,
    /// Shared counters.
    pub stats: Arc<ConnectionStats>,
    /// Check-in registry, for the scheduler and its readers.
    pub liveness: Arc<Liveness>,
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
    let thread = std::thread::Builder::new().name("scheduler".into()).spawn(move || {
        let mut scheduler = Scheduler::new(settings, plans, context, checkin);
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
}

impl Scheduler {
    fn new(
        settings: SchedulerSettings,
        plans: Vec<ConnectionPlan>,
        context: SchedulerContext,
        checkin: Checkin,
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
                recv(notices) -> notice => match notice {
                    Ok(Notice::ServerShutdown { connection }) => self.on_server_shutdown(connection),
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
                self.start(index, true, now);
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
        };
        match reader::spawn(task) {
            Ok(handle) if replacement => {
                slot.replace_at = None;
                slot.replacement = Some(handle);
            }
            Ok(handle) => {
                slot.retry_at = None;
                slot.status.set_state(SlotState::Connecting, Some(connection));
                slot.current = Some(handle);
            }
            Err(error) => {
                let delay = slot.backoff.next_delay();
                log::error!(
                    "slot={index} failed to start a reader thread: {error}; retry in {delay:?}"
                );
                if replacement {
                    slot.replace_at = Some(now + delay);
                } else {
                    slot.retry_at = Some(now + delay);
                }
            }
        }
    }

    fn on_event(&mut self, event: ReaderEvent) {
        match event {
            ReaderEvent::Opened { slot, connection } => {
                let role = if self.is_replacement(slot, connection) { "replacement " } else { "" };
                let plan = &self.slots[slot].plan;
                log::info!(
                    "connected {role}slot={slot} conn={connection} route={} streams={}",
                    plan.route.name(),
                    plan.streams.len()
                );
            }
            ReaderEvent::FirstData { slot, connection } => {
                if self.is_replacement(slot, connection) {
                    self.switch_to_replacement(slot);
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

    /// The replacement delivers data: it becomes current, and the old
    /// connection closes with code 1000.
    fn switch_to_replacement(&mut self, index: usize) {
        let slot = &mut self.slots[index];
        let Some(replacement) = slot.replacement.take() else { return };
        let new_connection = replacement.connection;
        if let Some(old) = slot.current.replace(replacement) {
            log::info!("replaced slot={index} conn={} with conn={new_connection}", old.connection);
            let _ = old.commands.try_send(Command::Close);
            slot.retired.push(old);
        }
        slot.status.set_state(SlotState::Open, Some(new_connection));
    }

    fn on_server_shutdown(&mut self, connection: ConnectionId) {
        let found = self.slots.iter().position(|slot| {
            slot.current.as_ref().is_some_and(|handle| handle.connection == connection)
        });
        let Some(index) = found else {
            log::debug!("serverShutdown on conn={connection}, which is no longer current");
            return;
        };
        let slot = &mut self.slots[index];
        if slot.replacement.is_none() && slot.replace_at.is_none() {
            log::info!("serverShutdown on slot={index} conn={connection}, opening a replacement");
            slot.replace_at = Some(Instant::now());
        }
    }

    fn on_ended(
        &mut self,
        index: usize,
        connection: ConnectionId,
        reason: EndReason,
        uptime: Option<Duration>,
        frames: u64,
    ) {
        self.context.stats.count_disconnect(&reason);
        let slot = &mut self.slots[index];
        slot.status.set_last_end(reason.to_string());

        if let Some(position) = slot.retired.iter().position(|h| h.connection == connection) {
            join_reader(slot.retired.swap_remove(position));
            log::debug!("slot={index} conn={connection} retired: {reason}");
            return;
        }
        if slot.replacement.as_ref().is_some_and(|h| h.connection == connection) {
            if let Some(handle) = slot.replacement.take() {
                join_reader(handle);
            }
            let delay = slot.backoff.next_delay();
            log::warn!(
                "replacement slot={index} conn={connection} failed: {reason}; retry in {delay:?}"
            );
            slot.replace_at = Some(Instant::now() + delay);
            return;
        }
        if slot.current.as_ref().is_none_or(|h| h.connection != connection) {
            return;
        }
        if let Some(handle) = slot.current.take() {
            join_reader(handle);
        }

        if let Some(replacement) = slot.replacement.take() {
            // The old connection ended before the replacement delivered
            // data; the replacement takes over at once.
            log::warn!(
                "slot={index} conn={connection} ended: {reason}; replacement conn={} takes over",
                replacement.connection
            );
            slot.status.set_state(SlotState::Connecting, Some(replacement.connection));
            slot.current = Some(replacement);
            return;
        }

        if uptime.is_some_and(|up| up >= HEALTHY_AFTER) && frames > 0 {
            slot.backoff.reset();
        }
        let delay = reconnect_delay(&reason, &mut slot.backoff);
        slot.retry_at = Some(Instant::now() + delay);
        slot.status.set_state(SlotState::Backoff, None);
        let up = uptime.map_or_else(|| "never opened".to_string(), |up| format!("up {up:?}"));
        match &reason {
            EndReason::Rejected { status: 418 | 429 | 403 | 451, .. } => log::error!(
                "slot={index} conn={connection} {reason}; reconnect in {delay:?} (step {})",
                slot.backoff.step()
            ),
            _ => log::warn!(
                "disconnected slot={index} conn={connection} ({up}, {frames} frames): {reason}; \
                 reconnect in {delay:?} (step {})",
                slot.backoff.step()
            ),
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
