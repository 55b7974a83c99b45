//! Checks of what the service stored against what the mock sent.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use binance_ingest::digest::fnv1a;

use super::mock::{MockExchange, SentEntry};
use super::service::StoredRecord;

/// Settings every lifecycle test starts from: the mock as endpoint, its CA
/// trusted, and short reconnect and flush timers.
pub fn base_settings(mock: &MockExchange, streams: &str) -> Vec<(&'static str, String)> {
    vec![
        ("BINANCE_INGEST_ENDPOINT", mock.endpoint()),
        ("BINANCE_INGEST_CA_FILE", mock.ca_path().display().to_string()),
        ("BINANCE_INGEST_STREAMS", streams.to_string()),
        ("BINANCE_INGEST_INSTANCE", "test".to_string()),
        ("BINANCE_INGEST_RECONNECT_MIN", "50ms".to_string()),
        ("BINANCE_INGEST_RECONNECT_MAX", "200ms".to_string()),
        ("BINANCE_INGEST_FLUSH_INTERVAL", "100ms".to_string()),
    ]
}

/// Returns `settings` with `key` set to `value`, replacing an earlier value.
pub fn with(
    mut settings: Vec<(&'static str, String)>,
    key: &'static str,
    value: &str,
) -> Vec<(&'static str, String)> {
    settings.retain(|(existing, _)| *existing != key);
    settings.push((key, value.to_string()));
    settings
}

/// Data events of a sent-log.
pub fn data_events(entries: &[SentEntry]) -> Vec<&SentEntry> {
    entries.iter().filter(|entry| entry.stream.is_some()).collect()
}

/// Waits until the mock has logged the end of every connection it opened,
/// so its sent-log is complete, and returns it.
pub fn complete_sent_log(mock: &MockExchange) -> Vec<SentEntry> {
    let count = |entries: &[SentEntry], event: &str| {
        entries.iter().filter(|e| e.event.as_deref() == Some(event)).count()
    };
    let entries = mock.wait_sent_log(Duration::from_secs(20), |entries| {
        count(entries, "open") > 0 && count(entries, "open") == count(entries, "closed")
    });
    assert_eq!(
        count(&entries, "open"),
        count(&entries, "closed"),
        "the mock did not log the end of every connection"
    );
    entries
}

/// Asserts that each sent (stream, payload digest) is stored exactly once
/// and that nothing was stored that was not sent.
pub fn assert_stored_exactly_once(sent: &[&SentEntry], stored: &[StoredRecord]) {
    let mut expected: HashSet<(String, String)> = HashSet::new();
    for entry in sent {
        let stream = entry.stream.clone().unwrap_or_default();
        expected.insert((stream, entry.digest.clone().unwrap_or_default()));
    }
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for record in stored {
        let key = (record.stream.clone(), format!("{:016x}", fnv1a(record.data.as_bytes())));
        *seen.entry(key).or_default() += 1;
    }
    let duplicated: Vec<_> = seen.iter().filter(|(_, count)| **count > 1).take(5).collect();
    assert!(duplicated.is_empty(), "stored more than once: {duplicated:?}");
    let missing_count = expected.iter().filter(|key| !seen.contains_key(*key)).count();
    let missing: Vec<_> = expected.iter().filter(|key| !seen.contains_key(*key)).take(5).collect();
    assert!(missing.is_empty(), "{missing_count} sent events not stored, e.g. {missing:?}");
    let extra: Vec<_> = seen.keys().filter(|key| !expected.contains(*key)).take(5).collect();
    assert!(extra.is_empty(), "stored events the mock did not send: {extra:?}");
}

/// Stored ids per stream, read from the `t` (trade), `a` (aggTrade) or `u`
/// (depth, bookTicker) field, in storage order.
pub fn stored_ids(stored: &[StoredRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for record in stored {
        let value: serde_json::Value = serde_json::from_str(&record.data).expect("data is JSON");
        let id = ["t", "a", "u"].iter().find_map(|field| value.get(field)?.as_u64());
        if let Some(id) = id {
            ids.entry(record.stream.clone()).or_default().push(id);
        }
    }
    ids
}

/// Asserts that the sorted ids of a trade stream run without a hole and
/// without a repeat.
pub fn assert_contiguous(stream: &str, ids: &[u64]) {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    for pair in sorted.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "{stream}: id {} follows {}", pair[1], pair[0]);
    }
}

/// `at_ms` of the sent-log entry with `event` on connection `conn`.
pub fn event_time(entries: &[SentEntry], conn: u64, event: &str) -> Option<u64> {
    entries
        .iter()
        .find(|entry| entry.conn == conn && entry.event.as_deref() == Some(event))
        .and_then(|entry| entry.at_ms)
}

/// `at_ms` of the first fault entry named `fault` on connection `conn`.
pub fn fault_time(entries: &[SentEntry], conn: u64, fault: &str) -> Option<u64> {
    entries
        .iter()
        .find(|entry| entry.conn == conn && entry.fault.as_deref() == Some(fault))
        .and_then(|entry| entry.at_ms)
}

/// Sum of the samples whose line starts with `prefix`.
pub fn sum_of(body: &str, prefix: &str) -> f64 {
    body.lines()
        .filter(|line| line.starts_with(prefix))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
