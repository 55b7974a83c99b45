//! The HTTP/1.1 connection layer: one accept thread and a fixed pool of
//! handler threads, one request per connection.
//!
//! The accept thread blocks in accept(2) and hands each connection to the
//! pool through a bounded queue. When the queue is full it sends 503
//! itself, with a short write timeout, and closes. A handler reads the
//! request head under a deadline, responds through [`crate::http::route`]
//! and closes. Neither waits for a request body: bytes after the head are
//! discarded, at most 64 KiB per connection. The number of threads never
//! depends on what clients do.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};

use crate::error::Error;
use crate::http::HttpContext;
use crate::http_parse::{self, MAX_HEAD_LEN, Method, Rejection};
use crate::liveness::{CHECKIN_INTERVAL, Checkin, Liveness};
use crate::lograte::LogLimiter;
use crate::metrics::{Counter, Exposition, MetricType, PREFIX};

/// Time a client has to send its whole request head, counted from accept:
/// 2 s. A slower client gets 408 and is dropped.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// Time a handler spends writing one response at most: 2 s.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Write timeout of the 503 the accept thread sends when the queue is full.
pub const BUSY_WRITE_TIMEOUT: Duration = Duration::from_millis(50);

/// Maximum time the accept thread waits for the request of a connection it
/// rejects as busy, so the client can send it before the close.
const BUSY_DRAIN: Duration = Duration::from_millis(50);

/// Accepted connections waiting for a handler, per handler thread.
pub const QUEUE_PER_THREAD: usize = 8;

/// Pause of the accept thread after a failed accept (such as EMFILE), whose
/// connection stays in the backlog, so the thread does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(20);

/// Time a handler waits for the client to close after the response, so the
/// response is not lost to a reset caused by unread request bytes.
const LINGER: Duration = Duration::from_millis(100);

/// Status codes counted one by one; any other code counts as `other`.
const COUNTED_CODES: [u16; 9] = [200, 400, 404, 405, 408, 413, 414, 431, 503];

/// One response. Every response also carries `Content-Length`,
/// `Cache-Control: no-store` and `Connection: close`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub code: u16,
    /// `Content-Type` value.
    pub content_type: &'static str,
    /// Body, left out of the bytes sent for HEAD.
    pub body: String,
    /// `Allow` value, sent with 405.
    pub allow: Option<&'static str>,
    /// Further header fields as (name, value).
    pub headers: &'static [(&'static str, &'static str)],
}

impl Response {
    /// Creates a plain-text response.
    pub fn text(code: u16, body: impl Into<String>) -> Response {
        Response {
            code,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: None,
            headers: &[],
        }
    }
}

/// Counters of the HTTP server, written to `/metrics`.
#[derive(Debug, Default)]
pub struct HttpStats {
    responses: [Counter; COUNTED_CODES.len()],
    other_responses: Counter,
    queue_full: Counter,
    accept_errors: Counter,
}

impl HttpStats {
    /// Counts one response sent with `code`.
    pub fn count_response(&self, code: u16) {
        match COUNTED_CODES.iter().position(|&counted| counted == code) {
            Some(index) => self.responses[index].inc(),
            None => self.other_responses.inc(),
        }
    }

    /// Returns the number of responses sent with `code` so far.
    pub fn responses(&self, code: u16) -> u64 {
        COUNTED_CODES
            .iter()
            .position(|&counted| counted == code)
            .map_or(0, |index| self.responses[index].get())
    }

    /// Writes the HTTP families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let name = format!("{PREFIX}http_requests_total");
        out.family(&name, MetricType::Counter, "HTTP responses sent, by status code.");
        for (code, counter) in COUNTED_CODES.iter().zip(&self.responses) {
            out.sample_u64(&name, &[("code", &code.to_string())], counter.get());
        }
        out.sample_u64(&name, &[("code", "other")], self.other_responses.get());
        out.single_u64(
            &format!("{PREFIX}http_queue_full_total"),
            MetricType::Counter,
            "HTTP connections sent 503 by the accept thread because every handler was busy.",
            self.queue_full.get(),
        );
        out.single_u64(
            &format!("{PREFIX}http_accept_errors_total"),
            MetricType::Counter,
            "Failed accept calls on the HTTP listener, such as too many open files.",
            self.accept_errors.get(),
        );
    }
}

/// Running HTTP server.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    address: SocketAddr,
    wake: SocketAddr,
}

struct Accepted {
    stream: TcpStream,
    at: Instant,
}

impl HttpServer {
    /// Binds `address`, starts the accept thread and `threads` handler
    /// threads (at least one), and logs `http listening on ADDRESS`.
    ///
    /// # Errors
    ///
    /// Fails when the address cannot be bound or a thread cannot start.
    pub fn start(
        address: SocketAddr,
        threads: usize,
        context: HttpContext,
        liveness: &Liveness,
    ) -> Result<HttpServer, Error> {
        let bind_error = |source: io::Error| Error::Bind {
            address: address.to_string(),
            source: Box::new(source),
        };
        let listener = TcpListener::bind(address).map_err(bind_error)?;
        let bound = listener.local_addr().unwrap_or(address);
        let threads = threads.max(1);
        let context = Arc::new(context);
        let stop = Arc::new(AtomicBool::new(false));
        let (queue, connections) = crossbeam_channel::bounded(threads * QUEUE_PER_THREAD);

        let mut handles = Vec::new();
        for index in 0..threads {
            let name = format!("http-{index}");
            let worker = Worker {
                connections: connections.clone(),
                context: context.clone(),
                stop: stop.clone(),
                checkin: liveness.register(&name),
            };
            let handle = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || worker.run())
                .map_err(|source| Error::Spawn { thread: name, source })?;
            handles.push(handle);
        }
        // The accept thread blocks in accept(2), so it answers a probe at
        // once, and does not check in: a stuck acceptor shows as failing
        // probes. `stop` wakes it with a connection of its own.
        let acceptor =
            Acceptor { listener, queue, stats: context.stats.clone(), stop: stop.clone() };
        let handle = std::thread::Builder::new()
            .name("http-accept".into())
            .spawn(move || acceptor.run())
            .map_err(|source| Error::Spawn { thread: "http-accept".into(), source })?;
        handles.push(handle);

        log::info!("http listening on {bound}");
        Ok(HttpServer { stop, threads: handles, address: bound, wake: wake_address(bound) })
    }

    /// Address the listener is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting and joins every thread. A handler finishes the
    /// connection it is serving first, which takes at most about
    /// [`HEAD_TIMEOUT`] plus [`WRITE_TIMEOUT`].
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks accept(2); the acceptor sees the flag and drops this
        // connection unanswered.
        if let Err(error) = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1)) {
            log::debug!("http stop: waking the accept thread failed: {error}");
        }
        for thread in self.threads {
            if thread.join().is_err() {
                log::error!("http thread panicked");
            }
        }
        log::info!("http stopped");
    }
}

struct Acceptor {
    listener: TcpListener,
    queue: Sender<Accepted>,
    stats: Arc<HttpStats>,
    stop: Arc<AtomicBool>,
}

/// Address that reaches a listener bound to `bound`: an unspecified bind
/// address is reached through loopback.
fn wake_address(bound: SocketAddr) -> SocketAddr {
    let mut address = bound;
    if address.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        address.set_ip(loopback);
    }
    address
}

impl Acceptor {
    fn run(self) {
        let mut error_log = LogLimiter::default();
        loop {
            let accepted = self.listener.accept();
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            match accepted {
                Ok((stream, _)) => self.dispatch(stream),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    // Such as EMFILE: the pending connection stays in the
                    // backlog, so back off instead of spinning.
                    self.stats.accept_errors.inc();
                    if let Some(suppressed) = error_log.allow(Instant::now()) {
                        log::warn!("http accept failed: {error} (suppressed={suppressed})");
                    }
                    std::thread::sleep(ACCEPT_RETRY);
                }
            }
        }
    }

    fn dispatch(&self, stream: TcpStream) {
        let accepted = Accepted { stream, at: Instant::now() };
        match self.queue.try_send(accepted) {
            Ok(()) => {}
            Err(TrySendError::Full(accepted)) => {
                self.stats.queue_full.inc();
                self.stats.count_response(503);
                reject_busy(accepted.stream);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Sends 503 without reading the request, and closes. Never blocks for
/// longer than [`BUSY_WRITE_TIMEOUT`].
fn reject_busy(mut stream: TcpStream) {
    let response = Response::text(503, "all http handlers are busy; retry later\n");
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(BUSY_WRITE_TIMEOUT));
    if let Err(error) = stream.write_all(&encode(&response, false)) {
        log::debug!("http 503 not sent: {error}");
    }
    let _ = stream.shutdown(Shutdown::Write);
    // Give the client a moment to send its request and read it, so closing
    // does not reset the connection before the client has read the 503. A
    // fresh connection has usually sent nothing yet when it is accepted.
    let _ = stream.set_read_timeout(Some(BUSY_DRAIN));
    let deadline = Instant::now() + BUSY_DRAIN;
    let mut scratch = [0_u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut scratch) {
            Ok(read) if read > 0 && !scratch[..read].windows(4).any(|w| w == b"\r\n\r\n") => {}
            _ => break,
        }
    }
}

struct Worker {
    connections: Receiver<Accepted>,
    context: Arc<HttpContext>,
    stop: Arc<AtomicBool>,
    checkin: Checkin,
}

impl Worker {
    fn run(self) {
        while !self.stop.load(Ordering::Relaxed) {
            self.checkin.beat();
            match self.connections.recv_timeout(CHECKIN_INTERVAL) {
                Ok(accepted) => self.serve(accepted),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
    }

    fn serve(&self, accepted: Accepted) {
        let Accepted { mut stream, at } = accepted;
        let _ = stream.set_nonblocking(false);
        // A connection that waited in the queue past its head deadline still
        // gets a short read, so a request that arrived meanwhile is served.
        let deadline = (at + HEAD_TIMEOUT).max(Instant::now() + Duration::from_millis(10));
        let response = match read_head(&mut stream, deadline) {
            Ok(head) => match http_parse::parse_head(&head) {
                Ok(request) => {
                    let response = crate::http::route(&request, &self.context);
                    self.respond(&mut stream, &response, request.method == Method::Head);
                    return;
                }
                Err(rejection) => rejection,
            },
            Err(HeadError::Rejected(rejection)) => rejection,
            Err(HeadError::TimedOut) => {
                Rejection { code: 408, message: "request head not received in time\n".into() }
            }
            Err(HeadError::Closed) => return,
        };
        self.respond(&mut stream, &Response::text(response.code, response.message), false);
    }

    fn respond(&self, stream: &mut TcpStream, response: &Response, head_only: bool) {
        self.context.stats.count_response(response.code);
        let bytes = encode(response, head_only);
        if let Err(error) = write_by(stream, &bytes, Instant::now() + WRITE_TIMEOUT) {
            log::debug!("http response not sent: code={} error={error}", response.code);
            return;
        }
        let _ = stream.shutdown(Shutdown::Write);
        linger(stream);
    }
}

enum HeadError {
    Rejected(Rejection),
    TimedOut,
    Closed,
}

/// Reads until the end of the head, at most [`MAX_HEAD_LEN`] bytes, and
/// returns the head. Bytes after the head that arrived in the same read are
/// ignored: the caller rejects every request with a body.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut buffer = vec![0_u8; MAX_HEAD_LEN];
    let mut filled = 0;
    loop {
        let Some(remaining) = remaining(deadline) else { return Err(HeadError::TimedOut) };
        if stream.set_read_timeout(Some(remaining)).is_err() {
            return Err(HeadError::Closed);
        }
        let read = match stream.read(&mut buffer[filled..]) {
            Ok(0) => return Err(HeadError::Closed),
            Ok(read) => read,
            Err(error) if is_timeout(&error) => return Err(HeadError::TimedOut),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Closed),
        };
        // The terminator may straddle two reads, so search from 3 bytes back.
        let search_from = filled.saturating_sub(3);
        filled += read;
        if let Some(end) = http_parse::head_end(&buffer[search_from..filled]) {
            buffer.truncate(search_from + end);
            return Ok(buffer);
        }
        if filled == MAX_HEAD_LEN {
            return Err(HeadError::Rejected(http_parse::reject_oversized(&buffer)));
        }
    }
}

fn write_by(stream: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let Some(remaining) = remaining(deadline) else {
            return Err(io::ErrorKind::TimedOut.into());
        };
        stream.set_write_timeout(Some(remaining))?;
        match stream.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Waits up to [`LINGER`] for the client to close, discarding at most
/// 64 KiB it still sends.
fn linger(stream: &mut TcpStream) {
    let deadline = Instant::now() + LINGER;
    let mut scratch = [0_u8; 4096];
    for _ in 0..16 {
        let Some(remaining) = remaining(deadline) else { return };
        if stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match stream.read(&mut scratch) {
            Ok(read) if read > 0 => {}
            _ => return,
        }
    }
}

fn remaining(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

/// Encodes the status line, headers and, unless `head_only`, the body.
fn encode(response: &Response, head_only: bool) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n",
        response.code,
        reason(response.code),
        response.content_type,
        response.body.len()
    );
    if let Some(allow) = response.allow {
        head.push_str(&format!("Allow: {allow}\r\n"));
    }
    for (name, value) in response.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    if !head_only {
        bytes.extend_from_slice(response.body.as_bytes());
    }
    bytes
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_length_for_head() {
        let response = Response { allow: Some("GET, HEAD"), ..Response::text(405, "no\n") };
        let full = String::from_utf8(encode(&response, false)).unwrap();
        assert!(full.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"), "{full}");
        assert!(full.contains("Content-Length: 3\r\n"), "{full}");
        assert!(full.contains("Connection: close\r\n"), "{full}");
        assert!(full.contains("Cache-Control: no-store\r\n"), "{full}");
        assert!(full.contains("Allow: GET, HEAD\r\n"), "{full}");
        assert!(full.ends_with("\r\n\r\nno\n"), "{full}");
        let head = String::from_utf8(encode(&response, true)).unwrap();
        assert!(head.contains("Content-Length: 3\r\n"), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn encode_writes_extra_headers() {
        let response =
            Response { headers: &[("X-Recent-Truncated", "true")], ..Response::text(200, "a\n") };
        let full = String::from_utf8(encode(&response, false)).unwrap();
        assert!(full.contains("\r\nX-Recent-Truncated: true\r\n"), "{full}");
        assert!(full.ends_with("\r\n\r\na\n"), "{full}");
    }

    #[test]
    fn stats_count_by_code() {
        let stats = HttpStats::default();
        stats.count_response(413);
        stats.count_response(413);
        stats.count_response(299);
        assert_eq!(stats.responses(413), 2);
        let mut out = Exposition::new();
        stats.write_metrics(&mut out);
        let body = out.finish();
        assert!(body.contains("binance_ingest_http_requests_total{code=\"413\"} 2\n"), "{body}");
        assert!(body.contains("binance_ingest_http_requests_total{code=\"other\"} 1\n"), "{body}");
    }
}
