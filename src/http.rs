//! The HTTP routes: `/livez`, `/healthz`, `/readyz`, `/metrics` and
//! `/recent`, run on the handler threads of [`crate::http_server`].
//!
//! Handlers read atomics and short-held snapshots only, so health responses
//! stay fast while ingest runs at full speed. They must never block on the
//! ingest path. Only GET and HEAD are served; the connection layer rejects
//! requests with a body or an overlong target before they get here.

use std::sync::Arc;

use crate::health::{Health, Report};
use crate::http_parse::{Method, RequestHead};
use crate::ring::Ring;

pub use crate::http_parse::MAX_TARGET_LEN as MAX_URL_LEN;
pub use crate::http_server::{HttpServer, HttpStats, Response};

/// Default `limit` of `/recent`.
pub const RECENT_DEFAULT: usize = 100;
/// Maximum `limit` of `/recent`.
pub const RECENT_MAX: usize = 1000;

/// Maximum bytes of the records one `/recent` response copies from the
/// ring, one newline per record included: 4 MiB. The response body is
/// the same size, so a handler keeps at most twice this in memory.
pub const RECENT_MAX_BYTES: usize = 4 << 20;

/// Header field set on a `/recent` response that left out older records
/// because the newer ones reached [`RECENT_MAX_BYTES`].
pub const RECENT_TRUNCATED_HEADER: &str = "X-Recent-Truncated";

/// Everything the handlers read.
pub struct HttpContext {
    /// Health verdicts.
    pub health: Arc<Health>,
    /// Cache ring, for `/recent`.
    pub ring: Arc<Ring>,
    /// Renders the `/metrics` body.
    pub metrics: Arc<dyn Fn() -> String + Send + Sync>,
    /// Response counters of the server, also rendered into `/metrics`.
    pub stats: Arc<HttpStats>,
}

/// Routes a parsed request: 404 for an unknown path, 405 for a method
/// other than GET and HEAD, else the route's response. The caller leaves
/// the body out for HEAD.
pub fn route(request: &RequestHead, context: &HttpContext) -> Response {
    let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
    let known = matches!(path, "/livez" | "/healthz" | "/readyz" | "/metrics" | "/recent");
    if !known {
        return Response::text(
            404,
            format!("not found: {path}; try /livez, /readyz, /metrics or /recent\n"),
        );
    }
    if let Method::Other(method) = &request.method {
        return Response {
            allow: Some("GET, HEAD"),
            ..Response::text(405, format!("method {method} not allowed\n"))
        };
    }

    match path {
        "/livez" | "/healthz" => health_response(context.health.live()),
        "/readyz" => health_response(context.health.ready()),
        "/metrics" => Response {
            code: 200,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: (context.metrics)(),
            allow: None,
            headers: &[],
        },
        _ => recent_response(query, &context.ring),
    }
}

fn health_response(report: Report) -> Response {
    Response {
        code: report.status.http_code(),
        content_type: "application/health+json",
        body: report.to_json(),
        allow: None,
        headers: &[],
    }
}

fn recent_response(query: &str, ring: &Ring) -> Response {
    let mut stream = None;
    let mut limit = RECENT_DEFAULT;
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "stream" => match percent_decode(value) {
                Some(value) if !value.is_empty() => stream = Some(value),
                Some(_) => {}
                None => {
                    return Response::text(
                        400,
                        format!("invalid percent-encoding in stream={value}\n"),
                    );
                }
            },
            "limit" => match value.parse::<usize>() {
                Ok(value) if (1..=RECENT_MAX).contains(&value) => limit = value,
                _ => {
                    let message = format!("invalid limit={value}: expected 1 to {RECENT_MAX}\n");
                    return Response::text(400, message);
                }
            },
            other => {
                return Response::text(
                    400,
                    format!("unknown parameter {other:?}; accepted are stream and limit\n"),
                );
            }
        }
    }

    let page = ring.recent_within(stream.as_deref(), limit, RECENT_MAX_BYTES);
    let mut body = String::with_capacity(page.bytes);
    for record in page.records {
        // Lines are valid UTF-8: the pipeline stores only text frames,
        // which tungstenite has validated, so nothing is replaced here and
        // the body stays within RECENT_MAX_BYTES.
        body.push_str(&String::from_utf8_lossy(&record.line));
        body.push('\n');
    }
    let headers: &'static [(&'static str, &'static str)] =
        if page.truncated { &[(RECENT_TRUNCATED_HEADER, "true")] } else { &[] };
    Response { code: 200, content_type: "application/x-ndjson", body, allow: None, headers }
}

/// Decodes `%XX` escapes and `+`; returns `None` for a malformed escape or
/// a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'%' => {
                let hex = text.get(index + 1..index + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                index += 3;
            }
            b'+' => {
                out.push(b' ');
                index += 1;
            }
            byte => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("btcusdt%40trade").as_deref(), Some("btcusdt@trade"));
        assert_eq!(percent_decode("%21bookTicker").as_deref(), Some("!bookTicker"));
        assert_eq!(percent_decode("a+b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn recent_caps_response_bytes() {
        let ring = Ring::new(64 << 20);
        let line = vec![b'x'; (1 << 20) - 1];
        for _ in 0..6 {
            let mut batch = crate::ring::RecordBatch::new();
            batch.push_with(0, crate::record::RecordKind::Event, "a@trade", |out| {
                out.extend_from_slice(&line)
            });
            ring.append(&batch);
        }
        let response = recent_response("limit=10", &ring);
        assert_eq!(response.code, 200);
        assert_eq!(response.body.len(), RECENT_MAX_BYTES);
        assert_eq!(response.body.lines().count(), 4);
        assert_eq!(response.headers, [(RECENT_TRUNCATED_HEADER, "true")]);

        let response = recent_response("limit=2", &ring);
        assert_eq!(response.body.lines().count(), 2);
        assert!(response.headers.is_empty());
    }
}
