//! The standard `process_*` metrics, read from `/proc/self` (Linux).
//!
//! Values that cannot be read (another OS, a restricted `/proc`) are left
//! out of the output rather than reported as zero.

use std::fs;

use crate::metrics::{Exposition, MetricType};

/// Clock ticks per second of the times in `/proc/<pid>/stat`. The kernel
/// reports them in USER_HZ, which is 100 on every mainstream Linux
/// architecture, independent of the kernel's internal tick rate.
const USER_HZ: f64 = 100.0;

/// Figures of this process at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProcessSample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes (`VmRSS`).
    pub resident_bytes: Option<u64>,
    /// Peak resident set size, in bytes (`VmHWM`).
    pub resident_peak_bytes: Option<u64>,
    /// Virtual memory size, in bytes (`VmSize`).
    pub virtual_bytes: Option<u64>,
    /// Number of threads.
    pub threads: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// Soft limit of open file descriptors.
    pub max_fds: Option<u64>,
    /// Start time, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessSample {
    /// Reads the current figures.
    pub fn read() -> ProcessSample {
        let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let (cpu_seconds, start_ticks) = parse_stat(&stat);
        let boot_time =
            fs::read_to_string("/proc/stat").ok().and_then(|text| parse_boot_time(&text));
        ProcessSample {
            cpu_seconds,
            resident_bytes: status_kib(&status, "VmRSS:").map(|kib| kib * 1024),
            resident_peak_bytes: status_kib(&status, "VmHWM:").map(|kib| kib * 1024),
            virtual_bytes: status_kib(&status, "VmSize:").map(|kib| kib * 1024),
            threads: status_kib(&status, "Threads:"),
            open_fds: fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64),
            max_fds: fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| parse_max_fds(&text)),
            start_time_seconds: match (boot_time, start_ticks) {
                (Some(boot), Some(ticks)) => Some(boot as f64 + ticks as f64 / USER_HZ),
                _ => None,
            },
        }
    }

    /// Writes the standard process metric families.
    pub fn write_metrics(&self, out: &mut Exposition) {
        let gauges: [(&str, &str, Option<f64>); 5] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                self.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                self.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                self.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                self.max_fds.map(|v| v as f64),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            if let Some(value) = value {
                out.single_f64(name, MetricType::Gauge, help, value);
            }
        }
        if let Some(cpu) = self.cpu_seconds {
            out.single_f64(
                "process_cpu_seconds_total",
                MetricType::Counter,
                "Total user and system CPU time spent in seconds.",
                cpu,
            );
        }
        if let Some(threads) = self.threads {
            out.single_u64(
                &format!("{}threads", crate::metrics::PREFIX),
                MetricType::Gauge,
                "Threads of the process.",
                threads,
            );
        }
    }
}

/// Returns CPU seconds and the start time in ticks since boot from the text
/// of `/proc/self/stat`. The command name may contain spaces and
/// parentheses, so fields are counted from the last `)`.
fn parse_stat(text: &str) -> (Option<f64>, Option<u64>) {
    let Some(after_name) = text.rfind(')').map(|index| &text[index + 1..]) else {
        return (None, None);
    };
    // Fields after the name start at field 3 (state); utime is 14, stime 15
    // and starttime 22, counting from 1.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let number = |field: usize| fields.get(field - 3).and_then(|value| value.parse::<u64>().ok());
    let cpu = match (number(14), number(15)) {
        (Some(user), Some(system)) => Some((user + system) as f64 / USER_HZ),
        _ => None,
    };
    (cpu, number(22))
}

fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Returns the number of a `Key:   123 kB` line of `/proc/self/status`.
fn status_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn parse_max_fds(text: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_survives_odd_command_names() {
        let mut fields = vec!["0"; 50];
        fields[0] = "S";
        fields[11] = "250"; // utime, field 14
        fields[12] = "50"; // stime, field 15
        fields[19] = "12345"; // starttime, field 22
        let text = format!("42 (my (odd) name) {}", fields.join(" "));
        let (cpu, start) = parse_stat(&text);
        assert_eq!(cpu, Some(3.0));
        assert_eq!(start, Some(12345));
    }

    #[test]
    fn status_and_limits_are_parsed() {
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t7\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "Threads:"), Some(7));
        let limits = "Limit  Soft Limit  Hard Limit  Units\nMax open files  1024  4096  files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
        assert_eq!(parse_boot_time("cpu 1 2\nbtime 1700000000\n"), Some(1_700_000_000));
    }

    #[test]
    fn own_process_is_readable() {
        let sample = ProcessSample::read();
        assert!(sample.resident_bytes.unwrap() > 0);
        assert!(sample.threads.unwrap() >= 1);
        assert!(sample.open_fds.unwrap() >= 3);
        assert!(sample.start_time_seconds.unwrap() > 1_600_000_000.0);
    }
}
