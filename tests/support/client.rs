//! A minimal WebSocket client for tests: tungstenite over rustls, trusting
//! only the mock exchange's CA. Reads poll with a short socket timeout so
//! every wait has a deadline.

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Connector, Message, WebSocket};

use super::mock::MockExchange;

/// Socket read timeout, the granularity of every wait.
const POLL: Duration = Duration::from_millis(20);

/// An open test connection.
pub struct Client {
    pub ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

/// What a read produced.
#[derive(Debug)]
pub enum Read {
    Message(Message),
    TimedOut,
    Failed(tungstenite::Error),
}

/// rustls client configuration that trusts only the CA in `ca_path`.
pub fn tls_config(ca_path: &std::path::Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_path).expect("read CA file");
    for certificate in CertificateDer::pem_slice_iter(&pem) {
        roots.add(certificate.expect("parse CA PEM")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

impl Client {
    /// Connects to `path` (such as `/ws/btcusdt@trade`) over TLS.
    pub fn connect(mock: &MockExchange, path: &str) -> Client {
        Client::try_connect(mock, path, None)
            .unwrap_or_else(|error| panic!("connect {path}: {error}"))
    }

    /// Connects and returns the handshake error instead of panicking.
    pub fn try_connect(
        mock: &MockExchange,
        path: &str,
        config: Option<WebSocketConfig>,
    ) -> Result<Client, tungstenite::Error> {
        let tcp = TcpStream::connect(mock.addr())?;
        tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
        let url = format!("wss://localhost:{}{path}", mock.addr().port());
        let connector = Connector::Rustls(tls_config(&mock.ca_path()));
        let (ws, _response) =
            tungstenite::client_tls_with_config(url, tcp, config, Some(connector)).map_err(
                |error| match error {
                    tungstenite::HandshakeError::Failure(error) => error,
                    tungstenite::HandshakeError::Interrupted(_) => tungstenite::Error::Io(
                        io::Error::new(io::ErrorKind::TimedOut, "handshake interrupted"),
                    ),
                },
            )?;
        match ws.get_ref() {
            MaybeTlsStream::Rustls(stream) => stream.sock.set_read_timeout(Some(POLL))?,
            MaybeTlsStream::Plain(tcp) => tcp.set_read_timeout(Some(POLL))?,
            _ => {}
        }
        Ok(Client { ws })
    }

    /// Reads one message, waiting at most until `deadline`.
    pub fn read_until(&mut self, deadline: Instant) -> Read {
        loop {
            if Instant::now() >= deadline {
                return Read::TimedOut;
            }
            match self.ws.read() {
                Ok(message) => return Read::Message(message),
                Err(tungstenite::Error::Io(error))
                    if matches!(
                        error.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(error) => return Read::Failed(error),
            }
        }
    }

    /// Returns the next text message, skipping control frames; panics after
    /// `timeout` or on a failure.
    pub fn next_text(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_until(deadline) {
                Read::Message(Message::Text(text)) => return text.as_str().to_string(),
                Read::Message(Message::Close(frame)) => {
                    panic!("closed while waiting for text: {frame:?}")
                }
                Read::Message(_) => {}
                Read::TimedOut => panic!("no text message within {timeout:?}"),
                Read::Failed(error) => panic!("read failed while waiting for text: {error}"),
            }
        }
    }

    /// Returns the next `count` text messages.
    pub fn texts(&mut self, count: usize, timeout: Duration) -> Vec<String> {
        (0..count).map(|_| self.next_text(timeout)).collect()
    }

    /// Returns the next text that is not a data frame: a reply or error
    /// (a JSON object with `result` or `code`).
    pub fn next_reply(&mut self, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let text = self.next_text(remaining.max(Duration::from_millis(1)));
            let value: serde_json::Value = serde_json::from_str(&text).expect("reply is JSON");
            if value.get("result").is_some() || value.get("code").is_some() {
                return value;
            }
        }
    }

    /// Sends a text message.
    pub fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).expect("send text");
    }

    /// Reads until the server's close frame and returns it; `None` when the
    /// connection ended without one or `timeout` passed.
    pub fn wait_close(&mut self, timeout: Duration) -> Option<CloseFrame> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_until(deadline) {
                Read::Message(Message::Close(frame)) => return frame,
                Read::Message(_) => {}
                Read::TimedOut | Read::Failed(_) => return None,
            }
        }
    }
}
