//! Command-line options of the mock exchange, their defaults and `--help`.
//!
//! Runs once on the main thread before the server starts. It never opens a
//! socket or a file except the fault file named by `--fault-file`.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::venue::Venue;

use super::faults::{self, Fault};

/// Pace of the data a connection receives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Rate {
    /// Events per second: per stream for generated data, per file for a
    /// replay.
    PerSecond(f64),
    /// As fast as the client reads.
    Max,
}

/// Validated settings of one mock exchange.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to bind. Default `127.0.0.1:0`, where port 0 picks a free port.
    pub listen: SocketAddr,
    /// Allows a listen address that is not loopback. Default false.
    pub allow_non_loopback: bool,
    /// Serves plain `ws://` instead of TLS, for debugging. Default false.
    pub plain: bool,
    /// File that receives the PEM certificate of the CA made at start.
    pub ca_out: Option<PathBuf>,
    /// File that receives the bound address once the server accepts.
    pub ready_file: Option<PathBuf>,
    /// JSON Lines file of every sent data event, fault and lifecycle event.
    pub sent_log: Option<PathBuf>,
    /// Venue whose payload shapes and timing defaults the mock imitates.
    /// Default spot.
    pub venue: Venue,
    /// Pace of generated and replayed data. Default 10 events per second.
    pub rate: Rate,
    /// JSON Lines files of combined-stream frames to replay, in order.
    pub replay: Vec<PathBuf>,
    /// Plays replays on the server clock, so every connection is at the same
    /// point, instead of from the start on each connection. Default false.
    pub replay_shared: bool,
    /// Turns off synthetic data, so only replayed streams deliver. Default
    /// false.
    pub no_generate: bool,
    /// Interval of server pings. Default 20 s on spot, 3 min on futures.
    pub ping_interval: Duration,
    /// Time a ping may wait for its pong before the connection is closed.
    /// Default 60 s on spot, 10 min on futures.
    pub pong_timeout: Duration,
    /// Age at which the server closes a connection. Default 24 h.
    pub max_connection_age: Duration,
    /// Incoming messages (pings, pongs, requests) allowed per second before
    /// the connection is closed with code 1008. Default 5 on spot, 10 on
    /// futures.
    pub max_incoming_per_second: u32,
    /// Streams allowed on one connection. Default 1024.
    pub max_streams: usize,
    /// Time between a `serverShutdown` event and the close. Default 5 s.
    pub shutdown_grace: Duration,
    /// Scheduled faults, from `--fault` and `--fault-file`.
    pub faults: Vec<Fault>,
}

impl Default for Options {
    fn default() -> Options {
        let venue = Venue::Spot;
        Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            allow_non_loopback: false,
            plain: false,
            ca_out: None,
            ready_file: None,
            sent_log: None,
            venue,
            rate: Rate::PerSecond(10.0),
            replay: Vec::new(),
            replay_shared: false,
            no_generate: false,
            ping_interval: venue.server_ping_interval(),
            pong_timeout: venue.server_pong_deadline(),
            max_connection_age: Duration::from_secs(24 * 3600),
            max_incoming_per_second: venue.incoming_message_limit(),
            max_streams: 1024,
            shutdown_grace: Duration::from_secs(5),
            faults: Vec::new(),
        }
    }
}

/// Result of parsing the command line.
#[derive(Debug)]
pub enum Command {
    /// Start the server with these options.
    Run(Box<Options>),
    /// Print [`HELP`] and exit.
    Help,
}

/// `--help` text: every option with its unit and default.
pub const HELP: &str = "\
mock-exchange: a Binance market-data WebSocket server on loopback, for tests,
demos, soak runs and benchmarks.

USAGE:
    mock-exchange [OPTIONS]

CONNECTION:
    --listen ADDR              Address to bind, IP:PORT. Port 0 picks a free
                               port. [default: 127.0.0.1:0]
    --allow-non-loopback       Allow a listen address that is not loopback.
                               [default: off]
    --plain                    Serve plain ws:// instead of TLS, for debugging
                               only. [default: off, TLS]
    --ca-out FILE              Write the PEM certificate of the CA made at start
                               to FILE. Clients trust this CA. [default: none]
    --ready-file FILE          Write the bound address (IP:PORT) to FILE once the
                               server accepts connections. [default: none]
    --sent-log FILE            Write one JSON line per sent event, fault and
                               connection event to FILE, which is truncated at
                               start and flushed within 100 ms. [default: none]

PROTOCOL:
    --venue NAME               Payload shapes and timing defaults to imitate:
                               spot, usdm or coinm. [default: spot]
    --ping-interval DURATION   Interval of server pings. [default: 20s on spot,
                               3m on usdm and coinm]
    --pong-timeout DURATION    Time a ping waits for its pong before the server
                               closes the connection with code 1008.
                               [default: 60s on spot, 10m on usdm and coinm]
    --max-connection-age DURATION
                               Age at which the server closes a connection with
                               code 1001. [default: 24h]
    --max-incoming COUNT       Incoming messages (pings, pongs, requests) per
                               second before a close with code 1008.
                               [default: 5 on spot, 10 on usdm and coinm]
    --max-streams COUNT        Streams per connection. [default: 1024]
    --shutdown-grace DURATION  Time between a serverShutdown event and the
                               close with code 1001. [default: 5s]

DATA:
    --rate N|max               Events per second, per stream for generated data
                               and per file for replays, or max for as fast as
                               the client reads. [default: 10]
    --replay FILE              Replay a JSON Lines file of combined-stream
                               frames; repeatable. Looping shifts ids and times.
    --replay-shared            Play replays on the server clock instead of from
                               the first line on every connection. [default: off]
    --no-generate              Send only replayed streams, no synthetic data.
                               [default: off]

FAULTS:
    --fault SPEC               Schedule a fault; repeatable. Example:
                               'at=30s close=1001'. See FAULT SPECS.
    --fault-file FILE          Read fault specs from FILE, one per line; '#'
                               starts a comment.
    -h, --help                 Print this help.

DURATIONS take a unit: 250ms, 30s, 5m, 4h, 1d.

FAULT SPECS are space-separated key=value words. 'at=DURATION' is the time
after the connection opened (default 0s), 'conn=N' limits the fault to
connection N (default: every connection). One fault word per spec:
    close=CODE              send a close frame with CODE (1000, 1001, 1008, 1011)
    drop                    drop the TCP connection without a close frame
    stall=DURATION          send nothing, not even pings, and read nothing
    no-data=DURATION        keep pinging but send no data
    repeat[=COUNT]          resend the last data frame COUNT times [default: 1]
    truncate                send a truncated JSON text frame
    binary                  send a binary frame
    empty                   send an empty text frame
    invalid-utf8            send a text frame that is not valid UTF-8
    oversize[=SIZE]         send a text frame of SIZE bytes (1MiB, 20MiB, ...)
                            [default: 17MiB, over tungstenite's 16 MiB frame limit]
    delay-replies=DURATION  delay replies to requests received from then on
    shutdown[=DURATION]     send serverShutdown, close DURATION later
                            [default: --shutdown-grace]
Server-wide faults count 'at' from the server start and last 'for=DURATION'
(default 10s):
    reject=429|418|403|451  answer the handshake with this HTTP status; 429
                            and 418 add 'Retry-After: SECONDS' (set by
                            retry-after=, default 30)
    refuse-tcp              close the listening socket, so connects are refused

SIGNALS: SIGUSR1 sends serverShutdown on every open connection; SIGTERM and
SIGINT stop the server after flushing the sent-log.
";

/// Parses the command line (without the program name).
pub fn parse_args<I>(args: I) -> Result<Command, String>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_args(args);
    let mut options = Options::default();
    let mut ping_interval = None;
    let mut pong_timeout = None;
    let mut max_incoming = None;
    let mut fault_specs: Vec<(String, String)> = Vec::new();

    while let Some(arg) = parser.next().map_err(|error| error.to_string())? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Long("listen") => {
                let text = string_value(&mut parser, "--listen")?;
                options.listen = text.parse().map_err(|_| {
                    format!("invalid value {text:?} for --listen: expected IP:PORT")
                })?;
            }
            Long("allow-non-loopback") => options.allow_non_loopback = true,
            Long("plain") => options.plain = true,
            Long("ca-out") => options.ca_out = Some(parser.value().map_err(str_error)?.into()),
            Long("ready-file") => {
                options.ready_file = Some(parser.value().map_err(str_error)?.into())
            }
            Long("sent-log") => options.sent_log = Some(parser.value().map_err(str_error)?.into()),
            Long("venue") => {
                let text = string_value(&mut parser, "--venue")?;
                options.venue = match text.as_str() {
                    "spot" => Venue::Spot,
                    "usdm" => Venue::UsdM,
                    "coinm" => Venue::CoinM,
                    _ => {
                        return Err(format!(
                            "invalid value {text:?} for --venue: expected spot, usdm or coinm"
                        ));
                    }
                };
            }
            Long("rate") => {
                let text = string_value(&mut parser, "--rate")?;
                options.rate = parse_rate(&text)
                    .map_err(|problem| format!("invalid value {text:?} for --rate: {problem}"))?;
            }
            Long("replay") => options.replay.push(parser.value().map_err(str_error)?.into()),
            Long("replay-shared") => options.replay_shared = true,
            Long("no-generate") => options.no_generate = true,
            Long("ping-interval") => {
                ping_interval = Some(duration_value(&mut parser, "--ping-interval")?)
            }
            Long("pong-timeout") => {
                let value = duration_value(&mut parser, "--pong-timeout")?;
                if value.is_zero() {
                    return Err("invalid value for --pong-timeout: must be above zero".into());
                }
                pong_timeout = Some(value)
            }
            Long("max-connection-age") => {
                options.max_connection_age = duration_value(&mut parser, "--max-connection-age")?
            }
            Long("max-incoming") => {
                let value = count_value(&mut parser, "--max-incoming")?;
                if value == 0 {
                    return Err("invalid value for --max-incoming: must be at least 1".into());
                }
                max_incoming = Some(value);
            }
            Long("max-streams") => {
                options.max_streams = count_value(&mut parser, "--max-streams")? as usize
            }
            Long("shutdown-grace") => {
                options.shutdown_grace = duration_value(&mut parser, "--shutdown-grace")?
            }
            Long("fault") => {
                fault_specs.push(("--fault".into(), string_value(&mut parser, "--fault")?))
            }
            Long("fault-file") => {
                let path: PathBuf = parser.value().map_err(str_error)?.into();
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    format!("failed to read fault file {}: {error}", path.display())
                })?;
                for (index, line) in text.lines().enumerate() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if !line.is_empty() {
                        let origin = format!("{} line {}", path.display(), index + 1);
                        fault_specs.push((origin, line.to_string()));
                    }
                }
            }
            _ => return Err(format!("{}; run with --help for the options", arg.unexpected())),
        }
    }

    options.ping_interval = ping_interval.unwrap_or(options.venue.server_ping_interval());
    options.pong_timeout = pong_timeout.unwrap_or(options.venue.server_pong_deadline());
    options.max_incoming_per_second =
        max_incoming.unwrap_or(options.venue.incoming_message_limit());
    if options.ping_interval.is_zero() {
        return Err("invalid value 0 for --ping-interval: expected a positive duration".into());
    }
    if options.max_streams == 0 {
        return Err("invalid value 0 for --max-streams: expected at least 1".into());
    }
    for (origin, spec) in fault_specs {
        let fault = faults::parse_spec(&spec, options.shutdown_grace)
            .map_err(|problem| format!("invalid fault {spec:?} in {origin}: {problem}"))?;
        options.faults.push(fault);
    }
    Ok(Command::Run(Box::new(options)))
}

fn str_error(error: lexopt::Error) -> String {
    error.to_string()
}

fn string_value(parser: &mut lexopt::Parser, name: &str) -> Result<String, String> {
    let value = parser.value().map_err(str_error)?;
    value.into_string().map_err(|value| format!("invalid value {value:?} for {name}: not UTF-8"))
}

fn duration_value(parser: &mut lexopt::Parser, name: &str) -> Result<Duration, String> {
    let text = string_value(parser, name)?;
    parse_duration(&text).map_err(|problem| format!("invalid value {text:?} for {name}: {problem}"))
}

fn count_value(parser: &mut lexopt::Parser, name: &str) -> Result<u32, String> {
    let text = string_value(parser, name)?;
    text.parse::<u32>()
        .map_err(|_| format!("invalid value {text:?} for {name}: expected a whole number"))
}

/// Parses `N` (events per second, fractions allowed) or `max`.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    if text == "max" {
        return Ok(Rate::Max);
    }
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 => {
            Ok(Rate::PerSecond(rate))
        }
        _ => Err("expected events per second above 0 and at most 10000000, or max".into()),
    }
}

/// Parses a duration with a unit: `ms`, `s`, `m`, `h` or `d`, such as
/// `250ms` or `4h`. Fractions are allowed (`1.5s`); a bare number is not.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("expected a number followed by a unit, such as 30s".into());
    }
    let value: f64 =
        number.parse().map_err(|_| format!("invalid number {number:?}, expected such as 30s"))?;
    let seconds_per_unit = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        "" => return Err("missing unit, expected ms, s, m, h or d (such as 30s)".into()),
        _ => return Err(format!("unknown unit {unit:?}, expected ms, s, m, h or d")),
    };
    let seconds = value * seconds_per_unit;
    if !(0.0..=10.0 * 365.0 * 86_400.0).contains(&seconds) {
        return Err("duration out of range, expected at most 10 years".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Parses a byte size: a number with an optional unit `B`, `KiB`, `MiB` or
/// `GiB`, such as `17MiB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: usize = number.parse().map_err(|_| format!("invalid size {text:?}"))?;
    let multiplier = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        _ => return Err(format!("unknown size unit {unit:?}, expected B, KiB, MiB or GiB")),
    };
    value.checked_mul(multiplier).ok_or_else(|| format!("size {text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3w").is_err());
    }

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("17MiB"), Ok(17 << 20));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("1MB").is_err());
    }

    #[test]
    fn venue_sets_timing_defaults() {
        let Ok(Command::Run(options)) = parse_args(["--venue", "usdm"]) else {
            panic!("usdm options did not parse");
        };
        assert_eq!(options.ping_interval, Duration::from_secs(180));
        assert_eq!(options.pong_timeout, Duration::from_secs(600));
        assert_eq!(options.max_incoming_per_second, 10);
    }

    #[test]
    fn explicit_values_override_venue() {
        let Ok(Command::Run(options)) =
            parse_args(["--ping-interval", "200ms", "--max-incoming", "3", "--rate", "max"])
        else {
            panic!("options did not parse");
        };
        assert_eq!(options.ping_interval, Duration::from_millis(200));
        assert_eq!(options.pong_timeout, Duration::from_secs(60));
        assert_eq!(options.max_incoming_per_second, 3);
        assert_eq!(options.rate, Rate::Max);
    }

    #[test]
    fn unknown_option_is_rejected() {
        assert!(parse_args(["--nope"]).is_err());
        assert!(parse_args(["--rate", "0"]).is_err());
    }
}
