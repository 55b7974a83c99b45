//! Text forms of durations, byte sizes and booleans in settings.
//!
//! Pure functions, called on the main thread while the configuration is
//! read. Each parser returns the problem as text so the caller can name the
//! key; each formatter writes the form its parser reads back exactly.

use std::time::Duration;

/// Duration units, longest first, with their length in nanoseconds.
const DURATION_UNITS: [(&str, u64); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

/// Binary size units, largest first. Decimal `KB`, `MB` and `GB` are
/// rejected, because operators use them for both 1000 and 1024.
const SIZE_UNITS: [(&str, u64); 5] =
    [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)];

const DURATION_FORMS: &str =
    "a whole number with a unit (ms, s, m, h, d), e.g. 250ms, 30s, 4h, 1h30m or 7d";
const SIZE_FORMS: &str = "a whole number of bytes, optionally with a unit (B, KiB, MiB, GiB, TiB), \
                          e.g. 512KiB or 64MiB";

/// Parses a duration such as `250ms`, `30s`, `5m`, `4h`, `1h30m` or `7d`,
/// where a day is 24 hours.
///
/// Every number needs a unit, `0` included, so `30` cannot be read as
/// seconds by one person and milliseconds by another. `us` and `ns` are
/// accepted so that any `Duration` written by [`format_duration`] reads back.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty duration; expected {DURATION_FORMS}"));
    }
    if text.starts_with('-') {
        return Err(format!("negative duration; expected {DURATION_FORMS}"));
    }
    let mut rest = text;
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("expected a number at {rest:?}; expected {DURATION_FORMS}"));
        }
        let (number, after) = rest.split_at(digits);
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let nanos = match DURATION_UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, nanos)) => *nanos,
            None if unit.is_empty() => {
                return Err(format!("missing unit after {number}; expected {DURATION_FORMS}"));
            }
            None if unit.starts_with('.') => {
                return Err(
                    "fractions are not accepted; use a smaller unit, e.g. 1500ms for 1.5s".into()
                );
            }
            None => return Err(format!("unknown unit {unit:?}; expected {DURATION_FORMS}")),
        };
        let part = number.parse::<u64>().ok().and_then(|n| n.checked_mul(nanos));
        total = part.and_then(|part| total.checked_add(part)).ok_or_else(|| {
            format!("duration too large; the maximum is {}h", u64::MAX / DURATION_UNITS[1].1)
        })?;
        rest = after;
    }
    Ok(Duration::from_nanos(total))
}

/// Writes `duration` in the largest unit that divides it exactly, such as
/// `4h`, `90m`, `250ms` or `0s`. Days are never written, so 7 days is `168h`.
pub fn format_duration(duration: Duration) -> String {
    // Durations above u64::MAX nanoseconds (584 years) cannot come from
    // parse_duration; saturating keeps this function total.
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return "0s".to_string();
    }
    for (unit, size) in DURATION_UNITS.iter().skip(1) {
        if nanos % size == 0 {
            return format!("{}{unit}", nanos / size);
        }
    }
    format!("{nanos}ns")
}

/// Parses a byte size: plain digits are bytes, or digits with a binary
/// unit (`100B`, `512KiB`, `64MiB`, `1GiB`). Units are case-insensitive and
/// may follow a space.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("empty size; expected {SIZE_FORMS}"));
    }
    if text.starts_with('-') {
        return Err(format!("negative size; expected {SIZE_FORMS}"));
    }
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() {
        return Err(format!("expected a number; expected {SIZE_FORMS}"));
    }
    let unit = unit.trim_start();
    let multiplier = if unit.is_empty() {
        1
    } else if let Some((_, size)) =
        SIZE_UNITS.iter().find(|(name, _)| name.eq_ignore_ascii_case(unit))
    {
        *size
    } else if let Some(binary) = decimal_unit_hint(unit) {
        return Err(format!(
            "{unit} is ambiguous (1000 or 1024); write {binary} for the binary unit, \
             or the number of bytes"
        ));
    } else if unit.starts_with('.') {
        return Err("fractions are not accepted; use a smaller unit, e.g. 1536KiB".to_string());
    } else {
        return Err(format!("unknown unit {unit:?}; expected {SIZE_FORMS}"));
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("size too large; the maximum is {} bytes", u64::MAX))
}

/// Returns the binary unit to suggest for a decimal or one-letter unit.
fn decimal_unit_hint(unit: &str) -> Option<&'static str> {
    match unit.to_ascii_lowercase().as_str() {
        "k" | "kb" => Some("KiB"),
        "m" | "mb" => Some("MiB"),
        "g" | "gb" => Some("GiB"),
        "t" | "tb" => Some("TiB"),
        _ => None,
    }
}

/// Writes `bytes` in the largest binary unit that divides it exactly, such
/// as `64MiB`, `1536KiB` or `100B`.
pub fn format_size(bytes: u64) -> String {
    for (unit, size) in SIZE_UNITS {
        if bytes != 0 && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// Parses `true`, `false`, `1`, `0`, `yes` or `no`, ignoring case.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err("expected true, false, 1, 0, yes or no".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        let cases = [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("5m", Duration::from_secs(300)),
            ("4h", Duration::from_secs(4 * 3600)),
            ("1h30m", Duration::from_secs(5400)),
            ("1m500ms", Duration::from_millis(60_500)),
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            (" 2s ", Duration::from_secs(2)),
            ("7us", Duration::from_micros(7)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1d12h", Duration::from_secs(36 * 3600)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_duration(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn durations_reject_bad_text() {
        let cases = [
            ("", "empty"),
            ("0", "missing unit"),
            ("30", "missing unit"),
            ("-5s", "negative"),
            ("1.5s", "fractions"),
            ("5 s", "unknown unit"),
            ("5sec", "unknown unit"),
            ("s", "expected a number"),
            ("1h30", "missing unit"),
            ("99999999999999999999s", "too large"),
            ("18446744073709551615h", "too large"),
            ("5000000h5000000h", "too large"),
        ];
        for (text, expected) in cases {
            let problem = parse_duration(text).expect_err(text);
            assert!(problem.contains(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn durations_format_round_trips() {
        for millis in [0, 1, 5, 999, 1000, 1500, 60_000, 90_000, 3_600_000, 86_400_000] {
            let duration = Duration::from_millis(millis);
            assert_eq!(parse_duration(&format_duration(duration)), Ok(duration), "{millis}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "90m");
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "168h");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_nanos(1_000_001)), "1000001ns");
    }

    #[test]
    fn sizes_parse_with_units() {
        let cases = [
            ("0", 0),
            ("100", 100),
            ("100B", 100),
            ("512KiB", 512 << 10),
            ("64MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("64 MiB", 64 << 20),
            ("1GiB", 1 << 30),
            ("2TiB", 2 << 40),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_size(text), Ok(expected), "{text}");
        }
    }

    #[test]
    fn sizes_reject_bad_text() {
        let cases = [
            ("", "empty"),
            ("-1", "negative"),
            ("-1MiB", "negative"),
            ("64MB", "ambiguous"),
            ("64M", "ambiguous"),
            ("1kb", "ambiguous"),
            ("1.5MiB", "fractions"),
            ("MiB", "expected a number"),
            ("64 bytes", "unknown unit"),
            ("18446744073709551616", "too large"),
            ("16777216TiB", "too large"),
        ];
        for (text, expected) in cases {
            let problem = parse_size(text).expect_err(text);
            assert!(problem.contains(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn sizes_format_round_trips() {
        for bytes in [0, 1, 100, 1024, 1536, 64 << 20, 1 << 30, (1 << 30) + 1, u64::MAX] {
            assert_eq!(parse_size(&format_size(bytes)), Ok(bytes), "{bytes}");
        }
        assert_eq!(format_size(256 << 10), "256KiB");
        assert_eq!(format_size(0), "0B");
    }

    #[test]
    fn booleans_accept_common_words() {
        for text in ["true", "TRUE", "1", "yes", "Yes"] {
            assert_eq!(parse_bool(text), Ok(true), "{text}");
        }
        for text in ["false", "0", "no", "NO"] {
            assert_eq!(parse_bool(text), Ok(false), "{text}");
        }
        for text in ["", "on", "2", "y"] {
            assert!(parse_bool(text).is_err(), "{text}");
        }
    }
}
