//! Memory benchmark: steady-state RSS and RSS growth per hour of the
//! service at a sustained high message rate from the mock exchange over
//! TLS on loopback.
//!
//! Warm-up lasts until the cache ring has filled, plus 5 s. Then the
//! benchmark reads VmRSS of the service from `/proc/<pid>/status` once a
//! second. It reports the median and peak RSS, RSS above the ring capacity,
//! and growth per hour from a least-squares line over all points and from
//! the service's own leak detector. Goals: RSS at most the ring capacity plus 20 MiB, growth
//! under 1 MB per 24 h.
//!
//! Run with `cargo bench --bench memory`. Bounded in time:
//! `MEMORY_BENCH_SECONDS` (default 60) of measurement after a warm-up of at
//! most 60 s. `cargo test --all-targets` runs it without `--bench`, and then
//! it measures for 3 s only, as a smoke test. `MEMORY_BENCH_RATE` sets events per second per stream
//! (default 5000, four streams) and `MEMORY_BENCH_CACHE` the ring size
//! (default 16MiB). Only loopback addresses are used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use binance_ingest::memory::leak;

const STREAMS: &str = "btcusdt@trade,btcusdt@aggTrade,btcusdt@depth@100ms,ethusdt@bookTicker";
const MIB: f64 = 1024.0 * 1024.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn main() {
    let smoke = !std::env::args().any(|arg| arg == "--bench");
    let seconds: u64 = env_or("MEMORY_BENCH_SECONDS", if smoke { 3 } else { 60 });
    let rate: u64 = env_or("MEMORY_BENCH_RATE", 5000);
    let cache: String = env_or("MEMORY_BENCH_CACHE", "16MiB".to_string());
    let dir = std::env::temp_dir().join(format!("binance-ingest-memory-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create bench folder");
    println!(
        "memory benchmark: {seconds} s after warm-up, 4 streams x {rate} events/s, \
         CACHE_SIZE={cache}, TLS on loopback"
    );

    let mock = Mock::start(&dir.join("mock"), rate);
    let mut service = Service::start(&mock, &dir.join("service"), &cache);
    let http = service.http;
    let pid = service.child.id();

    let warm_deadline = Instant::now() + Duration::from_secs(60);
    while metric(http, "binance_ingest_ring_evicted_records_total").unwrap_or(0.0) == 0.0 {
        assert!(Instant::now() < warm_deadline, "the ring did not fill within 60 s");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(5));
    let ring = metric(http, "binance_ingest_ring_capacity_bytes").unwrap_or(0.0);
    let events_start = stored_events(http);

    let started = Instant::now();
    let mut points: Vec<(f64, f64)> = Vec::new();
    let mut next = started;
    while started.elapsed() < Duration::from_secs(seconds) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        points
            .push((started.elapsed().as_secs_f64(), status_kib(&status, "VmRSS:") as f64 * 1024.0));
        next += Duration::from_secs(1);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let events = stored_events(http) - events_start;
    let body = get(http, "/metrics");
    let dropped = value(&body, "binance_ingest_frames_dropped_total");
    let own_growth = value(&body, "binance_ingest_memory_growth_bytes_per_hour");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_since_start = status_kib(&status, "VmHWM:") as f64 * 1024.0;
    service.stop();
    drop(mock);
    let _ = std::fs::remove_dir_all(&dir);

    let mut rss: Vec<f64> = points.iter().map(|(_, rss)| *rss).collect();
    rss.sort_by(f64::total_cmp);
    let median = rss[rss.len() / 2];
    let peak = rss[rss.len() - 1];
    let slope_per_hour = least_squares_slope(&points) * 3600.0;
    let limits =
        leak::Limits { threshold_per_day: 50.0 * MIB, min_span_seconds: 0.0, recent_seconds: 0.0 };
    let detector = leak::assess(points.iter().copied(), &limits, false);

    println!();
    println!("events stored per second      {:>12.0}", events / elapsed);
    println!("frames dropped                {:>12.0}", dropped);
    println!("ring capacity MiB             {:>12.1}", ring / MIB);
    println!("steady-state RSS MiB (median) {:>12.1}", median / MIB);
    println!("peak RSS MiB (window)         {:>12.1}", peak / MIB);
    println!("peak RSS MiB (VmHWM)          {:>12.1}", peak_since_start / MIB);
    println!("RSS above ring MiB (median)   {:>12.1}", (median - ring) / MIB);
    println!("growth MB/h, least squares    {:>12.3}", slope_per_hour / 1e6);
    println!("growth MB/h, leak detector    {:>12.3}", detector.growth_per_hour / 1e6);
    println!("growth MB/h, service gauge    {:>12.3}", own_growth / 1e6);
    println!("projected growth MB / 24 h    {:>12.2}", detector.growth_per_day() / 1e6);
    println!();
    println!(
        "goal RSS <= ring + 20 MiB: {}",
        if median - ring <= 20.0 * MIB { "met" } else { "missed" }
    );
    println!(
        "goal growth < 1 MB / 24 h: {} (from {:.0} s of samples; a short run bounds the \
         rate only roughly)",
        if detector.growth_per_day() < 1e6 { "met" } else { "missed" },
        elapsed
    );
}

fn least_squares_slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    if sxx > 0.0 { sxy / sxx } else { 0.0 }
}

struct Mock {
    child: Child,
    address: SocketAddr,
    ca: PathBuf,
}

impl Mock {
    fn start(dir: &Path, rate: u64) -> Mock {
        std::fs::create_dir_all(dir).expect("create mock folder");
        let ready = dir.join("ready");
        let ca = dir.join("ca.pem");
        let child = Command::new(env!("CARGO_BIN_EXE_mock-exchange"))
            .args(["--listen", "127.0.0.1:0", "--rate", &rate.to_string()])
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

struct Service {
    child: Child,
    http: SocketAddr,
}

impl Service {
    fn start(mock: &Mock, dir: &Path, cache: &str) -> Service {
        std::fs::create_dir_all(dir).expect("create service folder");
        let mut child = Command::new(env!("CARGO_BIN_EXE_binance-ingest"))
            .arg("run")
            .env("RUST_LOG", "info")
            .env("BINANCE_INGEST_ENDPOINT", format!("wss://localhost:{}", mock.address.port()))
            .env("BINANCE_INGEST_CA_FILE", &mock.ca)
            .env("BINANCE_INGEST_STREAMS", STREAMS)
            .env("BINANCE_INGEST_DATA_DIR", dir.join("data"))
            .env("BINANCE_INGEST_HTTP_ADDR", "127.0.0.1:0")
            .env("BINANCE_INGEST_CACHE_SIZE", cache)
            .env("BINANCE_INGEST_MEMORY_SAMPLE_INTERVAL", "1s")
            .env("BINANCE_INGEST_MEMORY_WINDOW", "1h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start binance-ingest");
        let stderr = child.stderr.take().expect("stderr");
        let (address_tx, address_rx) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("memory leak suspected") || line.contains("memory rss_") {
                    println!("service log: {line}");
                }
                if let Some((_, address)) = line.split_once("http listening on ") {
                    if let Ok(address) = address.trim().parse::<SocketAddr>() {
                        let _ = address_tx.try_send(address);
                    }
                }
            }
        });
        let http = address_rx.recv_timeout(Duration::from_secs(20)).expect("service http address");
        Service { child, http }
    }

    fn stop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
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

fn value(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
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

fn status_kib(text: &str, key: &str) -> u64 {
    text.lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line[key.len()..].split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}
