//! The HTTP server of the real `binance-ingest` binary under hostile
//! clients: huge announced bodies, heads that never finish, idle
//! connections beyond the handler pool, and malformed requests. Loopback
//! only. Every client is bounded in count and time.

mod support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::check::{base_settings, with};
use support::mock::{MockExchange, unique_dir};
use support::service::{Service, stored_records};

/// The server's head deadline (`HEAD_TIMEOUT` in src/http_server.rs).
const HEAD_TIMEOUT: Duration = Duration::from_secs(2);

/// A response as read from the socket.
struct RawResponse {
    code: u16,
    head: String,
    body: Vec<u8>,
}

fn connect(address: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect to http");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Sends `request` as is and reads the response until the server closes.
fn exchange(address: SocketAddr, request: &[u8]) -> RawResponse {
    let mut stream = connect(address);
    stream.write_all(request).expect("send request");
    read_response(&mut stream)
}

fn read_response(stream: &mut TcpStream) -> RawResponse {
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).expect("read http response");
    let split = bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(&bytes)));
    let head = String::from_utf8_lossy(&bytes[..split]).into_owned();
    let body = bytes[split + 4..].to_vec();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("malformed status line: {head:?}"));
    RawResponse { code, head, body }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

fn status_field(pid: u32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| Some(line.strip_prefix(field)?.trim().to_string()))
}

fn thread_count(pid: u32) -> usize {
    status_field(pid, "Threads:").and_then(|count| count.parse().ok()).expect("Threads in status")
}

fn is_running(pid: u32) -> bool {
    status_field(pid, "State:").is_some_and(|state| !state.starts_with('Z'))
}

/// Waits until the server closes `stream`, reading and discarding any
/// response, and returns the time since `started`.
fn wait_closed(stream: &mut TcpStream, started: Instant) -> Duration {
    let mut scratch = [0_u8; 1024];
    loop {
        match stream.read(&mut scratch) {
            Ok(0) => return started.elapsed(),
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => return started.elapsed(),
            Err(error) => panic!("connection not closed by the server: {error}"),
        }
    }
}

fn start_service(mock: &MockExchange, label: &str, threads: &str) -> Service {
    let dir = unique_dir(label);
    let settings =
        with(base_settings(mock, "btcusdt@trade"), "BINANCE_INGEST_HTTP_THREADS", threads);
    Service::start(&dir, &settings)
}

#[test]
fn huge_content_length_is_413_and_service_lives() {
    let mock = MockExchange::start(&["--rate", "50"]);
    let service = start_service(&mock, "http-huge", "2");
    service.wait_for("stored events", Duration::from_secs(20), |s| {
        !stored_records(s.data_dir()).is_empty()
    });

    let address = service.http_address();
    let request =
        format!("GET /readyz HTTP/1.1\r\nHost: {address}\r\nContent-Length: 99999999999\r\n\r\n");
    let response = exchange(address, request.as_bytes());
    assert_eq!(response.code, 413, "{}", response.head);
    let chunked =
        b"POST /readyz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    assert_eq!(exchange(address, chunked).code, 413);

    let before = stored_records(service.data_dir()).len();
    service.wait_for("more stored events", Duration::from_secs(20), |s| {
        stored_records(s.data_dir()).len() > before
    });
    assert!(is_running(service.pid()), "service exited:\n{}", service.log_text());
    assert_eq!(service.get("/livez").0, 200);
    assert_eq!(service.metric("binance_ingest_http_requests_total{code=\"413\"}"), Some(2.0));
}

#[test]
fn unsent_bodies_do_not_block_readyz() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let service = start_service(&mock, "http-unsent-body", "2");
    let address = service.http_address();

    // Each client announces a 100 MB body and never sends it, then stays
    // open: the server must respond at once, without waiting for the body.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let mut stream = connect(address);
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
            .unwrap();
        let started = Instant::now();
        let response = read_response(&mut stream);
        assert_eq!(response.code, 413);
        assert!(started.elapsed() < Duration::from_secs(1), "413 took {:?}", started.elapsed());
        clients.push(stream);
    }

    let started = Instant::now();
    assert_eq!(service.get("/livez").0, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "/livez took {:?}", started.elapsed());
}

#[test]
fn slow_heads_are_dropped_at_timeout() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let service = start_service(&mock, "http-slow", "4");
    let address = service.http_address();

    // Three clients, fewer than the four handlers, send part of a head and
    // then nothing.
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(address);
        stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n").unwrap();
        slow.push(stream);
    }

    let probe = Instant::now();
    assert_eq!(service.get("/livez").0, 200);
    assert!(probe.elapsed() < Duration::from_secs(1), "/livez took {:?}", probe.elapsed());

    for stream in &mut slow {
        let closed_after = wait_closed(stream, started);
        assert!(closed_after >= HEAD_TIMEOUT / 2, "dropped early after {closed_after:?}");
        assert!(closed_after < HEAD_TIMEOUT * 3, "dropped late after {closed_after:?}");
    }
    assert_eq!(service.metric("binance_ingest_http_requests_total{code=\"408\"}"), Some(3.0));
}

#[test]
fn idle_connections_keep_threads_bounded() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let service = start_service(&mock, "http-idle", "2");
    let address = service.http_address();
    assert_eq!(service.get("/livez").0, 200);
    let threads_before = thread_count(service.pid());

    // More idle connections than the two handlers and their queue of 16.
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..40).map(|_| connect(address)).collect();
    let threads_during = thread_count(service.pid());
    assert!(
        threads_during <= threads_before,
        "threads grew from {threads_before} to {threads_during}"
    );

    // While the queue is full the accept thread sends 503 at once.
    let probe = Instant::now();
    let (code, _) = service.get("/livez");
    assert!(code == 200 || code == 503, "unexpected /livez status {code}");
    assert!(probe.elapsed() < Duration::from_secs(3), "/livez took {:?}", probe.elapsed());

    // Handlers drop their idle connections at the head deadline, so every
    // idle connection ends within a few deadlines.
    for stream in &mut idle {
        let closed_after = wait_closed(stream, started);
        assert!(closed_after < HEAD_TIMEOUT * 4, "idle connection kept for {closed_after:?}");
    }
    let probe = Instant::now();
    assert_eq!(service.get("/livez").0, 200);
    assert!(probe.elapsed() < Duration::from_secs(1), "/livez took {:?}", probe.elapsed());
    assert!(thread_count(service.pid()) <= threads_before);
    assert!(service.metric("binance_ingest_http_queue_full_total").unwrap_or(0.0) >= 1.0);
}

#[test]
fn head_request_has_no_body() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let service = start_service(&mock, "http-head", "2");
    let address = service.http_address();

    let get = exchange(address, b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(get.code, 200);
    assert!(!get.body.is_empty());
    let head = exchange(address, b"HEAD /livez HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(head.code, 200);
    assert!(head.body.is_empty(), "HEAD body: {:?}", String::from_utf8_lossy(&head.body));
    assert!(header(&head.head, "Content-Length").is_some(), "{}", head.head);
    assert_eq!(header(&head.head, "Content-Type"), Some("application/health+json"));
}

#[test]
fn rejections_carry_status_and_headers() {
    let mock = MockExchange::start(&["--rate", "10"]);
    let service = start_service(&mock, "http-reject", "2");
    let address = service.http_address();

    let long_target = format!("GET /recent?stream={} HTTP/1.1\r\n\r\n", "a".repeat(3000));
    let long_line = "a".repeat(9000);
    let big_head = format!("GET /livez HTTP/1.1\r\nX-Big: {}\r\n\r\n", "b".repeat(9000));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("unknown path", b"GET /nope HTTP/1.1\r\n\r\n".to_vec(), 404),
        ("POST", b"POST /metrics HTTP/1.1\r\n\r\n".to_vec(), 405),
        ("DELETE", b"DELETE /readyz HTTP/1.1\r\n\r\n".to_vec(), 405),
        ("body", b"GET /readyz HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello".to_vec(), 413),
        ("long target", long_target.into_bytes(), 414),
        ("unfinished request line", long_line.into_bytes(), 414),
        ("large head", big_head.into_bytes(), 431),
        ("HTTP/2.0", b"GET /livez HTTP/2.0\r\n\r\n".to_vec(), 400),
        ("no version", b"GET /livez\r\n\r\n".to_vec(), 400),
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n".to_vec(), 400),
        ("bad field", b"GET /livez HTTP/1.1\r\nHost x\r\n\r\n".to_vec(), 400),
        ("bad limit", b"GET /recent?limit=0 HTTP/1.1\r\n\r\n".to_vec(), 400),
    ];
    for (what, request, expected) in cases {
        let response = exchange(address, &request);
        assert_eq!(response.code, expected, "{what}: {}", response.head);
        assert_eq!(header(&response.head, "Connection"), Some("close"), "{what}");
        assert_eq!(header(&response.head, "Cache-Control"), Some("no-store"), "{what}");
        let length = header(&response.head, "Content-Length").and_then(|v| v.parse().ok());
        assert_eq!(length, Some(response.body.len()), "{what}: {}", response.head);
        if expected == 405 {
            assert_eq!(header(&response.head, "Allow"), Some("GET, HEAD"), "{what}");
        }
    }
    assert!(is_running(service.pid()));
    assert_eq!(service.metric("binance_ingest_http_requests_total{code=\"400\"}"), Some(5.0));
}
