//! Replay of JSON Lines files of combined-stream frames.
//!
//! Loaded once at start on the main thread; connection threads then build
//! frames from it. The first pass sends every line byte for byte. Later
//! passes (loops) shift ids and event times by per-stream amounts so each
//! stream continues where the previous pass ended, rewriting only the
//! digits of those numbers and keeping every other byte. Nothing here
//! re-serializes a payload.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::value::RawValue;
use tungstenite::Bytes;

use super::protocol::is_valid_stream_name;

/// Shift rule of a numeric field when a replay loops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum ShiftGroup {
    /// `E` and `T`: shifted by the file's time span.
    Time,
    /// trade `t`.
    Trade,
    /// aggTrade `a`.
    AggTrade,
    /// aggTrade `f` and `l`.
    AggRange,
    /// depth `U`, `u`, `pu` and partial depth `lastUpdateId`.
    Depth,
    /// bookTicker `u`.
    Book,
}

/// A number inside a frame that loops rewrite.
#[derive(Clone, Debug)]
struct Patch {
    /// Byte range of the digits, relative to the line start.
    range: Range<usize>,
    group: ShiftGroup,
    value: i64,
    /// `pu: -1` marks a reset and keeps its value in every pass.
    keep: bool,
    /// Preference as the sent-log id, lowest first.
    id_rank: Option<u8>,
}

/// One line of a replay file.
#[derive(Clone, Debug)]
struct ReplayLine {
    /// Whole line, without the line break.
    line: Bytes,
    stream: usize,
    /// Range of the `data` value inside `line`.
    data: Range<usize>,
    patches: Vec<Patch>,
    /// Index into `patches` of the sequence id written to the sent-log.
    id_patch: Option<usize>,
}

/// One frame ready to send.
#[derive(Clone, Debug)]
pub struct ReplayFrame {
    /// Combined frame bytes.
    pub frame: Bytes,
    /// Range of the `data` value inside `frame`.
    pub data: Range<usize>,
    /// Index of the stream name in [`ReplayFile::streams`].
    pub stream: usize,
    /// Sequence id, when the stream has one.
    pub id: Option<u64>,
    /// FNV-1a digest of the data bytes.
    pub digest: u64,
}

/// A loaded replay file.
#[derive(Debug)]
pub struct ReplayFile {
    /// Path it was loaded from.
    pub path: PathBuf,
    /// Stream names in order of first appearance.
    pub streams: Vec<String>,
    lines: Vec<ReplayLine>,
    /// Shift per pass for each (stream, group).
    shifts: HashMap<(usize, ShiftGroup), i64>,
}

#[derive(Deserialize)]
struct CombinedFrame<'a> {
    #[serde(borrow)]
    stream: &'a str,
    #[serde(borrow)]
    data: &'a RawValue,
}

impl ReplayFile {
    /// Loads and checks `path`. Every non-empty line must be a combined
    /// frame `{"stream":..,"data":..}` with a valid stream name.
    pub fn load(path: &Path) -> Result<ReplayFile, String> {
        let bytes = std::fs::read(path)
            .map_err(|error| format!("failed to read replay file {}: {error}", path.display()))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|error| format!("replay file {} is not UTF-8: {error}", path.display()))?;
        let whole = Bytes::copy_from_slice(bytes.as_slice());

        let mut streams: Vec<String> = Vec::new();
        let mut stream_index: HashMap<String, usize> = HashMap::new();
        let mut lines = Vec::new();
        let mut offset = 0;
        for (number, raw_line) in text.split_inclusive('\n').enumerate() {
            let line_start = offset;
            offset += raw_line.len();
            let line = raw_line.trim_end_matches(['\n', '\r']);
            if line.trim().is_empty() {
                continue;
            }
            let place = || format!("{} line {}", path.display(), number + 1);
            let frame: CombinedFrame<'_> = serde_json::from_str(line).map_err(|error| {
                format!(
                    "{}: expected a combined frame {{\"stream\":..,\"data\":..}}: {error}",
                    place()
                )
            })?;
            if !is_valid_stream_name(frame.stream) {
                return Err(format!("{}: invalid stream name {:?}", place(), frame.stream));
            }
            let stream = *stream_index.entry(frame.stream.to_string()).or_insert_with(|| {
                streams.push(frame.stream.to_string());
                streams.len() - 1
            });
            let data_start = offset_in(line, frame.data.get());
            let data = data_start..data_start + frame.data.get().len();
            let (patches, id_patch) = find_patches(frame.data, data_start);
            lines.push(ReplayLine {
                line: whole.slice(line_start..line_start + line.len()),
                stream,
                data,
                patches,
                id_patch,
            });
        }
        if lines.is_empty() {
            return Err(format!("replay file {} holds no frame", path.display()));
        }
        let shifts = compute_shifts(&lines);
        Ok(ReplayFile { path: path.to_path_buf(), streams, lines, shifts })
    }

    /// Number of frames in one pass.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Returns true when the file contains no frame, which a loaded file never does.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Stream index of frame `index` of a pass.
    pub fn stream_of(&self, index: usize) -> usize {
        self.lines[index].stream
    }

    /// Builds frame `index` of pass `pass` (0 is the file as it is).
    pub fn frame(&self, pass: u64, index: usize) -> ReplayFrame {
        let line = &self.lines[index];
        if pass == 0 {
            let data = &line.line[line.data.clone()];
            return ReplayFrame {
                frame: line.line.clone(),
                data: line.data.clone(),
                stream: line.stream,
                id: line.id_patch.and_then(|i| u64::try_from(line.patches[i].value).ok()),
                digest: crate::digest::fnv1a(data),
            };
        }

        let source: &[u8] = &line.line;
        let mut out = Vec::with_capacity(source.len() + 16);
        let mut copied = 0;
        let mut data_end_delta: i64 = 0;
        let mut id = None;
        for (index, patch) in line.patches.iter().enumerate() {
            out.extend_from_slice(&source[copied..patch.range.start]);
            let shift = self.shifts.get(&(line.stream, patch.group)).copied().unwrap_or(0);
            let value = if patch.keep {
                patch.value
            } else {
                patch.value.saturating_add(shift.saturating_mul(pass as i64))
            };
            let digits = value.to_string();
            data_end_delta += digits.len() as i64 - patch.range.len() as i64;
            out.extend_from_slice(digits.as_bytes());
            copied = patch.range.end;
            if line.id_patch == Some(index) {
                id = u64::try_from(value).ok();
            }
        }
        out.extend_from_slice(&source[copied..]);
        let data = line.data.start..(line.data.end as i64 + data_end_delta) as usize;
        let digest = crate::digest::fnv1a(&out[data.clone()]);
        ReplayFrame { frame: Bytes::from(out), data, stream: line.stream, id, digest }
    }
}

/// Byte offset of `inner` inside `outer`; `inner` must be a slice of it,
/// which holds for values borrowed by serde_json from `outer`.
fn offset_in(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// Finds the top-level numbers of `data` that loops shift, and the sequence
/// id: `lastUpdateId`, else `u`, else trade `t`, else aggTrade `a`.
fn find_patches(data: &RawValue, data_start: usize) -> (Vec<Patch>, Option<usize>) {
    let Ok(fields) = serde_json::from_str::<BTreeMap<&str, &RawValue>>(data.get()) else {
        // Arrays (such as `!ticker@arr`) and objects with escaped keys are
        // replayed unchanged in every pass.
        return (Vec::new(), None);
    };
    let event_type = fields.get("e").map(|value| value.get().trim_matches('"'));
    let is_book_ticker = event_type == Some("bookTicker")
        || (event_type.is_none() && fields.contains_key("u") && !fields.contains_key("U"));

    // NOTE: only top-level numbers move. Nested times such as kline `k.t`
    // and ticker `O`/`C` repeat in every pass.
    let mut patches = Vec::new();
    for (&key, value) in &fields {
        let group = match (key, event_type) {
            ("E" | "T", _) => ShiftGroup::Time,
            ("t", Some("trade")) => ShiftGroup::Trade,
            ("a", Some("aggTrade")) => ShiftGroup::AggTrade,
            ("f" | "l", Some("aggTrade")) => ShiftGroup::AggRange,
            ("U" | "pu", Some("depthUpdate")) => ShiftGroup::Depth,
            ("u", Some("depthUpdate")) => ShiftGroup::Depth,
            ("lastUpdateId", _) => ShiftGroup::Depth,
            ("u", _) if is_book_ticker => ShiftGroup::Book,
            _ => continue,
        };
        let Ok(number) = value.get().parse::<i64>() else { continue };
        let start = data_start + offset_in(data.get(), value.get());
        patches.push(Patch {
            range: start..start + value.get().len(),
            group,
            value: number,
            keep: key == "pu" && number == -1,
            id_rank: match (key, group) {
                ("lastUpdateId", _) => Some(0),
                ("u", _) => Some(1),
                ("t", ShiftGroup::Trade) => Some(2),
                ("a", ShiftGroup::AggTrade) => Some(3),
                _ => None,
            },
        });
    }
    patches.sort_by_key(|patch| patch.range.start);
    let id_patch = patches
        .iter()
        .enumerate()
        .filter_map(|(index, patch)| patch.id_rank.map(|rank| (rank, index)))
        .min()
        .map(|(_, index)| index);
    (patches, id_patch)
}

/// Computes, per stream and group, how far a pass moves the numbers so the
/// next pass continues the sequence.
fn compute_shifts(lines: &[ReplayLine]) -> HashMap<(usize, ShiftGroup), i64> {
    #[derive(Default)]
    struct Span {
        first: Option<i64>,
        last: i64,
        min: i64,
        max: i64,
    }
    // Per (stream, group, field kind): field kind separates U, u, pu, f, l.
    let mut spans: HashMap<(usize, ShiftGroup, &'static str), Span> = HashMap::new();
    let mut time_min = i64::MAX;
    let mut time_max = i64::MIN;

    for line in lines {
        let data = &line.line[line.data.clone()];
        for patch in &line.patches {
            if patch.group == ShiftGroup::Time {
                time_min = time_min.min(patch.value);
                time_max = time_max.max(patch.value);
                continue;
            }
            let field = field_name(data, &line.data, &patch.range);
            let span = spans.entry((line.stream, patch.group, field)).or_insert(Span {
                first: None,
                last: 0,
                min: i64::MAX,
                max: i64::MIN,
            });
            if span.first.is_none() {
                span.first = Some(patch.value);
            }
            span.last = patch.value;
            span.min = span.min.min(patch.value);
            span.max = span.max.max(patch.value);
        }
    }

    let mut shifts = HashMap::new();
    let streams: Vec<(usize, ShiftGroup)> = {
        let mut keys: Vec<_> = spans.keys().map(|(stream, group, _)| (*stream, *group)).collect();
        keys.sort();
        keys.dedup();
        keys
    };
    for (stream, group) in streams {
        let get = |field: &'static str| spans.get(&(stream, group, field));
        let fallback = |span: &Span| span.max - span.min + 1;
        let shift = match group {
            ShiftGroup::Depth => match (get("u"), get("pu"), get("U"), get("lastUpdateId")) {
                // Futures: the first pu of the next pass equals the last u.
                (Some(u), Some(pu), _, _) if pu.first.is_some_and(|first| first >= 0) => {
                    u.last - pu.first.unwrap_or(0)
                }
                // Spot: the first U of the next pass is the last u + 1.
                (Some(u), _, Some(first_u), _) => u.last - first_u.first.unwrap_or(0) + 1,
                (_, _, _, Some(last_update)) => fallback(last_update),
                (Some(u), _, _, _) => fallback(u),
                _ => 1,
            },
            ShiftGroup::AggRange => match (get("f"), get("l")) {
                (Some(first), Some(last)) => last.last - first.first.unwrap_or(0) + 1,
                _ => 1,
            },
            _ => spans
                .iter()
                .filter(|((s, g, _), _)| *s == stream && *g == group)
                .map(|(_, span)| span.last - span.first.unwrap_or(0) + 1)
                .max()
                .unwrap_or(1),
        };
        shifts.insert((stream, group), shift.max(1));
    }
    if time_min <= time_max {
        // One time shift for the whole file keeps the order across streams.
        shifts.extend(
            lines.iter().map(|line| ((line.stream, ShiftGroup::Time), time_max - time_min + 1)),
        );
    }
    shifts
}

/// Name of the key whose value starts at `value.start`, found by scanning
/// back from the value over `":` to the opening quote.
fn field_name(data: &[u8], data_range: &Range<usize>, value: &Range<usize>) -> &'static str {
    let end = value.start - data_range.start;
    let before = &data[..end];
    let Some(colon) = before.iter().rposition(|&b| b == b':') else { return "" };
    let key_part = &before[..colon];
    let key_part = key_part.strip_suffix(b"\"").unwrap_or(key_part);
    let start = key_part.iter().rposition(|&b| b == b'"').map_or(0, |i| i + 1);
    match &key_part[start..] {
        b"U" => "U",
        b"u" => "u",
        b"pu" => "pu",
        b"f" => "f",
        b"l" => "l",
        b"t" => "t",
        b"a" => "a",
        b"lastUpdateId" => "lastUpdateId",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, name: &str) -> ReplayFile {
        let dir = std::env::temp_dir().join(format!("replay-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("frames.jsonl");
        std::fs::write(&path, text).unwrap();
        let file = ReplayFile::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        file
    }

    fn data_of(frame: &ReplayFrame) -> serde_json::Value {
        serde_json::from_slice(&frame.frame[frame.data.clone()]).unwrap()
    }

    #[test]
    fn first_pass_is_byte_exact() {
        let text =
            "{\"stream\":\"x@trade\",\"data\":{\"e\":\"trade\",\"E\":5,\"t\":7, \"p\":\"1.0\"}}\n";
        let file = load(text, "exact");
        let frame = file.frame(0, 0);
        assert_eq!(&frame.frame[..], text.trim_end().as_bytes());
        assert_eq!(frame.id, Some(7));
        assert_eq!(&frame.frame[frame.data.clone()], br#"{"e":"trade","E":5,"t":7, "p":"1.0"}"#);
    }

    #[test]
    fn loops_continue_spot_depth() {
        let text = concat!(
            r#"{"stream":"a@depth","data":{"e":"depthUpdate","E":1000,"s":"A","U":10,"u":12,"b":[],"a":[]}}"#,
            "\n",
            r#"{"stream":"a@depth","data":{"e":"depthUpdate","E":1100,"s":"A","U":13,"u":19,"b":[],"a":[]}}"#,
            "\n"
        );
        let file = load(text, "spot-depth");
        let second_pass = data_of(&file.frame(1, 0));
        assert_eq!(second_pass["U"], 20);
        assert_eq!(second_pass["u"], 22);
        assert_eq!(second_pass["E"], 1000 + 101);
        assert_eq!(file.frame(1, 0).id, Some(22));
    }

    #[test]
    fn loops_continue_futures_depth_by_pu() {
        let text = concat!(
            r#"{"stream":"a@depth","data":{"e":"depthUpdate","E":1,"T":1,"s":"A","U":100,"u":105,"pu":90,"b":[],"a":[]}}"#,
            "\n",
            r#"{"stream":"a@depth","data":{"e":"depthUpdate","E":2,"T":2,"s":"A","U":108,"u":120,"pu":105,"b":[],"a":[]}}"#,
            "\n"
        );
        let file = load(text, "futures-depth");
        let second_pass = data_of(&file.frame(1, 0));
        assert_eq!(second_pass["pu"], 120);
        let third_pass_first = data_of(&file.frame(2, 0));
        let second_pass_last = data_of(&file.frame(1, 1));
        assert_eq!(third_pass_first["pu"], second_pass_last["u"]);
    }

    #[test]
    fn loops_continue_trades_and_keep_other_bytes() {
        let text = concat!(
            r#"{"stream":"b@trade","data":{"e":"trade","E":99,"s":"B","t":4294967296,"p":"1.5"}}"#,
            "\n",
            r#"{"stream":"b@trade","data":{"e":"trade","E":100,"s":"B","t":4294967297,"p":"1.5"}}"#,
            "\n"
        );
        let file = load(text, "trade");
        let frame = file.frame(1, 0);
        assert_eq!(frame.id, Some(4_294_967_298));
        let text = std::str::from_utf8(&frame.frame).unwrap();
        assert_eq!(
            text,
            r#"{"stream":"b@trade","data":{"e":"trade","E":101,"s":"B","t":4294967298,"p":"1.5"}}"#
        );
        assert_eq!(frame.digest, crate::digest::fnv1a(&frame.frame[frame.data.clone()]));
    }

    #[test]
    fn non_combined_lines_are_rejected() {
        let dir = std::env::temp_dir().join(format!("replay-unit-{}-bad", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("frames.jsonl");
        std::fs::write(&path, "{\"id\":1,\"result\":null}\n").unwrap();
        let error = ReplayFile::load(&path).unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
