//! The JSON line of one stored record: an exchange event or a sequence gap.
//!
//! Runs on the pipeline thread, once per record, so it appends into a
//! caller-owned buffer and never allocates on its own. It never re-serializes
//! the exchange payload: the `data` bytes are copied exactly as received.
//!
//! Event line:
//! `{"recv_ns":1764860400123456789,"venue":"spot","stream":"btcusdt@trade","conn":3,"data":<payload>}`
//!
//! Gap line:
//! `{"recv_ns":...,"venue":"spot","stream":"btcusdt@trade","conn":3,"gap":{"first":101,"last":104,"missing":4,"rule":"trade"}}`

use crate::frame::ConnectionId;
use crate::venue::Venue;

/// What a record in the ring is, which decides its table in the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// An exchange event with its payload.
    Event,
    /// A sequence gap detected on a stream.
    Gap,
}

/// A detected gap in a stream's ids. `None` fields are written as `null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gap {
    /// First missing id.
    pub first: Option<u64>,
    /// Last missing id.
    pub last: Option<u64>,
    /// Number of missing events, where ids count events (trade, aggTrade).
    pub missing: Option<u64>,
    /// Name of the sequence rule that found the gap, such as `trade`.
    pub rule: &'static str,
}

/// Appends the event line, without a trailing newline, to `out`.
pub fn push_event_line(
    out: &mut Vec<u8>,
    received_ns: u64,
    venue: Venue,
    stream: &str,
    connection: ConnectionId,
    data: &[u8],
) {
    push_head(out, received_ns, venue, stream, connection);
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
}

/// Appends the gap line, without a trailing newline, to `out`.
pub fn push_gap_line(
    out: &mut Vec<u8>,
    received_ns: u64,
    venue: Venue,
    stream: &str,
    connection: ConnectionId,
    gap: &Gap,
) {
    push_head(out, received_ns, venue, stream, connection);
    out.extend_from_slice(b",\"gap\":{\"first\":");
    push_optional_u64(out, gap.first);
    out.extend_from_slice(b",\"last\":");
    push_optional_u64(out, gap.last);
    out.extend_from_slice(b",\"missing\":");
    push_optional_u64(out, gap.missing);
    out.extend_from_slice(b",\"rule\":");
    push_json_string(out, gap.rule);
    out.extend_from_slice(b"}}");
}

fn push_head(
    out: &mut Vec<u8>,
    received_ns: u64,
    venue: Venue,
    stream: &str,
    connection: ConnectionId,
) {
    out.extend_from_slice(b"{\"recv_ns\":");
    push_u64(out, received_ns);
    out.extend_from_slice(b",\"venue\":");
    push_json_string(out, venue.name());
    out.extend_from_slice(b",\"stream\":");
    push_json_string(out, stream);
    out.extend_from_slice(b",\"conn\":");
    push_u64(out, connection);
}

fn push_optional_u64(out: &mut Vec<u8>, value: Option<u64>) {
    match value {
        Some(value) => push_u64(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends `value` in decimal.
pub fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    // Two digits per division: receive times have 19 digits.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        start -= 1;
        digits[start] = b'0' + value as u8;
    }
    out.extend_from_slice(&digits[start..]);
}

/// Appends `text` as a quoted JSON string, escaping quotes, backslashes and
/// control characters.
pub fn push_json_string(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let needs_escape = |byte: &u8| matches!(byte, b'"' | b'\\' | 0..=0x1f);
    if !text.as_bytes().iter().any(needs_escape) {
        // Fast path for validated stream names and venue names.
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return;
    }
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0x0f)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_line_keeps_payload_bytes() {
        let mut out = Vec::new();
        let data = br#"{"e":"trade","p":"1.10", "t":18446744073709551615}"#;
        push_event_line(&mut out, 1_764_860_400_123_456_789, Venue::Spot, "btcusdt@trade", 3, data);
        let expected = [
            br#"{"recv_ns":1764860400123456789,"venue":"spot","stream":"btcusdt@trade","conn":3,"data":"#.as_slice(),
            data,
            b"}",
        ]
        .concat();
        assert_eq!(out, expected);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["data"]["t"].as_u64(), Some(u64::MAX));
    }

    #[test]
    fn gap_line_writes_null_for_unknown() {
        let mut out = Vec::new();
        let gap = Gap { first: Some(101), last: Some(104), missing: None, rule: "spot_depth" };
        push_gap_line(&mut out, 5, Venue::UsdM, "btcusdt@depth", 0, &gap);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"recv_ns":5,"venue":"usdm","stream":"btcusdt@depth","conn":0,"gap":{"first":101,"last":104,"missing":null,"rule":"spot_depth"}}"#
        );
    }

    #[test]
    fn json_string_escapes_specials() {
        let mut out = Vec::new();
        push_json_string(&mut out, "a\"b\\c\n\u{1}");
        assert_eq!(out, br#""a\"b\\c\u000a\u0001""#);
    }

    #[test]
    fn decimal_covers_edges() {
        let powers = (0..20).map(|exponent| 10u64.pow(exponent));
        let near_powers = powers.flat_map(|power| [power - 1, power, power + 1]);
        let edges = [4_294_967_296, (1 << 53) + 1, 1_764_860_400_123_456_789, u64::MAX];
        for value in near_powers.chain(edges).chain(0..1000) {
            let mut out = Vec::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string().as_bytes());
        }
    }
}
