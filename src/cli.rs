//! Command line of binance-ingest: subcommand, `--config FILE`, one flag per
//! settings key, `--help` and `--version`.
//!
//! Runs on the main thread before anything else starts. It reads the
//! config file named on the command line, but takes the environment as an
//! argument so that tests can pass a fake one. It never sets environment
//! variables and never prints: the caller prints help, version and
//! `check-config` output. Help text is generated from the key table in
//! `config`, so it lists exactly the keys the parser accepts.

use std::ffi::OsString;
use std::path::PathBuf;

use lexopt::Arg;

use crate::config::{self, Config, KEYS, Setting};
use crate::error::Error;

/// Action requested on the command line.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Run the service (`binance-ingest` or `binance-ingest run`).
    Run(Config),
    /// Validate the settings and print them (`binance-ingest check-config`);
    /// print `Config::describe()` to stdout.
    CheckConfig(Config),
    /// Print this help text to stdout and exit 0.
    Help(String),
    /// Print this version line to stdout and exit 0.
    Version(String),
}

/// Subcommands, in the order help lists them.
const SUBCOMMANDS: [(&str, &str); 2] = [
    ("run", "connect and store streams until SIGTERM or SIGINT (the default)"),
    ("check-config", "validate the settings, print them as KEY=value lines and exit"),
];

/// Parses the command line `args` (without the program name) and the
/// environment `env`, reading the `--config` file when one is given.
///
/// Precedence, lowest first: built-in defaults, the `--config` file,
/// `BINANCE_INGEST_*` variables in `env`, flags. `--help` and `--version`
/// return as soon as they are read, before any setting is validated.
///
/// # Errors
/// [`Error::Usage`] for an unknown subcommand or flag, a missing flag value
/// or a second `--config`; [`Error::File`] when the config file cannot be
/// read; [`Error::Config`] for an invalid or unknown setting.
pub fn parse_command(
    args: impl IntoIterator<Item = OsString>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Command, Error> {
    let mut parser = lexopt::Parser::from_args(args);
    let mut subcommand: Option<String> = None;
    let mut config_file: Option<PathBuf> = None;
    let mut flags: Vec<Setting> = Vec::new();

    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Arg::Short('h') | Arg::Long("help") => return Ok(Command::Help(help_text())),
            Arg::Short('V') | Arg::Long("version") => return Ok(Command::Version(version_text())),
            Arg::Long("config") => {
                let path = PathBuf::from(parser.value().map_err(usage)?);
                if let Some(first) = config_file.replace(path) {
                    return Err(Error::Usage(format!(
                        "--config given twice (first {}); put all settings in one file",
                        first.display()
                    )));
                }
            }
            Arg::Long(flag) => {
                // Look the flag up before taking its value, so a misspelt
                // flag is reported as unknown and not as missing a value.
                let mut setting = config::flag_setting(flag, String::new())?;
                let value = parser.value().map_err(usage)?;
                setting.value = value.into_string().map_err(|value| {
                    Error::Usage(format!("a value of {} is not UTF-8: {value:?}", setting.origin))
                })?;
                flags.push(setting);
            }
            Arg::Value(value) if subcommand.is_none() => {
                let name = value.to_string_lossy().into_owned();
                if !SUBCOMMANDS.iter().any(|(known, _)| *known == name) {
                    return Err(Error::Usage(format!(
                        "unknown command {name:?}; expected run or check-config (see --help)"
                    )));
                }
                subcommand = Some(name);
            }
            other => return Err(usage(other.unexpected())),
        }
    }

    let mut settings = match &config_file {
        Some(path) => config::read_file(path)?,
        None => Vec::new(),
    };
    settings.extend(config::env_settings(env)?);
    settings.extend(flags);
    let config = Config::resolve(settings)?;
    match subcommand.as_deref() {
        Some("check-config") => Ok(Command::CheckConfig(config)),
        _ => Ok(Command::Run(config)),
    }
}

/// Returns the process environment as strings for [`parse_command`].
///
/// Unlike `std::env::vars`, this does not panic on a variable that is not
/// UTF-8: such text is converted lossily, so a bad `BINANCE_INGEST_*` value
/// fails validation with its key named, and other variables are ignored.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| {
            (name.to_string_lossy().into_owned(), value.to_string_lossy().into_owned())
        })
        .collect()
}

fn usage(error: lexopt::Error) -> Error {
    Error::Usage(format!("{error}; see --help"))
}

/// `binance-ingest <version>`.
pub fn version_text() -> String {
    format!("{} {}", env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
}

/// Help text: usage, subcommands, and every settings key with its flag,
/// variable, default and meaning.
pub fn help_text() -> String {
    let defaults = Config::default();
    let mut out = format!(
        "{}\n{}\n\n\
         Usage: binance-ingest [run|check-config] [--config FILE] [--KEY VALUE]...\n\n\
         Commands:\n",
        version_text(),
        env!("CARGO_PKG_DESCRIPTION")
    );
    for (name, meaning) in SUBCOMMANDS {
        out.push_str(&format!("  {name:<14}{meaning}\n"));
    }
    out.push_str(
        "\nOptions:\n\
         \x20 --config FILE  read KEY=value settings from FILE\n\
         \x20 -h, --help     print this help\n\
         \x20 -V, --version  print the version\n\n\
         Settings, lowest precedence first: built-in default, --config file,\n\
         environment variable, flag (--cache-size 64MiB or --cache-size=64MiB).\n\
         Durations take a unit (250ms, 30s, 5m, 4h, 1h30m); sizes are bytes or\n\
         take a binary unit (512KiB, 64MiB, 1GiB; KB, MB and GB are rejected).\n\
         Booleans: true, false, 1, 0, yes, no. Logging is set by RUST_LOG.\n\n",
    );
    for key in KEYS {
        let flag = format!("--{} {}", key.flag_name(), key.placeholder);
        let default = key.value_text(&defaults);
        let default = if default.is_empty() { "none".to_string() } else { default };
        out.push_str(&format!(
            "  {flag}\n      {}\n      {} [default: {default}]\n",
            key.help,
            key.env_name()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::config::Source;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn env(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn run(list: &[&str], environment: &[(&str, &str)]) -> Result<Command, Error> {
        parse_command(args(list), env(environment))
    }

    fn config_of(command: Command) -> Config {
        match command {
            Command::Run(config) | Command::CheckConfig(config) => config,
            other => panic!("expected a config, got {other:?}"),
        }
    }

    fn usage_message(result: Result<Command, Error>) -> String {
        match result {
            Err(Error::Usage(message)) => message,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("binance-ingest-cli-{}-{name}", std::process::id()));
        fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn no_arguments_run_defaults() {
        let command = run(&[], &[("HOME", "/root")]).unwrap();
        assert_eq!(command, Command::Run(Config::default()));
        assert_eq!(run(&["run"], &[]).unwrap(), Command::Run(Config::default()));
    }

    #[test]
    fn check_config_returns_config() {
        let command = run(&["check-config", "--venue", "usdm"], &[]).unwrap();
        let Command::CheckConfig(config) = command else { panic!("expected check-config") };
        assert_eq!(config.venue.name(), "usdm");
        assert!(config.describe().contains("# from flag\nBINANCE_INGEST_VENUE=usdm\n"));
    }

    #[test]
    fn flags_take_both_forms() {
        let config =
            config_of(run(&["--cache-size", "2MiB", "--flush-interval=250ms"], &[]).unwrap());
        assert_eq!(config.cache_size, 2 << 20);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        let config = config_of(run(&["--coinm-routed=yes", "check-config"], &[]).unwrap());
        assert!(config.routing.coinm_routed);
    }

    #[test]
    fn file_then_env_then_flag() {
        let path = temp_file(
            "precedence.conf",
            "BINANCE_INGEST_CACHE_SIZE=2MiB\n\
             BINANCE_INGEST_FRAME_QUEUE=2\n\
             BINANCE_INGEST_FLUSH_INTERVAL=2ms\n",
        );
        let path_text = path.display().to_string();
        let environment =
            [("BINANCE_INGEST_CACHE_SIZE", "3MiB"), ("BINANCE_INGEST_FRAME_QUEUE", "3")];
        let result = run(&["--cache-size", "4MiB", "--config", &path_text], &environment);
        fs::remove_file(&path).unwrap();
        let config = config_of(result.unwrap());
        assert_eq!(config.cache_size, 4 << 20);
        assert_eq!(config.frame_queue, 3);
        assert_eq!(config.flush_interval, Duration::from_millis(2));
        assert_eq!(config.source_of("CACHE_SIZE"), Some(Source::Flag));
        assert_eq!(config.source_of("FRAME_QUEUE"), Some(Source::Env));
        assert_eq!(config.source_of("FLUSH_INTERVAL"), Some(Source::File));
    }

    #[test]
    fn empty_env_value_clears_file_value() {
        let path = temp_file(
            "clear.conf",
            "BINANCE_INGEST_ENDPOINT='wss://127.0.0.1:9443'\nBINANCE_INGEST_VENUE=\"usdm\"\n",
        );
        let config_arg = format!("--config={}", path.display());
        let with_file = run(&[&config_arg], &[]);
        let cleared = run(&[&config_arg], &[("BINANCE_INGEST_ENDPOINT", "")]);
        fs::remove_file(&path).unwrap();
        let with_file = config_of(with_file.unwrap());
        assert_eq!(with_file.endpoint.map(|e| e.origin()), Some("wss://127.0.0.1:9443".into()));
        assert_eq!(with_file.venue.name(), "usdm");
        let cleared = config_of(cleared.unwrap());
        assert_eq!(cleared.endpoint, None);
        assert_eq!(cleared.source_of("ENDPOINT"), Some(Source::Env));
    }

    #[test]
    fn missing_config_file_is_named() {
        let result = run(&["--config", "/nonexistent/binance-ingest.conf"], &[]);
        match result {
            Err(error @ Error::File { .. }) => {
                let message = error.to_string();
                assert!(message.contains("/nonexistent/binance-ingest.conf"), "{message}");
            }
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn config_file_errors_name_line() {
        let path = temp_file("bad-line.conf", "# settings\nBINANCE_INGEST_VENUE=spot\noops\n");
        let result = run(&["--config", &path.display().to_string()], &[]);
        fs::remove_file(&path).unwrap();
        let message = result.unwrap_err().to_string();
        assert!(message.contains("bad-line.conf line 3"), "{message}");
    }

    #[test]
    fn unknown_flag_is_rejected() {
        let message = usage_message(run(&["--cache-siz", "1MiB"], &[]));
        assert!(message.contains("did you mean --cache-size?"), "{message}");
        let message = usage_message(run(&["--bogus"], &[]));
        assert!(message.contains("unknown option --bogus"), "{message}");
        let message = usage_message(run(&["-x"], &[]));
        assert!(message.contains("-x"), "{message}");
    }

    #[test]
    fn unknown_env_variable_is_rejected() {
        let error = run(&[], &[("BINANCE_INGEST_CACHESIZE", "1MiB")]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("BINANCE_INGEST_CACHESIZE"), "{message}");
        assert!(message.contains("did you mean BINANCE_INGEST_CACHE_SIZE?"), "{message}");
    }

    #[test]
    fn bad_flag_value_names_key_and_flag() {
        let message = run(&["--stale-after", "30"], &[]).unwrap_err().to_string();
        assert!(message.contains("BINANCE_INGEST_STALE_AFTER"), "{message}");
        assert!(message.contains("\"30\""), "{message}");
        assert!(message.contains("missing unit"), "{message}");
        assert!(message.contains("--stale-after"), "{message}");
    }

    #[test]
    fn usage_errors() {
        let message = usage_message(run(&["serve"], &[]));
        assert!(message.contains("unknown command \"serve\""), "{message}");
        let message = usage_message(run(&["run", "check-config"], &[]));
        assert!(message.contains("check-config"), "{message}");
        let message = usage_message(run(&["--venue"], &[]));
        assert!(message.contains("--venue"), "{message}");
        let message = usage_message(run(&["--config", "a", "--config", "b"], &[]));
        assert!(message.contains("--config given twice"), "{message}");
    }

    #[test]
    fn help_lists_every_key() {
        let Command::Help(text) = run(&["run", "--venue", "nowhere", "--help"], &[]).unwrap()
        else {
            panic!("expected help");
        };
        for key in KEYS {
            assert!(
                text.contains(&format!("--{} {}", key.flag_name(), key.placeholder)),
                "{}",
                key.name
            );
            assert!(text.contains(&key.env_name()), "{}", key.name);
            assert!(text.contains(key.help), "{}", key.name);
        }
        assert!(text.contains("BINANCE_INGEST_CACHE_SIZE [default: 64MiB]"), "{text}");
        assert!(text.contains("BINANCE_INGEST_ENDPOINT [default: none]"), "{text}");
        assert_eq!(run(&["-h"], &[]).unwrap(), Command::Help(text));
    }

    #[test]
    fn version_names_package() {
        let expected = Command::Version(format!("binance-ingest {}", env!("CARGO_PKG_VERSION")));
        assert_eq!(run(&["--version"], &[]).unwrap(), expected);
        assert_eq!(run(&["check-config", "-V"], &[]).unwrap(), expected);
    }
}
