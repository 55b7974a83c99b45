//! Batches of received WebSocket data frames, handed from a reader thread to
//! the pipeline.
//!
//! One channel send per frame costs more CPU than the frame itself at
//! realistic rates, so a reader copies payloads into one growing buffer and
//! sends the whole batch at once. A batch belongs to exactly one connection.

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
}

impl FrameBatch {
    /// Creates an empty batch with room for `bytes` payload bytes.
    pub fn new(connection: ConnectionId, bytes: usize) -> FrameBatch {
        FrameBatch { connection, bytes: Vec::with_capacity(bytes), frames: Vec::new(), end: false }
    }

    /// Creates the empty batch a reader sends after the last frames of its
    /// connection. It travels on the same channel as those frames, so the
    /// pipeline sees it only after it has processed all of them.
    pub fn end_of(connection: ConnectionId) -> FrameBatch {
        FrameBatch { connection, bytes: Vec::new(), frames: Vec::new(), end: true }
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
}
