//! `MockExchange`: the real `mock-exchange` binary started as a child
//! process on a free loopback port, with its CA, ready file and sent-log in
//! a temporary folder. The child is killed and the folder removed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Time the mock may take to write its ready file.
const START_TIMEOUT: Duration = Duration::from_secs(20);

static NEXT_DIR: AtomicU64 = AtomicU64::new(0);

/// One line of the mock's sent-log: a data event (with `stream`), a fault
/// (with `fault`) or a lifecycle event (with `event`).
#[derive(Clone, Debug, Deserialize, PartialEq)]
pub struct SentEntry {
    pub conn: u64,
    pub stream: Option<String>,
    pub id: Option<u64>,
    pub digest: Option<String>,
    pub len: Option<usize>,
    pub fault: Option<String>,
    pub event: Option<String>,
    pub code: Option<u16>,
    pub reason: Option<String>,
    pub path: Option<String>,
    pub at_ms: Option<u64>,
}

/// A running mock exchange process.
pub struct MockExchange {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

/// Returns a new empty folder under the system temporary folder.
pub fn unique_dir(label: &str) -> PathBuf {
    let number = NEXT_DIR.fetch_add(1, Ordering::Relaxed);
    let dir =
        std::env::temp_dir().join(format!("mock-exchange-{label}-{}-{number}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temporary folder");
    dir
}

impl MockExchange {
    /// Starts the mock with `--listen 127.0.0.1:0` and its files in a
    /// temporary folder, plus `args`, and waits for its ready file.
    pub fn start(args: &[&str]) -> MockExchange {
        match MockExchange::try_start(args) {
            Ok(mock) => mock,
            Err(message) => panic!("mock exchange did not start: {message}"),
        }
    }

    /// Like [`MockExchange::start`], but returns the exit status and stderr
    /// when the process ends before it is ready.
    pub fn try_start(args: &[&str]) -> Result<MockExchange, String> {
        let dir = unique_dir("run");
        let ready = dir.join("ready");
        let mut child = Command::new(env!("CARGO_BIN_EXE_mock-exchange"))
            .args(["--listen", "127.0.0.1:0"])
            .arg("--ca-out")
            .arg(dir.join("ca.pem"))
            .arg("--ready-file")
            .arg(&ready)
            .arg("--sent-log")
            .arg(dir.join("sent.jsonl"))
            .args(args)
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("failed to spawn mock-exchange: {error}"))?;

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                    // Keep stderr flowing to the test output from here on.
                    if let Some(stderr) = child.stderr.take() {
                        std::thread::spawn(move || {
                            use std::io::{BufRead, BufReader};
                            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                                eprintln!("[mock] {line}");
                            }
                        });
                    }
                    return Ok(MockExchange { child, dir, addr });
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    use std::io::Read;
                    let _ = pipe.read_to_string(&mut stderr);
                }
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("exited with {status}: {stderr}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("timed out waiting for the ready file".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `wss://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("wss://{}", self.addr)
    }

    /// PEM file of the mock's CA.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Path of the sent-log.
    pub fn sent_log_path(&self) -> PathBuf {
        self.dir.join("sent.jsonl")
    }

    /// Process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Reads every complete line of the sent-log so far.
    pub fn sent_log(&self) -> Vec<SentEntry> {
        read_sent_log(&self.sent_log_path())
    }

    /// Polls the sent-log until `done` holds for it or `timeout` passes,
    /// and returns the last read.
    pub fn wait_sent_log(
        &self,
        timeout: Duration,
        done: impl Fn(&[SentEntry]) -> bool,
    ) -> Vec<SentEntry> {
        let deadline = Instant::now() + timeout;
        loop {
            let entries = self.sent_log();
            if done(&entries) || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGUSR1, which makes the mock send `serverShutdown` on every
    /// open connection.
    pub fn signal_server_shutdown(&self) {
        let status = Command::new("kill")
            .args(["-USR1", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -USR1 failed: {status}");
    }
}

/// Parses the complete lines of a sent-log file.
pub fn read_sent_log(path: &Path) -> Vec<SentEntry> {
    let Ok(text) = std::fs::read_to_string(path) else { return Vec::new() };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("bad sent-log line {line:?}: {error}"))
        })
        .collect()
}

impl Drop for MockExchange {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
