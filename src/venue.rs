//! Binance market-data venues, their endpoints and their protocol facts.

use std::fmt;
use std::time::Duration;

/// A Binance market-data WebSocket service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Venue {
    /// Spot, `wss://stream.binance.com:9443`.
    Spot,
    /// Spot market data only, `wss://data-stream.binance.vision`.
    DataStream,
    /// Binance.US, `wss://stream.binance.us:9443`.
    BinanceUs,
    /// USD-M futures, `wss://fstream.binance.com`.
    UsdM,
    /// COIN-M futures, `wss://dstream.binance.com`.
    CoinM,
    /// Spot testnet, `wss://stream.testnet.binance.vision`.
    SpotTestnet,
}

impl Venue {
    /// Every venue, in the order the documentation lists them.
    pub const ALL: [Venue; 6] = [
        Venue::Spot,
        Venue::DataStream,
        Venue::BinanceUs,
        Venue::UsdM,
        Venue::CoinM,
        Venue::SpotTestnet,
    ];

    /// Configuration value and partition value (`venue=...`).
    pub fn name(self) -> &'static str {
        match self {
            Venue::Spot => "spot",
            Venue::DataStream => "data-stream",
            Venue::BinanceUs => "us",
            Venue::UsdM => "usdm",
            Venue::CoinM => "coinm",
            Venue::SpotTestnet => "spot-testnet",
        }
    }

    /// Parses a configuration value such as `spot` or `usdm`.
    pub fn from_name(name: &str) -> Option<Venue> {
        Venue::ALL.into_iter().find(|venue| venue.name() == name)
    }

    /// Public endpoint of the venue.
    pub fn default_endpoint(self) -> Endpoint {
        let (host, port) = match self {
            Venue::Spot => ("stream.binance.com", 9443),
            Venue::DataStream => ("data-stream.binance.vision", 443),
            Venue::BinanceUs => ("stream.binance.us", 9443),
            Venue::UsdM => ("fstream.binance.com", 443),
            Venue::CoinM => ("dstream.binance.com", 443),
            Venue::SpotTestnet => ("stream.testnet.binance.vision", 443),
        };
        Endpoint { secure: true, host: host.to_string(), port }
    }

    /// Whether depth updates chain by `pu` (futures) rather than by `U`
    /// (spot). Futures `U` skips ahead almost every time, so the spot rule
    /// would report a gap on nearly every futures message.
    pub fn is_futures(self) -> bool {
        matches!(self, Venue::UsdM | Venue::CoinM)
    }

    /// Interval of the server's ping frames: 20 s on spot, 3 min on futures.
    pub fn server_ping_interval(self) -> Duration {
        if self.is_futures() { Duration::from_secs(180) } else { Duration::from_secs(20) }
    }

    /// Time the server waits for a pong before it closes the connection:
    /// 1 min on spot, 10 min on futures.
    pub fn server_pong_deadline(self) -> Duration {
        if self.is_futures() { Duration::from_secs(600) } else { Duration::from_secs(60) }
    }

    /// Incoming messages (pings, pongs, requests) the server accepts per
    /// second before it closes the connection with code 1008.
    pub fn incoming_message_limit(self) -> u32 {
        if self.is_futures() { 10 } else { 5 }
    }
}

impl fmt::Display for Venue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Scheme, host and port of a WebSocket server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `wss` when true, `ws` when false. Plain `ws` exists for debugging
    /// against a local server only.
    pub secure: bool,
    /// Host name or IP address; also the TLS server name.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `wss://host[:port]` or `ws://host[:port]`. A path, query or
    /// user name is rejected, because the connection planner builds the
    /// path itself.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let (secure, rest) = if let Some(rest) = text.strip_prefix("wss://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("ws://") {
            (false, rest)
        } else {
            return Err("expected a URL starting with wss:// or ws://".to_string());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() {
            return Err("the URL has no host".to_string());
        }
        if rest.contains(['/', '?', '#', '@']) {
            return Err("expected scheme, host and port only, with no path, query or user".into());
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = split_host_port(rest, default_port)?;
        Ok(Endpoint { secure, host, port })
    }

    /// `wss://host:port`, with brackets around an IPv6 address.
    pub fn origin(&self) -> String {
        let scheme = if self.secure { "wss" } else { "ws" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin())
    }
}

fn split_host_port(text: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) =
            rest.split_once(']').ok_or_else(|| "unclosed bracket in IPv6 address".to_string())?;
        let port = match after {
            "" => default_port,
            _ => parse_port(after.strip_prefix(':').ok_or("expected :port after ]")?)?,
        };
        return Ok((host.to_string(), port));
    }
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() => Ok((host.to_string(), parse_port(port)?)),
        Some(_) => Err("the URL has no host".to_string()),
        None => Ok((text.to_string(), default_port)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("invalid port {text:?}, expected 1 to 65535")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_parses_host_and_port() {
        let endpoint = Endpoint::parse("wss://127.0.0.1:9443").unwrap();
        assert!(endpoint.secure);
        assert_eq!(endpoint.host, "127.0.0.1");
        assert_eq!(endpoint.port, 9443);
        assert_eq!(endpoint.origin(), "wss://127.0.0.1:9443");
    }

    #[test]
    fn endpoint_defaults_port_by_scheme() {
        assert_eq!(Endpoint::parse("wss://localhost/").unwrap().port, 443);
        assert_eq!(Endpoint::parse("ws://localhost").unwrap().port, 80);
        assert_eq!(Endpoint::parse("wss://[::1]:8443").unwrap().host, "::1");
    }

    #[test]
    fn endpoint_rejects_paths_and_bad_ports() {
        assert!(Endpoint::parse("https://x").is_err());
        assert!(Endpoint::parse("wss://x/stream").is_err());
        assert!(Endpoint::parse("wss://x:0").is_err());
        assert!(Endpoint::parse("wss://x:99999").is_err());
        assert!(Endpoint::parse("wss://").is_err());
        assert!(Endpoint::parse("wss://:80").is_err());
    }

    #[test]
    fn venue_names_round_trip() {
        for venue in Venue::ALL {
            assert_eq!(Venue::from_name(venue.name()), Some(venue));
        }
        assert_eq!(Venue::from_name("futures"), None);
    }
}
