//! Duplicate and gap detection for one stream, by the stream's id rule.
//!
//! Runs on the pipeline thread, once per event, with no lock and no
//! allocation except the digest window of a stream without ids (allocated
//! once, at `dedup_window` entries). It never stops ingest: a gap is
//! reported to the caller, which stores a gap record and goes on.
//!
//! | stream | key | gap when |
//! |---|---|---|
//! | trade | `t` | `t > last + 1` |
//! | aggTrade | `a` | `a > last + 1` |
//! | spot diff depth | `u` | `U != last u + 1` (only `U > last u + 1` can be a gap) |
//! | futures diff depth (usdm, coinm) | `u` | `pu != last u`; `pu = -1` resets |
//! | partial depth | `u` or `lastUpdateId` | never |
//! | bookTicker | `u` | never: `u` only increases |
//! | kline | (`E`, `k.t`) | never |
//! | all others, and all-market `!` streams | payload digest | never |
//!
//! An id at or below the last seen is a duplicate. All-market streams such
//! as `!bookTicker` interleave symbols with unrelated ids, so they use the
//! digest rule. An event that lacks its rule's id also falls back to the
//! digest rule.

use std::collections::{HashSet, VecDeque};

use crate::digest::fnv1a;
use crate::frame::ConnectionId;
use crate::parse::Ids;
use crate::plan::stream_type;
use crate::record::Gap;
use crate::venue::Venue;

/// Rule by which a stream's events are keyed and checked for gaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Trade id `t`, consecutive.
    Trade,
    /// Aggregate trade id `a`, consecutive.
    AggTrade,
    /// Spot diff depth: `U` follows the previous `u`.
    SpotDepth,
    /// Futures diff depth: `pu` equals the previous `u`.
    FuturesDepth,
    /// Partial book depth snapshots, keyed by `u` or `lastUpdateId`.
    PartialDepth,
    /// Book ticker, keyed by `u`.
    BookTicker,
    /// Kline, keyed by (`E`, `k.t`).
    Kline,
    /// Payload digest within a bounded window.
    Digest,
}

impl Rule {
    /// Picks the rule for `stream` on `venue` from the stream name alone,
    /// because spot bookTicker and partial depth carry no event type.
    pub fn for_stream(venue: Venue, stream: &str) -> Rule {
        if stream.starts_with('!') {
            return Rule::Digest;
        }
        let kind = stream_type(stream);
        if kind == "trade" {
            Rule::Trade
        } else if kind == "aggTrade" {
            Rule::AggTrade
        } else if kind == "bookTicker" {
            Rule::BookTicker
        } else if kind.starts_with("kline_") || kind.contains("Kline_") {
            Rule::Kline
        } else if kind == "depth" || kind.starts_with("depth@") {
            if venue.is_futures() { Rule::FuturesDepth } else { Rule::SpotDepth }
        } else if kind.strip_prefix("depth").is_some_and(|rest| rest.starts_with(char::is_numeric))
        {
            Rule::PartialDepth
        } else {
            Rule::Digest
        }
    }

    /// Name written in gap records.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Trade => "trade",
            Rule::AggTrade => "aggTrade",
            Rule::SpotDepth => "spot_depth",
            Rule::FuturesDepth => "futures_depth",
            Rule::PartialDepth => "partial_depth",
            Rule::BookTicker => "bookTicker",
            Rule::Kline => "kline",
            Rule::Digest => "digest",
        }
    }
}

/// Outcome of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A new event, in sequence.
    New,
    /// Seen before: drop it.
    Duplicate,
    /// A new event after missing ones: store it and a gap record.
    Gap(Gap),
    /// An event of the new connection of an overlap that is ahead of the
    /// old one: keep it until the sequences meet, then observe it again.
    Held,
}

/// Sequence state of one stream.
///
/// Outside an overlap, one "last key" fed by every connection decides.
/// During a make-before-break overlap the old connection stays the
/// authority. An event of the new connection at or below the last key is
/// dropped, and it proves that the two sequences meet, because the old
/// connection already delivered it. Events of the new connection ahead of
/// the last key get [`Verdict::Held`]. When the old connection reaches the
/// first held key, the sequences meet from the other side. Either way the
/// stream switches to the new connection, and [`StreamSequence::take_release`]
/// tells the caller to observe the held events again, in order.
#[derive(Debug)]
pub struct StreamSequence {
    rule: Rule,
    last: Option<(u64, u64)>,
    last_connection: Option<ConnectionId>,
    digests: Option<DigestWindow>,
    dedup_window: usize,
    overlap: Option<Overlap>,
    release: bool,
}

/// An overlap of two connections on one stream that has not met yet.
#[derive(Clone, Copy, Debug)]
struct Overlap {
    old: ConnectionId,
    new: ConnectionId,
    first_held: Option<(u64, u64)>,
}

impl StreamSequence {
    /// Creates the state of a stream that has delivered nothing yet.
    /// `dedup_window` bounds the digests kept for the digest rule.
    pub fn new(rule: Rule, dedup_window: usize) -> StreamSequence {
        StreamSequence {
            rule,
            last: None,
            last_connection: None,
            digests: None,
            dedup_window,
            overlap: None,
            release: false,
        }
    }

    /// Starts an overlap in which `old` stays the authority until its
    /// sequence meets that of `new`. Streams under the digest rule need no
    /// authority: the digest window drops the copies.
    pub fn begin_overlap(&mut self, old: ConnectionId, new: ConnectionId) {
        if self.rule != Rule::Digest {
            self.overlap = Some(Overlap { old, new, first_held: None });
        }
    }

    /// Returns whether an overlap is waiting for the sequences to meet.
    pub fn in_overlap(&self) -> bool {
        self.overlap.is_some()
    }

    /// Ends the overlap without proof that the sequences met (deadline or
    /// hold bound): the stream switches to the new connection, and the held
    /// events are released, so a hole before them becomes a gap record.
    pub fn force_switch(&mut self) {
        if self.overlap.take().is_some() {
            self.release = true;
        }
    }

    /// Ends the overlap because the new connection failed. The old one stays
    /// the authority. The caller keeps the held events and observes each
    /// again before the first event with a higher key, so a held event is
    /// stored only when the old connection did not deliver it.
    pub fn cancel_overlap(&mut self) {
        self.overlap = None;
        self.release = false;
    }

    /// Returns true once after the stream switched, when the held events of
    /// the new connection must be observed again.
    pub fn take_release(&mut self) -> bool {
        std::mem::take(&mut self.release)
    }

    /// The stream's rule.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// Connection of the last event accepted.
    pub fn last_connection(&self) -> Option<ConnectionId> {
        self.last_connection
    }

    /// Checks one event against the stream's history and records it.
    pub fn observe(&mut self, connection: ConnectionId, ids: &Ids, data: &[u8]) -> Verdict {
        let verdict = match (self.rule, self.key(ids)) {
            (Rule::Digest, _) | (_, None) => self.observe_digest(data),
            (rule, Some(key)) => match self.overlap {
                Some(overlap) => self.observe_overlap(overlap, connection, rule, key, ids),
                None => self.observe_key(rule, key, ids),
            },
        };
        if !matches!(verdict, Verdict::Duplicate | Verdict::Held) {
            self.last_connection = Some(connection);
        }
        verdict
    }

    fn observe_overlap(
        &mut self,
        overlap: Overlap,
        connection: ConnectionId,
        rule: Rule,
        key: (u64, u64),
        ids: &Ids,
    ) -> Verdict {
        if connection == overlap.new {
            return match self.last {
                // The old connection delivered nothing on this stream, so
                // there is nothing to meet: switch at once.
                None => {
                    self.overlap = None;
                    self.release = true;
                    self.observe_key(rule, key, ids)
                }
                Some(last) if key <= last => {
                    self.overlap = None;
                    self.release = true;
                    Verdict::Duplicate
                }
                Some(_) => {
                    if overlap.first_held.is_none() {
                        self.overlap = Some(Overlap { first_held: Some(key), ..overlap });
                    }
                    Verdict::Held
                }
            };
        }
        let verdict = self.observe_key(rule, key, ids);
        if connection == overlap.old && overlap.first_held.is_some_and(|first| key >= first) {
            self.overlap = None;
            self.release = true;
        }
        verdict
    }

    /// Returns whether `connection` is the new connection of an overlap
    /// that has not met yet, so its events ahead of the last key are held.
    pub fn is_held_source(&self, connection: ConnectionId) -> bool {
        self.overlap.is_some_and(|overlap| overlap.new == connection)
    }

    /// The (primary, secondary) key of an event under this stream's rule,
    /// or `None` for the digest rule and for events that lack the rule's id.
    pub fn key(&self, ids: &Ids) -> Option<(u64, u64)> {
        let primary = match self.rule {
            Rule::Trade => ids.trade_id?,
            Rule::AggTrade => ids.agg_trade_id?,
            Rule::SpotDepth | Rule::FuturesDepth | Rule::BookTicker => ids.last_update_id?,
            Rule::PartialDepth => ids.last_update_id.or(ids.snapshot_update_id)?,
            // Event time first: it increases on every update of a kline
            // stream, while `k.t` stays put for the life of a candle. The
            // close of one candle and the first update of the next may
            // share `E`, and `k.t` orders those two.
            Rule::Kline => return Some((ids.event_time?, ids.kline_start?)),
            Rule::Digest => return None,
        };
        Some((primary, 0))
    }

    fn observe_key(&mut self, rule: Rule, key: (u64, u64), ids: &Ids) -> Verdict {
        let Some(last) = self.last else {
            self.last = Some(key);
            return Verdict::New;
        };
        if key <= last {
            return Verdict::Duplicate;
        }
        self.last = Some(key);
        let (id, last_id) = (key.0, last.0);
        let gap = match rule {
            Rule::Trade | Rule::AggTrade if id > last_id + 1 => Some(Gap {
                first: Some(last_id + 1),
                last: Some(id - 1),
                missing: Some(id - last_id - 1),
                rule: rule.name(),
            }),
            Rule::SpotDepth => match ids.first_update_id {
                Some(first) if first > last_id + 1 => Some(Gap {
                    first: Some(last_id + 1),
                    last: Some(first - 1),
                    missing: None,
                    rule: rule.name(),
                }),
                _ => None,
            },
            Rule::FuturesDepth => futures_gap(ids.previous_update_id, last_id),
            _ => None,
        };
        gap.map_or(Verdict::New, Verdict::Gap)
    }

    fn observe_digest(&mut self, data: &[u8]) -> Verdict {
        let capacity = self.dedup_window;
        let window = self.digests.get_or_insert_with(|| DigestWindow::new(capacity));
        if window.insert(fnv1a(data)) { Verdict::New } else { Verdict::Duplicate }
    }
}

/// Futures depth: `pu` must equal the previous `u`, except that -1 marks a
/// reset. Update ids do not count events, so `missing` is unknown.
fn futures_gap(previous: Option<i64>, last_id: u64) -> Option<Gap> {
    let previous = previous?;
    if previous == -1 || u64::try_from(previous).ok() == Some(last_id) {
        return None;
    }
    let (first, last) = match u64::try_from(previous) {
        Ok(previous) if previous > last_id => (Some(last_id + 1), Some(previous)),
        _ => (None, None),
    };
    Some(Gap { first, last, missing: None, rule: Rule::FuturesDepth.name() })
}

/// The newest `capacity` payload digests of one stream.
#[derive(Debug)]
struct DigestWindow {
    capacity: usize,
    order: VecDeque<u64>,
    members: HashSet<u64>,
}

impl DigestWindow {
    fn new(capacity: usize) -> DigestWindow {
        let capacity = capacity.max(1);
        DigestWindow {
            capacity,
            order: VecDeque::with_capacity(capacity),
            members: HashSet::with_capacity(capacity),
        }
    }

    /// Returns false when `digest` is in the window already.
    fn insert(&mut self, digest: u64) -> bool {
        if !self.members.insert(digest) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.members.remove(&oldest);
        }
        self.order.push_back(digest);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trade(t: u64) -> Ids {
        Ids { trade_id: Some(t), ..Ids::default() }
    }

    fn run(rule: Rule, events: &[Ids]) -> Vec<Verdict> {
        let mut sequence = StreamSequence::new(rule, 4);
        events.iter().map(|ids| sequence.observe(1, ids, b"{}")).collect()
    }

    fn gap(first: Option<u64>, last: Option<u64>, missing: Option<u64>, rule: Rule) -> Verdict {
        Verdict::Gap(Gap { first, last, missing, rule: rule.name() })
    }

    #[test]
    fn rules_follow_stream_names() {
        let cases = [
            (Venue::Spot, "btcusdt@trade", Rule::Trade),
            (Venue::UsdM, "btcusdt@aggTrade", Rule::AggTrade),
            (Venue::Spot, "btcusdt@depth", Rule::SpotDepth),
            (Venue::Spot, "btcusdt@depth@100ms", Rule::SpotDepth),
            (Venue::BinanceUs, "btcusdt@depth@100ms", Rule::SpotDepth),
            (Venue::UsdM, "btcusdt@depth@100ms", Rule::FuturesDepth),
            (Venue::CoinM, "btcusd_perp@depth", Rule::FuturesDepth),
            (Venue::Spot, "btcusdt@depth20@100ms", Rule::PartialDepth),
            (Venue::CoinM, "runeusd_perp@depth5", Rule::PartialDepth),
            (Venue::Spot, "btcusdt@bookTicker", Rule::BookTicker),
            (Venue::Spot, "!bookTicker", Rule::Digest),
            (Venue::Spot, "btcusdt@kline_1m", Rule::Kline),
            (Venue::UsdM, "btcusdt_perpetual@continuousKline_1m", Rule::Kline),
            (Venue::Spot, "btcusdt@ticker", Rule::Digest),
            (Venue::UsdM, "btcusdt@markPrice@1s", Rule::Digest),
            (Venue::Spot, "!ticker@arr", Rule::Digest),
        ];
        for (venue, stream, rule) in cases {
            assert_eq!(Rule::for_stream(venue, stream), rule, "{venue} {stream}");
        }
    }

    #[test]
    fn trade_drops_duplicates_and_counts_gap() {
        let verdicts =
            run(Rule::Trade, &[trade(100), trade(101), trade(101), trade(99), trade(105)]);
        assert_eq!(verdicts[0], Verdict::New);
        assert_eq!(verdicts[1], Verdict::New);
        assert_eq!(verdicts[2], Verdict::Duplicate);
        assert_eq!(verdicts[3], Verdict::Duplicate);
        assert_eq!(verdicts[4], gap(Some(102), Some(104), Some(3), Rule::Trade));
    }

    #[test]
    fn agg_trade_gap_beyond_two_pow_53() {
        let base = (1u64 << 53) + 1;
        let ids = |a| Ids { agg_trade_id: Some(a), ..Ids::default() };
        let verdicts = run(Rule::AggTrade, &[ids(base), ids(base + 1), ids(base + 3)]);
        assert_eq!(verdicts[1], Verdict::New);
        assert_eq!(verdicts[2], gap(Some(base + 2), Some(base + 2), Some(1), Rule::AggTrade));
    }

    #[test]
    fn spot_depth_chains_by_first_update() {
        let depth = |first, last| Ids {
            first_update_id: Some(first),
            last_update_id: Some(last),
            ..Ids::default()
        };
        let events = [depth(1, 10), depth(11, 15), depth(12, 15), depth(14, 18), depth(25, 30)];
        let verdicts = run(Rule::SpotDepth, &events);
        assert_eq!(verdicts[1], Verdict::New);
        assert_eq!(verdicts[2], Verdict::Duplicate, "u at or below the last u");
        assert_eq!(verdicts[3], Verdict::New, "an overlapping update is no gap");
        assert_eq!(verdicts[4], gap(Some(19), Some(24), None, Rule::SpotDepth));
    }

    #[test]
    fn futures_depth_chains_by_previous_update() {
        let depth = |first, last, previous| Ids {
            first_update_id: Some(first),
            last_update_id: Some(last),
            previous_update_id: Some(previous),
            ..Ids::default()
        };
        let events = [
            depth(1, 10, 0),
            depth(40, 50, 10),
            depth(90, 95, 60),
            depth(200, 210, -1),
            depth(220, 230, 205),
            depth(220, 230, 210),
        ];
        let verdicts = run(Rule::FuturesDepth, &events);
        assert_eq!(verdicts[1], Verdict::New, "U skips ahead on futures, pu chains");
        assert_eq!(verdicts[2], gap(Some(51), Some(60), None, Rule::FuturesDepth));
        assert_eq!(verdicts[3], Verdict::New, "pu = -1 resets without a gap");
        assert_eq!(verdicts[4], gap(None, None, None, Rule::FuturesDepth));
        assert_eq!(verdicts[5], Verdict::Duplicate);
    }

    #[test]
    fn book_ticker_and_partial_depth_never_gap() {
        let book = |u| Ids { last_update_id: Some(u), ..Ids::default() };
        let verdicts = run(Rule::BookTicker, &[book(5), book(500), book(500), book(4)]);
        assert_eq!(verdicts, [Verdict::New, Verdict::New, Verdict::Duplicate, Verdict::Duplicate]);
        let snapshot = |id| Ids { snapshot_update_id: Some(id), ..Ids::default() };
        let verdicts = run(Rule::PartialDepth, &[snapshot(7), snapshot(9000), snapshot(9000)]);
        assert_eq!(verdicts, [Verdict::New, Verdict::New, Verdict::Duplicate]);
    }

    #[test]
    fn kline_keys_on_start_and_event_time() {
        let kline = |start, time| Ids {
            kline_start: Some(start),
            event_time: Some(time),
            ..Ids::default()
        };
        let events = [
            kline(60, 61),
            kline(60, 62),
            kline(60, 62),
            kline(120, 62),
            kline(60, 61),
            kline(120, 63),
        ];
        let verdicts = run(Rule::Kline, &events);
        assert_eq!(
            verdicts,
            [
                Verdict::New,
                Verdict::New,
                Verdict::Duplicate,
                Verdict::New,
                Verdict::Duplicate,
                Verdict::New
            ]
        );
    }

    #[test]
    fn digest_window_is_bounded() {
        let mut sequence = StreamSequence::new(Rule::Digest, 2);
        let none = Ids::default();
        assert_eq!(sequence.observe(1, &none, b"a"), Verdict::New);
        assert_eq!(sequence.observe(1, &none, b"a"), Verdict::Duplicate);
        assert_eq!(sequence.observe(1, &none, b"b"), Verdict::New);
        assert_eq!(sequence.observe(1, &none, b"c"), Verdict::New);
        assert_eq!(sequence.observe(2, &none, b"a"), Verdict::New, "a left the window");
        assert_eq!(sequence.last_connection(), Some(2));
    }

    #[test]
    fn overlap_behind_meets_at_once() {
        let mut sequence = StreamSequence::new(Rule::Trade, 4);
        for t in 1..=10 {
            assert_eq!(sequence.observe(1, &trade(t), b""), Verdict::New);
        }
        sequence.begin_overlap(1, 2);
        assert_eq!(sequence.observe(2, &trade(9), b""), Verdict::Duplicate, "meets");
        assert!(!sequence.in_overlap());
        assert!(sequence.take_release());
        assert_eq!(sequence.observe(2, &trade(10), b""), Verdict::Duplicate);
        assert_eq!(sequence.observe(2, &trade(11), b""), Verdict::New);
        assert_eq!(sequence.observe(1, &trade(11), b""), Verdict::Duplicate);
    }

    #[test]
    fn overlap_holds_events_ahead() {
        let mut sequence = StreamSequence::new(Rule::Trade, 4);
        for t in 1..=10 {
            sequence.observe(1, &trade(t), b"");
        }
        sequence.begin_overlap(1, 2);
        // The new connection starts at 13: 11 and 12 are still on the way
        // on the old one, so this is no gap yet.
        assert_eq!(sequence.observe(2, &trade(13), b""), Verdict::Held);
        assert_eq!(sequence.observe(2, &trade(14), b""), Verdict::Held);
        assert_eq!(sequence.observe(1, &trade(11), b""), Verdict::New);
        assert!(sequence.in_overlap());
        assert_eq!(sequence.observe(1, &trade(12), b""), Verdict::New);
        assert_eq!(sequence.observe(1, &trade(13), b""), Verdict::New, "old reaches held 13");
        assert!(!sequence.in_overlap());
        assert!(sequence.take_release());
        assert!(!sequence.take_release(), "released once");
        assert_eq!(sequence.observe(2, &trade(13), b""), Verdict::Duplicate);
        assert_eq!(sequence.observe(2, &trade(14), b""), Verdict::New);
    }

    #[test]
    fn overlap_deadline_turns_hole_into_gap() {
        let mut sequence = StreamSequence::new(Rule::Trade, 4);
        sequence.observe(1, &trade(10), b"");
        sequence.begin_overlap(1, 2);
        assert_eq!(sequence.observe(2, &trade(15), b""), Verdict::Held);
        sequence.force_switch();
        assert!(sequence.take_release());
        assert_eq!(
            sequence.observe(2, &trade(15), b""),
            gap(Some(11), Some(14), Some(4), Rule::Trade)
        );
    }

    #[test]
    fn overlap_cancel_keeps_old_authority() {
        let mut sequence = StreamSequence::new(Rule::Trade, 4);
        sequence.observe(1, &trade(10), b"");
        sequence.begin_overlap(1, 2);
        assert_eq!(sequence.observe(2, &trade(12), b""), Verdict::Held);
        sequence.cancel_overlap();
        assert!(!sequence.take_release());
        assert_eq!(sequence.observe(1, &trade(11), b""), Verdict::New);
    }

    #[test]
    fn overlap_skips_digest_streams() {
        let mut sequence = StreamSequence::new(Rule::Digest, 4);
        sequence.begin_overlap(1, 2);
        assert!(!sequence.in_overlap());
        assert_eq!(sequence.observe(1, &Ids::default(), b"a"), Verdict::New);
        assert_eq!(sequence.observe(2, &Ids::default(), b"a"), Verdict::Duplicate);
    }

    #[test]
    fn missing_id_falls_back_to_digest() {
        let mut sequence = StreamSequence::new(Rule::Trade, 4);
        let none = Ids::default();
        assert_eq!(sequence.observe(1, &none, b"x"), Verdict::New);
        assert_eq!(sequence.observe(1, &none, b"x"), Verdict::Duplicate);
        assert_eq!(sequence.observe(1, &trade(1), b"y"), Verdict::New);
    }
}
