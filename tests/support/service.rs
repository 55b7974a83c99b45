//! Runs the real `binance-ingest` binary for integration tests, and reads
//! what it stored.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running `binance-ingest` process.
pub struct Service {
    child: Child,
    http: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    data_dir: PathBuf,
}

impl Service {
    /// Starts the service with `settings` (`KEY`, value) on top of test
    /// defaults: HTTP on a free loopback port, data under `dir/data`.
    /// Waits until the HTTP listener is bound.
    pub fn start(dir: &Path, settings: &[(&str, String)]) -> Service {
        let data_dir = dir.join("data");
        let mut command = Command::new(env!("CARGO_BIN_EXE_binance-ingest"));
        command
            .arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("RUST_LOG", "info")
            .env("BINANCE_INGEST_HTTP_ADDR", "127.0.0.1:0")
            .env("BINANCE_INGEST_DATA_DIR", &data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start binance-ingest");

        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log_writer = log.clone();
        let log_path = dir.join("service.log");
        std::thread::spawn(move || {
            let mut file = std::fs::File::create(log_path).ok();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(file) = file.as_mut() {
                    let _ = writeln!(file, "{line}");
                }
                log_writer.lock().unwrap().push(line);
            }
        });

        let deadline = Instant::now() + Duration::from_secs(20);
        let http = loop {
            let found = log.lock().unwrap().iter().find_map(|line| {
                let (_, address) = line.split_once("http listening on ")?;
                address.trim().parse::<SocketAddr>().ok()
            });
            if let Some(address) = found {
                break address;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "binance-ingest exited with {status} before listening:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "binance-ingest did not start listening within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Service { child, http, log, data_dir }
    }

    /// Address of the HTTP listener.
    pub fn http_address(&self) -> SocketAddr {
        self.http
    }

    /// Folder the service writes to.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a GET request and returns the status code and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(self.http, "GET", path)
    }

    /// Returns the value of a metric sample line starting with `prefix`,
    /// such as `binance_ingest_events_total{stream="a@trade"}`.
    pub fn metric(&self, prefix: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics");
        metric_value(&body, prefix)
    }

    /// Waits until `condition` holds, polling every 20 ms, and panics with
    /// `what` and the service log after `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut condition: impl FnMut(&Service) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !condition(self) {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Whether a log line contains `text`.
    pub fn log_contains(&self, text: &str) -> bool {
        self.log.lock().unwrap().iter().any(|line| line.contains(text))
    }

    /// Sends SIGTERM and waits up to 30 s for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for binance-ingest") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "binance-ingest did not exit within 30 s of SIGTERM\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit on its own, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for binance-ingest") {
                return status;
            }
            assert!(Instant::now() < deadline, "binance-ingest still running after {timeout:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
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

/// Sends a signal with the `kill` command, e.g. `signal(pid, "TERM")`.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Sends one HTTP/1.1 request with no body and returns status and body.
pub fn http_request(address: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let mut stream =
        TcpStream::connect_timeout(&address, Duration::from_secs(5)).expect("connect to http");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read http response");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("malformed http response: {text:?}"));
    let body = text.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    (status, body)
}

/// Returns the value of the first sample line starting with `prefix`
/// followed by a space.
pub fn metric_value(body: &str, prefix: &str) -> Option<f64> {
    body.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(prefix)?.strip_prefix(' ')?.trim().parse().ok())
}

/// One stored event line.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// File it came from.
    pub path: PathBuf,
    /// `stream` field.
    pub stream: String,
    /// `venue` field.
    pub venue: String,
    /// `conn` field.
    pub connection: u64,
    /// `recv_ns` field.
    pub received_ns: u64,
    /// Exact bytes of the `data` value.
    pub data: String,
}

/// Reads every event line under `data_dir`, excluding the `_gaps` table.
/// Panics on a line that is not valid JSON.
pub fn stored_records(data_dir: &Path) -> Vec<StoredRecord> {
    let mut records = Vec::new();
    for path in files_under(data_dir) {
        if path.components().any(|part| part.as_os_str() == "_gaps") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read data file");
        for line in text.lines() {
            #[derive(serde::Deserialize)]
            struct Line<'a> {
                recv_ns: u64,
                venue: String,
                stream: String,
                conn: u64,
                #[serde(borrow)]
                data: &'a serde_json::value::RawValue,
            }
            let parsed: Line<'_> = serde_json::from_str(line).unwrap_or_else(|error| {
                panic!("invalid line in {}: {error}: {line}", path.display())
            });
            records.push(StoredRecord {
                path: path.clone(),
                stream: parsed.stream,
                venue: parsed.venue,
                connection: parsed.conn,
                received_ns: parsed.recv_ns,
                data: parsed.data.get().to_string(),
            });
        }
    }
    records
}

/// Reads every gap line under `data_dir/_gaps`.
pub fn stored_gaps(data_dir: &Path) -> Vec<serde_json::Value> {
    let mut gaps = Vec::new();
    for path in files_under(&data_dir.join("_gaps")) {
        let text = std::fs::read_to_string(&path).expect("read gap file");
        for line in text.lines() {
            gaps.push(serde_json::from_str(line).expect("gap line is JSON"));
        }
    }
    gaps
}

/// Every regular file below `dir`, sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}
