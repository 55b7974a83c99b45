//! Measures how many trade frames per second the mock exchange sends to one
//! TLS client that only counts them.
//!
//! The mock runs in-process (`MockServer`) at `--rate max` on one trade
//! stream; the client runs on another thread. The run stops after
//! `FRAMES` frames or `TIME_LIMIT`, whichever comes first. Run with
//! `cargo bench --bench mock_throughput`.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use binance_ingest::mock::{MockServer, Options, Rate};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tungstenite::{Connector, Message};

/// Frames counted in the run without a sent-log.
const FRAMES: u64 = 2_000_000;

/// Longest run.
const TIME_LIMIT: Duration = Duration::from_secs(20);

/// Frames read before timing starts, so TLS setup and warm-up stay out of
/// the figure.
const WARM_UP: u64 = 50_000;

fn main() {
    run("without sent-log", None, FRAMES);

    let dir = std::env::temp_dir().join(format!("mock-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temporary folder");
    run("with sent-log", Some(dir.join("sent.jsonl")), FRAMES / 2);
    std::fs::remove_dir_all(&dir).expect("remove temporary folder");
}

/// Streams `limit` frames (after the warm-up) to one client and prints the
/// rate.
fn run(label: &str, sent_log: Option<std::path::PathBuf>, limit: u64) {
    let options = Options { rate: Rate::Max, sent_log, ..Options::default() };
    let server = MockServer::start(options).expect("start mock exchange");
    let ca_pem = server.ca_pem().expect("TLS mock has a CA").to_string();

    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(certificate.expect("parse CA")).expect("add CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();

    let tcp = TcpStream::connect(server.local_addr()).expect("connect");
    let url =
        format!("wss://localhost:{}/stream?streams=btcusdt@trade", server.local_addr().port());
    let (mut ws, _) = tungstenite::client_tls_with_config(
        url,
        tcp,
        None,
        Some(Connector::Rustls(Arc::new(config))),
    )
    .expect("handshake");

    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut started = None;
    let deadline = Instant::now() + TIME_LIMIT;
    while frames < limit + WARM_UP && Instant::now() < deadline {
        if let Message::Text(text) = ws.read().expect("read") {
            frames += 1;
            if frames == WARM_UP {
                started = Some(Instant::now());
            } else if frames > WARM_UP {
                bytes += text.len() as u64;
            }
        }
    }
    let Some(started) = started else {
        panic!("fewer than {WARM_UP} frames within {TIME_LIMIT:?}");
    };
    let elapsed = started.elapsed().as_secs_f64();
    let counted = frames - WARM_UP;
    println!(
        "mock_throughput {label}: {counted} trade frames in {elapsed:.2} s = {:.0} frames/s, {:.1} MB/s of frames, mean frame {} bytes",
        counted as f64 / elapsed,
        bytes as f64 / elapsed / 1e6,
        bytes / counted.max(1)
    );
    drop(ws);
    server.stop();
}
