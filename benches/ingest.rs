//! End-to-end benchmark: the service against the mock exchange over TLS on
//! loopback, beside a bare read loop as the floor.
//!
//! For a trade-only and a depth-only stream it runs two methods, each for
//! the bare loop (tungstenite over rustls, counting frames and nothing else)
//! and for binance-ingest (events stored, so frames dropped under overload
//! do not count):
//!
//! - flat out: the mock exchange sends as fast as it can. This gives
//!   messages per second and peak RSS. The service's CPU per message is
//!   inflated here, because the reader drops frames by design once the
//!   pipeline queue is full, and the work on those frames is charged to the
//!   stored ones.
//! - fixed rate: the mock exchange sends at a rate both readers sustain
//!   without drops (`BENCH_TRADE_RATE`, default 200,000 events a second,
//!   and `BENCH_DEPTH_RATE`, default 30,000). Both readers then handle the
//!   same messages, so this is the CPU seconds per million messages that the
//!   goals compare.
//!
//! During the flat-out trade phase it also measures the latency of
//! `/readyz` and `/metrics` under a steady request load, 200 requests a
//! second each, over at least [`MIN_HTTP_REQUESTS`] requests.
//!
//! The mock exchange runs under `nice -n 10`. It plays the part of a remote
//! exchange, so it should not take cores from the service or the client.
//!
//! Run with `make bench` or `cargo bench --bench ingest`. Each phase is
//! bounded in time (`BENCH_SECONDS`, default 8 s per phase, and at most 60 s
//! for the HTTP phase) and stops by itself. Only loopback addresses are
//! used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Linux reports thread and process times in USER_HZ, 100 per second.
const USER_HZ: f64 = 100.0;

/// Requests per endpoint the HTTP latency phase collects at least.
const MIN_HTTP_REQUESTS: usize = 2000;

/// Time between two `/readyz` + `/metrics` request pairs: 200 pairs a second.
const HTTP_REQUEST_SPACING: Duration = Duration::from_millis(5);

/// Upper bound on the HTTP latency phase.
const HTTP_PHASE_LIMIT: Duration = Duration::from_secs(60);

/// Niceness of the mock exchange process.
const MOCK_NICENESS: &str = "10";

struct Figures {
    messages_per_second: f64,
    cpu_per_million: f64,
    /// Frames the service's reader dropped in the window; 0 for the floor.
    dropped: f64,
    peak_rss_mib: f64,
}

fn main() {
    let seconds: u64 =
        std::env::var("BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let trade_rate = env_rate("BENCH_TRADE_RATE", 200_000);
    let depth_rate = env_rate("BENCH_DEPTH_RATE", 30_000);
    let window = Duration::from_secs(seconds);
    let dir = std::env::temp_dir().join(format!("binance-ingest-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench folder");

    println!("binance-ingest benchmark: {seconds} s per phase, TLS on loopback, {} cores", cores());
    let mut rows = Vec::new();
    let streams =
        [("trade", "btcusdt@trade", trade_rate), ("depth", "btcusdt@depth@100ms", depth_rate)];
    for (label, stream, fixed_rate) in streams {
        let mut phases = Vec::new();
        for rate in ["max".to_string(), fixed_rate.to_string()] {
            let flat_out = rate == "max";
            let mock = Mock::start(&dir.join(format!("mock-floor-{label}-{rate}")), &rate);
            let floor = bare_read_loop(&mock, stream, window);
            drop(mock);

            let mock = Mock::start(&dir.join(format!("mock-{label}-{rate}")), &rate);
            let service_dir = dir.join(format!("service-{label}-{rate}"));
            let measure_http = flat_out && label == "trade";
            let (service, latency) = service_run(&mock, stream, window, &service_dir, measure_http);
            drop(mock);
            phases.push((rate, floor, service, latency));
        }
        rows.push((label, phases));
    }

    println!();
    println!(
        "{:<7} {:<8} {:<16} {:>10} {:>16} {:>10} {:>13}",
        "stream", "rate", "reader", "msg/s", "CPU s / 1M msg", "dropped", "peak RSS MiB"
    );
    for (label, phases) in &rows {
        for (rate, floor, service, _) in phases {
            for (name, figures) in [("bare read loop", floor), ("binance-ingest", service)] {
                println!(
                    "{label:<7} {rate:<8} {name:<16} {:>10.0} {:>16.3} {:>10.0} {:>13.1}",
                    figures.messages_per_second,
                    figures.cpu_per_million,
                    figures.dropped,
                    figures.peak_rss_mib
                );
            }
            println!(
                "{label:<7} {rate:<8} {:<16} {:>10} {:>15.2}x",
                "ratio",
                "",
                service.cpu_per_million / floor.cpu_per_million
            );
        }
    }
    println!();
    println!("Goals (fixed-rate rows): trade ratio at most 4x, depth at most 2x.");
    for (label, phases) in &rows {
        for (_, _, _, latency) in phases {
            let Some(latency) = latency else { continue };
            println!();
            println!(
                "HTTP latency while ingesting {label} at full speed ({} requests each):",
                latency.count
            );
            for (path, samples) in [("/readyz", &latency.readyz), ("/metrics", &latency.metrics)] {
                println!(
                    "  {path:<9} p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
                    percentile(samples, 0.50),
                    percentile(samples, 0.99),
                    percentile(samples, 1.0)
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Reads a positive events-per-second rate from `name`, else `default`.
fn env_rate(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .filter(|&rate| rate > 0)
        .unwrap_or(default)
}

struct Mock {
    child: Child,
    address: SocketAddr,
    ca: PathBuf,
}

impl Mock {
    /// Starts the mock exchange at `rate` (events a second, or `max`),
    /// under `nice`.
    fn start(dir: &Path, rate: &str) -> Mock {
        std::fs::create_dir_all(dir).expect("create mock folder");
        let ready = dir.join("ready");
        let ca = dir.join("ca.pem");
        let child = Command::new("nice")
            .args(["-n", MOCK_NICENESS, env!("CARGO_BIN_EXE_mock-exchange")])
            .args(["--listen", "127.0.0.1:0", "--rate", rate])
            .arg("--ca-out")
            .arg(&ca)
            .arg("--ready-file")
            .arg(&ready)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mock-exchange");
        let deadline = Instant::now() + Duration::from_secs(20);
        let address = loop {
            if let Some(address) =
                std::fs::read_to_string(&ready).ok().and_then(|t| t.trim().parse().ok())
            {
                break address;
            }
            assert!(Instant::now() < deadline, "mock-exchange did not become ready");
            std::thread::sleep(Duration::from_millis(10));
        };
        Mock { child, address, ca }
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The floor: tungstenite over rustls, counting frames and nothing else.
fn bare_read_loop(mock: &Mock, stream: &str, window: Duration) -> Figures {
    let ca = std::fs::read(&mock.ca).expect("read CA");
    let address = mock.address;
    let stream = stream.to_string();
    let handle = std::thread::spawn(move || {
        let mut roots = rustls::RootCertStore::empty();
        for certificate in CertificateDer::pem_slice_iter(&ca) {
            roots.add(certificate.expect("CA PEM")).expect("add CA");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tcp = TcpStream::connect(address).expect("connect to mock");
        tcp.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let transport = rustls::StreamOwned::new(tls, tcp);
        let url = format!("wss://localhost:{}/stream?streams={stream}", address.port());
        let (mut socket, _) = tungstenite::client::client(url, transport).expect("handshake");

        // Warm up, then measure over the window.
        let warm_until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < warm_until {
            socket.read().expect("read");
        }
        let cpu_start = thread_cpu_seconds();
        let started = Instant::now();
        let mut frames = 0u64;
        while started.elapsed() < window {
            if let tungstenite::Message::Text(_) = socket.read().expect("read") {
                frames += 1;
            }
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cpu = thread_cpu_seconds() - cpu_start;
        (frames, elapsed, cpu)
    });
    let (frames, elapsed, cpu) = handle.join().expect("floor thread");
    Figures {
        messages_per_second: frames as f64 / elapsed,
        cpu_per_million: cpu / frames as f64 * 1e6,
        dropped: 0.0,
        peak_rss_mib: status_kib(
            &std::fs::read_to_string("/proc/self/status").unwrap_or_default(),
            "VmHWM:",
        ) as f64
            / 1024.0,
    }
}

struct Latency {
    count: usize,
    readyz: Vec<f64>,
    metrics: Vec<f64>,
}

fn service_run(
    mock: &Mock,
    stream: &str,
    window: Duration,
    dir: &Path,
    measure_http: bool,
) -> (Figures, Option<Latency>) {
    std::fs::create_dir_all(dir).expect("create service folder");
    let mut child = Command::new(env!("CARGO_BIN_EXE_binance-ingest"))
        .arg("run")
        .env("RUST_LOG", "info")
        .env("BINANCE_INGEST_ENDPOINT", format!("wss://localhost:{}", mock.address.port()))
        .env("BINANCE_INGEST_CA_FILE", &mock.ca)
        .env("BINANCE_INGEST_STREAMS", stream)
        .env("BINANCE_INGEST_DATA_DIR", dir.join("data"))
        .env("BINANCE_INGEST_HTTP_ADDR", "127.0.0.1:0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start binance-ingest");
    let pid = child.id();
    let stderr = child.stderr.take().expect("stderr");
    let (address_tx, address_rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some((_, address)) = line.split_once("http listening on ") {
                if let Ok(address) = address.trim().parse::<SocketAddr>() {
                    let _ = address_tx.try_send(address);
                }
            }
        }
    });
    let http = address_rx.recv_timeout(Duration::from_secs(20)).expect("service http address");

    // Warm up until data flows, then measure over the window.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored_events(http) < 1000.0 {
        assert!(Instant::now() < deadline, "no data reached the service");
        std::thread::sleep(Duration::from_millis(50));
    }
    let dropped_start = metric(http, "binance_ingest_frames_dropped_total").unwrap_or(0.0);
    let frames_start = stored_events(http);
    let cpu_start = process_cpu_seconds(pid);
    let started = Instant::now();

    let stop = Arc::new(AtomicBool::new(false));
    let load = measure_http.then(|| {
        let stop = stop.clone();
        std::thread::spawn(move || http_load(http, &stop))
    });
    let done = || match &load {
        // The HTTP phase lasts until it has enough requests, within a bound.
        Some(handle) => handle.is_finished() || started.elapsed() >= HTTP_PHASE_LIMIT,
        None => started.elapsed() >= window,
    };
    while !done() {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let latency = load.map(|handle| handle.join().expect("http load thread"));

    let elapsed = started.elapsed().as_secs_f64();
    let frames = stored_events(http) - frames_start;
    let cpu = process_cpu_seconds(pid) - cpu_start;
    let dropped =
        metric(http, "binance_ingest_frames_dropped_total").unwrap_or(0.0) - dropped_start;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_rss_mib = status_kib(&status, "VmHWM:") as f64 / 1024.0;

    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let _ = child.wait();
    let figures = Figures {
        messages_per_second: frames / elapsed,
        cpu_per_million: cpu / frames * 1e6,
        dropped,
        peak_rss_mib,
    };
    (figures, latency)
}

/// Requests `/readyz` and `/metrics` alternately, a pair every
/// [`HTTP_REQUEST_SPACING`], until it has [`MIN_HTTP_REQUESTS`] pairs or
/// `stop` is set, and records each latency in milliseconds.
fn http_load(address: SocketAddr, stop: &AtomicBool) -> Latency {
    let mut latency = Latency { count: 0, readyz: Vec::new(), metrics: Vec::new() };
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) && latency.count < MIN_HTTP_REQUESTS {
        for (path, samples) in
            [("/readyz", &mut latency.readyz), ("/metrics", &mut latency.metrics)]
        {
            let started = Instant::now();
            let _ = get(address, path);
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        latency.count += 1;
        next += HTTP_REQUEST_SPACING;
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    latency
}

fn get(address: SocketAddr, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(stream, "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body
}

fn metric(address: SocketAddr, name: &str) -> Option<f64> {
    let body = get(address, "/metrics");
    body.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Events the pipeline accepted for storage, summed over streams.
fn stored_events(address: SocketAddr) -> f64 {
    let body = get(address, "/metrics");
    body.lines()
        .filter(|line| line.starts_with("binance_ingest_events_total{"))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn percentile(samples: &[f64], quantile: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() - 1) as f64 * quantile).round() as usize;
    sorted[index]
}

fn thread_cpu_seconds() -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default())
}

fn process_cpu_seconds(pid: u32) -> f64 {
    stat_cpu_seconds(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// utime + stime (fields 14 and 15) of a `stat` file, in seconds.
fn stat_cpu_seconds(text: &str) -> f64 {
    let after_name = text.rfind(')').map_or("", |index| &text[index + 1..]);
    let fields: Vec<u64> =
        after_name.split_whitespace().skip(11).take(2).filter_map(|f| f.parse().ok()).collect();
    fields.iter().sum::<u64>() as f64 / USER_HZ
}

fn status_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line[key.len()..].split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
