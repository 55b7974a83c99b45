//! One WebSocket connection, read by its own thread.
//!
//! The reader owns its socket: it connects (TCP, TLS, WebSocket handshake),
//! then reads frames, stamps each data frame with its receive time, and hands
//! them to the pipeline in batches. It never parses payloads and never
//! touches disk. It never blocks on a full pipeline queue either: a reader
//! that stops reading stops sending pongs and gets cut off by the server.
//! A short socket read timeout keeps the loop turning, so the pong that
//! tungstenite queues after a ping goes out on the next read, commands are
//! seen promptly, and a partly filled batch is handed over within the batch
//! delay. Pongs go out at most every [`PONG_SPACING`]. When pings come
//! faster, the reader sends one pong later, for the latest ping only, as
//! RFC 6455 section 5.5.3 allows. Client pings follow their own spacing,
//! [`CLIENT_PING_SPACING`], so fast server pings never delay them.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::{Message, WebSocket};

use crate::connection::{
    ConnectionClock, ConnectionStats, EndReason, SlotState, SlotStatus, WatchdogKind,
};
use crate::frame::{BatchPool, ConnectionId, FrameBatch, FrameKind, FrameSender};
use crate::liveness::Checkin;
use crate::lograte::LogLimiter;
use crate::tls;
use crate::venue::Endpoint;

/// How many batch sizes of frames a reader keeps while the pipeline queue is
/// full (by batch count or by `FRAME_QUEUE_BYTES`), before it drops them. The memory budget counts the same figure.
pub const HOLD_FACTOR: usize = 4;

/// Idle batches a reader keeps for reuse once the pipeline has processed
/// them. Two cover the batch being filled and the one being processed.
pub const SPARE_BATCHES: usize = 2;

/// Read timeout while no frame is waiting to be handed over. It bounds how
/// long a command or a stop waits to be seen.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// How long a reader waits for the server's close reply after it sends its
/// own close frame. Data that arrives meanwhile is still stored.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// How long the final batch may wait for room in the pipeline queue when the
/// connection ends. Longer than any normal hiccup; bounded so shutdown ends.
const FINAL_SEND_WAIT: Duration = Duration::from_secs(10);

/// Settings shared by every reader.
#[derive(Clone, Debug)]
pub struct ReaderSettings {
    /// Server to connect to.
    pub endpoint: Endpoint,
    /// TLS client configuration.
    pub tls: Arc<ClientConfig>,
    /// Time allowed for TCP connect, TLS and WebSocket handshakes each.
    pub connect_timeout: Duration,
    /// Largest message accepted, in bytes.
    pub max_message_size: usize,
    /// Largest frame accepted, in bytes.
    pub max_frame_size: usize,
    /// Maximum time a received frame waits in a batch.
    pub batch_delay: Duration,
    /// Batch payload size that triggers an immediate hand-over, in bytes.
    pub batch_size: usize,
}

/// Shortest time between two client pings of one reader. Binance counts
/// pings, pongs and requests toward 5 messages a second on spot and 10 on
/// futures, and closes a connection beyond that with code 1008. At most one
/// client ping and three pongs ([`PONG_SPACING`]) fall in any second, which
/// leaves room for the close frame.
pub const CLIENT_PING_SPACING: Duration = Duration::from_secs(1);

/// Shortest time between two pongs of one reader, so it sends at most 3
/// pongs in any second, however often the server pings.
pub const PONG_SPACING: Duration = Duration::from_millis(340);

/// Request to a running reader.
#[derive(Debug)]
pub enum Command {
    /// Close the connection with code 1000 and end: service shutdown.
    Close,
    /// Close with code 1000 because a replacement has taken over.
    Retire,
    /// Send a client ping, no sooner than [`CLIENT_PING_SPACING`] after the
    /// previous client ping.
    Ping,
    /// End the connection at once: a watchdog found it dead.
    Kill(WatchdogKind),
}

/// Report from a reader to the scheduler.
#[derive(Debug)]
pub enum ReaderEvent {
    /// The WebSocket handshake completed.
    Opened {
        /// Plan slot.
        slot: usize,
        /// Connection id.
        connection: ConnectionId,
    },
    /// The first data frame arrived.
    FirstData {
        /// Plan slot.
        slot: usize,
        /// Connection id.
        connection: ConnectionId,
    },
    /// The connection ended, or never opened. Sent exactly once.
    Ended {
        /// Plan slot.
        slot: usize,
        /// Connection id.
        connection: ConnectionId,
        /// Reason the connection ended.
        reason: EndReason,
        /// Time from handshake to end; `None` when it never opened.
        uptime: Option<Duration>,
        /// Data frames received on it.
        frames: u64,
    },
}

/// Handle of a running reader thread.
#[derive(Debug)]
pub struct ReaderHandle {
    /// Connection id.
    pub connection: ConnectionId,
    /// Command channel.
    pub commands: Sender<Command>,
    /// Live timing of the connection, for the timer thread.
    pub clock: Arc<ConnectionClock>,
    /// Thread handle.
    pub thread: JoinHandle<()>,
}

/// Everything one reader thread needs.
pub struct ReaderTask {
    /// Plan slot.
    pub slot: usize,
    /// Connection id.
    pub connection: ConnectionId,
    /// Request path and query, e.g. `/stream?streams=btcusdt@trade`.
    pub path_and_query: String,
    /// Shared settings.
    pub settings: ReaderSettings,
    /// Queue to the pipeline, bounded by batches and bytes.
    pub frames: FrameSender,
    /// Reports to the scheduler.
    pub events: Sender<ReaderEvent>,
    /// Live status of the slot.
    pub status: Arc<SlotStatus>,
    /// Shared counters.
    pub stats: Arc<ConnectionStats>,
    /// Liveness check-in of this thread.
    pub checkin: Checkin,
    /// Live timing of this connection, shared with the timer thread.
    pub clock: Arc<ConnectionClock>,
}

/// Starts a reader thread.
///
/// # Errors
///
/// Fails when the operating system cannot start a thread.
pub fn spawn(task: ReaderTask) -> io::Result<ReaderHandle> {
    let (commands, command_rx) = crossbeam_channel::bounded(16);
    let connection = task.connection;
    let clock = task.clock.clone();
    let thread = std::thread::Builder::new()
        .name(format!("reader-{}-{}", task.slot, task.connection))
        .spawn(move || run(task, command_rx))?;
    Ok(ReaderHandle { connection, commands, clock, thread })
}

type Socket = WebSocket<Transport>;

fn run(task: ReaderTask, commands: Receiver<Command>) {
    let url = format!("{}{}", task.settings.endpoint.origin(), task.path_and_query);
    task.stats.attempts.inc();
    log::debug!("connecting slot={} conn={} url={url}", task.slot, task.connection);

    let (reason, uptime, frames) = match connect(&task.settings, &url) {
        Ok(socket) => {
            let opened_at = Instant::now();
            task.clock.opened_ns.store(unix_nanos(), Ordering::Relaxed);
            task.status.set_state_if_current(SlotState::Open, task.connection);
            task.stats.connects.inc();
            task.stats.access_denied.set(0);
            task.stats.open.add(1);
            let _ = task
                .events
                .send(ReaderEvent::Opened { slot: task.slot, connection: task.connection });

            let mut session = Session::new(&task, socket);
            let reason = session.read_loop(&commands);
            session.send_end_marker();
            task.stats.open.sub(1);
            (reason, Some(opened_at.elapsed()), session.frames)
        }
        Err(reason) => (reason, None, 0),
    };

    let _ = task.events.send(ReaderEvent::Ended {
        slot: task.slot,
        connection: task.connection,
        reason,
        uptime,
        frames,
    });
}

struct Session<'a> {
    task: &'a ReaderTask,
    socket: Socket,
    pool: BatchPool,
    batch: FrameBatch,
    batch_started_ns: u64,
    frames: u64,
    poll: Duration,
    drop_log: LogLimiter,
    close_received: Option<(Option<u16>, String)>,
    /// When this reader last sent a client ping.
    last_ping: Option<Instant>,
    /// When this reader last sent a pong.
    last_pong: Option<Instant>,
    /// A client ping was requested but waits for [`CLIENT_PING_SPACING`] or
    /// a held pong.
    ping_pending: bool,
    /// The pong for the latest server ping waits for [`PONG_SPACING`]; see
    /// [`Session::hold_pong`].
    pong_held: bool,
    /// Write buffer sizes of the socket, restored when a held pong goes out.
    write_buffers: (usize, usize),
}

impl<'a> Session<'a> {
    fn new(task: &'a ReaderTask, socket: Socket) -> Session<'a> {
        let pool = BatchPool::new(task.connection, task.settings.batch_size, SPARE_BATCHES);
        let config = socket.get_config();
        let write_buffers = (config.write_buffer_size, config.max_write_buffer_size);
        Session {
            task,
            socket,
            batch: pool.take(),
            pool,
            batch_started_ns: 0,
            frames: 0,
            poll: Duration::ZERO,
            drop_log: LogLimiter::new(Duration::from_secs(10)),
            close_received: None,
            last_ping: None,
            last_pong: None,
            ping_pending: false,
            pong_held: false,
            write_buffers,
        }
    }

    /// Reads until the connection ends, and returns why.
    fn read_loop(&mut self, commands: &Receiver<Command>) -> EndReason {
        let mut closing_since: Option<Instant> = None;
        let mut close_reason = EndReason::Stopped;
        loop {
            self.task.checkin.beat();
            while closing_since.is_none() {
                let Ok(command) = commands.try_recv() else { break };
                if matches!(command, Command::Kill(_) | Command::Close | Command::Retire) {
                    // A held pong would keep the close frame queued too.
                    self.release_pong();
                }
                match command {
                    Command::Ping => self.ping_pending = true,
                    Command::Kill(kind) => {
                        // A dead peer may never read a close frame, so the
                        // reader sends one without waiting for the reply.
                        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        let _ = self.socket.close(Some(close));
                        let _ = self.socket.flush();
                        self.finish_batch();
                        return EndReason::Watchdog(kind);
                    }
                    Command::Close | Command::Retire => {
                        if matches!(command, Command::Retire) {
                            close_reason = EndReason::Rotated;
                        } else {
                            self.task
                                .status
                                .set_state_if_current(SlotState::Closing, self.task.connection);
                        }
                        closing_since = Some(Instant::now());
                        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
                        if let Err(error) = self.socket.close(Some(close)) {
                            log::debug!(
                                "conn={} close frame not sent: {error}",
                                self.task.connection
                            );
                        }
                    }
                }
            }
            if self.pong_held && self.pong_allowed(Instant::now()) {
                self.release_pong();
            }
            if self.ping_pending && closing_since.is_none() {
                self.send_ping();
            }
            if closing_since.is_some_and(|since| since.elapsed() > CLOSE_WAIT) {
                log::warn!(
                    "conn={} server did not confirm the close in time",
                    self.task.connection
                );
                self.finish_batch();
                return close_reason;
            }
            self.set_poll();

            match self.socket.read() {
                Ok(message) => {
                    if let Some(received_ns) = self.on_message(message)
                        && self.batch_due(received_ns)
                    {
                        self.hand_over();
                    }
                }
                Err(error) => {
                    if let Some(reason) = self.on_error(error, closing_since.is_some()) {
                        self.finish_batch();
                        if reason == EndReason::Stopped {
                            return close_reason;
                        }
                        return reason;
                    }
                }
            }
        }
    }

    /// Sends a client ping once [`CLIENT_PING_SPACING`] allows it and no
    /// pong is held. The payload is the send time, so `on_pong` can match
    /// the pong to the outstanding ping. A held pong would go out with the
    /// ping, ahead of its spacing, so the ping waits for its release, at
    /// most [`PONG_SPACING`].
    fn send_ping(&mut self) {
        let now = Instant::now();
        if self.pong_held || !self.ping_allowed(now) {
            return;
        }
        let sent_ns = unix_nanos();
        let payload = sent_ns.to_be_bytes().to_vec();
        match self.socket.send(Message::Ping(payload.into())) {
            Ok(()) => {
                self.ping_pending = false;
                self.last_ping = Some(now);
                self.task.clock.ping_outstanding_ns.store(sent_ns, Ordering::Relaxed);
                self.task.stats.pings_sent.inc();
            }
            Err(error) => {
                // The read that follows reports a broken connection.
                log::debug!("conn={} ping not sent: {error}", self.task.connection);
                self.ping_pending = false;
            }
        }
    }

    /// Returns whether [`CLIENT_PING_SPACING`] allows a client ping at
    /// `now`.
    fn ping_allowed(&self, now: Instant) -> bool {
        self.last_ping.is_none_or(|last| now.duration_since(last) >= CLIENT_PING_SPACING)
    }

    /// Returns whether [`PONG_SPACING`] allows a pong at `now`.
    fn pong_allowed(&self, now: Instant) -> bool {
        self.last_pong.is_none_or(|last| now.duration_since(last) >= PONG_SPACING)
    }

    /// Keeps tungstenite's queued pong from being sent. tungstenite 0.30
    /// sends the queued pong at the start of every read, but when the
    /// frame does not fit in the write buffer it keeps it queued, and a
    /// newer ping's pong replaces it. A one-byte write buffer fits no frame,
    /// so the pong waits until [`Session::release_pong`] restores the buffer
    /// sizes, and then replies to the latest ping only.
    /// NOTE: this relies on tungstenite 0.30 internals, not on a documented
    /// setting. The fast-ping tests against the mock exchange fail if an
    /// upgrade changes them.
    fn hold_pong(&mut self) {
        if !self.pong_held {
            self.socket.set_config(|config| {
                config.write_buffer_size = 0;
                config.max_write_buffer_size = 1;
            });
            self.pong_held = true;
        }
    }

    /// Restores the write buffer and sends the held pong, if any.
    fn release_pong(&mut self) {
        if !self.pong_held {
            return;
        }
        self.restore_write_buffers();
        self.last_pong = Some(Instant::now());
        self.task.stats.pongs_delayed.inc();
        if let Err(error) = self.socket.flush() {
            log::debug!("conn={} held pong not flushed yet: {error}", self.task.connection);
        }
    }

    /// Restores the write buffer sizes that [`Session::hold_pong`] shrank.
    fn restore_write_buffers(&mut self) {
        let (write, max_write) = self.write_buffers;
        self.socket.set_config(|config| {
            config.write_buffer_size = write;
            config.max_write_buffer_size = max_write;
        });
        self.pong_held = false;
    }

    /// Handles one message; returns its receive time when it was a data
    /// frame added to the batch.
    fn on_message(&mut self, message: Message) -> Option<u64> {
        let now_ns = unix_nanos();
        self.task.status.last_frame_ns.store(now_ns, Ordering::Relaxed);
        self.task.clock.last_frame_ns.store(now_ns, Ordering::Relaxed);
        let (kind, payload): (FrameKind, &[u8]) = match &message {
            Message::Text(text) => (FrameKind::Text, text.as_bytes()),
            Message::Binary(bytes) => (FrameKind::Binary, bytes),
            Message::Ping(_) => {
                // tungstenite has queued the pong with the same payload,
                // replacing the pong of an earlier ping not yet sent.
                self.task.stats.pings_received.inc();
                let now = Instant::now();
                if self.pong_held || !self.pong_allowed(now) {
                    self.hold_pong();
                    return None;
                }
                // Flushing sends the pong now rather than at the next read.
                self.last_pong = Some(now);
                if let Err(error) = self.socket.flush() {
                    log::debug!("conn={} pong not flushed yet: {error}", self.task.connection);
                }
                return None;
            }
            Message::Pong(payload) => {
                self.on_pong(payload, now_ns);
                return None;
            }
            Message::Close(frame) => {
                let (code, reason) = match frame {
                    Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
                    None => (None, String::new()),
                };
                self.close_received = Some((code, reason));
                // tungstenite has queued the close reply in place of a held
                // pong, and the shrunk write buffer would hold it back too.
                if self.pong_held {
                    self.restore_write_buffers();
                    if let Err(error) = self.socket.flush() {
                        log::debug!(
                            "conn={} close reply not flushed yet: {error}",
                            self.task.connection
                        );
                    }
                }
                return None;
            }
            Message::Frame(_) => return None,
        };
        self.task.clock.last_data_ns.store(now_ns, Ordering::Relaxed);
        if self.frames == 0 {
            let first =
                ReaderEvent::FirstData { slot: self.task.slot, connection: self.task.connection };
            let _ = self.task.events.send(first);
        }
        // Handing over before the batch would pass its size keeps the
        // buffer at its allocated capacity, so it never reallocates.
        if !self.batch.is_empty()
            && self.batch.payload_bytes() + payload.len() > self.batch.capacity_bytes()
        {
            self.hand_over();
        }
        if self.batch.is_empty() {
            self.batch_started_ns = now_ns;
        }
        self.batch.push(kind, now_ns, payload);
        self.frames += 1;
        self.task.stats.frames.inc();
        self.task.stats.bytes.add(payload.len() as u64);
        Some(now_ns)
    }

    /// Matches a pong to the outstanding client ping by its payload, the
    /// ping's send time; other pongs (unsolicited, or late) only count as
    /// frames.
    fn on_pong(&mut self, payload: &[u8], now_ns: u64) {
        let outstanding = self.task.clock.ping_outstanding_ns.load(Ordering::Relaxed);
        let Ok(bytes) = <[u8; 8]>::try_from(payload) else { return };
        let sent_ns = u64::from_be_bytes(bytes);
        if outstanding == 0 || sent_ns != outstanding {
            return;
        }
        self.task.clock.ping_outstanding_ns.store(0, Ordering::Relaxed);
        self.task.stats.pongs_received.inc();
        self.task.stats.pong_rtt.observe(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
    }

    /// Classifies a read error; returns `None` when reading should go on.
    fn on_error(&mut self, error: tungstenite::Error, closing: bool) -> Option<EndReason> {
        use tungstenite::Error as WsError;
        match error {
            WsError::Io(io_error) if is_timeout(&io_error) => {
                if !self.batch.is_empty() {
                    self.hand_over();
                }
                None
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed if closing => {
                Some(EndReason::Stopped)
            }
            // The server's close frame names the cause even when the socket
            // then fails, for example because the server did not wait for
            // the reply before closing TCP.
            _ if !closing && self.close_received.is_some() => {
                let (code, reason) = self.close_received.take().unwrap_or_default();
                Some(EndReason::ClosedByServer { code, reason })
            }
            WsError::ConnectionClosed | WsError::AlreadyClosed => {
                match self.close_received.take() {
                    Some((code, reason)) => Some(EndReason::ClosedByServer { code, reason }),
                    None => Some(EndReason::Eof),
                }
            }
            WsError::Io(io_error) if closing => {
                log::debug!("conn={} ended while closing: {io_error}", self.task.connection);
                Some(EndReason::Stopped)
            }
            WsError::Io(io_error) => {
                Some(io_end_reason(&io_error, &self.task.settings.endpoint.host))
            }
            WsError::Protocol(protocol) => match protocol {
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake => {
                    Some(EndReason::Eof)
                }
                other => Some(EndReason::Protocol(other.to_string())),
            },
            WsError::Capacity(capacity) => Some(EndReason::TooLarge(capacity.to_string())),
            WsError::Utf8(detail) => {
                Some(EndReason::Protocol(format!("invalid UTF-8 in a text message: {detail}")))
            }
            WsError::Tls(error) => Some(EndReason::Io(error.to_string())),
            other => Some(EndReason::Protocol(other.to_string())),
        }
    }

    /// Returns whether the batch is full, or its oldest frame has waited the
    /// batch delay at time `now_ns`.
    fn batch_due(&self, now_ns: u64) -> bool {
        if self.batch.is_empty() {
            return false;
        }
        if self.batch.payload_bytes() >= self.task.settings.batch_size {
            return true;
        }
        let age = now_ns.saturating_sub(self.batch_started_ns);
        age >= self.task.settings.batch_delay.as_nanos() as u64
    }

    /// Hands the batch to the pipeline without blocking. When the queue is
    /// full, the batch is kept and grows up to [`HOLD_FACTOR`] batch sizes,
    /// so a short stall of the pipeline loses nothing. Past that size the
    /// batch is dropped and counted.
    fn hand_over(&mut self) {
        let batch = std::mem::replace(&mut self.batch, FrameBatch::new(self.task.connection, 0));
        match self.task.frames.try_send(batch) {
            Ok(()) => {
                self.task.stats.batches.inc();
                self.batch = self.pool.take();
            }
            Err(TrySendError::Full(batch)) => {
                let hold_limit = self.task.settings.batch_size.saturating_mul(HOLD_FACTOR);
                if batch.payload_bytes() < hold_limit {
                    self.batch = batch;
                    return;
                }
                let dropped = batch.len() as u64;
                self.task.stats.frames_dropped.add(dropped);
                if let Some(suppressed) = self.drop_log.allow(Instant::now()) {
                    log::warn!(
                        "conn={} pipeline queue full, dropped {dropped} frames \
                         ({suppressed} more drops since the last warning)",
                        self.task.connection
                    );
                }
                self.batch = self.pool.take();
            }
            Err(TrySendError::Disconnected(batch)) => {
                // The pipeline exits only after every reader has, so this
                // means its thread died; the frames cannot be stored.
                let dropped = batch.len() as u64;
                self.task.stats.frames_dropped.add(dropped);
                log::error!(
                    "conn={} pipeline thread is gone, dropped {dropped} frames",
                    self.task.connection
                );
            }
        }
    }

    /// Hands over what is left when the connection ends. Waiting here is
    /// allowed: the socket is done, so no ping can go unanswered.
    fn finish_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, FrameBatch::new(self.task.connection, 0));
        let count = batch.len() as u64;
        match self.task.frames.send_timeout(batch, FINAL_SEND_WAIT) {
            Ok(()) => self.task.stats.batches.inc(),
            Err(_) => {
                self.task.stats.frames_dropped.add(count);
                log::error!(
                    "conn={} dropped the last {count} frames: the pipeline did not take them within {:?}",
                    self.task.connection,
                    FINAL_SEND_WAIT
                );
            }
        }
    }

    /// Tells the pipeline, behind the last frames, that this connection
    /// ended, so it can hand an overlap's streams to the other connection.
    // NOTE: when the marker cannot be queued, an overlap this connection
    // was part of ends only at its deadline, and a replacement's held
    // events are then released past the old connection's position.
    fn send_end_marker(&mut self) {
        let marker = FrameBatch::end_of(self.task.connection);
        if self.task.frames.send_timeout(marker, FINAL_SEND_WAIT).is_err() {
            log::warn!(
                "conn={} could not tell the pipeline that the connection ended within {:?}",
                self.task.connection,
                FINAL_SEND_WAIT
            );
        }
    }

    fn set_poll(&mut self) {
        let wanted = if self.batch.is_empty() {
            IDLE_POLL
        } else {
            self.task.settings.batch_delay.max(Duration::from_millis(1))
        };
        if wanted != self.poll {
            if let Err(error) = self.socket.get_ref().tcp().set_read_timeout(Some(wanted)) {
                log::debug!(
                    "conn={} failed to set the read timeout: {error}",
                    self.task.connection
                );
            }
            self.poll = wanted;
        }
    }
}

/// Connects TCP, TLS (for `wss`) and WebSocket, each within the timeout.
fn connect(settings: &ReaderSettings, url: &str) -> Result<Socket, EndReason> {
    let endpoint = &settings.endpoint;
    let tcp = connect_tcp(endpoint, settings.connect_timeout)?;
    let transport = if endpoint.secure {
        Transport::Tls(Box::new(handshake_tls(tcp, settings)?))
    } else {
        Transport::Plain(tcp)
    };

    let config = WebSocketConfig::default()
        .max_message_size(Some(settings.max_message_size))
        .max_frame_size(Some(settings.max_frame_size));
    match tungstenite::client::client_with_config(url, transport, Some(config)) {
        Ok((socket, _response)) => {
            socket
                .get_ref()
                .tcp()
                .set_write_timeout(Some(settings.connect_timeout))
                .map_err(|error| EndReason::Io(error.to_string()))?;
            Ok(socket)
        }
        Err(HandshakeError::Interrupted(_)) => Err(EndReason::HandshakeTimeout),
        Err(HandshakeError::Failure(error)) => Err(handshake_failure(error, &endpoint.host)),
    }
}

fn connect_tcp(endpoint: &Endpoint, timeout: Duration) -> Result<TcpStream, EndReason> {
    let addresses = (endpoint.host.as_str(), endpoint.port).to_socket_addrs().map_err(|error| {
        EndReason::ConnectFailed(format!("cannot resolve {}: {error}", endpoint.host))
    })?;

    let mut last_error = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(tcp) => {
                let setup = tcp
                    .set_nodelay(true)
                    .and_then(|()| tcp.set_read_timeout(Some(timeout)))
                    .and_then(|()| tcp.set_write_timeout(Some(timeout)));
                setup.map_err(|error| EndReason::Io(error.to_string()))?;
                return Ok(tcp);
            }
            Err(error) => last_error = Some(format!("{address}: {error}")),
        }
    }
    Err(EndReason::ConnectFailed(
        last_error.unwrap_or_else(|| format!("{} resolved to no address", endpoint.host)),
    ))
}

fn handshake_tls(
    mut tcp: TcpStream,
    settings: &ReaderSettings,
) -> Result<StreamOwned<ClientConnection, TcpStream>, EndReason> {
    let host = &settings.endpoint.host;
    let name = ServerName::try_from(host.clone()).map_err(|error| EndReason::Tls {
        label: "invalid_name",
        message: format!("{host:?} is not a valid TLS server name: {error}"),
    })?;
    let mut tls =
        ClientConnection::new(settings.tls.clone(), name).map_err(|error| EndReason::Tls {
            label: tls::failure_label(&error),
            message: tls::describe_failure(&error, host),
        })?;

    // Completing the handshake here, before any WebSocket byte, means a
    // server whose certificate does not verify is never read from.
    while tls.is_handshaking() {
        if let Err(error) = tls.complete_io(&mut tcp) {
            return Err(match tls::rustls_error(&error) {
                Some(tls_error) => EndReason::Tls {
                    label: tls::failure_label(tls_error),
                    message: tls::describe_failure(tls_error, host),
                },
                None if is_timeout(&error) => EndReason::HandshakeTimeout,
                None => io_end_reason(&error, host),
            });
        }
    }
    Ok(StreamOwned::new(tls, tcp))
}

fn handshake_failure(error: tungstenite::Error, host: &str) -> EndReason {
    match error {
        tungstenite::Error::Http(response) => {
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            EndReason::Rejected { status: response.status().as_u16(), retry_after }
        }
        tungstenite::Error::Io(error) if is_timeout(&error) => EndReason::HandshakeTimeout,
        tungstenite::Error::Io(error) => io_end_reason(&error, host),
        other => EndReason::Protocol(format!("WebSocket handshake failed: {other}")),
    }
}

fn io_end_reason(error: &io::Error, host: &str) -> EndReason {
    if let Some(tls_error) = tls::rustls_error(error) {
        return EndReason::Tls {
            label: tls::failure_label(tls_error),
            message: tls::describe_failure(tls_error, host),
        };
    }
    match error.kind() {
        io::ErrorKind::UnexpectedEof => EndReason::Eof,
        _ => EndReason::Io(error.to_string()),
    }
}

/// Tells a read timeout apart from a real error: a timeout shows as
/// `WouldBlock` on Unix and `TimedOut` on Windows.
fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn unix_nanos() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64)
}

/// A client stream: TLS, or plain TCP for debugging against a local server.
#[derive(Debug)]
pub enum Transport {
    /// `wss`.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
    /// `ws`.
    Plain(TcpStream),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tls(stream) => stream.get_ref(),
            Transport::Plain(stream) => stream,
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tls(stream) => stream.read(buf),
            Transport::Plain(stream) => stream.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tls(stream) => stream.write(buf),
            Transport::Plain(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tls(stream) => stream.flush(),
            Transport::Plain(stream) => stream.flush(),
        }
    }
}
