//! The error type of start-up and of fatal failures.
//!
//! Failures the service recovers from (a dropped connection, a malformed
//! frame, a full disk) are not errors here: they are counted, logged and
//! retried where they happen.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// An invalid configuration value, named by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Setting name as the operator wrote it, such as `BINANCE_INGEST_CACHE_SIZE`.
    pub key: String,
    /// Value as given, or empty when the problem is a missing value.
    pub value: String,
    /// Description of the problem and of the accepted values.
    pub problem: String,
    /// Whether several keys cause the problem together, so no single value
    /// is invalid. The message is then `problem` alone.
    pub combined: bool,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.combined {
            return f.write_str(&self.problem);
        }
        write!(f, "invalid value {:?} for {}: {}", self.value, self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// Failure that stops the service or prevents its start.
#[derive(Debug)]
pub enum Error {
    /// A configuration value is invalid.
    Config(ConfigError),
    /// A file could not be read or written.
    File {
        /// Action that failed, such as `read CA file`.
        action: &'static str,
        /// File or folder involved.
        path: PathBuf,
        /// Underlying cause.
        source: io::Error,
    },
    /// The TLS client configuration could not be built.
    Tls(String),
    /// The HTTP listener could not be bound.
    Bind {
        /// Address from the configuration.
        address: String,
        /// Underlying cause.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A worker thread could not be started.
    Spawn {
        /// Thread name.
        thread: String,
        /// Underlying cause.
        source: io::Error,
    },
    /// A command-line argument is invalid.
    Usage(String),
    /// Resident memory reached `MEMORY_CRITICAL` with
    /// `MEMORY_EXIT_ON_CRITICAL` set; the service shut down cleanly and
    /// exits with status 75 so that systemd restarts it.
    MemoryCritical {
        /// RSS at the last sample, in bytes.
        resident_bytes: u64,
    },
    /// The sink could not write every record before its shutdown retries
    /// ran out (`SINK_SHUTDOWN_RETRY`), for example on a full disk. The
    /// process exits with status 74.
    UnwrittenRecords {
        /// Records abandoned at shutdown: staged, or still stored in the
        /// ring and not read.
        records: u64,
        /// Records lost earlier in the run, overwritten in the ring before
        /// the sink could write them.
        overwritten: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(error) => error.fmt(f),
            Error::File { action, path, source } => {
                write!(f, "failed to {action} {}: {source}", path.display())
            }
            Error::Tls(message) => write!(f, "TLS setup failed: {message}"),
            Error::Bind { address, source } => {
                write!(f, "failed to bind the HTTP listener to {address}: {source}")
            }
            Error::Spawn { thread, source } => {
                write!(f, "failed to start thread {thread}: {source}")
            }
            Error::Usage(message) => f.write_str(message),
            Error::MemoryCritical { resident_bytes } => write!(
                f,
                "resident memory {resident_bytes} bytes reached BINANCE_INGEST_MEMORY_CRITICAL; \
                 shut down for a restart"
            ),
            Error::UnwrittenRecords { records, overwritten } => write!(
                f,
                "the sink abandoned {records} unwritten records at shutdown, and \
                 {overwritten} more were lost during the run (overwritten in the ring \
                 before the sink could write them); see the sink errors above and free \
                 the data disk"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config(error) => Some(error),
            Error::File { source, .. } | Error::Spawn { source, .. } => Some(source),
            Error::Bind { source, .. } => Some(source.as_ref()),
            Error::Tls(_)
            | Error::Usage(_)
            | Error::MemoryCritical { .. }
            | Error::UnwrittenRecords { .. } => None,
        }
    }
}

impl From<ConfigError> for Error {
    fn from(error: ConfigError) -> Self {
        Error::Config(error)
    }
}
