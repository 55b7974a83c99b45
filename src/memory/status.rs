//! Shared memory figures and alert state: written by the memory sampler
//! thread, read by the HTTP threads for `/metrics`, `/livez` and `/readyz`.
//!
//! Atomics only, so a reader never waits for the sampler and the sampler
//! never waits for a reader. Every figure has a value from the start (zero
//! before the first sample), never NaN.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::health::{Check, Status};
use crate::metrics::{Counter, Exposition, MetricType, PREFIX};

use super::budget::format_size_rounded;

/// Kind of memory alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// Growth projected over 24 h above `MEMORY_LEAK_THRESHOLD`.
    Leak,
    /// RSS at or above `MEMORY_WARN`.
    RssWarn,
    /// RSS at or above `MEMORY_CRITICAL`.
    RssCritical,
}

impl AlertKind {
    /// Every kind, in the order metrics list them.
    pub const ALL: [AlertKind; 3] = [AlertKind::Leak, AlertKind::RssWarn, AlertKind::RssCritical];

    /// Label value in metrics and name in logs.
    pub fn name(self) -> &'static str {
        match self {
            AlertKind::Leak => "leak",
            AlertKind::RssWarn => "rss_warn",
            AlertKind::RssCritical => "rss_critical",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Latest memory figures and alerts.
#[derive(Debug, Default)]
pub struct MemoryStatus {
    /// Samples taken since start.
    pub samples: Counter,
    /// Latest `VmRSS`, in bytes.
    pub resident_bytes: Counter,
    /// Latest `VmHWM`, in bytes.
    pub resident_peak_bytes: Counter,
    /// Latest thread count.
    pub threads: Counter,
    /// Latest open file descriptor count.
    pub open_fds: Counter,
    /// Bytes of the cache ring made resident so far.
    pub ring_touched_bytes: Counter,
    /// Worst-case budget from the configuration, in bytes.
    pub budget_bytes: Counter,
    /// `MEMORY_WARN`, in bytes; 0 until the sampler is created.
    warn_bytes: Counter,
    /// `MEMORY_CRITICAL`, in bytes; 0 until the sampler is created.
    critical_bytes: Counter,
    /// `MEMORY_LEAK_THRESHOLD`, projected growth per 24 h in bytes; 0 until
    /// the sampler is created.
    leak_threshold_bytes: Counter,
    growth_bits: AtomicU64,
    detection_active: AtomicBool,
    warmed_up: AtomicBool,
    active: [AtomicBool; 3],
    raised: [Counter; 3],
}

impl MemoryStatus {
    /// Creates a status with every figure at zero and no alert.
    pub fn new() -> MemoryStatus {
        MemoryStatus::default()
    }

    /// Stores the configured levels for `/metrics`, so alert rules compare
    /// against the levels the service uses. `warn` and `critical` are RSS
    /// in bytes, and `leak_threshold` is growth in bytes per 24 h.
    pub fn set_levels(&self, warn: u64, critical: u64, leak_threshold: u64) {
        self.warn_bytes.set(warn);
        self.critical_bytes.set(critical);
        self.leak_threshold_bytes.set(leak_threshold);
    }

    /// Latest growth estimate in bytes per hour; 0 until leak detection has
    /// enough samples.
    pub fn growth_per_hour(&self) -> f64 {
        f64::from_bits(self.growth_bits.load(Ordering::Relaxed))
    }

    /// Stores the growth estimate and whether it rests on enough samples.
    /// A non-finite value is stored as 0.
    pub fn set_growth(&self, bytes_per_hour: f64, active: bool) {
        let value = if bytes_per_hour.is_finite() { bytes_per_hour } else { 0.0 };
        self.growth_bits.store(value.to_bits(), Ordering::Relaxed);
        self.detection_active.store(active, Ordering::Relaxed);
    }

    /// Whether the growth estimate rests on enough post-warm-up samples.
    pub fn detection_active(&self) -> bool {
        self.detection_active.load(Ordering::Relaxed)
    }

    /// Marks the end of warm-up.
    pub fn set_warmed_up(&self) {
        self.warmed_up.store(true, Ordering::Relaxed);
    }

    /// Whether warm-up has ended.
    pub fn warmed_up(&self) -> bool {
        self.warmed_up.load(Ordering::Relaxed)
    }

    /// Sets whether alert `kind` is active, and returns true when it has
    /// just become active; that transition counts once in the alerts counter.
    pub fn set_alert(&self, kind: AlertKind, active: bool) -> bool {
        let was = self.active[kind.index()].swap(active, Ordering::Relaxed);
        if active && !was {
            self.raised[kind.index()].inc();
            return true;
        }
        false
    }

    /// Whether alert `kind` is active.
    pub fn alert(&self, kind: AlertKind) -> bool {
        self.active[kind.index()].load(Ordering::Relaxed)
    }

    /// Times alert `kind` has become active since start.
    pub fn alerts_raised(&self, kind: AlertKind) -> u64 {
        self.raised[kind.index()].get()
    }

    /// Health check named `memory`: `warn` while any alert is active, which
    /// keeps HTTP 200, else `pass`. The observed value is RSS in bytes.
    pub fn health_check(&self) -> Check {
        let active: Vec<&str> = AlertKind::ALL
            .iter()
            .filter(|kind| self.alert(**kind))
            .map(|kind| kind.name())
            .collect();
        let resident = self.resident_bytes.get();
        let (status, output) = if active.is_empty() {
            (Status::Pass, String::new())
        } else {
            let output = format!(
                "memory alert {}: rss {}, growth {}/h",
                active.join(", "),
                format_size_rounded(resident),
                format_size_rounded(self.growth_per_hour().max(0.0) as u64)
            );
            (Status::Warn, output)
        };
        Check {
            name: "memory".into(),
            status,
            output,
            observed: Some(resident as f64),
            unit: Some("bytes"),
        }
    }

    /// Writes the memory metric families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        out.single_f64(
            &format!("{PREFIX}memory_growth_bytes_per_hour"),
            MetricType::Gauge,
            "Estimated RSS growth after warm-up, cache ring fill excluded; 0 until estimated.",
            self.growth_per_hour(),
        );
        out.single_u64(
            &format!("{PREFIX}memory_leak_detection_active"),
            MetricType::Gauge,
            "1 once warm-up has ended and the sample window is long enough for a growth estimate.",
            u64::from(self.detection_active()),
        );
        let alert = format!("{PREFIX}memory_alert");
        out.family(&alert, MetricType::Gauge, "1 while the memory alert of this kind is active.");
        for kind in AlertKind::ALL {
            out.sample_u64(&alert, &[("kind", kind.name())], u64::from(self.alert(kind)));
        }
        let raised = format!("{PREFIX}memory_alerts_total");
        out.family(&raised, MetricType::Counter, "Memory alerts raised, by kind.");
        for kind in AlertKind::ALL {
            out.sample_u64(&raised, &[("kind", kind.name())], self.alerts_raised(kind));
        }
        let gauges = [
            (
                "memory_resident_peak_bytes",
                "Peak resident set size (VmHWM).",
                &self.resident_peak_bytes,
            ),
            (
                "memory_ring_touched_bytes",
                "Bytes of the cache ring made resident so far.",
                &self.ring_touched_bytes,
            ),
            (
                "memory_budget_bytes",
                "Worst-case memory budget computed from the configured limits.",
                &self.budget_bytes,
            ),
            (
                "memory_warn_bytes",
                "RSS that raises the rss_warn alert (MEMORY_WARN).",
                &self.warn_bytes,
            ),
            (
                "memory_critical_bytes",
                "RSS that raises the rss_critical alert (MEMORY_CRITICAL).",
                &self.critical_bytes,
            ),
            (
                "memory_leak_threshold_bytes",
                "Projected RSS growth over 24 h that counts as a leak (MEMORY_LEAK_THRESHOLD).",
                &self.leak_threshold_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            out.single_u64(&format!("{PREFIX}{name}"), MetricType::Gauge, help, value.get());
        }
        out.single_u64(
            &format!("{PREFIX}memory_samples_total"),
            MetricType::Counter,
            "Memory samples taken by the sampler thread.",
            self.samples.get(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_counts_once_per_rise() {
        let status = MemoryStatus::new();
        assert!(status.set_alert(AlertKind::Leak, true));
        assert!(!status.set_alert(AlertKind::Leak, true));
        assert!(!status.set_alert(AlertKind::Leak, false));
        assert!(status.set_alert(AlertKind::Leak, true));
        assert_eq!(status.alerts_raised(AlertKind::Leak), 2);
        assert_eq!(status.alerts_raised(AlertKind::RssWarn), 0);
    }

    #[test]
    fn health_warns_while_an_alert_is_active() {
        let status = MemoryStatus::new();
        status.resident_bytes.set(300 << 20);
        assert_eq!(status.health_check().status, Status::Pass);
        status.set_alert(AlertKind::RssWarn, true);
        let check = status.health_check();
        assert_eq!(check.status, Status::Warn);
        assert!(check.output.contains("rss_warn"), "{}", check.output);
        assert!(check.output.contains("300.0 MiB"), "{}", check.output);
    }

    #[test]
    fn growth_is_never_nan() {
        let status = MemoryStatus::new();
        status.set_growth(f64::NAN, true);
        assert_eq!(status.growth_per_hour(), 0.0);
        let mut out = Exposition::new();
        status.write_metrics(&mut out);
        let body = out.finish();
        assert!(!body.contains("NaN"), "{body}");
        assert!(body.contains("binance_ingest_memory_alert{kind=\"rss_critical\"} 0\n"), "{body}");
    }

    #[test]
    fn levels_are_exported() {
        let status = MemoryStatus::new();
        status.set_levels(1 << 30, 2 << 30, 50 << 20);
        let mut out = Exposition::new();
        status.write_metrics(&mut out);
        let body = out.finish();
        assert!(body.contains("\nbinance_ingest_memory_warn_bytes 1073741824\n"), "{body}");
        assert!(body.contains("\nbinance_ingest_memory_critical_bytes 2147483648\n"), "{body}");
        assert!(body.contains("\nbinance_ingest_memory_leak_threshold_bytes 52428800\n"), "{body}");
    }
}
