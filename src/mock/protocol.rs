//! The Binance stream protocol as the mock exchange speaks it: connection
//! paths, live requests (`SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`,
//! `SET_PROPERTY`, `GET_PROPERTY`) with Binance's reply and error shapes,
//! and the incoming-message limit.
//!
//! Pure functions and small state, called by connection threads; nothing
//! here touches a socket.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

/// USD-M routing prefix of a connection path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/ws` or `/stream`: every stream delivers.
    Any,
    /// `/public/...`: only book streams (`@bookTicker`, `@depth*`) deliver.
    Public,
    /// `/market/...`: only the other streams deliver.
    Market,
}

impl Route {
    /// Whether `stream` delivers data on a connection with this route. A
    /// stream on the wrong route is accepted and silently delivers nothing,
    /// as Binance's routed USD-M endpoints do.
    /// The split is the one the service plans with, USD-M `@trade` on
    /// `/public` included, so both sides agree on the unsettled streams.
    pub fn delivers(self, stream: &str) -> bool {
        let planned = crate::plan::route_of(
            crate::venue::Venue::UsdM,
            stream,
            crate::plan::RoutingRules::default(),
        );
        match self {
            Route::Any => true,
            Route::Public => planned == crate::plan::Route::Public,
            Route::Market => planned == crate::plan::Route::Market,
        }
    }
}

/// Connection settings parsed from the request path of a handshake.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectPath {
    /// Combined form (`/stream`): frames are wrapped as
    /// `{"stream":..,"data":..}`.
    pub combined: bool,
    /// Routing prefix.
    pub route: Route,
    /// Streams named in the path, in order, without duplicates.
    pub streams: Vec<String>,
}

/// Whether `name` is a plausible stream name: ASCII letters, digits and
/// `@_!.-`, at most 200 bytes. Such a name needs no JSON escaping.
pub fn is_valid_stream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"@_!.-".contains(&b))
}

/// Parses a request target such as `/stream?streams=a@trade/b@trade` or
/// `/public/ws/btcusdt@bookTicker`. Returns the HTTP status and message to
/// reject the handshake with when the path is unknown, a stream name is
/// invalid or there are more than `max_streams` streams.
pub fn parse_path(target: &str, max_streams: usize) -> Result<ConnectPath, (u16, String)> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (route, rest) = if let Some(rest) = path.strip_prefix("/public") {
        (Route::Public, rest)
    } else if let Some(rest) = path.strip_prefix("/market") {
        (Route::Market, rest)
    } else {
        (Route::Any, path)
    };

    let (combined, names): (bool, Vec<&str>) = if rest == "/ws" || rest == "/ws/" {
        (false, Vec::new())
    } else if let Some(list) = rest.strip_prefix("/ws/") {
        (false, list.split('/').filter(|name| !name.is_empty()).collect())
    } else if rest == "/stream" || rest == "/stream/" {
        let list = query.split('&').find_map(|pair| pair.strip_prefix("streams=")).unwrap_or("");
        (true, list.split('/').filter(|name| !name.is_empty()).collect())
    } else {
        return Err((
            404,
            format!("unknown path {path:?}, expected /ws/<stream> or /stream?streams="),
        ));
    };

    let mut streams: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !is_valid_stream_name(name) {
            return Err((400, format!("invalid stream name {name:?}")));
        }
        if !streams.iter().any(|known| known == name) {
            streams.push(name.to_string());
        }
    }
    if streams.len() > max_streams {
        return Err((
            400,
            format!("{} streams requested, the maximum is {max_streams}", streams.len()),
        ));
    }
    Ok(ConnectPath { combined, route, streams })
}

/// Effect of one request on the connection.
#[derive(Debug, Default, PartialEq)]
pub struct RequestOutcome {
    /// Reply text to send.
    pub reply: String,
    /// Streams to start delivering.
    pub subscribe: Vec<String>,
    /// Streams to stop delivering.
    pub unsubscribe: Vec<String>,
    /// New value of the `combined` property, when set.
    pub combined: Option<bool>,
}

/// Handles one text message from a client. `subscribed` is the current
/// subscription list, in order; `combined` the current wrapping.
pub fn handle_request(
    text: &str,
    subscribed: &[String],
    combined: bool,
    max_streams: usize,
) -> RequestOutcome {
    let request: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(error) => {
            return error_reply(3, &format!("Invalid JSON: {error}"), None);
        }
    };
    let Some(object) = request.as_object() else {
        return error_reply(3, "Invalid JSON: expected an object", None);
    };
    let id = object.get("id");
    let id_text = match id {
        None | Some(Value::Null) => None,
        Some(Value::Number(number)) if number.is_i64() || number.is_u64() => {
            Some(number.to_string())
        }
        Some(Value::String(text))
            if text.len() <= 36 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') =>
        {
            Some(serde_json::to_string(text).unwrap_or_default())
        }
        Some(_) => {
            return error_reply(
                2,
                "Invalid request: request ID must be an unsigned integer or a string of at most 36 letters and digits",
                None,
            );
        }
    };
    let id_ref = id_text.as_deref();
    let Some(method) = object.get("method") else {
        return error_reply(2, "Invalid request: missing field `method`", id_ref);
    };
    let Some(method) = method.as_str() else {
        return error_reply(1, "Invalid value type: expected a string for method", id_ref);
    };
    let params = object.get("params");

    match method {
        "SUBSCRIBE" | "UNSUBSCRIBE" => {
            let Some(names) = string_params(params) else {
                return error_reply(
                    2,
                    "Invalid request: params must be an array of stream names",
                    id_ref,
                );
            };
            if let Some(bad) = names.iter().find(|name| !is_valid_stream_name(name)) {
                return error_reply(
                    2,
                    &format!("Invalid request: invalid stream name {bad:?}"),
                    id_ref,
                );
            }
            let mut outcome =
                RequestOutcome { reply: result_reply("null", id_ref), ..RequestOutcome::default() };
            if method == "SUBSCRIBE" {
                let mut new: Vec<String> = Vec::new();
                for name in names {
                    if !subscribed.contains(&name) && !new.contains(&name) {
                        new.push(name);
                    }
                }
                if subscribed.len() + new.len() > max_streams {
                    return error_reply(
                        2,
                        &format!("Invalid request: too many streams, the maximum is {max_streams}"),
                        id_ref,
                    );
                }
                outcome.subscribe = new;
            } else {
                outcome.unsubscribe =
                    names.into_iter().filter(|name| subscribed.contains(name)).collect();
            }
            outcome
        }
        "LIST_SUBSCRIPTIONS" => {
            let list = serde_json::to_string(subscribed).unwrap_or_else(|_| "[]".into());
            RequestOutcome { reply: result_reply(&list, id_ref), ..RequestOutcome::default() }
        }
        "SET_PROPERTY" => match params.and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(name), value]) if name == "combined" => match value.as_bool() {
                Some(flag) => RequestOutcome {
                    reply: result_reply("null", id_ref),
                    combined: Some(flag),
                    ..RequestOutcome::default()
                },
                None => error_reply(1, "Invalid value type: expected Boolean", id_ref),
            },
            Some([Value::String(_), _]) => error_reply(0, "Unknown property", id_ref),
            _ => error_reply(2, "Invalid request: expected params [name, value]", id_ref),
        },
        "GET_PROPERTY" => match params.and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(name)]) if name == "combined" => RequestOutcome {
                reply: result_reply(if combined { "true" } else { "false" }, id_ref),
                ..RequestOutcome::default()
            },
            Some([Value::String(_)]) => error_reply(0, "Unknown property", id_ref),
            _ => error_reply(2, "Invalid request: expected params [name]", id_ref),
        },
        other => error_reply(
            2,
            &format!(
                "Invalid request: unknown variant `{other}`, expected one of `SUBSCRIBE`, `UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`"
            ),
            id_ref,
        ),
    }
}

fn string_params(params: Option<&Value>) -> Option<Vec<String>> {
    params?.as_array()?.iter().map(|value| value.as_str().map(str::to_string)).collect()
}

/// `{"result":<result>,"id":<id>}`, with `result` and `id` already JSON.
fn result_reply(result: &str, id: Option<&str>) -> String {
    format!("{{\"result\":{result},\"id\":{}}}", id.unwrap_or("null"))
}

/// Binance's error shape `{"code":..,"msg":..}`, plus `id` when known.
fn error_reply(code: u32, message: &str, id: Option<&str>) -> RequestOutcome {
    let message = serde_json::to_string(message).unwrap_or_else(|_| "\"\"".into());
    let reply = match id {
        Some(id) => format!("{{\"code\":{code},\"msg\":{message},\"id\":{id}}}"),
        None => format!("{{\"code\":{code},\"msg\":{message}}}"),
    };
    RequestOutcome { reply, ..RequestOutcome::default() }
}

/// Sliding one-second window over incoming messages.
#[derive(Debug)]
pub struct IncomingLimiter {
    limit: u32,
    arrivals: VecDeque<Instant>,
}

impl IncomingLimiter {
    /// Allows `limit` messages in any one second.
    pub fn new(limit: u32) -> IncomingLimiter {
        IncomingLimiter { limit, arrivals: VecDeque::with_capacity(limit as usize + 1) }
    }

    /// Records a message at `now`; returns false when it exceeds the limit.
    pub fn record(&mut self, now: Instant) -> bool {
        while let Some(&oldest) = self.arrivals.front() {
            if now.duration_since(oldest) >= Duration::from_secs(1) {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
        self.arrivals.push_back(now);
        self.arrivals.len() <= self.limit as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_raw_combined_and_routed() {
        let raw = parse_path("/ws/btcusdt@trade", 1024).unwrap();
        assert!(!raw.combined);
        assert_eq!(raw.streams, ["btcusdt@trade"]);

        let combined = parse_path("/stream?streams=a@trade/b@depth@100ms", 1024).unwrap();
        assert!(combined.combined);
        assert_eq!(combined.streams, ["a@trade", "b@depth@100ms"]);

        let public = parse_path("/public/stream?streams=a@bookTicker", 1024).unwrap();
        assert_eq!(public.route, Route::Public);
        assert!(Route::Public.delivers("a@bookTicker"));
        assert!(!Route::Public.delivers("a@aggTrade"));
        assert!(Route::Market.delivers("a@aggTrade"));

        assert_eq!(parse_path("/ws", 1024).unwrap().streams.len(), 0);
        assert_eq!(parse_path("/api/v3/time", 1024).unwrap_err().0, 404);
        assert_eq!(parse_path("/ws/a@trade/b@trade", 1).unwrap_err().0, 400);
        assert_eq!(parse_path("/ws/a\"b", 10).unwrap_err().0, 400);
    }

    #[test]
    fn subscribe_replies_with_result_null() {
        let outcome = handle_request(
            r#"{"method":"SUBSCRIBE","params":["btcusdt@trade"],"id":1}"#,
            &[],
            false,
            1024,
        );
        assert_eq!(outcome.reply, r#"{"result":null,"id":1}"#);
        assert_eq!(outcome.subscribe, ["btcusdt@trade"]);
    }

    #[test]
    fn list_subscriptions_returns_streams() {
        let subscribed = vec!["a@trade".to_string()];
        let outcome = handle_request(
            r#"{"method":"LIST_SUBSCRIPTIONS","id":"x1"}"#,
            &subscribed,
            false,
            1024,
        );
        assert_eq!(outcome.reply, r#"{"result":["a@trade"],"id":"x1"}"#);
    }

    #[test]
    fn bad_requests_get_error_shape() {
        let outcome = handle_request("{not json", &[], false, 1024);
        assert!(outcome.reply.starts_with(r#"{"code":3,"msg":"Invalid JSON"#), "{}", outcome.reply);
        let outcome = handle_request(r#"{"method":"FOO","id":2}"#, &[], false, 1024);
        assert!(outcome.reply.starts_with(r#"{"code":2,"#));
        assert!(outcome.reply.ends_with(r#""id":2}"#));
        let outcome = handle_request(
            r#"{"method":"SUBSCRIBE","params":["a@trade","b@trade"],"id":3}"#,
            &[],
            false,
            1,
        );
        assert!(outcome.reply.contains("too many streams"));
        assert!(outcome.subscribe.is_empty());
    }

    #[test]
    fn limiter_allows_limit_per_second() {
        let mut limiter = IncomingLimiter::new(5);
        let start = Instant::now();
        for _ in 0..5 {
            assert!(limiter.record(start));
        }
        assert!(!limiter.record(start + Duration::from_millis(500)));
        let mut limiter = IncomingLimiter::new(5);
        for second in 0..10 {
            assert!(limiter.record(start + Duration::from_millis(300 * second)));
        }
    }
}
