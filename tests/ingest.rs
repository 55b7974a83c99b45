//! End-to-end tests: the real `binance-ingest` binary against the real mock
//! exchange over TLS on loopback, checked against the mock's sent-log.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::check::{
    assert_stored_exactly_once, base_settings, complete_sent_log, data_events, sum_of, with,
};
use support::mock::{MockExchange, unique_dir};
use support::service::{Service, StoredRecord, metric_value, stored_gaps, stored_records};

/// Asserts that each record sits in the partition its venue, stream and
/// receive time (UTC) call for.
fn assert_partitions(records: &[StoredRecord], data_dir: &Path, venue: &str) {
    for record in records {
        let seconds = record.received_ns / 1_000_000_000;
        let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
        let hour = (seconds % 86_400) / 3600;
        let expected_dir: PathBuf = data_dir
            .join(format!("venue={venue}"))
            .join(format!("stream={}", record.stream))
            .join(format!("date={year:04}-{month:02}-{day:02}"))
            .join(format!("hour={hour:02}"));
        assert_eq!(record.path.parent(), Some(expected_dir.as_path()), "record in wrong partition");
        assert_eq!(record.venue, venue);
        let name = record.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with("part-test-") && name.ends_with(".jsonl"),
            "part file name {name}"
        );
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm), written here independently of the service's own.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn received_frames(service: &Service) -> f64 {
    service.metric("binance_ingest_frames_received_total").unwrap_or(0.0)
}

#[test]
fn generated_streams_stored_exactly_once() {
    let mock = MockExchange::start(&["--rate", "200"]);
    let dir = unique_dir("generated");
    let streams = "btcusdt@trade,btcusdt@aggTrade,btcusdt@depth@100ms,ethusdt@bookTicker,ethusdt@depth20@100ms";
    let mut service = Service::start(&dir, &base_settings(&mock, streams));

    service.wait_for("2000 frames", Duration::from_secs(30), |s| received_frames(s) >= 2000.0);
    assert!(service.terminate().success(), "{}", service.log_text());

    let sent = complete_sent_log(&mock);
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
    assert_partitions(&stored, service.data_dir(), "spot");
    assert!(stored_gaps(service.data_dir()).is_empty(), "no gap expected on one steady connection");
    let streams_seen: HashSet<&str> = stored.iter().map(|r| r.stream.as_str()).collect();
    assert_eq!(streams_seen.len(), 5, "every stream delivers: {streams_seen:?}");
}

/// Replays one capture file through the mock into the service and checks
/// that every frame the mock sent was stored once, byte for byte.
fn replay_file(path: &Path, venue: &str) {
    let text = std::fs::read_to_string(path).expect("read capture");
    let mut streams: Vec<String> = Vec::new();
    let mut payloads: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let value: serde_json::Value = serde_json::from_str(line).expect("capture line is JSON");
        let Some(stream) = value.get("stream").and_then(|s| s.as_str()) else { return };
        if !streams.iter().any(|known| known == stream) {
            streams.push(stream.to_string());
        }
        // The exact bytes of "data": everything between `"data":` and the
        // envelope's closing brace.
        let start = line.find("\"data\":").expect("data key") + "\"data\":".len();
        let end = line.trim_end().len() - 1;
        payloads.entry(stream.to_string()).or_default().push(line[start..end].to_string());
    }
    let lines = payloads.values().map(Vec::len).sum::<usize>();

    let path_text = path.display().to_string();
    // Paced: at --rate max the replay loops faster than a debug build
    // stores, and the reader then drops frames, by design.
    let mock = MockExchange::start(&[
        "--venue",
        venue,
        "--replay",
        &path_text,
        "--no-generate",
        "--rate",
        "3000",
    ]);
    let dir = unique_dir("replay");
    let settings = with(base_settings(&mock, &streams.join(",")), "BINANCE_INGEST_VENUE", venue);
    let mut service = Service::start(&dir, &settings);

    let wanted = lines as f64;
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    service.wait_for(&format!("{lines} frames of {name}"), Duration::from_secs(30), |s| {
        received_frames(s) >= wanted
    });
    assert!(service.terminate().success(), "{name}: {}", service.log_text());

    let sent = complete_sent_log(&mock);
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
    assert_partitions(&stored, service.data_dir(), venue);

    // The first pass of the replay is the file itself: every payload must
    // be stored with exactly the bytes of the capture.
    let stored_payloads: HashSet<(&str, &str)> =
        stored.iter().map(|r| (r.stream.as_str(), r.data.as_str())).collect();
    for (stream, list) in &payloads {
        for payload in list {
            assert!(
                stored_payloads.contains(&(stream.as_str(), payload.as_str())),
                "{name}: payload of {stream} not stored byte for byte: {payload}"
            );
        }
    }
}

fn venue_of_capture(name: &str) -> &'static str {
    if name.starts_with("futures-") {
        "usdm"
    } else if name.starts_with("coinm-") {
        "coinm"
    } else {
        "spot"
    }
}

#[test]
fn real_captures_replay_byte_for_byte() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/binance");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        println!("skipped: {} is absent, so the real captures are not replayed", dir.display());
        return;
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no capture in {}", dir.display());
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        replay_file(&file, venue_of_capture(&name));
    }
}

#[test]
fn own_fixture_replays_byte_for_byte() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spot-sample.jsonl");
    replay_file(&path, "spot");
}

#[test]
fn untrusted_ca_is_rejected_and_nothing_stored() {
    let mock = MockExchange::start(&["--rate", "50"]);
    let other = MockExchange::start(&[]);
    for ca in [None, Some(other.ca_path())] {
        let dir = unique_dir("untrusted");
        let mut settings = base_settings(&mock, "btcusdt@trade");
        settings.retain(|(key, _)| *key != "BINANCE_INGEST_CA_FILE");
        if let Some(ca) = &ca {
            settings.push(("BINANCE_INGEST_CA_FILE", ca.display().to_string()));
        }
        let mut service = Service::start(&dir, &settings);
        // Both mocks name their CA alike, so against the other mock's CA the
        // signature check is what fails.
        let (reason, words) = match ca {
            None => ("unknown_issuer", "unknown CA"),
            Some(_) => ("bad_signature", "no trusted CA"),
        };
        service.wait_for("two rejected handshakes", Duration::from_secs(20), |s| {
            let name = format!("binance_ingest_tls_errors_total{{reason=\"{reason}\"}}");
            s.metric(&name).unwrap_or(0.0) >= 2.0
        });
        assert!(service.log_contains(words), "{}", service.log_text());
        assert_eq!(service.get("/readyz").0, 503);
        assert!(service.terminate().success());
        assert!(stored_records(service.data_dir()).is_empty(), "nothing may be stored");
    }
    let opened = mock.sent_log().iter().filter(|e| e.event.as_deref() == Some("open")).count();
    assert_eq!(opened, 0, "no WebSocket may open over an unverified connection");
}

#[test]
fn malformed_frames_are_counted_and_stream_goes_on() {
    let mock = MockExchange::start(&[
        "--rate",
        "100",
        "--fault",
        "at=300ms conn=1 truncate",
        "--fault",
        "at=400ms conn=1 binary",
        "--fault",
        "at=500ms conn=1 empty",
        "--fault",
        "at=600ms conn=1 repeat",
    ]);
    let dir = unique_dir("malformed");
    let mut service = Service::start(&dir, &base_settings(&mock, "btcusdt@trade,ethusdt@trade"));

    service.wait_for("three kinds of parse errors and a duplicate", Duration::from_secs(20), |s| {
        let (_, body) = s.get("/metrics");
        let kinds = ["invalid_json", "binary", "empty"];
        let counted = kinds.iter().all(|kind| {
            let name = format!("binance_ingest_parse_errors_total{{kind=\"{kind}\"}}");
            metric_value(&body, &name).unwrap_or(0.0) >= 1.0
        });
        counted && sum_of(&body, "binance_ingest_duplicates_dropped_total{") >= 1.0
    });
    let after_faults = received_frames(&service);
    service.wait_for("frames after the faults", Duration::from_secs(20), |s| {
        received_frames(s) >= after_faults + 100.0
    });
    let (_, metrics) = service.get("/metrics");
    assert_eq!(metric_value(&metrics, "binance_ingest_connects_total"), Some(1.0), "no reconnect");
    assert_eq!(sum_of(&metrics, "binance_ingest_duplicates_dropped_total{"), 1.0, "{metrics}");
    assert!(service.terminate().success());

    let sent = complete_sent_log(&mock);
    assert_stored_exactly_once(&data_events(&sent), &stored_records(service.data_dir()));
}

#[test]
fn sigterm_mid_stream_loses_nothing() {
    let mock = MockExchange::start(&["--rate", "2000"]);
    let dir = unique_dir("sigterm");
    let mut service =
        Service::start(&dir, &base_settings(&mock, "btcusdt@trade,btcusdt@depth@100ms"));
    service.wait_for("frames flowing", Duration::from_secs(20), |s| received_frames(s) >= 3000.0);

    let status = service.terminate();
    assert!(status.success(), "exit status {status}: {}", service.log_text());
    let sent = complete_sent_log(&mock);
    let closed = sent.iter().find(|e| e.event.as_deref() == Some("closed")).expect("close logged");
    assert!(
        closed.reason.as_deref().unwrap_or("").contains("1000"),
        "the service closes with code 1000: {closed:?}"
    );
    assert_stored_exactly_once(&data_events(&sent), &stored_records(service.data_dir()));
    assert!(service.log_contains("sink stopped"), "{}", service.log_text());
}

#[test]
fn metrics_pass_promtool() {
    let Ok(output) = std::process::Command::new("promtool").arg("--version").output() else {
        panic!("promtool is not installed; `make deps` installs it (Debian package prometheus)");
    };
    assert!(output.status.success());

    let mock = MockExchange::start(&["--rate", "100", "--fault", "at=300ms conn=1 truncate"]);
    let dir = unique_dir("promtool");
    let mut service =
        Service::start(&dir, &base_settings(&mock, "btcusdt@trade,btcusdt@depth@100ms"));
    service.wait_for("a parse error and data", Duration::from_secs(20), |s| {
        s.get("/metrics").1.contains("binance_ingest_parse_errors_total{")
            && received_frames(s) > 50.0
    });
    let (status, body) = service.get("/metrics");
    assert_eq!(status, 200);

    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && findings.trim().is_empty(),
        "promtool findings:\n{findings}\n{body}"
    );
    assert!(service.terminate().success());
}

#[test]
fn readyz_follows_data_flow() {
    // The second connection stalls completely for 3 s: no data, no pings.
    let mock = MockExchange::start(&["--rate", "50", "--fault", "at=1s conn=1 stall=3s"]);
    let dir = unique_dir("readyz");
    let settings = with(base_settings(&mock, "btcusdt@trade"), "BINANCE_INGEST_STALE_AFTER", "1s");
    // The threshold must exceed the server ping interval it is checked against.
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", "500ms");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("ready", Duration::from_secs(20), |s| s.get("/readyz").0 == 200);
    let (status, body) = service.get("/readyz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"status\":\"pass\""), "{body}");

    // The first 503 comes from the frame age, or from the backoff state
    // when the stale watchdog ended the connection before the next poll.
    let mut unready = String::new();
    service.wait_for("not ready during the stall", Duration::from_secs(20), |s| {
        let (status, body) = s.get("/readyz");
        unready = body;
        status == 503
    });
    assert!(unready.contains("no frame"), "503 gives the reason: {unready}");
    assert_eq!(service.get("/livez").0, 200, "liveness does not depend on the exchange");

    service.wait_for("ready again after the stall", Duration::from_secs(20), |s| {
        s.get("/readyz").0 == 200
    });
    assert!(service.terminate().success());
}

#[test]
fn ring_never_exceeds_capacity() {
    let mock = MockExchange::start(&["--rate", "max"]);
    let dir = unique_dir("ring");
    let settings = with(
        base_settings(&mock, "btcusdt@depth@100ms,btcusdt@trade"),
        "BINANCE_INGEST_CACHE_SIZE",
        "1MiB",
    );
    let mut service = Service::start(&dir, &settings);

    let mut samples = 0;
    service.wait_for("the ring to wrap around", Duration::from_secs(30), |s| {
        let (_, body) = s.get("/metrics");
        let used = metric_value(&body, "binance_ingest_ring_used_bytes").unwrap_or(0.0);
        let capacity = metric_value(&body, "binance_ingest_ring_capacity_bytes").unwrap_or(0.0);
        assert_eq!(capacity, 1_048_576.0);
        assert!(used <= capacity, "ring holds {used} bytes, over its capacity {capacity}");
        samples += 1;
        metric_value(&body, "binance_ingest_ring_evicted_records_total").unwrap_or(0.0) > 1000.0
            && samples >= 10
    });
    let (status, recent) = service.get("/recent?stream=btcusdt%40trade&limit=5");
    assert_eq!(status, 200);
    assert_eq!(recent.lines().count(), 5, "{recent}");
    assert!(recent.lines().all(|line| line.contains("\"stream\":\"btcusdt@trade\"")));
    assert!(service.terminate().success());
}

#[test]
fn refused_endpoint_is_retried_with_backoff() {
    // A loopback port with no listener: every attempt is refused at once.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let dir = unique_dir("refused");
    let settings = vec![
        ("BINANCE_INGEST_ENDPOINT", format!("wss://127.0.0.1:{port}")),
        ("BINANCE_INGEST_STREAMS", "btcusdt@trade".to_string()),
        ("BINANCE_INGEST_RECONNECT_MIN", "100ms".to_string()),
        ("BINANCE_INGEST_RECONNECT_MAX", "400ms".to_string()),
    ];
    let mut service = Service::start(&dir, &settings);
    service.wait_for("three refused attempts", Duration::from_secs(20), |s| {
        s.metric("binance_ingest_connect_failures_total{reason=\"connect_failed\"}").unwrap_or(0.0)
            >= 3.0
    });
    let (_, metrics) = service.get("/metrics");
    assert!(
        !metrics.contains("binance_ingest_disconnects_total{"),
        "a refused attempt is no disconnect:\n{metrics}"
    );
    assert!(service.log_contains("Connection refused"), "{}", service.log_text());
    assert!(service.log_contains("reconnect in"), "{}", service.log_text());
    assert!(!service.log_contains("panicked"));
    assert_eq!(service.get("/readyz").0, 503);
    assert_eq!(service.get("/livez").0, 200);
    assert!(service.terminate().success());
}

#[test]
fn http_rejects_unknown_paths_and_methods() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let dir = unique_dir("http");
    let mut service = Service::start(&dir, &base_settings(&mock, "btcusdt@trade"));
    let address = service.http_address();
    assert_eq!(support::service::http_request(address, "GET", "/nope").0, 404);
    assert_eq!(support::service::http_request(address, "POST", "/metrics").0, 405);
    assert_eq!(support::service::http_request(address, "DELETE", "/readyz").0, 405);
    let long = format!("/recent?stream={}", "a".repeat(3000));
    assert_eq!(support::service::http_request(address, "GET", &long).0, 414);
    assert_eq!(support::service::http_request(address, "GET", "/recent?limit=0").0, 400);
    assert_eq!(support::service::http_request(address, "GET", "/recent?limit=5000").0, 400);
    assert_eq!(support::service::http_request(address, "GET", "/recent?bogus=1").0, 400);
    assert_eq!(support::service::http_request(address, "HEAD", "/livez").0, 200);
    assert!(service.terminate().success());
}
