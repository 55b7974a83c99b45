//! binance-ingest stores Binance market-data WebSocket streams as
//! Hive-partitioned JSON Lines files, exactly once per event, and serves
//! health and Prometheus metrics over HTTP.
//!
//! Modules are listed in the order data flows through them.

pub mod cli;
pub mod config;
pub mod digest;
pub mod error;
pub mod frame;
pub mod liveness;
pub mod metrics;
pub mod plan;
pub mod venue;
pub mod tls;
pub mod backoff;
pub mod ratelimit;
pub mod connection;
pub mod reader;
pub mod pipeline;
pub mod scheduler;
pub mod ring;
pub mod sink;
pub mod process;
pub mod health;
pub mod http;
pub mod logging;
pub mod notify;
pub mod app;
