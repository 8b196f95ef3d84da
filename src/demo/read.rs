//! A read service instance: answers `GET /users/{id}` from its read model and
//! `GET /checkpoint` for the gateway's poll source.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::json;

use super::instance::ReadInstance;
use super::model::LOG;
use super::wire::{echo_min_position, error_response, position_text, PROJECTION_CHECKPOINT};

#[derive(Debug, Clone)]
struct ReadService {
    instance: Arc<ReadInstance>,
    checkpoint_header: bool,
}

/// The routes of one read instance; with `checkpoint_header`, every answer carries
/// `Projection-Checkpoint: users=<checkpoint>` (the checkpoint of the data served).
pub fn router(instance: Arc<ReadInstance>, checkpoint_header: bool) -> Router {
    Router::new()
        .route("/users/{id}", get(get_user))
        .route("/checkpoint", get(get_checkpoint))
        .layer(middleware::from_fn(echo_min_position))
        .with_state(ReadService {
            instance,
            checkpoint_header,
        })
}

async fn get_user(State(service): State<ReadService>, Path(id): Path<String>) -> Response {
    service.instance.count_served();
    let (checkpoint, user) = service.instance.lookup(&id);
    let response = match user {
        Some(user) => Json(user).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "no such user"),
    };
    service.with_checkpoint(response, checkpoint)
}

async fn get_checkpoint(State(service): State<ReadService>) -> Response {
    let checkpoint = service.instance.checkpoint();
    service.with_checkpoint(Json(json!({ LOG: checkpoint })).into_response(), checkpoint)
}

impl ReadService {
    fn with_checkpoint(&self, response: Response, checkpoint: u64) -> Response {
        if self.checkpoint_header {
            (
                [(PROJECTION_CHECKPOINT, position_text(checkpoint))],
                response,
            )
                .into_response()
        } else {
            response
        }
    }
}
