//! Test support shared by integration tests: a running mock exchange
//! process and a minimal TLS WebSocket client. Each test binary uses only
//! part of it.
#![allow(dead_code)]

pub mod client;
pub mod mock;
