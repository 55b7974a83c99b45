//! Fault schedule: parsing of specs such as `at=30s close=1001` into
//! [`Fault`] values.
//!
//! Parsing runs on the main thread at start. Connection threads read the
//! parsed schedule; the accept thread reads the server-wide part. Nothing
//! here performs a fault.

use std::time::Duration;

use super::options::{parse_duration, parse_size};

/// Frame size of the `oversize` fault when none is given: 17 MiB, above
/// tungstenite's default 16 MiB frame limit.
pub const DEFAULT_OVERSIZE: usize = 17 << 20;

/// Duration of a server-wide fault when `for=` is not given.
pub const DEFAULT_SERVER_FAULT_DURATION: Duration = Duration::from_secs(10);

/// Action of a fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Sends a close frame with this code.
    Close(u16),
    /// Drops the TCP connection without a close frame.
    Drop,
    /// Sends nothing, not even pings, and reads nothing, for this long.
    Stall(Duration),
    /// Keeps pinging but sends no data for this long.
    NoData(Duration),
    /// Resends the last data frame this many times.
    Repeat(u32),
    /// Sends the next data frame cut in half.
    Truncate,
    /// Sends a binary frame.
    Binary,
    /// Sends an empty text frame.
    Empty,
    /// Sends a text frame that is not valid UTF-8.
    InvalidUtf8,
    /// Sends a text frame of this many bytes.
    Oversize(usize),
    /// Delays replies to requests received after the fault by this long.
    DelayReplies(Duration),
    /// Sends `serverShutdown` and closes this much later.
    Shutdown(Duration),
    /// Rejects handshakes with this HTTP status and a `Retry-After` header in
    /// seconds. Server-wide.
    Reject {
        /// HTTP status: 429, 418, or 403 and 451, which carry no
        /// `Retry-After`.
        status: u16,
        /// Value of the `Retry-After` header, in seconds.
        retry_after_secs: u64,
    },
    /// Closes the listening socket, so connects are refused. Server-wide.
    RefuseTcp,
}

impl FaultKind {
    /// Whether the fault acts on the listener rather than on a connection.
    pub fn is_server_wide(&self) -> bool {
        matches!(self, FaultKind::Reject { .. } | FaultKind::RefuseTcp)
    }

    /// Name written to the sent-log and the log.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Close(_) => "close",
            FaultKind::Drop => "drop",
            FaultKind::Stall(_) => "stall",
            FaultKind::NoData(_) => "no-data",
            FaultKind::Repeat(_) => "repeat",
            FaultKind::Truncate => "truncate",
            FaultKind::Binary => "binary",
            FaultKind::Empty => "empty",
            FaultKind::InvalidUtf8 => "invalid-utf8",
            FaultKind::Oversize(_) => "oversize",
            FaultKind::DelayReplies(_) => "delay-replies",
            FaultKind::Shutdown(_) => "shutdown",
            FaultKind::Reject { .. } => "reject",
            FaultKind::RefuseTcp => "refuse-tcp",
        }
    }
}

/// One scheduled fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Offset from the connection open, or from the server start for a
    /// server-wide fault.
    pub at: Duration,
    /// Connection number the fault applies to, or every connection when
    /// `None`.
    pub conn: Option<u64>,
    /// Duration of a server-wide fault.
    pub duration: Duration,
    /// Action.
    pub kind: FaultKind,
}

/// Parses one spec such as `at=45s stall=20s` or `at=0s reject=429
/// retry-after=5 for=3s`. `shutdown_grace` is the close delay of a bare
/// `shutdown`.
pub fn parse_spec(spec: &str, shutdown_grace: Duration) -> Result<Fault, String> {
    let mut at = Duration::ZERO;
    let mut conn = None;
    let mut duration = None;
    let mut retry_after_secs = None;
    let mut kind: Option<FaultKind> = None;

    for word in spec.split_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (word, None),
        };
        let parsed = match (key, value) {
            ("at", Some(value)) => {
                at = parse_duration(value)?;
                None
            }
            ("conn", Some(value)) => {
                let number = parse_number::<u64>(value, "conn")?;
                if number == 0 {
                    return Err("conn=0 never matches: connections are numbered from 1".into());
                }
                conn = Some(number);
                None
            }
            ("for", Some(value)) => {
                duration = Some(parse_duration(value)?);
                None
            }
            ("retry-after", Some(value)) => {
                retry_after_secs = Some(parse_number::<u64>(value, "retry-after")?);
                None
            }
            ("close", Some(value)) => {
                let code = parse_number::<u16>(value, "close")?;
                if !(1000..=4999).contains(&code) {
                    return Err(format!("close code {code} is out of range, expected 1000-4999"));
                }
                Some(FaultKind::Close(code))
            }
            ("drop", None) => Some(FaultKind::Drop),
            ("stall", Some(value)) => Some(FaultKind::Stall(positive_duration(value, "stall")?)),
            ("no-data", Some(value)) => {
                Some(FaultKind::NoData(positive_duration(value, "no-data")?))
            }
            ("repeat", None) => Some(FaultKind::Repeat(1)),
            ("repeat", Some(value)) => match parse_number(value, "repeat")? {
                0 => return Err("repeat=0 repeats nothing; give 1 or more".into()),
                count => Some(FaultKind::Repeat(count)),
            },
            ("truncate", None) => Some(FaultKind::Truncate),
            ("binary", None) => Some(FaultKind::Binary),
            ("empty", None) => Some(FaultKind::Empty),
            ("invalid-utf8", None) => Some(FaultKind::InvalidUtf8),
            ("oversize", None) => Some(FaultKind::Oversize(DEFAULT_OVERSIZE)),
            ("oversize", Some(value)) => match parse_size(value)? {
                0 => return Err("oversize=0 sends nothing; give a size such as 17MiB".into()),
                size => Some(FaultKind::Oversize(size)),
            },
            ("delay-replies", Some(value)) => Some(FaultKind::DelayReplies(parse_duration(value)?)),
            ("shutdown", None) => Some(FaultKind::Shutdown(shutdown_grace)),
            ("shutdown", Some(value)) => Some(FaultKind::Shutdown(parse_duration(value)?)),
            ("reject", Some(value)) => {
                let status = parse_number::<u16>(value, "reject")?;
                if ![429, 418, 403, 451].contains(&status) {
                    return Err(format!("reject status {status} is not 429, 418, 403 or 451"));
                }
                Some(FaultKind::Reject { status, retry_after_secs: 0 })
            }
            ("refuse-tcp", None) => Some(FaultKind::RefuseTcp),
            _ => return Err(format!("unknown or malformed word {word:?}")),
        };
        if let Some(parsed) = parsed {
            if kind.is_some() {
                return Err("more than one fault in one spec".into());
            }
            kind = Some(parsed);
        }
    }

    let Some(mut kind) = kind else {
        return Err("no fault word, expected such as close=1001 or stall=20s".into());
    };
    if let FaultKind::Reject { retry_after_secs: secs, .. } = &mut kind {
        *secs = retry_after_secs.unwrap_or(30);
    } else if retry_after_secs.is_some() {
        return Err("retry-after= only applies to reject=".into());
    }
    if kind.is_server_wide() && conn.is_some() {
        return Err(format!("{} is server-wide and takes no conn=", kind.name()));
    }
    if !kind.is_server_wide() && duration.is_some() {
        return Err(format!("{} takes no for=; give the duration as its value", kind.name()));
    }
    Ok(Fault { at, conn, duration: duration.unwrap_or(DEFAULT_SERVER_FAULT_DURATION), kind })
}

fn positive_duration(text: &str, key: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("{key}={text} lasts no time; give a duration above zero")),
        duration => Ok(duration),
    }
}

fn parse_number<T: std::str::FromStr>(text: &str, key: &str) -> Result<T, String> {
    text.parse().map_err(|_| format!("invalid number {text:?} for {key}="))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(5);

    #[test]
    fn close_and_stall_parse() {
        let fault = parse_spec("at=30s close=1001", GRACE).unwrap();
        assert_eq!(fault.at, Duration::from_secs(30));
        assert_eq!(fault.kind, FaultKind::Close(1001));
        assert_eq!(fault.conn, None);

        let fault = parse_spec("at=45s stall=20s conn=2", GRACE).unwrap();
        assert_eq!(fault.kind, FaultKind::Stall(Duration::from_secs(20)));
        assert_eq!(fault.conn, Some(2));
    }

    #[test]
    fn reject_takes_retry_after_and_duration() {
        let fault = parse_spec("reject=418 retry-after=7 for=2s", GRACE).unwrap();
        assert_eq!(fault.kind, FaultKind::Reject { status: 418, retry_after_secs: 7 });
        assert_eq!(fault.duration, Duration::from_secs(2));
        assert!(parse_spec("reject=500", GRACE).is_err());
        let fault = parse_spec("reject=451", GRACE).unwrap();
        assert!(matches!(fault.kind, FaultKind::Reject { status: 451, .. }), "{:?}", fault.kind);
    }

    #[test]
    fn defaults_fill_bare_words() {
        assert_eq!(parse_spec("shutdown", GRACE).unwrap().kind, FaultKind::Shutdown(GRACE));
        assert_eq!(parse_spec("repeat", GRACE).unwrap().kind, FaultKind::Repeat(1));
        assert_eq!(
            parse_spec("oversize", GRACE).unwrap().kind,
            FaultKind::Oversize(DEFAULT_OVERSIZE)
        );
    }

    #[test]
    fn malformed_specs_are_rejected() {
        assert!(parse_spec("at=30s", GRACE).is_err());
        assert!(parse_spec("close=1001 drop", GRACE).is_err());
        assert!(parse_spec("close=99", GRACE).is_err());
        assert!(parse_spec("stall", GRACE).is_err());
        assert!(parse_spec("at=30 drop", GRACE).is_err());
        assert!(parse_spec("refuse-tcp conn=1", GRACE).is_err());
        assert!(parse_spec("drop for=3s", GRACE).is_err());
    }

    #[test]
    fn empty_faults_are_rejected() {
        for spec in ["conn=0 drop", "repeat=0", "oversize=0", "stall=0s", "no-data=0ms"] {
            let error = parse_spec(spec, GRACE).expect_err(spec);
            assert!(!error.is_empty(), "{spec}");
        }
    }
}
