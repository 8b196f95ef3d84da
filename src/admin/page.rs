//! The status page: `GET /` (HTML), `GET /status.js` (its script), and `GET /status`
//! (the JSON the script polls every second: projections, instances, checkpoints,
//! held reads, the last ten minutes of lag, the recent hold timeouts).
//!
//! Self-contained: the HTML and script are compiled into the binary (`page.html`,
//! `page.js`), nothing is fetched from elsewhere, so it works offline. The script
//! writes data into the page only as text (`textContent`, SVG attributes), never as
//! markup, and the page's `Content-Security-Policy` allows no inline or foreign script.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Extension, Json, Router};
use serde_json::json;

use super::history::{History, Sample};
use super::{projections_json, AdminState};

const PAGE_HTML: &str = include_str!("page.html");
const PAGE_JS: &str = include_str!("page.js");

/// Same-origin only, no inline script, no plugins, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; connect-src 'self'; \
                   style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; \
                   form-action 'none'; frame-ancestors 'none'";

/// The status page's routes, reading the history `serve` samples into.
pub(super) fn routes(state: &AdminState) -> Router<AdminState> {
    let history = state.history.clone();
    Router::new()
        .route("/", get(page))
        .route("/status.js", get(script))
        .route("/status", get(status))
        .layer(Extension(history))
}

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        PAGE_JS,
    )
}

/// `GET /status`: `/projections`' figures plus `history` (see
/// [`History::columns`], the current figures appended), `timeouts`
/// (`{"total", "recent": [{at_unix_ms, route, projection, action, waited_ms}]}`) and
/// `routes` (per route, see [`crate::gateway::Gateway::route_stats`]).
async fn status(
    State(s): State<AdminState>,
    Extension(history): Extension<Arc<History>>,
) -> impl IntoResponse {
    let mut body = projections_json(&s.gateway);
    let now = Sample::take(&s.gateway);
    let (recent, total) = s.gateway.recent_timeouts.snapshot();
    body["now_unix_ms"] = json!(now.at_unix_ms);
    body["history"] = history.columns(Some(now));
    body["timeouts"] = json!({"total": total, "recent": recent});
    body["routes"] = s.gateway.route_stats();
    ([(header::CACHE_CONTROL, "no-store")], Json(body))
}
