//! Memory: the worst-case budget computed from the configured limits, the
//! sampler thread that measures the process, leak detection, and the
//! alerts raised from them.
//!
//! The budget runs on the main thread at start-up. The sampler runs on its
//! own thread, `memory-sampler`, and shares its figures with the HTTP
//! threads through [`MemoryStatus`], which holds atomics only. Nothing here
//! ever blocks the ingest path: the sampler takes the ring's lock once per
//! sample to read its statistics, and nothing else.

mod budget;
pub mod leak;
mod sampler;
mod status;
mod window;

use std::time::Duration;

pub use budget::{
    Budget, BudgetItem, FIXED_BASE_BYTES, FIXED_THREADS, HOLD_FACTOR, batch_bytes,
    format_size_rounded, level_warnings, round_up_mib,
};
pub use sampler::{MemorySettings, Sampler, read_sample, spawn};
pub use status::{AlertKind, MemoryStatus};
pub use window::SampleWindow;

/// Most samples a window may keep: 100,000 (about 6 MiB). Sized so that the
/// default window, 24 h at 30 s (2,880 samples), fits with a wide margin.
pub const MAX_WINDOW_SAMPLES: usize = 100_000;

/// Exit status of a shutdown at the critical memory level: 75, `EX_TEMPFAIL`
/// in sysexits.h, meaning "try again later". The systemd unit restarts on it.
pub const EXIT_MEMORY_CRITICAL: u8 = 75;

/// One reading of the process's memory figures.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// Time since the sampler started, in seconds.
    pub at_seconds: f64,
    /// Resident set size (`VmRSS` of `/proc/self/status`), in bytes.
    pub resident_bytes: u64,
    /// Peak resident set size (`VmHWM`), in bytes.
    pub resident_peak_bytes: u64,
    /// Virtual memory size (first field of `/proc/self/statm`), in bytes.
    pub virtual_bytes: u64,
    /// Threads of the process (`Threads`).
    pub threads: u32,
    /// Open file descriptors (entries of `/proc/self/fd`).
    pub open_fds: u32,
    /// Bytes of the cache ring made resident so far. The ring is allocated
    /// zeroed, so its pages become resident only as records first reach
    /// them; this part of RSS growth is expected and is not a leak.
    pub ring_touched_bytes: u64,
}

impl Sample {
    /// Resident bytes that leak detection fits: RSS without the part of
    /// the ring touched so far.
    pub fn fitted_bytes(&self) -> f64 {
        self.resident_bytes.saturating_sub(self.ring_touched_bytes) as f64
    }
}

/// Number of samples a window of `window` keeps at one sample per
/// `interval`, plus one so that the window spans its full duration.
pub fn window_samples(window: Duration, interval: Duration) -> usize {
    let interval = interval.as_nanos().max(1);
    usize::try_from(window.as_nanos() / interval).unwrap_or(usize::MAX).saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_window_keeps_a_day() {
        assert_eq!(window_samples(Duration::from_secs(86_400), Duration::from_secs(30)), 2881);
        assert_eq!(window_samples(Duration::from_secs(1), Duration::from_secs(2)), 1);
    }
}
