//! Reader of `KEY=value` settings files in systemd `EnvironmentFile=` syntax.
//!
//! Runs on the main thread at start-up. It follows systemd's comment,
//! quoting and trimming rules so that one file can serve both `--config`
//! and `EnvironmentFile=`. It never interprets keys or values.
//!
//! NOTE: systemd joins a line that ends in a backslash with the next one
//! (systemd.exec(5), `EnvironmentFile=`). This reader does not, so the next
//! line is read as a setting of its own. Unlike systemd, it also rejects a
//! line without `=` instead of skipping it, so a typo cannot hide.

/// One `KEY=value` line of a settings file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// Line number, counted from 1.
    pub number: usize,
    /// Key as written, without an `export ` prefix.
    pub key: String,
    /// Value with its quotes removed.
    pub value: String,
}

/// Splits `text` into settings lines.
///
/// Blank lines and lines starting with `#` or `;` are skipped, an `export `
/// prefix is tolerated, and a value may be wrapped in single quotes (taken
/// literally) or double quotes (where `\"` and `\\` are escapes). Unquoted
/// values are trimmed. Text after `#` on a setting line belongs to the
/// value, as it does for systemd. Returns the line number and the problem
/// of the first malformed line.
pub fn parse_lines(text: &str) -> Result<Vec<Line>, (usize, String)> {
    let mut lines = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").map(str::trim_start).unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err((number, format!("expected KEY=value, found {line:?}")));
        };
        let key = key.trim_end();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err((
                number,
                format!("expected KEY=value with a key of one word, found {line:?}"),
            ));
        }
        let value = unquote(value.trim()).map_err(|problem| (number, problem))?;
        lines.push(Line { number, key: key.to_string(), value });
    }
    Ok(lines)
}

/// Removes one level of single or double quotes around the whole value.
fn unquote(value: &str) -> Result<String, String> {
    let Some(quote) = value.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        return Ok(value.to_string());
    };
    let inner = &value[1..];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == quote {
            let trailing = chars.as_str();
            if !trailing.trim().is_empty() {
                return Err(format!("unexpected text {trailing:?} after the closing quote"));
            }
            return Ok(out);
        }
        if c == '\\' && quote == '"' {
            match chars.next() {
                Some(escaped @ ('"' | '\\')) => out.push(escaped),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => break,
            }
            continue;
        }
        out.push(c);
    }
    Err(format!("missing closing {quote} quote"))
}

/// Writes `value` so that [`parse_lines`] reads it back unchanged: bare when
/// it is safe, else in double quotes with `"` and `\` escaped.
pub fn quote(value: &str) -> String {
    let needs_quotes = value.trim() != value
        || value.starts_with(['"', '\''])
        || value.contains(['\\', '\n', '\r']);
    if !needs_quotes {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(text: &str) -> Line {
        let mut lines = parse_lines(text).unwrap();
        assert_eq!(lines.len(), 1, "{text}");
        lines.remove(0)
    }

    #[test]
    fn lines_skip_comments_and_blanks() {
        let text = "# comment\n\n   ; also a comment\nA=1\n  # indented comment\nB = 2 \n";
        let lines = parse_lines(text).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0], Line { number: 4, key: "A".into(), value: "1".into() });
        assert_eq!(lines[1], Line { number: 6, key: "B".into(), value: "2".into() });
    }

    #[test]
    fn quotes_are_removed() {
        assert_eq!(single("A='x y'").value, "x y");
        assert_eq!(single("A=\"x y\"").value, "x y");
        assert_eq!(single(r#"A="say \"hi\" \\ \n""#).value, r#"say "hi" \ \n"#);
        assert_eq!(single(r"A='a\b'").value, r"a\b");
        assert_eq!(single("A=\"\"").value, "");
        assert_eq!(single("A=").value, "");
        assert_eq!(single("A=it's").value, "it's");
    }

    #[test]
    fn export_prefix_is_tolerated() {
        let line = single("export BINANCE_INGEST_VENUE=usdm");
        assert_eq!(line.key, "BINANCE_INGEST_VENUE");
        assert_eq!(line.value, "usdm");
    }

    #[test]
    fn hash_after_value_is_kept() {
        assert_eq!(single("A=64MiB # note").value, "64MiB # note");
    }

    #[test]
    fn malformed_lines_carry_numbers() {
        let cases = [
            ("A=1\njust words\n", 2, "expected KEY=value"),
            ("\n\n=5", 3, "key of one word"),
            ("A B=5", 1, "key of one word"),
            ("A=1\nB=\"open", 2, "missing closing"),
            ("A='x' y", 1, "after the closing quote"),
        ];
        for (text, line, expected) in cases {
            let (number, problem) = parse_lines(text).expect_err(text);
            assert_eq!(number, line, "{text}");
            assert!(problem.contains(expected), "{text}: {problem}");
        }
    }

    #[test]
    fn quote_round_trips() {
        for value in
            ["", "plain", "with space", " lead", "trail ", "\"q\"", "'s", r"back\slash", "a#b"]
        {
            let line = single(&format!("K={}", quote(value)));
            assert_eq!(line.value, value, "{value:?}");
        }
        assert_eq!(quote("btcusdt@trade"), "btcusdt@trade");
    }
}
