//! Memory end to end: the real service against the real mock exchange at a
//! high rate, checked against `/proc/<pid>/status` read by the test. Also
//! the worst-case budget from `check-config` against the peak RSS of a
//! burst, alerts on `/metrics` and the health endpoints, and the exit at
//! the critical level.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::mock::{MockExchange, unique_dir};
use support::service::{Service, http_request, metric_value};

const MIB: f64 = 1024.0 * 1024.0;

/// The shared test settings plus a fast memory sampler.
fn base_settings(mock: &MockExchange, streams: &str) -> Vec<(&'static str, String)> {
    let settings = support::check::base_settings(mock, streams);
    with(
        settings,
        &[
            ("BINANCE_INGEST_MEMORY_SAMPLE_INTERVAL", "100ms"),
            ("BINANCE_INGEST_MEMORY_WINDOW", "30s"),
        ],
    )
}

/// Returns `settings` with each of `changes` set, replacing earlier values.
fn with(
    mut settings: Vec<(&'static str, String)>,
    changes: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    for (key, value) in changes {
        settings = support::check::with(settings, key, value);
    }
    settings
}

/// Returns a `Key:   123 kB` field of `/proc/<pid>/status`, in bytes for
/// sizes and as is for counts.
fn proc_status(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text.lines().find(|line| line.starts_with(key)).unwrap();
    let mut words = line[key.len()..].split_whitespace();
    let number: u64 = words.next().unwrap().parse().unwrap();
    if words.next() == Some("kB") { number * 1024 } else { number }
}

fn proc_open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

fn metric(body: &str, name: &str) -> f64 {
    metric_value(body, name).unwrap_or_else(|| panic!("no sample {name} in /metrics:\n{body}"))
}

fn assert_near(what: &str, metric: f64, proc: f64, tolerance: f64) {
    assert!(
        (metric - proc).abs() <= tolerance,
        "{what}: /metrics {metric}, /proc {proc}, tolerance {tolerance}"
    );
}

/// Runs `binance-ingest check-config` with `settings` and returns its exit
/// code, standard output and standard error.
fn check_config(settings: &[(&str, String)]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_binance-ingest"))
        .arg("check-config")
        .env_clear()
        .envs(settings.iter().map(|(key, value)| (*key, value.as_str())))
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Reads the total of the budget that `check-config` prints, in bytes.
fn budget_total(stdout: &str) -> f64 {
    let line = stdout.lines().find(|line| line.starts_with("#   total")).unwrap();
    let words: Vec<&str> = line.split_whitespace().collect();
    let value: f64 = words[2].parse().unwrap();
    let unit = match words[3] {
        "B" => 1.0,
        "KiB" => 1024.0,
        "MiB" => MIB,
        "GiB" => 1024.0 * MIB,
        other => panic!("unknown unit {other} in {line}"),
    };
    value * unit
}

#[test]
fn high_rate_reaches_plateau_without_alert() {
    // 3 streams at 2,000 events/s each: high for a debug build on a shared
    // machine, yet sustainable, so the frame queue stays short.
    let mock = MockExchange::start(&["--rate", "2000"]);
    let dir = unique_dir("memory-plateau");
    let settings = with(
        base_settings(&mock, "btcusdt@trade,btcusdt@depth@100ms,ethusdt@bookTicker"),
        &[
            ("BINANCE_INGEST_CACHE_SIZE", "2MiB"),
            ("BINANCE_INGEST_FRAME_QUEUE", "8"),
            ("BINANCE_INGEST_BATCH_SIZE", "64KiB"),
            ("BINANCE_INGEST_MEMORY_WINDOW", "12s"),
            ("BINANCE_INGEST_MEMORY_WARMUP", "5s"),
        ],
    );
    let service = Service::start(&dir, &settings);
    let pid = service.pid();

    // The 2 MiB ring evicts within seconds, but warm-up still lasts the
    // full 5 s of MEMORY_WARMUP, so the buffers behind it fill first.
    service.wait_for("the ring to fill", Duration::from_secs(20), |service| {
        service.metric("binance_ingest_ring_evicted_records_total").unwrap_or(0.0) > 0.0
    });
    service.wait_for("leak detection to start", Duration::from_secs(20), |service| {
        service.metric("binance_ingest_memory_leak_detection_active") == Some(1.0)
    });
    // Watch RSS for one full window after warm-up.
    let started = Instant::now();
    let mut first_half: f64 = 0.0;
    let mut second_half: f64 = 0.0;
    while started.elapsed() < Duration::from_secs(12) {
        let rss = proc_status(pid, "VmRSS:") as f64;
        if started.elapsed() < Duration::from_secs(6) {
            first_half = first_half.max(rss);
        } else {
            second_half = second_half.max(rss);
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let (_, body) = service.get("/metrics");
    let events = metric(&body, "binance_ingest_ring_evicted_records_total");
    assert!(events > 10_000.0, "the load was too light to prove anything: {events} evicted");
    // An empty and a full frame queue differ by up to 9 batches of 4 x
    // 64 KiB, about 2.3 MiB, which a shared machine's hiccup may fill.
    assert!(
        second_half - first_half < 4.0 * MIB,
        "RSS peak grew from {first_half} to {second_half} bytes between the window halves"
    );
    assert!(
        second_half < 2.0 * MIB + 20.0 * MIB,
        "RSS {second_half} bytes is above the 2 MiB ring plus 20 MiB"
    );
    for kind in ["leak", "rss_warn", "rss_critical"] {
        let gauge = format!("binance_ingest_memory_alert{{kind=\"{kind}\"}}");
        assert_eq!(metric(&body, &gauge), 0.0, "{kind} alert is active\n{}", service.log_text());
        let counter = format!("binance_ingest_memory_alerts_total{{kind=\"{kind}\"}}");
        assert_eq!(metric(&body, &counter), 0.0, "{kind} alert was raised");
    }
    println!(
        "rss first half {first_half:.0} B, second half {second_half:.0} B, frames dropped {}",
        metric(&body, "binance_ingest_frames_dropped_total")
    );
    // A 12 s window projects any creep to a large daily figure; what must
    // stay small is the growth fitted over the window itself.
    let growth = metric(&body, "binance_ingest_memory_growth_bytes_per_hour");
    let over_window = growth * 12.0 / 3600.0;
    assert!(over_window < 2.0 * MIB, "fitted growth {over_window} bytes over the 12 s window");
    assert!(!service.log_contains("memory leak suspected"), "{}", service.log_text());
    let (code, live) = service.get("/livez");
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(json["status"], "pass", "{live}");
    assert_eq!(json["checks"]["memory"][0]["status"], "pass", "{live}");
}

#[test]
fn metrics_agree_with_proc() {
    let mock = MockExchange::start(&["--rate", "2000"]);
    let dir = unique_dir("memory-proc");
    let settings = with(
        base_settings(&mock, "btcusdt@trade,ethusdt@trade"),
        &[
            ("BINANCE_INGEST_CACHE_SIZE", "2MiB"),
            ("BINANCE_INGEST_MEMORY_WARN", "300MiB"),
            ("BINANCE_INGEST_MEMORY_CRITICAL", "600MiB"),
            ("BINANCE_INGEST_MEMORY_LEAK_THRESHOLD", "20MiB"),
        ],
    );
    let service = Service::start(&dir, &settings);
    let pid = service.pid();
    service.wait_for("memory samples", Duration::from_secs(20), |service| {
        service.metric("binance_ingest_memory_samples_total").unwrap_or(0.0) >= 10.0
    });

    let rss = proc_status(pid, "VmRSS:") as f64;
    let size = proc_status(pid, "VmSize:") as f64;
    let peak = proc_status(pid, "VmHWM:") as f64;
    let threads = proc_status(pid, "Threads:") as f64;
    let fds = proc_open_fds(pid) as f64;
    let (_, body) = service.get("/metrics");
    let rss_after = proc_status(pid, "VmRSS:") as f64;

    // Read at nearly the same moment; RSS may move by a few pages.
    let tolerance = 2.0 * MIB + (rss_after - rss).abs();
    assert_near("RSS", metric(&body, "process_resident_memory_bytes"), rss, tolerance);
    assert_near("virtual size", metric(&body, "process_virtual_memory_bytes"), size, 16.0 * MIB);
    // The sampler's own figures are up to one interval (100 ms) old.
    assert_near(
        "sampled peak RSS",
        metric(&body, "binance_ingest_memory_resident_peak_bytes"),
        peak,
        4.0 * MIB,
    );
    // An HTTP handler thread and a socket may come and go around the read.
    assert_near("threads", metric(&body, "binance_ingest_threads"), threads, 2.0);
    assert_near("open fds", metric(&body, "process_open_fds"), fds, 3.0);
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let max_fds: f64 = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .and_then(|line| line.split_whitespace().nth(3))
        .and_then(|value| value.parse().ok())
        .unwrap();
    assert_eq!(metric(&body, "process_max_fds"), max_fds);
    let start = metric(&body, "process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    assert!(now.as_secs_f64() - start < 120.0, "start time {start} is not recent");
    assert!(metric(&body, "process_cpu_seconds_total") > 0.0);
    assert!(metric(&body, "binance_ingest_memory_budget_bytes") > rss);
    assert_eq!(metric(&body, "binance_ingest_frame_queue_capacity"), 64.0);
    assert!(metric(&body, "binance_ingest_frame_queue_length") <= 64.0);
    assert_eq!(metric(&body, "binance_ingest_ring_capacity_bytes"), 2.0 * MIB);
    // The configured levels, which the Prometheus rules compare against.
    assert_eq!(metric(&body, "binance_ingest_memory_warn_bytes"), 300.0 * MIB);
    assert_eq!(metric(&body, "binance_ingest_memory_critical_bytes"), 600.0 * MIB);
    assert_eq!(metric(&body, "binance_ingest_memory_leak_threshold_bytes"), 20.0 * MIB);
}

#[test]
fn budget_covers_peak_rss_under_burst() {
    let mock = MockExchange::start(&["--rate", "max"]);
    let dir = unique_dir("memory-burst");
    // Tight limits, so the budget is small enough for the comparison to
    // mean something, and a frame queue of two batches that fills at once.
    let streams: Vec<String> =
        (0..8).map(|i| format!("sym{i}usdt@trade")).chain(["btcusdt@depth@100ms".into()]).collect();
    let settings = with(
        base_settings(&mock, &streams.join(",")),
        &[
            ("BINANCE_INGEST_CACHE_SIZE", "4MiB"),
            ("BINANCE_INGEST_FRAME_QUEUE", "2"),
            ("BINANCE_INGEST_BATCH_SIZE", "16KiB"),
            ("BINANCE_INGEST_MAX_MESSAGE_SIZE", "64KiB"),
            ("BINANCE_INGEST_MAX_FRAME_SIZE", "64KiB"),
            ("BINANCE_INGEST_MAX_STREAMS_PER_CONNECTION", "1"),
            ("BINANCE_INGEST_MAX_STREAMS", "16"),
            ("BINANCE_INGEST_HTTP_THREADS", "2"),
            ("BINANCE_INGEST_SINK_BUFFER_SIZE", "256KiB"),
            ("BINANCE_INGEST_FLUSH_INTERVAL", "1ms"),
            ("BINANCE_INGEST_MEMORY_LIMIT", "256MiB"),
        ],
    );
    let mut check_settings = settings.clone();
    check_settings.push(("BINANCE_INGEST_DATA_DIR", dir.join("data").display().to_string()));
    let (code, stdout, stderr) = check_config(&check_settings);
    assert_eq!(code, 0, "check-config failed: {stderr}");
    let budget = budget_total(&stdout);

    let service = Service::start(&dir, &settings);
    let pid = service.pid();
    let address = service.http_address();
    // Requests for /recent hold the ring lock while they copy, which slows
    // the pipeline's appends, so the frame queue fills and readers hold
    // and drop batches.
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(40);
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    let _ = http_request(address, "GET", "/recent?limit=1000");
                }
            })
        })
        .collect();
    let mut queue_full = false;
    service.wait_for("frames dropped at a full queue", Duration::from_secs(30), |service| {
        let (_, body) = service.get("/metrics");
        let length = metric_value(&body, "binance_ingest_frame_queue_length").unwrap_or(0.0);
        queue_full |= length >= 2.0;
        metric_value(&body, "binance_ingest_frames_dropped_total").unwrap_or(0.0) > 0.0
            && metric_value(&body, "binance_ingest_ring_evicted_records_total").unwrap_or(0.0) > 0.0
    });
    // Keep the burst up a little longer so every buffer has had its peak.
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let peak = proc_status(pid, "VmHWM:") as f64;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    println!("budget {budget:.0} bytes, peak RSS {peak:.0} bytes, queue seen full: {queue_full}");
    assert!(peak <= budget, "peak RSS {peak} bytes exceeds the budget {budget} bytes\n{stdout}");
    assert!(peak > 4.0 * MIB, "peak RSS {peak} is below the ring size; the load did not run");
}

#[test]
fn rss_above_warn_level_warns_on_health() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let dir = unique_dir("memory-warn");
    let settings = with(
        base_settings(&mock, "btcusdt@trade"),
        &[("BINANCE_INGEST_MEMORY_WARN", "1MiB"), ("BINANCE_INGEST_CACHE_SIZE", "1MiB")],
    );
    let service = Service::start(&dir, &settings);
    service.wait_for("the rss_warn alert", Duration::from_secs(20), |service| {
        service.metric("binance_ingest_memory_alert{kind=\"rss_warn\"}") == Some(1.0)
    });
    assert_eq!(service.metric("binance_ingest_memory_alerts_total{kind=\"rss_warn\"}"), Some(1.0));
    assert_eq!(service.metric("binance_ingest_memory_alert{kind=\"rss_critical\"}"), Some(0.0));
    let (code, live) = service.get("/livez");
    assert_eq!(code, 200, "{live}");
    let json: serde_json::Value = serde_json::from_str(&live).unwrap();
    assert_eq!(json["status"], "warn", "{live}");
    assert_eq!(json["checks"]["memory"][0]["status"], "warn", "{live}");
    service
        .wait_for("readiness", Duration::from_secs(20), |service| service.get("/readyz").0 == 200);
    let (_, ready) = service.get("/readyz");
    let json: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(json["status"], "warn", "{ready}");
    assert!(service.log_contains("memory rss_warn"), "{}", service.log_text());
}

#[test]
fn critical_level_below_budget_rejected_with_exit() {
    let dir = unique_dir("memory-critical-check");
    let settings = vec![
        ("BINANCE_INGEST_DATA_DIR", dir.display().to_string()),
        ("BINANCE_INGEST_CACHE_SIZE", "8MiB".to_string()),
        ("BINANCE_INGEST_MEMORY_WARN", "9MiB".to_string()),
        ("BINANCE_INGEST_MEMORY_CRITICAL", "12MiB".to_string()),
        ("BINANCE_INGEST_MEMORY_EXIT_ON_CRITICAL", "true".to_string()),
    ];
    let (code, _, stderr) = check_config(&settings);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("for BINANCE_INGEST_MEMORY_CRITICAL"), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_MEMORY_EXIT_ON_CRITICAL=true"), "{stderr}");

    let settings =
        support::check::with(settings, "BINANCE_INGEST_MEMORY_EXIT_ON_CRITICAL", "false");
    let (code, stdout, stderr) = check_config(&settings);
    assert_eq!(code, 0, "{stderr}");
    let warnings: Vec<&str> = stdout.lines().filter(|l| l.starts_with("# warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{stdout}");
    assert!(warnings[0].contains("BINANCE_INGEST_MEMORY_CRITICAL=12MiB"), "{stdout}");
    assert!(warnings[1].contains("BINANCE_INGEST_MEMORY_WARN=9MiB"), "{stdout}");
}

/// Runs the service in this process with a critical level that validation
/// rejects with the exit on, because a real process never reaches its
/// budget total. The exit status 75 itself is mapped in `main.rs`.
#[test]
fn critical_level_stops_service() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let dir = unique_dir("memory-critical");
    let settings = with(
        base_settings(&mock, "btcusdt@trade"),
        &[
            ("BINANCE_INGEST_DATA_DIR", &dir.display().to_string()),
            ("BINANCE_INGEST_HTTP_ADDR", "127.0.0.1:0"),
            ("BINANCE_INGEST_MEMORY_WARN", "2MiB"),
            ("BINANCE_INGEST_MEMORY_CRITICAL", "2MiB"),
            ("BINANCE_INGEST_MEMORY_SAMPLE_INTERVAL", "500ms"),
            ("BINANCE_INGEST_CACHE_SIZE", "1MiB"),
        ],
    );
    let env = settings.into_iter().map(|(key, value)| (key.to_string(), value));
    let command = binance_ingest::cli::parse_command(["run".into()], env).unwrap();
    let binance_ingest::cli::Command::Run(mut config) = command else {
        panic!("expected the run command");
    };
    config.memory_exit_on_critical = true;
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sender.send(binance_ingest::app::run(&config));
    });
    let result = receiver.recv_timeout(Duration::from_secs(30)).expect("the service kept running");
    match result {
        Err(binance_ingest::error::Error::MemoryCritical { resident_bytes }) => {
            assert!(resident_bytes >= 2 << 20, "{resident_bytes}");
        }
        other => panic!("expected a stop at the critical level, got {other:?}"),
    }
}

#[test]
fn check_config_prints_budget_and_enforces_limit() {
    let dir = unique_dir("memory-check");
    let base = vec![("BINANCE_INGEST_DATA_DIR", dir.display().to_string())];
    let (code, stdout, stderr) = check_config(&base);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("# worst-case memory budget:"), "{stdout}");
    for part in ["cache ring", "frame queue", "reader batches", "websocket buffers", "sink staging"]
    {
        assert!(stdout.contains(part), "budget lacks {part}:\n{stdout}");
    }
    let total = budget_total(&stdout);
    assert!(total > 64.0 * MIB, "total {total} is below the 64 MiB ring");
    assert!(total < 2048.0 * MIB, "total {total} is above the default limit");

    let mut tight = base.clone();
    tight.push(("BINANCE_INGEST_MEMORY_LIMIT", "64MiB".to_string()));
    let (code, _, stderr) = check_config(&tight);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_MEMORY_LIMIT"), "{stderr}");
    assert!(stderr.contains("worst-case memory budget"), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_CACHE_SIZE"), "{stderr}");
}

#[test]
fn idle_thread_count_matches_budget() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let dir = unique_dir("memory-threads");
    let settings =
        with(base_settings(&mock, "btcusdt@trade"), &[("BINANCE_INGEST_HTTP_THREADS", "2")]);
    let service = Service::start(&dir, &settings);
    service.wait_for("ready", Duration::from_secs(20), |service| service.get("/readyz").0 == 200);
    // Readers and HTTP handler threads come on top of the fixed threads;
    // second-signal runs only during shutdown.
    let expected = binance_ingest::memory::FIXED_THREADS - 1 + 1 + 2;
    let threads = proc_status(service.pid(), "Threads:");
    assert_eq!(threads, expected, "{}", service.log_text());
}
