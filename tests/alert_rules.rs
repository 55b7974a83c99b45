//! The shipped Prometheus alert rules: `promtool check rules` finds no
//! problem and `promtool test rules` passes their unit tests.

use std::path::PathBuf;
use std::process::{Command, Output};

fn rules_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("etc/prometheus")
}

/// Runs promtool with `args` in the rules folder, or returns `None` with a
/// printed message when promtool is not installed.
fn promtool(args: &[&str]) -> Option<Output> {
    match Command::new("promtool").args(args).current_dir(rules_dir()).output() {
        Ok(output) => Some(output),
        Err(error) => {
            println!("skipped: promtool not found ({error}); `make deps` installs it");
            None
        }
    }
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn rules_pass_promtool_check() {
    let Some(output) = promtool(&["check", "rules", "--lint=all", "binance-ingest-rules.yml"])
    else {
        return;
    };
    let report = text(&output);
    assert!(output.status.success(), "promtool check rules failed:\n{report}");
    assert!(report.contains("SUCCESS: 8 rules found"), "{report}");
    let findings: Vec<&str> = report
        .lines()
        .filter(|line| !line.trim().is_empty())
        .filter(|line| !line.starts_with("Checking ") && !line.contains("SUCCESS"))
        .collect();
    assert!(findings.is_empty(), "promtool findings:\n{}", findings.join("\n"));
}

#[test]
fn rules_pass_their_unit_tests() {
    let Some(output) = promtool(&["test", "rules", "binance-ingest-rules.test.yml"]) else {
        return;
    };
    let report = text(&output);
    assert!(output.status.success(), "promtool test rules failed:\n{report}");
    assert!(report.contains("SUCCESS"), "{report}");
    assert!(!report.contains("FAILED"), "{report}");
}

#[test]
fn rules_name_metrics_the_service_exports() {
    // Each binance_ingest_ metric a rule reads must exist in the source, so
    // a renamed metric breaks this test and not a production alert.
    let rules = std::fs::read_to_string(rules_dir().join("binance-ingest-rules.yml")).unwrap();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut source = String::new();
    for entry in walk(&root) {
        source.push_str(&std::fs::read_to_string(entry).unwrap());
    }
    let mut checked = 0;
    for word in rules.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(name) = word.strip_prefix("binance_ingest_") {
            assert!(
                source.contains(&format!("\"{name}\""))
                    || source.contains(&format!("{{PREFIX}}{name}\"")),
                "rule reads binance_ingest_{name}, which no source file defines"
            );
            checked += 1;
        }
    }
    assert!(checked >= 6, "found only {checked} metric names in the rules");
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            files.push(path);
        }
    }
    files
}
