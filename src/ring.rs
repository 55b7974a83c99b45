//! PLACEHOLDER until the data path lands.
/// PLACEHOLDER.
#[derive(Debug)]
pub struct Ring;
/// PLACEHOLDER.
#[derive(Debug)]
pub struct RecentRecord {
    /// Sequence number.
    pub seq: u64,
    /// JSON line.
    pub line: Vec<u8>,
}
impl Ring {
    /// PLACEHOLDER.
    pub fn recent(&self, _stream: Option<&str>, _limit: usize) -> Vec<RecentRecord> {
        Vec::new()
    }
}
impl Ring {
    /// PLACEHOLDER.
    pub fn new(_capacity: usize) -> Ring {
        Ring
    }
    /// PLACEHOLDER.
    pub fn close(&self) {}
    /// PLACEHOLDER.
    pub fn write_metrics(&self, _out: &mut crate::metrics::Exposition) {}
}
