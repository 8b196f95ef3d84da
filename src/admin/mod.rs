//! The admin listener: `GET /healthz`, `GET /readyz`, `GET /metrics`, `GET /projections`,
//! `POST /reload` (see [`crate::reload`]),
//! `PUT|DELETE /projections/{name}/checkpoint[?instance=ID]` (the `push` source and the
//! reset for rebuilt projections), and the status page (`GET /`, its script
//! `GET /status.js` and the JSON it polls, `GET /status`).

pub mod history;
mod page;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use bytes::Bytes;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Projection;
use crate::config::SourceKind;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::position::PositionVector;

/// What the admin handlers share.
#[derive(Clone)]
pub struct AdminState {
    pub gateway: Arc<Gateway>,
    pub prometheus: Option<PrometheusHandle>,
    /// Cancelled when the gateway begins shutting down (readiness turns false).
    pub shutdown: CancellationToken,
    /// `POST /reload`; `None` when the gateway was started without a config file.
    pub reload: Option<crate::reload::ReloadHandle>,
    /// The status page's recent samples; one for the process, kept across reloads.
    pub history: Arc<history::History>,
}

/// The admin API's routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .merge(page::routes(&state))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/projections", get(projections))
        .route(
            "/projections/{name}/checkpoint",
            put(push_checkpoint).delete(reset_checkpoint),
        )
        .route("/reload", axum::routing::post(reload))
        .fallback(|| async { GatewayError::NotFound("no such admin endpoint".into()) })
        .with_state(state)
}

async fn readyz(State(s): State<AdminState>) -> Response {
    let store = match &s.gateway.store {
        None => "memory",
        Some(r) if r.healthy() => "ok",
        Some(_) => "degraded",
    };
    let mut body = json!({"status": "ready", "store": store});
    // `[nats]`: `ok` while connected, `degraded` while (re)connecting.
    if let Some(nats) = &s.gateway.nats {
        body["nats"] = nats.health().as_str().into();
    }
    // `[kafka]`: `ok` while the latest request (or health probe) was answered.
    if let Some(kafka) = &s.gateway.kafka {
        body["kafka"] = kafka.health().as_str().into();
    }
    // Each `[databases.NAME]`: `idle` (not queried yet), `ok` or `degraded`.
    if !s.gateway.databases.is_empty() {
        let dbs: serde_json::Map<String, serde_json::Value> = s
            .gateway
            .databases
            .iter()
            .map(|(name, db)| (name.clone(), db.health().as_str().into()))
            .collect();
        body["databases"] = dbs.into();
    }
    if s.shutdown.is_cancelled() {
        body["status"] = "shutting_down".into();
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    // A degraded Redis, database or NATS does not make the gateway unready: it still
    // serves (reads from its local checkpoints, writes without the shared cache or a
    // fence), and every gateway shares them, so failing readiness would take the whole
    // fleet out at once.
    Json(body).into_response()
}

async fn metrics_text(State(s): State<AdminState>) -> Response {
    let now = Instant::now();
    for p in s.gateway.registry.projections() {
        metrics::gauge!("tidemark_held_reads", "projection" => p.name().to_string())
            .set(p.held() as f64);
        for (name, lag) in p.instances().iter().zip(p.lags(now)) {
            metrics::gauge!("tidemark_projection_lag_seconds", "projection" => p.name().to_string(), "instance" => name.clone()).set(lag.as_secs_f64());
        }
    }
    match &s.prometheus {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render() + &crate::telemetry::process::ProcessStats::read().render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}

/// `GET /projections`: per projection and instance, checkpoint, lag, held reads.
pub fn projections_json(gateway: &Gateway) -> serde_json::Value {
    let now = Instant::now();
    let mut out = BTreeMap::new();
    for p in gateway.registry.projections() {
        let cps = p.checkpoints();
        let lags = p.lags(now);
        let instances: BTreeMap<&str, serde_json::Value> = p
            .instances()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let lag = lags.get(i).map(|l| l.as_secs_f64()).unwrap_or(0.0);
                (
                    name.as_str(),
                    json!({"checkpoint": cps.get(i), "lag_seconds": lag}),
                )
            })
            .collect();
        out.insert(
            p.name().to_string(),
            json!({"logs": p.logs(), "held_reads": p.held(), "instances": instances}),
        );
    }
    json!({"projections": out, "held_reads_total": gateway.registry.held_total()})
}

async fn projections(State(s): State<AdminState>) -> Json<serde_json::Value> {
    Json(projections_json(&s.gateway))
}

#[derive(Debug, Deserialize)]
struct InstanceQuery {
    instance: Option<String>,
}

fn authorize(s: &AdminState, headers: &HeaderMap) -> Result<(), GatewayError> {
    let Some(expected) = &s.gateway.config.admin.token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(GatewayError::Unauthorized),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn target(
    s: &AdminState,
    name: &str,
    instance: Option<&str>,
) -> Result<(Arc<Projection>, Option<usize>), GatewayError> {
    let projection = s
        .gateway
        .registry
        .get(name)
        .ok_or_else(|| GatewayError::NotFound(format!("no projection named {name:?}")))?
        .clone();
    let index = match instance {
        None => None,
        Some(i) => Some(projection.instance_index(i).ok_or_else(|| {
            GatewayError::NotFound(format!(
                "projection {name:?} has no instance {i:?} (instances: {})",
                projection.instances().join(", ")
            ))
        })?),
    };
    Ok((projection, index))
}

/// Parses a pushed checkpoint: a JSON object `{"users": 1234}` or the text form.
pub fn parse_checkpoint(
    body: &[u8],
    projection: &Projection,
) -> Result<PositionVector, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| GatewayError::BadRequest("checkpoint body is not UTF-8".into()))?
        .trim();
    let parsed = if text.starts_with('{') {
        let map: BTreeMap<String, u64> = serde_json::from_str(text).map_err(|e| {
            GatewayError::BadRequest(format!(
                "checkpoint body is not a JSON object of log -> position (whole numbers): {e}"
            ))
        })?;
        PositionVector::from_map(map)
    } else {
        let default_log = (projection.logs().len() == 1).then(|| projection.logs()[0].as_str());
        PositionVector::parse(text, default_log)
    };
    let cp = parsed.map_err(|e| GatewayError::BadRequest(format!("bad checkpoint: {e}")))?;
    if let Some((log, _)) = cp
        .iter()
        .find(|(l, _)| !projection.logs().iter().any(|p| p == l))
    {
        return Err(GatewayError::BadRequest(format!(
            "projection {:?} does not consume log {log:?} (its logs: {})",
            projection.name(),
            projection.logs().join(", ")
        )));
    }
    Ok(cp)
}

async fn push_checkpoint(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<InstanceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, GatewayError> {
    authorize(&s, &headers)?;
    let (projection, index) = target(&s, &name, q.instance.as_deref())?;
    if !s.gateway.registry.listens(&name, SourceKind::Push) {
        let sources = s
            .gateway
            .config
            .projections
            .get(&name)
            .map(|p| {
                p.sources
                    .iter()
                    .map(|s| format!("{:?}", s.as_str()))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        return Err(GatewayError::SourceNotEnabled {
            projection: name,
            sources,
        });
    }
    let cp = parse_checkpoint(&body, &projection)?;
    let applied = projection.apply(index, &cp, SourceKind::Push, Instant::now());
    if applied.regressed {
        metrics::counter!("tidemark_checkpoint_regressions_total", "projection" => name.clone())
            .increment(1);
    }
    let shared = s.gateway.registry.listens(&name, SourceKind::Redis);
    if let (Some(store), true) = (&s.gateway.store, shared) {
        // Written through (for projections with the `redis` source) so every gateway
        // sees it; a Redis failure still leaves this
        // gateway's reads released, and the store republishes when Redis returns.
        if let Err(e) = store
            .push_checkpoint(&name, q.instance.as_deref(), &cp)
            .await
        {
            // Counted (`op="push"`) and logged once per burst by the store.
            tracing::debug!(projection = %name, error = %e, "checkpoint not written through to redis");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn reset_checkpoint(
    State(s): State<AdminState>,
    Path(name): Path<String>,
    Query(q): Query<InstanceQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, GatewayError> {
    authorize(&s, &headers)?;
    let (projection, index) = target(&s, &name, q.instance.as_deref())?;
    projection.reset(index);
    tracing::info!(projection = %name, instance = ?q.instance, "checkpoint reset by the admin API");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /reload`: re-reads the config file and swaps the new config in; `400` with
/// every error when it does not load (the old config keeps serving).
async fn reload(
    State(s): State<AdminState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, GatewayError> {
    authorize(&s, &headers)?;
    let Some(handle) = &s.reload else {
        return Err(GatewayError::NotFound(
            "this gateway was started without a config file; nothing to reload".into(),
        ));
    };
    match handle.reload().await {
        Ok(outcome) => Ok(Json(outcome.to_json())),
        Err(errors) => Err(GatewayError::ReloadFailed { errors }),
    }
}
