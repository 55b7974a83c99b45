//! Prometheus text exposition (format 0.0.4) and the counters shared by
//! several threads.
//!
//! Each component keeps its own statistics in atomics and writes them through
//! [`Exposition`], so the HTTP thread renders `/metrics` without taking any
//! lock that the ingest path holds for long.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Prefix of every metric this service defines.
pub const PREFIX: &str = "binance_ingest_";

/// Builder of one `/metrics` response body.
///
/// Families must be declared once each, with [`Exposition::family`], before
/// their samples. Label values are escaped here, so callers may pass stream
/// names and error texts as they are.
#[derive(Debug, Default)]
pub struct Exposition {
    body: String,
}

/// Prometheus metric type of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    /// Monotonic counter; the name must end in `_total`.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Cumulative histogram with `_bucket`, `_sum` and `_count` samples.
    Histogram,
}

impl MetricType {
    fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
        }
    }
}

impl Exposition {
    /// Creates an empty body.
    pub fn new() -> Exposition {
        Exposition::default()
    }

    /// Writes the `# HELP` and `# TYPE` lines of a family.
    pub fn family(&mut self, name: &str, kind: MetricType, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.body, "# HELP {name} {help}");
        let _ = writeln!(self.body, "# TYPE {name} {}", kind.as_str());
    }

    /// Writes one sample with integer value.
    pub fn sample_u64(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.write_name_and_labels(name, labels);
        let _ = writeln!(self.body, " {value}");
    }

    /// Writes one sample with floating-point value. NaN and infinities are
    /// written in the spellings Prometheus accepts.
    pub fn sample_f64(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.write_name_and_labels(name, labels);
        if value.is_nan() {
            self.body.push_str(" NaN\n");
        } else if value.is_infinite() {
            self.body.push_str(if value > 0.0 { " +Inf\n" } else { " -Inf\n" });
        } else {
            let _ = writeln!(self.body, " {value}");
        }
    }

    /// Declares a family and writes its single unlabelled sample.
    pub fn single_u64(&mut self, name: &str, kind: MetricType, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample_u64(name, &[], value);
    }

    /// Declares a family and writes its single unlabelled sample.
    pub fn single_f64(&mut self, name: &str, kind: MetricType, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample_f64(name, &[], value);
    }

    /// Returns the finished body.
    pub fn finish(self) -> String {
        self.body
    }

    fn write_name_and_labels(&mut self, name: &str, labels: &[(&str, &str)]) {
        self.body.push_str(name);
        if labels.is_empty() {
            return;
        }
        self.body.push('{');
        for (index, (key, value)) in labels.iter().enumerate() {
            if index > 0 {
                self.body.push(',');
            }
            self.body.push_str(key);
            self.body.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => self.body.push_str("\\\\"),
                    '"' => self.body.push_str("\\\""),
                    '\n' => self.body.push_str("\\n"),
                    other => self.body.push(other),
                }
            }
            self.body.push('"');
        }
        self.body.push('}');
    }
}

/// A counter or gauge that any thread may update without a lock.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Creates a counter at zero.
    pub const fn new() -> Counter {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtracts `n` in one atomic step, stopping at zero, for gauges that
    /// several threads raise and lower.
    pub fn sub(&self, n: u64) {
        // The closure always returns Some, so fetch_update cannot fail.
        let _ = self.0.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
            Some(value.saturating_sub(n))
        });
    }

    /// Sets the value, for gauges.
    pub fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauge_add_and_sub_race_to_zero() {
        let gauge = std::sync::Arc::new(Counter::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let gauge = gauge.clone();
                std::thread::spawn(move || {
                    for _ in 0..50_000 {
                        gauge.add(1);
                        gauge.sub(1);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("worker thread");
        }
        assert_eq!(gauge.get(), 0);
        gauge.sub(1);
        assert_eq!(gauge.get(), 0, "saturates at zero");
    }

    #[test]
    fn exposition_escapes_label_values() {
        let mut out = Exposition::new();
        out.family("binance_ingest_x_total", MetricType::Counter, "Things.");
        out.sample_u64("binance_ingest_x_total", &[("stream", "a\"b\\c\nd")], 3);
        let body = out.finish();
        assert!(body.contains("# TYPE binance_ingest_x_total counter\n"));
        assert!(body.contains("binance_ingest_x_total{stream=\"a\\\"b\\\\c\\nd\"} 3\n"));
    }

    #[test]
    fn exposition_writes_special_floats() {
        let mut out = Exposition::new();
        out.sample_f64("g", &[], f64::NAN);
        out.sample_f64("g", &[], f64::INFINITY);
        out.sample_f64("g", &[], 0.25);
        assert_eq!(out.finish(), "g NaN\ng +Inf\ng 0.25\n");
    }
}
