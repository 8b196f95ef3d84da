//! The command service: appends to the `users` log, keeps the write model, and feeds
//! every projector. It is also the primary: `GET` answers from the write model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use tokio::sync::mpsc::UnboundedSender;

use super::model::{Command, Event, WriteModel};
use super::wire::{echo_min_position, error_response, parse_object, position_text, WRITE_POSITION};

/// The write side: the model plus one feed per projector.
#[derive(Debug)]
pub struct CommandSide {
    model: Mutex<WriteModel>,
    feeds: Vec<UnboundedSender<Arc<Event>>>,
    primary_reads: AtomicU64,
}

impl CommandSide {
    /// A write side with no users that sends each event to every feed, in order.
    pub fn new(feeds: Vec<UnboundedSender<Arc<Event>>>) -> Self {
        CommandSide {
            model: Mutex::new(WriteModel::default()),
            feeds,
            primary_reads: AtomicU64::new(0),
        }
    }

    /// The last position written.
    pub fn head(&self) -> u64 {
        self.model().head()
    }

    /// `GET /users/{id}` requests the command service answered.
    pub fn primary_reads(&self) -> u64 {
        self.primary_reads.load(Ordering::Relaxed)
    }

    /// Commits `command` and hands the event to every projector. The feeds are written
    /// under the model's lock, so every projector receives events in position order.
    fn append(&self, id: &str, command: Command) -> Arc<Event> {
        let mut model = self.model();
        let event = Arc::new(model.apply(id, command));
        for feed in &self.feeds {
            // A closed feed means that projector stopped (shutdown): nothing to do.
            let _ = feed.send(Arc::clone(&event));
        }
        event
    }

    fn model(&self) -> MutexGuard<'_, WriteModel> {
        // The model stays consistent even if a holder panicked: `apply` has no
        // partially applied state visible to others.
        self.model.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The command service's routes.
pub fn router(side: Arc<CommandSide>) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(get_user)
                .put(replace_user)
                .post(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .layer(middleware::from_fn(echo_min_position))
        .with_state(side)
}

async fn get_user(State(side): State<Arc<CommandSide>>, Path(id): Path<String>) -> Response {
    side.primary_reads.fetch_add(1, Ordering::Relaxed);
    let user = side.model().get(&id).cloned();
    match user {
        Some(user) => Json(user).into_response(),
        None => error_response(StatusCode::NOT_FOUND, "no such user"),
    }
}

async fn replace_user(
    State(side): State<Arc<CommandSide>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    write(&side, &id, &body, Command::Replace)
}

async fn patch_user(
    State(side): State<Arc<CommandSide>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    write(&side, &id, &body, Command::Merge)
}

async fn delete_user(State(side): State<Arc<CommandSide>>, Path(id): Path<String>) -> Response {
    let event = side.append(&id, Command::Delete);
    (
        StatusCode::NO_CONTENT,
        [(WRITE_POSITION, position_text(event.position))],
    )
        .into_response()
}

/// Parses the body, commits, and answers `200` with the user and `Write-Position`.
fn write(
    side: &CommandSide,
    id: &str,
    body: &[u8],
    command: fn(serde_json::Map<String, serde_json::Value>) -> Command,
) -> Response {
    let fields = match parse_object(body) {
        Ok(fields) => fields,
        Err(error) => {
            let message = match std::error::Error::source(&error) {
                Some(cause) => format!("{error}: {cause}"),
                None => error.to_string(),
            };
            return error_response(StatusCode::BAD_REQUEST, &message);
        }
    };
    let event = side.append(id, command(fields));
    (
        StatusCode::OK,
        [(WRITE_POSITION, position_text(event.position))],
        Json(event.state.clone()),
    )
        .into_response()
}
