//! The `binance-ingest` command line, run as a real process.

use std::process::{Command, Output};

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_binance-ingest"));
    command.args(args).env_clear().env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("run binance-ingest")
}

#[test]
fn bad_value_names_key_and_value() {
    let output = run(&["check-config"], &[("BINANCE_INGEST_CACHE_SIZE", "lots")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_CACHE_SIZE"), "{stderr}");
    assert!(stderr.contains("\"lots\""), "{stderr}");
    assert!(stderr.contains("MiB"), "stderr should say what is accepted: {stderr}");
}

#[test]
fn bad_value_stops_run_before_connecting() {
    let output = run(&["run"], &[("BINANCE_INGEST_STREAMS", "btcusdt")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_STREAMS"), "{stderr}");
    assert!(!stderr.contains("connect"), "nothing may connect with a bad config: {stderr}");
}

#[test]
fn unknown_flag_is_rejected() {
    let output = run(&["run", "--cache-sise", "1MiB"], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--cache-sise"));
}

#[test]
fn check_config_prints_resolved_settings() {
    let output =
        run(&["check-config", "--cache-size", "2MiB"], &[("BINANCE_INGEST_VENUE", "usdm")]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("BINANCE_INGEST_CACHE_SIZE=2MiB"), "{stdout}");
    assert!(stdout.contains("BINANCE_INGEST_VENUE=usdm"), "{stdout}");
}

#[test]
fn help_lists_every_setting() {
    let output = run(&["--help"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success());
    for key in binance_ingest::config::KEYS {
        assert!(
            stdout.contains(&format!("BINANCE_INGEST_{}", key.name)),
            "help misses {}",
            key.name
        );
    }
}

/// The README's settings table is generated from the key table; this keeps
/// the two from drifting apart. On failure, paste the printed table.
#[test]
fn readme_lists_every_setting() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let begin = "<!-- settings table: generated from src/config/keys.rs -->\n";
    let end = "<!-- end of settings table -->";
    let start = readme.find(begin).expect("README has the settings table marker") + begin.len();
    let stop = readme[start..].find(end).expect("README has the end marker") + start;
    let expected = binance_ingest::config::reference_table();
    assert!(
        readme[start..stop] == expected,
        "README settings table is stale; replace it with:\n{expected}"
    );
}

#[test]
fn check_config_parses_the_ca_file() {
    let path =
        std::env::temp_dir().join(format!("binance-ingest-bad-ca-{}.pem", std::process::id()));
    std::fs::write(&path, "-----BEGIN CERTIFICATE-----\nnot*base64\n-----END CERTIFICATE-----\n")
        .unwrap();
    let ca = path.display().to_string();
    let output = run(&["check-config"], &[("BINANCE_INGEST_CA_FILE", &ca)]);
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_CA_FILE"), "{stderr}");
}

#[test]
fn data_dir_that_is_a_file_is_named() {
    let path =
        std::env::temp_dir().join(format!("binance-ingest-data-file-{}", std::process::id()));
    std::fs::write(&path, "").unwrap();
    let data_dir = path.display().to_string();
    let output = run(
        &["run"],
        &[
            ("BINANCE_INGEST_DATA_DIR", &data_dir),
            ("BINANCE_INGEST_HTTP_ADDR", "127.0.0.1:0"),
            // Never the real exchange, should start-up get that far.
            ("BINANCE_INGEST_ENDPOINT", "wss://127.0.0.1:1"),
        ],
    );
    std::fs::remove_file(&path).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not a folder"), "{stderr}");
    assert!(stderr.contains("BINANCE_INGEST_DATA_DIR"), "{stderr}");
}

#[test]
fn over_budget_error_names_parts_and_limit() {
    let output = run(&["check-config", "--cache-size", "3GiB", "--memory-critical", "4GiB"], &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("invalid value"), "no single value is invalid: {stderr}");
    assert!(stderr.contains("exceeds BINANCE_INGEST_MEMORY_LIMIT=2GiB"), "{stderr}");
    assert!(stderr.contains("GiB ("), "sizes are rounded: {stderr}");
    assert!(stderr.contains("cache ring 3.0 GiB (BINANCE_INGEST_CACHE_SIZE)"), "{stderr}");
    assert!(stderr.contains("raise BINANCE_INGEST_MEMORY_LIMIT"), "{stderr}");
    let digits = stderr.split(|c: char| !c.is_ascii_digit()).map(str::len).max();
    assert!(digits < Some(6), "raw byte counts are hard to read: {stderr}");
}

#[test]
fn memory_window_accepts_days() {
    let output = run(&["check-config", "--memory-window", "7d"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("BINANCE_INGEST_MEMORY_WINDOW=168h"), "{stdout}");
}

#[test]
fn check_config_states_what_leak_detection_can_flag() {
    let output = run(&["check-config"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("# leak detection flags growth of 50.0 MiB per 24 h"), "{stdout}");

    let output =
        run(&["check-config", "--memory-window", "2m", "--memory-sample-interval", "1s"], &[]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout.contains("# warning: leak detection flags only growth of 14.1 GiB per 24 h"),
        "{stdout}"
    );
}
