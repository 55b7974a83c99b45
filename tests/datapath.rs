//! The data path on real threads and real files: frame batches go through
//! the pipeline thread into the ring, and the sink thread writes them into
//! a temporary data directory.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binance_ingest::frame::{FrameBatch, FrameKind};
use binance_ingest::liveness::Liveness;
use binance_ingest::parse::ParseErrorKind;
use binance_ingest::pipeline::{self, Notice, PipelineSettings, PipelineStats};
use binance_ingest::ring::Ring;
use binance_ingest::sink::{self, SinkSettings, SinkStats};
use binance_ingest::venue::Venue;
use serde_json::value::RawValue;

const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir()
            .join(format!("binance-ingest-{name}-{}-{unique}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Pipeline and sink threads with their shared state.
struct DataPath {
    frames: Option<crossbeam_channel::Sender<FrameBatch>>,
    pipeline: JoinHandle<()>,
    sink: JoinHandle<()>,
    pipeline_stats: Arc<PipelineStats>,
    sink_stats: Arc<SinkStats>,
    _notices: crossbeam_channel::Receiver<Notice>,
    _liveness: Liveness,
}

impl DataPath {
    fn start(data_dir: &Path, venue: Venue, instance: &str) -> DataPath {
        let liveness = Liveness::new();
        let ring = Arc::new(Ring::new(4 << 20));
        let (frames, frame_receiver) = crossbeam_channel::bounded(16);
        let (notice_sender, notices) = crossbeam_channel::bounded(4);
        let pipeline_stats = Arc::new(PipelineStats::new());
        let sink_stats = Arc::new(SinkStats::new());
        let pipeline = pipeline::spawn(
            PipelineSettings { venue, dedup_window: 64, max_streams: 1000 },
            frame_receiver,
            ring.clone(),
            pipeline_stats.clone(),
            notice_sender,
            liveness.register("pipeline"),
        )
        .unwrap();
        let sink = sink::spawn(
            SinkSettings {
                data_dir: data_dir.to_path_buf(),
                instance: instance.to_string(),
                venue,
                flush_interval: Duration::from_millis(50),
                max_staged_bytes: sink::MAX_STAGED_BYTES,
                shutdown_retry: sink::SHUTDOWN_RETRY_LIMIT,
            },
            ring,
            sink_stats.clone(),
            liveness.register("sink"),
        )
        .unwrap();
        DataPath {
            frames: Some(frames),
            pipeline,
            sink,
            pipeline_stats,
            sink_stats,
            _notices: notices,
            _liveness: liveness,
        }
    }

    fn send(&self, batch: FrameBatch) {
        self.frames.as_ref().unwrap().send(batch).unwrap();
    }

    /// Disconnects the frame channel and waits for both threads to exit.
    fn finish(mut self) -> (Arc<PipelineStats>, Arc<SinkStats>) {
        drop(self.frames.take());
        join_with_deadline(self.pipeline, "pipeline");
        join_with_deadline(self.sink, "sink");
        (self.pipeline_stats, self.sink_stats)
    }
}

fn join_with_deadline(handle: JoinHandle<()>, name: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !handle.is_finished() {
        assert!(Instant::now() < deadline, "{name} thread did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.join().unwrap();
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn batch_of(connection: u64, received_ns: u64, lines: &[&str]) -> FrameBatch {
    let mut batch = FrameBatch::new(connection, 4096);
    for (index, line) in lines.iter().enumerate() {
        batch.push(FrameKind::Text, received_ns + index as u64, line.as_bytes());
    }
    batch
}

/// Reads every file under `dir`, keyed by path relative to `dir`.
fn files_under(dir: &Path) -> HashMap<PathBuf, Vec<u8>> {
    let mut files = HashMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = fs::read_dir(&next) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path.strip_prefix(dir).unwrap().to_path_buf();
                files.insert(relative, fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// One stored line, split into its parts.
#[derive(Debug)]
struct StoredLine {
    folder: PathBuf,
    received_ns: u64,
    stream: String,
    connection: u64,
    data: Option<String>,
    gap: Option<serde_json::Value>,
}

fn stored_lines(dir: &Path) -> Vec<StoredLine> {
    #[derive(serde::Deserialize)]
    struct Line<'a> {
        recv_ns: u64,
        venue: String,
        stream: String,
        conn: u64,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
        gap: Option<serde_json::Value>,
    }
    let mut lines = Vec::new();
    for (path, bytes) in files_under(dir) {
        assert!(bytes.ends_with(b"\n"), "{} ends without a newline", path.display());
        for text in std::str::from_utf8(&bytes).unwrap().lines() {
            let line: Line<'_> = serde_json::from_str(text).unwrap();
            assert!(!line.venue.is_empty());
            lines.push(StoredLine {
                folder: path.parent().unwrap().to_path_buf(),
                received_ns: line.recv_ns,
                stream: line.stream,
                connection: line.conn,
                data: line.data.map(|raw| raw.get().to_string()),
                gap: line.gap,
            });
        }
    }
    lines
}

fn partition_of(table: &str, venue: &str, stream: &str, received_ns: u64) -> PathBuf {
    let seconds = received_ns / 1_000_000_000;
    let days = (seconds / 86_400) as i64;
    let date = reference_date(days);
    let hour = seconds % 86_400 / 3600;
    let mut path = PathBuf::new();
    if !table.is_empty() {
        path.push(table);
    }
    path.join(format!("venue={venue}/stream={stream}/date={date}/hour={hour:02}"))
}

/// Date of a day number, counted by walking the calendar from 1970.
fn reference_date(mut days: i64) -> String {
    let mut year = 1970;
    loop {
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
        let length = if leap { 366 } else { 365 };
        if days < length {
            let months = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
            let mut month = 0;
            while days >= months[month] {
                days -= months[month];
                month += 1;
            }
            return format!("{year:04}-{:02}-{:02}", month + 1, days + 1);
        }
        days -= length;
        year += 1;
    }
}

/// Stream and exact `data` bytes of a frame, read by serde_json, or `None`
/// for frames that are not market data.
fn expected_event(frame: &str) -> Option<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Envelope<'a> {
        stream: Option<String>,
        #[serde(borrow)]
        data: Option<&'a RawValue>,
    }
    let envelope: Envelope<'_> = serde_json::from_str(frame).ok()?;
    let data = envelope.data?;
    if data.get() == "null" {
        return None;
    }
    Some((envelope.stream?, data.get().to_string()))
}

fn sample_frames() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/spot-sample.jsonl");
    fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn events_stored_once_in_partitions() {
    let dir = TempDir::new("once");
    let frames = sample_frames();
    let lines: Vec<&str> = frames.iter().map(String::as_str).collect();
    let received_ns = now_ns();
    let datapath = DataPath::start(&dir.0, Venue::Spot, "test");
    datapath.send(batch_of(7, received_ns, &lines[..6]));
    datapath.send(batch_of(7, received_ns + 6, &lines[6..]));
    let (pipeline_stats, sink_stats) = datapath.finish();

    let stored = stored_lines(&dir.0);
    let events: Vec<&StoredLine> = stored.iter().filter(|line| line.data.is_some()).collect();
    let mut expected_count = 0;
    for (index, frame) in frames.iter().enumerate() {
        let Some((stream, data)) = expected_event(frame) else { continue };
        let copies: Vec<&&StoredLine> =
            events.iter().filter(|line| line.data.as_deref() == Some(data.as_str())).collect();
        if index == 2 {
            // Line 3 repeats line 2: one copy of that payload in total.
            assert_eq!(copies.len(), 1, "duplicate frame stored");
            continue;
        }
        expected_count += 1;
        assert_eq!(copies.len(), 1, "frame {} stored {} times", index + 1, copies.len());
        let line = copies[0];
        assert_eq!(line.stream, stream);
        assert_eq!(line.connection, 7);
        assert_eq!(line.received_ns, received_ns + index as u64);
        assert_eq!(line.folder, partition_of("", "spot", &stream, line.received_ns));
    }
    assert_eq!(events.len(), expected_count);

    let gaps: Vec<&StoredLine> = stored.iter().filter(|line| line.gap.is_some()).collect();
    assert_eq!(gaps.len(), 1);
    let gap = gaps[0];
    assert_eq!(gap.folder, partition_of("_gaps", "spot", "btcusdt@trade", gap.received_ns));
    assert_eq!(
        gap.gap.as_ref().unwrap(),
        &serde_json::json!({"first": 9007199254740995u64, "last": 9007199254740997u64, "missing": 3, "rule": "trade"})
    );

    assert_eq!(pipeline_stats.frames_total(), frames.len() as u64);
    assert_eq!(pipeline_stats.parse_errors(ParseErrorKind::NullData), 1);
    assert_eq!(pipeline_stats.parse_errors(ParseErrorKind::InvalidJson), 1);
    assert_eq!(sink_stats.records_written(), stored.len() as u64);
    assert_eq!(sink_stats.lost_records(), 0);
    assert_eq!(sink_stats.open_files(), 0, "all files closed at shutdown");
    assert!(sink_stats.healthy());
    let mut out = binance_ingest::metrics::Exposition::new();
    pipeline_stats.write_metrics(&mut out);
    let body = out.finish();
    assert!(body.contains("binance_ingest_duplicates_dropped_total{stream=\"btcusdt@trade\"} 1\n"));
    assert!(body.contains("binance_ingest_replies_total 1\n"));
}

#[test]
fn restart_writes_new_part() {
    let dir = TempDir::new("restart");
    let received_ns = now_ns();
    let first = r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":1}}"#;
    let second = r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":2}}"#;

    let datapath = DataPath::start(&dir.0, Venue::Spot, "blue");
    datapath.send(batch_of(1, received_ns, &[first]));
    datapath.finish();
    let after_first = files_under(&dir.0);
    assert_eq!(after_first.len(), 1);

    let datapath = DataPath::start(&dir.0, Venue::Spot, "blue");
    datapath.send(batch_of(2, received_ns + 1, &[second]));
    datapath.finish();
    let after_second = files_under(&dir.0);
    assert_eq!(after_second.len(), 2, "the second run made its own part file");
    for (path, bytes) in &after_first {
        assert_eq!(after_second.get(path), Some(bytes), "{} was rewritten", path.display());
    }
    for path in after_second.keys() {
        let name = path.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("part-blue-"), "{name}");
        assert!(name.ends_with(".jsonl"), "{name}");
    }
}

#[test]
fn unwritable_dir_recovers() {
    let dir = TempDir::new("unwritable");
    // A regular file where the data folder should be makes every folder
    // creation fail, also for root, who ignores permission bits.
    let data_dir = dir.0.join("data");
    fs::write(&data_dir, b"not a folder").unwrap();
    let received_ns = now_ns();
    let frame = r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":1}}"#;

    let datapath = DataPath::start(&data_dir, Venue::Spot, "test");
    datapath.send(batch_of(1, received_ns, &[frame]));
    let sink_stats = datapath.sink_stats.clone();
    wait_until("the sink reports a write error", || sink_stats.write_errors() > 0);
    assert!(!sink_stats.healthy());
    assert!(sink_stats.last_error().unwrap().contains("data"));
    assert_eq!(sink_stats.records_written(), 0);

    fs::remove_file(&data_dir).unwrap();
    wait_until("the sink recovers", || sink_stats.healthy());
    wait_until("the record is written", || sink_stats.records_written() == 1);
    let (_, sink_stats) = datapath.finish();
    assert_eq!(sink_stats.lost_records(), 0);
    let stored = stored_lines(&data_dir);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].data.as_deref(), Some(r#"{"e":"trade","t":1}"#));
}

/// Sum of `binance_ingest_duplicates_dropped_total` over all streams.
fn duplicates_dropped(stats: &PipelineStats) -> u64 {
    let mut out = binance_ingest::metrics::Exposition::new();
    stats.write_metrics(&mut out);
    out.finish()
        .lines()
        .filter(|line| line.starts_with("binance_ingest_duplicates_dropped_total{"))
        .map(|line| line.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum()
}

fn venue_of_fixture(name: &str) -> Option<Venue> {
    let prefix = name.split('-').next()?;
    match prefix {
        "spot" => Some(Venue::Spot),
        "binanceus" => Some(Venue::BinanceUs),
        "futures" => Some(Venue::UsdM),
        "coinm" => Some(Venue::CoinM),
        _ => None,
    }
}

#[test]
fn shared_fixtures_round_trip() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/binance");
    let Ok(entries) = fs::read_dir(&fixtures) else {
        println!("skipped: no fixtures at {}", fixtures.display());
        return;
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty());
    for path in paths {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let venue = venue_of_fixture(&name).unwrap_or_else(|| panic!("unknown venue in {name}"));
        let text = fs::read_to_string(&path).unwrap();
        let frames: Vec<&str> = text.lines().filter(|line| !line.is_empty()).collect();
        let dir = TempDir::new("fixture");
        let received_ns = now_ns();
        let datapath = DataPath::start(&dir.0, venue, "fixture");
        datapath.send(batch_of(1, received_ns, &frames));
        let (pipeline_stats, sink_stats) = datapath.finish();

        let stored = stored_lines(&dir.0);
        let expected: Vec<(String, String)> =
            frames.iter().filter_map(|frame| expected_event(frame)).collect();
        let errors: u64 =
            ParseErrorKind::ALL.iter().map(|kind| pipeline_stats.parse_errors(*kind)).sum();
        assert_eq!(errors, 0, "{name}: frames not parsed");
        // The live captures hold one connection's frames with no gap and
        // no duplicate; the single-message files mix unrelated frames.
        let live_capture = name.contains("-combined-");
        let gaps = stored.iter().filter(|line| line.gap.is_some()).count();
        let duplicates = duplicates_dropped(&pipeline_stats);
        if live_capture {
            assert_eq!(gaps, 0, "{name}: gaps in a capture without gaps");
            assert_eq!(duplicates, 0, "{name}: duplicates in a capture without duplicates");
        }
        let events: Vec<(&str, &str)> = stored
            .iter()
            .filter_map(|line| Some((line.stream.as_str(), line.data.as_deref()?)))
            .collect();
        assert_eq!(events.len() as u64 + duplicates, expected.len() as u64, "{name}: events");
        for (stream, data) in &expected {
            let copies = events.iter().filter(|event| event.0 == stream && event.1 == data).count();
            assert!(copies <= 1, "{name}: {stream} payload stored {copies} times");
            if live_capture {
                assert_eq!(copies, 1, "{name}: {stream} payload not stored");
            }
        }
        assert_eq!(sink_stats.records_written(), stored.len() as u64, "{name}");
    }
}

#[test]
fn metrics_pass_promtool() {
    let dir = TempDir::new("metrics");
    let frames = sample_frames();
    let lines: Vec<&str> = frames.iter().map(String::as_str).collect();
    let datapath = DataPath::start(&dir.0, Venue::Spot, "test");
    datapath.send(batch_of(1, now_ns(), &lines));
    let ring = Ring::new(1024);
    let (pipeline_stats, sink_stats) = datapath.finish();
    let mut out = binance_ingest::metrics::Exposition::new();
    pipeline_stats.write_metrics(&mut out);
    ring.write_metrics(&mut out);
    sink_stats.write_metrics(&mut out, &ring);
    let body = out.finish();
    for family in ["frames_total", "ring_used_bytes", "sink_lost_records_total", "sink_healthy"] {
        let type_line = format!("# TYPE binance_ingest_{family} ");
        assert_eq!(body.matches(&type_line).count(), 1, "{family} declared once");
    }
    assert!(
        body.contains("binance_ingest_stream_last_event_age_seconds{stream=\"btcusdt@trade\"} ")
    );

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let Ok(mut promtool) = promtool else {
        println!("skipped promtool check: promtool not found (Debian package prometheus)");
        return;
    };
    use std::io::Write as _;
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = promtool.wait_with_output().unwrap();
    let findings = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "promtool failed: {findings}\n{body}");
    assert!(findings.trim().is_empty(), "promtool findings: {findings}\n{body}");
}

#[test]
fn past_hour_files_closed_on_tick() {
    let dir = TempDir::new("past-hour");
    let two_hours_ago = now_ns() - 2 * 3_600_000_000_000;
    let frame = r#"{"stream":"btcusdt@trade","data":{"e":"trade","t":1}}"#;
    let datapath = DataPath::start(&dir.0, Venue::Spot, "test");
    datapath.send(batch_of(1, two_hours_ago, &[frame]));
    let sink_stats = datapath.sink_stats.clone();
    wait_until("the record is written", || sink_stats.records_written() == 1);
    wait_until("the past hour's file is closed", || sink_stats.open_files() == 0);
    let stored = stored_lines(&dir.0);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].folder, partition_of("", "spot", "btcusdt@trade", two_hours_ago));
    datapath.finish();
}

#[test]
fn interleaved_streams_and_hours_split() {
    let dir = TempDir::new("interleaved");
    let hour_ns = 3_600_000_000_000;
    // Start of the hour before the current one, so both hours are past.
    let boundary = (now_ns() / hour_ns - 1) * hour_ns;
    let received = [boundary - 1, boundary, boundary - 2, boundary + 1, boundary - 3, boundary + 2];
    let streams = ["a@trade", "a@trade", "b@trade", "a@trade", "a@trade", "b@trade"];
    let mut batch = FrameBatch::new(1, 4096);
    for (index, (stream, received_ns)) in streams.iter().zip(received).enumerate() {
        let frame = format!(r#"{{"stream":"{stream}","data":{{"e":"trade","x":{index}}}}}"#);
        batch.push(FrameKind::Text, received_ns, frame.as_bytes());
    }
    let datapath = DataPath::start(&dir.0, Venue::Spot, "test");
    datapath.send(batch);
    let (_, sink_stats) = datapath.finish();

    let stored = stored_lines(&dir.0);
    assert_eq!(stored.len(), streams.len());
    assert_eq!(sink_stats.records_written(), streams.len() as u64);
    for line in &stored {
        let data: serde_json::Value = serde_json::from_str(line.data.as_deref().unwrap()).unwrap();
        let index = data["x"].as_u64().unwrap() as usize;
        assert_eq!(line.stream, streams[index], "line {index}");
        assert_eq!(line.received_ns, received[index], "line {index}");
        assert_eq!(line.folder, partition_of("", "spot", streams[index], received[index]));
    }
    let folders: std::collections::HashSet<&PathBuf> =
        stored.iter().map(|line| &line.folder).collect();
    assert_eq!(folders.len(), 4, "two streams times two hours");
}
