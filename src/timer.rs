//! The timer thread: client pings, watchdogs and rotation deadlines of every
//! open connection.
//!
//! The scheduler registers each connection when its handshake completes and
//! removes it when it ends. Every tick the timer compares the connection's
//! [`ConnectionClock`] (written by its reader) with the deadlines below and
//! acts: it asks the reader to send a ping, tells the reader to end a dead
//! connection, or tells the scheduler that a rotation is due. The deadline
//! logic lives in [`Deadlines`], which takes the time as an argument so
//! tests drive it without sleeping. This thread never touches a socket and
//! never blocks on a reader: commands go out with `try_send`.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};

use crate::backoff::Rng;
use crate::connection::{ConnectionClock, ConnectionStats, WatchdogKind};
use crate::frame::ConnectionId;
use crate::liveness::Checkin;
use crate::reader::Command;

/// Maximum and minimum timer tick. The tick is a tenth of the shortest
/// configured interval within these bounds.
const MAX_TICK: Duration = Duration::from_millis(250);
const MIN_TICK: Duration = Duration::from_millis(5);

/// Timer intervals, all from the configuration.
#[derive(Clone, Debug)]
pub struct TimerSettings {
    /// Interval of client pings; zero sends none.
    pub client_ping_interval: Duration,
    /// Time a client ping waits for its pong.
    pub pong_timeout: Duration,
    /// No frame of any kind for this long: the connection is dead.
    pub stale_after: Duration,
    /// No data frame for this long: the connection is dead; zero is off.
    pub data_stale_after: Duration,
    /// Opt-in per-stream thresholds on the age of the newest stored event.
    pub stream_stale_after: Vec<(String, Duration)>,
    /// Connection age that triggers a rotation; zero is off.
    pub rotate_interval: Duration,
    /// Largest share of `rotate_interval` a rotation comes early, in percent.
    pub rotate_jitter_percent: usize,
}

impl TimerSettings {
    /// Tick of the timer thread: a tenth of the shortest interval, 5 ms to
    /// 250 ms.
    pub fn tick(&self) -> Duration {
        let mut intervals = vec![
            self.client_ping_interval,
            self.pong_timeout,
            self.stale_after,
            self.data_stale_after,
            self.rotate_interval,
        ];
        intervals.extend(self.stream_stale_after.iter().map(|(_, after)| *after));
        let shortest = intervals.into_iter().filter(|d| !d.is_zero()).min().unwrap_or(MAX_TICK);
        (shortest / 10).clamp(MIN_TICK, MAX_TICK)
    }
}

/// Timer decision for one connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Ask the reader to send a client ping.
    Ping,
    /// End the connection: a watchdog fired.
    Kill(WatchdogKind),
    /// Ask the scheduler to replace the connection make-before-break.
    Rotate,
}

/// What the reader last recorded, in ns since the Unix epoch (0 = never).
#[derive(Clone, Copy, Debug, Default)]
pub struct Observed {
    /// Last frame of any kind.
    pub last_frame_ns: u64,
    /// Last data frame.
    pub last_data_ns: u64,
    /// Send time of the client ping still waiting for its pong.
    pub ping_outstanding_ns: u64,
}

/// Deadlines of one connection. Times are ns since the Unix epoch.
#[derive(Clone, Debug)]
pub struct Deadlines {
    opened_ns: u64,
    next_ping_ns: Option<u64>,
    rotate_at_ns: Option<u64>,
    finished: bool,
}

impl Deadlines {
    /// Deadlines of a connection opened at `opened_ns`. `jitter` in [0, 1)
    /// moves the rotation earlier by that share of the configured jitter.
    pub fn new(settings: &TimerSettings, opened_ns: u64, jitter: f64) -> Deadlines {
        let next_ping_ns = (!settings.client_ping_interval.is_zero())
            .then(|| opened_ns + nanos(settings.client_ping_interval));
        let rotate_at_ns = (!settings.rotate_interval.is_zero())
            .then(|| opened_ns + nanos(rotation_delay(settings, jitter)));
        Deadlines { opened_ns, next_ping_ns, rotate_at_ns, finished: false }
    }

    /// Returns the rotation time, if rotation is on.
    pub fn rotate_at_ns(&self) -> Option<u64> {
        self.rotate_at_ns
    }

    /// Makes a kill due again at the next poll, after the command could
    /// not be delivered.
    pub fn retry_kill(&mut self) {
        self.finished = false;
    }

    /// Makes the rotation due again at the next poll, after the scheduler's
    /// queue was full.
    pub fn retry_rotation(&mut self, now_ns: u64) {
        self.rotate_at_ns = Some(now_ns);
    }

    /// Returns the most urgent action due at `now_ns`, if any. A kill is
    /// returned once; after it nothing more is due. `stream_ages` lists, for
    /// each stream with an opt-in threshold, the receive time of its newest
    /// stored event (0 for none yet) and the threshold.
    pub fn poll(
        &mut self,
        settings: &TimerSettings,
        now_ns: u64,
        observed: Observed,
        stream_ages: &[(&str, u64, Duration)],
    ) -> Option<Action> {
        if self.finished {
            return None;
        }
        if let Some(kind) = self.watchdog(settings, now_ns, observed, stream_ages) {
            self.finished = true;
            return Some(Action::Kill(kind));
        }
        if self.rotate_at_ns.is_some_and(|at| now_ns >= at) {
            self.rotate_at_ns = None;
            return Some(Action::Rotate);
        }
        if let Some(at) = self.next_ping_ns
            && now_ns >= at
            && observed.ping_outstanding_ns == 0
        {
            self.next_ping_ns = Some(now_ns + nanos(settings.client_ping_interval));
            return Some(Action::Ping);
        }
        None
    }

    fn watchdog(
        &self,
        settings: &TimerSettings,
        now_ns: u64,
        observed: Observed,
        stream_ages: &[(&str, u64, Duration)],
    ) -> Option<WatchdogKind> {
        let since = |last_ns: u64| now_ns.saturating_sub(last_ns.max(self.opened_ns));
        if since(observed.last_frame_ns) > nanos(settings.stale_after) {
            return Some(WatchdogKind::Stale);
        }
        if observed.ping_outstanding_ns > 0
            && now_ns.saturating_sub(observed.ping_outstanding_ns) > nanos(settings.pong_timeout)
        {
            return Some(WatchdogKind::PongTimeout);
        }
        if !settings.data_stale_after.is_zero()
            && since(observed.last_data_ns) > nanos(settings.data_stale_after)
        {
            // A data threshold below the stale threshold also catches a
            // total stall first; label it by what was missing.
            if since(observed.last_frame_ns) > nanos(settings.data_stale_after) {
                return Some(WatchdogKind::Stale);
            }
            return Some(WatchdogKind::NoData);
        }
        for (stream, last_ns, after) in stream_ages {
            if since(*last_ns) > nanos(*after) {
                return Some(WatchdogKind::StreamStale((*stream).to_string()));
            }
        }
        None
    }
}

/// Delay from open to rotation: the interval, moved earlier by `jitter`
/// (in [0, 1)) times the configured jitter share.
pub fn rotation_delay(settings: &TimerSettings, jitter: f64) -> Duration {
    let share = settings.rotate_jitter_percent.min(100) as f64 / 100.0;
    settings.rotate_interval.mul_f64(1.0 - share * jitter.clamp(0.0, 1.0))
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// Report from the timer to the scheduler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerEvent {
    /// The connection reached its rotation age.
    RotateDue {
        /// Plan slot.
        slot: usize,
        /// Connection id.
        connection: ConnectionId,
    },
}

/// Newest stored event per stream, as (stream, receive time in ns).
pub type StreamAges = Arc<dyn Fn() -> Vec<(String, u64)> + Send + Sync>;

/// A connection the timer watches.
struct Watched {
    slot: usize,
    connection: ConnectionId,
    commands: Sender<Command>,
    clock: Arc<ConnectionClock>,
    deadlines: Deadlines,
    /// Streams of the connection that have an opt-in threshold.
    thresholds: Vec<(String, Duration)>,
}

/// Handle of the timer thread; the scheduler registers connections here.
pub struct Timer {
    settings: TimerSettings,
    watched: Arc<Mutex<Vec<Watched>>>,
    rng: Mutex<Rng>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl Timer {
    /// Starts the timer thread.
    ///
    /// # Errors
    ///
    /// Fails when the operating system cannot start a thread.
    pub fn spawn(
        settings: TimerSettings,
        events: Sender<TimerEvent>,
        stats: Arc<ConnectionStats>,
        stream_ages: StreamAges,
        checkin: Checkin,
    ) -> io::Result<Timer> {
        let watched: Arc<Mutex<Vec<Watched>>> = Arc::new(Mutex::new(Vec::new()));
        let (stop, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let loop_settings = settings.clone();
        let loop_watched = watched.clone();
        let thread = std::thread::Builder::new().name("timer".into()).spawn(move || {
            run(&loop_settings, &loop_watched, &events, &stats, &stream_ages, &checkin, &stop_rx)
        })?;
        Ok(Timer { settings, watched, rng: Mutex::new(Rng::from_entropy(0x7131)), stop, thread })
    }

    /// Starts watching a connection whose handshake completed. `streams` are
    /// the streams it carries.
    pub fn watch(
        &self,
        slot: usize,
        connection: ConnectionId,
        commands: Sender<Command>,
        clock: Arc<ConnectionClock>,
        streams: &[String],
    ) {
        let jitter = self.rng.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).next_f64();
        let opened_ns = match clock.opened_ns.load(Ordering::Relaxed) {
            0 => unix_nanos(),
            opened => opened,
        };
        let deadlines = Deadlines::new(&self.settings, opened_ns, jitter);
        if let Some(at) = deadlines.rotate_at_ns() {
            let delay = Duration::from_nanos(at.saturating_sub(opened_ns));
            log::debug!("slot={slot} conn={connection} rotation due in {delay:?}");
        }
        let thresholds = self
            .settings
            .stream_stale_after
            .iter()
            .filter(|(stream, _)| streams.contains(stream))
            .cloned()
            .collect();
        let entry = Watched { slot, connection, commands, clock, deadlines, thresholds };
        self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(entry);
    }

    /// Stops watching a connection.
    pub fn unwatch(&self, connection: ConnectionId) {
        let mut watched = self.watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        watched.retain(|entry| entry.connection != connection);
    }

    /// Stops the thread and waits for it.
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            log::error!("timer thread panicked");
        }
    }
}

fn run(
    settings: &TimerSettings,
    watched: &Mutex<Vec<Watched>>,
    events: &Sender<TimerEvent>,
    stats: &ConnectionStats,
    stream_ages: &StreamAges,
    checkin: &Checkin,
    stop: &Receiver<()>,
) {
    let tick = settings.tick();
    log::debug!("timer started tick={tick:?}");
    loop {
        checkin.beat();
        match stop.recv_timeout(tick) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
            _ => break,
        }
        let ages = if settings.stream_stale_after.is_empty() { Vec::new() } else { stream_ages() };
        let now_ns = unix_nanos();
        let mut watched = watched.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        for entry in watched.iter_mut() {
            let observed = Observed {
                last_frame_ns: entry.clock.last_frame_ns.load(Ordering::Relaxed),
                last_data_ns: entry.clock.last_data_ns.load(Ordering::Relaxed),
                ping_outstanding_ns: entry.clock.ping_outstanding_ns.load(Ordering::Relaxed),
            };
            let stream_ages: Vec<(&str, u64, Duration)> = entry
                .thresholds
                .iter()
                .map(|(stream, after)| {
                    let last = ages.iter().find(|(name, _)| name == stream).map_or(0, |(_, t)| *t);
                    (stream.as_str(), last, *after)
                })
                .collect();
            let Some(action) = entry.deadlines.poll(settings, now_ns, observed, &stream_ages)
            else {
                continue;
            };
            if act(entry, &action, events, stats) {
                continue;
            }
            match action {
                Action::Kill(_) => entry.deadlines.retry_kill(),
                Action::Rotate => entry.deadlines.retry_rotation(now_ns),
                // A missed ping is sent at the next interval.
                Action::Ping => {}
            }
        }
    }
    log::debug!("timer stopped");
}

/// Carries out `action` and returns whether its message was delivered.
/// Nothing here blocks: a full reader or scheduler queue fails the send.
fn act(
    entry: &Watched,
    action: &Action,
    events: &Sender<TimerEvent>,
    stats: &ConnectionStats,
) -> bool {
    let (slot, connection) = (entry.slot, entry.connection);
    match action {
        Action::Ping => entry.commands.try_send(Command::Ping).is_ok(),
        Action::Rotate => events.try_send(TimerEvent::RotateDue { slot, connection }).is_ok(),
        Action::Kill(kind) => {
            if entry.commands.try_send(Command::Kill(kind.clone())).is_err() {
                log::debug!("slot={slot} conn={connection} kill not delivered, retrying");
                return false;
            }
            stats.watchdog_kills.inc(kind.label());
            if *kind == WatchdogKind::PongTimeout {
                stats.pong_timeouts.inc();
            }
            log::warn!("watchdog ends slot={slot} conn={connection} kind={}", kind.label());
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const OPEN: u64 = 1_000_000 * MS;

    fn settings() -> TimerSettings {
        TimerSettings {
            client_ping_interval: Duration::from_millis(100),
            pong_timeout: Duration::from_millis(50),
            stale_after: Duration::from_millis(300),
            data_stale_after: Duration::from_millis(500),
            stream_stale_after: Vec::new(),
            rotate_interval: Duration::from_millis(1000),
            rotate_jitter_percent: 10,
        }
    }

    fn fresh(at: u64) -> Observed {
        Observed { last_frame_ns: at, last_data_ns: at, ping_outstanding_ns: 0 }
    }

    #[test]
    fn pings_follow_interval() {
        let settings = settings();
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        assert_eq!(deadlines.poll(&settings, OPEN + 99 * MS, fresh(OPEN + 99 * MS), &[]), None);
        let now = OPEN + 100 * MS;
        assert_eq!(deadlines.poll(&settings, now, fresh(now), &[]), Some(Action::Ping));
        assert_eq!(deadlines.poll(&settings, now + MS, fresh(now), &[]), None, "one per interval");
        let now = OPEN + 200 * MS;
        assert_eq!(deadlines.poll(&settings, now, fresh(now), &[]), Some(Action::Ping));
    }

    #[test]
    fn missing_pong_kills_after_timeout() {
        let settings = settings();
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let sent = OPEN + 100 * MS;
        let waiting = Observed { ping_outstanding_ns: sent, ..fresh(sent) };
        assert_eq!(deadlines.poll(&settings, sent + 50 * MS, waiting, &[]), None);
        let kill = deadlines.poll(&settings, sent + 51 * MS, waiting, &[]);
        assert_eq!(kill, Some(Action::Kill(WatchdogKind::PongTimeout)));
        assert_eq!(deadlines.poll(&settings, sent + 60 * MS, waiting, &[]), None, "kill once");
        deadlines.retry_kill();
        let again = deadlines.poll(&settings, sent + 70 * MS, waiting, &[]);
        assert_eq!(again, Some(Action::Kill(WatchdogKind::PongTimeout)), "undelivered kill");
    }

    #[test]
    fn silence_kills_as_stale_before_no_data() {
        let settings = settings();
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let silent = Observed::default();
        let now = OPEN + 301 * MS;
        assert_eq!(
            deadlines.poll(&settings, now, silent, &[]),
            Some(Action::Kill(WatchdogKind::Stale))
        );
    }

    #[test]
    fn silence_under_data_threshold_kills_as_stale() {
        let settings = TimerSettings { data_stale_after: Duration::from_millis(200), ..settings() };
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let now = OPEN + 201 * MS;
        assert_eq!(
            deadlines.poll(&settings, now, Observed::default(), &[]),
            Some(Action::Kill(WatchdogKind::Stale))
        );
    }

    #[test]
    fn pings_without_data_kill_as_no_data() {
        let settings = TimerSettings { client_ping_interval: Duration::ZERO, ..settings() };
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let now = OPEN + 400 * MS;
        let pings_only = Observed { last_frame_ns: now, last_data_ns: OPEN, ..Observed::default() };
        assert_eq!(deadlines.poll(&settings, now, pings_only, &[]), None);
        let now = OPEN + 501 * MS;
        let pings_only = Observed { last_frame_ns: now, ..pings_only };
        assert_eq!(
            deadlines.poll(&settings, now, pings_only, &[]),
            Some(Action::Kill(WatchdogKind::NoData))
        );
    }

    #[test]
    fn data_watchdog_zero_is_off() {
        let settings = TimerSettings {
            client_ping_interval: Duration::ZERO,
            data_stale_after: Duration::ZERO,
            rotate_interval: Duration::ZERO,
            ..settings()
        };
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        for step in 1..100u64 {
            let now = OPEN + step * 100 * MS;
            let pings_only = Observed { last_frame_ns: now, ..Observed::default() };
            assert_eq!(deadlines.poll(&settings, now, pings_only, &[]), None, "at step {step}");
        }
    }

    #[test]
    fn stream_threshold_counts_from_open() {
        let settings = TimerSettings { client_ping_interval: Duration::ZERO, ..settings() };
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let now = OPEN + 150 * MS;
        let ages = [("btcusdt@trade", 0, Duration::from_millis(200))];
        assert_eq!(deadlines.poll(&settings, now, fresh(now), &ages), None, "measured from open");
        let now = OPEN + 201 * MS;
        assert_eq!(
            deadlines.poll(&settings, now, fresh(now), &ages),
            Some(Action::Kill(WatchdogKind::StreamStale("btcusdt@trade".into())))
        );
    }

    #[test]
    fn rotation_jitter_moves_it_earlier_within_share() {
        let settings = settings();
        assert_eq!(rotation_delay(&settings, 0.0), Duration::from_millis(1000));
        assert_eq!(rotation_delay(&settings, 0.5), Duration::from_millis(950));
        assert!(rotation_delay(&settings, 0.999) > Duration::from_millis(900));
        let mut rng = Rng::new(3);
        let delays: Vec<Duration> =
            (0..100).map(|_| rotation_delay(&settings, rng.next_f64())).collect();
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 90, "jitter spreads rotations");
    }

    #[test]
    fn rotation_is_due_once() {
        let settings = TimerSettings { client_ping_interval: Duration::ZERO, ..settings() };
        let mut deadlines = Deadlines::new(&settings, OPEN, 0.0);
        let now = OPEN + 999 * MS;
        assert_eq!(deadlines.poll(&settings, now, fresh(now), &[]), None);
        let now = OPEN + 1000 * MS;
        assert_eq!(deadlines.poll(&settings, now, fresh(now), &[]), Some(Action::Rotate));
        assert_eq!(deadlines.poll(&settings, now + MS, fresh(now), &[]), None);
    }

    #[test]
    fn tick_follows_shortest_interval() {
        assert_eq!(settings().tick(), Duration::from_millis(5));
        let slow = TimerSettings {
            client_ping_interval: Duration::from_secs(180),
            pong_timeout: Duration::from_secs(30),
            stale_after: Duration::from_secs(60),
            data_stale_after: Duration::ZERO,
            stream_stale_after: Vec::new(),
            rotate_interval: Duration::from_secs(4 * 3600),
            rotate_jitter_percent: 5,
        };
        assert_eq!(slow.tick(), MAX_TICK);
    }
}
