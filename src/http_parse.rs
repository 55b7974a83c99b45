//! Strict parsing of an HTTP/1.x request head: the request line and the
//! header fields, up to the empty line.
//!
//! Pure functions on bytes, called by the HTTP handler threads. They never
//! read a request body and never allocate more than the head they are given,
//! whatever a header announces.

/// Maximum request head (request line and header fields), in bytes: 8 KiB.
pub const MAX_HEAD_LEN: usize = 8 * 1024;

/// Maximum request target, in bytes: 2 KiB.
pub const MAX_TARGET_LEN: usize = 2048;

/// Maximum number of header fields in one request.
pub const MAX_HEADERS: usize = 64;

/// Request method the server can tell apart. Any other valid token is kept
/// as [`Method::Other`] so the router can respond 405.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`: like GET, without the body.
    Head,
    /// Any other method token.
    Other(String),
}

/// A parsed request head without a body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Request target in origin form, such as `/recent?limit=5`.
    pub target: String,
}

/// Rejection of a request head, with the status code to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// HTTP status code: 400, 413, 414 or 431.
    pub code: u16,
    /// Plain-text reason for the response body, ending in a newline.
    pub message: String,
}

impl Rejection {
    fn new(code: u16, message: impl Into<String>) -> Rejection {
        Rejection { code, message: message.into() }
    }
}

/// Returns the length of the head including its closing `\r\n\r\n` when
/// `buffer` contains a complete head, else `None`.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer.windows(4).position(|window| window == b"\r\n\r\n").map(|start| start + 4)
}

/// Returns the rejection for a head that is still incomplete after
/// [`MAX_HEAD_LEN`] bytes. That is 414 when not even the request line has
/// ended, since its target is then over [`MAX_TARGET_LEN`], else 431.
pub fn reject_oversized(buffer: &[u8]) -> Rejection {
    let request_line_done = buffer.windows(2).any(|window| window == b"\r\n");
    if request_line_done {
        Rejection::new(431, format!("request head longer than {MAX_HEAD_LEN} bytes\n"))
    } else {
        Rejection::new(414, format!("request target longer than {MAX_TARGET_LEN} bytes\n"))
    }
}

/// Parses a complete head, as delimited by [`head_end`].
///
/// # Errors
///
/// - 400 for a malformed request line or header field, or a version other
///   than HTTP/1.0 and HTTP/1.1.
/// - 414 for a target over [`MAX_TARGET_LEN`].
/// - 431 for more than [`MAX_HEADERS`] fields.
/// - 413 for any request body, announced by a `Content-Length` above 0 or
///   by any `Transfer-Encoding`.
pub fn parse_head(head: &[u8]) -> Result<RequestHead, Rejection> {
    let head = head.strip_suffix(b"\r\n\r\n").unwrap_or(head);
    let mut lines = split_crlf(head);
    let request_line = lines.next().unwrap_or_default();
    if has_line_break(request_line) {
        return Err(Rejection::new(400, "invalid request line\n"));
    }
    let request = parse_request_line(request_line)?;

    let mut count = 0;
    let mut content_length: Option<&[u8]> = None;
    for line in lines {
        if has_line_break(line) {
            return Err(Rejection::new(400, "header line not ended by CRLF\n"));
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(Rejection::new(431, format!("more than {MAX_HEADERS} header fields\n")));
        }
        let (name, value) = parse_field(line)?;
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(Rejection::new(413, "request bodies are not accepted\n"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            if !is_decimal(value) || content_length.is_some_and(|seen| seen != value) {
                return Err(Rejection::new(400, "invalid Content-Length\n"));
            }
            content_length = Some(value);
        }
    }
    // Any digit other than 0 means a body. The value is never converted to
    // a number, so an absurd length cannot overflow or size a buffer.
    if content_length.is_some_and(|value| value.iter().any(|&digit| digit != b'0')) {
        return Err(Rejection::new(413, "request bodies are not accepted\n"));
    }
    Ok(request)
}

fn parse_request_line(line: &[u8]) -> Result<RequestHead, Rejection> {
    let invalid = || Rejection::new(400, "invalid request line\n");
    let mut parts = line.split(|&byte| byte == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    if method.is_empty() || !method.iter().all(|&byte| is_token_byte(byte)) {
        return Err(invalid());
    }

    if target.len() > MAX_TARGET_LEN {
        return Err(Rejection::new(
            414,
            format!("request target longer than {MAX_TARGET_LEN} bytes\n"),
        ));
    }
    if !target.starts_with(b"/") || !target.iter().all(|byte| (0x21..=0x7e).contains(byte)) {
        return Err(invalid());
    }
    if version != b"HTTP/1.1" && version != b"HTTP/1.0" {
        return Err(Rejection::new(400, "only HTTP/1.0 and HTTP/1.1 are supported\n"));
    }

    // Both were checked to be ASCII above.
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    let method = match method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other(method),
    };
    Ok(RequestHead { method, target })
}

/// Splits `name: value`, rejecting whitespace before the colon, folded
/// lines and control bytes, as RFC 9112 section 5 requires.
fn parse_field(line: &[u8]) -> Result<(&[u8], &[u8]), Rejection> {
    let invalid = || Rejection::new(400, "invalid header field\n");
    let colon = line.iter().position(|&byte| byte == b':').ok_or_else(invalid)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
        return Err(invalid());
    }
    if !value.iter().all(|&byte| byte == b'\t' || byte == b' ' || byte >= 0x21 && byte != 0x7f) {
        return Err(invalid());
    }
    Ok((name, value.trim_ascii()))
}

/// Splits `head` at each CRLF. A bare CR or LF stays inside a line.
fn split_crlf(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.windows(2).position(|window| window == b"\r\n") {
            Some(at) => {
                rest = Some(&text[at + 2..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

fn has_line_break(line: &[u8]) -> bool {
    line.iter().any(|&byte| byte == b'\r' || byte == b'\n')
}

fn is_decimal(value: &[u8]) -> bool {
    !value.is_empty() && value.iter().all(u8::is_ascii_digit)
}

/// Whether `byte` may appear in a token (RFC 9110 section 5.6.2 `tchar`).
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(head: &str) -> u16 {
        match parse_head(head.as_bytes()) {
            Ok(_) => 200,
            Err(rejection) => rejection.code,
        }
    }

    #[test]
    fn head_parses_get_and_head() {
        let head = parse_head(b"GET /recent?limit=5 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/recent?limit=5");
        let head = parse_head(b"HEAD /livez HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::Head);
        let head = parse_head(b"DELETE /livez HTTP/1.1\r\n\r\n").unwrap();
        assert_eq!(head.method, Method::Other("DELETE".into()));
    }

    #[test]
    fn bad_request_lines_are_400() {
        for line in [
            "GET /livez\r\n\r\n",
            "GET  /livez HTTP/1.1\r\n\r\n",
            "GET /livez HTTP/1.1 extra\r\n\r\n",
            "GET livez HTTP/1.1\r\n\r\n",
            "GET http://x/livez HTTP/1.1\r\n\r\n",
            "GET /li\x01vez HTTP/1.1\r\n\r\n",
            "G(T /livez HTTP/1.1\r\n\r\n",
            " /livez HTTP/1.1\r\n\r\n",
            "GET /livez HTTP/2.0\r\n\r\n",
            "GET /livez SPDY/1.1\r\n\r\n",
            "GET /livez HTTP/1.1\n\r\n\r\n",
        ] {
            assert_eq!(code(line), 400, "{line:?}");
        }
    }

    #[test]
    fn bad_header_fields_are_400() {
        for field in [
            "Host x",
            "Host : x",
            ": x",
            " folded: x",
            "Host: a\x00b",
            "Content-Length: -1",
            "Content-Length: 1e3",
            "Content-Length:",
        ] {
            let head = format!("GET /livez HTTP/1.1\r\n{field}\r\n\r\n");
            assert_eq!(code(&head), 400, "{field:?}");
        }
        let twice = "GET /livez HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 00\r\n\r\n";
        assert_eq!(code(twice), 400);
    }

    #[test]
    fn bodies_are_413() {
        for field in [
            "Content-Length: 1",
            "Content-Length: 99999999999",
            "content-length: 999999999999999999999999999999",
            "Transfer-Encoding: chunked",
            "transfer-encoding: identity",
        ] {
            let head = format!("GET /readyz HTTP/1.1\r\n{field}\r\n\r\n");
            assert_eq!(code(&head), 413, "{field:?}");
        }
        assert_eq!(code("GET /readyz HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 200);
        assert_eq!(code("GET /readyz HTTP/1.1\r\nContent-Length:  000 \r\n\r\n"), 200);
    }

    #[test]
    fn limits_give_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_LEN));
        assert_eq!(code(&long), 414);
        let fits = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET_LEN - 1));
        assert_eq!(code(&fits), 200);

        let mut many = String::from("GET /livez HTTP/1.1\r\n");
        for index in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{index}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(code(&many), 431);

        let unfinished_line = vec![b'a'; MAX_HEAD_LEN];
        assert_eq!(reject_oversized(&unfinished_line).code, 414);
        let mut unfinished_head = b"GET / HTTP/1.1\r\n".to_vec();
        unfinished_head.resize(MAX_HEAD_LEN, b'x');
        assert_eq!(reject_oversized(&unfinished_head).code, 431);
    }

    #[test]
    fn head_end_finds_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
