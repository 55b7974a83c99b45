//! binance-ingest stores Binance market-data WebSocket streams as
//! Hive-partitioned JSON Lines files, exactly once per event, and serves
//! health and Prometheus metrics over HTTP.
//!
//! Modules are listed in the order data flows through them.

pub mod config;
pub mod digest;
pub mod error;
pub mod frame;
pub mod liveness;
pub mod metrics;
pub mod mock;
pub mod plan;
pub mod venue;
