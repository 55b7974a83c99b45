//! Synthetic market data: trade, aggTrade, depthUpdate, partial depth and
//! bookTicker payloads for any symbol, in the shape of spot, USD-M or COIN-M.
//!
//! Event `n` of a stream is a pure function of the stream name, `n` and the
//! event time, so every connection subscribed to a stream sees the same ids
//! and bytes for the same `n`. Connection threads call it; it never does I/O.
//!
//! Id rules, all starting above 2^32:
//! - trade `t` and aggTrade `a` count up by one; aggTrade `f`..`l` are
//!   contiguous across events;
//! - depth `u` advances 3 to 7 per event; spot `U` is the previous `u` + 1,
//!   futures `pu` is the previous `u` and `U` skips 0 to 2 ids past it, and
//!   the first COIN-M event has `pu: -1`;
//! - spot bookTicker and spot partial depth carry no `e` or `E`.

use std::io::Write as _;
use std::ops::Range;

use crate::venue::Venue;

/// Lowest id a generated stream starts from: above 2^32, as real futures
/// depth ids are.
const BASE_ID: u64 = 5_000_000_000;

/// Levels per side of a diff depth event, which makes an event 1 to 2 KB.
const DEPTH_LEVELS: usize = 20;

/// Payload shapes of one market.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Market {
    /// Spot and Binance.US.
    Spot,
    /// USD-M futures.
    UsdM,
    /// COIN-M futures: adds `ps` and puts `u` first in bookTicker.
    CoinM,
}

impl Market {
    /// Market whose shapes `venue` uses.
    pub fn of(venue: Venue) -> Market {
        match venue {
            Venue::UsdM => Market::UsdM,
            Venue::CoinM => Market::CoinM,
            _ => Market::Spot,
        }
    }

    fn is_futures(self) -> bool {
        self != Market::Spot
    }
}

/// Event type of a generated stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// `<symbol>@trade`.
    Trade,
    /// `<symbol>@aggTrade`.
    AggTrade,
    /// `<symbol>@depth` with an optional `@100ms` style speed.
    Depth,
    /// `<symbol>@depth5`, `@depth10` or `@depth20`, with optional speed.
    PartialDepth(usize),
    /// `<symbol>@bookTicker`.
    BookTicker,
}

/// Generator of one stream's events.
#[derive(Clone, Debug)]
pub struct StreamGenerator {
    name: String,
    kind: StreamKind,
    market: Market,
    symbol: String,
    pair: String,
    seed: u64,
    base_id: u64,
    price_base: u64,
    /// Milliseconds this stream's event time lags the schedule, different
    /// per stream, so `E` goes backwards across streams on one connection as
    /// it does on Binance.
    pub lag_ms: u64,
}

/// Position of a generated event inside the buffer it was written to.
#[derive(Clone, Debug)]
pub struct Written {
    /// Whole combined frame.
    pub frame: Range<usize>,
    /// The `data` value inside it.
    pub data: Range<usize>,
    /// Sequence id written to the sent-log.
    pub id: u64,
}

impl StreamGenerator {
    /// Returns a generator for `stream`, or `None` when its type is not one
    /// the mock generates (kline, ticker, ...), or the name is malformed.
    pub fn new(stream: &str, market: Market) -> Option<StreamGenerator> {
        let (symbol, rest) = stream.split_once('@')?;
        if symbol.is_empty() || !symbol.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let (kind_text, speed) = match rest.split_once('@') {
            Some((kind, speed)) => (kind, Some(speed)),
            None => (rest, None),
        };
        if let Some(speed) = speed {
            if !matches!(speed, "100ms" | "250ms" | "500ms" | "1000ms") {
                return None;
            }
        }
        let kind = match kind_text {
            "trade" if speed.is_none() => StreamKind::Trade,
            "aggTrade" if speed.is_none() => StreamKind::AggTrade,
            "bookTicker" if speed.is_none() => StreamKind::BookTicker,
            "depth" => StreamKind::Depth,
            "depth5" => StreamKind::PartialDepth(5),
            "depth10" => StreamKind::PartialDepth(10),
            "depth20" => StreamKind::PartialDepth(20),
            _ => return None,
        };
        let seed = crate::digest::fnv1a(stream.as_bytes());
        let symbol_upper = symbol.to_ascii_uppercase();
        let pair = symbol_upper.split('_').next().unwrap_or(&symbol_upper).to_string();
        Some(StreamGenerator {
            name: stream.to_string(),
            kind,
            market,
            symbol: symbol_upper,
            pair,
            seed,
            base_id: BASE_ID + seed % 1_000_000_000,
            // Prices between 1.00 and 100000.00, in 1e-8 units.
            price_base: (100 + crate::digest::fnv1a(symbol.as_bytes()) % 9_999_900) * 1_000_000,
            lag_ms: seed % 40,
        })
    }

    /// Stream name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Event type.
    pub fn kind(&self) -> StreamKind {
        self.kind
    }

    /// Appends event `n` as a combined frame to `out`, with event time
    /// `event_ms` (milliseconds since the Unix epoch).
    pub fn write_event(&self, n: u64, event_ms: u64, out: &mut Vec<u8>) -> Written {
        let frame_start = out.len();
        out.extend_from_slice(b"{\"stream\":\"");
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(b"\",\"data\":");
        let data_start = out.len();
        let id = match self.kind {
            StreamKind::Trade => self.write_trade(n, event_ms, out),
            StreamKind::AggTrade => self.write_agg_trade(n, event_ms, out),
            StreamKind::Depth => self.write_depth(n, event_ms, DEPTH_LEVELS, out),
            StreamKind::PartialDepth(levels) => self.write_partial_depth(n, event_ms, levels, out),
            StreamKind::BookTicker => self.write_book_ticker(n, event_ms, out),
        };
        let data_end = out.len();
        out.push(b'}');
        Written { frame: frame_start..out.len(), data: data_start..data_end, id }
    }

    fn write_trade(&self, n: u64, event_ms: u64, out: &mut Vec<u8>) -> u64 {
        let id = self.base_id + n;
        let random = self.random(n);
        let _ = write!(out, "{{\"e\":\"trade\",\"E\":{event_ms},");
        if self.market.is_futures() {
            let _ = write!(
                out,
                "\"T\":{},\"s\":\"{}\",\"t\":{id},",
                event_ms.saturating_sub(1),
                self.symbol
            );
            self.write_price_field(out, "p", self.price(random));
            self.write_qty_field(out, "q", random >> 20);
            let _ = write!(out, "\"X\":\"MARKET\",\"m\":{}}}", random & 1 == 0);
        } else {
            let _ = write!(out, "\"s\":\"{}\",\"t\":{id},", self.symbol);
            self.write_price_field(out, "p", self.price(random));
            self.write_qty_field(out, "q", random >> 20);
            let _ = write!(
                out,
                "\"T\":{},\"m\":{},\"M\":true}}",
                event_ms.saturating_sub(1),
                random & 1 == 0
            );
        }
        id
    }

    fn write_agg_trade(&self, n: u64, event_ms: u64, out: &mut Vec<u8>) -> u64 {
        let id = self.base_id + n;
        // Event i covers 1 + i % 3 trades, so the trades before event n add
        // up to 6 per full cycle of 3 plus the partial cycle.
        let first = self.base_id * 2 + (n / 3) * 6 + (n % 3) * (n % 3 + 1) / 2;
        let last = first + n % 3;
        let random = self.random(n);
        let _ = write!(out, "{{\"e\":\"aggTrade\",\"E\":{event_ms},");
        if self.market.is_futures() {
            let _ = write!(out, "\"a\":{id},\"s\":\"{}\",", self.symbol);
        } else {
            let _ = write!(out, "\"s\":\"{}\",\"a\":{id},", self.symbol);
        }
        self.write_price_field(out, "p", self.price(random));
        self.write_qty_field(out, "q", random >> 20);
        let _ = write!(
            out,
            "\"f\":{first},\"l\":{last},\"T\":{},\"m\":{}",
            event_ms.saturating_sub(1),
            random & 1 == 0
        );
        if self.market.is_futures() {
            out.push(b'}');
        } else {
            out.extend_from_slice(b",\"M\":true}");
        }
        id
    }

    /// Last update id of event `n`: update i advances it by 3 + i % 5, which
    /// adds up to 25 per full cycle of 5.
    fn last_update_id(&self, n: u64) -> u64 {
        let count = n + 1;
        let rest = count % 5;
        self.base_id + (count / 5) * 25 + 3 * rest + rest * rest.saturating_sub(1) / 2
    }

    fn write_depth(&self, n: u64, event_ms: u64, levels: usize, out: &mut Vec<u8>) -> u64 {
        let last = self.last_update_id(n);
        let previous = if n == 0 { self.base_id } else { self.last_update_id(n - 1) };
        let _ = write!(out, "{{\"e\":\"depthUpdate\",\"E\":{event_ms},");
        match self.market {
            Market::Spot => {
                let _ =
                    write!(out, "\"s\":\"{}\",\"U\":{},\"u\":{last},", self.symbol, previous + 1);
            }
            Market::UsdM | Market::CoinM => {
                let _ =
                    write!(out, "\"T\":{},\"s\":\"{}\",", event_ms.saturating_sub(1), self.symbol);
                if self.market == Market::CoinM {
                    let _ = write!(out, "\"ps\":\"{}\",", self.pair);
                }
                // Futures U skips past pu + 1; continuity is pu == previous u.
                let first = previous + 1 + n % 3;
                let _ = write!(out, "\"U\":{first},\"u\":{last},");
                if self.market == Market::CoinM && n == 0 {
                    out.extend_from_slice(b"\"pu\":-1,");
                } else {
                    let _ = write!(out, "\"pu\":{previous},");
                }
            }
        }
        self.write_levels(n, levels, b"\"b\":", b",\"a\":", out);
        out.push(b'}');
        last
    }

    fn write_partial_depth(&self, n: u64, event_ms: u64, levels: usize, out: &mut Vec<u8>) -> u64 {
        if self.market.is_futures() {
            return self.write_depth(n, event_ms, levels, out);
        }
        let last = self.last_update_id(n);
        let _ = write!(out, "{{\"lastUpdateId\":{last},");
        self.write_levels(n, levels, b"\"bids\":", b",\"asks\":", out);
        out.push(b'}');
        last
    }

    fn write_book_ticker(&self, n: u64, event_ms: u64, out: &mut Vec<u8>) -> u64 {
        let id = self.last_update_id(n);
        let random = self.random(n);
        let bid = self.price(random);
        match self.market {
            Market::Spot => {
                let _ = write!(out, "{{\"u\":{id},\"s\":\"{}\",", self.symbol);
            }
            Market::UsdM => {
                let _ = write!(out, "{{\"e\":\"bookTicker\",\"u\":{id},\"s\":\"{}\",", self.symbol);
            }
            Market::CoinM => {
                let _ = write!(
                    out,
                    "{{\"u\":{id},\"e\":\"bookTicker\",\"s\":\"{}\",\"ps\":\"{}\",",
                    self.symbol, self.pair
                );
            }
        }
        self.write_price_field(out, "b", bid);
        self.write_qty_field(out, "B", random >> 16);
        self.write_price_field(out, "a", bid + self.tick());
        self.write_qty_field(out, "A", random >> 24);
        // Drop the comma after the last field.
        out.pop();
        if self.market.is_futures() {
            let _ = write!(out, ",\"T\":{},\"E\":{event_ms}", event_ms.saturating_sub(1));
        }
        out.push(b'}');
        id
    }

    fn write_levels(
        &self,
        n: u64,
        levels: usize,
        bids_key: &[u8],
        asks_key: &[u8],
        out: &mut Vec<u8>,
    ) {
        let random = self.random(n);
        let mid = self.price(random);
        for (key, side) in [(bids_key, -1i64), (asks_key, 1i64)] {
            out.extend_from_slice(key);
            out.push(b'[');
            for level in 0..levels {
                if level > 0 {
                    out.push(b',');
                }
                let offset = (level as u64 + 1) * self.tick();
                let price = if side < 0 { mid.saturating_sub(offset) } else { mid + offset };
                let quantity_seed = splitmix64(random ^ (level as u64) ^ (side as u64));
                // Every seventh level is a delete, as real diffs often carry.
                let quantity = if quantity_seed % 7 == 0 { 0 } else { quantity_seed >> 20 };
                out.extend_from_slice(b"[\"");
                self.write_price(out, price);
                out.extend_from_slice(b"\",\"");
                self.write_qty(out, quantity);
                out.extend_from_slice(b"\"]");
            }
            out.push(b']');
        }
    }

    fn random(&self, n: u64) -> u64 {
        splitmix64(self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Price in 1e-8 units near the stream's base price.
    fn price(&self, random: u64) -> u64 {
        let spread = self.price_base / 1000 + 1;
        self.price_base - spread / 2 + random % spread
    }

    fn tick(&self) -> u64 {
        if self.market.is_futures() { 1_000_000 } else { 10_000 }
    }

    fn write_price_field(&self, out: &mut Vec<u8>, key: &str, price: u64) {
        let _ = write!(out, "\"{key}\":\"");
        self.write_price(out, price);
        out.extend_from_slice(b"\",");
    }

    fn write_qty_field(&self, out: &mut Vec<u8>, key: &str, raw: u64) {
        let _ = write!(out, "\"{key}\":\"");
        self.write_qty(out, raw);
        out.extend_from_slice(b"\",");
    }

    /// Writes a price: 8 decimals on spot, 2 on futures.
    fn write_price(&self, out: &mut Vec<u8>, price: u64) {
        if self.market.is_futures() {
            write_fixed(out, price / 1_000_000, 2);
        } else {
            write_fixed(out, price, 8);
        }
    }

    /// Writes a quantity below 10: 8 decimals on spot, 3 on futures.
    fn write_qty(&self, out: &mut Vec<u8>, raw: u64) {
        let units = raw % 1_000_000_000;
        if self.market.is_futures() {
            write_fixed(out, units / 100_000, 3);
        } else {
            write_fixed(out, units, 8);
        }
    }
}

/// Writes `value / 10^decimals` with exactly `decimals` digits after the
/// point.
fn write_fixed(out: &mut Vec<u8>, value: u64, decimals: u32) {
    let scale = 10u64.pow(decimals);
    let _ = write!(out, "{}.{:0width$}", value / scale, value % scale, width = decimals as usize);
}

/// SplitMix64 step: a fast, well-mixed 64-bit hash of `x`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn events(stream: &str, market: Market, count: u64) -> Vec<(Value, usize)> {
        let generator = StreamGenerator::new(stream, market).unwrap();
        (0..count)
            .map(|n| {
                let mut out = Vec::new();
                let written = generator.write_event(n, 1_733_300_000_000 + n, &mut out);
                let frame: Value = serde_json::from_slice(&out[written.frame.clone()]).unwrap();
                assert_eq!(frame["stream"], stream);
                (frame["data"].clone(), written.data.len())
            })
            .collect()
    }

    #[test]
    fn trade_ids_are_contiguous_past_u32() {
        let trades = events("btcusdt@trade", Market::Spot, 5);
        for pair in trades.windows(2) {
            let first = pair[0].0["t"].as_u64().unwrap();
            assert!(first > u64::from(u32::MAX));
            assert_eq!(pair[1].0["t"].as_u64().unwrap(), first + 1);
        }
        let length = trades[0].1;
        assert!((130..=190).contains(&length), "trade payload is {length} bytes");
    }

    #[test]
    fn spot_depth_chains_by_first_update_id() {
        let updates = events("btcusdt@depth@100ms", Market::Spot, 12);
        for pair in updates.windows(2) {
            let previous_last = pair[0].0["u"].as_u64().unwrap();
            assert_eq!(pair[1].0["U"].as_u64().unwrap(), previous_last + 1);
        }
        let length = updates[0].1;
        assert!((1000..=2048).contains(&length), "depth payload is {length} bytes");
    }

    #[test]
    fn futures_depth_chains_by_previous_update_id() {
        let updates = events("btcusdt@depth@100ms", Market::UsdM, 12);
        let mut skipped = 0;
        for pair in updates.windows(2) {
            let previous_last = pair[0].0["u"].as_u64().unwrap();
            assert_eq!(pair[1].0["pu"].as_u64().unwrap(), previous_last);
            if pair[1].0["U"].as_u64().unwrap() != previous_last + 1 {
                skipped += 1;
            }
        }
        assert!(skipped > 0, "futures U never skipped ahead");
        let coin = events("btcusd_perp@depth", Market::CoinM, 2);
        assert_eq!(coin[0].0["pu"], -1);
        assert_eq!(coin[0].0["ps"], "BTCUSD");
    }

    #[test]
    fn spot_book_ticker_has_no_event_fields() {
        let tickers = events("btcusdt@bookTicker", Market::Spot, 2);
        assert!(tickers[0].0.get("e").is_none());
        assert!(tickers[0].0.get("E").is_none());
        let partial = events("btcusdt@depth20@100ms", Market::Spot, 1);
        assert!(partial[0].0.get("e").is_none());
        assert!(partial[0].0["lastUpdateId"].as_u64().is_some());
        let futures = events("btcusdt@bookTicker", Market::UsdM, 1);
        assert_eq!(futures[0].0["e"], "bookTicker");
    }

    #[test]
    fn agg_trade_ranges_are_contiguous() {
        let trades = events("ethusdt@aggTrade", Market::Spot, 10);
        for pair in trades.windows(2) {
            let last = pair[0].0["l"].as_u64().unwrap();
            assert_eq!(pair[1].0["f"].as_u64().unwrap(), last + 1);
            assert_eq!(pair[1].0["a"].as_u64().unwrap(), pair[0].0["a"].as_u64().unwrap() + 1);
        }
    }

    #[test]
    fn unknown_stream_types_are_not_generated() {
        assert!(StreamGenerator::new("btcusdt@kline_1m", Market::Spot).is_none());
        assert!(StreamGenerator::new("btcusdt", Market::Spot).is_none());
        assert!(StreamGenerator::new("btc\"usdt@trade", Market::Spot).is_none());
    }
}
