//! CPU cost of the data path per million messages. Prebuilt frame batches
//! of synthetic trade (about 165 B) and 20-level depth (about 1.4 KB)
//! frames go through the pipeline thread (parse, sequence, ring) and the
//! sink thread into a temporary folder. Parsing alone and the pipeline
//! without the sink are measured too, on the main thread.
//!
//! CPU time is user plus system time of the whole process from
//! `/proc/self/stat`, in clock ticks of 1/100 s (the Linux default
//! `CLK_TCK`), taken after the frames are built. Run with
//! `cargo bench --bench pipeline`. Each case stops after its message count
//! or 60 s of sending, whichever comes first. `BENCH_SCALE` (default 1)
//! multiplies the message counts, for example 0.02 for a run under
//! `valgrind --tool=callgrind`, whose instruction counts do not depend on
//! the load of a shared machine.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use binance_ingest::frame::{FrameBatch, FrameKind};
use binance_ingest::liveness::Liveness;
use binance_ingest::pipeline::{self, PipelineSettings, PipelineStats};
use binance_ingest::ring::Ring;
use binance_ingest::sink::{self, SinkSettings, SinkStats};
use binance_ingest::venue::Venue;

/// Frames per batch. Small enough that a batch buffer stays below glibc's
/// 128 KiB mmap threshold, as a reader's batches of a few ms do, so freeing
/// one does not unmap pages (which would add TLB shootdowns of its own).
const FRAMES_PER_BATCH: usize = 64;
const SEND_TIME_LIMIT: Duration = Duration::from_secs(60);
const TICKS_PER_SECOND: f64 = 100.0;

fn cpu_seconds() -> f64 {
    let stat = fs::read_to_string("/proc/self/stat").expect("read /proc/self/stat");
    // Split after the command name, which is in parentheses and may contain
    // spaces. utime and stime are fields 14 and 15 of the whole line.
    let after_name = &stat[stat.rfind(')').expect("command name in /proc/self/stat") + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    let utime: f64 = fields[11].parse().expect("utime");
    let stime: f64 = fields[12].parse().expect("stime");
    (utime + stime) / TICKS_PER_SECOND
}

/// Writes the frame with the given id.
type FrameWriter = fn(u64, &mut String);

fn trade_frame(id: u64, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        r#"{{"stream":"btcusdt@trade","data":{{"e":"trade","E":{},"s":"BTCUSDT","t":{id},"p":"97{:03}.45000000","q":"0.00123000","T":{},"m":true,"M":true}}}}"#,
        1_764_860_400_000 + id / 10,
        id % 1000,
        1_764_860_400_000 + id / 10,
    );
}

fn depth_frame(id: u64, out: &mut String) {
    use std::fmt::Write as _;
    let first = id * 10 + 1;
    let _ = write!(
        out,
        r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":{},"s":"BTCUSDT","U":{first},"u":{},"b":["#,
        1_764_860_400_000 + id,
        first + 9
    );
    for side in 0..2 {
        for level in 0..20u64 {
            if level > 0 {
                out.push(',');
            }
            let _ = write!(
                out,
                r#"["{}.{:02}000000","{}.{:03}00000"]"#,
                97_000 + level,
                id % 100,
                level,
                id % 1000
            );
        }
        out.push_str(if side == 0 { r#"],"a":["# } else { "]" });
    }
    out.push_str("}}");
}

fn build_batches(count: usize, frame: FrameWriter) -> (Vec<FrameBatch>, usize) {
    let received_ns =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_nanos() as u64);
    let mut batches = Vec::new();
    let mut text = String::new();
    let mut bytes = 0;
    text.clear();
    frame(1, &mut text);
    let batch_bytes = FRAMES_PER_BATCH * (text.len() + 16);
    for start in (0..count).step_by(FRAMES_PER_BATCH) {
        let mut batch = FrameBatch::new(1, batch_bytes);
        for id in start..(start + FRAMES_PER_BATCH).min(count) {
            text.clear();
            frame(id as u64 + 1, &mut text);
            bytes += text.len();
            batch.push(FrameKind::Text, received_ns + id as u64, text.as_bytes());
        }
        batches.push(batch);
    }
    (batches, bytes / count.max(1))
}

/// Parsing alone, on this thread.
fn run_parse_only(name: &str, batches: &[FrameBatch]) {
    let cpu_start = cpu_seconds();
    let mut events = 0u64;
    let mut frames = 0usize;
    for batch in batches {
        for frame in batch.iter() {
            let parsed = binance_ingest::parse::parse_frame(frame.kind, frame.payload);
            events += u64::from(matches!(parsed, binance_ingest::parse::Parsed::Event(_)));
        }
        frames += batch.len();
    }
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "{name} parse only: {frames} frames, {:.3} CPU s per million, events {events}",
        cpu / (frames as f64 / 1e6)
    );
}

/// Parse, sequence and ring append only, on this thread, without the sink.
fn run_pipeline_only(name: &str, count: usize, frame: FrameWriter) {
    let (batches, average_bytes) = build_batches(count, frame);
    run_parse_only(name, &batches);
    let ring = Arc::new(Ring::new(64 << 20));
    let (notices, _notice_receiver) = crossbeam_channel::bounded(4);
    let settings = PipelineSettings { venue: Venue::Spot, dedup_window: 1024, max_streams: 1024 };
    let stats = Arc::new(PipelineStats::new());
    let mut pipeline = pipeline::Pipeline::new(settings, ring.clone(), stats, notices);
    let cpu_start = cpu_seconds();
    let wall_start = Instant::now();
    let mut processed = 0;
    for batch in &batches {
        if wall_start.elapsed() > SEND_TIME_LIMIT {
            break;
        }
        pipeline.process(batch);
        processed += batch.len();
    }
    let cpu = cpu_seconds() - cpu_start;
    println!(
        "{name} pipeline only: {processed} frames of {average_bytes} B, {:.3} CPU s per million, ring records {}",
        cpu / (processed as f64 / 1e6),
        ring.stats().next_seq
    );
}

fn run_case(name: &str, count: usize, frame: FrameWriter) {
    let (batches, average_bytes) = build_batches(count, frame);
    let dir: PathBuf =
        std::env::temp_dir().join(format!("binance-ingest-bench-{}-{name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let liveness = Liveness::new();
    let ring = Arc::new(Ring::new(64 << 20));
    let (frames, frame_receiver) = crossbeam_channel::bounded(64);
    let (notices, _notice_receiver) = crossbeam_channel::bounded(4);
    let pipeline_stats = Arc::new(PipelineStats::new());
    let sink_stats = Arc::new(SinkStats::new());

    let cpu_start = cpu_seconds();
    let wall_start = Instant::now();
    let pipeline = pipeline::spawn(
        PipelineSettings { venue: Venue::Spot, dedup_window: 1024, max_streams: 1024 },
        frame_receiver,
        ring.clone(),
        pipeline_stats.clone(),
        notices,
        liveness.register("pipeline"),
    )
    .expect("spawn pipeline");
    let sink = sink::spawn(
        SinkSettings {
            data_dir: dir.clone(),
            instance: "bench".to_string(),
            venue: Venue::Spot,
            flush_interval: Duration::from_secs(1),
            max_staged_bytes: sink::MAX_STAGED_BYTES,
            shutdown_retry: sink::SHUTDOWN_RETRY_LIMIT,
        },
        ring.clone(),
        sink_stats.clone(),
        liveness.register("sink"),
    )
    .expect("spawn sink");
    let mut sent = 0;
    for batch in batches {
        if wall_start.elapsed() > SEND_TIME_LIMIT {
            break;
        }
        sent += batch.len();
        frames.send(batch).expect("pipeline running");
    }
    drop(frames);
    pipeline.join().expect("pipeline thread");
    sink.join().expect("sink thread");
    let cpu = cpu_seconds() - cpu_start;
    let wall = wall_start.elapsed().as_secs_f64();

    let millions = sent as f64 / 1e6;
    println!(
        "{name}: {sent} frames of {average_bytes} B, {:.3} CPU s per million, {:.0} frames/s, written {}, lost {}, ring evicted {}",
        cpu / millions,
        sent as f64 / wall,
        sink_stats.records_written(),
        sink_stats.lost_records(),
        ring.stats().evicted_total
    );
    let _ = fs::remove_dir_all(&dir);
}

fn main() {
    // `cargo bench --bench pipeline -- trade` runs only the cases whose
    // name contains the first free argument.
    let filter = std::env::args().skip(1).find(|arg| !arg.starts_with('-')).unwrap_or_default();
    let scale: f64 = std::env::var("BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0);
    let cases: [(&str, usize, FrameWriter); 2] =
        [("trade", 1_000_000, trade_frame), ("depth", 300_000, depth_frame)];
    for (name, count, frame) in cases {
        let count = ((count as f64 * scale) as usize).max(FRAMES_PER_BATCH);
        if name.contains(filter.as_str()) {
            run_pipeline_only(name, count, frame);
            run_case(name, count, frame);
        }
    }
}
