//! Test support shared by integration tests: a running mock exchange
//! process, a running service process and a minimal TLS WebSocket client.
//! Each test binary uses only part of it.
#![allow(dead_code)]

pub mod check;
pub mod client;
pub mod mock;
pub mod service;
