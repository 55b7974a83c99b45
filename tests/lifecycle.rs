//! Connection lifecycle end to end: the real `binance-ingest` binary against
//! the real mock exchange over TLS, with timers compressed to milliseconds,
//! checked against the mock's sent-log.

mod support;

use std::time::Duration;

use support::check::{
    assert_contiguous, assert_stored_exactly_once, base_settings, complete_sent_log, data_events,
    event_time, fault_time, stored_ids, sum_of, with,
};
use support::mock::{MockExchange, unique_dir};
use support::service::{Service, stored_gaps, stored_records};

/// Server ping interval given to the mock and to the service in the tests
/// that compress the heartbeat. Each ping costs a pong, and the mock, like
/// Binance spot, closes a connection that sends over 5 control frames a
/// second, so pings come at most 2.5 times a second.
const PING: &str = "400ms";

fn metric(service: &Service, name: &str) -> f64 {
    service.metric(name).unwrap_or(0.0)
}

fn heartbeat_settings(mock: &MockExchange, streams: &str) -> Vec<(&'static str, String)> {
    let settings = base_settings(mock, streams);
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", PING);
    with(settings, "BINANCE_INGEST_STALE_AFTER", "1s")
}

#[test]
fn rotations_lose_and_repeat_nothing() {
    // The mock cuts every connection at 2 s; the service rotates at 500 ms.
    let mock = MockExchange::start(&[
        "--rate",
        "200",
        "--ping-interval",
        PING,
        "--max-connection-age",
        "2s",
    ]);
    let dir = unique_dir("rotations");
    let settings = heartbeat_settings(&mock, "btcusdt@trade,ethusdt@trade,btcusdt@depth@100ms");
    let settings = with(settings, "BINANCE_INGEST_ROTATE_INTERVAL", "500ms");
    let settings = with(settings, "BINANCE_INGEST_ROTATE_JITTER", "10");
    let settings = with(settings, "BINANCE_INGEST_OVERLAP_TIMEOUT", "300ms");
    let mut service = Service::start(&dir, &settings);

    let mut most_open = 0.0f64;
    service.wait_for("20 finished rotations", Duration::from_secs(60), |s| {
        most_open = most_open.max(metric(s, "binance_ingest_connections_open"));
        metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 20.0
    });
    assert!(most_open <= 2.0, "{most_open} connections open at once for one slot");
    let (_, metrics) = service.get("/metrics");
    assert!(service.terminate().success(), "{}", service.log_text());

    let sent = complete_sent_log(&mock);
    let cuts = sent.iter().filter(|e| e.event.as_deref() == Some("max-age")).count();
    assert_eq!(cuts, 0, "the mock's cut came before a rotation");
    let rotations = sum_of(&metrics, "binance_ingest_rotations_total{cause=\"schedule\"}");
    assert!(rotations >= 20.0);
    let replacements = "binance_ingest_reconnect_attempts_total{kind=\"replacement\"}";
    // The last rotation's replacement may not have started at the snapshot.
    let replaced = sum_of(&metrics, replacements);
    assert!(replaced >= rotations - 1.0, "{replaced} replacement attempts, {rotations} rotations");
    let reconnects = "binance_ingest_reconnect_attempts_total{kind=\"reconnect\"}";
    assert_eq!(sum_of(&metrics, reconnects), 0.0, "no connection failed");
    assert_eq!(sum_of(&metrics, "binance_ingest_overlaps_total{outcome=\"deadline\"}"), 0.0);
    assert!(sum_of(&metrics, "binance_ingest_duplicates_dropped_total{") > 0.0, "overlaps");

    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
    assert!(stored_gaps(service.data_dir()).is_empty(), "no gap across rotations");
    let ids = stored_ids(&stored);
    for stream in ["btcusdt@trade", "ethusdt@trade"] {
        let stream_ids = ids.get(stream).expect("trade ids stored");
        assert_contiguous(stream, stream_ids);
    }
    let connections: std::collections::HashSet<u64> = stored.iter().map(|r| r.connection).collect();
    assert!(connections.len() >= 21, "events came from {} connections", connections.len());
}

#[test]
fn server_shutdown_replaces_before_close() {
    let mock = MockExchange::start(&["--rate", "100", "--fault", "at=1s conn=1 shutdown=2s"]);
    let dir = unique_dir("shutdown");
    let mut service = Service::start(&dir, &base_settings(&mock, "btcusdt@trade,btcusdt@depth"));

    service.wait_for("the old connection retired", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 1.0
    });
    let (_, metrics) = service.get("/metrics");
    assert_eq!(sum_of(&metrics, "binance_ingest_rotations_total{cause=\"server_shutdown\"}"), 1.0);
    // Readiness follows the replacement: the retired connection closing
    // must not leave the slot marked as closing.
    service.wait_for("ready on the replacement", Duration::from_secs(10), |s| {
        s.get("/readyz").0 == 200
    });
    let (_, readyz) = service.get("/readyz");
    assert!(readyz.contains("conn=2"), "{readyz}");
    assert!(service.terminate().success());

    let sent = complete_sent_log(&mock);
    let replacement_open = event_time(&sent, 2, "open").expect("replacement opened");
    let old_closed = event_time(&sent, 1, "closed").expect("old connection closed");
    assert!(replacement_open < old_closed, "replacement opened after the old one closed");
    let old_close = sent.iter().find(|e| e.conn == 1 && e.event.as_deref() == Some("closed"));
    let reason = old_close.and_then(|e| e.reason.clone()).unwrap_or_default();
    assert!(reason.contains("1000"), "the service closes the old connection itself: {reason}");

    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
    assert!(stored_gaps(service.data_dir()).is_empty());
    assert_contiguous("btcusdt@trade", &stored_ids(&stored)["btcusdt@trade"]);
}

/// Runs one close kind and checks reconnect time, stored events and the gap.
fn close_kind_reconnects(fault: &str, label: &str) {
    let spec = format!("at=700ms conn=1 {fault}");
    let mock = MockExchange::start(&["--rate", "100", "--fault", &spec]);
    let dir = unique_dir("close-kind");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MIN", "300ms");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MAX", "2s");
    let mut service = Service::start(&dir, &settings);

    service.wait_for(&format!("reconnect after {fault}"), Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_connects_total") >= 2.0
            && metric(s, "binance_ingest_frames_received_total") >= 150.0
    });
    let disconnects = format!("binance_ingest_disconnects_total{{reason=\"{label}\"}}");
    let (_, body) = service.get("/metrics");
    assert_eq!(metric(&service, &disconnects), 1.0, "{fault}: {body}");
    assert!(service.log_contains("reconnect in"), "{fault}: one log line per backoff");
    assert!(service.terminate().success());

    let sent = complete_sent_log(&mock);
    let closed = event_time(&sent, 1, "closed").expect("first connection closed");
    let reopened = event_time(&sent, 2, "open").expect("second connection opened");
    // The first backoff step draws from 0 to 300 ms; the rest is the TCP,
    // TLS and WebSocket handshake on loopback.
    assert!(reopened - closed < 300 + 700, "{fault}: reconnect took {} ms", reopened - closed);

    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);

    // Only the ids sent while no connection existed are missing, and one
    // gap record names them.
    let id_of = |conn: u64, last: bool| {
        let mut ids = sent.iter().filter(|e| e.conn == conn && e.stream.is_some()).map(|e| e.id);
        if last { ids.next_back().flatten() } else { ids.next().flatten() }
    };
    let last_before = id_of(1, true).expect("ids before the close");
    let first_after = id_of(2, false).expect("ids after the reconnect");
    let gaps = stored_gaps(service.data_dir());
    if first_after > last_before + 1 {
        assert_eq!(gaps.len(), 1, "{fault}: {gaps:?}");
        let gap = &gaps[0]["gap"];
        assert_eq!(gap["first"].as_u64(), Some(last_before + 1), "{fault}: {gaps:?}");
        assert_eq!(gap["last"].as_u64(), Some(first_after - 1), "{fault}: {gaps:?}");
        assert_eq!(gap["missing"].as_u64(), Some(first_after - last_before - 1));
    } else {
        assert!(gaps.is_empty(), "{fault}: {gaps:?}");
    }
}

#[test]
fn close_1000_reconnects_with_gap() {
    close_kind_reconnects("close=1000", "1000");
}

#[test]
fn close_1001_reconnects_with_gap() {
    close_kind_reconnects("close=1001", "1001");
}

#[test]
fn close_1008_reconnects_with_gap() {
    close_kind_reconnects("close=1008", "1008");
}

#[test]
fn close_1011_reconnects_with_gap() {
    close_kind_reconnects("close=1011", "1011");
}

#[test]
fn reset_without_close_reconnects_with_gap() {
    close_kind_reconnects("drop", "eof");
}

/// Runs one stall on one of two connections and checks that its watchdog
/// replaced that connection within the threshold and left the other alone.
fn stall_is_replaced(fault: &str, kind: &str, threshold_ms: u64, data_stale_after: &str) {
    let spec = format!("at=700ms conn=1 {fault}=10s");
    let mock = MockExchange::start(&["--rate", "50", "--ping-interval", PING, "--fault", &spec]);
    let dir = unique_dir("stall");
    let settings = heartbeat_settings(&mock, "btcusdt@trade,ethusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_MAX_STREAMS_PER_CONNECTION", "1");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "800ms");
    let settings = with(settings, "BINANCE_INGEST_DATA_STALE_AFTER", data_stale_after);
    let mut service = Service::start(&dir, &settings);

    let kills = format!("binance_ingest_watchdog_kills_total{{kind=\"{kind}\"}}");
    service.wait_for(&format!("{kind} watchdog"), Duration::from_secs(20), |s| {
        metric(s, &kills) >= 1.0 && metric(s, "binance_ingest_connects_total") >= 3.0
    });
    let (_, metrics) = service.get("/metrics");
    assert_eq!(sum_of(&metrics, "binance_ingest_watchdog_kills_total{"), 1.0, "{metrics}");
    assert_eq!(metric(&service, "binance_ingest_connects_total"), 3.0, "two slots, one replaced");
    assert!(service.terminate().success());

    // Mock connection 1 stalls, 2 is the other slot and 3 the replacement.
    let sent = complete_sent_log(&mock);
    let stalled = fault_time(&sent, 1, fault).expect("fault logged");
    let reopened = event_time(&sent, 3, "open").expect("replacement opened");
    let took = reopened - stalled;
    // The last data frame before the stall may precede the fault entry by
    // one event interval (20 ms), so detection can come that much early.
    assert!(took + 20 >= threshold_ms, "{fault}: replaced after {took} ms");
    assert!(took < threshold_ms + 800, "{fault}: replaced after {took} ms");
    let sibling = sent.iter().find(|e| e.conn == 2 && e.event.as_deref() == Some("closed"));
    let sibling_end = sibling.and_then(|e| e.reason.clone()).unwrap_or_default();
    assert!(sibling_end.contains("1000"), "the other connection ended early: {sibling_end}");
    let sibling_closed = sibling.and_then(|e| e.at_ms).unwrap_or(0);
    assert!(sibling_closed > reopened, "the other connection closed before the replacement");
}

#[test]
fn data_stall_with_pings_is_replaced() {
    stall_is_replaced("no-data", "no_data", 600, "600ms");
}

#[test]
fn total_stall_is_replaced() {
    stall_is_replaced("stall", "stale", 800, "0s");
}

#[test]
fn server_pings_answered_under_backpressure() {
    // The pipeline gets one queued batch at most while the mock sends as
    // fast as it can, so the readers find the queue full and drop frames.
    // The mock still needs a pong with each ping's payload within 600 ms.
    let mock =
        MockExchange::start(&["--rate", "max", "--ping-interval", PING, "--pong-timeout", "600ms"]);
    let dir = unique_dir("pings");
    let settings = heartbeat_settings(&mock, "btcusdt@trade,btcusdt@depth@100ms,ethusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_FRAME_QUEUE", "1");
    let settings = with(settings, "BINANCE_INGEST_BATCH_SIZE", "1KiB");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("20 server pings", Duration::from_secs(30), |s| {
        metric(s, "binance_ingest_server_pings_total") >= 20.0
    });
    assert_eq!(metric(&service, "binance_ingest_connects_total"), 1.0, "no reconnect");
    let dropped = metric(&service, "binance_ingest_frames_dropped_total");
    assert!(dropped > 0.0, "the pipeline kept up, so nothing pressed on the readers");
    assert!(service.terminate().success());
    let sent = complete_sent_log(&mock);
    let timeouts = sent.iter().filter(|e| e.event.as_deref() == Some("pong-timeout")).count();
    assert_eq!(timeouts, 0, "the mock missed a pong");
}

/// Reads the sent-log file as JSON values, for fields the shared entry type
/// does not carry.
fn raw_sent_log(mock: &MockExchange) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(mock.sent_log_path()).unwrap_or_default();
    text.lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
}

#[test]
fn rate_limit_windows_are_waited_out() {
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--fault",
        "at=0s reject=429 retry-after=1 for=2500ms",
        "--fault",
        "at=2500ms reject=418 retry-after=2 for=2s",
    ]);
    let dir = unique_dir("rate-limit");
    let mut service = Service::start(&dir, &base_settings(&mock, "btcusdt@trade"));

    service.wait_for("a 418 and the alert", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_handshake_rejections_total{status=\"418\"}") >= 1.0
            && metric(s, "binance_ingest_rate_limited") == 1.0
    });
    service.wait_for("ingestion resumed", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_frames_received_total") >= 20.0
    });
    assert_eq!(metric(&service, "binance_ingest_rate_limited"), 0.0, "alert clears");
    assert!(metric(&service, "binance_ingest_handshake_rejections_total{status=\"429\"}") >= 1.0);
    // A rejected handshake is a failed connect, not the end of a connection.
    let failures = "binance_ingest_connect_failures_total{reason=\"http_429\"}";
    assert!(metric(&service, failures) >= 1.0);
    assert_eq!(metric(&service, "binance_ingest_disconnects_total{reason=\"http_429\"}"), 0.0);
    assert_eq!(metric(&service, "binance_ingest_disconnects_total{reason=\"http_418\"}"), 0.0);
    assert!(service.terminate().success());

    let log = raw_sent_log(&mock);
    let attempts: Vec<&serde_json::Value> =
        log.iter().filter(|e| e["fault"] == "reject" || e["event"] == "open").collect();
    for pair in attempts.windows(2) {
        if pair[0]["fault"] != "reject" {
            continue;
        }
        let waited = pair[1]["at_ms"].as_u64().unwrap() - pair[0]["at_ms"].as_u64().unwrap();
        let window = pair[0]["retry_after"].as_u64().unwrap() * 1000;
        // The mock logs a rejection just after it wrote the response, so
        // the service may start its wait a few ms before that entry.
        assert!(waited + 50 >= window, "attempt {waited} ms after a Retry-After of {window} ms");
    }
    let rejects = attempts.iter().filter(|e| e["fault"] == "reject").count();
    assert!(rejects >= 2, "{rejects} rejections logged");
}

#[test]
fn access_denied_raises_alert() {
    for status in ["403", "451"] {
        let spec = format!("at=0s reject={status} for=1s");
        let mock = MockExchange::start(&["--rate", "50", "--fault", &spec]);
        let dir = unique_dir("denied");
        let mut service = Service::start(&dir, &base_settings(&mock, "btcusdt@trade"));

        let rejections =
            format!("binance_ingest_handshake_rejections_total{{status=\"{status}\"}}");
        service.wait_for("the access alert", Duration::from_secs(20), |s| {
            metric(s, &rejections) >= 1.0 && metric(s, "binance_ingest_access_denied") == 1.0
        });
        assert!(service.log_contains(&format!("handshake rejected with HTTP {status}")));
        service.wait_for("ingestion after the denial", Duration::from_secs(20), |s| {
            metric(s, "binance_ingest_frames_received_total") >= 10.0
        });
        assert_eq!(metric(&service, "binance_ingest_access_denied"), 0.0, "alert clears");
        assert_eq!(
            metric(&service, "binance_ingest_rate_limited"),
            0.0,
            "{status} is no rate limit"
        );
        assert!(service.terminate().success());
    }
}

#[test]
fn accept_and_drop_is_backed_off() {
    // Every connection is dropped right after its handshake, for the whole
    // run. Without backoff a client would reconnect after each loopback
    // handshake, every few milliseconds.
    let mock = MockExchange::start(&["--rate", "50", "--fault", "at=0s drop"]);
    let dir = unique_dir("drop-storm");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MIN", "100ms");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MAX", "1s");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("backoff at step 5", Duration::from_secs(30), |s| s.log_contains("(step 5)"));
    let started = std::time::Instant::now();
    let before = mock.sent_log().iter().filter(|e| e.event.as_deref() == Some("open")).count();
    service.wait_for("3 s more of drops", Duration::from_secs(10), |_| {
        started.elapsed() >= Duration::from_secs(3)
    });
    let after = mock.sent_log().iter().filter(|e| e.event.as_deref() == Some("open")).count();
    // At the 1 s cap, full jitter averages 500 ms between attempts.
    assert!(after - before <= 15, "{} attempts in 3 s at the backoff cap", after - before);
    assert!(metric(&service, "binance_ingest_reconnect_attempts_total{kind=\"reconnect\"}") >= 5.0);
    assert!(service.terminate().success());
    let steps: Vec<u32> = service
        .log_text()
        .lines()
        .filter_map(|line| line.split("(step ").nth(1)?.split(')').next()?.parse().ok())
        .collect();
    assert!(steps.windows(2).all(|pair| pair[1] > pair[0]), "backoff reset: {steps:?}");
}

#[test]
fn stream_threshold_recycles_only_when_listed() {
    // The mock generates no forceOrder events, so that stream stays silent
    // while the trade stream on the same connection flows.
    let mock = MockExchange::start(&["--rate", "50"]);
    let streams = "btcusdt@trade,btcusdt@forceOrder";
    let listed = with(
        base_settings(&mock, streams),
        "BINANCE_INGEST_STREAM_STALE_AFTER",
        "btcusdt@forceOrder=700ms",
    );
    let mut service = Service::start(&unique_dir("stream-stale"), &listed);
    let kills = "binance_ingest_watchdog_kills_total{kind=\"stream_stale\"}";
    service.wait_for("the stream watchdog", Duration::from_secs(20), |s| {
        metric(s, kills) >= 1.0 && metric(s, "binance_ingest_connects_total") >= 2.0
    });
    assert!(service.log_contains("kind=stream_stale"), "{}", service.log_text());
    assert!(service.terminate().success());

    let mut service = Service::start(&unique_dir("stream-quiet"), &base_settings(&mock, streams));
    service.wait_for("2 s of trades", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_frames_received_total") >= 100.0
    });
    assert_eq!(metric(&service, "binance_ingest_connects_total"), 1.0, "unlisted: never recycled");
    assert!(service.terminate().success());
}

#[test]
fn sparse_stream_stays_connected() {
    // One event every 2.5 s, server pings every 1.5 s: quiet longer than
    // the 2 s stale threshold, which pings keep satisfied. Client pings wait
    // a second after each pong, so the server pings leave room for them.
    let mock = MockExchange::start(&["--rate", "0.4", "--ping-interval", "1500ms"]);
    let dir = unique_dir("sparse");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", "1500ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "2s");
    let settings = with(settings, "BINANCE_INGEST_CLIENT_PING_INTERVAL", "1200ms");
    let settings = with(settings, "BINANCE_INGEST_PONG_TIMEOUT", "1s");
    let mut service = Service::start(&dir, &settings);

    let mut longest_quiet = 0.0f64;
    service.wait_for("4 sparse events and 3 pongs", Duration::from_secs(30), |s| {
        let (_, body) = s.get("/metrics");
        let age = sum_of(&body, "binance_ingest_stream_last_event_age_seconds{");
        longest_quiet = longest_quiet.max(age);
        sum_of(&body, "binance_ingest_events_total{") >= 4.0
            && sum_of(&body, "binance_ingest_pongs_received_total") >= 3.0
    });
    let (_, metrics) = service.get("/metrics");
    assert!(longest_quiet > 2.0, "the stream was quiet for {longest_quiet} s at most");
    assert_eq!(sum_of(&metrics, "binance_ingest_connects_total"), 1.0, "never recycled");
    assert_eq!(sum_of(&metrics, "binance_ingest_watchdog_kills_total{"), 0.0);
    assert_eq!(sum_of(&metrics, "binance_ingest_pong_timeouts_total"), 0.0);
    assert!(sum_of(&metrics, "binance_ingest_pong_rtt_seconds_count") >= 3.0);
    assert_eq!(service.get("/readyz").0, 200);
    assert!(service.terminate().success());
    let sent = complete_sent_log(&mock);
    let limited = sent.iter().filter(|e| e.reason.as_deref().unwrap_or("").contains("1008"));
    assert_eq!(limited.count(), 0, "control frames stayed within the venue's rate");
}

/// Settings of the overlap tests: one trade stream, rotation without jitter
/// and a short first backoff step.
fn overlap_settings(
    mock: &MockExchange,
    rotate: &str,
    overlap: &str,
) -> Vec<(&'static str, String)> {
    let settings = heartbeat_settings(mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_ROTATE_INTERVAL", rotate);
    let settings = with(settings, "BINANCE_INGEST_ROTATE_JITTER", "0");
    let settings = with(settings, "BINANCE_INGEST_OVERLAP_TIMEOUT", overlap);
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MIN", "50ms");
    with(settings, "BINANCE_INGEST_FLUSH_INTERVAL", "50ms")
}

#[test]
fn overlap_survives_both_connections_ending() {
    // Connection 1 stalls just before its rotation at 3 s and the stale
    // watchdog ends it. Its replacement, connection 2, is dropped 1.5 s
    // after it opened, before the overlap deadline.
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--ping-interval",
        PING,
        "--fault",
        "at=2800ms conn=1 stall=5s",
        "--fault",
        "at=1500ms conn=2 drop",
    ]);
    let dir = unique_dir("overlap-both-end");
    let settings = overlap_settings(&mock, "3s", "2900ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "1200ms");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("a third connection with data", Duration::from_secs(30), |s| {
        metric(s, "binance_ingest_connects_total") >= 3.0
            && metric(s, "binance_ingest_events_total{stream=\"btcusdt@trade\"}") >= 250.0
    });
    assert!(service.terminate().success(), "{}", service.log_text());

    let sent = complete_sent_log(&mock);
    let from_replacement = sent.iter().filter(|e| e.conn == 2 && e.stream.is_some()).count();
    assert!(from_replacement > 20, "connection 2 sent {from_replacement} events");
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
    // Only the ids that no connection sent may be reported missing.
    let sent_ids: std::collections::HashSet<u64> = sent.iter().filter_map(|e| e.id).collect();
    for gap in stored_gaps(service.data_dir()) {
        let first = gap["gap"]["first"].as_u64().expect("gap first");
        let last = gap["gap"]["last"].as_u64().expect("gap last");
        let received = (first..=last).filter(|id| sent_ids.contains(id)).count();
        assert_eq!(received, 0, "gap {first}..={last} covers {received} sent ids");
    }
}

#[test]
fn stream_threshold_spares_the_replacement() {
    // Connection 1 stalls just before its rotation, so during the overlap
    // only the replacement delivers the stream, and its events are held.
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--ping-interval",
        PING,
        "--fault",
        "at=1900ms conn=1 stall=5s",
    ]);
    let dir = unique_dir("stream-stale-hold");
    let settings = overlap_settings(&mock, "2s", "1900ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "3s");
    let settings = with(settings, "BINANCE_INGEST_STREAM_STALE_AFTER", "btcusdt@trade=800ms");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("the replacement took over", Duration::from_secs(30), |s| {
        metric(s, "binance_ingest_connects_total") >= 2.0
            && metric(s, "binance_ingest_events_total{stream=\"btcusdt@trade\"}") >= 250.0
    });
    assert!(service.terminate().success(), "{}", service.log_text());
    let sent = complete_sent_log(&mock);
    let closed = sent.iter().find(|e| e.conn == 2 && e.event.as_deref() == Some("closed"));
    let reason = closed.and_then(|e| e.reason.clone()).unwrap_or_default();
    assert!(reason.contains("1000"), "the replacement ended early: {reason}");
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
}

#[test]
fn rotation_due_before_switch_is_kept() {
    // Connection 1 stalls just before its rotation at 1 s, so connection 2
    // replaces it only at the overlap deadline, 900 ms after its first
    // data, which comes 300 ms after its open. Its own rotation falls due
    // 1 s after its open, before that switch.
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--ping-interval",
        PING,
        "--fault",
        "at=900ms conn=1 stall=5s",
        "--fault",
        "at=0ms conn=2 no-data=300ms",
    ]);
    let dir = unique_dir("rotation-before-switch");
    let settings = overlap_settings(&mock, "1s", "900ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "3s");
    let mut service = Service::start(&dir, &settings);

    let mut most_open = 0.0f64;
    service.wait_for("connection 2 rotated", Duration::from_secs(15), |s| {
        most_open = most_open.max(metric(s, "binance_ingest_connections_open"));
        metric(s, "binance_ingest_rotations_total{cause=\"schedule\"}") >= 2.0
            && metric(s, "binance_ingest_connects_total") >= 3.0
            && metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 2.0
    });
    assert!(most_open <= 2.0, "{most_open} connections open at once for one slot");
    assert!(service.log_contains("rotating after the switch"), "{}", service.log_text());
    assert!(service.terminate().success(), "{}", service.log_text());
    let sent = complete_sent_log(&mock);
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
}

#[test]
fn quiet_connection_finishes_rotations() {
    // The mock accepts kline streams but never sends on them, so the
    // replacement delivers no data. The mock cuts every connection at 4 s.
    let mock = MockExchange::start(&[
        "--rate",
        "1",
        "--ping-interval",
        PING,
        "--max-connection-age",
        "4s",
    ]);
    let dir = unique_dir("quiet-rotation");
    let settings = overlap_settings(&mock, "1s", "500ms");
    let settings = with(settings, "BINANCE_INGEST_STREAMS", "btcusdt@kline_1m");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "2s");
    let settings = with(settings, "BINANCE_INGEST_DATA_STALE_AFTER", "0s");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("3 finished rotations", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 3.0
    });
    let (_, metrics) = service.get("/metrics");
    assert!(service.terminate().success(), "{}", service.log_text());
    assert_eq!(sum_of(&metrics, "binance_ingest_gaps_total{"), 0.0, "{metrics}");
    let sent = complete_sent_log(&mock);
    let cuts = sent.iter().filter(|e| e.event.as_deref() == Some("max-age")).count();
    assert_eq!(cuts, 0, "the mock's cut came before a rotation");
}

#[test]
fn replacement_waits_out_rate_limit() {
    // Connection 1 rotates at 1 s, before the mock rejects handshakes with
    // 429 from 1.5 s to 4.5 s. Connection 2's rotations fall in that window.
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--ping-interval",
        PING,
        "--fault",
        "at=1500ms reject=429 retry-after=2 for=3s",
    ]);
    let dir = unique_dir("replacement-429");
    let settings = overlap_settings(&mock, "1s", "500ms");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MIN", "100ms");
    let settings = with(settings, "BINANCE_INGEST_RECONNECT_MAX", "1s");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("a rejected replacement and the alert", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_handshake_rejections_total{status=\"429\"}") >= 1.0
            && metric(s, "binance_ingest_rate_limited") == 1.0
    });
    service.wait_for("a replacement after the window", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 2.0
    });
    assert_eq!(metric(&service, "binance_ingest_rate_limited"), 0.0, "alert clears");
    assert!(service.terminate().success());
    assert!(service.log_contains("ERROR"), "{}", service.log_text());

    let log = raw_sent_log(&mock);
    let attempts: Vec<&serde_json::Value> =
        log.iter().filter(|e| e["fault"] == "reject" || e["event"] == "open").collect();
    let rejects = attempts.iter().filter(|e| e["fault"] == "reject").count();
    assert!(rejects >= 1, "{rejects} rejections logged");
    for pair in attempts.windows(2) {
        if pair[0]["fault"] != "reject" {
            continue;
        }
        let waited = pair[1]["at_ms"].as_u64().unwrap() - pair[0]["at_ms"].as_u64().unwrap();
        let window = pair[0]["retry_after"].as_u64().unwrap() * 1000;
        assert!(waited + 50 >= window, "attempt {waited} ms after a Retry-After of {window} ms");
    }
}

#[test]
fn shutdown_on_replacement_rotates_after_switch() {
    // Connection 1 stalls just before its rotation at 2 s. The mock
    // announces a shutdown on connection 2 at 200 ms and closes it 1.5 s
    // later. The stale watchdog ends connection 1 first, so connection 2
    // takes over and must be replaced before the server closes it.
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--ping-interval",
        PING,
        "--fault",
        "at=1900ms conn=1 stall=5s",
        "--fault",
        "at=200ms conn=2 shutdown=1500ms",
    ]);
    let dir = unique_dir("replacement-shutdown");
    let settings = overlap_settings(&mock, "2s", "1900ms");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("connection 3 with data", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_rotations_total{cause=\"server_shutdown\"}") >= 1.0
            && metric(s, "binance_ingest_connects_total") >= 3.0
            && metric(s, "binance_ingest_disconnects_total{reason=\"rotated\"}") >= 1.0
    });
    assert!(service.terminate().success(), "{}", service.log_text());

    let sent = complete_sent_log(&mock);
    let replacement_open = event_time(&sent, 3, "open").expect("connection 3 opened");
    let announced_closed = event_time(&sent, 2, "closed").expect("connection 2 closed");
    assert!(replacement_open < announced_closed, "connection 3 opened after 2 closed");
    let close = sent.iter().find(|e| e.conn == 2 && e.event.as_deref() == Some("closed"));
    let reason = close.and_then(|e| e.reason.clone()).unwrap_or_default();
    assert!(reason.contains("1000"), "the server closed connection 2: {reason}");
    let stored = stored_records(service.data_dir());
    assert_stored_exactly_once(&data_events(&sent), &stored);
}

/// A tmpfs mounted for one test; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` (such as `1m`) at `path`, or returns `None`
    /// when this process may not mount (not root, or no mount permission).
    fn mount(path: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| SmallDisk(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_shutdown_gives_up_and_exits_74() {
    let dir = unique_dir("full-disk");
    // Declared before the service, so the service stops before the unmount.
    let Some(_disk) = SmallDisk::mount(&dir.join("data"), "1m") else {
        eprintln!("skipped: mounting a tmpfs needs root");
        return;
    };
    let mock = MockExchange::start(&["--rate", "2000"]);
    let settings = with(
        base_settings(&mock, "btcusdt@depth@100ms,ethusdt@depth@100ms"),
        "BINANCE_INGEST_SINK_SHUTDOWN_RETRY",
        "1s",
    );
    let settings = with(settings, "BINANCE_INGEST_FLUSH_INTERVAL", "50ms");
    // A small ring and staging area, so the ring overwrites unwritten
    // records within seconds of the disk filling.
    let settings = with(settings, "BINANCE_INGEST_CACHE_SIZE", "1MiB");
    let settings = with(settings, "BINANCE_INGEST_SINK_BUFFER_SIZE", "256KiB");
    let mut service = Service::start(&dir, &settings);
    service.wait_for("a failed write on the full disk", Duration::from_secs(30), |service| {
        metric(service, "binance_ingest_sink_write_errors_total") > 0.0
    });
    service.wait_for("lost records counted while running", Duration::from_secs(30), |service| {
        metric(service, "binance_ingest_sink_lost_records_total") > 0.0
    });
    let evicted = metric(&service, "binance_ingest_ring_evicted_records_total");
    let lost = metric(&service, "binance_ingest_sink_lost_records_total");
    assert!(lost <= evicted, "lost {lost} of {evicted} evicted records");
    service.wait_for("the lost count rising", Duration::from_secs(30), |service| {
        metric(service, "binance_ingest_sink_lost_records_total") > lost
    });
    assert_eq!(metric(&service, "binance_ingest_sink_abandoned_records_total"), 0.0);
    service.wait_for("a log line with the overwritten total", Duration::from_secs(30), |service| {
        service.log_contains("the ring has overwritten unwritten records")
    });

    let started = std::time::Instant::now();
    let status = service.terminate();
    let log = service.log_text();
    assert_eq!(status.code(), Some(74), "{log}");
    assert!(started.elapsed() < Duration::from_secs(20), "shutdown took {:?}", started.elapsed());
    assert!(service.log_contains("sink gave up at shutdown"), "{log}");
    assert!(service.log_contains("more were lost during the run"), "{log}");
    assert!(!service.log_contains("unread_records="), "{log}");
}

#[test]
fn client_pings_survive_fast_server_pings() {
    // 100 server pings a second. Pongs go out at most 3 a second and client
    // pings once a second, under the mock's limit of 5 messages a second.
    let mock =
        MockExchange::start(&["--rate", "20", "--ping-interval", "10ms", "--pong-timeout", "5s"]);
    let dir = unique_dir("client-pings-fast-server");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", "10ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "5s");
    let settings = with(settings, "BINANCE_INGEST_CLIENT_PING_INTERVAL", "1s");
    let settings = with(settings, "BINANCE_INGEST_PONG_TIMEOUT", "900ms");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("4 pongs to client pings", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_pongs_received_total") >= 4.0
    });
    let (_, metrics) = service.get("/metrics");
    assert!(service.terminate().success(), "{}", service.log_text());

    assert!(sum_of(&metrics, "binance_ingest_server_pings_total") >= 100.0, "{metrics}");
    assert!(sum_of(&metrics, "binance_ingest_client_pings_total") >= 4.0, "{metrics}");
    assert!(sum_of(&metrics, "binance_ingest_pong_rtt_seconds_count") >= 4.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "binance_ingest_pong_timeouts_total"), 0.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "binance_ingest_connects_total"), 1.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "binance_ingest_disconnects_total{"), 0.0, "{metrics}");
    assert!(!service.log_contains("too many messages"), "{}", service.log_text());
}

#[test]
fn server_close_not_delayed_by_held_pong() {
    let mock = MockExchange::start(&[
        "--rate",
        "20",
        "--ping-interval",
        "10ms",
        "--pong-timeout",
        "5s",
        "--fault",
        "at=1s conn=1 close=1001",
    ]);
    let dir = unique_dir("close-with-held-pong");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", "10ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "5s");
    let mut service = Service::start(&dir, &settings);
    service.wait_for("the reconnect after the server close", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_connects_total") >= 2.0
    });
    assert!(service.terminate().success(), "{}", service.log_text());

    let sent = complete_sent_log(&mock);
    let closed_by_server = fault_time(&sent, 1, "close").expect("close fault logged");
    let handshake_done = event_time(&sent, 1, "closed").expect("connection 1 closed");
    let took = handshake_done - closed_by_server;
    // Held pongs wait up to 340 ms; without the release the reply waits too.
    assert!(took < 150, "the close reply took {took} ms");
}

#[test]
fn fast_server_pings_get_spaced_pongs() {
    // 10 pings a second; the mock, like Binance spot, closes a connection
    // that sends over 5 messages a second, pongs included.
    let mock =
        MockExchange::start(&["--rate", "50", "--ping-interval", "100ms", "--pong-timeout", "5s"]);
    let dir = unique_dir("fast-pings");
    let settings = base_settings(&mock, "btcusdt@trade");
    let settings = with(settings, "BINANCE_INGEST_SERVER_PING_INTERVAL", "100ms");
    let settings = with(settings, "BINANCE_INGEST_STALE_AFTER", "5s");
    let mut service = Service::start(&dir, &settings);

    service.wait_for("40 server pings", Duration::from_secs(20), |s| {
        metric(s, "binance_ingest_server_pings_total") >= 40.0
    });
    let (_, metrics) = service.get("/metrics");
    assert!(service.terminate().success(), "{}", service.log_text());

    assert_eq!(sum_of(&metrics, "binance_ingest_connects_total"), 1.0, "{metrics}");
    assert_eq!(sum_of(&metrics, "binance_ingest_disconnects_total{"), 0.0, "{metrics}");
    let delayed = sum_of(&metrics, "binance_ingest_pongs_delayed_total");
    assert!(delayed >= 2.0, "{delayed} delayed pongs");
    assert!(!service.log_contains("too many messages"), "{}", service.log_text());
}
