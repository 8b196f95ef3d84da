//! `tidemark demo --nats URL`: the walkthrough against a real NATS server with
//! JetStream, with a command service that returns no `Write-Position` and a projector
//! that is a plain durable pull consumer. The gateway reads both positions from the
//! broker: a write **fence** on the stream (its last sequence, read after each write)
//! and the **`nats` checkpoint source** (the consumer's ack floor, every 20ms).
//!
//! The demo deletes and recreates the stream [`STREAM`] (subject [`SUBJECT`]) with
//! its durable consumer [`CONSUMER`]; it touches no other stream.
//!
//! - Command service: `PUT`/`POST`/`PATCH`/`DELETE /users/{id}` publishes the user's
//!   state after the command (`{"id": ..., "state": ... | null}`) and answers once
//!   the `PubAck` arrived (so the message is in the stream before the answer: what
//!   makes the fence right). One publish at a time, so a `PATCH` merges over the
//!   state published before it. `GET` answers from its own write model (the primary).
//! - Projector: applies each message `lag` after it was published, then acks it (ack
//!   after apply: the ack floor is the checkpoint).
//! - Read service: `GET /users/{id}` from the projector's model.
//!
//! A user's `version` is the stream sequence of its latest message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::model::{self, Command};
use super::walkthrough::{self, DemoError, DemoOptions, Gateway, Stage, Walked};
use super::wire::{echo_min_position, error_response, parse_object};
use crate::config::Config;

/// The stream the demo recreates.
pub const STREAM: &str = "TIDEMARK_DEMO";
/// Its one subject.
pub const SUBJECT: &str = "tidemark_demo.users";
/// The projector's durable consumer.
pub const CONSUMER: &str = "user-view";
/// The variable the gateway's `[nats] url_env` names (the URL may carry a password).
pub const URL_VAR: &str = "TIDEMARK_DEMO_NATS_URL";
/// How long the command service waits for a `PubAck`.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's config: `[nats]`, the `nats` source and a `nats_stream` fence.
/// Listeners and upstream URLs are set by [`demo_config`].
pub const GATEWAY_TOML: &str = r#"
[store]
backend = "memory"

# The broker; the URL comes from the variable (it may carry a password).
[nats]
url_env = "TIDEMARK_DEMO_NATS_URL"

[upstreams.user-commands]
url = "http://127.0.0.1:7001"

[upstreams.user-view]
url = "http://127.0.0.1:7002"

[projections.user-view]
logs = ["users"]
sources = ["nats"]

# The projector's durable consumer: its ack floor is the checkpoint (every 20ms).
[projections.user-view.nats]
stream = "TIDEMARK_DEMO"
consumer = "user-view"

# The command service answers no Write-Position (it waits for the PubAck before it
# answers): after each write the fence reads the stream's last sequence.
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT", "PATCH", "POST", "DELETE"]
path = "/users/{id}"
upstream = "user-commands"
default_log = "users"
fence = { nats_stream = "TIDEMARK_DEMO", log = "users" }

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{id}"
upstream = "user-view"
projection = "user-view"
max_wait = "2s"
on_timeout = "primary"
primary = "user-commands"
"#;

/// user id -> the user (stamped with the sequence of its latest message).
type Users = Arc<Mutex<HashMap<String, Value>>>;

fn users(model: &Users) -> std::sync::MutexGuard<'_, HashMap<String, Value>> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The demo's services on a JetStream stream.
#[derive(Debug)]
pub struct NatsBackend {
    /// Command service (also the primary: `GET` answers from its write model).
    pub command_addr: SocketAddr,
    /// Read service (the projector's model).
    pub read_addr: SocketAddr,
}

impl NatsBackend {
    /// Recreates [`STREAM`] and [`CONSUMER`] on the server at `url`, then starts the
    /// services on `127.0.0.1:0` and the projector (applying each message `lag` after
    /// it was published); all stop on `shutdown`.
    pub async fn start(
        url: &str,
        lag: Duration,
        shutdown: CancellationToken,
    ) -> Result<NatsBackend, DemoError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("cannot connect to the NATS server given by --nats: {e}"))?;
        let js = jetstream::new(client);
        // "Stream not found" on the first run; any other trouble shows when creating.
        let _ = js.delete_stream(STREAM).await;
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                ..Default::default()
            })
            .await
            .map_err(|e| {
                format!("cannot create the stream {STREAM} (is JetStream enabled: nats-server -js?): {e}")
            })?;
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5).max(lag * 4),
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot create the consumer {CONSUMER}: {e}"))?;

        let view = Users::default();
        tokio::spawn(project(consumer, view.clone(), lag, shutdown.clone()));
        let side = Arc::new(CommandSide {
            js,
            written: Users::default(),
            publishing: tokio::sync::Mutex::new(()),
        });
        let command = TcpListener::bind("127.0.0.1:0").await?;
        let read = TcpListener::bind("127.0.0.1:0").await?;
        let backend = NatsBackend {
            command_addr: command.local_addr()?,
            read_addr: read.local_addr()?,
        };
        walkthrough::serve_service(command, command_router(side), &shutdown);
        walkthrough::serve_service(
            read,
            Router::new()
                .route("/users/{id}", get(read_user))
                .layer(middleware::from_fn(echo_min_position))
                .with_state(view),
            &shutdown,
        );
        Ok(backend)
    }
}

struct CommandSide {
    js: jetstream::Context,
    /// The write model: every user as last published.
    written: Users,
    /// Held across a publish and its `PubAck`: one write at a time.
    publishing: tokio::sync::Mutex<()>,
}

fn command_router(side: Arc<CommandSide>) -> Router {
    Router::new()
        .route(
            "/users/{id}",
            get(primary_get)
                .put(replace_user)
                .post(replace_user)
                .patch(patch_user)
                .delete(delete_user),
        )
        .layer(middleware::from_fn(echo_min_position))
        .with_state(side)
}

async fn primary_get(State(side): State<Arc<CommandSide>>, Path(id): Path<String>) -> Response {
    read_user(State(side.written.clone()), Path(id)).await
}

async fn read_user(State(model): State<Users>, Path(id): Path<String>) -> Response {
    let user = users(&model).get(&id).cloned();
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
    write(&side, &id, Some((&body, Command::Replace))).await
}

async fn patch_user(
    State(side): State<Arc<CommandSide>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    write(&side, &id, Some((&body, Command::Merge))).await
}

async fn delete_user(State(side): State<Arc<CommandSide>>, Path(id): Path<String>) -> Response {
    write(&side, &id, None).await
}

type MakeCommand = fn(serde_json::Map<String, Value>) -> Command;

/// Publishes the user's new state, waits for the `PubAck`, and answers `200` with
/// the user (`204` for a delete), with no `Write-Position`.
async fn write(side: &CommandSide, id: &str, command: Option<(&[u8], MakeCommand)>) -> Response {
    let command = match command {
        None => Command::Delete,
        Some((body, make)) => match parse_object(body) {
            Ok(fields) => make(fields),
            Err(error) => {
                let message = match std::error::Error::source(&error) {
                    Some(cause) => format!("{error}: {cause}"),
                    None => error.to_string(),
                };
                return error_response(StatusCode::BAD_REQUEST, &message);
            }
        },
    };
    let _one_at_a_time = side.publishing.lock().await;
    let previous = users(&side.written).get(id).cloned();
    let state = model::next_state(previous, command);
    let payload = json!({ "id": id, "state": state }).to_string();
    let ack = async {
        side.js
            .publish(SUBJECT, payload.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    };
    let sequence = match tokio::time::timeout(PUBLISH_TIMEOUT, ack).await {
        Ok(Ok(ack)) => ack.sequence,
        Ok(Err(e)) => {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("publish: {e}"))
        }
        Err(_) => {
            return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "publish: no PubAck within 2s",
            )
        }
    };
    // The write did happen: the message is in the stream.
    let user = state.map(|user| model::stamp(user, id, sequence));
    let mut written = users(&side.written);
    match &user {
        Some(user) => written.insert(id.to_string(), user.clone()),
        None => written.remove(id),
    };
    drop(written);
    match user {
        Some(user) => Json(user).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

/// The projector: applies each message `lag` after it was published, then acks it.
/// Applies are idempotent by sequence (a redelivery never overwrites a newer
/// state). Subscribes again after an error.
async fn project(
    consumer: jetstream::consumer::PullConsumer,
    view: Users,
    lag: Duration,
    shutdown: CancellationToken,
) {
    let mut applied: HashMap<String, u64> = HashMap::new();
    while !shutdown.is_cancelled() {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(error) => {
                tracing::debug!(%error, "demo projector: cannot subscribe");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let Some(Ok(message)) = next else { break };
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let due = SystemTime::from(info.published) + lag;
            let wait = due.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
            if let Ok(event) = serde_json::from_slice::<Value>(&message.payload) {
                if let Some(id) = event["id"].as_str() {
                    if applied.get(id).is_none_or(|&seen| seen < sequence) {
                        applied.insert(id.to_string(), sequence);
                        let mut model = users(&view);
                        match &event["state"] {
                            Value::Null => model.remove(id),
                            state => model
                                .insert(id.to_string(), model::stamp(state.clone(), id, sequence)),
                        };
                    }
                }
            }
            // Ack after apply: the consumer's ack floor is the projector's checkpoint.
            let _ = message.ack().await;
        }
    }
}

/// The gateway's config for a running backend: [`GATEWAY_TOML`] with the listeners,
/// the services' URLs and the broker's URL (through [`URL_VAR`]).
pub fn demo_config(
    backend: &NatsBackend,
    url: &str,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Config, DemoError> {
    walkthrough::gateway_config(
        GATEWAY_TOML,
        "demo --nats",
        (listen, admin_listen),
        backend.command_addr,
        ("TIDEMARK__UPSTREAMS__USER-VIEW__URL", backend.read_addr),
        &[(URL_VAR, url)],
    )
}

/// Runs the walkthrough against the NATS server at `url` (see the module docs) until
/// `shutdown`, or, with `once`, until it ends; returns what it saw.
pub async fn run(
    opts: DemoOptions,
    url: &str,
    shutdown: CancellationToken,
) -> Result<Walked, DemoError> {
    let admin = walkthrough::bind(opts.admin_listen, "admin listener", "--admin-listen").await?;
    let admin_addr = admin.local_addr()?;
    let backend = NatsBackend::start(url, opts.lag, shutdown.child_token()).await?;
    let config = demo_config(&backend, url, opts.listen, admin_addr)?;
    let gateway = Gateway::start(config, admin, &shutdown).await?;
    let stage = Stage {
        title: format!(
            "tidemark demo on NATS JetStream (stream {STREAM}): projection lag {:?}",
            opts.lag
        ),
        gateway: gateway.addr,
        admin: admin_addr,
        command: backend.command_addr,
        read: backend.read_addr,
        lag: opts.lag,
        notes: vec![
            format!("positions      no Write-Position: the gateway's fence reads stream {STREAM}'s last sequence after each write;"),
            format!("               the durable consumer {CONSUMER}'s ack floor is the checkpoint (read every 20ms)"),
        ],
    };
    let walked = walkthrough::walk(&stage).await;
    gateway.finish(walked, opts.once, &shutdown).await
}
