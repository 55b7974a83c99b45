//! Batches of received WebSocket data frames, handed from a reader thread to
//! the pipeline.
//!
//! One channel send per frame costs more CPU than the frame itself at
//! realistic rates, so a reader copies payloads into one growing buffer and
//! sends the whole batch at once. A batch belongs to exactly one connection.
//!
//! A reader takes its batches from a [`BatchPool`]. When the pipeline drops
//! a processed batch, its buffers go back to that pool instead of to the
//! allocator, so a steady stream costs no malloc, free or page fault per
//! batch. Dropping a batch never blocks: a full or closed pool frees it.
//!
//! [`FrameSender`] bounds the queue to the pipeline twice: by batch count
//! (the channel's capacity) and by the heap bytes of the queued batches. A
//! queued batch gives its bytes back when it is dropped, which the pipeline
//! thread does after processing it. Nothing here blocks except
//! [`FrameSender::send_timeout`], which waits at most its timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TrySendError};

/// Connection identifier, unique for the life of the process. Every new
/// socket gets a new id, also when it replaces an earlier one.
pub type ConnectionId = u64;

/// WebSocket message type of a data frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A text message: UTF-8, validated by tungstenite.
    Text,
    /// A binary message. Binance sends none on market-data streams, so the
    /// pipeline counts and skips it.
    Binary,
}

/// One frame borrowed from a batch.
#[derive(Clone, Copy, Debug)]
pub struct Frame<'a> {
    /// Receive time in nanoseconds since the Unix epoch.
    pub received_ns: u64,
    /// Text or binary.
    pub kind: FrameKind,
    /// Payload bytes, exactly as received.
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
struct FrameMeta {
    received_ns: u64,
    kind: FrameKind,
    end: usize,
}

/// Frames received on one connection, in arrival order.
#[derive(Debug)]
pub struct FrameBatch {
    connection: ConnectionId,
    bytes: Vec<u8>,
    frames: Vec<FrameMeta>,
    end: bool,
    /// Pool that gets the buffers back when the batch is dropped.
    recycle: Option<Sender<FrameBatch>>,
    /// Queue byte counter this batch was added to, with the bytes added.
    queued: Option<(Arc<QueueBytes>, u64)>,
}

impl FrameBatch {
    /// Creates an empty batch with room for `bytes` payload bytes.
    pub fn new(connection: ConnectionId, bytes: usize) -> FrameBatch {
        FrameBatch {
            connection,
            bytes: Vec::with_capacity(bytes),
            frames: Vec::new(),
            end: false,
            recycle: None,
            queued: None,
        }
    }

    /// Creates the empty batch a reader sends after the last frames of its
    /// connection. It travels on the same channel as those frames, so the
    /// pipeline sees it only after it has processed all of them.
    pub fn end_of(connection: ConnectionId) -> FrameBatch {
        FrameBatch {
            connection,
            bytes: Vec::new(),
            frames: Vec::new(),
            end: true,
            recycle: None,
            queued: None,
        }
    }

    /// Payload bytes the batch can take without reallocating.
    pub fn capacity_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// Whether this batch marks the end of its connection.
    pub fn is_end(&self) -> bool {
        self.end
    }

    /// Connection the frames arrived on.
    pub fn connection(&self) -> ConnectionId {
        self.connection
    }

    /// Appends a copy of `payload`.
    pub fn push(&mut self, kind: FrameKind, received_ns: u64, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.frames.push(FrameMeta { received_ns, kind, end: self.bytes.len() });
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether the batch holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Total payload bytes.
    pub fn payload_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Heap bytes the batch holds: the capacity of its payload buffer and of
    /// its frame list, which may exceed the payload after growth.
    pub fn heap_bytes(&self) -> u64 {
        (self.bytes.capacity() + self.frames.capacity() * std::mem::size_of::<FrameMeta>()) as u64
    }

    /// Gives the batch's bytes back to the queue counter it was added to.
    fn release(&mut self) {
        if let Some((counter, bytes)) = self.queued.take() {
            counter.used.fetch_sub(bytes, Ordering::AcqRel);
        }
    }

    /// Iterates over the frames in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = Frame<'_>> + '_ {
        let mut start = 0;
        self.frames.iter().map(move |meta| {
            let payload = &self.bytes[start..meta.end];
            start = meta.end;
            Frame { received_ns: meta.received_ns, kind: meta.kind, payload }
        })
    }
}

impl Drop for FrameBatch {
    fn drop(&mut self) {
        // The queue's byte counter is given back first, so a batch in the
        // pool never counts as queued.
        self.release();
        let Some(recycle) = self.recycle.take() else { return };
        let mut bytes = std::mem::take(&mut self.bytes);
        let mut frames = std::mem::take(&mut self.frames);
        bytes.clear();
        frames.clear();
        let spare = FrameBatch {
            connection: self.connection,
            bytes,
            frames,
            end: false,
            recycle: None,
            queued: None,
        };
        // A full pool, or one whose reader has ended, frees the buffers.
        let _ = recycle.try_send(spare);
    }
}

/// Spare batch buffers of one reader. Batches taken from it return their
/// buffers to it when dropped, on whichever thread drops them.
#[derive(Debug)]
pub struct BatchPool {
    connection: ConnectionId,
    batch_bytes: usize,
    spare_tx: Sender<FrameBatch>,
    spare_rx: Receiver<FrameBatch>,
}

impl BatchPool {
    /// Creates a pool for `connection` that keeps at most `spares` idle
    /// batches. New batches get room for `batch_bytes` payload bytes.
    pub fn new(connection: ConnectionId, batch_bytes: usize, spares: usize) -> BatchPool {
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(spares);
        BatchPool { connection, batch_bytes, spare_tx, spare_rx }
    }

    /// Returns an empty batch: a spare one when there is one, else a new
    /// one. Spares that grew past twice the batch size (a reader keeps
    /// frames while the pipeline queue is full) are freed, not reused, so
    /// an idle pool keeps at most `spares` × 2 × `batch_bytes` bytes.
    pub fn take(&self) -> FrameBatch {
        let mut batch = loop {
            match self.spare_rx.try_recv() {
                Ok(spare) if spare.bytes.capacity() <= self.batch_bytes.saturating_mul(2) => {
                    break spare;
                }
                Ok(_oversized) => {}
                Err(_) => break FrameBatch::new(self.connection, self.batch_bytes),
            }
        };
        batch.recycle = Some(self.spare_tx.clone());
        batch
    }
}

/// Heap bytes of the batches in one frame queue, shared by its senders and
/// the batches in it.
#[derive(Debug)]
pub struct QueueBytes {
    used: AtomicU64,
    limit: u64,
}

impl QueueBytes {
    /// Bytes of the batches queued or being processed now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// Configured ceiling in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Adds `bytes` unless that would pass the limit. An empty queue takes
    /// any one batch, so a batch larger than the limit is not stuck forever.
    /// The used bytes are thus at most the larger of the limit and one batch.
    fn reserve(&self, bytes: u64) -> bool {
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if used != 0 && used.saturating_add(bytes) > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }
}

/// Sending side of the frame queue to the pipeline, bounded by batch count
/// and by bytes.
#[derive(Clone, Debug)]
pub struct FrameSender {
    channel: Sender<FrameBatch>,
    bytes: Arc<QueueBytes>,
}

/// How often [`FrameSender::send_timeout`] checks for room when the byte
/// limit, not the batch count, keeps a batch out.
const BYTES_POLL: Duration = Duration::from_millis(5);

impl FrameSender {
    /// Wraps `channel` with a limit of `limit_bytes` on the heap bytes of
    /// the batches in it, and in the pipeline's hands until it drops them.
    pub fn new(channel: Sender<FrameBatch>, limit_bytes: u64) -> FrameSender {
        let bytes = Arc::new(QueueBytes { used: AtomicU64::new(0), limit: limit_bytes });
        FrameSender { channel, bytes }
    }

    /// Byte counter of the queue, for metrics.
    pub fn bytes(&self) -> Arc<QueueBytes> {
        self.bytes.clone()
    }

    /// Queues `batch` without blocking. Returns it as
    /// [`TrySendError::Full`] when the queue contains its maximum number of
    /// batches or the batch would pass the byte limit.
    pub fn try_send(&self, mut batch: FrameBatch) -> Result<(), TrySendError<FrameBatch>> {
        let size = batch.heap_bytes();
        if !self.bytes.reserve(size) {
            return Err(TrySendError::Full(batch));
        }
        batch.queued = Some((self.bytes.clone(), size));
        self.channel.try_send(batch).map_err(|error| match error {
            TrySendError::Full(mut batch) => {
                batch.release();
                TrySendError::Full(batch)
            }
            TrySendError::Disconnected(mut batch) => {
                batch.release();
                TrySendError::Disconnected(batch)
            }
        })
    }

    /// Queues `batch`, waiting up to `timeout` for room.
    pub fn send_timeout(
        &self,
        batch: FrameBatch,
        timeout: Duration,
    ) -> Result<(), SendTimeoutError<FrameBatch>> {
        let deadline = Instant::now() + timeout;
        let mut batch = batch;
        loop {
            match self.try_send(batch) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(back)) => {
                    return Err(SendTimeoutError::Disconnected(back));
                }
                Err(TrySendError::Full(back)) => batch = back,
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(SendTimeoutError::Timeout(batch));
            }
            std::thread::sleep(BYTES_POLL.min(deadline - now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_keeps_frames_in_order() {
        let mut batch = FrameBatch::new(7, 64);
        batch.push(FrameKind::Text, 1, b"{\"a\":1}");
        batch.push(FrameKind::Binary, 2, b"");
        batch.push(FrameKind::Text, 3, b"xyz");

        let frames: Vec<_> = batch.iter().collect();
        assert_eq!(batch.connection(), 7);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0].payload, b"{\"a\":1}");
        assert_eq!(frames[1].kind, FrameKind::Binary);
        assert!(frames[1].payload.is_empty());
        assert_eq!(frames[2].payload, b"xyz");
        assert_eq!(frames[2].received_ns, 3);
        assert_eq!(batch.payload_bytes(), 10);
    }

    #[test]
    fn dropped_batch_returns_to_pool() {
        let pool = BatchPool::new(3, 1024, 2);
        let mut batch = pool.take();
        batch.push(FrameKind::Text, 1, b"abc");
        let buffer = batch.bytes.as_ptr();
        drop(batch);

        let reused = pool.take();
        assert!(reused.is_empty());
        assert_eq!(reused.payload_bytes(), 0);
        assert_eq!(reused.connection(), 3);
        assert_eq!(reused.bytes.as_ptr(), buffer, "the spare buffer is reused");
    }

    #[test]
    fn pool_frees_oversized_spares() {
        let pool = BatchPool::new(1, 16, 2);
        let mut batch = pool.take();
        batch.push(FrameKind::Text, 1, &[b'x'; 100]);
        drop(batch);

        let fresh = pool.take();
        assert_eq!(fresh.capacity_bytes(), 16);
    }

    fn batch_of(bytes: usize) -> FrameBatch {
        let mut batch = FrameBatch::new(1, bytes);
        batch.push(FrameKind::Text, 1, &vec![b'x'; bytes]);
        batch
    }

    #[test]
    fn queue_rejects_batches_past_byte_limit() {
        let (sender, receiver) = crossbeam_channel::bounded(16);
        let frames = FrameSender::new(sender, 1000);
        let first = batch_of(600);
        let first_bytes = first.heap_bytes();
        assert!(frames.try_send(first).is_ok());
        assert_eq!(frames.bytes().used(), first_bytes);
        match frames.try_send(batch_of(600)) {
            Err(TrySendError::Full(batch)) => assert_eq!(batch.payload_bytes(), 600),
            other => panic!("expected a full queue, got {other:?}"),
        }
        assert_eq!(frames.bytes().used(), first_bytes, "a rejected batch adds nothing");
        assert_eq!(receiver.len(), 1);

        drop(receiver.try_recv());
        assert_eq!(frames.bytes().used(), 0, "a dropped batch gives its bytes back");
        assert!(frames.try_send(batch_of(600)).is_ok());
    }

    #[test]
    fn empty_queue_takes_oversized_batch() {
        let (sender, receiver) = crossbeam_channel::bounded(16);
        let frames = FrameSender::new(sender, 100);
        assert!(frames.try_send(batch_of(500)).is_ok());
        assert!(matches!(frames.try_send(batch_of(10)), Err(TrySendError::Full(_))));
        drop(receiver.try_recv());
        assert!(frames.try_send(batch_of(10)).is_ok());
    }

    #[test]
    fn full_channel_gives_bytes_back() {
        let (sender, _receiver) = crossbeam_channel::bounded(1);
        let frames = FrameSender::new(sender, 1 << 20);
        assert!(frames.try_send(batch_of(10)).is_ok());
        let used = frames.bytes().used();
        assert!(matches!(frames.try_send(batch_of(10)), Err(TrySendError::Full(_))));
        assert_eq!(frames.bytes().used(), used);
    }

    #[test]
    fn send_timeout_waits_for_bytes() {
        let (sender, receiver) = crossbeam_channel::bounded(16);
        let frames = FrameSender::new(sender, 1000);
        assert!(frames.try_send(batch_of(600)).is_ok());
        let started = Instant::now();
        let result = frames.send_timeout(batch_of(600), Duration::from_millis(50));
        assert!(matches!(result, Err(SendTimeoutError::Timeout(_))));
        assert!(started.elapsed() >= Duration::from_millis(50));

        let consumer = std::thread::spawn(move || {
            let batch = receiver.recv_timeout(Duration::from_secs(5));
            drop(batch);
            receiver
        });
        let result = frames.send_timeout(batch_of(600), Duration::from_secs(5));
        assert!(result.is_ok());
        drop(consumer.join());
    }
}
