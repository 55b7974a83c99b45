//! The cache ring: a fixed-capacity, byte-budgeted log of the newest
//! records, each with a sequence number.
//!
//! The pipeline thread appends whole batches; the sink thread follows the
//! ring with its own [`Cursor`]; the HTTP threads read [`Ring::recent`].
//! Every record is copied into one `Vec<u8>` allocated at start, so the ring
//! never grows and never pins a reader's buffers. The pipeline never waits
//! for the sink to catch up. When the sink falls behind, the oldest records
//! are overwritten and the sink counts them as lost. No lock is held for longer
//! than one appended batch, one bounded read or [`RECENT_RECORDS_PER_LOCK`]
//! records of a `/recent` walk.
//!
//! Storage layout: records lie back to back in the buffer. When a record
//! does not fit before the end, it goes to offset 0 and the previous record
//! gets a flag saying so. Each record is a 32-byte header, the stream name
//! and the line:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | sequence number |
//! | 8..16 | receive time, ns since the Unix epoch |
//! | 16..24 | offset of the previous record, for walking backwards |
//! | 24..28 | line length |
//! | 28..30 | stream name length |
//! | 30 | record kind: 0 event, 1 gap |
//! | 31 | flags: bit 0 means the next record is at offset 0 |

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::metrics::{Exposition, MetricType, PREFIX};
use crate::record::RecordKind;

/// Size of the per-record header in bytes.
pub const RECORD_HEADER_BYTES: usize = 32;

/// Records a `/recent` walk inspects per lock hold.
pub const RECENT_RECORDS_PER_LOCK: usize = 1024;

const FLAG_NEXT_AT_START: u8 = 1;

/// Records returned by [`Ring::recent_within`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecentPage {
    /// Records, newest last.
    pub records: Vec<RecentRecord>,
    /// Line bytes of the records plus one newline each.
    pub bytes: usize,
    /// Whether an older matching record was left out because it did not
    /// fit in the byte limit.
    pub truncated: bool,
}

/// Counters and gauges of the ring at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Configured capacity in bytes.
    pub capacity_bytes: u64,
    /// Bytes taken by stored records, headers included.
    pub used_bytes: u64,
    /// Records stored now.
    pub records: u64,
    /// Records overwritten to make room, since start.
    pub evicted_total: u64,
    /// Records rejected because they are larger than the ring, since start.
    pub rejected_total: u64,
    /// Sequence number the next record gets.
    pub next_seq: u64,
    /// Sequence number of the oldest stored record (equals `next_seq` when
    /// the ring is empty).
    pub oldest_seq: u64,
}

/// One record returned by [`Ring::recent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentRecord {
    /// Sequence number in the ring.
    pub seq: u64,
    /// The record's JSON line as the sink writes it, without the newline.
    pub line: Vec<u8>,
}

/// A reader's position: the next sequence number it wants.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    next_seq: u64,
    /// Offset of record `next_seq - 1`, valid while that record is stored.
    last_offset: usize,
}

impl Cursor {
    /// Sequence number of the next record this cursor reads.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }
}

/// Result of [`Ring::read`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Records overwritten before this cursor read them.
    pub lost: u64,
    /// The ring is closed and the cursor has read everything.
    pub finished: bool,
    /// Records read.
    pub records: usize,
}

/// A reusable list of records outside the ring: the pipeline builds one per
/// frame batch and the sink reads into one. Cleared, not freed, between uses.
#[derive(Debug, Default)]
pub struct RecordBatch {
    bytes: Vec<u8>,
    entries: Vec<BatchEntry>,
}

#[derive(Clone, Copy, Debug)]
struct BatchEntry {
    seq: u64,
    received_ns: u64,
    kind: RecordKind,
    start: usize,
    stream_len: usize,
    end: usize,
}

/// One record borrowed from a [`RecordBatch`].
#[derive(Clone, Copy, Debug)]
pub struct RecordRef<'a> {
    /// Sequence number; 0 for records not yet appended to the ring.
    pub seq: u64,
    /// Receive time in ns since the Unix epoch.
    pub received_ns: u64,
    /// Event or gap.
    pub kind: RecordKind,
    /// Stream name.
    pub stream: &'a str,
    /// JSON line without the newline.
    pub line: &'a [u8],
}

impl RecordBatch {
    /// Creates an empty batch.
    pub fn new() -> RecordBatch {
        RecordBatch::default()
    }

    /// Removes all records and keeps the memory.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.entries.clear();
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Returns whether the batch has no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of stream names and lines held.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Appends a record whose line `write_line` appends to the buffer.
    pub fn push_with(
        &mut self,
        received_ns: u64,
        kind: RecordKind,
        stream: &str,
        write_line: impl FnOnce(&mut Vec<u8>),
    ) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(stream.as_bytes());
        write_line(&mut self.bytes);
        let end = self.bytes.len();
        let entry = BatchEntry { seq: 0, received_ns, kind, start, stream_len: stream.len(), end };
        self.entries.push(entry);
    }

    /// Iterates over the records in order.
    pub fn iter(&self) -> impl Iterator<Item = RecordRef<'_>> + '_ {
        self.entries.iter().map(|entry| {
            let stream_end = entry.start + entry.stream_len;
            // Stream names enter a batch as `&str` only (`push_with`, or
            // ring storage filled from such batches), so they are UTF-8.
            let stream = std::str::from_utf8(&self.bytes[entry.start..stream_end]).unwrap_or("");
            RecordRef {
                seq: entry.seq,
                received_ns: entry.received_ns,
                kind: entry.kind,
                stream,
                line: &self.bytes[stream_end..entry.end],
            }
        })
    }

    fn push_stored(&mut self, header: &Header, body: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(body);
        self.entries.push(BatchEntry {
            seq: header.seq,
            received_ns: header.received_ns,
            kind: header.kind,
            start,
            stream_len: header.stream_len,
            end: self.bytes.len(),
        });
    }
}

/// The shared cache ring. Share it as `Arc<Ring>`.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug)]
struct State {
    buffer: Vec<u8>,
    /// Offset of the oldest record.
    head: usize,
    /// Offset right after the newest record.
    tail: usize,
    /// Offset of the newest record.
    newest: usize,
    /// Records lie in `[head, end of upper part)` and `[0, tail)`.
    wrapped: bool,
    records: u64,
    used: usize,
    next_seq: u64,
    oldest_seq: u64,
    evicted_total: u64,
    rejected_total: u64,
    closed: bool,
    /// Threads blocked in [`Ring::wait`]; `append` skips the wake-up
    /// system call when there are none.
    waiters: usize,
}

#[derive(Clone, Copy, Debug)]
struct Header {
    seq: u64,
    received_ns: u64,
    previous: usize,
    line_len: usize,
    stream_len: usize,
    kind: RecordKind,
    flags: u8,
}

impl Header {
    fn size(&self) -> usize {
        RECORD_HEADER_BYTES + self.stream_len + self.line_len
    }

    fn read(buffer: &[u8], offset: usize) -> Header {
        let bytes = &buffer[offset..offset + RECORD_HEADER_BYTES];
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[at..at + 8]);
            u64::from_le_bytes(word)
        };
        let mut line_len = [0u8; 4];
        line_len.copy_from_slice(&bytes[24..28]);
        Header {
            seq: u64_at(0),
            received_ns: u64_at(8),
            previous: u64_at(16) as usize,
            line_len: u32::from_le_bytes(line_len) as usize,
            stream_len: usize::from(u16::from_le_bytes([bytes[28], bytes[29]])),
            kind: if bytes[30] == 1 { RecordKind::Gap } else { RecordKind::Event },
            flags: bytes[31],
        }
    }

    fn write(&self, buffer: &mut [u8], offset: usize) {
        let bytes = &mut buffer[offset..offset + RECORD_HEADER_BYTES];
        bytes[0..8].copy_from_slice(&self.seq.to_le_bytes());
        bytes[8..16].copy_from_slice(&self.received_ns.to_le_bytes());
        bytes[16..24].copy_from_slice(&(self.previous as u64).to_le_bytes());
        // Both lengths were checked against their field widths in `append`.
        bytes[24..28].copy_from_slice(&(self.line_len as u32).to_le_bytes());
        bytes[28..30].copy_from_slice(&(self.stream_len as u16).to_le_bytes());
        bytes[30] = match self.kind {
            RecordKind::Event => 0,
            RecordKind::Gap => 1,
        };
        bytes[31] = self.flags;
    }
}

impl State {
    fn next_offset(&self, offset: usize) -> usize {
        let header = Header::read(&self.buffer, offset);
        if header.flags & FLAG_NEXT_AT_START != 0 { 0 } else { offset + header.size() }
    }

    fn evict_oldest(&mut self) {
        let header = Header::read(&self.buffer, self.head);
        self.records -= 1;
        self.used -= header.size();
        self.oldest_seq += 1;
        self.evicted_total += 1;
        if self.records == 0 {
            self.reset();
        } else if header.flags & FLAG_NEXT_AT_START != 0 {
            self.head = 0;
            self.wrapped = false;
        } else {
            self.head += header.size();
        }
    }

    fn reset(&mut self) {
        self.head = 0;
        self.tail = 0;
        self.newest = 0;
        self.wrapped = false;
    }

    /// Finds room for `size` bytes, evicting the oldest records as needed,
    /// and returns the offset. `size` is at most the capacity.
    fn make_room(&mut self, size: usize) -> usize {
        let capacity = self.buffer.len();
        loop {
            if self.records == 0 {
                self.reset();
                return 0;
            }
            if !self.wrapped {
                if self.tail + size <= capacity {
                    return self.tail;
                }
                if size <= self.head {
                    self.buffer[self.newest + 31] |= FLAG_NEXT_AT_START;
                    self.wrapped = true;
                    return 0;
                }
            } else if self.tail + size <= self.head {
                return self.tail;
            }
            self.evict_oldest();
        }
    }

    fn store(&mut self, entry: &BatchEntry, body: &[u8]) {
        let size = RECORD_HEADER_BYTES + body.len();
        let offset = self.make_room(size);
        let header = Header {
            seq: self.next_seq,
            received_ns: entry.received_ns,
            previous: self.newest,
            line_len: entry.end - entry.start - entry.stream_len,
            stream_len: entry.stream_len,
            kind: entry.kind,
            flags: 0,
        };
        header.write(&mut self.buffer, offset);
        self.buffer[offset + RECORD_HEADER_BYTES..offset + size].copy_from_slice(body);
        if self.records == 0 {
            self.head = offset;
            self.oldest_seq = self.next_seq;
        }
        self.newest = offset;
        self.tail = offset + size;
        self.records += 1;
        self.used += size;
        self.next_seq += 1;
    }
}

impl Ring {
    /// Creates a ring of `capacity_bytes`, allocated now and never grown.
    /// A record takes [`RECORD_HEADER_BYTES`] plus its stream name and line.
    pub fn new(capacity_bytes: usize) -> Ring {
        let state = State {
            buffer: vec![0; capacity_bytes],
            head: 0,
            tail: 0,
            newest: 0,
            wrapped: false,
            records: 0,
            used: 0,
            next_seq: 0,
            oldest_seq: 0,
            evicted_total: 0,
            rejected_total: 0,
            closed: false,
            waiters: 0,
        };
        Ring { capacity: capacity_bytes, state: Mutex::new(state), changed: Condvar::new() }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the ring consistent between
        // records at worst, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the counters and gauges.
    pub fn stats(&self) -> RingStats {
        let state = self.lock();
        RingStats {
            capacity_bytes: self.capacity as u64,
            used_bytes: state.used as u64,
            records: state.records,
            evicted_total: state.evicted_total,
            rejected_total: state.rejected_total,
            next_seq: state.next_seq,
            oldest_seq: state.oldest_seq,
        }
    }

    /// Writes the ring's metric families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let stats = self.stats();
        let families: [(&str, MetricType, &str, u64); 5] = [
            (
                "ring_capacity_bytes",
                MetricType::Gauge,
                "Configured capacity of the cache ring in bytes.",
                stats.capacity_bytes,
            ),
            (
                "ring_used_bytes",
                MetricType::Gauge,
                "Bytes of stored records in the cache ring, headers included.",
                stats.used_bytes,
            ),
            ("ring_records", MetricType::Gauge, "Records in the cache ring.", stats.records),
            (
                "ring_evicted_records_total",
                MetricType::Counter,
                "Records overwritten in the cache ring to make room.",
                stats.evicted_total,
            ),
            (
                "ring_rejected_records_total",
                MetricType::Counter,
                "Records rejected because they are larger than the cache ring.",
                stats.rejected_total,
            ),
        ];
        for (suffix, kind, help, value) in families {
            out.single_u64(&format!("{PREFIX}{suffix}"), kind, help, value);
        }
    }

    /// Appends every record of `batch` under one lock, evicting the oldest
    /// records as needed, and wakes the readers. Records larger than the
    /// capacity are rejected and counted. Returns the number appended.
    pub fn append(&self, batch: &RecordBatch) -> usize {
        if batch.is_empty() {
            return 0;
        }
        let mut appended = 0;
        let waiters = {
            let mut state = self.lock();
            for entry in &batch.entries {
                let body = &batch.bytes[entry.start..entry.end];
                let line_len = body.len() - entry.stream_len;
                let fits = RECORD_HEADER_BYTES + body.len() <= self.capacity
                    && u32::try_from(line_len).is_ok()
                    && u16::try_from(entry.stream_len).is_ok();
                if fits {
                    state.store(entry, body);
                    appended += 1;
                } else {
                    state.rejected_total += 1;
                }
            }
            state.waiters
        };
        if waiters > 0 {
            self.changed.notify_all();
        }
        appended
    }

    /// Copies records from `cursor` on into `out` (cleared first), up to
    /// about `max_bytes`, and moves the cursor past them. Records the ring
    /// overwrote before this read are skipped and returned as `lost`.
    pub fn read(
        &self,
        cursor: &mut Cursor,
        out: &mut RecordBatch,
        max_bytes: usize,
    ) -> ReadOutcome {
        out.clear();
        self.read_stored(cursor, max_bytes, |header, body| out.push_stored(header, body))
    }

    /// Calls `visit` for each record from `cursor` on, up to about
    /// `max_bytes` of stream names and lines, and moves the cursor past
    /// them. Records the ring overwrote before this read are skipped and
    /// returned as `lost`. Unlike [`Ring::read`] it copies nothing, but
    /// `visit` runs under the ring lock: it must be short and must not call
    /// the ring.
    pub fn read_with(
        &self,
        cursor: &mut Cursor,
        max_bytes: usize,
        mut visit: impl FnMut(RecordRef<'_>),
    ) -> ReadOutcome {
        self.read_stored(cursor, max_bytes, |header, body| {
            let (stream, line) = body.split_at(header.stream_len);
            // Stream names enter the ring as `&str` only (`push_with`), so
            // they are UTF-8.
            let stream = std::str::from_utf8(stream).unwrap_or("");
            visit(RecordRef {
                seq: header.seq,
                received_ns: header.received_ns,
                kind: header.kind,
                stream,
                line,
            });
        })
    }

    /// Walks records from `cursor` on under one lock, passing each header
    /// and body (stream name and line) to `visit`.
    fn read_stored(
        &self,
        cursor: &mut Cursor,
        max_bytes: usize,
        mut visit: impl FnMut(&Header, &[u8]),
    ) -> ReadOutcome {
        let state = self.lock();
        let mut outcome = ReadOutcome::default();
        if cursor.next_seq < state.oldest_seq {
            outcome.lost = state.oldest_seq - cursor.next_seq;
            cursor.next_seq = state.oldest_seq;
        }
        let mut offset = None;
        let mut bytes = 0;
        while cursor.next_seq < state.next_seq && bytes < max_bytes.max(1) {
            let at = match offset {
                Some(at) => at,
                None if cursor.next_seq == state.oldest_seq => state.head,
                None => state.next_offset(cursor.last_offset),
            };
            let header = Header::read(&state.buffer, at);
            let body = &state.buffer[at + RECORD_HEADER_BYTES..at + header.size()];
            visit(&header, body);
            bytes += body.len();
            outcome.records += 1;
            cursor.last_offset = at;
            cursor.next_seq += 1;
            offset =
                Some(if header.flags & FLAG_NEXT_AT_START != 0 { 0 } else { at + header.size() });
        }
        outcome.finished = state.closed && cursor.next_seq >= state.next_seq;
        outcome
    }

    /// Waits until a record past `cursor` exists, the ring is closed, or
    /// `timeout` passes.
    pub fn wait(&self, cursor: &Cursor, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while cursor.next_seq >= state.next_seq && !state.closed {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            state.waiters += 1;
            state = match self.changed.wait_timeout(state, deadline - now) {
                Ok((state, _)) => state,
                Err(poisoned) => poisoned.into_inner().0,
            };
            state.waiters -= 1;
        }
    }

    /// Marks the end of input: the pipeline has appended its last record.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// Returns whether [`Ring::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Returns up to `limit` of the newest records, newest last, of `stream`
    /// or of all streams. The walk releases the lock every
    /// [`RECENT_RECORDS_PER_LOCK`] records, so it may stop early at records
    /// the pipeline overwrote in between.
    pub fn recent(&self, stream: Option<&str>, limit: usize) -> Vec<RecentRecord> {
        self.recent_within(stream, limit, usize::MAX).records
    }

    /// Returns what [`Ring::recent`] returns, but stops before the first
    /// record whose line and newline would take the total past
    /// `max_bytes`, and then sets [`RecentPage::truncated`].
    pub fn recent_within(
        &self,
        stream: Option<&str>,
        limit: usize,
        max_bytes: usize,
    ) -> RecentPage {
        let mut found = Vec::new();
        let mut bytes = 0usize;
        // (sequence number, offset) of the next record to inspect.
        let mut position: Option<(u64, usize)> = None;
        while found.len() < limit {
            let state = self.lock();
            let (mut seq, mut offset) = match position {
                Some(position) => position,
                None if state.records == 0 => break,
                None => (state.next_seq - 1, state.newest),
            };
            let mut inspected = 0;
            while found.len() < limit && inspected < RECENT_RECORDS_PER_LOCK {
                if seq < state.oldest_seq || state.records == 0 {
                    return finish_recent(found, bytes, false);
                }
                let header = Header::read(&state.buffer, offset);
                let body_start = offset + RECORD_HEADER_BYTES;
                let line_start = body_start + header.stream_len;
                let matches = stream.is_none_or(|wanted| {
                    wanted.as_bytes() == &state.buffer[body_start..line_start]
                });
                if matches {
                    let line = &state.buffer[line_start..offset + header.size()];
                    if bytes.saturating_add(line.len() + 1) > max_bytes {
                        return finish_recent(found, bytes, true);
                    }
                    bytes += line.len() + 1;
                    found.push(RecentRecord { seq, line: line.to_vec() });
                }
                inspected += 1;
                if seq == 0 {
                    return finish_recent(found, bytes, false);
                }
                seq -= 1;
                offset = header.previous;
            }
            position = Some((seq, offset));
        }
        finish_recent(found, bytes, false)
    }
}

fn finish_recent(mut records: Vec<RecentRecord>, bytes: usize, truncated: bool) -> RecentPage {
    records.reverse();
    RecentPage { records, bytes, truncated }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn batch_of(records: &[(&str, &[u8])]) -> RecordBatch {
        let mut batch = RecordBatch::new();
        for (index, (stream, line)) in records.iter().enumerate() {
            batch.push_with(index as u64, RecordKind::Event, stream, |out| {
                out.extend_from_slice(line)
            });
        }
        batch
    }

    fn read_all(ring: &Ring, cursor: &mut Cursor) -> (Vec<(u64, Vec<u8>)>, u64) {
        let mut out = RecordBatch::new();
        let mut records = Vec::new();
        let mut lost = 0;
        loop {
            let outcome = ring.read(cursor, &mut out, 1 << 20);
            lost += outcome.lost;
            if out.is_empty() {
                return (records, lost);
            }
            records.extend(out.iter().map(|record| (record.seq, record.line.to_vec())));
        }
    }

    /// Deterministic pseudo-random numbers (xorshift64).
    fn next_random(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn ring_evicts_oldest_first() {
        // Each record: 32 header + 1 stream + 17 line = 50 bytes.
        let ring = Ring::new(160);
        for index in 0..5u8 {
            let line = [b'a' + index; 17];
            ring.append(&batch_of(&[("s", &line)]));
        }
        let stats = ring.stats();
        assert_eq!(stats.records, 3);
        assert_eq!(stats.evicted_total, 2);
        assert_eq!(stats.oldest_seq, 2);
        assert_eq!(stats.next_seq, 5);
        assert_eq!(stats.used_bytes, 150);
        let recent = ring.recent(None, 10);
        let seqs: Vec<u64> = recent.iter().map(|record| record.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        assert_eq!(recent[2].line, [b'e'; 17]);
    }

    #[test]
    fn ring_never_exceeds_capacity_under_random_sizes() {
        let capacity = 4096;
        let ring = Ring::new(capacity);
        let mut random = 0x9e37_79b9_7f4a_7c15u64;
        let mut cursor = Cursor::default();
        let mut expected_next = 0u64;
        let mut seen = 0u64;
        let mut lost_total = 0u64;
        for round in 0..2000u64 {
            let mut batch = RecordBatch::new();
            for _ in 0..(next_random(&mut random) % 4 + 1) {
                let len = (next_random(&mut random) % 900) as usize;
                let fill = b'a' + (round % 26) as u8;
                batch.push_with(round, RecordKind::Event, "x@trade", |out| {
                    out.extend(std::iter::repeat_n(fill, len))
                });
            }
            ring.append(&batch);
            let stats = ring.stats();
            assert!(stats.used_bytes <= capacity as u64, "used {} bytes", stats.used_bytes);
            assert_eq!(stats.records, stats.next_seq - stats.oldest_seq);
            if round % 3 == 0 {
                let (records, lost) = read_all(&ring, &mut cursor);
                lost_total += lost;
                expected_next += lost;
                for (seq, line) in records {
                    assert_eq!(seq, expected_next, "records come in sequence");
                    assert!(line.iter().all(|&byte| byte == line.first().copied().unwrap_or(b'a')));
                    expected_next += 1;
                    seen += 1;
                }
            }
        }
        let stats = ring.stats();
        assert_eq!(stats.capacity_bytes, capacity as u64);
        assert!(stats.evicted_total > 0);
        let (records, lost) = read_all(&ring, &mut cursor);
        assert_eq!(seen + records.len() as u64 + lost_total + lost, stats.next_seq);
    }

    #[test]
    fn oversized_record_is_rejected() {
        let ring = Ring::new(64);
        let appended = ring.append(&batch_of(&[("s", &[b'x'; 40]), ("s", b"ok")]));
        assert_eq!(appended, 1);
        let stats = ring.stats();
        assert_eq!(stats.rejected_total, 1);
        assert_eq!(stats.records, 1);
        assert_eq!(ring.recent(None, 5)[0].line, b"ok");
    }

    #[test]
    fn read_with_visits_records_in_place() {
        let ring = Ring::new(300);
        let mut cursor = Cursor::default();
        for index in 0..8u8 {
            let line = [b'0' + index; 20];
            ring.append(&batch_of(&[("ab", &line)]));
        }
        let stats = ring.stats();
        let mut visited = Vec::new();
        let outcome = ring.read_with(&mut cursor, 60, |record| {
            visited.push((record.seq, record.stream.to_string(), record.line.to_vec()));
        });
        assert_eq!(outcome.lost, stats.oldest_seq);
        assert_eq!(outcome.records, 3, "reads stop once 60 bytes are visited");
        assert_eq!(visited.len(), 3);
        assert_eq!(visited[0].0, stats.oldest_seq);
        assert_eq!(visited[0].1, "ab");
        assert_eq!(visited[0].2, [b'0' + stats.oldest_seq as u8; 20]);
        let outcome = ring.read_with(&mut cursor, usize::MAX, |_| {});
        assert_eq!(outcome.lost, 0);
        assert_eq!(outcome.records as u64, stats.records - 3);
        assert_eq!(cursor.next_seq(), stats.next_seq);
    }

    #[test]
    fn lagging_reader_counts_lost_records() {
        let ring = Ring::new(200);
        let mut cursor = Cursor::default();
        ring.append(&batch_of(&[("s", b"0000000000")]));
        let (records, lost) = read_all(&ring, &mut cursor);
        assert_eq!((records.len(), lost), (1, 0));
        for _ in 0..10 {
            ring.append(&batch_of(&[("s", b"1111111111")]));
        }
        let stats = ring.stats();
        let (records, lost) = read_all(&ring, &mut cursor);
        assert_eq!(lost, stats.oldest_seq - 1);
        assert_eq!(records.len() as u64, stats.records);
        assert_eq!(records[0].0, stats.oldest_seq);
    }

    #[test]
    fn recent_filters_by_stream_and_limit() {
        let ring = Ring::new(1 << 16);
        for index in 0..3000u32 {
            let stream = if index % 3 == 0 { "a@trade" } else { "b@trade" };
            let line = index.to_string();
            ring.append(&batch_of(&[(stream, line.as_bytes())]));
        }
        let recent = ring.recent(Some("a@trade"), 5);
        let lines: Vec<&[u8]> = recent.iter().map(|record| record.line.as_slice()).collect();
        assert_eq!(lines, [b"2985".as_slice(), b"2988", b"2991", b"2994", b"2997"]);
        assert!(ring.recent(Some("c@trade"), 5).is_empty());
        assert_eq!(ring.recent(None, 0).len(), 0);
        let stats = ring.stats();
        let all = ring.recent(None, usize::MAX);
        assert_eq!(all.len() as u64, stats.records);
        assert_eq!(all.last().map(|record| record.seq), Some(2999));
    }

    #[test]
    fn recent_within_stops_at_byte_limit() {
        let ring = Ring::new(1 << 16);
        for index in 0..10u8 {
            ring.append(&batch_of(&[("a@trade", &[b'0' + index; 99])]));
        }
        let page = ring.recent_within(None, 5, 350);
        let seqs: Vec<u64> = page.records.iter().map(|record| record.seq).collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert_eq!(page.bytes, 300);
        assert!(page.truncated);

        let page = ring.recent_within(None, 3, 300);
        assert_eq!(page.records.len(), 3);
        assert!(!page.truncated, "the limit, not the bytes, ended the walk");

        let page = ring.recent_within(None, 5, 99);
        assert!(page.records.is_empty());
        assert!(page.truncated);
    }

    #[test]
    fn wait_wakes_on_append() {
        let ring = Arc::new(Ring::new(1024));
        let waiter = {
            let ring = ring.clone();
            std::thread::spawn(move || {
                let started = Instant::now();
                ring.wait(&Cursor::default(), Duration::from_secs(30));
                started.elapsed()
            })
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while ring.lock().waiters == 0 {
            assert!(Instant::now() < deadline, "waiter never blocked");
            std::thread::yield_now();
        }
        ring.append(&batch_of(&[("s", b"x")]));
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(10), "waited {waited:?}");
    }

    #[test]
    fn close_finishes_reader_after_drain() {
        let ring = Ring::new(1024);
        let mut cursor = Cursor::default();
        let mut out = RecordBatch::new();
        ring.append(&batch_of(&[("s", b"x")]));
        ring.close();
        ring.wait(&cursor, Duration::from_secs(5));
        let outcome = ring.read(&mut cursor, &mut out, 1 << 20);
        assert_eq!(out.len(), 1);
        assert!(outcome.finished);
        assert!(ring.is_closed());
    }
}
