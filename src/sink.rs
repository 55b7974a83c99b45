//! PLACEHOLDER until the data path lands.
use crate::metrics::Exposition;
/// PLACEHOLDER.
#[derive(Debug, Default)]
pub struct SinkStats;
impl SinkStats {
    /// PLACEHOLDER.
    pub fn write_metrics(&self, _out: &mut Exposition) {}
    /// PLACEHOLDER.
    pub fn healthy(&self) -> bool {
        true
    }
    /// PLACEHOLDER.
    pub fn last_error(&self) -> Option<String> {
        None
    }
}
use crate::liveness::Checkin;
use crate::ring::Ring;
use crate::venue::Venue;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
/// PLACEHOLDER.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Dir.
    pub data_dir: PathBuf,
    /// Instance.
    pub instance: String,
    /// Venue.
    pub venue: Venue,
    /// Flush.
    pub flush_interval: Duration,
}
/// PLACEHOLDER.
pub fn spawn(
    _settings: SinkSettings,
    _ring: Arc<Ring>,
    _stats: Arc<SinkStats>,
    _checkin: Checkin,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sink".into()).spawn(|| {})
}
