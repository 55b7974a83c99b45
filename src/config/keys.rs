//! The table of settings keys: name, help text, parser and formatter.
//!
//! Runs on the main thread at start-up. Help text, `describe`, the sample
//! file and all parsing come from [`KEYS`], so they cannot drift apart.
//! Adding a setting is one field in `Config`, its default, and one entry
//! here. The parsers check one value each; relations between keys are
//! checked in `Config::validate`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::Config;
use super::units::{format_duration, format_size, parse_bool, parse_duration, parse_size};
use crate::plan::{MAX_STREAMS_PER_CONNECTION, Route, validate_stream_name};
use crate::venue::{Endpoint, Venue};

/// Prefix of every key in files and in the environment.
pub const KEY_PREFIX: &str = "BINANCE_INGEST_";

/// Smallest accepted cache ring, 1 MiB.
pub const MIN_CACHE_SIZE: u64 = 1 << 20;
/// Largest accepted cache ring, 16 GiB. The ring lives in memory; the bound
/// is a judgment that catches unit typos such as 64GiB for 64MiB.
pub const MAX_CACHE_SIZE: u64 = 16 << 30;
/// Longest accepted instance name; it goes into part-file names.
pub const MAX_INSTANCE_LEN: usize = 64;

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);
const HOUR: Duration = Duration::from_secs(3600);

/// One setting: how it is named, documented, parsed and written.
pub struct Key {
    /// Name after [`KEY_PREFIX`], such as `CACHE_SIZE`.
    pub name: &'static str,
    /// Kind of value in help text, such as `SIZE` or `DURATION`.
    pub placeholder: &'static str,
    /// One line of meaning with the accepted values, at most 76 characters.
    pub help: &'static str,
    /// Parses `text` into its field of the config, or returns what is accepted.
    pub(super) apply: fn(&mut Config, &str) -> Result<(), String>,
    /// Writes the field in the form `apply` reads back.
    pub(super) show: fn(&Config) -> String,
}

impl Key {
    /// Full name as used in files and the environment, such as
    /// `BINANCE_INGEST_CACHE_SIZE`.
    pub fn env_name(&self) -> String {
        format!("{KEY_PREFIX}{}", self.name)
    }

    /// Command-line flag without dashes, such as `cache-size`.
    pub fn flag_name(&self) -> String {
        self.name.to_ascii_lowercase().replace('_', "-")
    }

    /// Value of this key in `config`, in the form the parser reads back.
    pub fn value_text(&self, config: &Config) -> String {
        (self.show)(config)
    }
}

/// Every setting, in the order help and `describe` list them.
pub static KEYS: &[Key] = &[
    Key {
        name: "VENUE",
        placeholder: "NAME",
        help: "Binance service: spot, data-stream, us, usdm, coinm or spot-testnet",
        apply: |c, v| {
            c.venue = Venue::from_name(v.trim()).ok_or_else(|| {
                let names: Vec<&str> = Venue::ALL.iter().map(|venue| venue.name()).collect();
                format!("unknown venue; expected one of {}", names.join(", "))
            })?;
            Ok(())
        },
        show: |c| c.venue.name().to_string(),
    },
    Key {
        name: "STREAMS",
        placeholder: "LIST",
        help: "comma-separated stream names, e.g. btcusdt@trade,ethusdt@depth@100ms",
        apply: |c, v| {
            c.streams = parse_streams(v)?;
            Ok(())
        },
        show: |c| c.streams.join(","),
    },
    Key {
        name: "ENDPOINT",
        placeholder: "URL",
        help: "wss://host[:port] to use instead of the venue's server; empty for none",
        apply: |c, v| {
            c.endpoint = parse_endpoint(v)?;
            Ok(())
        },
        show: |c| c.endpoint.as_ref().map(Endpoint::origin).unwrap_or_default(),
    },
    Key {
        name: "CA_FILE",
        placeholder: "PATH",
        help: "PEM file of extra CA certificates to trust; empty for none",
        apply: |c, v| {
            c.ca_file = if v.is_empty() { None } else { Some(parse_path(v)?) };
            Ok(())
        },
        show: |c| c.ca_file.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
    },
    Key {
        name: "DATA_DIR",
        placeholder: "PATH",
        help: "folder the JSON Lines partitions are written under",
        apply: |c, v| {
            c.data_dir = parse_path(v)?;
            Ok(())
        },
        show: |c| c.data_dir.display().to_string(),
    },
    Key {
        name: "HTTP_ADDR",
        placeholder: "ADDR",
        help: "IP:port of the health and metrics listener; port 0 picks a free one",
        apply: |c, v| {
            c.http_addr = v
                .trim()
                .parse::<SocketAddr>()
                .map_err(|_| "expected IP:port, e.g. 127.0.0.1:9780 or [::1]:9780".to_string())?;
            Ok(())
        },
        show: |c| c.http_addr.to_string(),
    },
    Key {
        name: "INSTANCE",
        placeholder: "NAME",
        help: "name in part-file names: 1 to 64 of A-Z a-z 0-9 _ -",
        apply: |c, v| {
            c.instance = parse_instance(v)?;
            Ok(())
        },
        show: |c| c.instance.clone(),
    },
    Key {
        name: "CACHE_SIZE",
        placeholder: "SIZE",
        help: "cache ring capacity behind /recent, 1MiB to 16GiB",
        apply: |c, v| {
            c.cache_size = size_in(v, MIN_CACHE_SIZE, MAX_CACHE_SIZE)?;
            Ok(())
        },
        show: |c| format_size(c.cache_size as u64),
    },
    Key {
        name: "FRAME_QUEUE",
        placeholder: "COUNT",
        help: "frame batches queued between readers and pipeline, 1 to 65536",
        apply: |c, v| {
            c.frame_queue = count_in(v, 1, 65_536)?;
            Ok(())
        },
        show: |c| c.frame_queue.to_string(),
    },
    Key {
        name: "FRAME_QUEUE_BYTES",
        placeholder: "SIZE",
        help: "bytes of frame batches queued between readers and pipeline, 1MiB to 1TiB",
        apply: |c, v| {
            c.frame_queue_bytes = size_in(v, 1 << 20, 1 << 40)? as u64;
            Ok(())
        },
        show: |c| format_size(c.frame_queue_bytes),
    },
    Key {
        name: "FLUSH_INTERVAL",
        placeholder: "DURATION",
        help: "maximum time written records wait in the sink's buffer, 1ms to 1s",
        apply: |c, v| {
            c.flush_interval = duration_in(v, MS, SECOND)?;
            Ok(())
        },
        show: |c| format_duration(c.flush_interval),
    },
    Key {
        name: "MAX_STREAMS_PER_CONNECTION",
        placeholder: "COUNT",
        help: "streams per WebSocket connection, 1 to 1024 (Binance's limit)",
        apply: |c, v| {
            c.max_streams_per_connection = count_in(v, 1, MAX_STREAMS_PER_CONNECTION)?;
            Ok(())
        },
        show: |c| c.max_streams_per_connection.to_string(),
    },
    Key {
        name: "USDM_TRADE_ROUTE",
        placeholder: "ROUTE",
        help: "path family of USD-M @trade streams: public or market",
        apply: |c, v| {
            c.routing.usdm_trade = match v.trim() {
                "public" => Route::Public,
                "market" => Route::Market,
                _ => return Err("expected public or market".to_string()),
            };
            Ok(())
        },
        show: |c| c.routing.usdm_trade.name().to_string(),
    },
    Key {
        name: "COINM_ROUTED",
        placeholder: "BOOL",
        help: "whether COIN-M uses the /public and /market split like USD-M",
        apply: |c, v| {
            c.routing.coinm_routed = parse_bool(v)?;
            Ok(())
        },
        show: |c| c.routing.coinm_routed.to_string(),
    },
    Key {
        name: "RECONNECT_MIN",
        placeholder: "DURATION",
        help: "first reconnect backoff step, 1ms to 1h",
        apply: |c, v| {
            c.reconnect_min = duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.reconnect_min),
    },
    Key {
        name: "RECONNECT_MAX",
        placeholder: "DURATION",
        help: "reconnect backoff cap, 1ms to 1h, at least RECONNECT_MIN",
        apply: |c, v| {
            c.reconnect_max = duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.reconnect_max),
    },
    Key {
        name: "CONNECT_TIMEOUT",
        placeholder: "DURATION",
        help: "TCP, TLS and WebSocket handshake together, 1ms to 5m",
        apply: |c, v| {
            c.connect_timeout = duration_in(v, MS, 5 * 60 * SECOND)?;
            Ok(())
        },
        show: |c| format_duration(c.connect_timeout),
    },
    Key {
        name: "STALE_AFTER",
        placeholder: "DURATION",
        help: "no frame for this long: connection is dead, 1ms to 1h, auto by venue",
        apply: |c, v| {
            c.stale_after = auto_duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| show_auto(c.stale_after),
    },
    Key {
        name: "SERVER_PING_INTERVAL",
        placeholder: "DURATION",
        help: "interval of the server's pings, 1ms to 1h; auto: 20s spot, 3m futures",
        apply: |c, v| {
            c.server_ping_interval = auto_duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| show_auto(c.server_ping_interval),
    },
    Key {
        name: "CLIENT_PING_INTERVAL",
        placeholder: "DURATION",
        help: "interval of this service's pings, 1ms to 1h; 0s for none",
        apply: |c, v| {
            c.client_ping_interval = duration_in(v, Duration::ZERO, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.client_ping_interval),
    },
    Key {
        name: "PONG_TIMEOUT",
        placeholder: "DURATION",
        help: "time a client ping waits for its pong, 1ms to 1h, below the ping interval",
        apply: |c, v| {
            c.pong_timeout = duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.pong_timeout),
    },
    Key {
        name: "DATA_STALE_AFTER",
        placeholder: "DURATION",
        help: "no data on any stream of a connection: replace it, 0s for never",
        apply: |c, v| {
            c.data_stale_after = duration_in(v, Duration::ZERO, 24 * HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.data_stale_after),
    },
    Key {
        name: "STREAM_STALE_AFTER",
        placeholder: "LIST",
        help: "opt-in per-stream data thresholds: stream=duration,...; empty for none",
        apply: |c, v| {
            c.stream_stale_after = parse_stream_thresholds(v)?;
            Ok(())
        },
        show: |c| {
            let pairs: Vec<String> = c
                .stream_stale_after
                .iter()
                .map(|(stream, after)| format!("{stream}={}", format_duration(*after)))
                .collect();
            pairs.join(",")
        },
    },
    Key {
        name: "ROTATE_INTERVAL",
        placeholder: "DURATION",
        help: "make-before-break rotation of every connection, under 24h; 0s for none",
        apply: |c, v| {
            c.rotate_interval = duration_in(v, Duration::ZERO, 48 * HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.rotate_interval),
    },
    Key {
        name: "ROTATE_JITTER",
        placeholder: "PERCENT",
        help: "rotation happens up to this many percent early, per slot, 0 to 50",
        apply: |c, v| {
            c.rotate_jitter_percent = count_in(v, 0, 50)?;
            Ok(())
        },
        show: |c| c.rotate_jitter_percent.to_string(),
    },
    Key {
        name: "OVERLAP_TIMEOUT",
        placeholder: "DURATION",
        help: "longest overlap of old and new connection before a gap is recorded",
        apply: |c, v| {
            c.overlap_timeout = duration_in(v, MS, 10 * 60 * SECOND)?;
            Ok(())
        },
        show: |c| format_duration(c.overlap_timeout),
    },
    Key {
        name: "HEALTHY_AFTER",
        placeholder: "DURATION",
        help: "uptime with data that resets the reconnect backoff, 1ms to 1h",
        apply: |c, v| {
            c.healthy_after = duration_in(v, MS, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.healthy_after),
    },
    Key {
        name: "MAX_MESSAGE_SIZE",
        placeholder: "SIZE",
        help: "largest WebSocket message accepted, 1KiB to 1GiB",
        apply: |c, v| {
            c.max_message_size = size_in(v, 1 << 10, 1 << 30)?;
            Ok(())
        },
        show: |c| format_size(c.max_message_size as u64),
    },
    Key {
        name: "MAX_FRAME_SIZE",
        placeholder: "SIZE",
        help: "largest WebSocket frame accepted, 1KiB to MAX_MESSAGE_SIZE",
        apply: |c, v| {
            c.max_frame_size = size_in(v, 1 << 10, 1 << 30)?;
            Ok(())
        },
        show: |c| format_size(c.max_frame_size as u64),
    },
    Key {
        name: "BATCH_DELAY",
        placeholder: "DURATION",
        help: "maximum time a reader keeps frames before handing them on, 0s to 1s",
        apply: |c, v| {
            c.batch_delay = duration_in(v, Duration::ZERO, SECOND)?;
            Ok(())
        },
        show: |c| format_duration(c.batch_delay),
    },
    Key {
        name: "BATCH_SIZE",
        placeholder: "SIZE",
        help: "payload bytes that make a reader hand a batch on, 1B to MAX_MESSAGE_SIZE",
        apply: |c, v| {
            c.batch_size = size_in(v, 1, 1 << 30)?;
            Ok(())
        },
        show: |c| format_size(c.batch_size as u64),
    },
    Key {
        name: "HTTP_THREADS",
        placeholder: "COUNT",
        help: "HTTP request handler threads, 1 to 64",
        apply: |c, v| {
            c.http_threads = count_in(v, 1, 64)?;
            Ok(())
        },
        show: |c| c.http_threads.to_string(),
    },
    Key {
        name: "DEDUP_WINDOW",
        placeholder: "COUNT",
        help: "payload digests remembered per stream without ids, 1 to 65536",
        apply: |c, v| {
            c.dedup_window = count_in(v, 1, 65_536)?;
            Ok(())
        },
        show: |c| c.dedup_window.to_string(),
    },
    Key {
        name: "MAX_STREAMS",
        placeholder: "COUNT",
        help: "upper bound on configured streams and per-stream tables, 1 to 65536",
        apply: |c, v| {
            c.max_streams = count_in(v, 1, 65_536)?;
            Ok(())
        },
        show: |c| c.max_streams.to_string(),
    },
    Key {
        name: "SINK_BUFFER_SIZE",
        placeholder: "SIZE",
        help: "staged bytes after which the sink pauses reading the ring, 256KiB to 1GiB",
        apply: |c, v| {
            c.sink_buffer_size = size_in(v, 256 << 10, 1 << 30)?;
            Ok(())
        },
        show: |c| format_size(c.sink_buffer_size as u64),
    },
    Key {
        name: "SINK_SHUTDOWN_RETRY",
        placeholder: "DURATION",
        help: "time the sink retries failed writes at shutdown, then gives up, 1s to 50s",
        apply: |c, v| {
            c.sink_shutdown_retry = duration_in(v, SECOND, 50 * SECOND)?;
            Ok(())
        },
        show: |c| format_duration(c.sink_shutdown_retry),
    },
    Key {
        name: "MEMORY_LIMIT",
        placeholder: "SIZE",
        help: "start-up fails when the worst-case memory budget exceeds this, 16MiB+",
        apply: |c, v| {
            c.memory_limit = bytes_in(v, 16 << 20, 1 << 50)?;
            Ok(())
        },
        show: |c| format_size(c.memory_limit),
    },
    Key {
        name: "MEMORY_SAMPLE_INTERVAL",
        placeholder: "DURATION",
        help: "time between memory samples, 10ms to 1h",
        apply: |c, v| {
            c.memory_sample_interval = duration_in(v, 10 * MS, HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.memory_sample_interval),
    },
    Key {
        name: "MEMORY_WINDOW",
        placeholder: "DURATION",
        help: "span of memory samples kept for leak detection, 1s to 7d",
        apply: |c, v| {
            c.memory_window = duration_in(v, SECOND, 7 * 24 * HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.memory_window),
    },
    Key {
        name: "MEMORY_WARMUP",
        placeholder: "DURATION",
        help: "warm-up before leak detection, even when the ring fills sooner, 0s to 7d",
        apply: |c, v| {
            c.memory_warmup = duration_in(v, Duration::ZERO, 7 * 24 * HOUR)?;
            Ok(())
        },
        show: |c| format_duration(c.memory_warmup),
    },
    Key {
        name: "MEMORY_LEAK_THRESHOLD",
        placeholder: "SIZE",
        help: "projected RSS growth over 24 h that raises the leak alert, 1KiB+",
        apply: |c, v| {
            c.memory_leak_threshold = bytes_in(v, 1 << 10, 1 << 50)?;
            Ok(())
        },
        show: |c| format_size(c.memory_leak_threshold),
    },
    Key {
        name: "MEMORY_WARN",
        placeholder: "SIZE",
        help: "RSS that raises the memory warn alert, 1MiB to MEMORY_CRITICAL",
        apply: |c, v| {
            c.memory_warn = bytes_in(v, 1 << 20, 1 << 50)?;
            Ok(())
        },
        show: |c| format_size(c.memory_warn),
    },
    Key {
        name: "MEMORY_CRITICAL",
        placeholder: "SIZE",
        help: "RSS that raises the memory critical alert, 1MiB+",
        apply: |c, v| {
            c.memory_critical = bytes_in(v, 1 << 20, 1 << 50)?;
            Ok(())
        },
        show: |c| format_size(c.memory_critical),
    },
    Key {
        name: "MEMORY_EXIT_ON_CRITICAL",
        placeholder: "BOOL",
        help: "at critical RSS, shut down and exit 75; needs MEMORY_CRITICAL >= budget",
        apply: |c, v| {
            c.memory_exit_on_critical = parse_bool(v)?;
            Ok(())
        },
        show: |c| c.memory_exit_on_critical.to_string(),
    },
];

/// Parses a comma-separated list of stream names, removing duplicates and
/// keeping the first occurrence's position.
fn parse_streams(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Err("at least one stream is required, e.g. btcusdt@trade".to_string());
    }
    let mut streams: Vec<String> = Vec::new();
    for name in text.split(',').map(str::trim) {
        validate_stream_name(name)?;
        if let Some((symbol, _)) = name.split_once('@').filter(|_| !name.starts_with('!')) {
            // "All symbols for streams are lowercase": Binance spot WebSocket
            // streams documentation, General WSS information.
            if symbol.contains(|c: char| c.is_ascii_uppercase()) {
                return Err(format!(
                    "stream name {name:?} has an uppercase symbol; Binance stream symbols are \
                     lowercase, e.g. {}@{}",
                    symbol.to_ascii_lowercase(),
                    &name[symbol.len() + 1..]
                ));
            }
        }
        if !streams.iter().any(|known| known == name) {
            streams.push(name.to_string());
        }
    }
    Ok(streams)
}

/// Parses an endpoint override. Plain `ws://` is accepted for loopback
/// hosts only, because anywhere else it would carry market data without TLS.
fn parse_endpoint(text: &str) -> Result<Option<Endpoint>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let endpoint = Endpoint::parse(text)?;
    if !endpoint.secure && !is_loopback_host(&endpoint.host) {
        return Err("ws:// is accepted for loopback hosts only; use wss://".to_string());
    }
    Ok(Some(endpoint))
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn parse_path(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("expected a path".to_string());
    }
    if text.contains(char::is_control) {
        return Err("the path contains a control character".to_string());
    }
    Ok(PathBuf::from(text))
}

fn parse_instance(text: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if text.is_empty() || text.len() > MAX_INSTANCE_LEN || !text.chars().all(valid) {
        return Err(format!(
            "expected 1 to {MAX_INSTANCE_LEN} characters of A-Z a-z 0-9 _ -, \
             because the name goes into file names"
        ));
    }
    Ok(text.to_string())
}

fn count_in(text: &str, min: usize, max: usize) -> Result<usize, String> {
    let text = text.trim();
    let accepted = format!("expected a whole number from {min} to {max}");
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(accepted);
    }
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(accepted),
    }
}

fn size_in(text: &str, min: u64, max: u64) -> Result<usize, String> {
    let bytes = parse_size(text)?;
    if !(min..=max).contains(&bytes) {
        return Err(format!("expected {} to {}", format_size(min), format_size(max)));
    }
    // The bounds above stay below 2^32 on 32-bit targets except for the
    // cache and the frame queue bytes, which such a target could not
    // allocate anyway.
    usize::try_from(bytes).map_err(|_| "larger than this machine's address space".to_string())
}

/// Like `size_in` for sizes that need not fit in memory, such as limits.
fn bytes_in(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let bytes = parse_size(text)?;
    if !(min..=max).contains(&bytes) {
        return Err(format!("expected {} to {}", format_size(min), format_size(max)));
    }
    Ok(bytes)
}

fn duration_in(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration < min || duration > max {
        return Err(format!("expected {} to {}", format_duration(min), format_duration(max)));
    }
    Ok(duration)
}

/// Parses `auto` as `None`, else a duration within the bounds.
fn auto_duration_in(text: &str, min: Duration, max: Duration) -> Result<Option<Duration>, String> {
    if text.trim() == "auto" {
        return Ok(None);
    }
    duration_in(text, min, max).map(Some).map_err(|problem| format!("{problem}, or auto"))
}

fn show_auto(value: Option<Duration>) -> String {
    value.map_or_else(|| "auto".to_string(), format_duration)
}

/// Parses `stream=duration` pairs separated by commas.
fn parse_stream_thresholds(text: &str) -> Result<Vec<(String, Duration)>, String> {
    let mut pairs: Vec<(String, Duration)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|item| !item.is_empty()) {
        let Some((stream, after)) = item.split_once('=') else {
            return Err(format!("{item:?} is not stream=duration, e.g. btcusdt@trade=30s"));
        };
        let stream = stream.trim();
        validate_stream_name(stream)?;
        let after = duration_in(after.trim(), MS, 24 * HOUR)?;
        if pairs.iter().any(|(known, _)| known == stream) {
            return Err(format!("{stream} is listed twice; give each stream one threshold"));
        }
        pairs.push((stream.to_string(), after));
    }
    Ok(pairs)
}

/// Returns the key whose name after the prefix is closest to `name`, when
/// it is close enough to be a likely typo.
pub fn closest_key(name: &str) -> Option<&'static Key> {
    let name = name.to_ascii_uppercase().replace('-', "_");
    let name = name.strip_prefix(KEY_PREFIX).unwrap_or(&name);
    KEYS.iter()
        .map(|key| (edit_distance(name, key.name), key))
        .filter(|(distance, key)| *distance <= 2 + key.name.len() / 8)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, key)| key)
}

/// Levenshtein distance over bytes; key names are ASCII.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_key_finds_typos() {
        assert_eq!(closest_key("CACHE_SIZ").map(|k| k.name), Some("CACHE_SIZE"));
        assert_eq!(closest_key("BINANCE_INGEST_STREAM").map(|k| k.name), Some("STREAMS"));
        assert_eq!(closest_key("flush-intervall").map(|k| k.name), Some("FLUSH_INTERVAL"));
        assert!(closest_key("COLOUR").is_none());
    }

    #[test]
    fn key_names_are_unique_and_documented() {
        for (i, key) in KEYS.iter().enumerate() {
            assert!(KEYS[..i].iter().all(|other| other.name != key.name), "{}", key.name);
            assert!(!key.help.is_empty(), "{}", key.name);
            assert!(key.help.len() <= 76, "{}", key.name);
            assert!(key.name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'), "{}", key.name);
        }
    }

    #[test]
    fn plain_ws_only_on_loopback() {
        assert!(parse_endpoint("ws://127.0.0.1:9443").is_ok());
        assert!(parse_endpoint("ws://[::1]:9443").is_ok());
        assert!(parse_endpoint("ws://localhost:1").is_ok());
        assert!(parse_endpoint("ws://10.0.0.1:9443").is_err());
        assert!(parse_endpoint("wss://10.0.0.1:9443").is_ok());
    }
}
