//! Settings of the service: the validated [`Config`], the table of keys it
//! is read from, and the three sources that set them.
//!
//! Runs on the main thread at start-up, before any worker starts. Values
//! come from built-in defaults, then a `KEY=value` file, then
//! `BINANCE_INGEST_*` environment variables, then command-line flags; a
//! later source overrides an earlier one. Every value is parsed and checked
//! once here and a bad one stops start-up, so the rest of the service never
//! receives an invalid setting. This module never sets environment variables
//! and never logs a value it rejects except through the returned error.

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{ConfigError, Error};
use crate::plan::RoutingRules;
use crate::venue::{Endpoint, Venue};

mod file;
mod keys;
mod sources;
mod units;

pub use keys::{KEY_PREFIX, KEYS, Key, MAX_CACHE_SIZE, MIN_CACHE_SIZE, closest_key};
pub use sources::{Setting, Source, Sources, env_settings, flag_setting, parse_file, read_file};
pub use units::{format_duration, format_size, parse_bool, parse_duration, parse_size};

/// Largest CA file read, 16 MiB.
const MAX_CA_FILE_SIZE: u64 = 16 << 20;

/// Resolved, validated configuration. Built once at start.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// `BINANCE_INGEST_VENUE`. Defaults to spot.
    pub venue: Venue,
    /// `BINANCE_INGEST_STREAMS`: validated stream names, duplicates removed.
    pub streams: Vec<String>,
    /// `BINANCE_INGEST_ENDPOINT`: server to connect to instead of the venue's.
    pub endpoint: Option<Endpoint>,
    /// `BINANCE_INGEST_CA_FILE`: extra PEM CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// `BINANCE_INGEST_DATA_DIR`. Defaults to `./data`.
    pub data_dir: PathBuf,
    /// `BINANCE_INGEST_HTTP_ADDR`. Defaults to 127.0.0.1:9780.
    pub http_addr: SocketAddr,
    /// `BINANCE_INGEST_INSTANCE`: name in part-file names. Defaults to `main`.
    pub instance: String,
    /// `BINANCE_INGEST_CACHE_SIZE`: cache ring capacity in bytes. Defaults to 64 MiB.
    pub cache_size: usize,
    /// `BINANCE_INGEST_FRAME_QUEUE`: frame batches queued between readers
    /// and the pipeline. Defaults to 64.
    pub frame_queue: usize,
    /// `BINANCE_INGEST_FRAME_QUEUE_BYTES`: ceiling on the heap bytes of the
    /// frame batches queued for, or held by, the pipeline. An empty queue
    /// still takes one larger batch. Defaults to 64 MiB.
    pub frame_queue_bytes: u64,
    /// `BINANCE_INGEST_FLUSH_INTERVAL`: at most 1 s. Defaults to 1 s.
    pub flush_interval: Duration,
    /// `BINANCE_INGEST_MAX_STREAMS_PER_CONNECTION`: 1 to 1024. Defaults to 1024.
    pub max_streams_per_connection: usize,
    /// `BINANCE_INGEST_USDM_TRADE_ROUTE` and `BINANCE_INGEST_COINM_ROUTED`.
    pub routing: RoutingRules,
    /// `BINANCE_INGEST_RECONNECT_MIN`: first backoff step. Defaults to 1 s.
    pub reconnect_min: Duration,
    /// `BINANCE_INGEST_RECONNECT_MAX`: backoff cap. Defaults to 60 s.
    pub reconnect_max: Duration,
    /// `BINANCE_INGEST_CONNECT_TIMEOUT`: TCP, TLS and WebSocket handshake
    /// together. Defaults to 10 s.
    pub connect_timeout: Duration,
    /// `BINANCE_INGEST_STALE_AFTER`: a connection with no frame of any kind
    /// (data, ping or pong) for this long is dead and replaced. `None`
    /// (`auto`) picks [`Config::effective_stale_after`]: 60 s on spot venues,
    /// 4 min on futures, whose servers ping only every 3 min.
    pub stale_after: Option<Duration>,
    /// `BINANCE_INGEST_SERVER_PING_INTERVAL`: how often the server pings.
    /// `None` (`auto`) takes the venue's: 20 s spot, 3 min futures.
    pub server_ping_interval: Option<Duration>,
    /// `BINANCE_INGEST_CLIENT_PING_INTERVAL`: interval of this service's own
    /// pings; zero sends none. Defaults to 3 min.
    pub client_ping_interval: Duration,
    /// `BINANCE_INGEST_PONG_TIMEOUT`: a client ping without a pong for this
    /// long marks the connection dead. Defaults to 30 s.
    pub pong_timeout: Duration,
    /// `BINANCE_INGEST_DATA_STALE_AFTER`: a connection that delivers no data
    /// frame for this long, pings or not, is replaced; zero turns the check
    /// off. Defaults to 10 min, so streams quiet for minutes are left alone.
    pub data_stale_after: Duration,
    /// `BINANCE_INGEST_STREAM_STALE_AFTER`: opt-in per-stream thresholds; a
    /// listed stream that stores no event for its threshold gets its
    /// connection replaced. Defaults to none.
    pub stream_stale_after: Vec<(String, Duration)>,
    /// `BINANCE_INGEST_ROTATE_INTERVAL`: age at which a connection is
    /// replaced make-before-break; zero turns rotation off. Defaults to 4 h,
    /// well before Binance's 24 h cut.
    pub rotate_interval: Duration,
    /// `BINANCE_INGEST_ROTATE_JITTER`: each rotation comes up to this many
    /// percent of the interval early, drawn per connection. Defaults to 5.
    pub rotate_jitter_percent: usize,
    /// `BINANCE_INGEST_OVERLAP_TIMEOUT`: longest time old and new connection
    /// overlap while their sequences have not met. Defaults to 30 s.
    pub overlap_timeout: Duration,
    /// `BINANCE_INGEST_HEALTHY_AFTER`: a connection up and delivering data
    /// this long resets its slot's backoff. Defaults to 60 s.
    pub healthy_after: Duration,
    /// `BINANCE_INGEST_MAX_MESSAGE_SIZE`: largest WebSocket message accepted.
    /// Defaults to 16 MiB.
    pub max_message_size: usize,
    /// `BINANCE_INGEST_MAX_FRAME_SIZE`: largest WebSocket frame accepted.
    /// Defaults to 16 MiB.
    pub max_frame_size: usize,
    /// `BINANCE_INGEST_BATCH_DELAY`: maximum time a reader keeps received
    /// frames before it hands them to the pipeline. Defaults to 5 ms.
    pub batch_delay: Duration,
    /// `BINANCE_INGEST_BATCH_SIZE`: payload bytes after which a reader hands
    /// a batch over at once. Defaults to 256 KiB.
    pub batch_size: usize,
    /// `BINANCE_INGEST_HTTP_THREADS`: request handler threads. Defaults to 2.
    pub http_threads: usize,
    /// `BINANCE_INGEST_DEDUP_WINDOW`: payload digests remembered per stream
    /// without ids. Defaults to 256.
    pub dedup_window: usize,
    /// `BINANCE_INGEST_MAX_STREAMS`: upper bound on configured streams, which
    /// bounds every per-stream table. Defaults to 4096.
    pub max_streams: usize,
    /// `BINANCE_INGEST_SINK_BUFFER_SIZE`: staged bytes after which the sink
    /// stops reading the ring until its writes catch up. Defaults to 8 MiB.
    pub sink_buffer_size: usize,
    /// `BINANCE_INGEST_SINK_SHUTDOWN_RETRY`: how long the sink keeps
    /// retrying failed writes at shutdown before it gives up on the
    /// unwritten records. 1 s to 50 s, below the unit's 60 s stop timeout.
    /// Defaults to 30 s.
    pub sink_shutdown_retry: Duration,
    /// `BINANCE_INGEST_MEMORY_LIMIT`: ceiling on the worst-case memory
    /// budget computed from the other limits; start-up fails above it.
    /// Defaults to 2 GiB.
    pub memory_limit: u64,
    /// `BINANCE_INGEST_MEMORY_SAMPLE_INTERVAL`: time between memory samples.
    /// Defaults to 30 s.
    pub memory_sample_interval: Duration,
    /// `BINANCE_INGEST_MEMORY_WINDOW`: span of samples kept for leak
    /// detection. Defaults to 24 h.
    pub memory_window: Duration,
    /// `BINANCE_INGEST_MEMORY_WARMUP`: warm-up before leak detection starts,
    /// however soon the cache ring fills. Defaults to 30 min.
    pub memory_warmup: Duration,
    /// `BINANCE_INGEST_MEMORY_LEAK_THRESHOLD`: projected RSS growth over 24 h
    /// that raises the leak alert, in bytes. Defaults to 50 MiB.
    pub memory_leak_threshold: u64,
    /// `BINANCE_INGEST_MEMORY_WARN`: RSS that raises the warn alert, in
    /// bytes. Defaults to 1 GiB.
    pub memory_warn: u64,
    /// `BINANCE_INGEST_MEMORY_CRITICAL`: RSS that raises the critical alert,
    /// in bytes. Defaults to 2 GiB.
    pub memory_critical: u64,
    /// `BINANCE_INGEST_MEMORY_EXIT_ON_CRITICAL`: shut down cleanly with exit
    /// status 75 at the critical level. Defaults to false.
    pub memory_exit_on_critical: bool,
    /// Origin of each value. It is not a setting, so it never affects
    /// equality. Defaults to [`Source::Default`] for every key.
    pub sources: Sources,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            venue: Venue::Spot,
            streams: vec!["btcusdt@trade".to_string(), "btcusdt@depth@100ms".to_string()],
            endpoint: None,
            ca_file: None,
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 9780)),
            instance: "main".to_string(),
            cache_size: 64 << 20,
            frame_queue: 64,
            frame_queue_bytes: 64 << 20,
            flush_interval: Duration::from_secs(1),
            max_streams_per_connection: 1024,
            routing: RoutingRules::default(),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            stale_after: None,
            server_ping_interval: None,
            client_ping_interval: Duration::from_secs(180),
            pong_timeout: Duration::from_secs(30),
            data_stale_after: Duration::from_secs(600),
            stream_stale_after: Vec::new(),
            rotate_interval: Duration::from_secs(4 * 3600),
            rotate_jitter_percent: 5,
            overlap_timeout: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
            max_message_size: 16 << 20,
            max_frame_size: 16 << 20,
            batch_delay: Duration::from_millis(5),
            batch_size: 256 << 10,
            http_threads: 2,
            dedup_window: 256,
            max_streams: 4096,
            sink_buffer_size: 8 << 20,
            sink_shutdown_retry: Duration::from_secs(30),
            memory_limit: 2 << 30,
            memory_sample_interval: Duration::from_secs(30),
            memory_window: Duration::from_secs(24 * 3600),
            memory_warmup: Duration::from_secs(30 * 60),
            memory_leak_threshold: 50 << 20,
            memory_warn: 1 << 30,
            memory_critical: 2 << 30,
            memory_exit_on_critical: false,
            sources: Sources::default(),
        }
    }
}

impl Config {
    /// Applies `settings` over the defaults in precedence order (file, then
    /// environment, then flags; within one source, later wins) and
    /// validates the result.
    ///
    /// # Errors
    /// [`Error::Config`] naming the key, the value, what is accepted and
    /// where the value was set. A bad value fails even when a source of
    /// higher precedence overrides it.
    pub fn resolve(settings: impl IntoIterator<Item = Setting>) -> Result<Config, Error> {
        let mut settings: Vec<Setting> = settings.into_iter().collect();
        settings.sort_by_key(|setting| setting.source);

        let mut config = Config::default();
        for setting in settings {
            // Setting values come from lookup_key and flag_setting, which
            // only return indices into KEYS; get() guards hand-made ones.
            let Some(key) = KEYS.get(setting.key) else {
                return Err(Error::Usage(format!("no key with index {}", setting.key)));
            };
            (key.apply)(&mut config, &setting.value).map_err(|problem| ConfigError {
                key: key.env_name(),
                value: setting.value.clone(),
                problem: format!("{problem} (set {})", setting.origin),
                combined: false,
            })?;
            config.sources.set(setting.key, setting.source);
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks every value and the relations between them, and that the CA
    /// file can be read. [`Config::resolve`] calls this; call it again on a
    /// config built in code.
    ///
    /// # Errors
    /// The first problem found; relations name both keys.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Parsing each value's text form again runs the same checks a value
        // read from settings gets, so a config built in code cannot skip them.
        let mut scratch = Config::default();
        for key in KEYS {
            let text = key.value_text(self);
            (key.apply)(&mut scratch, &text).map_err(|problem| invalid(key, text, problem))?;
        }
        self.validate_relations()?;
        self.validate_timers()?;
        if let Some(path) = &self.ca_file {
            check_ca_file(path)
                .map_err(|problem| invalid(key("CA_FILE"), path.display().to_string(), problem))?;
        }
        Ok(())
    }

    fn validate_relations(&self) -> Result<(), ConfigError> {
        let text = |name: &str| key(name).value_text(self);
        if self.streams.len() > self.max_streams {
            let value = format!("{} streams", self.streams.len());
            let limit = key("MAX_STREAMS").env_name();
            let problem = format!(
                "more than {limit}={} allows; remove streams or raise {limit}",
                self.max_streams
            );
            return Err(invalid(key("STREAMS"), value, problem));
        }
        let pairs = [
            (self.reconnect_min <= self.reconnect_max, "RECONNECT_MIN", "RECONNECT_MAX"),
            (self.max_frame_size <= self.max_message_size, "MAX_FRAME_SIZE", "MAX_MESSAGE_SIZE"),
            (self.batch_size <= self.max_message_size, "BATCH_SIZE", "MAX_MESSAGE_SIZE"),
            (self.memory_warn <= self.memory_critical, "MEMORY_WARN", "MEMORY_CRITICAL"),
            (
                self.memory_sample_interval <= self.memory_window,
                "MEMORY_SAMPLE_INTERVAL",
                "MEMORY_WINDOW",
            ),
        ];
        for (holds, lower, upper) in pairs {
            if !holds {
                let problem = format!(
                    "must not exceed {}={}; lower it or raise {}",
                    key(upper).env_name(),
                    text(upper),
                    key(upper).env_name()
                );
                return Err(invalid(key(lower), text(lower), problem));
            }
        }
        self.validate_memory()
    }

    /// Checks the sample count of the memory window and the worst-case
    /// memory budget against `MEMORY_LIMIT`.
    fn validate_memory(&self) -> Result<(), ConfigError> {
        let samples =
            crate::memory::window_samples(self.memory_window, self.memory_sample_interval);
        if samples > crate::memory::MAX_WINDOW_SAMPLES {
            let problem = format!(
                "keeps {samples} samples at {}={}, more than {}; shorten it or raise {}",
                key("MEMORY_SAMPLE_INTERVAL").env_name(),
                key("MEMORY_SAMPLE_INTERVAL").value_text(self),
                crate::memory::MAX_WINDOW_SAMPLES,
                key("MEMORY_SAMPLE_INTERVAL").env_name(),
            );
            return Err(invalid(
                key("MEMORY_WINDOW"),
                key("MEMORY_WINDOW").value_text(self),
                problem,
            ));
        }
        // A full cache ring alone reaches CACHE_SIZE of RSS, so a critical
        // level at or below it would fire on every healthy run, and with
        // MEMORY_EXIT_ON_CRITICAL the service would restart in a loop.
        if self.memory_critical <= self.cache_size as u64 {
            let problem = format!(
                "must be above {}={}, which a full cache ring reaches on every healthy run; \
                 raise it or lower {}",
                key("CACHE_SIZE").env_name(),
                key("CACHE_SIZE").value_text(self),
                key("CACHE_SIZE").env_name(),
            );
            return Err(invalid(
                key("MEMORY_CRITICAL"),
                key("MEMORY_CRITICAL").value_text(self),
                problem,
            ));
        }
        let budget = crate::memory::Budget::worst_case(self);
        if budget.total() > self.memory_limit {
            let limit = key("MEMORY_LIMIT");
            let problem = format!(
                "the worst-case memory budget of {} exceeds {}={}; {}",
                crate::memory::format_size_rounded(budget.total()),
                limit.env_name(),
                limit.value_text(self),
                budget.advice()
            );
            return Err(ConfigError {
                key: limit.env_name(),
                value: limit.value_text(self),
                problem,
                combined: true,
            });
        }
        // RSS may reach the budget total under a full load without a leak.
        // With the exit on, a critical level below it would restart the
        // service in a loop, so it is rejected. Without the exit it only
        // raises an alert, which level_warnings reports.
        if self.memory_exit_on_critical && self.memory_critical < budget.total() {
            let critical = key("MEMORY_CRITICAL");
            let exit = key("MEMORY_EXIT_ON_CRITICAL");
            let problem = format!(
                "must be at least the worst-case memory budget of {}, which RSS may reach \
                 under a full load, because {}=true would otherwise restart the service in a \
                 loop; set {} to {} or more, lower the largest parts of the budget or set \
                 {}=false",
                crate::memory::format_size_rounded(budget.total()),
                exit.env_name(),
                critical.env_name(),
                format_size(crate::memory::round_up_mib(budget.total())),
                exit.env_name(),
            );
            return Err(invalid(critical, critical.value_text(self), problem));
        }
        Ok(())
    }

    /// Server ping interval: the configured one, else the venue's.
    pub fn effective_server_ping_interval(&self) -> Duration {
        self.server_ping_interval.unwrap_or_else(|| self.venue.server_ping_interval())
    }

    /// Stale threshold: the configured one, else 60 s when the server pings
    /// at least every 20 s (spot), and one ping interval plus a minute
    /// otherwise (4 min on futures).
    pub fn effective_stale_after(&self) -> Duration {
        self.stale_after.unwrap_or_else(|| {
            let ping = self.effective_server_ping_interval();
            let minute = Duration::from_secs(60);
            // Three spot pings fit in a minute; a slower pinger gets one
            // interval plus a minute.
            if ping * 3 <= minute { minute } else { ping + minute }
        })
    }

    /// Checks the heartbeat and rotation timers against each other and the
    /// venue's behaviour.
    fn validate_timers(&self) -> Result<(), ConfigError> {
        let text = |name: &str| key(name).value_text(self);
        let ping = self.effective_server_ping_interval();
        let stale = self.effective_stale_after();
        if stale <= ping {
            let problem = format!(
                "must exceed the server ping interval ({}, {}): a healthy quiet \
                 connection sees only pings, so a shorter threshold kills it between two pings",
                format_duration(ping),
                key("SERVER_PING_INTERVAL").env_name()
            );
            return Err(invalid(key("STALE_AFTER"), format_duration(stale), problem));
        }
        if !self.client_ping_interval.is_zero() && self.pong_timeout >= self.client_ping_interval {
            let problem = format!(
                "must be shorter than {}={}: the next ping would be due before the \
                 previous one timed out",
                key("CLIENT_PING_INTERVAL").env_name(),
                text("CLIENT_PING_INTERVAL")
            );
            return Err(invalid(key("PONG_TIMEOUT"), text("PONG_TIMEOUT"), problem));
        }
        if self.rotate_interval >= Duration::from_secs(24 * 3600) {
            let problem = "must be under 24h: Binance closes every connection at 24 h, so \
                           rotation would never come first"
                .to_string();
            return Err(invalid(key("ROTATE_INTERVAL"), text("ROTATE_INTERVAL"), problem));
        }
        for (stream, _) in &self.stream_stale_after {
            if !self.streams.contains(stream) {
                let problem = format!(
                    "names {stream}, which is not in {}; a threshold for it would never apply",
                    key("STREAMS").env_name()
                );
                return Err(invalid(
                    key("STREAM_STALE_AFTER"),
                    text("STREAM_STALE_AFTER"),
                    problem,
                ));
            }
        }
        let latest_close = self.rotate_interval + self.connect_timeout + self.overlap_timeout;
        if !self.rotate_interval.is_zero() && latest_close >= Duration::from_secs(24 * 3600) {
            let problem = format!(
                "leaves no room before Binance's 24 h cut for the handshake ({}={}) and the \
                 overlap ({}={}); lower it",
                key("CONNECT_TIMEOUT").env_name(),
                text("CONNECT_TIMEOUT"),
                key("OVERLAP_TIMEOUT").env_name(),
                text("OVERLAP_TIMEOUT")
            );
            return Err(invalid(key("ROTATE_INTERVAL"), text("ROTATE_INTERVAL"), problem));
        }
        if !self.rotate_interval.is_zero() && self.overlap_timeout >= self.rotate_interval {
            let problem = format!(
                "must be shorter than {}={}: an overlap would last into the next rotation",
                key("ROTATE_INTERVAL").env_name(),
                text("ROTATE_INTERVAL")
            );
            return Err(invalid(key("OVERLAP_TIMEOUT"), text("OVERLAP_TIMEOUT"), problem));
        }
        // Rotation may come early by up to the jitter share, and must then
        // still leave room for the handshake and the overlap before the
        // next rotation and before Binance's 24 h cut.
        let earliest =
            self.rotate_interval.mul_f64(1.0 - self.rotate_jitter_percent.min(100) as f64 / 100.0);
        if !self.rotate_interval.is_zero() && self.overlap_timeout >= earliest {
            let problem = format!(
                "must be shorter than the earliest jittered rotation, {} ({}={} less {}%)",
                format_duration(earliest),
                key("ROTATE_INTERVAL").env_name(),
                text("ROTATE_INTERVAL"),
                self.rotate_jitter_percent
            );
            return Err(invalid(key("OVERLAP_TIMEOUT"), text("OVERLAP_TIMEOUT"), problem));
        }
        Ok(())
    }

    /// Endpoint to connect to: the override, else the venue's.
    pub fn effective_endpoint(&self) -> Endpoint {
        self.endpoint.clone().unwrap_or_else(|| self.venue.default_endpoint())
    }

    /// Source of the value of the key named `name` (without prefix, such as
    /// `CACHE_SIZE`), or `None` for an unknown name.
    pub fn source_of(&self, name: &str) -> Option<Source> {
        KEYS.iter().position(|key| key.name == name).map(|index| self.sources.get(index))
    }

    /// Writes the settings as `KEY=value` lines that read back as the same
    /// config, for `check-config`. A comment line above a value names its
    /// source when that is not the default. The comment is on its own line
    /// because systemd's `EnvironmentFile=` has no trailing comments.
    pub fn describe(&self) -> String {
        let mut out = String::from(
            "# binance-ingest settings as resolved; valid as a --config file.\n\
             # A value without a comment line above it is the built-in default.\n",
        );
        for (index, key) in KEYS.iter().enumerate() {
            let source = self.sources.get(index);
            if source != Source::Default {
                out.push_str(&format!("# from {}\n", source.name()));
            }
            out.push_str(&format!("{}={}\n", key.env_name(), file::quote(&key.value_text(self))));
        }
        out
    }
}

/// Writes the sample settings file shipped as `etc/binance-ingest.conf`:
/// every key commented out with its default and meaning.
pub fn sample_file() -> String {
    let defaults = Config::default();
    let mut out = String::from(
        "# binance-ingest settings: one KEY=value per line, read with --config FILE\n\
         # or by systemd's EnvironmentFile=. Environment variables override this\n\
         # file, and command-line flags (--cache-size 64MiB) override both.\n\
         #\n\
         # Durations take a unit: 250ms, 30s, 5m, 4h, 1h30m, 7d. Sizes are bytes or\n\
         # take a binary unit: 512KiB, 64MiB, 1GiB (KB, MB and GB are rejected\n\
         # as ambiguous). Booleans: true, false, 1, 0, yes, no. Values may be\n\
         # quoted; a # after a value is part of the value.\n\
         #\n\
         # Every line below shows the built-in default.\n",
    );
    for key in KEYS {
        out.push_str(&format!(
            "\n# {}\n#{}={}\n",
            key.help,
            key.env_name(),
            file::quote(&key.value_text(&defaults))
        ));
    }
    out
}

/// Writes the settings reference for the README: one Markdown table row
/// per key with its variable, flag, default and meaning.
pub fn reference_table() -> String {
    let defaults = Config::default();
    let mut out = String::from("| Variable | Flag | Default | Meaning |\n|---|---|---|---|\n");
    for key in KEYS {
        let default = key.value_text(&defaults);
        let default =
            if default.is_empty() { "(none)".to_string() } else { format!("`{default}`") };
        out.push_str(&format!(
            "| `{}` | `--{} {}` | {default} | {} |\n",
            key.env_name(),
            key.flag_name(),
            key.placeholder,
            key.help.replace('|', "\\|")
        ));
    }
    out
}

/// Returns the table entry named `name`.
///
/// # Panics
/// When no key has that name; callers pass literals from [`KEYS`], which
/// the tests cover.
fn key(name: &str) -> &'static Key {
    match KEYS.iter().find(|key| key.name == name) {
        Some(key) => key,
        None => panic!("no configuration key named {name}"),
    }
}

fn invalid(key: &Key, value: String, problem: String) -> ConfigError {
    ConfigError { key: key.env_name(), value, problem, combined: false }
}

/// Checks that `path` can be read and contains a PEM certificate, so a
/// wrong path fails at start-up and not at the first connection.
fn check_ca_file(path: &Path) -> Result<(), String> {
    let failed = |error: std::io::Error| format!("failed to read the file: {error}");
    let mut text = Vec::new();
    // The limit keeps a path such as /dev/zero from reading forever; CA
    // bundles are a few hundred KiB.
    fs::File::open(path)
        .and_then(|file| file.take(MAX_CA_FILE_SIZE + 1).read_to_end(&mut text))
        .map_err(failed)?;
    if text.len() as u64 > MAX_CA_FILE_SIZE {
        return Err(format!("the file is larger than {}", format_size(MAX_CA_FILE_SIZE)));
    }
    if !text.windows(27).any(|window| window == b"-----BEGIN CERTIFICATE-----") {
        return Err("the file contains no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests;
