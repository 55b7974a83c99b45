//! Log output: env_logger on stderr, level from `RUST_LOG` (default `info`).
//!
//! Under journald (`JOURNAL_STREAM` set) each line starts with its syslog
//! priority, `<3>` to `<7>`, and carries no timestamp, since journald adds
//! its own and filters on the priority.

use std::io::Write;

/// Installs the logger. Call once, first thing in `main`.
pub fn init() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.format(|out, record| {
            let priority = match record.level() {
                log::Level::Error => 3,
                log::Level::Warn => 4,
                log::Level::Info => 6,
                log::Level::Debug | log::Level::Trace => 7,
            };
            writeln!(out, "<{priority}>{}: {}", record.target(), record.args())
        });
    }
    // A second call (as in tests) fails harmlessly.
    let _ = builder.try_init();
}
