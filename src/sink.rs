//! The sink thread: follows the cache ring and writes records as
//! Hive-partitioned JSON Lines files.
//!
//! Runs on its own thread. In bounded reads it copies each line from the
//! ring straight into the staging buffer of its part file, and it writes
//! those buffers at least every flush interval. It never opens a file that exists (part files
//! are created with `create_new`), so no file is ever rewritten or
//! truncated. It never blocks the pipeline and never panics on I/O errors.
//! A failed open, write or fsync is logged at a limited rate, counted and
//! retried with backoff. Meanwhile unwritten lines stay staged (up to
//! [`MAX_STAGED_BYTES`]) and the rest wait in the ring. Records that the
//! pipeline overwrites there are counted as lost as they are overwritten:
//! the sink publishes its read position in [`SinkStats`], and `/metrics`
//! adds the records the ring has evicted past it.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::liveness::{CHECKIN_INTERVAL, Checkin};
use crate::lograte::LogLimiter;
use crate::metrics::{Counter, Exposition, MetricType, PREFIX};
use crate::partition::{self, NANOS_PER_HOUR, hour_of};
use crate::record::RecordKind;
use crate::ring::{Cursor, RecordRef, Ring};
use crate::venue::Venue;

/// Default of [`SinkSettings::max_staged_bytes`]: 8 MiB.
pub const MAX_STAGED_BYTES: usize = 8 << 20;

/// Bytes copied out of the ring per lock hold: 1 MiB.
pub const READ_CHUNK_BYTES: usize = 1 << 20;

/// Staged bytes that trigger a write before the flush interval ends.
const WRITE_CHUNK_BYTES: usize = 256 << 10;

/// First retry delay after an I/O error. It doubles per failed retry, up to
/// [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Maximum retry delay after repeated I/O errors.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Default of [`SinkSettings::shutdown_retry`]: 30 s, half the systemd
/// unit's `TimeoutStopSec=60`, which also covers closing the connections.
pub const SHUTDOWN_RETRY_LIMIT: Duration = Duration::from_secs(30);

/// Exit status of a shutdown at which the sink gave up on unwritten
/// records: 74, `EX_IOERR` in sysexits.h.
pub const EXIT_UNWRITTEN_RECORDS: u8 = 74;

/// Partition folders named in the log line about records given up at
/// shutdown; the rest are counted.
const MAX_NAMED_FOLDERS: usize = 5;

/// Part files tried per partition before an open counts as failed.
const MAX_PART_SEQUENCE: u32 = 1000;

/// Settings of the sink.
#[derive(Clone, Debug)]
pub struct SinkSettings {
    /// Root folder of both tables.
    pub data_dir: PathBuf,
    /// Name in part-file names. It must not be empty or contain `/` or `\\`.
    pub instance: String,
    /// Venue, the `venue=` partition.
    pub venue: Venue,
    /// Maximum time a record stays staged before it is written. Values above
    /// 1 s are treated as 1 s.
    pub flush_interval: Duration,
    /// Staged bytes after which the sink stops reading from the ring until
    /// writes catch up (`SINK_BUFFER_SIZE`). Default [`MAX_STAGED_BYTES`].
    pub max_staged_bytes: usize,
    /// How long failed writes are retried once the ring is closed, before
    /// the sink gives up on the unwritten records (`SINK_SHUTDOWN_RETRY`).
    /// Default [`SHUTDOWN_RETRY_LIMIT`].
    pub shutdown_retry: Duration,
}

/// Read position of the sink in the ring, published after each read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadProgress {
    /// Sequence number of the next record the sink reads.
    pub next_seq: u64,
    /// Records the ring overwrote before the sink read them, counted when
    /// the sink's reads skipped them. Every sequence number below
    /// `next_seq` was either read or counted here.
    pub overwritten: u64,
}

impl ReadProgress {
    /// Records overwritten before the sink read them, including those the
    /// ring has evicted past `next_seq` since the sink's last read, given
    /// the ring's oldest stored sequence number.
    pub fn overwritten_with(&self, ring_oldest_seq: u64) -> u64 {
        self.overwritten + ring_oldest_seq.saturating_sub(self.next_seq)
    }
}

/// Counters and health of the sink, read by the HTTP threads.
#[derive(Debug)]
pub struct SinkStats {
    records_written: Counter,
    bytes_written: Counter,
    write_errors: Counter,
    /// Updated as one value, so a reader never sees a position without the
    /// overwrites counted on the way to it.
    progress: Mutex<ReadProgress>,
    abandoned_records: Counter,
    open_files: Counter,
    staged_bytes: Counter,
    healthy: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Default for SinkStats {
    fn default() -> Self {
        SinkStats {
            records_written: Counter::new(),
            bytes_written: Counter::new(),
            write_errors: Counter::new(),
            progress: Mutex::new(ReadProgress::default()),
            abandoned_records: Counter::new(),
            open_files: Counter::new(),
            staged_bytes: Counter::new(),
            healthy: AtomicBool::new(true),
            last_error: Mutex::new(None),
        }
    }
}

impl SinkStats {
    /// Creates zeroed statistics, healthy.
    pub fn new() -> SinkStats {
        SinkStats::default()
    }

    /// Returns whether the last write attempt succeeded.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Returns the most recent I/O error, kept after recovery.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    /// Records written to files (handed to the kernel, not yet fsynced).
    pub fn records_written(&self) -> u64 {
        self.records_written.get()
    }

    /// Failed opens, writes and fsyncs.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.get()
    }

    /// Records lost that the sink has counted: overwritten in the ring
    /// before its reads reached them, or abandoned at shutdown. Records the
    /// ring evicted since the sink's last read are missing here; see
    /// [`SinkStats::lost_records_with`].
    pub fn lost_records(&self) -> u64 {
        self.progress().overwritten + self.abandoned_records.get()
    }

    /// Returns the records lost so far, given the ring's oldest stored
    /// sequence number. They are the records overwritten in the ring before
    /// the sink read them, including those evicted since its last read,
    /// and those abandoned at shutdown. Read `ring_oldest_seq` before
    /// calling, so that no record the sink reads in between counts as lost.
    pub fn lost_records_with(&self, ring_oldest_seq: u64) -> u64 {
        self.progress().overwritten_with(ring_oldest_seq) + self.abandoned_records.get()
    }

    /// Records given up at shutdown after write errors: staged, or still
    /// stored in the ring and not read. They are part of
    /// [`SinkStats::lost_records`] too.
    pub fn abandoned_records(&self) -> u64 {
        self.abandoned_records.get()
    }

    /// Read position of the sink in the ring and the overwrites it counted.
    pub fn progress(&self) -> ReadProgress {
        *self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish_progress(&self, progress: ReadProgress) {
        *self.progress.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = progress;
    }

    /// Part files open now.
    pub fn open_files(&self) -> u64 {
        self.open_files.get()
    }

    fn record_error(&self, message: String) {
        self.write_errors.inc();
        self.healthy.store(false, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(message);
    }

    /// Writes the sink's metric families. `ring` supplies the records
    /// evicted past the sink's read position, so the lost count rises while
    /// the sink is stuck, not only when it reads again.
    pub fn write_metrics(&self, out: &mut Exposition, ring: &Ring) {
        // The ring first: a record the sink reads after this is then not
        // counted as lost.
        let ring_oldest_seq = ring.stats().oldest_seq;
        let families: [(&str, MetricType, &str, u64); 8] = [
            (
                "sink_records_written_total",
                MetricType::Counter,
                "Records written to part files.",
                self.records_written.get(),
            ),
            (
                "sink_bytes_written_total",
                MetricType::Counter,
                "Bytes written to part files.",
                self.bytes_written.get(),
            ),
            (
                "sink_write_errors_total",
                MetricType::Counter,
                "Failed opens, writes and fsyncs of part files.",
                self.write_errors.get(),
            ),
            (
                "sink_lost_records_total",
                MetricType::Counter,
                "Records overwritten in the ring before the sink read them, or abandoned at shutdown.",
                self.lost_records_with(ring_oldest_seq),
            ),
            (
                "sink_abandoned_records_total",
                MetricType::Counter,
                "Records given up at shutdown after write errors, staged or still in the ring; also in sink_lost_records_total.",
                self.abandoned_records.get(),
            ),
            ("sink_open_files", MetricType::Gauge, "Part files open now.", self.open_files.get()),
            (
                "sink_staged_bytes",
                MetricType::Gauge,
                "Bytes read from the ring and not yet written.",
                self.staged_bytes.get(),
            ),
            (
                "sink_healthy",
                MetricType::Gauge,
                "1 when the last write attempt succeeded, else 0.",
                u64::from(self.healthy()),
            ),
        ];
        for (suffix, kind, help, value) in families {
            out.single_u64(&format!("{PREFIX}{suffix}"), kind, help, value);
        }
    }
}

/// Starts the sink thread. It exits once the ring is closed and every
/// record in it is written and fsynced, or after
/// [`SinkSettings::shutdown_retry`] of failed retries at shutdown.
pub fn spawn(
    settings: SinkSettings,
    ring: Arc<Ring>,
    stats: Arc<SinkStats>,
    checkin: Checkin,
) -> io::Result<JoinHandle<()>> {
    if settings.instance.is_empty() || settings.instance.contains(['/', '\\']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid instance name {:?} for part files", settings.instance),
        ));
    }
    let start_seconds =
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs());
    let start = partition::format_start(start_seconds);
    std::thread::Builder::new().name("sink".to_string()).spawn(move || {
        let mut sink = Sink::new(settings, start, stats);
        sink.run(&ring, &checkin);
    })
}

/// One open (or not yet opened) part file and its staged lines.
struct PartFile {
    stream: Box<str>,
    kind: RecordKind,
    hour: u64,
    /// Start of `hour` in ns since the Unix epoch.
    hour_start_ns: u64,
    dir: PathBuf,
    file: Option<File>,
    staged: Vec<u8>,
    staged_records: u64,
    /// Bytes of `staged` already written.
    written: usize,
}

impl PartFile {
    /// Returns whether `record` belongs in this file.
    #[inline]
    fn holds(&self, record: &RecordRef<'_>) -> bool {
        record.received_ns.wrapping_sub(self.hour_start_ns) < NANOS_PER_HOUR
            && record.kind == self.kind
            && *self.stream == *record.stream
    }
}

struct Sink {
    settings: SinkSettings,
    start: String,
    stats: Arc<SinkStats>,
    /// Part files; each stream has one per table and hour.
    parts: Vec<PartFile>,
    /// Positions in `parts` by stream name, rebuilt when parts close.
    parts_by_stream: HashMap<Box<str>, Vec<usize>>,
    /// Position in `parts` of the file the previous record went to. Runs of
    /// records of one stream and hour skip the map lookup.
    last_part: Option<usize>,
    staged_bytes: usize,
    retry_at: Option<Instant>,
    /// Time of the first failure of the current run of failures.
    failing_since: Option<Instant>,
    backoff: Duration,
    error_log: LogLimiter,
    lost_log: LogLimiter,
    /// Records the ring overwrote before the sink read them, as published.
    overwritten: u64,
    /// Earliest time of the next report of ring overwrites while writes
    /// fail.
    next_overwrite_report: Instant,
}

impl Sink {
    fn new(settings: SinkSettings, start: String, stats: Arc<SinkStats>) -> Sink {
        Sink {
            settings,
            start,
            stats,
            parts: Vec::new(),
            parts_by_stream: HashMap::new(),
            last_part: None,
            staged_bytes: 0,
            retry_at: None,
            failing_since: None,
            backoff: MIN_BACKOFF,
            error_log: LogLimiter::default(),
            lost_log: LogLimiter::default(),
            overwritten: 0,
            next_overwrite_report: Instant::now(),
        }
    }

    fn run(&mut self, ring: &Ring, checkin: &Checkin) {
        let mut cursor = Cursor::default();
        let flush_interval = self.settings.flush_interval.min(Duration::from_secs(1));
        let mut next_flush = Instant::now() + flush_interval;
        let mut shutdown_deadline: Option<Instant> = None;
        loop {
            checkin.beat();
            let mut finished = false;
            let mut records_read = 0;
            if self.staged_bytes < self.settings.max_staged_bytes {
                // Lines go from ring storage straight into the staging
                // buffers, one copy, under the ring lock.
                let outcome =
                    ring.read_with(&mut cursor, READ_CHUNK_BYTES, |record| self.stage(&record));
                if outcome.lost > 0 {
                    self.count_lost(outcome.lost);
                }
                if outcome.lost > 0 || outcome.records > 0 {
                    self.publish_progress(&cursor);
                }
                records_read = outcome.records;
                finished = outcome.finished;
            }
            let now = Instant::now();
            let flush_due = now >= next_flush;
            if flush_due || finished || self.staged_bytes >= WRITE_CHUNK_BYTES {
                self.write_staged(now);
            }
            if flush_due {
                self.close_past_hours();
                next_flush = now + flush_interval;
            }
            if self.failing_since.is_some() && now >= self.next_overwrite_report {
                self.report_overwrites(ring, &cursor, now);
            }
            self.stats.staged_bytes.set(self.staged_bytes as u64);

            if finished && self.staged_bytes == 0 {
                self.close_all();
                break;
            }
            if ring.is_closed() {
                let retry = self.settings.shutdown_retry;
                let deadline = *shutdown_deadline.get_or_insert(now + retry);
                if now >= deadline {
                    let stats = ring.stats();
                    // Records evicted past the cursor were lost during the
                    // run; only those still stored are abandoned here.
                    let evicted = stats.oldest_seq.saturating_sub(cursor.next_seq());
                    if evicted > 0 {
                        self.count_lost(evicted);
                    }
                    let read_from = cursor.next_seq().max(stats.oldest_seq);
                    self.stats.publish_progress(ReadProgress {
                        next_seq: read_from,
                        overwritten: self.overwritten,
                    });
                    self.abandon(stats.next_seq.saturating_sub(read_from));
                    self.close_all();
                    break;
                }
            }
            if records_read == 0 || self.staged_bytes >= self.settings.max_staged_bytes {
                let mut wait = CHECKIN_INTERVAL.min(next_flush.saturating_duration_since(now));
                if let Some(retry_at) = self.retry_at {
                    wait = wait.min(retry_at.saturating_duration_since(now));
                }
                let wait = wait.max(Duration::from_millis(1));
                if self.staged_bytes >= self.settings.max_staged_bytes || finished {
                    std::thread::sleep(wait);
                } else {
                    ring.wait(&cursor, wait);
                }
            }
        }
        log::info!(
            "sink stopped records_written={} overwritten_in_ring={} abandoned_at_shutdown={}",
            self.stats.records_written.get(),
            self.overwritten,
            self.stats.abandoned_records.get()
        );
    }

    /// Counts `lost` records that the ring overwrote before the sink read
    /// them. The caller publishes the new position with them.
    fn count_lost(&mut self, lost: u64) {
        self.overwritten += lost;
        if let Some(suppressed) = self.lost_log.allow(Instant::now()) {
            log::error!(
                "sink lost records overwritten in the ring before it read them count={lost} \
                 total={} suppressed={suppressed}",
                self.overwritten
            );
        }
    }

    fn publish_progress(&self, cursor: &Cursor) {
        self.stats.publish_progress(ReadProgress {
            next_seq: cursor.next_seq(),
            overwritten: self.overwritten,
        });
    }

    /// Logs, while writes fail, how many unwritten records the ring has
    /// overwritten so far, at most once per [`crate::lograte::LOG_INTERVAL`].
    fn report_overwrites(&mut self, ring: &Ring, cursor: &Cursor, now: Instant) {
        self.next_overwrite_report = now + crate::lograte::LOG_INTERVAL;
        let pending = ring.stats().oldest_seq.saturating_sub(cursor.next_seq());
        let total = self.overwritten + pending;
        if total > 0 {
            log::error!(
                "sink is behind while writes fail: the ring has overwritten unwritten records \
                 total={total} since_last_read={pending} failing_for_s={:.1}",
                self.failing_since.map_or(0.0, |since| now.duration_since(since).as_secs_f64())
            );
        }
    }

    /// Appends a record's line to the staged bytes of its part file.
    fn stage(&mut self, record: &RecordRef<'_>) {
        let index = match self.last_part {
            Some(index) if self.parts[index].holds(record) => index,
            _ => self.find_or_add_part(record),
        };
        self.last_part = Some(index);
        let part = &mut self.parts[index];
        part.staged.extend_from_slice(record.line);
        part.staged.push(b'\n');
        part.staged_records += 1;
        self.staged_bytes += record.line.len() + 1;
    }

    /// Returns the position in `parts` of the part file for `record`,
    /// adding one (not opened yet) if none exists.
    fn find_or_add_part(&mut self, record: &RecordRef<'_>) -> usize {
        if let Some(positions) = self.parts_by_stream.get(record.stream)
            && let Some(&index) = positions.iter().find(|&&index| self.parts[index].holds(record))
        {
            return index;
        }
        let hour = hour_of(record.received_ns);
        let dir = partition::partition_dir(
            &self.settings.data_dir,
            record.kind,
            self.settings.venue,
            record.stream,
            hour,
        );
        let index = self.parts.len();
        self.parts.push(PartFile {
            stream: record.stream.into(),
            kind: record.kind,
            hour,
            hour_start_ns: hour * NANOS_PER_HOUR,
            dir,
            file: None,
            staged: Vec::new(),
            staged_records: 0,
            written: 0,
        });
        match self.parts_by_stream.get_mut(record.stream) {
            Some(positions) => positions.push(index),
            None => {
                self.parts_by_stream.insert(record.stream.into(), vec![index]);
            }
        }
        index
    }

    /// Rebuilds `parts_by_stream` after parts were removed.
    fn reindex_parts(&mut self) {
        self.last_part = None;
        self.parts_by_stream.clear();
        for (index, part) in self.parts.iter().enumerate() {
            match self.parts_by_stream.get_mut(&part.stream) {
                Some(positions) => positions.push(index),
                None => {
                    self.parts_by_stream.insert(part.stream.clone(), vec![index]);
                }
            }
        }
    }

    /// Writes every staged buffer, unless a retry backoff is running. The
    /// first error ends the pass: the disk is likely failing for all files.
    fn write_staged(&mut self, now: Instant) {
        if self.retry_at.is_some_and(|retry_at| now < retry_at) {
            return;
        }
        let mut failure = None;
        for part in self.parts.iter_mut() {
            if part.staged.is_empty() {
                continue;
            }
            match write_part(part, &self.settings.instance, &self.start, &self.stats) {
                Ok(()) => {
                    self.staged_bytes -= part.staged.len();
                    self.stats.records_written.add(part.staged_records);
                    part.staged.clear();
                    part.staged_records = 0;
                    part.written = 0;
                }
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        self.limit_buffer_capacity();
        self.stats.open_files.set(self.open_file_count());
        match failure {
            None => {
                if let Some(since) = self.failing_since.take() {
                    log::info!(
                        "sink writes succeed again after {:.1} s of errors; staged data written",
                        since.elapsed().as_secs_f64()
                    );
                }
                self.retry_at = None;
                self.backoff = MIN_BACKOFF;
                self.stats.healthy.store(true, Ordering::Relaxed);
            }
            Some(message) => {
                self.failing_since.get_or_insert(now);
                self.retry_at = Some(now + self.backoff);
                self.report_error(&message);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    /// Frees staging buffer capacity when the part files together keep more
    /// than `max_staged_bytes` of it. Empty buffers are freed and the others
    /// shrink to their content, so after this the total capacity is at most
    /// the larger of `max_staged_bytes` and the staged bytes. Between passes
    /// a buffer grows at most to twice its content, which is what the
    /// memory budget counts.
    fn limit_buffer_capacity(&mut self) {
        let capacity: usize = self.parts.iter().map(|part| part.staged.capacity()).sum();
        if capacity <= self.settings.max_staged_bytes {
            return;
        }
        for part in self.parts.iter_mut() {
            if part.staged.is_empty() {
                part.staged = Vec::new();
            } else {
                part.staged.shrink_to_fit();
            }
        }
    }

    /// Returns the staging buffer capacity of all part files, in bytes.
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.parts.iter().map(|part| part.staged.capacity()).sum()
    }

    fn report_error(&mut self, message: &str) {
        self.stats.record_error(message.to_string());
        if let Some(suppressed) = self.error_log.allow(Instant::now()) {
            log::error!(
                "sink write failed, retrying error=\"{message}\" retry_in_ms={} staged_bytes={} suppressed={suppressed}",
                self.backoff.as_millis(),
                self.staged_bytes
            );
        }
    }

    fn open_file_count(&self) -> u64 {
        self.parts.iter().filter(|part| part.file.is_some()).count() as u64
    }

    /// Fsyncs and closes files of hours before the current UTC hour that
    /// have nothing staged. A later record for such an hour opens a new
    /// part file.
    fn close_past_hours(&mut self) {
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX));
        let current_hour = hour_of(now_ns);
        let mut errors = Vec::new();
        let count = self.parts.len();
        self.parts.retain_mut(|part| {
            if part.hour >= current_hour || !part.staged.is_empty() {
                return true;
            }
            if let Some(file) = part.file.take()
                && let Err(message) = sync_and_close(file, &part.dir)
            {
                errors.push(message);
            }
            false
        });
        if self.parts.len() < count {
            self.reindex_parts();
        }
        for message in errors {
            self.report_error(&message);
        }
        self.stats.open_files.set(self.open_file_count());
    }

    /// Gives up on the staged records and on the `in_ring` unread records
    /// still stored in the ring, once shutdown retries have run out. Logs
    /// how many there are and where they were headed, and counts them as
    /// lost and abandoned.
    fn abandon(&mut self, in_ring: u64) {
        let staged: u64 = self.parts.iter().map(|part| part.staged_records).sum();
        let mut folders: Vec<String> = self
            .parts
            .iter()
            .filter(|part| part.staged_records > 0)
            .map(|part| part.dir.display().to_string())
            .collect();
        let more = folders.len().saturating_sub(MAX_NAMED_FOLDERS);
        folders.truncate(MAX_NAMED_FOLDERS);
        log::error!(
            "sink gave up at shutdown after {:?} of failed writes: staged_records={staged} \
             records_left_in_ring={in_ring} overwritten_during_run={} last_error=\"{}\" \
             folders=[{}] more_folders={more}",
            self.settings.shutdown_retry,
            self.overwritten,
            self.stats.last_error().unwrap_or_default(),
            folders.join(", ")
        );
        self.stats.abandoned_records.add(staged + in_ring);
        for part in self.parts.iter_mut() {
            part.staged.clear();
            part.staged_records = 0;
            part.written = 0;
        }
        self.staged_bytes = 0;
    }

    /// Fsyncs and closes every open file.
    fn close_all(&mut self) {
        let mut errors = Vec::new();
        for part in self.parts.iter_mut() {
            if let Some(file) = part.file.take()
                && let Err(message) = sync_and_close(file, &part.dir)
            {
                errors.push(message);
            }
        }
        for message in errors {
            self.report_error(&message);
        }
        self.parts.clear();
        self.reindex_parts();
        self.stats.open_files.set(0);
    }
}

/// Fsyncs and closes a part file, then fsyncs its folder so the file's
/// directory entry survives a crash too.
fn sync_and_close(file: File, dir: &std::path::Path) -> Result<(), String> {
    file.sync_all().map_err(|error| format!("fsync failed in {}: {error}", dir.display()))?;
    drop(file);
    File::open(dir)
        .and_then(|folder| folder.sync_all())
        .map_err(|error| format!("fsync of folder {} failed: {error}", dir.display()))
}

/// Opens the part file if needed and writes its staged bytes. Bytes written
/// before an error are not written again.
fn write_part(
    part: &mut PartFile,
    instance: &str,
    start: &str,
    stats: &SinkStats,
) -> Result<(), String> {
    if part.file.is_none() {
        part.file = Some(open_part(&part.dir, instance, start)?);
    }
    let Some(file) = part.file.as_mut() else {
        return Err(format!("no open file in {}", part.dir.display()));
    };
    while part.written < part.staged.len() {
        match file.write(&part.staged[part.written..]) {
            Ok(0) => return Err(format!("write returned 0 bytes in {}", part.dir.display())),
            Ok(count) => {
                part.written += count;
                stats.bytes_written.add(count as u64);
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(format!("write failed in {}: {error}", part.dir.display())),
        }
    }
    Ok(())
}

/// Creates the partition folder and a part file that did not exist before.
fn open_part(dir: &std::path::Path, instance: &str, start: &str) -> Result<File, String> {
    fs::create_dir_all(dir)
        .map_err(|error| format!("create folder {} failed: {error}", dir.display()))?;
    for sequence in 0..MAX_PART_SEQUENCE {
        let path = dir.join(partition::part_file_name(instance, start, sequence));
        match OpenOptions::new().append(true).create_new(true).open(&path) {
            Ok(file) => {
                log::debug!("opened part file path={}", path.display());
                return Ok(file);
            }
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(format!("open {} failed: {error}", path.display())),
        }
    }
    Err(format!("{MAX_PART_SEQUENCE} part files of this process exist in {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("binance-ingest-sink-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn open_part_never_reuses_a_name() {
        let dir = temp_dir("names");
        let start = "20261204T153000Z";
        fs::create_dir_all(&dir).unwrap();
        let first = dir.join(partition::part_file_name("a", start, 0));
        fs::write(&first, b"old\n").unwrap();

        let mut file = open_part(&dir, "a", start).unwrap();
        file.write_all(b"new\n").unwrap();
        drop(file);
        let _second = open_part(&dir, "a", start).unwrap();

        assert_eq!(fs::read(&first).unwrap(), b"old\n");
        let renamed = dir.join(partition::part_file_name("a", start, 1));
        assert_eq!(fs::read(renamed).unwrap(), b"new\n");
        assert!(dir.join(partition::part_file_name("a", start, 2)).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stats_record_errors_and_render() {
        let stats = SinkStats::new();
        assert!(stats.healthy());
        stats.record_error("write failed in /d: No space left on device".to_string());
        assert!(!stats.healthy());
        assert_eq!(stats.write_errors(), 1);
        assert!(stats.last_error().unwrap().contains("No space"));
        let mut out = Exposition::new();
        stats.write_metrics(&mut out, &Ring::new(1 << 20));
        let body = out.finish();
        assert!(body.contains("# TYPE binance_ingest_sink_write_errors_total counter\n"));
        assert!(body.contains("binance_ingest_sink_healthy 0\n"));
        assert_eq!(body.matches("# TYPE binance_ingest_sink_open_files gauge").count(), 1);
    }

    #[test]
    fn lost_count_includes_evictions_past_cursor() {
        let stats = SinkStats::new();
        stats.publish_progress(ReadProgress { next_seq: 100, overwritten: 7 });
        assert_eq!(stats.lost_records(), 7);
        assert_eq!(stats.lost_records_with(90), 7, "oldest behind the cursor adds nothing");
        assert_eq!(stats.lost_records_with(100), 7);
        assert_eq!(stats.lost_records_with(130), 37);
        stats.abandoned_records.add(5);
        assert_eq!(stats.lost_records_with(130), 42);
    }

    #[test]
    fn spawn_rejects_path_in_instance() {
        let settings = SinkSettings {
            data_dir: temp_dir("instance"),
            instance: "../x".to_string(),
            venue: Venue::Spot,
            flush_interval: Duration::from_secs(1),
            max_staged_bytes: MAX_STAGED_BYTES,
            shutdown_retry: SHUTDOWN_RETRY_LIMIT,
        };
        let liveness = crate::liveness::Liveness::new();
        let result = spawn(
            settings,
            Arc::new(Ring::new(1024)),
            Arc::new(SinkStats::new()),
            liveness.register("sink"),
        );
        assert_eq!(result.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn written_buffers_keep_bounded_capacity() {
        let dir = temp_dir("capacity");
        let settings = SinkSettings {
            data_dir: dir.clone(),
            instance: "cap".to_string(),
            venue: Venue::Spot,
            flush_interval: Duration::from_secs(1),
            max_staged_bytes: 1 << 20,
            shutdown_retry: SHUTDOWN_RETRY_LIMIT,
        };
        let mut sink =
            Sink::new(settings, "20261204T153000Z".to_string(), Arc::new(SinkStats::new()));

        let line = vec![b'x'; 100 << 10];
        let received_ns = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
        for index in 0..64 {
            let stream = format!("s{index}@trade");
            let record = RecordRef {
                seq: 0,
                received_ns,
                kind: RecordKind::Event,
                stream: &stream,
                line: &line,
            };
            sink.stage(&record);
        }
        assert!(sink.buffer_capacity() > 6 << 20, "staging itself is not limited");

        sink.write_staged(Instant::now());
        assert_eq!(sink.stats.records_written(), 64);
        assert!(sink.buffer_capacity() <= 1 << 20, "capacity {}", sink.buffer_capacity());

        sink.close_all();
        fs::remove_dir_all(&dir).unwrap();
    }
}
