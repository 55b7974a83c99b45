//! One WebSocket connection of the mock exchange, after its handshake: the
//! loop that reads requests and pongs, sends pings and data, enforces the
//! limits and performs the scheduled faults.
//!
//! Runs on the connection's own thread with a non-blocking socket, so one
//! thread both reads and writes. It must never block on a slow client:
//! when the socket is full it stops producing data and keeps reading.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use tungstenite::protocol::frame::Frame;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tungstenite::protocol::{CloseFrame, WebSocket};
use tungstenite::{Bytes, Message};

use super::Shared;
use super::faults::FaultKind;
use super::feed::{Feed, OutFrame};
use super::heartbeat::Heartbeat;
use super::protocol::{self, ConnectPath, IncomingLimiter, Route};
use super::sent_log::{LogBuffer, json_string, unix_ms};

/// Frames produced per loop turn before the loop reads and flushes again.
const FRAME_BUDGET: usize = 512;

/// Longest sleep of an idle loop, which bounds the delay to read a request.
const IDLE_SLEEP: Duration = Duration::from_millis(5);

/// Sleep while the socket send buffer is full.
const BLOCKED_SLEEP: Duration = Duration::from_micros(200);

/// Time the close handshake may take before the socket is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Plain or TLS socket of one connection.
pub enum MockStream {
    /// `ws://`, for debugging.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl MockStream {
    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            MockStream::Plain(tcp) => tcp,
            MockStream::Tls(stream) => &stream.sock,
        }
    }
}

impl Read for MockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            MockStream::Plain(tcp) => tcp.read(buf),
            MockStream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for MockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MockStream::Plain(tcp) => tcp.write(buf),
            MockStream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MockStream::Plain(tcp) => tcp.flush(),
            MockStream::Tls(stream) => stream.flush(),
        }
    }
}

/// Why a connection ended; written to the sent-log `closed` line.
type EndReason = String;

/// State of one open connection.
pub struct Connection {
    id: u64,
    ws: WebSocket<MockStream>,
    shared: Arc<Shared>,
    log: LogBuffer,
    feed: Feed,
    heartbeat: Heartbeat,
    limiter: IncomingLimiter,
    combined: bool,
    route: Route,
    subscribed: Vec<String>,
    opened: Instant,
    /// Faults for this connection with their due times, earliest first.
    faults: VecDeque<(Instant, FaultKind)>,
    stall_until: Option<(Instant, Duration)>,
    no_data_until: Option<Instant>,
    reply_delay: Duration,
    delayed_replies: VecDeque<(Instant, String)>,
    close_at: Option<(Instant, u16, &'static str)>,
    shutdown_requests_seen: u64,
    last_frame: Option<OutFrame>,
    write_blocked: bool,
    frames: Vec<OutFrame>,
}

impl Connection {
    /// Prepares the loop for a connection that completed its handshake on
    /// `path`.
    pub fn new(
        id: u64,
        ws: WebSocket<MockStream>,
        path: ConnectPath,
        shared: Arc<Shared>,
        log: LogBuffer,
    ) -> Connection {
        let now = Instant::now();
        let options = &shared.options;
        let mut faults: Vec<(Instant, FaultKind)> = options
            .faults
            .iter()
            .filter(|fault| !fault.kind.is_server_wide())
            .filter(|fault| fault.conn.is_none_or(|conn| conn == id))
            .map(|fault| (now + fault.at, fault.kind.clone()))
            .collect();
        faults.sort_by_key(|(due, _)| *due);
        let mut feed = Feed::new(Arc::clone(&shared.catalog));
        let subscribed = path.streams.clone();
        let delivering: Vec<String> =
            subscribed.iter().filter(|name| path.route.delivers(name)).cloned().collect();
        feed.set_streams(&delivering, now);
        Connection {
            id,
            ws,
            log,
            feed,
            heartbeat: Heartbeat::new(options.ping_interval, options.pong_timeout, now),
            limiter: IncomingLimiter::new(options.max_incoming_per_second),
            combined: path.combined,
            route: path.route,
            subscribed,
            opened: now,
            faults: faults.into(),
            stall_until: None,
            no_data_until: None,
            reply_delay: Duration::ZERO,
            delayed_replies: VecDeque::new(),
            close_at: None,
            shutdown_requests_seen: shared.shutdown_requests.load(Ordering::Relaxed),
            last_frame: None,
            write_blocked: false,
            frames: Vec::with_capacity(FRAME_BUDGET),
            shared,
        }
    }

    /// Runs the connection until it ends and returns why.
    pub fn run(mut self) -> EndReason {
        let reason = match self.ws.get_ref().tcp().set_nonblocking(true) {
            Ok(()) => self.serve(),
            Err(error) => format!("failed to make socket non-blocking: {error}"),
        };
        self.log.event("closed", &format!(",\"reason\":{}", json_string(&reason)));
        self.log.handover();
        reason
    }

    fn serve(&mut self) -> EndReason {
        match self.serve_loop() {
            Ok(never) => match never {},
            Err(reason) => reason,
        }
    }

    fn serve_loop(&mut self) -> Result<std::convert::Infallible, EndReason> {
        loop {
            let now = Instant::now();
            if self.shared.stopping.load(Ordering::Relaxed) {
                return Err(self.close(1001, "server stopping"));
            }

            if let Some((until, length)) = self.stall_until {
                if now < until {
                    std::thread::sleep((until - now).min(IDLE_SLEEP));
                    continue;
                }
                self.stall_until = None;
                self.heartbeat.postpone(length);
                self.feed.skip_to(now);
            }

            self.log.handover_if_due();
            self.read_incoming(now)?;
            self.apply_due_faults(now)?;
            if self.stall_until.is_some() {
                continue;
            }
            self.check_lifecycle(now)?;
            self.send_delayed_replies(now)?;

            let mut wrote = false;
            if self.write_blocked {
                self.flush()?;
            }
            if !self.write_blocked && self.data_allowed(now) {
                wrote = self.send_data(now)?;
            }
            if wrote || !self.write_blocked {
                self.flush()?;
            }

            if self.write_blocked {
                std::thread::sleep(BLOCKED_SLEEP);
            } else if !wrote {
                let wake = self.next_wake(now);
                if wake > now {
                    std::thread::sleep((wake - now).min(IDLE_SLEEP));
                }
            }
        }
    }

    /// Reads every message the socket holds.
    fn read_incoming(&mut self, now: Instant) -> Result<(), EndReason> {
        for _ in 0..64 {
            let message = match self.ws.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(());
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Err("client closed".into());
                }
                Err(error) => return Err(format!("read failed: {error}")),
            };
            if let Message::Close(frame) = &message {
                let code = frame.as_ref().map_or(1005, |frame| u16::from(frame.code));
                self.drive_close();
                return Err(format!("client closed with code {code}"));
            }
            if !self.limiter.record(now) {
                log::warn!(
                    "closing connection over the incoming-message limit: conn={} limit={}/s",
                    self.id,
                    self.shared.options.max_incoming_per_second
                );
                return Err(self.close(1008, "too many messages"));
            }
            match message {
                Message::Text(text) => self.handle_request(now, text.as_str())?,
                Message::Pong(payload) => {
                    self.heartbeat.on_pong(&payload);
                }
                // tungstenite queues the pong reply to a ping itself.
                Message::Ping(_) | Message::Binary(_) | Message::Frame(_) | Message::Close(_) => {}
            }
        }
        Ok(())
    }

    fn handle_request(&mut self, now: Instant, text: &str) -> Result<(), EndReason> {
        let max_streams = self.shared.options.max_streams;
        let outcome = protocol::handle_request(text, &self.subscribed, self.combined, max_streams);
        if !outcome.subscribe.is_empty() || !outcome.unsubscribe.is_empty() {
            self.subscribed.retain(|name| !outcome.unsubscribe.contains(name));
            self.subscribed.extend(outcome.subscribe.iter().cloned());
            let route = self.route;
            let delivering: Vec<String> =
                self.subscribed.iter().filter(|name| route.delivers(name)).cloned().collect();
            self.feed.set_streams(&delivering, now);
            log::debug!(
                "subscriptions changed: conn={} added={:?} removed={:?}",
                self.id,
                outcome.subscribe,
                outcome.unsubscribe
            );
        }
        if let Some(combined) = outcome.combined {
            self.combined = combined;
        }
        if self.reply_delay.is_zero() {
            self.write(Message::Text(outcome.reply.into()))
        } else {
            self.delayed_replies.push_back((now + self.reply_delay, outcome.reply));
            Ok(())
        }
    }

    fn send_delayed_replies(&mut self, now: Instant) -> Result<(), EndReason> {
        while let Some((due, _)) = self.delayed_replies.front() {
            if *due > now {
                break;
            }
            let Some((_, reply)) = self.delayed_replies.pop_front() else { break };
            self.write(Message::Text(reply.into()))?;
        }
        Ok(())
    }

    /// Pings, the pong deadline, the connection age, `serverShutdown`
    /// requests and the close that follows one.
    fn check_lifecycle(&mut self, now: Instant) -> Result<(), EndReason> {
        let requests = self.shared.shutdown_requests.load(Ordering::Relaxed);
        if requests != self.shutdown_requests_seen {
            self.shutdown_requests_seen = requests;
            let grace = self.shared.options.shutdown_grace;
            self.start_server_shutdown(now, grace, "command")?;
        }
        if let Some((at, code, reason)) = self.close_at {
            if now >= at {
                return Err(self.close(code, reason));
            }
        }
        if now.duration_since(self.opened) >= self.shared.options.max_connection_age {
            log::info!("closing connection at its maximum age: conn={}", self.id);
            self.log.event("max-age", "");
            return Err(self.close(1001, "maximum connection age reached"));
        }
        if self.heartbeat.timed_out(now) {
            log::info!("closing connection without pong: conn={}", self.id);
            self.log.event("pong-timeout", "");
            return Err(self.close(1008, "pong timeout"));
        }
        if let Some(payload) = self.heartbeat.ping_due(now, unix_ms()) {
            self.write(Message::Ping(payload.into()))?;
        }
        Ok(())
    }

    fn start_server_shutdown(
        &mut self,
        now: Instant,
        grace: Duration,
        cause: &str,
    ) -> Result<(), EndReason> {
        let event = format!("{{\"e\":\"serverShutdown\",\"E\":{}}}", unix_ms());
        let text = if self.combined {
            format!("{{\"stream\":\"!serverShutdown\",\"data\":{event}}}")
        } else {
            event
        };
        log::info!(
            "sending serverShutdown: conn={} cause={cause} grace_ms={}",
            self.id,
            grace.as_millis()
        );
        self.log.fault(
            "serverShutdown",
            &format!(",\"cause\":\"{cause}\",\"grace_ms\":{}", grace.as_millis()),
        );
        self.close_at = Some((now + grace, 1001, "server shutdown"));
        self.write(Message::Text(text.into()))
    }

    fn data_allowed(&mut self, now: Instant) -> bool {
        match self.no_data_until {
            Some(until) if now < until => false,
            Some(_) => {
                self.no_data_until = None;
                self.feed.skip_to(now);
                true
            }
            None => true,
        }
    }

    /// Sends due data frames; returns whether any was sent.
    fn send_data(&mut self, now: Instant) -> Result<bool, EndReason> {
        let mut frames = std::mem::take(&mut self.frames);
        frames.clear();
        self.feed.poll(now, FRAME_BUDGET, self.log.is_enabled(), unix_ms(), &mut frames);
        let mut sent = false;
        let mut result = Ok(());
        for frame in frames.drain(..) {
            if let Err(reason) = self.send_frame(&frame) {
                result = Err(reason);
                break;
            }
            sent = true;
            self.last_frame = Some(frame);
        }
        self.frames = frames;
        self.log.handover_if_due();
        result.map(|()| sent)
    }

    fn send_frame(&mut self, frame: &OutFrame) -> Result<(), EndReason> {
        let bytes = self.wire_bytes(frame);
        let length = frame.data.len();
        self.write(Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true)))?;
        self.log.data(&frame.stream, frame.id, frame.digest, length);
        Ok(())
    }

    /// Bytes of `frame` as this connection sends them: the combined frame,
    /// or only the payload on a raw connection.
    fn wire_bytes(&self, frame: &OutFrame) -> Bytes {
        if self.combined { frame.frame.clone() } else { frame.frame.slice(frame.data.clone()) }
    }

    fn apply_due_faults(&mut self, now: Instant) -> Result<(), EndReason> {
        while let Some((due, _)) = self.faults.front() {
            if *due > now {
                break;
            }
            let Some((_, kind)) = self.faults.pop_front() else { break };
            self.apply_fault(now, kind)?;
        }
        Ok(())
    }

    fn apply_fault(&mut self, now: Instant, kind: FaultKind) -> Result<(), EndReason> {
        log::info!("injecting fault: conn={} fault={kind:?}", self.id);
        let name = kind.name();
        match kind {
            FaultKind::Close(code) => {
                self.log.fault(name, &format!(",\"code\":{code}"));
                Err(self.close(code, "fault"))
            }
            FaultKind::Drop => {
                self.log.fault(name, "");
                let _ = self.ws.get_ref().tcp().shutdown(Shutdown::Both);
                Err("dropped by fault".into())
            }
            FaultKind::Stall(length) => {
                self.log.fault(name, &format!(",\"for_ms\":{}", length.as_millis()));
                self.log.handover();
                self.stall_until = Some((now + length, length));
                Ok(())
            }
            FaultKind::NoData(length) => {
                self.log.fault(name, &format!(",\"for_ms\":{}", length.as_millis()));
                self.no_data_until = Some(now + length);
                Ok(())
            }
            FaultKind::Repeat(count) => {
                self.log.fault(name, &format!(",\"count\":{count}"));
                if let Some(frame) = self.last_frame.clone() {
                    for _ in 0..count {
                        self.send_frame(&frame)?;
                    }
                }
                Ok(())
            }
            FaultKind::Truncate => {
                let bytes = match &self.last_frame {
                    Some(frame) => self.wire_bytes(frame),
                    None => Bytes::from_static(br#"{"e":"trade","E":1,"s":"TRUNCATED","t":1}"#),
                };
                let mut cut = bytes.len() / 2;
                while cut > 0 && std::str::from_utf8(&bytes[..cut]).is_err() {
                    cut -= 1;
                }
                self.log.fault(name, &format!(",\"len\":{cut}"));
                let frame = Frame::message(bytes.slice(..cut), OpCode::Data(Data::Text), true);
                self.write(Message::Frame(frame))
            }
            FaultKind::Binary => {
                let bytes = match &self.last_frame {
                    Some(frame) => self.wire_bytes(frame),
                    None => Bytes::from_static(b"\x00\x01binary"),
                };
                self.log.fault(name, &format!(",\"len\":{}", bytes.len()));
                self.write(Message::Binary(bytes))
            }
            FaultKind::Empty => {
                self.log.fault(name, "");
                self.write(Message::Text("".into()))
            }
            FaultKind::InvalidUtf8 => {
                self.log.fault(name, "");
                let bytes = Bytes::from_static(b"{\"e\":\"trade\",\"s\":\"\xff\xfe\"}");
                self.write(Message::Frame(Frame::message(bytes, OpCode::Data(Data::Text), true)))
            }
            FaultKind::Oversize(size) => {
                self.log.fault(name, &format!(",\"len\":{size}"));
                let mut text = String::with_capacity(size);
                text.push_str("{\"e\":\"oversize\",\"pad\":\"");
                let padding = size.saturating_sub(text.len() + 2);
                text.extend(std::iter::repeat_n('x', padding));
                text.push_str("\"}");
                self.write(Message::Text(text.into()))
            }
            FaultKind::DelayReplies(delay) => {
                self.log.fault(name, &format!(",\"delay_ms\":{}", delay.as_millis()));
                self.reply_delay = delay;
                Ok(())
            }
            FaultKind::Shutdown(grace) => self.start_server_shutdown(now, grace, "fault"),
            FaultKind::Reject { .. } | FaultKind::RefuseTcp => Ok(()),
        }
    }

    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + IDLE_SLEEP;
        if self.no_data_until.is_none() {
            if let Some(due) = self.feed.next_due() {
                wake = wake.min(due);
            }
        }
        wake = wake.min(self.heartbeat.next_ping());
        if let Some((due, _)) = self.faults.front() {
            wake = wake.min(*due);
        }
        if let Some((due, _)) = self.delayed_replies.front() {
            wake = wake.min(*due);
        }
        if let Some((due, _, _)) = self.close_at {
            wake = wake.min(due);
        }
        wake
    }

    fn write(&mut self, message: Message) -> Result<(), EndReason> {
        match self.ws.write(message) {
            Ok(()) => Ok(()),
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                // The frame is queued; stop producing until the queue drains.
                self.write_blocked = true;
                Ok(())
            }
            Err(error) => Err(format!("write failed: {error}")),
        }
    }

    fn flush(&mut self) -> Result<(), EndReason> {
        match self.ws.flush() {
            Ok(()) => {
                self.write_blocked = false;
                Ok(())
            }
            Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                self.write_blocked = true;
                Ok(())
            }
            Err(error) => Err(format!("write failed: {error}")),
        }
    }

    /// Sends a close frame, waits a short time for the client's reply and
    /// returns the end reason.
    fn close(&mut self, code: u16, reason: &'static str) -> EndReason {
        log::info!("closing connection: conn={} code={code} reason={reason:?}", self.id);
        let frame = CloseFrame { code: CloseCode::from(code), reason: reason.into() };
        let _ = self.ws.close(Some(frame));
        self.drive_close();
        format!("server closed with code {code}: {reason}")
    }

    /// Flushes and reads until the close handshake finishes or times out.
    fn drive_close(&mut self) {
        let deadline = Instant::now() + CLOSE_TIMEOUT;
        while Instant::now() < deadline {
            let flushed = self.ws.flush();
            if matches!(
                flushed,
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)
            ) {
                break;
            }
            match self.ws.read() {
                Ok(_) => {}
                Err(tungstenite::Error::Io(error)) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => break,
            }
        }
        let _ = self.ws.get_ref().tcp().shutdown(Shutdown::Both);
    }
}
