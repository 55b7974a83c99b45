//! Accept loop and WebSocket handshake of the mock exchange.
//!
//! The accept loop runs on its own thread and starts one thread per
//! accepted socket. That thread does the TLS and WebSocket handshake, where
//! it sees the request path and may reject the handshake with an HTTP
//! status, and then runs the [`Connection`] loop. The accept loop also
//! performs the server-wide `refuse-tcp` fault by closing its listener.
//! It never reads or writes a connection's socket.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;

use super::Shared;
use super::connection::{Connection, MockStream};
use super::faults::FaultKind;
use super::protocol::{self, ConnectPath};
use super::sent_log::json_string;

/// Time the TLS and WebSocket handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Sleep of the accept loop when no connection is waiting.
const ACCEPT_POLL: Duration = Duration::from_millis(5);

/// Largest request or control message the mock reads from a client: 64 KiB.
const MAX_INCOMING_MESSAGE: usize = 64 << 10;

/// Runs the accept loop until the server stops.
pub fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let address = shared.address;
    let mut listener = Some(listener);
    let mut refuse_faults: Vec<(Instant, Duration, bool)> = shared
        .options
        .faults
        .iter()
        .filter(|fault| fault.kind == FaultKind::RefuseTcp)
        .map(|fault| (shared.started + fault.at, fault.duration, false))
        .collect();
    let mut refusing_until: Option<Instant> = None;

    while !shared.stopping.load(Ordering::Relaxed) {
        let now = Instant::now();
        for (due, duration, done) in &mut refuse_faults {
            if !*done && now >= *due {
                *done = true;
                log::info!("refusing TCP connections: for_ms={}", duration.as_millis());
                let mut log = shared.sent_log.buffer(0);
                log.fault("refuse-tcp", &format!(",\"for_ms\":{}", duration.as_millis()));
                listener = None;
                refusing_until = Some(
                    refusing_until.map_or(now + *duration, |until| until.max(now + *duration)),
                );
            }
        }
        if let Some(until) = refusing_until {
            if now < until {
                std::thread::sleep((until - now).min(ACCEPT_POLL));
                continue;
            }
            match bind_listener(address) {
                Ok(rebound) => {
                    log::info!("accepting TCP connections again: address={address}");
                    listener = Some(rebound);
                    refusing_until = None;
                }
                Err(error) => {
                    log::warn!("failed to listen again, retrying: address={address} error={error}");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            }
        }
        let Some(active) = &listener else { continue };
        match active.accept() {
            Ok((tcp, peer)) => {
                let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
                let connection_shared = Arc::clone(&shared);
                let spawned = std::thread::Builder::new()
                    .name(format!("mock-conn-{id}"))
                    .spawn(move || serve_socket(tcp, peer, id, connection_shared));
                if let Err(error) = spawned {
                    log::error!("failed to start connection thread: conn={id} error={error}");
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(error) => {
                log::warn!("accept failed: error={error}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    log::debug!("accept loop stopped");
}

/// Binds a non-blocking listener.
pub fn bind_listener(address: SocketAddr) -> io::Result<TcpListener> {
    let listener = TcpListener::bind(address)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Counts an open connection for as long as it lives.
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

// tungstenite's handshake callback type fixes the large error response.
#[allow(clippy::result_large_err)]
fn serve_socket(tcp: TcpStream, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    shared.open_connections.fetch_add(1, Ordering::Relaxed);
    let _guard = OpenGuard(Arc::clone(&shared));
    let mut log = shared.sent_log.buffer(id);

    if let Err(error) = prepare_socket(&tcp) {
        log::warn!("failed to configure socket: conn={id} error={error}");
        return;
    }
    let stream = match &shared.tls {
        Some(config) => match ServerConnection::new(Arc::clone(config)) {
            Ok(tls) => MockStream::Tls(Box::new(StreamOwned::new(tls, tcp))),
            Err(error) => {
                log::error!("failed to start TLS: conn={id} error={error}");
                return;
            }
        },
        None => MockStream::Plain(tcp),
    };

    let rejection = active_rejection(&shared);
    let mut connect_path: Option<ConnectPath> = None;
    let mut target = String::new();
    // tungstenite fixes the callback's error type, so it cannot be boxed.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        target = request
            .uri()
            .path_and_query()
            .map_or_else(|| request.uri().path().to_string(), |pq| pq.to_string());
        if let Some((status, retry_after)) = rejection {
            let retry_after = matches!(status, 429 | 418).then_some(retry_after);
            return Err(error_response(status, "rejected by fault", retry_after));
        }
        match protocol::parse_path(&target, shared.options.max_streams) {
            Ok(path) => {
                connect_path = Some(path);
                Ok(response)
            }
            Err((status, message)) => Err(error_response(status, &message, None)),
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_INCOMING_MESSAGE))
        .max_frame_size(Some(MAX_INCOMING_MESSAGE));
    // The error contains the callback and its borrows, so keep only its text.
    let accepted = tungstenite::accept_hdr_with_config(stream, callback, Some(config))
        .map_err(|error| error.to_string());

    if let Some((status, retry_after)) = rejection {
        log::info!("rejected handshake by fault: conn={id} peer={peer} status={status}");
        log.fault("reject", &format!(",\"status\":{status},\"retry_after\":{retry_after}"));
        return;
    }
    let ws = match accepted {
        Ok(ws) => ws,
        Err(error) => {
            log::info!("handshake failed: conn={id} peer={peer} path={target:?} error={error}");
            log.event(
                "handshake-failed",
                &format!(",\"path\":{},\"error\":{}", json_string(&target), json_string(&error)),
            );
            return;
        }
    };
    let Some(path) = connect_path else {
        log::error!("handshake finished without a path: conn={id}");
        return;
    };
    log::info!("connection open: conn={id} peer={peer} path={target:?}");
    log.event("open", &format!(",\"path\":{}", json_string(&target)));
    let reason = Connection::new(id, ws, path, shared, log).run();
    log::info!("connection closed: conn={id} reason={reason:?}");
}

fn prepare_socket(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    tcp.set_write_timeout(Some(HANDSHAKE_TIMEOUT))
}

/// Status and `Retry-After` seconds of a `reject` fault active now.
fn active_rejection(shared: &Shared) -> Option<(u16, u64)> {
    let now = Instant::now();
    shared.options.faults.iter().find_map(|fault| match fault.kind {
        FaultKind::Reject { status, retry_after_secs } => {
            let start = shared.started + fault.at;
            (now >= start && now < start + fault.duration).then_some((status, retry_after_secs))
        }
        _ => None,
    })
}

fn error_response(status: u16, message: &str, retry_after: Option<u64>) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message.to_string()));
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    if let Some(seconds) = retry_after {
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert("Retry-After", value);
        }
    }
    response
}
