//! PLACEHOLDER until the data path lands.
use crate::frame::ConnectionId;
/// Notice from the pipeline to the scheduler.
#[derive(Debug)]
pub enum Notice {
    /// A `serverShutdown` event arrived on the connection.
    ServerShutdown {
        /// Connection it arrived on.
        connection: ConnectionId,
    },
}
use crate::metrics::Exposition;
/// PLACEHOLDER.
#[derive(Debug, Default)]
pub struct PipelineStats;
impl PipelineStats {
    /// PLACEHOLDER.
    pub fn write_metrics(&self, _out: &mut Exposition) {}
    /// PLACEHOLDER.
    pub fn stream_last_event(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}
use crate::frame::FrameBatch;
use crate::liveness::Checkin;
use crate::ring::Ring;
use crate::venue::Venue;
use std::sync::Arc;
/// PLACEHOLDER.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Venue.
    pub venue: Venue,
    /// Window.
    pub dedup_window: usize,
    /// Streams.
    pub max_streams: usize,
}
/// PLACEHOLDER.
pub fn spawn(
    _settings: PipelineSettings,
    frames: crossbeam_channel::Receiver<FrameBatch>,
    ring: Arc<Ring>,
    _stats: Arc<PipelineStats>,
    _notices: crossbeam_channel::Sender<Notice>,
    checkin: Checkin,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("pipeline".into()).spawn(move || {
        while frames.recv().is_ok() {
            checkin.beat();
        }
        ring.close();
    })
}
