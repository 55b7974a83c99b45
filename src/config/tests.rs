//! Tests of settings resolution, validation, `describe` and the sample file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::plan::Route;

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("binance-ingest-config-{}-{n}", std::process::id()));
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn setting(name: &str, value: &str, source: Source) -> Setting {
    let key = KEYS.iter().position(|key| key.name == name).unwrap();
    Setting { key, value: value.to_string(), source, origin: format!("from {source:?}") }
}

fn config_error(result: Result<Config, Error>) -> ConfigError {
    match result {
        Err(Error::Config(error)) => error,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn defaults_are_valid() {
    Config::default().validate().unwrap();
}

#[test]
fn every_key_reads_its_default_text() {
    let defaults = Config::default();
    for key in KEYS {
        let mut config = Config::default();
        // Start from a changed config, so a parser that ignores its input fails.
        config.streams.clear();
        config.instance.clear();
        let text = key.value_text(&defaults);
        (key.apply)(&mut config, &text).unwrap_or_else(|p| panic!("{}: {p}", key.name));
        assert_eq!(key.value_text(&config), text, "{}", key.name);
    }
    let settings =
        KEYS.iter().map(|key| setting(key.name, &key.value_text(&defaults), Source::File));
    assert_eq!(Config::resolve(settings).unwrap(), defaults);
}

#[test]
fn bad_values_name_the_key() {
    let cases = [
        ("VENUE", "futures", "expected one of spot, data-stream"),
        ("STREAMS", "", "at least one stream"),
        ("STREAMS", "btcusdt@trade,,ethusdt@trade", "empty stream name"),
        ("STREAMS", "btcusdt", "<symbol>@<type>"),
        ("STREAMS", "btc/usdt@trade", "allowed are"),
        ("STREAMS", "BTCUSDT@aggTrade", "e.g. btcusdt@aggTrade"),
        ("ENDPOINT", "https://x", "wss://"),
        ("ENDPOINT", "wss://x/stream", "no path"),
        ("ENDPOINT", "ws://stream.binance.com", "loopback"),
        ("CA_FILE", "/nonexistent/ca.pem", "failed to read"),
        ("DATA_DIR", "", "expected a path"),
        ("DATA_DIR", "data\n", "control character"),
        ("HTTP_ADDR", "localhost:9780", "IP:port"),
        ("HTTP_ADDR", "127.0.0.1", "IP:port"),
        ("INSTANCE", "", "1 to 64"),
        ("INSTANCE", "a/b", "file names"),
        ("INSTANCE", &"x".repeat(65), "1 to 64"),
        ("CACHE_SIZE", "64MB", "ambiguous"),
        ("CACHE_SIZE", "1023KiB", "1MiB to 16GiB"),
        ("CACHE_SIZE", "17GiB", "1MiB to 16GiB"),
        ("CACHE_SIZE", "-1", "negative"),
        ("FRAME_QUEUE", "0", "1 to 65536"),
        ("FRAME_QUEUE", "-3", "whole number"),
        ("FRAME_QUEUE", "1e3", "whole number"),
        ("FRAME_QUEUE", "99999999999999999999999", "whole number"),
        ("FLUSH_INTERVAL", "0ms", "1ms to 1s"),
        ("FLUSH_INTERVAL", "2s", "1ms to 1s"),
        ("FLUSH_INTERVAL", "500", "missing unit"),
        ("MAX_STREAMS_PER_CONNECTION", "0", "1 to 1024"),
        ("MAX_STREAMS_PER_CONNECTION", "1025", "1 to 1024"),
        ("USDM_TRADE_ROUTE", "legacy", "public or market"),
        ("COINM_ROUTED", "maybe", "true, false"),
        ("RECONNECT_MIN", "0s", "1ms to 1h"),
        ("RECONNECT_MAX", "2h", "1ms to 1h"),
        ("CONNECT_TIMEOUT", "10", "missing unit"),
        ("STALE_AFTER", "-1s", "negative"),
        ("MAX_MESSAGE_SIZE", "512", "1KiB to 1GiB"),
        ("MAX_FRAME_SIZE", "2GiB", "1KiB to 1GiB"),
        ("BATCH_DELAY", "2s", "0s to 1s"),
        ("BATCH_SIZE", "0", "1B to 1GiB"),
        ("HTTP_THREADS", "0", "1 to 64"),
        ("DEDUP_WINDOW", "65537", "1 to 65536"),
        ("MAX_STREAMS", "0", "1 to 65536"),
    ];
    for (name, value, expected) in cases {
        let error = config_error(Config::resolve([setting(name, value, Source::Env)]));
        assert_eq!(error.key, format!("BINANCE_INGEST_{name}"), "{name}={value:?}");
        assert_eq!(error.value, value, "{name}={value:?}");
        assert!(error.problem.contains(expected), "{name}={value:?}: {}", error.problem);
        let message = error.to_string();
        assert!(message.contains(&format!("BINANCE_INGEST_{name}")), "{message}");
    }
}

#[test]
fn relations_name_both_keys() {
    let cases = [
        (("RECONNECT_MIN", "10s"), ("RECONNECT_MAX", "5s")),
        (("MAX_FRAME_SIZE", "32MiB"), ("MAX_MESSAGE_SIZE", "16MiB")),
        (("BATCH_SIZE", "64MiB"), ("MAX_MESSAGE_SIZE", "32MiB")),
        (("STREAMS", "a@trade,b@trade,c@trade"), ("MAX_STREAMS", "2")),
    ];
    for ((lower, lower_value), (upper, upper_value)) in cases {
        let settings =
            [setting(lower, lower_value, Source::File), setting(upper, upper_value, Source::File)];
        let error = config_error(Config::resolve(settings));
        let message = error.to_string();
        assert_eq!(error.key, format!("BINANCE_INGEST_{lower}"), "{message}");
        assert!(message.contains(&format!("BINANCE_INGEST_{upper}={upper_value}")), "{message}");
    }
}

#[test]
fn later_sources_win() {
    let settings = [
        setting("CACHE_SIZE", "4MiB", Source::Flag),
        setting("CACHE_SIZE", "3MiB", Source::Env),
        setting("FRAME_QUEUE", "3", Source::Env),
        setting("CACHE_SIZE", "2MiB", Source::File),
        setting("FRAME_QUEUE", "2", Source::File),
        setting("FLUSH_INTERVAL", "2ms", Source::File),
    ];
    let config = Config::resolve(settings).unwrap();
    assert_eq!(config.cache_size, 4 << 20);
    assert_eq!(config.frame_queue, 3);
    assert_eq!(config.flush_interval, Duration::from_millis(2));
    assert_eq!(config.source_of("CACHE_SIZE"), Some(Source::Flag));
    assert_eq!(config.source_of("FRAME_QUEUE"), Some(Source::Env));
    assert_eq!(config.source_of("FLUSH_INTERVAL"), Some(Source::File));
    assert_eq!(config.source_of("VENUE"), Some(Source::Default));
    assert_eq!(config.source_of("NO_SUCH_KEY"), None);
}

#[test]
fn overridden_bad_value_still_fails() {
    let settings =
        [setting("CACHE_SIZE", "lots", Source::File), setting("CACHE_SIZE", "2MiB", Source::Flag)];
    let error = config_error(Config::resolve(settings));
    assert_eq!(error.value, "lots");
    assert!(error.problem.contains("(set from File)"), "{}", error.problem);
}

#[test]
fn file_values_are_typed() {
    let text = "\
# comment
export BINANCE_INGEST_VENUE=usdm
BINANCE_INGEST_STREAMS = 'btcusdt@trade, ethusdt@depth@100ms,btcusdt@trade'
BINANCE_INGEST_DATA_DIR=\"/var/lib/binance ingest\"
BINANCE_INGEST_ENDPOINT=wss://127.0.0.1:9443
BINANCE_INGEST_USDM_TRADE_ROUTE=market
BINANCE_INGEST_COINM_ROUTED=yes
BINANCE_INGEST_RECONNECT_MAX=1h
BINANCE_INGEST_STALE_AFTER=4m30s
";
    let config = Config::resolve(parse_file(text, "test.conf").unwrap()).unwrap();
    assert_eq!(config.venue, Venue::UsdM);
    assert_eq!(config.streams, vec!["btcusdt@trade", "ethusdt@depth@100ms"]);
    assert_eq!(config.data_dir, PathBuf::from("/var/lib/binance ingest"));
    assert_eq!(config.endpoint, Some(Endpoint::parse("wss://127.0.0.1:9443").unwrap()));
    assert_eq!(config.routing.usdm_trade, Route::Market);
    assert!(config.routing.coinm_routed);
    assert_eq!(config.reconnect_max, Duration::from_secs(3600));
    assert_eq!(config.stale_after, Some(Duration::from_secs(270)));
    assert_eq!(config.source_of("VENUE"), Some(Source::File));
}

#[test]
fn file_errors_carry_line_numbers() {
    let cases = [
        ("BINANCE_INGEST_VENUE=spot\n\nnot a setting\n", "test.conf line 3", "expected KEY=value"),
        ("# x\nBINANCE_INGEST_CACHE_SIZ=1MiB\n", "BINANCE_INGEST_CACHE_SIZ", "test.conf line 2"),
        ("BINANCE_INGEST_VENUE=\"spot\n", "test.conf line 1", "missing closing"),
        (
            "BINANCE_INGEST_VENUE=spot\nBINANCE_INGEST_VENUE=usdm\n",
            "BINANCE_INGEST_VENUE",
            "1 and 2",
        ),
    ];
    for (text, key, expected) in cases {
        let error = config_error(parse_file(text, "test.conf").map(|_| Config::default()));
        assert_eq!(error.key, key, "{text:?}");
        assert!(error.to_string().contains(expected), "{text:?}: {error}");
    }
    let settings = parse_file("\n\nBINANCE_INGEST_FRAME_QUEUE=0\n", "test.conf").unwrap();
    let error = config_error(Config::resolve(settings));
    assert!(error.problem.contains("in test.conf line 3"), "{}", error.problem);
}

#[test]
fn unknown_keys_get_a_hint() {
    let error =
        config_error(parse_file("BINANCE_INGEST_CACHE_SIZ=1MiB", "x").map(|_| Config::default()));
    assert!(error.problem.contains("did you mean BINANCE_INGEST_CACHE_SIZE?"), "{}", error.problem);
    let error = config_error(parse_file("CACHE_SIZE=1MiB", "x").map(|_| Config::default()));
    assert!(error.problem.contains("did you mean BINANCE_INGEST_CACHE_SIZE?"), "{}", error.problem);
    let error = config_error(parse_file("RUST_LOG=debug", "x").map(|_| Config::default()));
    assert!(error.problem.contains("keys start with BINANCE_INGEST_"), "{}", error.problem);
}

#[test]
fn unknown_env_variables_are_rejected() {
    let env = [
        ("PATH".to_string(), "/usr/bin".to_string()),
        ("BINANCE_INGEST_STREAM".to_string(), "btcusdt@trade".to_string()),
    ];
    let error = config_error(env_settings(env).map(|_| Config::default()));
    assert_eq!(error.key, "BINANCE_INGEST_STREAM");
    assert!(error.problem.contains("did you mean BINANCE_INGEST_STREAMS?"), "{}", error.problem);
    let env = [("HOME".to_string(), "/root".to_string())];
    assert!(env_settings(env).unwrap().is_empty());
}

#[test]
fn unknown_flags_get_a_hint() {
    match flag_setting("cache-siz", "1MiB".to_string()) {
        Err(Error::Usage(message)) => {
            assert!(message.contains("--cache-siz"), "{message}");
            assert!(message.contains("did you mean --cache-size?"), "{message}");
        }
        other => panic!("expected a usage error, got {other:?}"),
    }
    assert_eq!(flag_setting("cache-size", "1MiB".into()).unwrap().source, Source::Flag);
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = TempDir::new();
    let pem = dir.write("ca.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    let config =
        Config::resolve([setting("CA_FILE", &pem.display().to_string(), Source::Flag)]).unwrap();
    assert_eq!(config.ca_file, Some(pem));

    let empty = dir.write("empty.pem", "");
    let error = config_error(Config::resolve([setting(
        "CA_FILE",
        &empty.display().to_string(),
        Source::Flag,
    )]));
    assert!(error.problem.contains("no PEM certificate"), "{}", error.problem);

    let folder = dir.0.display().to_string();
    let error = config_error(Config::resolve([setting("CA_FILE", &folder, Source::Flag)]));
    assert!(error.problem.contains("failed to read"), "{}", error.problem);
}

#[test]
fn describe_round_trips() {
    let dir = TempDir::new();
    let pem = dir.write("my ca.pem", "-----BEGIN CERTIFICATE-----\n");
    let settings = [
        setting("VENUE", "coinm", Source::File),
        setting("STREAMS", "btcusd_perp@aggTrade,btcusd_perp@depth@100ms", Source::File),
        setting("CA_FILE", &pem.display().to_string(), Source::Env),
        setting("DATA_DIR", " spaced \"dir\" ", Source::Flag),
        setting("HTTP_ADDR", "[::1]:0", Source::Flag),
        setting("CACHE_SIZE", "1536KiB", Source::Env),
        setting("RECONNECT_MIN", "1h", Source::Env),
        setting("RECONNECT_MAX", "60m", Source::Env),
        setting("BATCH_DELAY", "0s", Source::Env),
        setting("COINM_ROUTED", "1", Source::Env),
    ];
    let config = Config::resolve(settings).unwrap();
    let text = config.describe();
    assert!(text.contains("# from env\nBINANCE_INGEST_CACHE_SIZE=1536KiB\n"), "{text}");
    assert!(
        text.contains("# from flag\nBINANCE_INGEST_DATA_DIR=\" spaced \\\"dir\\\" \"\n"),
        "{text}"
    );
    assert!(text.contains("\nBINANCE_INGEST_FRAME_QUEUE=64\n"), "{text}");

    let again = Config::resolve(parse_file(&text, "describe").unwrap()).unwrap();
    assert_eq!(again, config);
    assert_eq!(again.data_dir, PathBuf::from(" spaced \"dir\" "));
    assert_eq!(again.describe().replace("# from file\n", ""), strip_source_lines(&text));
    for key in KEYS {
        assert_eq!(key.value_text(&again), key.value_text(&config), "{}", key.name);
    }
}

fn strip_source_lines(text: &str) -> String {
    text.lines()
        .filter(|line| !line.starts_with("# from "))
        .map(|line| format!("{line}\n"))
        .collect()
}

#[test]
fn sample_file_lists_every_key() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("etc/binance-ingest.conf");
    let text = fs::read_to_string(&path).unwrap();
    let defaults = Config::default();
    for key in KEYS {
        let line = format!("#{}={}\n", key.env_name(), file::quote(&key.value_text(&defaults)));
        assert!(
            text.contains(&line),
            "{} lacks {line:?}; regenerate it from sample_file()",
            path.display()
        );
        assert!(text.contains(key.help), "{} lacks the help of {}", path.display(), key.name);
    }
    let expected = sample_file();
    assert!(
        text == expected,
        "{} is out of date; replace it with the text between the lines:\n---\n{expected}---",
        path.display()
    );

    // The same file with every line uncommented must be a valid configuration.
    let uncommented: String = text
        .lines()
        .map(|line| {
            line.strip_prefix("#BINANCE_INGEST_").map(|rest| format!("BINANCE_INGEST_{rest}"))
        })
        .map(|line| line.unwrap_or_default() + "\n")
        .collect();
    assert_eq!(Config::resolve(parse_file(&text, "sample").unwrap()).unwrap(), defaults);
    assert_eq!(Config::resolve(parse_file(&uncommented, "sample").unwrap()).unwrap(), defaults);
}

#[test]
fn reference_table_has_a_row_per_key() {
    let table = reference_table();
    assert_eq!(table.lines().count(), KEYS.len() + 2);
    assert!(
        table.contains("| `BINANCE_INGEST_CACHE_SIZE` | `--cache-size SIZE` | `64MiB` |"),
        "{table}"
    );
    assert!(table.contains("| `BINANCE_INGEST_ENDPOINT` | `--endpoint URL` | (none) |"), "{table}");
}

#[test]
fn stale_default_follows_venue() {
    let spot = Config::default();
    assert_eq!(spot.effective_stale_after(), Duration::from_secs(60));
    let futures = Config { venue: Venue::UsdM, ..Config::default() };
    assert_eq!(futures.effective_stale_after(), Duration::from_secs(240));
    futures.validate().unwrap();
}

#[test]
fn timers_contradicting_the_venue_are_rejected() {
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case<'_>; 8] = [
        (&[("VENUE", "usdm"), ("STALE_AFTER", "1m")], "STALE_AFTER", "server ping interval"),
        (&[("PONG_TIMEOUT", "3m")], "PONG_TIMEOUT", "shorter than"),
        (&[("ROTATE_INTERVAL", "24h")], "ROTATE_INTERVAL", "under 24h"),
        (&[("ROTATE_INTERVAL", "10s")], "OVERLAP_TIMEOUT", "next rotation"),
        (
            &[("ROTATE_INTERVAL", "1s"), ("ROTATE_JITTER", "50"), ("OVERLAP_TIMEOUT", "900ms")],
            "OVERLAP_TIMEOUT",
            "earliest jittered rotation",
        ),
        (
            &[("ROTATE_INTERVAL", "23h59m59s"), ("ROTATE_JITTER", "0")],
            "ROTATE_INTERVAL",
            "24 h cut",
        ),
        (&[("STREAM_STALE_AFTER", "ethusdt@trade=5m")], "STREAM_STALE_AFTER", "not in"),
        (
            &[("STREAM_STALE_AFTER", "btcusdt@trade=5m,btcusdt@trade=1m")],
            "STREAM_STALE_AFTER",
            "twice",
        ),
    ];
    for (values, bad_key, words) in cases {
        let settings = values.iter().map(|(name, value)| setting(name, value, Source::File));
        let error = config_error(Config::resolve(settings));
        assert_eq!(error.key, format!("BINANCE_INGEST_{bad_key}"), "{values:?}");
        assert!(error.problem.contains(words), "{}", error.problem);
    }
}

#[test]
fn compressed_timers_are_accepted() {
    let values = [
        ("SERVER_PING_INTERVAL", "200ms"),
        ("STALE_AFTER", "1s"),
        ("CLIENT_PING_INTERVAL", "300ms"),
        ("PONG_TIMEOUT", "250ms"),
        ("ROTATE_INTERVAL", "400ms"),
        ("OVERLAP_TIMEOUT", "300ms"),
        ("STREAMS", "btcusdt@trade,ethusdt@trade"),
        ("STREAM_STALE_AFTER", "btcusdt@trade=2s,ethusdt@trade=1500ms"),
    ];
    let settings = values.iter().map(|(name, value)| setting(name, value, Source::Env));
    let config = Config::resolve(settings).unwrap();
    assert_eq!(config.effective_stale_after(), Duration::from_secs(1));
    assert_eq!(config.stream_stale_after[1], ("ethusdt@trade".into(), Duration::from_millis(1500)));
}

#[test]
fn critical_level_must_exceed_full_ring() {
    let settings = [
        setting("CACHE_SIZE", "1GiB", Source::File),
        setting("MEMORY_WARN", "512MiB", Source::File),
        setting("MEMORY_CRITICAL", "1GiB", Source::File),
    ];
    let error = config_error(Config::resolve(settings));
    let message = error.to_string();
    assert_eq!(error.key, "BINANCE_INGEST_MEMORY_CRITICAL", "{message}");
    assert!(message.contains("BINANCE_INGEST_CACHE_SIZE"), "{message}");
}

#[test]
fn exiting_critical_level_must_cover_budget() {
    let settings = [
        setting("CACHE_SIZE", "2040MiB", Source::Flag),
        setting("MEMORY_LIMIT", "4GiB", Source::Flag),
        setting("MEMORY_EXIT_ON_CRITICAL", "true", Source::Flag),
    ];
    let error = config_error(Config::resolve(settings.clone()));
    let message = error.to_string();
    assert_eq!(error.key, "BINANCE_INGEST_MEMORY_CRITICAL", "{message}");
    assert!(message.contains("BINANCE_INGEST_MEMORY_EXIT_ON_CRITICAL=true"), "{message}");
    assert!(message.contains("budget of 2.3 GiB"), "{message}");
    assert!(message.contains("set BINANCE_INGEST_MEMORY_CRITICAL to 2"), "{message}");

    let without_exit = [
        setting("CACHE_SIZE", "2040MiB", Source::Flag),
        setting("MEMORY_LIMIT", "4GiB", Source::Flag),
    ];
    assert!(Config::resolve(without_exit).is_ok(), "only a warning without the exit");
}
