//! HTTP pieces shared by the demo's command and read services: header names, JSON
//! error answers, and the `Consistency-Min-Position` echo.

use axum::extract::Request;
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::model::LOG;

/// The command service reports each write's position here (`users=<position>`).
pub const WRITE_POSITION: HeaderName = HeaderName::from_static("write-position");
/// Read instances report their checkpoint here when `checkpoint_header` is set.
pub const PROJECTION_CHECKPOINT: HeaderName = HeaderName::from_static("projection-checkpoint");
/// What the gateway sends to say which position a read requires.
pub const CONSISTENCY_MIN_POSITION: HeaderName =
    HeaderName::from_static("consistency-min-position");
/// The demo services echo [`CONSISTENCY_MIN_POSITION`] back under this name, so tests
/// can check what the gateway forwarded.
pub const SEEN_MIN_POSITION: HeaderName = HeaderName::from_static("seen-min-position");

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is not JSON.
    #[error("body is not valid JSON")]
    Json(#[source] serde_json::Error),
    /// The body is JSON but not an object.
    #[error("body must be a JSON object")]
    NotObject,
}

/// Parses a command body, which must be a JSON object.
pub fn parse_object(body: &[u8]) -> Result<Map<String, Value>, BodyError> {
    match serde_json::from_slice(body).map_err(BodyError::Json)? {
        Value::Object(fields) => Ok(fields),
        _ => Err(BodyError::NotObject),
    }
}

/// A short JSON error answer: `{"error": "..."}`.
pub fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The text `users=<position>` of a position header (a position vector over [`LOG`]).
pub fn position_text(position: u64) -> String {
    format!("{LOG}={position}")
}

/// Middleware: echoes the request's `Consistency-Min-Position` as `Seen-Min-Position`.
pub async fn echo_min_position(request: Request, next: Next) -> Response {
    let seen = request.headers().get(CONSISTENCY_MIN_POSITION).cloned();
    let mut response = next.run(request).await;
    if let Some(seen) = seen {
        response.headers_mut().insert(SEEN_MIN_POSITION, seen);
    }
    response
}
