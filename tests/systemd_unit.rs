//! The shipped systemd unit, checked as text and, when `systemd-analyze`
//! is installed, by `systemd-analyze verify` with the paths `make install`
//! substitutes pointing at the test build.

use std::path::PathBuf;
use std::process::Command;

fn unit_text() -> String {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("etc/systemd/binance-ingest@.service");
    std::fs::read_to_string(path).unwrap()
}

/// Returns the value of `key=` in `section` of a unit file.
fn unit_value<'a>(text: &'a str, section: &str, key: &str) -> Option<&'a str> {
    let mut current = "";
    for line in text.lines() {
        if line.starts_with('[') {
            current = line;
        } else if current == section
            && let Some(value) = line.strip_prefix(key).and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value);
        }
    }
    None
}

fn systemd_size(text: &str) -> u64 {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
    let factor = match unit {
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("unexpected unit {other:?} in {text}"),
    };
    digits.parse::<u64>().unwrap() * factor
}

#[test]
fn memory_limits_sit_above_default_limit() {
    let text = unit_text();
    let default_limit = binance_ingest::config::Config::default().memory_limit;
    let high = systemd_size(unit_value(&text, "[Service]", "MemoryHigh").expect("MemoryHigh="));
    let max = systemd_size(unit_value(&text, "[Service]", "MemoryMax").expect("MemoryMax="));
    assert!(high > default_limit, "MemoryHigh={high} is not above MEMORY_LIMIT {default_limit}");
    assert!(max > high, "MemoryMax={max} is not above MemoryHigh={high}");
}

#[test]
fn start_limits_sit_in_unit_section() {
    let text = unit_text();
    for key in ["StartLimitIntervalSec", "StartLimitBurst"] {
        assert!(unit_value(&text, "[Unit]", key).is_some(), "{key} is not in [Unit]");
        assert!(unit_value(&text, "[Service]", key).is_none(), "{key} is in [Service]");
    }
}

#[test]
fn systemd_analyze_accepts_unit() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("skipped: systemd-analyze is not installed");
        return;
    }
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_binance-ingest"));
    let bindir = binary.parent().unwrap().display().to_string();
    let text = unit_text().replace("@BINDIR@", &bindir).replace("@SYSCONFDIR@", "/etc");
    let dir = std::env::temp_dir().join(format!("binance-ingest-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("binance-ingest@.service");
    std::fs::write(&path, text).unwrap();
    let output =
        Command::new("systemd-analyze").args(["verify", "--man=no"]).arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "{stderr}");
    // Other lines may come from the host (no bus, other units); only lines
    // about this unit count.
    let about_unit: Vec<&str> =
        stderr.lines().filter(|line| line.contains("binance-ingest@")).collect();
    assert!(about_unit.is_empty(), "systemd-analyze warns:\n{stderr}");
}
