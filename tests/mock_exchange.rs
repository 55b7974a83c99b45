//! Integration tests of the mock exchange: the real binary, real TLS
//! sockets, a real client and the sent-log file.

mod support;

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use serde_json::value::RawValue;
use tungstenite::Message;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::protocol::frame::coding::CloseCode;

use binance_ingest::digest::fnv1a;
use support::client::{Client, Read};
use support::mock::{MockExchange, SentEntry, unique_dir};

const WAIT: Duration = Duration::from_secs(5);

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

/// Exact bytes of the `data` value of a combined frame.
fn data_bytes(frame: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Combined<'a> {
        #[serde(borrow)]
        data: &'a RawValue,
    }
    let combined: Combined<'_> = serde_json::from_str(frame).expect("combined frame");
    combined.data.get().to_string()
}

fn data_entries(entries: &[SentEntry], conn: u64) -> Vec<SentEntry> {
    entries.iter().filter(|entry| entry.conn == conn && entry.stream.is_some()).cloned().collect()
}

fn close_code(frame: Option<tungstenite::protocol::CloseFrame>) -> Option<u16> {
    frame.map(|frame| u16::from(frame.code))
}

// ---------------------------------------------------------------- options

#[test]
fn help_documents_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-exchange")).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    let options = [
        "--listen",
        "--allow-non-loopback",
        "--plain",
        "--ca-out",
        "--ready-file",
        "--sent-log",
        "--venue",
        "--ping-interval",
        "--pong-timeout",
        "--max-connection-age",
        "--max-incoming",
        "--max-streams",
        "--shutdown-grace",
        "--rate",
        "--replay",
        "--replay-shared",
        "--no-generate",
        "--fault",
        "--fault-file",
    ];
    for option in options {
        let line = help.lines().find(|line| line.trim_start().starts_with(option));
        assert!(line.is_some(), "--help lacks {option}");
    }
    for default in
        ["[default: 127.0.0.1:0]", "20s", "60s", "24h", "1024", "[default: 10]", "3m", "10m"]
    {
        assert!(help.contains(default), "--help lacks default {default}");
    }
    for fault in [
        "close=CODE",
        "drop",
        "stall=",
        "no-data=",
        "repeat",
        "truncate",
        "binary",
        "empty",
        "invalid-utf8",
        "oversize",
        "delay-replies=",
        "shutdown",
        "reject=429|418",
        "refuse-tcp",
    ] {
        assert!(help.contains(fault), "--help lacks fault {fault}");
    }
}

#[test]
fn non_loopback_listen_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_mock-exchange"))
        .args(["--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("non-loopback"), "stderr: {stderr}");
    assert!(stderr.contains("--allow-non-loopback"), "stderr: {stderr}");
}

#[test]
fn invalid_duration_is_rejected() {
    let result = MockExchange::try_start(&["--ping-interval", "20"]);
    let Err(message) = result else { panic!("a duration without unit was accepted") };
    assert!(message.contains("missing unit"), "{message}");
}

// ---------------------------------------------------------------- transport and paths

#[test]
fn client_trusting_other_ca_fails() {
    let mock = MockExchange::start(&[]);
    let other = MockExchange::start(&[]);
    let tcp = TcpStream::connect(mock.addr()).unwrap();
    let url = format!("wss://localhost:{}/ws/btcusdt@trade", mock.addr().port());
    let connector = tungstenite::Connector::Rustls(support::client::tls_config(&other.ca_path()));
    let result = tungstenite::client_tls_with_config(url, tcp, None, Some(connector));
    assert!(result.is_err(), "handshake succeeded with a foreign CA");
}

#[test]
fn raw_stream_sends_bare_payload() {
    let mock = MockExchange::start(&["--rate", "200"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let trades: Vec<Value> = client.texts(5, WAIT).iter().map(|text| json(text)).collect();
    for pair in trades.windows(2) {
        assert_eq!(pair[0]["e"], "trade");
        assert!(pair[0].get("stream").is_none());
        let id = pair[0]["t"].as_u64().unwrap();
        assert!(id > u64::from(u32::MAX));
        assert_eq!(pair[1]["t"].as_u64().unwrap(), id + 1);
    }
}

#[test]
fn combined_stream_wraps_payload() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let mut client = Client::connect(&mock, "/stream?streams=btcusdt@trade/ethusdt@bookTicker");
    let mut seen = HashMap::new();
    for text in client.texts(20, WAIT) {
        let frame = json(&text);
        let stream = frame["stream"].as_str().unwrap().to_string();
        if stream == "ethusdt@bookTicker" {
            assert!(frame["data"].get("e").is_none(), "spot bookTicker has e: {text}");
            assert!(frame["data"].get("E").is_none(), "spot bookTicker has E: {text}");
        }
        *seen.entry(stream).or_insert(0) += 1;
    }
    assert!(seen.contains_key("btcusdt@trade"), "{seen:?}");
    assert!(seen.contains_key("ethusdt@bookTicker"), "{seen:?}");
}

#[test]
fn event_time_goes_backwards_across_streams() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let path = "/stream?streams=a1usdt@trade/b2usdt@trade/c3usdt@trade/d4usdt@trade/e5usdt@trade";
    let mut client = Client::connect(&mock, path);
    let times: Vec<u64> = client
        .texts(200, WAIT)
        .iter()
        .map(|text| json(text)["data"]["E"].as_u64().unwrap())
        .collect();
    let backwards = times.windows(2).filter(|pair| pair[1] < pair[0]).count();
    assert!(backwards > 0, "E never went backwards across streams");
}

#[test]
fn routed_paths_deliver_only_their_category() {
    let mock = MockExchange::start(&["--venue", "usdm", "--rate", "100"]);
    let mut public =
        Client::connect(&mock, "/public/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade");
    for text in public.texts(10, WAIT) {
        assert_eq!(json(&text)["stream"], "btcusdt@bookTicker");
    }
    let mut market =
        Client::connect(&mock, "/market/stream?streams=btcusdt@bookTicker/btcusdt@aggTrade");
    for text in market.texts(10, WAIT) {
        assert_eq!(json(&text)["stream"], "btcusdt@aggTrade");
    }
}

#[test]
fn unknown_path_is_rejected() {
    let mock = MockExchange::start(&[]);
    let Err(tungstenite::Error::Http(response)) = Client::try_connect(&mock, "/api/v3/time", None)
    else {
        panic!("an unknown path was accepted");
    };
    assert_eq!(response.status().as_u16(), 404);
}

#[test]
fn overlapping_connections_see_same_events() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let mut first = Client::connect(&mock, "/ws/btcusdt@trade");
    let mut second = Client::connect(&mock, "/ws/btcusdt@trade");
    let first_texts = first.texts(40, WAIT);
    let second_texts = second.texts(40, WAIT);
    let by_id: HashMap<u64, &String> =
        first_texts.iter().map(|text| (json(text)["t"].as_u64().unwrap(), text)).collect();
    let common: Vec<&String> = second_texts
        .iter()
        .filter(|text| by_id.contains_key(&json(text)["t"].as_u64().unwrap()))
        .collect();
    assert!(common.len() > 20, "only {} common events", common.len());
    for text in common {
        assert_eq!(by_id[&json(text)["t"].as_u64().unwrap()], text);
    }
}

// ---------------------------------------------------------------- requests

#[test]
fn subscribe_and_list_subscriptions() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let mut client = Client::connect(&mock, "/ws");
    client.send_text(
        r#"{"method":"SUBSCRIBE","params":["btcusdt@trade","ethusdt@aggTrade"],"id":1}"#,
    );
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":null,"id":1}"#));
    let data = json(&client.next_text(WAIT));
    assert!(data["e"] == "trade" || data["e"] == "aggTrade", "{data}");

    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#);
    assert_eq!(
        client.next_reply(WAIT),
        json(r#"{"result":["btcusdt@trade","ethusdt@aggTrade"],"id":2}"#)
    );

    client.send_text(r#"{"method":"UNSUBSCRIBE","params":["btcusdt@trade"],"id":"u3"}"#);
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":null,"id":"u3"}"#));

    // One request a second keeps under the incoming-message limit.
    let deadline = Instant::now() + Duration::from_millis(1100);
    while Instant::now() < deadline {
        let _ = client.read_until(deadline);
    }
    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":4}"#);
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":["ethusdt@aggTrade"],"id":4}"#));
    client.send_text(r#"{"method":"NOPE","id":5}"#);
    let error = client.next_reply(WAIT);
    assert_eq!(error["code"], 2);
    assert!(error["msg"].as_str().unwrap().starts_with("Invalid request"), "{error}");
    client.send_text("{not json");
    let error = client.next_reply(WAIT);
    assert_eq!(error["code"], 3);
}

#[test]
fn set_property_combined_wraps_frames() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    client.send_text(r#"{"method":"SET_PROPERTY","params":["combined",true],"id":1}"#);
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":null,"id":1}"#));
    let deadline = Instant::now() + WAIT;
    loop {
        let frame = json(&client.next_text(WAIT));
        if frame.get("stream").is_some() {
            assert_eq!(frame["stream"], "btcusdt@trade");
            break;
        }
        assert!(Instant::now() < deadline, "frames never became combined");
    }
}

#[test]
fn stream_limit_is_1024() {
    let mock = MockExchange::start(&["--no-generate"]);
    let mut client = Client::connect(&mock, "/ws");
    let names: Vec<String> = (0..1024).map(|i| format!("s{i}usdt@trade")).collect();
    let request = serde_json::json!({"method":"SUBSCRIBE","params":names,"id":1});
    client.send_text(&request.to_string());
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":null,"id":1}"#));
    client.send_text(r#"{"method":"SUBSCRIBE","params":["onemore@trade"],"id":2}"#);
    let error = client.next_reply(WAIT);
    assert_eq!(error["code"], 2, "{error}");
    assert!(error["msg"].as_str().unwrap().contains("1024"), "{error}");

    let names: Vec<String> = (0..1025).map(|i| format!("s{i}@trade")).collect();
    let path = format!("/stream?streams={}", names.join("/"));
    let Err(tungstenite::Error::Http(response)) = Client::try_connect(&mock, &path, None) else {
        panic!("1025 streams in the path were accepted");
    };
    assert_eq!(response.status().as_u16(), 400);
}

#[test]
fn message_limit_closes_with_1008() {
    let mock = MockExchange::start(&["--no-generate"]);
    let mut client = Client::connect(&mock, "/ws");
    client.ws.send(Message::Ping("a".into())).unwrap();
    client.ws.send(Message::Pong("b".into())).unwrap();
    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":1}"#);
    client.ws.send(Message::Ping("c".into())).unwrap();
    client.ws.send(Message::Pong("d".into())).unwrap();
    client.send_text(r#"{"method":"LIST_SUBSCRIPTIONS","id":2}"#);
    assert_eq!(close_code(client.wait_close(WAIT)), Some(1008));
}

#[test]
fn five_messages_a_second_are_allowed() {
    let mock = MockExchange::start(&["--no-generate"]);
    let mut client = Client::connect(&mock, "/ws");
    for id in 0..5 {
        client.send_text(&format!(r#"{{"method":"LIST_SUBSCRIPTIONS","id":{id}}}"#));
    }
    for id in 0..5 {
        assert_eq!(client.next_reply(WAIT)["id"], id);
    }
    let deadline = Instant::now() + Duration::from_millis(300);
    loop {
        match client.read_until(deadline) {
            Read::TimedOut => break,
            Read::Message(Message::Close(frame)) => panic!("closed at the limit: {frame:?}"),
            Read::Message(_) => {}
            Read::Failed(error) => panic!("read failed: {error}"),
        }
    }
}

// ---------------------------------------------------------------- heartbeat and lifecycle

#[test]
fn pings_follow_interval_while_pongs_flow() {
    // The pongs alone come close to the 5-per-second limit at this interval,
    // and a busy machine can bunch them, so the limit is raised: this test is
    // about ping cadence, and the limit has tests of its own.
    let mock = MockExchange::start(&[
        "--no-generate",
        "--ping-interval",
        "250ms",
        "--pong-timeout",
        "600ms",
        "--max-incoming",
        "50",
    ]);
    let mut client = Client::connect(&mock, "/ws");
    let start = Instant::now();
    let deadline = start + Duration::from_millis(1500);
    let mut pings = Vec::new();
    loop {
        match client.read_until(deadline) {
            Read::Message(Message::Ping(payload)) => {
                assert!(!payload.is_empty(), "ping without payload");
                pings.push(start.elapsed());
            }
            Read::Message(Message::Close(frame)) => {
                panic!("closed although pongs were sent: {frame:?}")
            }
            Read::Message(_) => {}
            Read::TimedOut => break,
            Read::Failed(error) => panic!("read failed: {error}"),
        }
    }
    assert!((4..=6).contains(&pings.len()), "{} pings in 1.5 s: {pings:?}", pings.len());
    // The client may be descheduled and read two pings back to back, so
    // single gaps say little; the mean gap shows the server's cadence.
    let span = pings[pings.len() - 1] - pings[0];
    let mean = span / (pings.len() as u32 - 1);
    assert!(mean >= Duration::from_millis(180), "mean ping gap {mean:?}: {pings:?}");
    assert!(mean <= Duration::from_millis(350), "mean ping gap {mean:?}: {pings:?}");
}

#[test]
fn missing_pong_closes_connection() {
    let mock = MockExchange::start(&[
        "--no-generate",
        "--ping-interval",
        "200ms",
        "--pong-timeout",
        "500ms",
    ]);
    // This client never reads, so tungstenite never sends a pong.
    let _client = Client::connect(&mock, "/ws");
    let entries = mock.wait_sent_log(WAIT, |entries| {
        entries.iter().any(|entry| entry.event.as_deref() == Some("closed"))
    });
    let event_time = |name: &str| {
        entries
            .iter()
            .find(|entry| entry.event.as_deref() == Some(name))
            .and_then(|entry| entry.at_ms)
    };
    let opened = event_time("open").expect("open line");
    let timed_out = event_time("pong-timeout").expect("pong-timeout line");
    // First ping at 200 ms, its deadline 500 ms later.
    assert!(timed_out - opened >= 680, "closed after {} ms", timed_out - opened);
    assert!(timed_out - opened <= 1500, "closed after {} ms", timed_out - opened);
}

#[test]
fn connection_age_cut_closes_with_1001() {
    let mock = MockExchange::start(&["--rate", "50", "--max-connection-age", "600ms"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let start = Instant::now();
    assert_eq!(close_code(client.wait_close(WAIT)), Some(1001));
    let age = start.elapsed();
    assert!(age >= Duration::from_millis(550), "closed after {age:?}");
    let entries = mock.wait_sent_log(WAIT, |entries| {
        entries.iter().any(|e| e.event.as_deref() == Some("max-age"))
    });
    assert!(entries.iter().any(|entry| entry.event.as_deref() == Some("max-age")));
}

#[test]
fn scheduled_server_shutdown_then_close() {
    let mock = MockExchange::start(&["--no-generate", "--fault", "at=200ms shutdown=400ms"]);
    let mut combined = Client::connect(&mock, "/stream?streams=btcusdt@trade");
    let mut raw = Client::connect(&mock, "/ws/btcusdt@trade");

    let frame = json(&combined.next_text(WAIT));
    assert_eq!(frame["stream"], "!serverShutdown");
    assert_eq!(frame["data"]["e"], "serverShutdown");
    assert!(frame["data"]["E"].as_u64().is_some());
    let announced = Instant::now();
    assert_eq!(close_code(combined.wait_close(WAIT)), Some(1001));
    assert!(
        announced.elapsed() >= Duration::from_millis(300),
        "closed {:?} after",
        announced.elapsed()
    );

    let event = json(&raw.next_text(WAIT));
    assert_eq!(event["e"], "serverShutdown");
    assert_eq!(close_code(raw.wait_close(WAIT)), Some(1001));
}

#[test]
fn server_shutdown_on_signal() {
    let mock = MockExchange::start(&["--no-generate", "--shutdown-grace", "200ms"]);
    let mut client = Client::connect(&mock, "/ws");
    // The open line shows the connection is being served.
    mock.wait_sent_log(WAIT, |entries| entries.iter().any(|e| e.event.as_deref() == Some("open")));
    mock.signal_server_shutdown();
    let event = json(&client.next_text(WAIT));
    assert_eq!(event["e"], "serverShutdown");
    assert_eq!(close_code(client.wait_close(WAIT)), Some(1001));
}

// ---------------------------------------------------------------- faults

#[test]
fn close_fault_sends_each_code() {
    let mut args = Vec::new();
    for (conn, code) in [1000, 1001, 1008, 1011].iter().enumerate() {
        args.push("--fault".to_string());
        args.push(format!("at=100ms close={code} conn={}", conn + 1));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mock = MockExchange::start(&args);
    for code in [1000, 1001, 1008, 1011] {
        let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
        assert_eq!(close_code(client.wait_close(WAIT)), Some(code));
    }
    let entries = mock.wait_sent_log(WAIT, |entries| {
        entries.iter().filter(|entry| entry.fault.as_deref() == Some("close")).count() == 4
    });
    let codes: Vec<u16> = entries
        .iter()
        .filter(|entry| entry.fault.as_deref() == Some("close"))
        .filter_map(|e| e.code)
        .collect();
    assert_eq!(codes.len(), 4, "{entries:?}");
    assert_eq!(CloseCode::from(1011), CloseCode::Error);
}

#[test]
fn drop_fault_ends_without_close_frame() {
    let mock = MockExchange::start(&["--rate", "50", "--fault", "at=200ms drop"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let deadline = Instant::now() + WAIT;
    loop {
        match client.read_until(deadline) {
            Read::Message(Message::Close(frame)) => panic!("got a close frame: {frame:?}"),
            Read::Message(_) => {}
            Read::TimedOut => panic!("connection still open"),
            Read::Failed(error) => {
                let text = error.to_string();
                assert!(
                    matches!(error, tungstenite::Error::Protocol(_) | tungstenite::Error::Io(_)),
                    "unexpected error {text}"
                );
                break;
            }
        }
    }
    let entries =
        mock.wait_sent_log(WAIT, |e| e.iter().any(|e| e.fault.as_deref() == Some("drop")));
    assert!(entries.iter().any(|entry| entry.fault.as_deref() == Some("drop")));
}

/// Reads for `length` and returns each message with its arrival time.
fn record(client: &mut Client, length: Duration) -> Vec<(Duration, Message)> {
    let start = Instant::now();
    let deadline = start + length;
    let mut messages = Vec::new();
    loop {
        match client.read_until(deadline) {
            Read::Message(Message::Close(frame)) => panic!("connection closed: {frame:?}"),
            Read::Message(message) => messages.push((start.elapsed(), message)),
            Read::TimedOut => return messages,
            Read::Failed(error) => panic!("read failed: {error}"),
        }
    }
}

#[test]
fn stall_fault_stops_data_and_pings() {
    let mock = MockExchange::start(&[
        // Pongs to 10 pings a second would pass the default limit of 5.
        "--rate",
        "100",
        "--ping-interval",
        "100ms",
        "--pong-timeout",
        "5s",
        "--max-incoming",
        "20",
        "--fault",
        "at=300ms stall=800ms",
    ]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let messages = record(&mut client, Duration::from_millis(1800));
    let longest = messages.windows(2).map(|pair| pair[1].0 - pair[0].0).max().unwrap();
    assert!(longest >= Duration::from_millis(700), "longest silence {longest:?}");
    let last = messages.last().unwrap().0;
    assert!(last >= Duration::from_millis(1200), "nothing after the stall, last at {last:?}");
}

#[test]
fn no_data_fault_keeps_pinging() {
    let mock = MockExchange::start(&[
        "--rate",
        "100",
        "--ping-interval",
        "100ms",
        "--max-incoming",
        "20",
        "--fault",
        "at=300ms no-data=800ms",
    ]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let messages = record(&mut client, Duration::from_millis(1800));
    let data_times: Vec<Duration> =
        messages.iter().filter(|(_, m)| m.is_text()).map(|(time, _)| *time).collect();
    let longest = data_times.windows(2).map(|pair| pair[1] - pair[0]).max().unwrap();
    assert!(longest >= Duration::from_millis(700), "longest data gap {longest:?}");
    let pings_in_gap = messages
        .iter()
        .filter(|(time, m)| {
            m.is_ping() && *time > Duration::from_millis(400) && *time < Duration::from_millis(1000)
        })
        .count();
    assert!(pings_in_gap >= 4, "{pings_in_gap} pings during the data pause");
    assert!(*data_times.last().unwrap() > Duration::from_millis(1200), "data did not resume");
}

#[test]
fn repeat_fault_resends_last_payload() {
    let mock = MockExchange::start(&["--rate", "50", "--fault", "at=300ms repeat=2"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    let texts = client.texts(40, WAIT);
    let repeats = texts.windows(3).filter(|w| w[0] == w[1] && w[1] == w[2]).count();
    assert_eq!(repeats, 1, "expected one payload sent three times in a row");
    let entries = mock.wait_sent_log(WAIT, |e| data_entries(e, 1).len() >= 40);
    let data = data_entries(&entries, 1);
    let duplicates = data.windows(2).filter(|pair| pair[0].digest == pair[1].digest).count();
    assert_eq!(duplicates, 2, "sent-log does not show the repeats");
    assert!(entries.iter().any(|entry| entry.fault.as_deref() == Some("repeat")));
}

#[test]
fn malformed_frame_faults_arrive() {
    let mock = MockExchange::start(&[
        "--rate",
        "50",
        "--fault",
        "at=200ms truncate",
        "--fault",
        "at=300ms binary",
        "--fault",
        "at=400ms empty",
        "--fault",
        "at=500ms invalid-utf8",
    ]);
    let mut client = Client::connect(&mock, "/stream?streams=btcusdt@trade");
    let deadline = Instant::now() + WAIT;
    let (mut truncated, mut binary, mut empty) = (false, false, false);
    let invalid = loop {
        match client.read_until(deadline) {
            Read::Message(Message::Text(text)) if text.is_empty() => empty = true,
            Read::Message(Message::Text(text)) => {
                if serde_json::from_str::<Value>(text.as_str()).is_err() {
                    assert!(text.starts_with("{\"stream\":\"btcusdt@trade\""), "{text}");
                    truncated = true;
                }
            }
            Read::Message(Message::Binary(bytes)) => {
                assert!(!bytes.is_empty());
                binary = true;
            }
            Read::Message(_) => {}
            Read::TimedOut => panic!("no invalid UTF-8 frame arrived"),
            Read::Failed(error) => break error,
        }
    };
    assert!(
        matches!(invalid, tungstenite::Error::Utf8(_)),
        "expected a UTF-8 error, got {invalid}"
    );
    assert!(truncated, "no truncated frame");
    assert!(binary, "no binary frame");
    assert!(empty, "no empty frame");
    let entries = mock.wait_sent_log(WAIT, |e| e.iter().filter(|e| e.fault.is_some()).count() >= 4);
    let faults: Vec<&str> = entries.iter().filter_map(|entry| entry.fault.as_deref()).collect();
    assert_eq!(faults, ["truncate", "binary", "empty", "invalid-utf8"]);
}

#[test]
fn oversize_fault_exceeds_client_limit() {
    let mock = MockExchange::start(&["--rate", "10", "--fault", "at=100ms oversize=1MiB"]);
    let config = WebSocketConfig::default()
        .max_message_size(Some(512 << 10))
        .max_frame_size(Some(512 << 10));
    let mut client = Client::try_connect(&mock, "/ws/btcusdt@trade", Some(config)).unwrap();
    let deadline = Instant::now() + WAIT;
    let error = loop {
        match client.read_until(deadline) {
            Read::Message(_) => {}
            Read::TimedOut => panic!("no oversize frame arrived"),
            Read::Failed(error) => break error,
        }
    };
    assert!(
        matches!(error, tungstenite::Error::Capacity(_)),
        "expected a capacity error, got {error}"
    );
}

#[test]
fn oversize_fault_defaults_above_16_mib() {
    let mock = MockExchange::start(&["--no-generate", "--fault", "at=100ms oversize"]);
    let mut client = Client::connect(&mock, "/ws");
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        match client.read_until(deadline) {
            Read::Message(_) => {}
            Read::TimedOut => panic!("no oversize frame arrived"),
            Read::Failed(error) => break error,
        }
    };
    assert!(
        matches!(error, tungstenite::Error::Capacity(_)),
        "expected a capacity error, got {error}"
    );
}

#[test]
fn delay_replies_fault_holds_reply() {
    let mock = MockExchange::start(&["--no-generate", "--fault", "delay-replies=600ms"]);
    let mut client = Client::connect(&mock, "/ws");
    mock.wait_sent_log(WAIT, |e| e.iter().any(|e| e.fault.as_deref() == Some("delay-replies")));
    let sent = Instant::now();
    client.send_text(r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":9}"#);
    assert_eq!(client.next_reply(WAIT), json(r#"{"result":null,"id":9}"#));
    let waited = sent.elapsed();
    assert!(waited >= Duration::from_millis(550), "reply after {waited:?}");
}

#[test]
fn reject_fault_answers_429_with_retry_after() {
    for status in ["429", "418"] {
        let spec = format!("reject={status} retry-after=7 for=1500ms");
        let mock = MockExchange::start(&["--fault", &spec]);
        let Err(tungstenite::Error::Http(response)) =
            Client::try_connect(&mock, "/ws/btcusdt@trade", None)
        else {
            panic!("handshake was not rejected");
        };
        assert_eq!(response.status().as_str(), status);
        assert_eq!(response.headers().get("Retry-After").unwrap(), "7");
        let entries =
            mock.wait_sent_log(WAIT, |e| e.iter().any(|e| e.fault.as_deref() == Some("reject")));
        assert!(entries.iter().any(|entry| entry.fault.as_deref() == Some("reject")));

        // After the window the handshake succeeds again.
        let deadline = Instant::now() + WAIT;
        while Client::try_connect(&mock, "/ws/btcusdt@trade", None).is_err() {
            assert!(Instant::now() < deadline, "handshake still rejected after the window");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn refuse_tcp_fault_closes_listener() {
    let mock = MockExchange::start(&["--fault", "at=300ms refuse-tcp for=1s"]);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(mock.addr()).is_ok() {
        assert!(Instant::now() < deadline, "connects never refused");
        std::thread::sleep(Duration::from_millis(20));
    }
    let error = TcpStream::connect(mock.addr()).unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    while TcpStream::connect(mock.addr()).is_err() {
        assert!(Instant::now() < deadline, "listener never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    Client::connect(&mock, "/ws/btcusdt@trade");
    let entries = mock.sent_log();
    assert!(entries.iter().any(|entry| entry.fault.as_deref() == Some("refuse-tcp")));
}

#[test]
fn fault_file_is_read() {
    let dir = unique_dir("fault-file");
    let path = dir.join("faults.txt");
    std::fs::write(&path, "# close soon\nat=100ms close=1011\n\n").unwrap();
    let mock = MockExchange::start(&["--fault-file", path.to_str().unwrap()]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    assert_eq!(close_code(client.wait_close(WAIT)), Some(1011));
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------- sent-log

#[test]
fn sent_log_matches_received_frames() {
    let mock = MockExchange::start(&["--rate", "100"]);
    let mut combined = Client::connect(
        &mock,
        "/stream?streams=btcusdt@trade/btcusdt@depth@100ms/btcusdt@bookTicker",
    );
    let received: Vec<String> = combined.texts(60, WAIT);
    let entries = mock.wait_sent_log(WAIT, |e| data_entries(e, 1).len() >= 60);
    let sent = data_entries(&entries, 1);
    assert!(entries.iter().any(|e| e.event.as_deref() == Some("open") && e.conn == 1));
    for (text, entry) in received.iter().zip(&sent) {
        let frame = json(text);
        let data = data_bytes(text);
        assert_eq!(entry.stream.as_deref(), frame["stream"].as_str());
        assert_eq!(entry.len, Some(data.len()));
        assert_eq!(
            entry.digest.as_deref(),
            Some(format!("{:016x}", fnv1a(data.as_bytes())).as_str())
        );
        let expected_id = match frame["stream"].as_str().unwrap() {
            "btcusdt@trade" => frame["data"]["t"].as_u64(),
            _ => frame["data"]["u"].as_u64(),
        };
        assert_eq!(entry.id, expected_id);
    }
    let depth_size = sent
        .iter()
        .find(|e| e.stream.as_deref() == Some("btcusdt@depth@100ms"))
        .unwrap()
        .len
        .unwrap();
    assert!((1000..=2048).contains(&depth_size), "depth update is {depth_size} bytes");
    let trade_frame = received.iter().find(|t| t.contains("@trade")).unwrap().len();
    assert!((150..=210).contains(&trade_frame), "trade frame is {trade_frame} bytes");

    let mut raw = Client::connect(&mock, "/ws/ethusdt@aggTrade");
    let received = raw.texts(10, WAIT);
    let entries = mock.wait_sent_log(WAIT, |e| data_entries(e, 2).len() >= 10);
    for (text, entry) in received.iter().zip(data_entries(&entries, 2)) {
        assert_eq!(entry.digest, Some(format!("{:016x}", fnv1a(text.as_bytes()))));
        assert_eq!(entry.id, json(text)["a"].as_u64());
    }
}

#[test]
fn sent_log_records_close() {
    let mock = MockExchange::start(&["--rate", "20"]);
    let mut client = Client::connect(&mock, "/ws/btcusdt@trade");
    client.next_text(WAIT);
    client.ws.close(None).unwrap();
    let entries =
        mock.wait_sent_log(WAIT, |e| e.iter().any(|e| e.event.as_deref() == Some("closed")));
    let closed =
        entries.iter().find(|e| e.event.as_deref() == Some("closed")).expect("closed line");
    assert!(closed.stream.is_none());
    assert!(closed.reason.as_deref().unwrap().contains("client closed"), "{closed:?}");
}

// ---------------------------------------------------------------- replay

fn fixtures_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/binance");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: fixture folder {} is absent", dir.display());
        None
    }
}

/// Stream names of a JSON Lines file of combined frames, in order of first
/// appearance.
fn streams_of(lines: &[&str]) -> Vec<String> {
    let mut streams: Vec<String> = Vec::new();
    for line in lines {
        let name = json(line)["stream"].as_str().unwrap().to_string();
        if !streams.contains(&name) {
            streams.push(name);
        }
    }
    streams
}

#[test]
fn replay_reproduces_fixtures_byte_for_byte() {
    let Some(dir) = fixtures_dir() else { return };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut replayed = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
        let file_arg = file.to_str().unwrap();
        if lines.iter().any(|line| json(line).get("stream").is_none()) {
            // Not combined frames (a subscribe reply): the mock must reject it.
            let Err(message) = MockExchange::try_start(&["--replay", file_arg]) else {
                panic!("{} is not combined frames but was accepted", file.display());
            };
            assert!(message.contains("line 1"), "{message}");
            continue;
        }
        let mock = MockExchange::start(&["--replay", file_arg, "--rate", "max", "--no-generate"]);
        let path = format!("/stream?streams={}", streams_of(&lines).join("/"));
        let mut client = Client::connect(&mock, &path);
        for (number, line) in lines.iter().enumerate() {
            let received = client.next_text(WAIT);
            assert_eq!(received, *line, "{} line {} differs", file.display(), number + 1);
        }
        replayed += 1;
    }
    assert!(replayed > 30, "only {replayed} files replayed");
}

#[test]
fn replay_loop_continues_ids() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/replay-small.jsonl");
    let mock = MockExchange::start(&[
        "--replay",
        file.to_str().unwrap(),
        "--rate",
        "max",
        "--no-generate",
    ]);
    let path = "/stream?streams=abcusdt@trade/abcusdt@depth@100ms/abcusdt@bookTicker";
    let mut client = Client::connect(&mock, path);
    let frames: Vec<Value> = client.texts(15, WAIT).iter().map(|text| json(text)).collect();
    let of = |stream: &str| -> Vec<Value> {
        frames.iter().filter(|f| f["stream"] == stream).map(|f| f["data"].clone()).collect()
    };
    let trades = of("abcusdt@trade");
    for pair in trades.windows(2) {
        assert_eq!(pair[1]["t"].as_u64().unwrap(), pair[0]["t"].as_u64().unwrap() + 1);
    }
    let depth = of("abcusdt@depth@100ms");
    for pair in depth.windows(2) {
        assert_eq!(pair[1]["U"].as_u64().unwrap(), pair[0]["u"].as_u64().unwrap() + 1);
    }
    let books = of("abcusdt@bookTicker");
    for pair in books.windows(2) {
        assert!(pair[1]["u"].as_u64().unwrap() > pair[0]["u"].as_u64().unwrap());
    }
    let times: Vec<u64> = trades.iter().map(|t| t["E"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[1] > pair[0]), "{times:?}");
    assert_eq!(trades.len(), 6);
}

#[test]
fn replay_and_generated_streams_share_a_connection() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/replay-small.jsonl");
    let mock = MockExchange::start(&["--replay", file.to_str().unwrap(), "--rate", "50"]);
    let mut client = Client::connect(&mock, "/stream?streams=abcusdt@trade/xyzusdt@trade");
    let streams: Vec<String> = client
        .texts(20, WAIT)
        .iter()
        .map(|t| json(t)["stream"].as_str().unwrap().to_string())
        .collect();
    assert!(streams.iter().any(|s| s == "abcusdt@trade"));
    assert!(streams.iter().any(|s| s == "xyzusdt@trade"));
}

#[test]
fn replay_shared_keeps_connections_in_step() {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/replay-small.jsonl");
    let file_arg = file.to_str().unwrap();
    let mock = MockExchange::start(&["--replay", file_arg, "--rate", "20", "--replay-shared"]);
    let mut first = Client::connect(&mock, "/ws/abcusdt@trade");
    let first_ids: Vec<u64> =
        first.texts(4, WAIT).iter().map(|text| json(text)["t"].as_u64().unwrap()).collect();
    for pair in first_ids.windows(2) {
        assert_eq!(pair[1], pair[0] + 1);
    }
    let mut second = Client::connect(&mock, "/ws/abcusdt@trade");
    let second_id = json(&second.next_text(WAIT))["t"].as_u64().unwrap();
    // Both follow the server clock, so the later connection does not start
    // again from the first line.
    assert!(second_id > first_ids[0], "second connection restarted at {second_id}");
}

#[test]
fn coinm_depth_starts_with_pu_minus_one() {
    let mock = MockExchange::start(&["--venue", "coinm", "--rate", "max"]);
    let mut client = Client::connect(&mock, "/stream?streams=btcusd_perp@depth@100ms");
    let updates: Vec<Value> =
        client.texts(5, WAIT).iter().map(|text| json(text)["data"].clone()).collect();
    assert_eq!(updates[0]["pu"], -1);
    assert_eq!(updates[0]["ps"], "BTCUSD");
    for pair in updates.windows(2) {
        assert_eq!(pair[1]["pu"], pair[0]["u"]);
    }
}

#[test]
fn plain_mode_serves_ws() {
    let mock = MockExchange::start(&["--plain", "--rate", "100"]);
    let tcp = TcpStream::connect(mock.addr()).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    let url = format!("ws://127.0.0.1:{}/ws/btcusdt@trade", mock.addr().port());
    let (mut ws, _) = tungstenite::client(url, tcp).expect("plain handshake");
    let message = ws.read().expect("read");
    let text = message.into_text().expect("text frame");
    assert_eq!(json(text.as_str())["e"], "trade");
    assert!(!mock.ca_path().exists(), "plain mode wrote a CA file");
}

/// Checks that a looped replay of a real depth capture keeps every
/// symbol's chain across the pass boundary.
fn assert_depth_chain_survives_loop(file_name: &str, futures: bool) {
    let Some(dir) = fixtures_dir() else { return };
    let file = dir.join(file_name);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<&str> = text.lines().filter(|line| !line.trim().is_empty()).collect();
    let streams: Vec<String> =
        streams_of(&lines).into_iter().filter(|name| name.contains("@depth")).collect();
    let per_pass =
        lines.iter().filter(|line| streams.iter().any(|s| line.contains(s.as_str()))).count();

    let args = ["--replay", file.to_str().unwrap(), "--rate", "max", "--no-generate"];
    let mock = MockExchange::start(&args);
    let mut client = Client::connect(&mock, &format!("/stream?streams={}", streams.join("/")));
    let mut last_u: HashMap<String, i64> = HashMap::new();
    for index in 0..per_pass * 2 + 10 {
        let frame = json(&client.next_text(WAIT));
        let stream = frame["stream"].as_str().unwrap().to_string();
        let data = &frame["data"];
        let u = data["u"].as_i64().unwrap();
        if let Some(previous) = last_u.get(&stream) {
            if futures {
                let pu = data["pu"].as_i64().unwrap();
                assert!(
                    pu == *previous || pu == -1,
                    "frame {index} of {stream}: pu {pu} after u {previous}"
                );
            } else {
                let first = data["U"].as_i64().unwrap();
                assert_eq!(first, previous + 1, "frame {index} of {stream}: U after u {previous}");
            }
        }
        last_u.insert(stream, u);
    }
}

#[test]
fn replay_loop_keeps_futures_depth_chain() {
    assert_depth_chain_survives_loop("futures-combined-depth.jsonl", true);
}

#[test]
fn replay_loop_keeps_spot_depth_chain() {
    assert_depth_chain_survives_loop("spot-combined-depth.jsonl", false);
}
