//! Parsing of combined-stream frames: `{"stream":"btcusdt@trade","data":{...}}`.
//!
//! Runs on the pipeline thread, once per frame. One pass over the frame
//! checks that it is well-formed JSON, borrows the stream name and the exact
//! bytes of the `data` value, and reads only the integer ids the sequence
//! rules need. It never allocates, never builds a JSON tree, and never reads
//! prices or book levels into values. Unknown fields are skipped.
//!
//! Ids are read straight from their decimal text into `u64` (or `i64` for
//! `pu`, which can be -1), so ids above 2^53 keep every digit.
//!
//! Book levels, most of a depth frame, go through a fast path that reads
//! eight bytes per step and falls back to the general grammar for anything
//! unusual.
//!
//! NOTE: parsing still costs about 8,100 instructions (0.8 CPU s per
//! million, measured on a shared 2-core VM) per 1.4 KB depth frame, about
//! 135 per book level (`cargo bench --bench pipeline`, callgrind). That is
//! more than a bare TLS read loop costs for such frames, measured at 0.54
//! to 2.5 CPU s per million on 2-core VMs. Scanning 16 or 32 bytes per step
//! would need SIMD, which `unsafe_code = "forbid"` rules out here.

use crate::frame::FrameKind;

/// Deepest nesting of arrays and objects accepted. Binance frames nest at
/// most four levels (depth levels inside `b` inside `data`).
const MAX_DEPTH: usize = 64;

/// Reason a frame is not market data. Each kind has its own label in
/// `binance_ingest_parse_errors_total{kind=...}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// Empty or whitespace-only text frame.
    Empty,
    /// Binary frame; Binance sends none on market-data streams.
    Binary,
    /// Not well-formed JSON, for example a truncated frame.
    InvalidJson,
    /// Well-formed JSON whose top level is not an object.
    NotObject,
    /// An object with no `stream` member that is not a reply either.
    MissingStream,
    /// A `stream` member but no `data` member.
    MissingData,
    /// `"data":null`.
    NullData,
    /// `stream` is not a string or not a valid stream name.
    InvalidStream,
}

impl ParseErrorKind {
    /// Every kind, in label order.
    pub const ALL: [ParseErrorKind; 8] = [
        ParseErrorKind::Empty,
        ParseErrorKind::Binary,
        ParseErrorKind::InvalidJson,
        ParseErrorKind::NotObject,
        ParseErrorKind::MissingStream,
        ParseErrorKind::MissingData,
        ParseErrorKind::NullData,
        ParseErrorKind::InvalidStream,
    ];

    /// Metric label value.
    pub fn label(self) -> &'static str {
        match self {
            ParseErrorKind::Empty => "empty",
            ParseErrorKind::Binary => "binary",
            ParseErrorKind::InvalidJson => "invalid_json",
            ParseErrorKind::NotObject => "not_object",
            ParseErrorKind::MissingStream => "missing_stream",
            ParseErrorKind::MissingData => "missing_data",
            ParseErrorKind::NullData => "null_data",
            ParseErrorKind::InvalidStream => "invalid_stream",
        }
    }

    /// Position in [`ParseErrorKind::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Integer ids read from the top level of `data` (and `k.t`). A field that
/// is absent, or is not an integer (bookTicker's `a` is a price string), is
/// `None`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ids {
    /// `E`: event time in milliseconds.
    pub event_time: Option<u64>,
    /// `t`: trade id.
    pub trade_id: Option<u64>,
    /// `a`: aggregate trade id.
    pub agg_trade_id: Option<u64>,
    /// `U`: first update id of a depth update.
    pub first_update_id: Option<u64>,
    /// `u`: last update id of a depth update or book ticker.
    pub last_update_id: Option<u64>,
    /// `pu`: futures depth `u` of the previous update; -1 after a reset.
    pub previous_update_id: Option<i64>,
    /// `lastUpdateId`: spot partial depth snapshot id.
    pub snapshot_update_id: Option<u64>,
    /// `k.t`: kline start time in milliseconds.
    pub kline_start: Option<u64>,
}

/// One market-data event borrowed from a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// Stream name, such as `btcusdt@trade`; a valid stream name.
    pub stream: &'a str,
    /// The `data` value exactly as received.
    pub data: &'a [u8],
    /// Ids read from `data`.
    pub ids: Ids,
}

/// Classification of one parsed frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Market data to store.
    Event(Event<'a>),
    /// A reply to a request, `{"result":...,"id":...}` or `{"error":...}`.
    Reply,
    /// The server announced it will close the connection soon.
    ServerShutdown,
    /// Anything else; counted and skipped.
    Invalid(ParseErrorKind),
}

/// Parses one received frame.
pub fn parse_frame(kind: FrameKind, payload: &[u8]) -> Parsed<'_> {
    if kind == FrameKind::Binary {
        return Parsed::Invalid(ParseErrorKind::Binary);
    }
    let mut scanner = Scanner { bytes: payload, pos: 0 };
    scanner.skip_whitespace();
    if scanner.at_end() {
        return Parsed::Invalid(ParseErrorKind::Empty);
    }
    if scanner.peek() != Some(b'{') {
        return match scanner.value(0).and_then(|()| scanner.finish()) {
            Ok(()) => Parsed::Invalid(ParseErrorKind::NotObject),
            Err(Malformed) => Parsed::Invalid(ParseErrorKind::InvalidJson),
        };
    }

    let mut envelope = Envelope::default();
    let scanned = scanner.object(0, |scanner, key, depth| envelope.member(scanner, key, depth));
    if scanned.and_then(|()| scanner.finish()).is_err() {
        return Parsed::Invalid(ParseErrorKind::InvalidJson);
    }
    envelope.classify(payload)
}

/// Members of the top-level object that decide what a frame is.
#[derive(Default)]
struct Envelope {
    /// Byte range of the `stream` value, quotes included.
    stream: Option<(usize, usize)>,
    /// Byte range of the `data` value.
    data: Option<(usize, usize)>,
    is_reply: bool,
    top_level_shutdown: bool,
    data_shutdown: bool,
    ids: Ids,
}

impl Envelope {
    fn member(&mut self, scanner: &mut Scanner<'_>, key: &[u8], depth: usize) -> Scan {
        let start = scanner.pos;
        match key {
            b"stream" => {
                scanner.value(depth)?;
                self.stream = Some((start, scanner.pos));
            }
            b"data" => {
                if scanner.peek() == Some(b'{') {
                    let (ids, shutdown) = (&mut self.ids, &mut self.data_shutdown);
                    scanner.object(depth, |scanner, key, depth| {
                        data_member(scanner, key, depth, ids, shutdown)
                    })?;
                } else {
                    scanner.value(depth)?;
                }
                self.data = Some((start, scanner.pos));
            }
            b"result" | b"error" => {
                scanner.value(depth)?;
                self.is_reply = true;
            }
            b"e" => {
                scanner.value(depth)?;
                self.top_level_shutdown |= &scanner.bytes[start..scanner.pos] == SHUTDOWN;
            }
            _ => scanner.value(depth)?,
        }
        Ok(())
    }

    fn classify(self, payload: &[u8]) -> Parsed<'_> {
        let Some((stream_start, stream_end)) = self.stream else {
            if self.is_reply {
                return Parsed::Reply;
            }
            if self.top_level_shutdown {
                return Parsed::ServerShutdown;
            }
            return Parsed::Invalid(ParseErrorKind::MissingStream);
        };
        let stream_value = &payload[stream_start..stream_end];
        let Some((stream, name_bytes_allowed)) = stream_content(stream_value) else {
            return Parsed::Invalid(ParseErrorKind::InvalidStream);
        };
        if stream == "!serverShutdown" || self.data_shutdown {
            return Parsed::ServerShutdown;
        }
        let Some((data_start, data_end)) = self.data else {
            return Parsed::Invalid(ParseErrorKind::MissingData);
        };
        let data = &payload[data_start..data_end];
        if data == b"null" {
            return Parsed::Invalid(ParseErrorKind::NullData);
        }
        if !(name_bytes_allowed && has_stream_name_shape(stream.as_bytes())) {
            return Parsed::Invalid(ParseErrorKind::InvalidStream);
        }
        Parsed::Event(Event { stream, data, ids: self.ids })
    }
}

const SHUTDOWN: &[u8] = b"\"serverShutdown\"";

fn data_member(
    scanner: &mut Scanner<'_>,
    key: &[u8],
    depth: usize,
    ids: &mut Ids,
    shutdown: &mut bool,
) -> Scan {
    let start = scanner.pos;
    if key == b"k" && scanner.peek() == Some(b'{') {
        return scanner.object(depth, |scanner, key, depth| {
            let start = scanner.pos;
            scanner.value(depth)?;
            if key == b"t" {
                ids.kline_start = parse_u64(&scanner.bytes[start..scanner.pos]);
            }
            Ok(())
        });
    }
    scanner.value(depth)?;
    let value = &scanner.bytes[start..scanner.pos];
    match key {
        b"e" => *shutdown |= value == SHUTDOWN,
        b"E" => ids.event_time = parse_u64(value),
        b"t" => ids.trade_id = parse_u64(value),
        b"a" => ids.agg_trade_id = parse_u64(value),
        b"U" => ids.first_update_id = parse_u64(value),
        b"u" => ids.last_update_id = parse_u64(value),
        b"pu" => ids.previous_update_id = parse_i64(value),
        b"lastUpdateId" => ids.snapshot_update_id = parse_u64(value),
        _ => {}
    }
    Ok(())
}

/// Checks a stream name by the rule of `plan::validate_stream_name` (ASCII
/// letters, digits and `@ _ ! . -`, at most `MAX_STREAM_NAME_LEN` bytes, of
/// the form `<symbol>@<type>` or `!<type>`, not starting with `.`). Frames
/// are checked with the same two parts in `Envelope::classify`, without
/// building an error message, because it runs once per frame.
#[cfg(test)]
fn is_valid_stream_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    bytes.iter().all(|byte| STREAM_NAME_BYTES[usize::from(*byte)]) && has_stream_name_shape(bytes)
}

/// Checks the rules of a stream name other than its allowed bytes.
fn has_stream_name_shape(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes.len() <= crate::plan::MAX_STREAM_NAME_LEN
        && bytes[0] != b'.'
        && (bytes[0] == b'!' || bytes.contains(&b'@'))
}

/// Bytes allowed in a stream name: ASCII letters, digits and `@ _ ! . -`.
const STREAM_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || matches!(b, b'@' | b'_' | b'!' | b'.' | b'-');
        byte += 1;
    }
    table
};

/// Returns the text of the `stream` value if it is a JSON string without
/// escapes, and whether every byte of it is allowed in a stream name.
fn stream_content(value: &[u8]) -> Option<(&str, bool)> {
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    // Names with only allowed bytes have no escapes, so the common case
    // skips the search for a backslash.
    let name_bytes_allowed = inner.iter().all(|byte| STREAM_NAME_BYTES[usize::from(*byte)]);
    if !name_bytes_allowed && inner.contains(&b'\\') {
        return None;
    }
    let text = std::str::from_utf8(inner).ok()?;
    Some((text, name_bytes_allowed))
}

/// Parses a plain non-negative JSON integer. Fractions, exponents, strings
/// and values above `u64::MAX` give `None`.
pub fn parse_u64(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 1 && text[0] == b'0' {
        return None;
    }
    let mut value: u64 = 0;
    for &byte in text {
        let digit = byte.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// Parses a plain JSON integer that fits `i64`.
pub fn parse_i64(text: &[u8]) -> Option<i64> {
    match text.strip_prefix(b"-") {
        Some(digits) => {
            let magnitude = parse_u64(digits)?;
            0i64.checked_sub_unsigned(magnitude)
        }
        None => i64::try_from(parse_u64(text)?).ok(),
    }
}

/// Returns the offset just past a `["<plain>","<plain>"]` book level that
/// starts at `start`, or `None` if the bytes there are anything else or the
/// level ends within eight bytes of the end of the frame.
#[inline(always)]
fn string_pair_end(bytes: &[u8], start: usize) -> Option<usize> {
    if bytes.get(start..start + 2)? != b"[\"" {
        return None;
    }
    let first_end = plain_string_end(bytes, start + 2)?;
    if bytes.get(first_end + 1..first_end + 3)? != b",\"" {
        return None;
    }
    let second_end = plain_string_end(bytes, first_end + 3)?;
    if *bytes.get(second_end + 1)? != b']' {
        return None;
    }
    Some(second_end + 2)
}

/// Returns the offset of the closing quote of a string without escapes or
/// control bytes whose content starts at `start`, reading whole words.
/// Returns `None` for any other string, or when fewer than eight bytes are
/// left to read, so the caller falls back to the general scan.
#[inline(always)]
fn plain_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut at = start;
    loop {
        let chunk = bytes.get(at..at + 8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let offset = special_byte_offset(u64::from_le_bytes(word));
        if offset < 8 {
            return (chunk[offset] == b'"').then_some(at + offset);
        }
        at += 8;
    }
}

/// Returns the offset of the first `"`, `\\` or control byte in the eight
/// bytes of `word` (first byte lowest), or 8 if there is none.
#[inline(always)]
fn special_byte_offset(word: u64) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // `(x - n * ONES) & !x & HIGHS` sets the high bit of each byte of `x`
    // below `n` (for n <= 0x80). Only the lowest set byte is exact, because
    // a borrow can flag the bytes above it, and only that one is used.
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    // Flipping bit 1 maps `"` (0x22) to 0x20 and keeps control bytes below
    // 0x20, while every other byte stays at 0x21 or above.
    let quote_or_control = below(word ^ (ONES * 0x02), 0x21);
    let backslash = below(word ^ (ONES * u64::from(b'\\')), 1);
    let special = quote_or_control | backslash;
    (special.trailing_zeros() / 8) as usize
}

/// Returns the length of the longest prefix of `bytes` with no `"`, `\\` or
/// control character, checking eight bytes per step.
#[inline]
fn plain_string_len(bytes: &[u8]) -> usize {
    let mut chunks = bytes.chunks_exact(8);
    let mut len = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let offset = special_byte_offset(u64::from_le_bytes(word));
        if offset < 8 {
            return len + offset;
        }
        len += 8;
    }
    let tail = chunks.remainder();
    len + tail.iter().take_while(|&&byte| !matches!(byte, b'"' | b'\\' | 0..=0x1f)).count()
}

/// The frame is not well-formed JSON.
#[derive(Debug)]
struct Malformed;

type Scan = Result<(), Malformed>;

/// Validating JSON scanner over borrowed bytes.
struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn at_end(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    #[inline]
    fn expect(&mut self, byte: u8) -> Scan {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// Accepts only trailing whitespace after the top-level value.
    fn finish(&mut self) -> Scan {
        self.skip_whitespace();
        if self.at_end() { Ok(()) } else { Err(Malformed) }
    }

    /// Skips one value starting at `pos` (no leading whitespace).
    fn value(&mut self, depth: usize) -> Scan {
        match self.peek().ok_or(Malformed)? {
            b'{' => self.object(depth, |scanner, _key, depth| scanner.value(depth)),
            b'[' => self.array(depth),
            b'"' => self.short_string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => Err(Malformed),
        }
    }

    /// Scans an object at `pos`, calling `member` with the scanner placed on
    /// each member's value; `member` must consume exactly that value.
    fn object<F>(&mut self, depth: usize, mut member: F) -> Scan
    where
        F: FnMut(&mut Scanner<'a>, &'a [u8], usize) -> Scan,
    {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        self.expect(b'{')?;
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            let key = self.short_string()?;
            self.skip_whitespace();
            self.expect(b':')?;
            self.skip_whitespace();
            member(self, key, depth + 1)?;
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Scan {
        if depth >= MAX_DEPTH {
            return Err(Malformed);
        }
        self.expect(b'[')?;
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        // A book level is a nested array, so the fast path needs one more
        // level of room, exactly as `value` would.
        let levels_fit = depth + 1 < MAX_DEPTH;
        loop {
            self.skip_whitespace();
            match self.peek() {
                // Arrays of strings skip the dispatch in `value`.
                Some(b'"') => {
                    self.short_string()?;
                }
                Some(b'[') if levels_fit && self.string_pairs() => {}
                _ => self.value(depth + 1)?,
            }
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Malformed),
            }
        }
    }

    /// Fast path for book levels: one or more `["<plain>","<plain>"]`
    /// separated by `,`, with no whitespace and no escapes, where `<plain>`
    /// is any run of bytes other than `"`, `\\` and control characters. It
    /// moves past the levels it matched (a `,` only when a level follows) and
    /// returns true. If the first level does not match, it leaves `pos`
    /// unchanged and returns false, and the general grammar decides, so this
    /// path accepts only text the general path accepts too.
    #[inline]
    fn string_pairs(&mut self) -> bool {
        let bytes = self.bytes;
        let Some(mut pos) = string_pair_end(bytes, self.pos) else {
            return false;
        };
        while bytes.get(pos) == Some(&b',') {
            match string_pair_end(bytes, pos + 1) {
                Some(end) => pos = end,
                None => break,
            }
        }
        self.pos = pos;
        true
    }

    /// Scans a string like [`Scanner::string`], inlined for the common
    /// case of a plain string that ends within the next eight bytes, such as
    /// a key or a symbol.
    #[inline(always)]
    fn short_string(&mut self) -> Result<&'a [u8], Malformed> {
        let start = self.pos + 1;
        if self.bytes.get(self.pos) == Some(&b'"')
            && let Some(chunk) = self.bytes.get(start..start + 8)
        {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let len = special_byte_offset(u64::from_le_bytes(word));
            if len < 8 && chunk[len] == b'"' {
                self.pos = start + len + 1;
                return Ok(&chunk[..len]);
            }
        }
        self.string()
    }

    /// Scans a string and returns its raw content, escapes not decoded.
    /// Text frames are valid UTF-8 already (the WebSocket layer checks), so
    /// only escapes and control characters are checked here.
    #[inline]
    fn string(&mut self) -> Result<&'a [u8], Malformed> {
        self.expect(b'"')?;
        let start = self.pos;
        loop {
            self.skip_plain_string_bytes();
            let byte = *self.bytes.get(self.pos).ok_or(Malformed)?;
            match byte {
                b'"' => {
                    self.pos += 1;
                    return Ok(&self.bytes[start..self.pos - 1]);
                }
                b'\\' => {
                    let escaped = *self.bytes.get(self.pos + 1).ok_or(Malformed)?;
                    match escaped {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 2,
                        b'u' => {
                            let hex =
                                self.bytes.get(self.pos + 2..self.pos + 6).ok_or(Malformed)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return Err(Malformed);
                            }
                            self.pos += 6;
                        }
                        _ => return Err(Malformed),
                    }
                }
                0..=0x1f => return Err(Malformed),
                _ => self.pos += 1,
            }
        }
    }

    /// Skips string bytes that need no check (not `"`, `\\` or a control
    /// character).
    #[inline]
    fn skip_plain_string_bytes(&mut self) {
        self.pos += plain_string_len(&self.bytes[self.pos..]);
    }

    /// Scans a number with the JSON grammar: `-? int frac? exp?`.
    #[inline]
    fn number(&mut self) -> Scan {
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(Malformed),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.require_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.require_digits()?;
        }
        Ok(())
    }

    #[inline]
    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
    }

    fn require_digits(&mut self) -> Scan {
        let start = self.pos;
        self.digits();
        if self.pos > start { Ok(()) } else { Err(Malformed) }
    }

    fn literal(&mut self, word: &[u8]) -> Scan {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Parsed<'_> {
        parse_frame(FrameKind::Text, text.as_bytes())
    }

    fn event(text: &str) -> Event<'_> {
        match parse(text) {
            Parsed::Event(event) => event,
            other => panic!("expected an event from {text}, got {other:?}"),
        }
    }

    #[test]
    fn trade_ids_and_exact_data() {
        let text = r#"{"stream":"btcusdt@trade","data":{"e":"trade","E":1764860400123,"s":"BTCUSDT","t":9007199254740993,"p":"1.0","q":"2","T":1,"m":true,"M":true}}"#;
        let parsed = event(text);
        assert_eq!(parsed.stream, "btcusdt@trade");
        assert_eq!(parsed.ids.trade_id, Some(9_007_199_254_740_993));
        assert_eq!(parsed.ids.event_time, Some(1_764_860_400_123));
        let start = text.find("{\"e\"").unwrap();
        assert_eq!(parsed.data, &text.as_bytes()[start..text.len() - 1]);
    }

    #[test]
    fn ids_above_two_pow_53_are_exact() {
        let cases: [(&str, u64); 3] = [
            ("9007199254740993", (1 << 53) + 1),
            ("9223372036854775807", i64::MAX as u64),
            ("18446744073709551615", u64::MAX),
        ];
        for (text, expected) in cases {
            let frame = format!(r#"{{"stream":"x@aggTrade","data":{{"a":{text}}}}}"#);
            assert_eq!(event(&frame).ids.agg_trade_id, Some(expected), "{text}");
        }
    }

    #[test]
    fn futures_depth_reads_pu_minus_one() {
        let text = r#"{"stream":"runeusd_perp@depth5","data":{"e":"depthUpdate","E":1,"U":10,"u":4611686018427387904,"pu":-1,"b":[["1.0","2"]],"a":[]}}"#;
        let ids = event(text).ids;
        assert_eq!(ids.previous_update_id, Some(-1));
        assert_eq!(ids.first_update_id, Some(10));
        assert_eq!(ids.last_update_id, Some(1 << 62));
    }

    #[test]
    fn book_ticker_without_event_type() {
        let text = r#"{"stream":"bnbusdt@bookTicker","data":{"u":400900217,"s":"BNBUSDT","b":"25.35190000","B":"31.21000000","a":"25.36520000","A":"40.66000000"}}"#;
        let ids = event(text).ids;
        assert_eq!(ids.last_update_id, Some(400_900_217));
        assert_eq!(ids.agg_trade_id, None, "bookTicker's a is a price, not an id");
        assert_eq!(ids.event_time, None);
    }

    #[test]
    fn kline_start_and_partial_depth() {
        let kline = r#"{"stream":"btcusdt@kline_1m","data":{"e":"kline","E":5,"k":{"t":1653818880000,"T":2,"i":"1m","x":false}}}"#;
        assert_eq!(event(kline).ids.kline_start, Some(1_653_818_880_000));
        let depth = r#"{"stream":"ethusdt@depth20","data":{"lastUpdateId":17044571457,"bids":[["1","2"]],"asks":[]}}"#;
        assert_eq!(event(depth).ids.snapshot_update_id, Some(17_044_571_457));
    }

    #[test]
    fn data_first_and_whitespace_accepted() {
        let text = " {\"data\" : [1, 2.5e-3, true, null, {\"x\":\"\\u00e9\"}] , \"stream\":\"!ticker@arr\"}\n";
        let parsed = event(text);
        assert_eq!(parsed.stream, "!ticker@arr");
        assert_eq!(parsed.data, br#"[1, 2.5e-3, true, null, {"x":"\u00e9"}]"#);
    }

    #[test]
    fn control_frames_are_not_data() {
        assert_eq!(parse(r#"{"result":null,"id":1000}"#), Parsed::Reply);
        assert_eq!(parse(r#"{"error":{"code":2,"msg":"x"},"id":1}"#), Parsed::Reply);
        assert_eq!(parse(r#"{"stream":"!serverShutdown","data":{"E":1}}"#), Parsed::ServerShutdown);
        assert_eq!(
            parse(r#"{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}"#),
            Parsed::ServerShutdown
        );
        assert_eq!(parse(r#"{"e":"serverShutdown","E":1}"#), Parsed::ServerShutdown);
    }

    #[test]
    fn malformed_frames_have_kinds() {
        use ParseErrorKind::*;
        let cases: &[(&str, ParseErrorKind)] = &[
            ("", Empty),
            ("  \n", Empty),
            (r#"{"stream":"btcusdt@trade","data":{"t":1"#, InvalidJson),
            (r#"{"stream":"btcusdt@trade","data":{"t":1}"#, InvalidJson),
            (r#"{"stream":"btcusdt@trade","data":{"t":1}} x"#, InvalidJson),
            (r#"{"stream":"a@b","data":{"t":01}}"#, InvalidJson),
            (r#"{"stream":"a@b","data":{"p":"1\x"}}"#, InvalidJson),
            (r#"{"stream":"a@b","data":[1,]}"#, InvalidJson),
            ("{\"stream\":\"a@b\",\"data\":\"tab\there\"}", InvalidJson),
            ("[1,2]", NotObject),
            ("42", NotObject),
            (r#"{"data":{"t":1}}"#, MissingStream),
            ("{}", MissingStream),
            (r#"{"stream":"btcusdt@trade"}"#, MissingData),
            (r#"{"stream":"btcusdt@trade","data":null}"#, NullData),
            (r#"{"stream":5,"data":{}}"#, InvalidStream),
            (r#"{"stream":"../../etc","data":{}}"#, InvalidStream),
            (r#"{"stream":"a\/b@trade","data":{}}"#, InvalidStream),
        ];
        for (text, kind) in cases {
            assert_eq!(parse(text), Parsed::Invalid(*kind), "{text}");
        }
        assert_eq!(parse_frame(FrameKind::Binary, b"{}"), Parsed::Invalid(ParseErrorKind::Binary));
    }

    #[test]
    fn string_scan_finds_specials_at_every_offset() {
        for offset in 0..20 {
            let plain = "é".repeat(offset / 2) + &"x".repeat(offset % 2);
            let escaped = format!(r#"{{"stream":"a@b","data":"{plain}\"q"}}"#);
            assert_eq!(event(&escaped).data.len(), plain.len() + 5, "{escaped}");
            let control = format!("{{\"stream\":\"a@b\",\"data\":\"{plain}\u{1f}\"}}");
            assert_eq!(parse(&control), Parsed::Invalid(ParseErrorKind::InvalidJson), "{offset}");
            let unterminated = format!(r#"{{"stream":"a@b","data":"{plain}"#);
            assert_eq!(parse(&unterminated), Parsed::Invalid(ParseErrorKind::InvalidJson));
        }
    }

    #[test]
    fn stream_name_check_matches_plan() {
        let long = format!("{}@trade", "a".repeat(200));
        let names = [
            "btcusdt@trade",
            "!bookTicker",
            "!ticker@arr",
            "btcusdt@depth@100ms",
            "btcusdt_perpetual@continuousKline_1m",
            "",
            "btcusdt",
            ".x@trade",
            "a/b@trade",
            "a b@trade",
            "é@trade",
            "@trade",
            long.as_str(),
        ];
        for name in names {
            let expected = crate::plan::validate_stream_name(name).is_ok();
            assert_eq!(is_valid_stream_name(name), expected, "{name:?}");
        }
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!(r#"{{"stream":"a@b","data":{}{}}}"#, "[".repeat(100), "]".repeat(100));
        assert_eq!(parse(&deep), Parsed::Invalid(ParseErrorKind::InvalidJson));
    }

    /// A spot depth update with 20 levels per side, as Binance sends it.
    fn depth_frame() -> String {
        let level = |price: u32| format!(r#"["{price}.01000000","0.{price:03}00000"]"#);
        let bids: Vec<String> = (0..20).map(|index| level(97_000 - index)).collect();
        let asks: Vec<String> = (0..20).map(|index| level(97_001 + index)).collect();
        format!(
            r#"{{"stream":"btcusdt@depth@100ms","data":{{"e":"depthUpdate","E":1764860400123,"s":"BTCUSDT","U":157,"u":160,"b":[{}],"a":[{}]}}}}"#,
            bids.join(","),
            asks.join(",")
        )
    }

    #[test]
    fn depth_truncated_at_every_offset() {
        let frame = depth_frame();
        let ids = event(&frame).ids;
        assert_eq!(ids.first_update_id, Some(157));
        assert_eq!(ids.last_update_id, Some(160));
        for len in 1..frame.len() {
            let prefix = &frame.as_bytes()[..len];
            let parsed = parse_frame(FrameKind::Text, prefix);
            assert_eq!(parsed, Parsed::Invalid(ParseErrorKind::InvalidJson), "length {len}");
        }
    }

    #[test]
    fn depth_corruption_matches_serde() {
        let frame = depth_frame();
        let replacements = [b'"', b',', b'[', b']', b'\\', b' ', 0x01, b'x', b'1', b'}'];
        for offset in 0..frame.len() {
            for replacement in replacements {
                let mut bytes = frame.clone().into_bytes();
                bytes[offset] = replacement;
                let valid = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_ok();
                let parsed = parse_frame(FrameKind::Text, &bytes);
                let invalid = parsed == Parsed::Invalid(ParseErrorKind::InvalidJson);
                let text = String::from_utf8_lossy(&bytes);
                assert_eq!(invalid, !valid, "offset {offset}: {text}");
            }
        }
    }

    #[test]
    fn book_levels_outside_fast_path() {
        let accepted = [
            r#"[ "1" , "2" ]"#,
            r#"["1\u0030","2"]"#,
            r#"["1","2","3"]"#,
            r#"["",""]"#,
            r#"["1",2]"#,
            r#"[["1"],["2",["3","4"]]]"#,
            "[\"1\",\n\"2\"]",
            r#"["1","2"],["3",4],["5","6"],"x",["7","8"]"#,
        ];
        for levels in accepted {
            let frame = format!(r#"{{"stream":"a@depth","data":{{"b":[{levels}],"a":[]}}}}"#);
            let expected = format!(r#"{{"b":[{levels}],"a":[]}}"#);
            assert_eq!(event(&frame).data, expected.as_bytes(), "{levels}");
        }
        let rejected = [
            r#"["1","2""#,
            r#"["1","2",]"#,
            r#"["1" "2"]"#,
            "[\"1\u{1}\",\"2\"]",
            r#"["1\x","2"]"#,
            r#"["1","2"]]"#,
            r#"["1","2"],]"#,
            r#"["1","2"],["3","4"]x"#,
        ];
        for levels in rejected {
            let frame = format!(r#"{{"stream":"a@depth","data":{{"b":[{levels}]}}}}"#);
            assert_eq!(parse(&frame), Parsed::Invalid(ParseErrorKind::InvalidJson), "{levels}");
        }
    }

    #[test]
    fn nesting_bound_same_on_fast_path() {
        for outer in 55..70 {
            let nest = |inner: &str| {
                let open = "[".repeat(outer);
                let close = "]".repeat(outer);
                format!(r#"{{"stream":"a@b","data":{open}{inner}{close}}}"#)
            };
            let fast_frame = nest(r#"["1","2"]"#);
            let general_frame = nest("[1,2]");
            let fast = parse(&fast_frame);
            let general = parse(&general_frame);
            assert_eq!(fast.clone_kind(), general.clone_kind(), "{outer} levels");
            let expected = if outer < 60 { None } else { Some(ParseErrorKind::InvalidJson) };
            if outer == 55 || outer == 69 {
                assert_eq!(general.clone_kind(), expected, "{outer} levels");
            }
        }
    }

    impl Parsed<'_> {
        /// The variant without borrowed data, for comparing two frames.
        fn clone_kind(&self) -> Option<ParseErrorKind> {
            match self {
                Parsed::Invalid(kind) => Some(*kind),
                _ => None,
            }
        }
    }

    #[test]
    fn integer_parsing_rejects_non_integers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"\"5\""), None);
        assert_eq!(parse_u64(b"1.5"), None);
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
    }
}
