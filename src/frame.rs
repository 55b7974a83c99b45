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

use crossbeam_channel::{Receiver, Sender};

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
        }
    }

    /// Creates the empty batch a reader sends after the last frames of its
    /// connection. It travels on the same channel as those frames, so the
    /// pipeline sees it only after it has processed all of them.
    pub fn end_of(connection: ConnectionId) -> FrameBatch {
        FrameBatch { connection, bytes: Vec::new(), frames: Vec::new(), end: true, recycle: None }
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
        let Some(recycle) = self.recycle.take() else { return };
        let mut bytes = std::mem::take(&mut self.bytes);
        let mut frames = std::mem::take(&mut self.frames);
        bytes.clear();
        frames.clear();
        let spare =
            FrameBatch { connection: self.connection, bytes, frames, end: false, recycle: None };
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
}
