//! Hive-style partition paths and part-file names of the sink, and the UTC
//! civil calendar they need.
//!
//! Pure functions, called by the sink thread when it opens a file; they
//! never touch the file system and never use the local time zone. The
//! events table lives under `DATA_DIR/venue=<venue>/...`, gap records under
//! `DATA_DIR/_gaps/venue=<venue>/...`: Hive, Trino and Spark skip folders
//! that start with `_` during partition discovery, so the events table keeps
//! one schema.

use std::path::{Path, PathBuf};

use crate::record::RecordKind;
use crate::venue::Venue;

/// Nanoseconds in one hour.
pub const NANOS_PER_HOUR: u64 = 3_600_000_000_000;

/// Folder of the gaps table under the data directory.
pub const GAPS_DIR: &str = "_gaps";

/// A UTC calendar date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilDate {
    /// Year, such as 2026.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, 1 to 31.
    pub day: u32,
}

/// Converts days since 1970-01-01 to a proleptic Gregorian date.
///
/// The algorithm counts in 400-year eras that start on March 1, so the leap
/// day is the last day of its year; see Howard Hinnant, "chrono-Compatible
/// Low-Level Date Algorithms", `civil_from_days`.
pub fn civil_from_days(days: i64) -> CivilDate {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    CivilDate { year, month, day }
}

/// Hours since the Unix epoch of a time in ns since the epoch.
pub fn hour_of(received_ns: u64) -> u64 {
    received_ns / NANOS_PER_HOUR
}

/// Returns the partition folder of records of `stream` received in `hour`
/// (hours since the Unix epoch):
/// `DATA_DIR[/_gaps]/venue=spot/stream=btcusdt@trade/date=2026-12-04/hour=15`.
pub fn partition_dir(
    data_dir: &Path,
    kind: RecordKind,
    venue: Venue,
    stream: &str,
    hour: u64,
) -> PathBuf {
    let date = civil_from_days((hour / 24) as i64);
    let mut dir = data_dir.to_path_buf();
    if kind == RecordKind::Gap {
        dir.push(GAPS_DIR);
    }
    dir.push(format!("venue={}", venue.name()));
    dir.push(format!("stream={stream}"));
    dir.push(format!("date={:04}-{:02}-{:02}", date.year, date.month, date.day));
    dir.push(format!("hour={:02}", hour % 24));
    dir
}

/// Formats seconds since the Unix epoch as `20261204T153000Z`.
pub fn format_start(unix_seconds: u64) -> String {
    let date = civil_from_days((unix_seconds / 86_400) as i64);
    let second_of_day = unix_seconds % 86_400;
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        date.year,
        date.month,
        date.day,
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

/// Returns the part-file name: `part-<instance>-<start>.jsonl` for
/// `sequence` 0, else `part-<instance>-<start>-<sequence>.jsonl`.
pub fn part_file_name(instance: &str, start: &str, sequence: u32) -> String {
    if sequence == 0 {
        format!("part-{instance}-{start}.jsonl")
    } else {
        format!("part-{instance}-{start}-{sequence}.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(year: i64, month: u32, day: u32) -> i64 {
        // Reference: count days by walking the calendar from 1970.
        let is_leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
        let month_days = |y: i64, m: u32| match m {
            2 if is_leap(y) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        let mut total = 0;
        if year >= 1970 {
            total += (1970..year).map(|y| if is_leap(y) { 366 } else { 365 }).sum::<i64>();
        } else {
            total -= (year..1970).map(|y| if is_leap(y) { 366 } else { 365 }).sum::<i64>();
        }
        total += (1..month).map(|m| month_days(year, m)).sum::<i64>();
        total + i64::from(day) - 1
    }

    #[test]
    fn civil_date_boundaries() {
        let cases = [
            (1970, 1, 1),
            (1969, 12, 31),
            (2000, 2, 29),
            (2000, 3, 1),
            (2024, 2, 29),
            (2024, 12, 31),
            (2025, 1, 1),
            (2026, 12, 4),
            (2100, 2, 28),
            (2100, 3, 1),
            (2400, 2, 29),
        ];
        for (year, month, day) in cases {
            let date = civil_from_days(days(year, month, day));
            assert_eq!(date, CivilDate { year, month, day }, "{year}-{month}-{day}");
        }
    }

    #[test]
    fn civil_date_matches_reference_every_day() {
        let mut expected = CivilDate { year: 1999, month: 12, day: 31 };
        let first = days(1999, 12, 31);
        for offset in 0..(366 * 30) {
            let date = civil_from_days(first + offset);
            assert_eq!(days(date.year, date.month, date.day), first + offset);
            if offset > 0 {
                let next_day = date.day == expected.day + 1 && date.month == expected.month;
                let next_month = date.day == 1 && date.month == expected.month % 12 + 1;
                assert!(next_day || next_month, "{expected:?} -> {date:?}");
            }
            expected = date;
        }
    }

    #[test]
    fn partition_dir_layout() {
        // 2026-12-04T15:30:00.123456789Z
        let received_ns = 1_796_398_200_123_456_789;
        let hour = hour_of(received_ns);
        let dir =
            partition_dir(Path::new("/d"), RecordKind::Event, Venue::Spot, "btcusdt@trade", hour);
        assert_eq!(dir, Path::new("/d/venue=spot/stream=btcusdt@trade/date=2026-12-04/hour=15"));
        let gaps = partition_dir(Path::new("/d"), RecordKind::Gap, Venue::UsdM, "x@depth", hour);
        assert_eq!(gaps, Path::new("/d/_gaps/venue=usdm/stream=x@depth/date=2026-12-04/hour=15"));
    }

    #[test]
    fn start_and_part_names() {
        assert_eq!(format_start(1_796_398_200), "20261204T153000Z");
        assert_eq!(format_start(951_782_399), "20000228T235959Z");
        assert_eq!(
            part_file_name("blue", "20261204T153000Z", 0),
            "part-blue-20261204T153000Z.jsonl"
        );
        assert_eq!(part_file_name("blue", "X", 2), "part-blue-X-2.jsonl");
    }
}
