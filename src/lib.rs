//! binance-ingest stores Binance market-data WebSocket streams as
//! Hive-partitioned JSON Lines files, exactly once per event, and serves
//! health and Prometheus metrics over HTTP.
//!
//! Modules are listed in the order data flows through them: configuration,
//! connections, the pipeline, the cache ring and the sink, then the HTTP
//! side and the wiring of it all.

pub mod cli;
pub mod config;
pub mod error;
pub mod plan;
pub mod venue;

pub mod backoff;
pub mod connection;
pub mod reader;
pub mod scheduler;
pub mod timer;
pub mod tls;

pub mod digest;
pub mod frame;
pub mod parse;
pub mod partition;
pub mod pipeline;
pub mod record;
pub mod ring;
pub mod sequence;
pub mod sink;

pub mod health;
pub mod http;
pub mod http_parse;
pub mod http_server;
pub mod liveness;
pub mod memory;
pub mod metrics;
pub mod process;

pub mod app;
pub mod logging;
pub mod lograte;
pub mod notify;

/// The mock exchange: a Binance stream server on loopback for tests, the
/// demo, soak runs and benchmarks. Built into the `mock-exchange` binary.
pub mod mock;
