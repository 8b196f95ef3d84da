//! The access log (`server.access_log = true`): one line per client request, at
//! `info` under the target `tidemark::access`, in a fixed format:
//!
//! ```text
//! 127.0.0.1:50412 "GET /users/7 HTTP/1.1" 200 route=read-user source=projection wait_ms=182.4 ms=183.0
//! ```
//!
//! peer, request line (path without the query string: queries can carry secrets),
//! status, the matched route (`-` when none), where a read was answered from
//! (`projection`, `cache`, `primary`, `stale`; `-` otherwise), how long it was held
//! (`wait_ms`, from the `Server-Timing` entry the read path sets; `-` for writes and
//! passthrough) and the time to the response's headers (`ms`; the body streams
//! after). Tokens are never logged.
//!
//! Off (the default) it costs one branch per request: nothing is captured or
//! formatted.

use std::fmt::Write as _;
use std::net::SocketAddr;

use http::{Method, Version};
use tokio::time::Instant;

/// What the line needs from the request, taken before the request is consumed.
#[derive(Debug)]
pub struct AccessStart {
    pub peer: SocketAddr,
    pub method: Method,
    pub path: String,
    pub version: Version,
    pub started: Instant,
}

/// What the line needs from the answer.
#[derive(Debug, Default)]
pub struct AccessEnd<'a> {
    pub status: u16,
    pub route: Option<&'a str>,
    pub source: Option<&'a str>,
    /// The `Server-Timing` header of the response, if any.
    pub server_timing: Option<&'a str>,
}

/// The `wait_ms` of a `Server-Timing` value: the `dur` of its `tidemark` entry.
fn wait_ms(server_timing: &str) -> Option<&str> {
    server_timing
        .split(',')
        .map(str::trim)
        .find(|e| e.starts_with("tidemark;"))?
        .split(';')
        .find_map(|p| p.trim().strip_prefix("dur="))
}

/// The access line for a request.
pub fn line(start: &AccessStart, end: &AccessEnd<'_>, now: Instant) -> String {
    let mut out = String::with_capacity(128 + start.path.len());
    let elapsed = now.saturating_duration_since(start.started);
    let _ = write!(
        out,
        "{} \"{} {} {:?}\" {} route={} source={} wait_ms={} ms={:.1}",
        start.peer,
        start.method,
        start.path,
        start.version,
        end.status,
        end.route.unwrap_or("-"),
        end.source.unwrap_or("-"),
        end.server_timing.and_then(wait_ms).unwrap_or("-"),
        elapsed.as_secs_f64() * 1000.0,
    );
    out
}

/// Logs the line at `info` under `tidemark::access`.
pub fn log(start: &AccessStart, end: &AccessEnd<'_>) {
    tracing::info!(target: "tidemark::access", "{}", line(start, end, Instant::now()));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_line_has_route_source_and_wait() {
        let start = AccessStart {
            peer: "127.0.0.1:50412".parse().unwrap(),
            method: Method::GET,
            path: "/users/7".into(),
            version: Version::HTTP_11,
            started: Instant::now(),
        };
        let end = AccessEnd {
            status: 200,
            route: Some("read-user"),
            source: Some("projection"),
            server_timing: Some("db;dur=3, tidemark;dur=182.4;desc=\"projection\""),
        };
        let now = start.started + Duration::from_micros(183_040);
        assert_eq!(
            line(&start, &end, now),
            "127.0.0.1:50412 \"GET /users/7 HTTP/1.1\" 200 route=read-user \
             source=projection wait_ms=182.4 ms=183.0"
        );
        let none = AccessEnd {
            status: 404,
            ..AccessEnd::default()
        };
        assert_eq!(
            line(&start, &none, start.started),
            "127.0.0.1:50412 \"GET /users/7 HTTP/1.1\" 404 route=- source=- wait_ms=- ms=0.0"
        );
    }
}
