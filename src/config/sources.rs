//! Settings as given by each source, before they are applied: the
//! `--config` file, `BINANCE_INGEST_*` environment variables and flags.
//!
//! Runs on the main thread at start-up. It maps each given name to its key
//! and rejects unknown names with a hint. It never parses values, because
//! `Config::resolve` does, so every value gets the same checks.

use std::fs;
use std::path::Path;

use super::file;
use super::keys::{KEY_PREFIX, KEYS, closest_key};
use crate::error::{ConfigError, Error};

/// Origin of a value, lowest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Built into the program.
    Default,
    /// The `--config` file.
    File,
    /// A `BINANCE_INGEST_*` environment variable.
    Env,
    /// A command-line flag.
    Flag,
}

impl Source {
    /// Word used in `describe` output: default, file, env or flag.
    pub fn name(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::File => "file",
            Source::Env => "env",
            Source::Flag => "flag",
        }
    }
}

/// Source of each key's value, indexed like [`KEYS`].
///
/// Two `Sources` always compare equal, because provenance is not a setting:
/// configs with the same values are the same configuration wherever the
/// values came from.
#[derive(Clone, Debug, Default)]
pub struct Sources(Vec<Source>);

impl Sources {
    /// Source of the key at `index` in [`KEYS`].
    pub fn get(&self, index: usize) -> Source {
        self.0.get(index).copied().unwrap_or(Source::Default)
    }

    /// Records that the key at `index` was last set by `source`.
    pub(super) fn set(&mut self, index: usize, source: Source) {
        if self.0.len() <= index {
            self.0.resize(index + 1, Source::Default);
        }
        self.0[index] = source;
    }
}

impl PartialEq for Sources {
    fn eq(&self, _: &Sources) -> bool {
        true
    }
}

/// One value given for a key, before it is applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// Index of the key in [`KEYS`].
    pub key: usize,
    /// Value as given, with quotes removed.
    pub value: String,
    /// Kind of source, which sets the precedence.
    pub source: Source,
    /// Place the value was given, for error messages, such as
    /// `in /etc/binance-ingest.conf line 3` or `by --cache-size`.
    pub origin: String,
}

/// Reads the settings of a `KEY=value` file such as `--config FILE`.
///
/// # Errors
/// [`Error::File`] when the file cannot be read, and [`Error::Config`]
/// for a malformed line, an unknown key or a key given twice.
pub fn read_file(path: &Path) -> Result<Vec<Setting>, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::File {
        action: "read the config file",
        path: path.to_path_buf(),
        source,
    })?;
    parse_file(&text, &path.display().to_string())
}

/// Parses the text of a settings file; `name` is used in error messages.
///
/// # Errors
/// As [`read_file`], except that nothing is read from disk.
pub fn parse_file(text: &str, name: &str) -> Result<Vec<Setting>, Error> {
    let lines = file::parse_lines(text).map_err(|(number, problem)| ConfigError {
        key: format!("{name} line {number}"),
        value: text.lines().nth(number - 1).unwrap_or_default().trim().to_string(),
        problem,
        combined: false,
    })?;
    let mut settings: Vec<Setting> = Vec::with_capacity(lines.len());
    let mut first_line: Vec<Option<usize>> = vec![None; KEYS.len()];
    for line in lines {
        let origin = format!("in {name} line {}", line.number);
        let key = lookup_key(&line.key).ok_or_else(|| ConfigError {
            key: line.key.clone(),
            value: line.value.clone(),
            problem: format!("unknown key {origin}{}", hint(&line.key)),
            combined: false,
        })?;
        if let Some(first) = first_line[key] {
            return Err(ConfigError {
                key: line.key,
                value: line.value,
                problem: format!("set twice in {name}, on lines {first} and {}", line.number),
                combined: false,
            }
            .into());
        }
        first_line[key] = Some(line.number);
        settings.push(Setting { key, value: line.value, source: Source::File, origin });
    }
    Ok(settings)
}

/// Picks the `BINANCE_INGEST_*` variables out of `env`, such as the
/// output of `cli::process_env`.
///
/// # Errors
/// [`Error::Config`] for a variable with the prefix that names no key, so a
/// misspelt setting never goes unnoticed.
pub fn env_settings(
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Setting>, Error> {
    let mut settings = Vec::new();
    for (name, value) in env {
        if !name.starts_with(KEY_PREFIX) {
            continue;
        }
        let key = lookup_key(&name).ok_or_else(|| ConfigError {
            key: name.clone(),
            value: value.clone(),
            problem: format!("unknown environment variable{}", hint(&name)),
            combined: false,
        })?;
        let origin = "in the environment".to_string();
        settings.push(Setting { key, value, source: Source::Env, origin });
    }
    Ok(settings)
}

/// Builds the setting of a command-line flag; `flag` has no leading dashes,
/// such as `cache-size`.
///
/// # Errors
/// [`Error::Usage`] when no key has that flag.
pub fn flag_setting(flag: &str, value: String) -> Result<Setting, Error> {
    let key = KEYS.iter().position(|key| key.flag_name() == flag).ok_or_else(|| {
        let hint = closest_key(flag).map(|key| format!("; did you mean --{}?", key.flag_name()));
        Error::Usage(format!("unknown option --{flag}{}", hint.unwrap_or_default()))
    })?;
    Ok(Setting { key, value, source: Source::Flag, origin: format!("by --{flag}") })
}

/// Returns the index of the key named `name` with its prefix.
fn lookup_key(name: &str) -> Option<usize> {
    let short = name.strip_prefix(KEY_PREFIX)?;
    KEYS.iter().position(|key| key.name == short)
}

fn hint(name: &str) -> String {
    match closest_key(name) {
        Some(key) => format!("; did you mean {}?", key.env_name()),
        None if !name.starts_with(KEY_PREFIX) => {
            format!("; keys start with {KEY_PREFIX}, and the list is in --help")
        }
        None => "; the list of keys is in --help".to_string(),
    }
}
