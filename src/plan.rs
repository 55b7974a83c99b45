//! Stream names and the plan of connections that carry them.
//!
//! Streams are grouped into combined-stream connections
//! (`/stream?streams=a/b/c`) of at most 1024 streams, Binance's limit per
//! connection. On USD-M futures, book streams must go to `/public` and the
//! rest to `/market`: a wrong or unrouted path accepts the connection and
//! then delivers nothing, so one connection never mixes the two.

use crate::venue::{Endpoint, Venue};

/// Binance's limit of streams per connection.
pub const MAX_STREAMS_PER_CONNECTION: usize = 1024;

/// Maximum length of one stream name.
pub const MAX_STREAM_NAME_LEN: usize = 128;

/// Path family a stream is served on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Route {
    /// `/stream`: spot venues, and futures before path routing.
    Legacy,
    /// `/public/stream`: USD-M book streams (`@bookTicker`, `@depth*`).
    Public,
    /// `/market/stream`: every other USD-M stream.
    Market,
}

impl Route {
    /// Combined-stream path, without the query.
    pub fn path(self) -> &'static str {
        match self {
            Route::Legacy => "/stream",
            Route::Public => "/public/stream",
            Route::Market => "/market/stream",
        }
    }

    /// Name used in configuration values, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Route::Legacy => "legacy",
            Route::Public => "public",
            Route::Market => "market",
        }
    }
}

/// Routing of the streams whose category Binance has not settled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingRules {
    /// Path family of USD-M `@trade` streams.
    pub usdm_trade: Route,
    /// Whether COIN-M streams use the `/public` and `/market` split like
    /// USD-M (true) or the single `/stream` path (false).
    pub coinm_routed: bool,
}

impl Default for RoutingRules {
    fn default() -> Self {
        RoutingRules { usdm_trade: Route::Public, coinm_routed: false }
    }
}

/// One planned connection: a path family and the streams it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Position in the plan, stable while the configuration stays the same.
    pub slot: usize,
    /// Path family.
    pub route: Route,
    /// Stream names, in configuration order.
    pub streams: Vec<String>,
}

impl ConnectionPlan {
    /// Request path and query, such as `/stream?streams=a@trade/b@trade`.
    pub fn path_and_query(&self) -> String {
        format!("{}?streams={}", self.route.path(), self.streams.join("/"))
    }

    /// Full URL on `endpoint`.
    pub fn url(&self, endpoint: &Endpoint) -> String {
        format!("{}{}", endpoint.origin(), self.path_and_query())
    }
}

/// Checks a stream name such as `btcusdt@trade`, `btcusdt@depth@100ms` or
/// `!bookTicker`, and returns a description of the problem when it is
/// invalid.
///
/// Names end up in URLs and in partition folder names, so only ASCII
/// letters, digits and `@ _ ! . -` are accepted.
pub fn validate_stream_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("empty stream name".to_string());
    }
    if name.len() > MAX_STREAM_NAME_LEN {
        return Err(format!("stream name longer than {MAX_STREAM_NAME_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !c.is_ascii_alphanumeric() && !"@_!.-".contains(*c)) {
        return Err(format!(
            "stream name {name:?} contains {bad:?}; allowed are a-z, 0-9, @ _ ! . -"
        ));
    }
    if name.starts_with('.') || !name.contains('@') && !name.starts_with('!') {
        return Err(format!(
            "stream name {name:?} is not of the form <symbol>@<type> or !<type>, e.g. btcusdt@trade"
        ));
    }
    Ok(())
}

/// Returns the path family that serves `stream` on `venue`.
pub fn route_of(venue: Venue, stream: &str, rules: RoutingRules) -> Route {
    let routed = match venue {
        Venue::UsdM => true,
        Venue::CoinM => rules.coinm_routed,
        _ => false,
    };
    if !routed {
        return Route::Legacy;
    }
    let kind = stream_type(stream);
    if kind == "bookTicker" || kind.starts_with("depth") {
        Route::Public
    } else if kind == "trade" {
        rules.usdm_trade
    } else {
        Route::Market
    }
}

/// Returns the stream type: the part after the first `@`, or after `!` for
/// all-market streams (`btcusdt@depth@100ms` gives `depth@100ms`).
pub fn stream_type(stream: &str) -> &str {
    match stream.split_once('@') {
        Some((symbol, kind)) if !symbol.starts_with('!') => kind,
        _ => stream.trim_start_matches('!'),
    }
}

/// Event types of Binance market-data streams, as the part of the stream
/// type before any `@` or `_` suffix (`depth20@100ms` gives `depth20`,
/// `kline_1m` gives `kline`). Spot, USD-M and COIN-M types together, from
/// Binance's WebSocket market stream documentation.
const KNOWN_TYPES: [&str; 22] = [
    "trade",
    "aggTrade",
    "bookTicker",
    "depth",
    "depth5",
    "depth10",
    "depth20",
    "kline",
    "continuousKline",
    "indexPriceKline",
    "markPriceKline",
    "miniTicker",
    "ticker",
    "avgPrice",
    "markPrice",
    "forceOrder",
    "indexPrice",
    "compositeIndex",
    "contractInfo",
    "assetIndex",
    "rpiDepth",
    "serverShutdown",
];

/// Whether the type of `stream` is one Binance is known to serve. A
/// misspelt type is accepted by Binance and then delivers nothing, so the
/// service warns about unknown types at start; it does not reject them,
/// because Binance adds stream types from time to time.
pub fn is_known_stream_type(stream: &str) -> bool {
    let kind = stream_type(stream);
    let base = kind.split(['@', '_']).next().unwrap_or(kind);
    KNOWN_TYPES.contains(&base)
}

/// Groups `streams` into connections of at most `per_connection` streams,
/// one path family per connection. Duplicate names are planned once.
pub fn plan_connections(
    venue: Venue,
    streams: &[String],
    per_connection: usize,
    rules: RoutingRules,
) -> Vec<ConnectionPlan> {
    let per_connection = per_connection.clamp(1, MAX_STREAMS_PER_CONNECTION);
    let mut by_route: Vec<(Route, Vec<String>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for stream in streams {
        if !seen.insert(stream.as_str()) {
            continue;
        }
        let route = route_of(venue, stream, rules);
        match by_route.iter_mut().find(|(r, _)| *r == route) {
            Some((_, list)) => list.push(stream.clone()),
            None => by_route.push((route, vec![stream.clone()])),
        }
    }

    let mut plans = Vec::new();
    for (route, list) in by_route {
        for chunk in list.chunks(per_connection) {
            plans.push(ConnectionPlan { slot: plans.len(), route, streams: chunk.to_vec() });
        }
    }
    plans
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn usdm_never_mixes_book_and_market_streams() {
        let streams = names(&[
            "btcusdt@aggTrade",
            "btcusdt@depth@100ms",
            "ethusdt@bookTicker",
            "btcusdt@markPrice@1s",
            "btcusdt@trade",
            "!bookTicker",
        ]);
        let plans = plan_connections(Venue::UsdM, &streams, 1024, RoutingRules::default());
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].route, Route::Market);
        assert_eq!(plans[0].streams, names(&["btcusdt@aggTrade", "btcusdt@markPrice@1s"]));
        assert_eq!(plans[1].route, Route::Public);
        assert_eq!(
            plans[1].streams,
            names(&["btcusdt@depth@100ms", "ethusdt@bookTicker", "btcusdt@trade", "!bookTicker"])
        );
        assert_eq!(plans[1].path_and_query().split_once('?').unwrap().0, "/public/stream");
    }

    #[test]
    fn usdm_trade_route_is_configurable() {
        let rules = RoutingRules { usdm_trade: Route::Market, coinm_routed: false };
        assert_eq!(route_of(Venue::UsdM, "btcusdt@trade", rules), Route::Market);
        assert_eq!(route_of(Venue::CoinM, "btcusd_perp@depth", rules), Route::Legacy);
        let routed = RoutingRules { coinm_routed: true, ..rules };
        assert_eq!(route_of(Venue::CoinM, "btcusd_perp@depth", routed), Route::Public);
    }

    #[test]
    fn plan_splits_at_connection_limit() {
        let streams: Vec<String> = (0..2500).map(|i| format!("s{i}@trade")).collect();
        let plans = plan_connections(Venue::Spot, &streams, 5000, RoutingRules::default());
        let sizes: Vec<usize> = plans.iter().map(|p| p.streams.len()).collect();
        assert_eq!(sizes, vec![1024, 1024, 452]);
        let plans = plan_connections(Venue::Spot, &streams[..10], 4, RoutingRules::default());
        assert_eq!(plans.iter().map(|p| p.slot).collect::<Vec<_>>(), vec![0, 1, 2]);
    }

    #[test]
    fn plan_drops_duplicate_streams() {
        let streams = names(&["a@trade", "b@trade", "a@trade"]);
        let plans = plan_connections(Venue::Spot, &streams, 1024, RoutingRules::default());
        assert_eq!(plans[0].streams, names(&["a@trade", "b@trade"]));
        assert_eq!(
            plans[0].url(&Endpoint::parse("wss://127.0.0.1:9").unwrap()),
            "wss://127.0.0.1:9/stream?streams=a@trade/b@trade"
        );
    }

    #[test]
    fn stream_names_are_checked() {
        assert!(validate_stream_name("btcusdt@trade").is_ok());
        assert!(validate_stream_name("btcusdt@depth@100ms").is_ok());
        assert!(validate_stream_name("!bookTicker").is_ok());
        assert!(validate_stream_name("!markPrice@arr@1s").is_ok());
        assert!(validate_stream_name("").is_err());
        assert!(validate_stream_name("btcusdt").is_err());
        assert!(validate_stream_name("btc/usdt@trade").is_err());
        assert!(validate_stream_name("btcusdt@trade?x=1").is_err());
        assert!(validate_stream_name(&"a".repeat(200)).is_err());
    }

    #[test]
    fn known_stream_types() {
        for stream in [
            "btcusdt@trade",
            "btcusdt@depth20@100ms",
            "btcusdt@kline_1m",
            "btcusdt_perpetual@continuousKline_1m",
            "btcusdt@ticker_1h",
            "!markPrice@arr@1s",
            "!bookTicker",
            "!miniTicker@arr",
        ] {
            assert!(is_known_stream_type(stream), "{stream}");
        }
        assert!(!is_known_stream_type("btcusdt@foo"));
        assert!(!is_known_stream_type("!bogus@arr"));
        assert!(!is_known_stream_type("btcusdt@trades"));
    }

    #[test]
    fn stream_type_strips_symbol() {
        assert_eq!(stream_type("btcusdt@depth@100ms"), "depth@100ms");
        assert_eq!(stream_type("!bookTicker"), "bookTicker");
        assert_eq!(stream_type("!markPrice@arr"), "markPrice@arr");
    }
}
