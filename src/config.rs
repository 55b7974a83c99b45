//! Validated settings of the service.
//!
//! SKELETON: the struct and its defaults are fixed; parsing of the `KEY=value`
//! file, the environment and the flags is being written.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::plan::RoutingRules;
use crate::venue::{Endpoint, Venue};

/// Resolved, validated configuration. Built once at start.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `BINANCE_INGEST_VENUE`. Defaults to spot.
    pub venue: Venue,
    /// `BINANCE_INGEST_STREAMS`: validated stream names, duplicates removed.
    pub streams: Vec<String>,
    /// `BINANCE_INGEST_ENDPOINT`: server to connect to instead of the venue's.
    pub endpoint: Option<Endpoint>,
    /// `BINANCE_INGEST_CA_FILE`: extra PEM CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// `BINANCE_INGEST_DATA_DIR`. Defaults to `./data`.
    pub data_dir: PathBuf,
    /// `BINANCE_INGEST_HTTP_ADDR`. Defaults to 127.0.0.1:9780.
    pub http_addr: SocketAddr,
    /// `BINANCE_INGEST_INSTANCE`: name in part-file names. Defaults to `main`.
    pub instance: String,
    /// `BINANCE_INGEST_CACHE_SIZE`: cache ring capacity in bytes. Defaults to 64 MiB.
    pub cache_size: usize,
    /// `BINANCE_INGEST_FRAME_QUEUE`: frame batches queued between readers
    /// and the pipeline. Defaults to 64.
    pub frame_queue: usize,
    /// `BINANCE_INGEST_FLUSH_INTERVAL`: at most 1 s. Defaults to 1 s.
    pub flush_interval: Duration,
    /// `BINANCE_INGEST_MAX_STREAMS_PER_CONNECTION`: 1 to 1024. Defaults to 1024.
    pub max_streams_per_connection: usize,
    /// `BINANCE_INGEST_USDM_TRADE_ROUTE` and `BINANCE_INGEST_COINM_ROUTED`.
    pub routing: RoutingRules,
    /// `BINANCE_INGEST_RECONNECT_MIN`: first backoff step. Defaults to 1 s.
    pub reconnect_min: Duration,
    /// `BINANCE_INGEST_RECONNECT_MAX`: backoff cap. Defaults to 60 s.
    pub reconnect_max: Duration,
    /// `BINANCE_INGEST_CONNECT_TIMEOUT`: TCP, TLS and WebSocket handshake
    /// together. Defaults to 10 s.
    pub connect_timeout: Duration,
    /// `BINANCE_INGEST_STALE_AFTER`: a connection with no frame of any kind
    /// for this long is not ready. Defaults to 60 s.
    pub stale_after: Duration,
    /// `BINANCE_INGEST_MAX_MESSAGE_SIZE`: largest WebSocket message accepted.
    /// Defaults to 16 MiB.
    pub max_message_size: usize,
    /// `BINANCE_INGEST_MAX_FRAME_SIZE`: largest WebSocket frame accepted.
    /// Defaults to 16 MiB.
    pub max_frame_size: usize,
    /// `BINANCE_INGEST_BATCH_DELAY`: longest time a reader holds received
    /// frames before it hands them to the pipeline. Defaults to 5 ms.
    pub batch_delay: Duration,
    /// `BINANCE_INGEST_BATCH_SIZE`: payload bytes after which a reader hands
    /// a batch over at once. Defaults to 256 KiB.
    pub batch_size: usize,
    /// `BINANCE_INGEST_HTTP_THREADS`: request handler threads. Defaults to 2.
    pub http_threads: usize,
    /// `BINANCE_INGEST_DEDUP_WINDOW`: payload digests remembered per stream
    /// without ids. Defaults to 256.
    pub dedup_window: usize,
    /// `BINANCE_INGEST_MAX_STREAMS`: upper bound on configured streams, which
    /// bounds every per-stream table. Defaults to 4096.
    pub max_streams: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            venue: Venue::Spot,
            streams: vec!["btcusdt@trade".to_string(), "btcusdt@depth@100ms".to_string()],
            endpoint: None,
            ca_file: None,
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9780)),
            instance: "main".to_string(),
            cache_size: 64 << 20,
            frame_queue: 64,
            flush_interval: Duration::from_secs(1),
            max_streams_per_connection: 1024,
            routing: RoutingRules::default(),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            stale_after: Duration::from_secs(60),
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            batch_delay: Duration::from_millis(5),
            batch_size: 256 << 10,
            http_threads: 2,
            dedup_window: 256,
            max_streams: 4096,
        }
    }
}

impl Config {
    /// Endpoint to connect to: the override, else the venue's.
    pub fn effective_endpoint(&self) -> Endpoint {
        self.endpoint.clone().unwrap_or_else(|| self.venue.default_endpoint())
    }
}
