//! Sent-log: the ground truth of what the mock exchange sent, as JSON Lines.
//!
//! Line shapes (one per line, no `stream` key on fault and lifecycle lines):
//!
//! ```text
//! {"conn":3,"stream":"btcusdt@trade","id":12345,"digest":"a1b2c3d4e5f60718","len":181}
//! {"conn":3,"fault":"close","code":1001,"at_ms":1733300000123}
//! {"conn":3,"event":"open","path":"/stream?streams=btcusdt@trade","at_ms":1733300000001}
//! {"conn":3,"event":"closed","reason":"client closed","at_ms":1733300000999}
//! ```
//!
//! `digest` is [`crate::digest::fnv1a`] of the data bytes exactly as sent,
//! in 16 lowercase hex digits, and `len` is their length. Each connection
//! thread formats lines into its own [`LogBuffer`] and hands them over in
//! blocks; a flusher thread writes the file at least every 100 ms. Nothing
//! here may block a connection for long: the file lock is held only to copy
//! a block into the file's buffer or to flush it.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maximum time a line waits in a [`LogBuffer`] before it reaches the file
/// buffer. With the flusher period this bounds the delay to the disk.
const HANDOVER_INTERVAL: Duration = Duration::from_millis(40);

/// Period of the flusher thread.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// Handle to the sent-log file, or a disabled log when no file was given.
#[derive(Clone, Default)]
pub struct SentLog {
    file: Option<Arc<Mutex<BufWriter<File>>>>,
}

impl SentLog {
    /// Creates (or truncates) the log file.
    pub fn create(path: &Path) -> io::Result<SentLog> {
        let file = File::create(path)?;
        Ok(SentLog { file: Some(Arc::new(Mutex::new(BufWriter::with_capacity(1 << 20, file)))) })
    }

    /// Whether lines are written anywhere.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// Appends whole lines.
    pub fn append(&self, lines: &[u8]) {
        let Some(file) = &self.file else { return };
        let mut writer = file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = writer.write_all(lines) {
            log::error!("sent-log write failed: error={error}");
        }
    }

    /// Writes buffered lines to the file.
    pub fn flush(&self) {
        let Some(file) = &self.file else { return };
        let mut writer = file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(error) = writer.flush() {
            log::error!("sent-log flush failed: error={error}");
        }
    }

    /// Returns a buffer for the lines of connection `conn`.
    pub fn buffer(&self, conn: u64) -> LogBuffer {
        LogBuffer {
            log: self.clone(),
            conn,
            lines: Vec::with_capacity(if self.is_enabled() { 64 * 1024 } else { 0 }),
            last_handover: Instant::now(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as u64)
        .unwrap_or(0)
}

/// Lines of one connection waiting to be appended to the sent-log.
pub struct LogBuffer {
    log: SentLog,
    conn: u64,
    lines: Vec<u8>,
    last_handover: Instant,
}

impl LogBuffer {
    /// Whether lines go anywhere; callers skip formatting work when not.
    pub fn is_enabled(&self) -> bool {
        self.log.is_enabled()
    }

    /// Records one sent data event. `stream` must be a validated stream name
    /// (letters, digits and `@_!.-`), so it needs no JSON escaping.
    pub fn data(&mut self, stream: &str, id: Option<u64>, digest: u64, len: usize) {
        if !self.is_enabled() {
            return;
        }
        let line = &mut self.lines;
        line.extend_from_slice(b"{\"conn\":");
        push_u64(line, self.conn);
        line.extend_from_slice(b",\"stream\":\"");
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(b"\",\"id\":");
        match id {
            Some(id) => push_u64(line, id),
            None => line.extend_from_slice(b"null"),
        }
        line.extend_from_slice(b",\"digest\":\"");
        push_hex16(line, digest);
        line.extend_from_slice(b"\",\"len\":");
        push_u64(line, len as u64);
        line.extend_from_slice(b"}\n");
        self.handover_if_due();
    }

    /// Records a fault. `fields` are extra `"key":value` pairs, already JSON,
    /// each starting with a comma, such as `,"code":1001`.
    pub fn fault(&mut self, name: &str, fields: &str) {
        self.control("fault", name, fields);
    }

    /// Records a lifecycle event such as `open` or `closed`, with extra
    /// fields as in [`LogBuffer::fault`].
    pub fn event(&mut self, name: &str, fields: &str) {
        self.control("event", name, fields);
    }

    fn control(&mut self, key: &str, name: &str, fields: &str) {
        if !self.is_enabled() {
            return;
        }
        let mut line = String::with_capacity(96);
        let _ = write!(
            line,
            "{{\"conn\":{},\"{key}\":{}{fields},\"at_ms\":{}}}",
            self.conn,
            json_string(name),
            unix_ms()
        );
        line.push('\n');
        self.lines.extend_from_slice(line.as_bytes());
        // Fault and lifecycle lines are rare and tests wait on them.
        self.handover();
    }

    /// Hands buffered lines to the file when [`HANDOVER_INTERVAL`] has passed
    /// or the buffer is large.
    pub fn handover_if_due(&mut self) {
        if self.lines.len() >= 60 * 1024 || self.last_handover.elapsed() >= HANDOVER_INTERVAL {
            self.handover();
        }
    }

    /// Hands every buffered line to the file.
    pub fn handover(&mut self) {
        if !self.lines.is_empty() {
            self.log.append(&self.lines);
            self.lines.clear();
        }
        self.last_handover = Instant::now();
    }
}

impl Drop for LogBuffer {
    fn drop(&mut self) {
        self.handover();
    }
}

/// Serializes `text` as a JSON string literal.
pub fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

fn push_u64(out: &mut Vec<u8>, value: u64) {
    let mut digits = [0u8; 20];
    let mut index = digits.len();
    let mut rest = value;
    loop {
        index -= 1;
        digits[index] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[index..]);
}

fn push_hex16(out: &mut Vec<u8>, value: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(HEX[((value >> (shift * 4)) & 0xf) as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_line_has_exact_shape() {
        let dir = std::env::temp_dir().join(format!("sent-log-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sent.jsonl");
        let log = SentLog::create(&path).unwrap();
        let mut buffer = log.buffer(3);
        buffer.data("btcusdt@trade", Some(12345), 0xa1b2_c3d4_e5f6_0718, 181);
        buffer.data("btcusdt@kline_1m", None, 1, 2);
        buffer.fault("close", ",\"code\":1001");
        drop(buffer);
        log.flush();

        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"conn":3,"stream":"btcusdt@trade","id":12345,"digest":"a1b2c3d4e5f60718","len":181}"#
        );
        assert_eq!(
            lines[1],
            r#"{"conn":3,"stream":"btcusdt@kline_1m","id":null,"digest":"0000000000000001","len":2}"#
        );
        assert!(lines[2].starts_with(r#"{"conn":3,"fault":"close","code":1001,"at_ms":"#));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
