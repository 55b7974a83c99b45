//! Mock exchange: a Binance market-data WebSocket server on loopback, for
//! tests, demos, soak runs and benchmarks.
//!
//! It serves TLS with a CA and certificate made at every start, speaks the
//! Binance stream protocol (raw and combined paths, the USD-M routed
//! paths, live requests, pings, the connection-age cut, `serverShutdown`,
//! the incoming-message limit), sends generated or replayed data, performs
//! scheduled faults and writes a sent-log of everything it sent.
//!
//! [`MockServer::start`] runs it inside a process (its accept loop and one
//! thread per connection); [`run`] is the `mock-exchange` binary's main
//! loop, which also handles signals. Nothing here binds any address but the
//! one it is given, and a non-loopback one only with `--allow-non-loopback`.

mod cert;
mod connection;
pub mod faults;
mod feed;
pub mod generator;
mod heartbeat;
pub mod options;
pub mod protocol;
pub mod replay;
mod sent_log;
mod server;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use options::{Command, HELP, Options, Rate, parse_args};

use feed::Catalog;
use generator::Market;
use replay::ReplayFile;
use sent_log::SentLog;

/// Time [`MockServer::stop`] waits for connections to close.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A failure to start the mock exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockError(pub String);

impl fmt::Display for MockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for MockError {}

/// State shared by the accept loop and every connection thread.
pub(crate) struct Shared {
    pub(crate) options: Options,
    pub(crate) address: SocketAddr,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) sent_log: SentLog,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) started: Instant,
    /// Set once the server stops; connections close with code 1001.
    pub(crate) stopping: AtomicBool,
    /// Incremented per `serverShutdown` command; each connection sends the
    /// event when it sees the count change.
    pub(crate) shutdown_requests: AtomicU64,
    pub(crate) next_conn: AtomicU64,
    pub(crate) open_connections: AtomicUsize,
}

/// A running mock exchange.
pub struct MockServer {
    shared: Arc<Shared>,
    ca_pem: Option<String>,
    accept_thread: Option<JoinHandle<()>>,
    flush_thread: Option<JoinHandle<()>>,
}

impl MockServer {
    /// Loads replays, makes the certificates, binds the listener, writes the
    /// CA file and then the ready file, and starts accepting.
    pub fn start(options: Options) -> Result<MockServer, MockError> {
        if !options.listen.ip().is_loopback() && !options.allow_non_loopback {
            return Err(MockError(format!(
                "refusing to listen on non-loopback address {}; pass --allow-non-loopback to allow it",
                options.listen
            )));
        }
        let replays = options
            .replay
            .iter()
            .map(|path| ReplayFile::load(path))
            .collect::<Result<Vec<_>, String>>()
            .map_err(MockError)?;

        let certificates =
            if options.plain { None } else { Some(cert::generate().map_err(MockError)?) };
        let sent_log = match &options.sent_log {
            Some(path) => SentLog::create(path).map_err(|error| {
                MockError(format!("failed to create sent-log {}: {error}", path.display()))
            })?,
            None => SentLog::default(),
        };
        let listener = server::bind_listener(options.listen).map_err(|error| {
            MockError(format!("failed to listen on {}: {error}", options.listen))
        })?;
        let address = listener
            .local_addr()
            .map_err(|error| MockError(format!("failed to read the bound address: {error}")))?;

        let ca_pem = certificates.as_ref().map(|c| c.ca_pem.clone());
        if let (Some(path), Some(pem)) = (&options.ca_out, &ca_pem) {
            write_atomically(path, pem.as_bytes())?;
        }

        let started = Instant::now();
        let catalog = Catalog::new(
            Market::of(options.venue),
            !options.no_generate,
            options.rate,
            options.replay_shared,
            replays,
            started,
            sent_log::unix_ms(),
        );
        let ready_file = options.ready_file.clone();
        let shared = Arc::new(Shared {
            address,
            catalog: Arc::new(catalog),
            sent_log,
            tls: certificates.map(|c| c.server_config),
            started,
            stopping: AtomicBool::new(false),
            shutdown_requests: AtomicU64::new(0),
            next_conn: AtomicU64::new(1),
            open_connections: AtomicUsize::new(0),
            options,
        });

        let accept_shared = Arc::clone(&shared);
        let accept_thread = std::thread::Builder::new()
            .name("mock-accept".into())
            .spawn(move || server::accept_loop(listener, accept_shared))
            .map_err(|error| MockError(format!("failed to start the accept thread: {error}")))?;
        let flush_shared = Arc::clone(&shared);
        let flush_thread = std::thread::Builder::new()
            .name("mock-sent-log".into())
            .spawn(move || {
                while !flush_shared.stopping.load(Ordering::Relaxed) {
                    std::thread::sleep(sent_log::FLUSH_INTERVAL);
                    flush_shared.sent_log.flush();
                }
            })
            .map_err(|error| MockError(format!("failed to start the sent-log thread: {error}")))?;

        if let Some(path) = &ready_file {
            write_atomically(path, address.to_string().as_bytes())?;
        }
        log::info!(
            "mock exchange listening: address={address} tls={} venue={} rate={:?}",
            shared.tls.is_some(),
            shared.options.venue,
            shared.options.rate
        );
        Ok(MockServer {
            shared,
            ca_pem,
            accept_thread: Some(accept_thread),
            flush_thread: Some(flush_thread),
        })
    }

    /// Bound address, with the real port when port 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.address
    }

    /// PEM of the CA that signed the server certificate; `None` with
    /// `--plain`.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Sends `serverShutdown` on every open connection; each closes after
    /// the shutdown grace.
    pub fn server_shutdown(&self) {
        log::info!("serverShutdown requested for every connection");
        self.shared.shutdown_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of connections whose threads are running.
    pub fn open_connections(&self) -> usize {
        self.shared.open_connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection with code 1001, waits up to
    /// 5 s for them and flushes the sent-log.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        if let Some(thread) = self.accept_thread.take() {
            let _ = thread.join();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.open_connections() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if let Some(thread) = self.flush_thread.take() {
            let _ = thread.join();
        }
        self.shared.sent_log.flush();
        log::info!("mock exchange stopped: address={}", self.shared.address);
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if self.accept_thread.is_some() {
            self.stop_inner();
        }
    }
}

/// Writes `bytes` to a temporary file next to `path` and renames it, so a
/// reader never sees a partial file.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), MockError> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    std::fs::write(&temporary, bytes)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|error| MockError(format!("failed to write {}: {error}", path.display())))
}

/// Runs the mock exchange until SIGTERM or SIGINT. SIGUSR1 sends
/// `serverShutdown` on every open connection.
pub fn run(options: Options) -> Result<(), MockError> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|error| MockError(format!("failed to install signal handlers: {error}")))?;
    let server = MockServer::start(options)?;
    for signal in signals.forever() {
        if signal == SIGUSR1 {
            server.server_shutdown();
        } else {
            log::info!("stopping on signal: signal={signal}");
            break;
        }
    }
    server.stop();
    Ok(())
}
