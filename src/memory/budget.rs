//! The worst-case memory budget: an upper estimate of resident memory
//! computed from the configured limits alone.
//!
//! Runs on the main thread, in `Config::validate`, `check-config` and the
//! start-up log. It only computes; it never allocates beyond its own table
//! and never reads `/proc`. Each line names the keys that bound it, so an
//! operator whose budget exceeds `MEMORY_LIMIT` finds the keys to lower.
//!
//! The figures assume every queue and buffer is full at the same moment,
//! which is more than any real load reaches, but a few terms are estimates
//! of library internals (tungstenite, rustls, hash tables) and are marked
//! as such below.

use std::fmt::Write as _;

use crate::config::{Config, format_size};
use crate::http::{RECENT_MAX, RECENT_MAX_BYTES};
use crate::plan::plan_connections;
use crate::sink::READ_CHUNK_BYTES;

/// Factor by which a reader's held batch may exceed `BATCH_SIZE` while the
/// frame queue is full, before the reader drops it (see `reader.rs`).
pub const HOLD_FACTOR: u64 = crate::reader::HOLD_FACTOR as u64;

/// Idle batches each reader's pool keeps for reuse (see `frame.rs`).
pub const SPARE_BATCHES: u64 = crate::reader::SPARE_BATCHES as u64;

/// Smallest data frame assumed when counting per-frame metadata (24 bytes
/// each) in a batch. Binance market-data messages are larger than this.
pub const MIN_FRAME_BYTES: u64 = 64;

/// Bytes of metadata a batch keeps per frame: receive time, kind, end offset.
const FRAME_META_BYTES: u64 = 24;

/// Estimate of tungstenite's and rustls's fixed buffers per connection:
/// tungstenite's 128 KiB read buffer and 128 KiB write buffer (defaults of
/// tungstenite 0.30 `WebSocketConfig`) plus rustls's record buffers.
pub const SOCKET_BUFFER_BYTES: u64 = 320 << 10;

/// Estimate of the fixed cost of one tracked stream in the pipeline, its
/// counters, its sink part files and its `/metrics` lines, without the
/// duplicate window.
pub const STREAM_BASE_BYTES: u64 = 4 << 10;

/// Estimate of one remembered payload digest: 8 bytes in the order queue
/// and about 24 in the hash set at its maximum load.
pub const DIGEST_BYTES: u64 = 32;

/// Stack reserved per thread: the Rust standard library's default of
/// 2 MiB for spawned threads. This is reserved address space; only touched
/// pages are resident, so the figure overstates RSS. The main thread's
/// stack grows on demand up to `RLIMIT_STACK` and is counted the same way.
pub const THREAD_STACK_BYTES: u64 = 2 << 20;

/// Threads besides readers and HTTP handler threads: main, signals,
/// scheduler, timer, pipeline, sink, memory sampler, the HTTP accept thread
/// and, during shutdown only, second-signal. A service with one connection
/// and two handler threads therefore runs 11 threads at idle.
pub const FIXED_THREADS: u64 = 9;

/// Resident memory of the service before the cache ring and buffers are
/// used: code, libraries, allocator arenas and TLS roots. Measured as the
/// RSS of the release binary with a 1 MiB ring and one stream at idle:
/// 5.3 MiB on x86-64 Linux with glibc, rounded up for allocator arenas.
/// NOTE: a debug build is larger (about 12 MiB), which the stack
/// reservations in the budget cover.
pub const FIXED_BASE_BYTES: u64 = 8 << 20;

/// Bytes of one stored memory sample in the sampler's window.
pub const SAMPLE_BYTES: u64 = std::mem::size_of::<super::Sample>() as u64;

/// One line of the budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BudgetItem {
    /// Part of memory the line counts, such as `frame queue`.
    pub name: &'static str,
    /// Keys (without prefix) that bound it.
    pub keys: &'static [&'static str],
    /// Upper estimate in bytes.
    pub bytes: u64,
    /// Breakdown of the figure, for an operator.
    pub detail: String,
}

/// The worst-case memory budget of a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Lines in the order data flows.
    pub items: Vec<BudgetItem>,
}

impl Budget {
    /// Computes the budget of `config`.
    pub fn worst_case(config: &Config) -> Budget {
        let connections = plan_connections(
            config.venue,
            &config.streams,
            config.max_streams_per_connection,
            config.routing,
        )
        .len() as u64;
        // A rotation opens the new connection before it closes the old one,
        // so up to twice the planned readers run at once.
        let readers = 2 * connections;
        let message = config.max_message_size as u64;
        let frame = config.max_frame_size as u64;
        let batch = batch_bytes(config.batch_size as u64, message);
        let spare_batch = spare_batch_bytes(config.batch_size as u64);
        let streams = config.max_streams as u64;
        let cache = config.cache_size as u64;
        let sink_buffer = config.sink_buffer_size as u64;
        let window = super::window_samples(config.memory_window, config.memory_sample_interval);
        let http_threads = config.http_threads as u64;
        // The records' own list: one 32-byte entry per record, doubled by
        // growth.
        let recent = cache.min(RECENT_MAX_BYTES as u64) + 2 * RECENT_MAX as u64 * 32;

        let items = vec![
            BudgetItem {
                name: "cache ring",
                keys: &["CACHE_SIZE"],
                bytes: cache,
                detail: format!("{} allocated once", format_size(cache)),
            },
            BudgetItem {
                name: "frame queue",
                keys: &["FRAME_QUEUE_BYTES", "BATCH_SIZE", "MAX_MESSAGE_SIZE"],
                // The byte counter covers queued batches and the one the
                // pipeline processes. An empty queue takes one batch of any
                // size, whose buffer may have doubled while it grew.
                bytes: config.frame_queue_bytes.max(2 * batch),
                detail: format!(
                    "larger of FRAME_QUEUE_BYTES {} and 2 x {} of one batch",
                    format_size_rounded(config.frame_queue_bytes),
                    format_size_rounded(batch)
                ),
            },
            BudgetItem {
                name: "reader batches",
                keys: &["BATCH_SIZE", "MAX_MESSAGE_SIZE", "MAX_STREAMS_PER_CONNECTION"],
                // The batch buffer grows by doubling, so its capacity may
                // reach twice the payload bound. Each reader's pool also
                // keeps a few idle batches of at most twice `BATCH_SIZE`.
                bytes: readers * (2 * batch + SPARE_BATCHES * spare_batch),
                detail: format!(
                    "{readers} readers x (2 x {} held batch + {SPARE_BATCHES} x {} idle)",
                    format_size_rounded(batch),
                    format_size_rounded(spare_batch)
                ),
            },
            BudgetItem {
                name: "websocket buffers",
                keys: &["MAX_MESSAGE_SIZE", "MAX_FRAME_SIZE", "MAX_STREAMS_PER_CONNECTION"],
                bytes: readers * (message + frame + SOCKET_BUFFER_BYTES),
                detail: format!(
                    "{readers} readers x (message {} + frame {} + {} socket buffers)",
                    format_size(message),
                    format_size(frame),
                    format_size(SOCKET_BUFFER_BYTES)
                ),
            },
            BudgetItem {
                name: "per-stream tables",
                keys: &["MAX_STREAMS", "DEDUP_WINDOW"],
                bytes: streams * (STREAM_BASE_BYTES + config.dedup_window as u64 * DIGEST_BYTES),
                detail: format!(
                    "{streams} streams x ({} + {} digests x {DIGEST_BYTES} B)",
                    format_size(STREAM_BASE_BYTES),
                    config.dedup_window
                ),
            },
            BudgetItem {
                name: "sink staging",
                keys: &["SINK_BUFFER_SIZE", "MAX_MESSAGE_SIZE"],
                // Staged lines may overshoot the limit by one ring read and
                // one record, and Vec doubling may leave twice that
                // reserved. After each write pass the part files keep at
                // most SINK_BUFFER_SIZE of buffer capacity beyond their
                // content (see Sink::limit_buffer_capacity). Lines go from
                // the ring straight into those buffers, with no read buffer.
                bytes: 2 * (sink_buffer + READ_CHUNK_BYTES as u64 + message) + sink_buffer,
                detail: format!(
                    "2 x ({} staged + {} read + 1 message) + {} kept capacity",
                    format_size(sink_buffer),
                    format_size(READ_CHUNK_BYTES as u64),
                    format_size(sink_buffer)
                ),
            },
            BudgetItem {
                name: "http responses",
                keys: &["HTTP_THREADS"],
                // A /recent response copies records of up to
                // RECENT_MAX_BYTES and renders them into a body of the same
                // size, which the server copies once more behind the header
                // after the records are gone, so each handler keeps at most
                // two copies at a time.
                bytes: http_threads * 2 * recent,
                detail: format!(
                    "{http_threads} handlers x 2 x {} of /recent records (capped at {} per \
                     response, a constant)",
                    format_size_rounded(recent),
                    format_size_rounded(RECENT_MAX_BYTES as u64)
                ),
            },
            BudgetItem {
                name: "memory samples",
                keys: &["MEMORY_WINDOW", "MEMORY_SAMPLE_INTERVAL"],
                bytes: window as u64 * SAMPLE_BYTES,
                detail: format!("{window} samples x {SAMPLE_BYTES} B"),
            },
            BudgetItem {
                name: "thread stacks",
                keys: &["HTTP_THREADS", "MAX_STREAMS_PER_CONNECTION"],
                bytes: (FIXED_THREADS + readers + http_threads) * THREAD_STACK_BYTES,
                detail: format!(
                    "{} threads x {} reserved, of which only touched pages are resident",
                    FIXED_THREADS + readers + http_threads,
                    format_size(THREAD_STACK_BYTES)
                ),
            },
            BudgetItem {
                name: "fixed base",
                keys: &[],
                bytes: FIXED_BASE_BYTES,
                detail: "code, libraries, allocator and TLS roots (measured)".to_string(),
            },
        ];
        Budget { items }
    }

    /// Sum of the lines, in bytes.
    pub fn total(&self) -> u64 {
        self.items.iter().map(|item| item.bytes).sum()
    }

    /// Names the keys of the largest lines, for an error message.
    pub fn advice(&self) -> String {
        let mut items: Vec<&BudgetItem> =
            self.items.iter().filter(|item| !item.keys.is_empty()).collect();
        items.sort_by_key(|item| std::cmp::Reverse(item.bytes));
        let largest: Vec<String> = items
            .iter()
            .take(3)
            .map(|item| {
                let keys: Vec<String> = item
                    .keys
                    .iter()
                    .map(|key| format!("{}{key}", crate::config::KEY_PREFIX))
                    .collect();
                format!("{} {} ({})", item.name, format_size_rounded(item.bytes), keys.join(", "))
            })
            .collect();
        format!(
            "the largest parts are {}; lower those keys or raise BINANCE_INGEST_MEMORY_LIMIT",
            largest.join("; ")
        )
    }

    /// Renders the budget as `#` comment lines, so `check-config` output
    /// stays a valid settings file.
    pub fn describe(&self, limit: u64) -> String {
        let mut out = String::from("# worst-case memory budget:\n");
        for item in &self.items {
            let _ = writeln!(
                out,
                "#   {:<18} {:>10}  {}",
                item.name,
                format_size_rounded(item.bytes),
                item.detail
            );
        }
        let _ = writeln!(
            out,
            "#   {:<18} {:>10}  of BINANCE_INGEST_MEMORY_LIMIT={}",
            "total",
            format_size_rounded(self.total()),
            format_size(limit)
        );
        out
    }

    /// Renders the budget as one log line of `name=bytes` pairs.
    pub fn log_line(&self, limit: u64) -> String {
        let mut out = format!("memory budget total_bytes={} limit_bytes={limit}", self.total());
        for item in &self.items {
            let _ = write!(out, " {}_bytes={}", item.name.replace([' ', '-'], "_"), item.bytes);
        }
        out
    }
}

/// Returns the memory alert levels of `config` that a healthy service may
/// reach without a leak, as one warning sentence each, for the start-up log
/// and `check-config`. An empty list means the levels leave room:
/// `MEMORY_WARN` at or above `CACHE_SIZE` plus [`FIXED_BASE_BYTES`], which a
/// full ring reaches on every run, and `MEMORY_CRITICAL` at or above the
/// budget total, which a full load may reach. With
/// `MEMORY_EXIT_ON_CRITICAL=true` validation rejects a critical level below
/// the total, so this lists it only when the exit is off.
pub fn level_warnings(config: &Config, budget: &Budget) -> Vec<String> {
    let mut warnings = Vec::new();
    let total = budget.total();
    if !config.memory_exit_on_critical && config.memory_critical < total {
        warnings.push(format!(
            "BINANCE_INGEST_MEMORY_CRITICAL={} is below the worst-case memory budget of {}, \
             so the critical alert may fire under a full load without a leak; set it to {} \
             or more",
            format_size(config.memory_critical),
            format_size_rounded(total),
            format_size(round_up_mib(total))
        ));
    }
    let ring_floor = config.cache_size as u64 + FIXED_BASE_BYTES;
    if config.memory_warn < ring_floor {
        warnings.push(format!(
            "BINANCE_INGEST_MEMORY_WARN={} is below BINANCE_INGEST_CACHE_SIZE={} plus the \
             fixed base of {}, which a full cache ring reaches on every healthy run, so the \
             warn alert will fire without a leak; set it to {} or more",
            format_size(config.memory_warn),
            format_size(config.cache_size as u64),
            format_size_rounded(FIXED_BASE_BYTES),
            format_size(round_up_mib(ring_floor))
        ));
    }
    warnings
}

/// Rounds `bytes` up to a whole MiB, so a suggested level reads well and is
/// accepted as a size.
pub fn round_up_mib(bytes: u64) -> u64 {
    bytes.div_ceil(1 << 20) << 20
}

/// Upper bound of one idle batch in a reader's pool, in bytes: the pool
/// keeps only buffers of at most twice `BATCH_SIZE`, with the metadata of
/// frames of [`MIN_FRAME_BYTES`].
pub fn spare_batch_bytes(batch_size: u64) -> u64 {
    let bytes = 2 * batch_size;
    bytes + (bytes / MIN_FRAME_BYTES + 1) * FRAME_META_BYTES
}

/// Upper bound of one frame batch in bytes: a reader keeps adding to a batch
/// it could not hand over until the payload reaches [`HOLD_FACTOR`] batch
/// sizes, and the last frame added may be a whole maximum-size message.
/// Frame metadata is counted for frames of [`MIN_FRAME_BYTES`].
pub fn batch_bytes(batch_size: u64, max_message_size: u64) -> u64 {
    let small = HOLD_FACTOR * batch_size;
    let frames = small / MIN_FRAME_BYTES + 1;
    small + max_message_size + frames * FRAME_META_BYTES
}

/// Formats a byte count with one decimal in the largest binary unit that
/// keeps it at least 1, such as `1.5 GiB`.
pub fn format_size_rounded(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_budget_fits_default_limit() {
        let config = Config::default();
        let budget = Budget::worst_case(&config);
        assert!(budget.total() <= config.memory_limit, "{}", budget.describe(0));
        assert!(budget.total() > config.cache_size as u64);
    }

    #[test]
    fn budget_grows_with_each_limit() {
        let base = Budget::worst_case(&Config::default()).total();
        type Change = fn(&mut Config);
        let cases: [(&str, Change); 6] = [
            ("cache", |c| c.cache_size *= 2),
            ("queue", |c| c.frame_queue_bytes *= 4),
            ("message", |c| c.max_message_size *= 2),
            ("streams", |c| c.max_streams *= 2),
            ("sink", |c| c.sink_buffer_size *= 2),
            ("http", |c| c.http_threads *= 2),
        ];
        for (name, change) in cases {
            let mut config = Config::default();
            change(&mut config);
            assert!(Budget::worst_case(&config).total() > base, "{name}");
        }
    }

    #[test]
    fn batch_bound_counts_hold_factor_and_message() {
        assert_eq!(batch_bytes(1024, 4096), 4096 + 4096 + (4096 / 64 + 1) * 24);
    }

    #[test]
    fn describe_is_comment_lines() {
        let text = Budget::worst_case(&Config::default()).describe(2 << 30);
        assert!(text.lines().all(|line| line.starts_with('#')), "{text}");
        assert!(text.contains("frame queue"), "{text}");
        assert!(text.contains("MEMORY_LIMIT=2GiB"), "{text}");
    }

    #[test]
    fn advice_names_largest_keys() {
        let config = Config { frame_queue_bytes: 4 << 30, ..Config::default() };
        let advice = Budget::worst_case(&config).advice();
        assert!(advice.starts_with("the largest parts are frame queue 4.0 GiB"), "{advice}");
        assert!(advice.contains("BINANCE_INGEST_FRAME_QUEUE_BYTES"), "{advice}");
    }

    #[test]
    fn levels_at_defaults_raise_no_warning() {
        let config = Config::default();
        let warnings = level_warnings(&config, &Budget::worst_case(&config));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn warn_level_at_ring_size_is_warned() {
        let config = Config { cache_size: 1 << 30, ..Config::default() };
        let warnings = level_warnings(&config, &Budget::worst_case(&config));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("BINANCE_INGEST_MEMORY_WARN=1GiB"), "{warnings:?}");
        assert!(warnings[0].contains("set it to 1032MiB or more"), "{warnings:?}");
    }

    #[test]
    fn critical_level_below_budget_is_warned_without_exit() {
        let config = Config {
            cache_size: 2040 << 20,
            memory_warn: 2100 << 20,
            memory_critical: 2100 << 20,
            memory_limit: 4 << 30,
            ..Config::default()
        };
        assert!(config.memory_critical < Budget::worst_case(&config).total());
        let warnings = level_warnings(&config, &Budget::worst_case(&config));
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("BINANCE_INGEST_MEMORY_CRITICAL=2100MiB"), "{warnings:?}");
        let exiting = Config { memory_exit_on_critical: true, ..config };
        let warnings = level_warnings(&exiting, &Budget::worst_case(&exiting));
        assert!(warnings.is_empty(), "validation rejects this case: {warnings:?}");
    }

    #[test]
    fn http_line_calls_recent_cap_constant() {
        let budget = Budget::worst_case(&Config::default());
        let http = budget.items.iter().find(|item| item.name == "http responses").unwrap();
        assert!(!http.detail.contains("RECENT_MAX_BYTES"), "{}", http.detail);
        assert!(
            http.detail.contains("capped at 4.0 MiB per response, a constant"),
            "{}",
            http.detail
        );
        assert_eq!(http.keys, &["HTTP_THREADS"]);
    }

    #[test]
    fn rounded_sizes_read_well() {
        assert_eq!(format_size_rounded(512), "512 B");
        assert_eq!(format_size_rounded(3 << 19), "1.5 MiB");
        assert_eq!(format_size_rounded(2 << 30), "2.0 GiB");
    }
}
