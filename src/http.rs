//! The HTTP thread pool: `/livez`, `/healthz`, `/readyz`, `/metrics` and
//! `/recent`, on tiny_http.
//!
//! Handlers read atomics and short-held snapshots only, so health answers
//! stay fast while ingest runs at full speed. Only GET and HEAD are served;
//! requests with a body or an overlong URL are rejected.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Header, Method, Request, Response, Server};

use crate::error::Error;
use crate::health::{Health, Report};
use crate::liveness::Liveness;
use crate::lograte::LogLimiter;
use crate::ring::Ring;

/// Longest request target accepted, in bytes.
pub const MAX_URL_LEN: usize = 2048;

/// Default and maximum `limit` of `/recent`.
pub const RECENT_DEFAULT: usize = 100;
/// Maximum `limit` of `/recent`.
pub const RECENT_MAX: usize = 1000;

/// Everything the handlers read.
pub struct HttpContext {
    /// Health verdicts.
    pub health: Arc<Health>,
    /// Cache ring, for `/recent`.
    pub ring: Arc<Ring>,
    /// Renders the `/metrics` body.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
}

/// Running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    address: SocketAddr,
}

impl HttpServer {
    /// Binds `address` and starts `threads` handler threads.
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
        let server = Server::http(address)
            .map_err(|source| Error::Bind { address: address.to_string(), source })?;
        let bound = server.server_addr().to_ip().unwrap_or(address);
        let server = Arc::new(server);
        let context = Arc::new(context);
        let stop = Arc::new(AtomicBool::new(false));

        let mut handles = Vec::new();
        for index in 0..threads.max(1) {
            let server = server.clone();
            let context = context.clone();
            let stop = stop.clone();
            let checkin = liveness.register(&format!("http-{index}"));
            let handle = std::thread::Builder::new()
                .name(format!("http-{index}"))
                .spawn(move || {
                    let mut error_log = LogLimiter::new(Duration::from_secs(10));
                    while !stop.load(Ordering::Relaxed) {
                        checkin.beat();
                        match server.recv_timeout(crate::liveness::CHECKIN_INTERVAL) {
                            Ok(Some(request)) => handle(request, &context),
                            Ok(None) => {}
                            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) if stop.load(Ordering::Relaxed) => break,
                            Err(error) => {
                                if let Some(suppressed) = error_log.allow(Instant::now()) {
                                    log::warn!(
                                        "http accept failed: {error} ({suppressed} suppressed)"
                                    );
                                }
                            }
                        }
                    }
                })
                .map_err(|source| Error::Spawn { thread: format!("http-{index}"), source })?;
            handles.push(handle);
        }
        log::info!("http listening on {bound}");
        Ok(HttpServer { server, stop, threads: handles, address: bound })
    }

    /// Address the listener is bound to.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting and joins the handler threads.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for _ in &self.threads {
            self.server.unblock();
        }
        let HttpServer { threads, .. } = self;
        for thread in threads {
            if thread.join().is_err() {
                log::error!("http thread panicked");
            }
        }
        log::info!("http stopped");
    }
}

fn handle(request: Request, context: &HttpContext) {
    let response = route(&request, context);
    let head = *request.method() == Method::Head;
    let (code, content_type, body, allow) = response;
    let body = if head { String::new() } else { body };
    let mut response = Response::from_string(body).with_status_code(code);
    response.add_header(header("Content-Type", content_type));
    response.add_header(header("Cache-Control", "no-store"));
    if let Some(allow) = allow {
        response.add_header(header("Allow", allow));
    }
    if let Err(error) = request.respond(response) {
        log::debug!("http response not sent: {error}");
    }
}

type Routed = (u16, &'static str, String, Option<&'static str>);

fn route(request: &Request, context: &HttpContext) -> Routed {
    const TEXT: &str = "text/plain; charset=utf-8";
    let url = request.url();
    if url.len() > MAX_URL_LEN {
        return (414, TEXT, format!("request target longer than {MAX_URL_LEN} bytes\n"), None);
    }
    if request.body_length().is_some_and(|length| length > 0) {
        return (413, TEXT, "request bodies are not accepted\n".into(), None);
    }
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let known = matches!(path, "/livez" | "/healthz" | "/readyz" | "/metrics" | "/recent");
    if !known {
        return (
            404,
            TEXT,
            format!("not found: {path}; try /livez, /readyz, /metrics or /recent\n"),
            None,
        );
    }
    if !matches!(request.method(), Method::Get | Method::Head) {
        return (
            405,
            TEXT,
            format!("method {} not allowed\n", request.method()),
            Some("GET, HEAD"),
        );
    }

    match path {
        "/livez" | "/healthz" => health_response(context.health.live()),
        "/readyz" => health_response(context.health.ready()),
        "/metrics" => (200, "text/plain; version=0.0.4; charset=utf-8", (context.metrics)(), None),
        _ => recent_response(query, &context.ring),
    }
}

fn health_response(report: Report) -> Routed {
    (report.status.http_code(), "application/health+json", report.to_json(), None)
}

fn recent_response(query: &str, ring: &Ring) -> Routed {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut stream = None;
    let mut limit = RECENT_DEFAULT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "stream" => match percent_decode(value) {
                Some(value) if !value.is_empty() => stream = Some(value),
                Some(_) => {}
                None => {
                    return (
                        400,
                        TEXT,
                        format!("invalid percent-encoding in stream={value}\n"),
                        None,
                    );
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(value) if (1..=RECENT_MAX).contains(&value) => limit = value,
                _ => {
                    let message = format!("invalid limit={value}: expected 1 to {RECENT_MAX}\n");
                    return (400, TEXT, message, None);
                }
            },
            other => {
                return (
                    400,
                    TEXT,
                    format!("unknown parameter {other:?}; accepted are stream and limit\n"),
                    None,
                );
            }
        }
    }

    let records = ring.recent(stream.as_deref(), limit);
    let mut body = String::with_capacity(records.iter().map(|r| r.line.len() + 1).sum());
    for record in records {
        body.push_str(&String::from_utf8_lossy(&record.line));
        body.push('\n');
    }
    (200, "application/x-ndjson", body, None)
}

/// Decodes `%XX` escapes and `+`; returns `None` for a malformed escape or
/// a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn header(name: &'static str, value: &'static str) -> Header {
    // Every call passes ASCII constants, which tiny_http always accepts.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("constant ASCII header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("btcusdt%40trade").as_deref(), Some("btcusdt@trade"));
        assert_eq!(percent_decode("%21bookTicker").as_deref(), Some("!bookTicker"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
