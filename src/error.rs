//! The one place gateway errors become HTTP: `application/problem+json` (RFC 9457).
//!
//! Every error the gateway itself produces is a [`GatewayError`]; its status, `type`,
//! `title` and extra members are decided here and pinned by the tests below.

use std::time::Duration;

use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Method, Response, StatusCode};
use serde_json::{json, Map, Value};

use crate::position::PositionVector;
use crate::proxy::{full, Body};
use crate::token::TokenError;

/// Media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An error answered by the gateway itself (not by an upstream).
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("no route for {method} {path}")]
    NoRoute {
        method: Method,
        path: String,
        /// Methods other routes accept on this path.
        allowed: Vec<Method>,
    },
    #[error("invalid consistency token: {0}")]
    BadToken(#[source] TokenError),
    #[error("{header} must be `session`, `eventual` or `strong`, not {value:?}")]
    BadLevel { header: String, value: String },
    #[error("route {route:?} has no primary to answer a `strong` read")]
    NoPrimary { route: String },
    #[error("too many reads are held ({limit}); try again shortly")]
    HeldReadsFull { projection: String, limit: usize },
    #[error("projection {projection:?} did not reach the required position within {waited:?}")]
    HoldTimeout {
        projection: String,
        required: PositionVector,
        checkpoint: PositionVector,
        waited: Duration,
        retry_after: Duration,
    },
    #[error("upstream {upstream:?} (instance {instance:?}) refused the connection or could not be reached: {source}")]
    UpstreamConnect {
        upstream: String,
        instance: String,
        #[source]
        source: crate::proxy::BoxError,
    },
    #[error("upstream {upstream:?} (instance {instance:?}) sent no response within {after:?}")]
    UpstreamTimeout {
        upstream: String,
        instance: String,
        after: Duration,
    },
    #[error("upstream {upstream:?} (instance {instance:?}) failed: {source}")]
    Upstream {
        upstream: String,
        instance: String,
        #[source]
        source: crate::proxy::BoxError,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("the admin API needs `Authorization: Bearer <admin token>`")]
    Unauthorized,
    #[error("{0}")]
    NotFound(String),
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the request body is larger than {limit} bytes (cache.max_request_body_bytes)")]
    PayloadTooLarge { limit: usize },
    #[error("projection `{projection}` does not take pushed checkpoints: its `sources` are [{sources}]; add \"push\" to `projections.{projection}.sources` (and reload) to push")]
    SourceNotEnabled {
        projection: String,
        /// The projection's configured sources, comma separated.
        sources: String,
    },
    #[error("the config was not reloaded ({} error(s)); the previous config keeps serving", .errors.len())]
    ReloadFailed {
        /// Every problem, each naming the file, the key and the fix.
        errors: Vec<String>,
    },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            NoRoute { .. } | NotFound(_) => StatusCode::NOT_FOUND,
            BadToken(_)
            | BadLevel { .. }
            | NoPrimary { .. }
            | BadRequest(_)
            | ReloadFailed { .. } => StatusCode::BAD_REQUEST,
            PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            // The request is well formed and authorized; it conflicts with the
            // projection's configuration (403 would blame the caller's credentials).
            SourceNotEnabled { .. } => StatusCode::CONFLICT,
            Unauthorized => StatusCode::UNAUTHORIZED,
            HeldReadsFull { .. } | HoldTimeout { .. } | ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            UpstreamConnect { .. } | Upstream { .. } => StatusCode::BAD_GATEWAY,
            UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The problem `type`: a stable URN per kind of error.
    pub fn kind(&self) -> &'static str {
        use GatewayError::*;
        match self {
            NoRoute { .. } => "no-route",
            BadToken(_) => "invalid-token",
            BadLevel { .. } => "invalid-consistency-level",
            NoPrimary { .. } => "no-primary",
            HeldReadsFull { .. } => "held-reads-full",
            HoldTimeout { .. } => "consistency-timeout",
            UpstreamConnect { .. } => "upstream-unreachable",
            UpstreamTimeout { .. } => "upstream-timeout",
            Upstream { .. } => "upstream-failed",
            BadRequest(_) => "bad-request",
            Unauthorized => "unauthorized",
            NotFound(_) => "not-found",
            ShuttingDown => "shutting-down",
            PayloadTooLarge { .. } => "payload-too-large",
            ReloadFailed { .. } => "config-invalid",
            SourceNotEnabled { .. } => "source-not-enabled",
        }
    }

    fn title(&self) -> &'static str {
        use GatewayError::*;
        match self {
            NoRoute { .. } => "No route matches this request",
            BadToken(_) => "Invalid consistency token",
            BadLevel { .. } => "Invalid consistency level",
            NoPrimary { .. } => "No primary for a strong read",
            HeldReadsFull { .. } => "Too many held reads",
            HoldTimeout { .. } => "Projection has not caught up",
            UpstreamConnect { .. } => "Upstream unreachable",
            UpstreamTimeout { .. } => "Upstream timed out",
            Upstream { .. } => "Upstream failed",
            BadRequest(_) => "Bad request",
            Unauthorized => "Unauthorized",
            NotFound(_) => "Not found",
            ShuttingDown => "Shutting down",
            PayloadTooLarge { .. } => "Request body too large",
            ReloadFailed { .. } => "Config not reloaded",
            SourceNotEnabled { .. } => "Checkpoint source not enabled",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            GatewayError::HoldTimeout { retry_after, .. } => Some(*retry_after),
            GatewayError::HeldReadsFull { .. } | GatewayError::ShuttingDown => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }

    /// The problem+json body.
    pub fn problem(&self) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            json!(format!("urn:tidemark:problem:{}", self.kind())),
        );
        body.insert("title".into(), json!(self.title()));
        body.insert("status".into(), json!(self.status().as_u16()));
        body.insert("detail".into(), json!(self.to_string()));
        match self {
            GatewayError::HoldTimeout {
                projection,
                required,
                checkpoint,
                waited,
                ..
            } => {
                body.insert("projection".into(), json!(projection));
                body.insert("required".into(), json!(required));
                body.insert("checkpoint".into(), json!(checkpoint));
                body.insert("waited_ms".into(), json!(waited.as_millis() as u64));
            }
            GatewayError::HeldReadsFull { projection, .. } => {
                body.insert("projection".into(), json!(projection));
            }
            GatewayError::BadToken(e) => {
                body.insert("reason".into(), json!(e.reason()));
            }
            GatewayError::PayloadTooLarge { limit } => {
                body.insert("limit_bytes".into(), json!(limit));
            }
            GatewayError::ReloadFailed { errors } => {
                body.insert("errors".into(), json!(errors));
            }
            GatewayError::NoRoute { allowed, .. } if !allowed.is_empty() => {
                let allowed: Vec<&str> = allowed.iter().map(Method::as_str).collect();
                body.insert("allowed_methods".into(), json!(allowed));
            }
            _ => {}
        }
        if let Some(after) = self.retry_after() {
            body.insert("retry_after_seconds".into(), json!(retry_secs(after)));
            // The estimate itself; the header and `retry_after_seconds` round it up.
            body.insert("retry_after_ms".into(), json!(after.as_millis() as u64));
        }
        Value::Object(body)
    }

    /// The HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let text = self.problem().to_string();
        let mut resp = Response::new(full(text));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let Some(after) = self.retry_after() {
            headers.insert(RETRY_AFTER, HeaderValue::from(retry_secs(after)));
        }
        if matches!(self, GatewayError::Unauthorized) {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// `Retry-After` seconds: at least 1, rounded up.
fn retry_secs(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

impl axum::response::IntoResponse for GatewayError {
    fn into_response(self) -> axum::response::Response {
        GatewayError::into_response(self).map(axum::body::Body::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn render(e: GatewayError) -> (StatusCode, http::HeaderMap, Value) {
        let resp = e.into_response();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn every_error_is_problem_json_with_the_pinned_status() {
        let boxed = || -> crate::proxy::BoxError { "refused".into() };
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (
                GatewayError::NoRoute {
                    method: Method::GET,
                    path: "/x".into(),
                    allowed: vec![],
                },
                404,
                "no-route",
            ),
            (
                GatewayError::BadToken(TokenError::Signature),
                400,
                "invalid-token",
            ),
            (
                GatewayError::BadLevel {
                    header: "consistency-level".into(),
                    value: "x".into(),
                },
                400,
                "invalid-consistency-level",
            ),
            (
                GatewayError::NoPrimary { route: "r".into() },
                400,
                "no-primary",
            ),
            (
                GatewayError::HeldReadsFull {
                    projection: "p".into(),
                    limit: 1,
                },
                503,
                "held-reads-full",
            ),
            (
                GatewayError::UpstreamConnect {
                    upstream: "u".into(),
                    instance: "a".into(),
                    source: boxed(),
                },
                502,
                "upstream-unreachable",
            ),
            (
                GatewayError::UpstreamTimeout {
                    upstream: "u".into(),
                    instance: "a".into(),
                    after: Duration::from_secs(1),
                },
                504,
                "upstream-timeout",
            ),
            (
                GatewayError::Upstream {
                    upstream: "u".into(),
                    instance: "a".into(),
                    source: boxed(),
                },
                502,
                "upstream-failed",
            ),
            (GatewayError::BadRequest("b".into()), 400, "bad-request"),
            (GatewayError::Unauthorized, 401, "unauthorized"),
            (GatewayError::NotFound("n".into()), 404, "not-found"),
            (GatewayError::ShuttingDown, 503, "shutting-down"),
            (
                GatewayError::PayloadTooLarge { limit: 1 },
                413,
                "payload-too-large",
            ),
            (
                GatewayError::ReloadFailed {
                    errors: vec!["e".into()],
                },
                400,
                "config-invalid",
            ),
            (
                GatewayError::SourceNotEnabled {
                    projection: "p".into(),
                    sources: "redis".into(),
                },
                409,
                "source-not-enabled",
            ),
        ];
        for (err, status, kind) in cases {
            let (got, headers, body) = render(err).await;
            assert_eq!(got.as_u16(), status, "{kind}");
            assert_eq!(headers[CONTENT_TYPE], PROBLEM_JSON);
            assert_eq!(body["type"], format!("urn:tidemark:problem:{kind}"));
            assert_eq!(body["status"], status);
            assert!(body["title"].is_string() && body["detail"].is_string());
        }
    }

    #[tokio::test]
    async fn hold_timeout_names_projection_vectors_and_retry_after() {
        let e = GatewayError::HoldTimeout {
            projection: "user-view".into(),
            required: PositionVector::parse("users=10", None).unwrap(),
            checkpoint: PositionVector::parse("users=7", None).unwrap(),
            waited: Duration::from_millis(300),
            retry_after: Duration::from_millis(1500),
        };
        let (status, headers, body) = render(e).await;
        assert_eq!(status, 503);
        assert_eq!(headers[RETRY_AFTER], "2");
        assert_eq!(body["projection"], "user-view");
        assert_eq!(body["required"], json!({"users": 10}));
        assert_eq!(body["checkpoint"], json!({"users": 7}));
        assert_eq!(body["retry_after_seconds"], 2);
        assert_eq!(body["retry_after_ms"], 1500);
    }

    #[tokio::test]
    async fn a_fraction_of_a_second_rounds_up_to_one_not_more() {
        let e = GatewayError::HoldTimeout {
            projection: "p".into(),
            required: PositionVector::parse("a=2", None).unwrap(),
            checkpoint: PositionVector::parse("a=1", None).unwrap(),
            waited: Duration::from_millis(200),
            retry_after: Duration::from_millis(300),
        };
        let (_, headers, body) = render(e).await;
        assert_eq!(headers[RETRY_AFTER], "1");
        assert_eq!(body["retry_after_ms"], 300);
    }
}
