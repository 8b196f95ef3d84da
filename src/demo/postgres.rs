//! `tidemark demo --postgres URL`: the walkthrough against a real PostgreSQL, with a
//! command service that returns no `Write-Position` and a projector that records its
//! checkpoint in a table, as most apps already do. The gateway reads both positions
//! from the database: a write **fence** (the highest committed event position, read
//! after each write) and the **`postgres` checkpoint source** (the projector's row in
//! `checkpoints`, every 10ms and at once on the projector's `NOTIFY`).
//!
//! Everything lives in the schema [`SCHEMA`], dropped and recreated at start; the
//! demo touches nothing else in the database:
//!
//! | table | what |
//! |---|---|
//! | `events(position bigserial, user_id, state jsonb, committed_at)` | the `users` log; `state` is the user after the event (`NULL`: deleted) |
//! | `users(id, body jsonb)` | the read model the read service answers from |
//! | `checkpoints(projection, position)` | the projector's progress, committed with the read model |
//!
//! The command service appends one event at a time (one connection behind a lock), so
//! positions commit in order and the log has no gaps a reader could skip. The
//! projector applies every event committed at least `lag` ago, then writes its
//! checkpoint and `NOTIFY tidemark_demo` in the same transaction. Services answer as
//! the embedded demo's do (see [`super`]), without `Write-Position` and without
//! `Projection-Checkpoint`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

use super::model::{self, Command, LOG};
use super::walkthrough::{self, DemoError, DemoOptions, Gateway, Stage, Walked};
use super::wire::{echo_min_position, error_response, parse_object};
use crate::config::Config;

/// The schema the demo creates (and drops first).
pub const SCHEMA: &str = "tidemark_demo";
/// The channel the projector notifies after each commit (the source's `listen`).
pub const CHANNEL: &str = "tidemark_demo";
/// The variable the gateway's `[databases.demo] url_env` names: the demo hands the
/// URL to the gateway through it, so a password never appears in a config.
pub const URL_VAR: &str = "TIDEMARK_DEMO_POSTGRES_URL";
/// How often the projector looks for events old enough to apply.
const PROJECTOR_POLL: Duration = Duration::from_millis(5);
/// Events the projector applies per transaction at most.
const BATCH: i64 = 500;

const SETUP: &str = "
DROP SCHEMA IF EXISTS tidemark_demo CASCADE;
CREATE SCHEMA tidemark_demo;
CREATE TABLE tidemark_demo.events (
    position bigserial PRIMARY KEY,
    user_id text NOT NULL,
    state jsonb,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_by_user ON tidemark_demo.events (user_id, position DESC);
CREATE TABLE tidemark_demo.users (id text PRIMARY KEY, body jsonb NOT NULL);
CREATE TABLE tidemark_demo.checkpoints (projection text PRIMARY KEY, position bigint NOT NULL);
INSERT INTO tidemark_demo.checkpoints (projection, position) VALUES ('user-view', 0);
";

/// The gateway's config: `[databases.demo]`, the `postgres` source and a fence.
/// Listeners and upstream URLs are set by [`demo_config`].
pub const GATEWAY_TOML: &str = r#"
[store]
backend = "memory"

# The database the demo writes to; the URL comes from the variable (it may carry a
# password, which a config file must not).
[databases.demo]
url_env = "TIDEMARK_DEMO_POSTGRES_URL"

[upstreams.user-commands]
url = "http://127.0.0.1:7001"

[upstreams.user-view]
url = "http://127.0.0.1:7002"

[projections.user-view]
logs = ["users"]
sources = ["postgres"]

# The projector's own progress row, every 10ms and at once on its NOTIFY.
[projections.user-view.postgres]
database = "demo"
query = "SELECT 'users'::text, position FROM tidemark_demo.checkpoints WHERE projection = 'user-view'"
listen = "tidemark_demo"

# The command service answers no Write-Position: after each write the fence reads
# the head of the log, and that becomes the write's position in the token.
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT", "PATCH", "POST", "DELETE"]
path = "/users/{id}"
upstream = "user-commands"
default_log = "users"
fence = { database = "demo", query = "SELECT 'users'::text, COALESCE(max(position), 0) FROM tidemark_demo.events", log = "users" }

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

/// The demo's services on a PostgreSQL database.
#[derive(Debug)]
pub struct PgBackend {
    /// Command service (also the primary: `GET` reads the latest event).
    pub command_addr: SocketAddr,
    /// Read service (the projector's `users` table).
    pub read_addr: SocketAddr,
}

impl PgBackend {
    /// Recreates [`SCHEMA`] on `url`, then starts the services on `127.0.0.1:0` and
    /// the projector (applying events `lag` after they committed); all stop on
    /// `shutdown`.
    pub async fn start(
        url: &str,
        lag: Duration,
        shutdown: CancellationToken,
    ) -> Result<PgBackend, DemoError> {
        let admin = connect(url).await?;
        admin
            .batch_execute(SETUP)
            .await
            .map_err(|e| format!("cannot create the schema {SCHEMA}: {}", cause(&e)))?;
        let side = Arc::new(CommandSide {
            writer: Conn::new(url),
            reader: Conn::new(url),
        });
        let view = Arc::new(Conn::new(url));
        let command = TcpListener::bind("127.0.0.1:0").await?;
        let read = TcpListener::bind("127.0.0.1:0").await?;
        let backend = PgBackend {
            command_addr: command.local_addr()?,
            read_addr: read.local_addr()?,
        };
        walkthrough::serve_service(command, command_router(side), &shutdown);
        walkthrough::serve_service(read, read_router(view), &shutdown);
        tokio::spawn(project(url.to_string(), lag, shutdown));
        Ok(backend)
    }
}

/// Connects, or says why not (without the URL, which may hold a password).
async fn connect(url: &str) -> Result<Client, DemoError> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.map_err(|e| {
        format!(
            "cannot connect to the PostgreSQL given by --postgres: {}",
            cause(&e)
        )
    })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "demo database connection ended");
        }
    });
    Ok(client)
}

/// A tokio-postgres error with its cause (its `Display` alone often says only "db error").
fn cause(e: &tokio_postgres::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// One connection, opened again after it closed (a restarted database).
struct Conn {
    url: String,
    client: tokio::sync::Mutex<Option<Arc<Client>>>,
}

impl Conn {
    fn new(url: &str) -> Conn {
        Conn {
            url: url.to_string(),
            client: tokio::sync::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<Arc<Client>, DemoError> {
        let mut slot = self.client.lock().await;
        match slot.as_ref() {
            Some(client) if !client.is_closed() => Ok(client.clone()),
            _ => {
                let client = Arc::new(connect(&self.url).await?);
                *slot = Some(client.clone());
                Ok(client)
            }
        }
    }
}

/// The command service's connections: `writer` appends one event at a time (its lock
/// is held across the append, so positions commit in order); `reader` answers the
/// primary's `GET`s.
struct CommandSide {
    writer: Conn,
    reader: Conn,
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

fn unavailable(e: impl std::fmt::Display) -> Response {
    error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("database: {e}"))
}

/// The user's latest state in the log, stamped with its position; `None` when it
/// never existed or its latest event deleted it.
async fn latest(client: &Client, id: &str) -> Result<Option<Value>, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT position, state::text FROM tidemark_demo.events WHERE user_id = $1 ORDER BY position DESC LIMIT 1",
            &[&id],
        )
        .await?;
    Ok(row.and_then(|row| {
        let position: i64 = row.get(0);
        let state: Option<String> = row.get(1);
        let state = serde_json::from_str(&state?).ok()?;
        Some(model::stamp(state, id, position as u64))
    }))
}

async fn primary_get(State(side): State<Arc<CommandSide>>, Path(id): Path<String>) -> Response {
    let client = match side.reader.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    match latest(&client, &id).await {
        Ok(Some(user)) => Json(user).into_response(),
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such user"),
        Err(e) => unavailable(cause(&e)),
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

/// Appends the event and answers `200` with the user (`204` for a delete), with no
/// `Write-Position`: the gateway's fence finds the position.
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
    // One append at a time: the lock is the writer connection's.
    let mut slot = side.writer.client.lock().await;
    let client = match slot.as_ref() {
        Some(c) if !c.is_closed() => c.clone(),
        _ => match connect(&side.writer.url).await {
            Ok(c) => {
                let c = Arc::new(c);
                *slot = Some(c.clone());
                c
            }
            Err(e) => return unavailable(e),
        },
    };
    let previous = match &command {
        Command::Merge(_) => match latest(&client, id).await {
            Ok(user) => user,
            Err(e) => return unavailable(cause(&e)),
        },
        _ => None,
    };
    let state = model::next_state(previous, command);
    let text = state.as_ref().map(Value::to_string);
    let appended = client
        .query_one(
            "INSERT INTO tidemark_demo.events (user_id, state) VALUES ($1, $2::text::jsonb) RETURNING position",
            &[&id, &text],
        )
        .await;
    drop(slot);
    let position: i64 = match appended {
        Ok(row) => row.get(0),
        Err(e) => return unavailable(cause(&e)),
    };
    match state {
        Some(user) => Json(model::stamp(user, id, position as u64)).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    }
}

fn read_router(view: Arc<Conn>) -> Router {
    Router::new()
        .route("/users/{id}", get(read_user))
        .layer(middleware::from_fn(echo_min_position))
        .with_state(view)
}

async fn read_user(State(view): State<Arc<Conn>>, Path(id): Path<String>) -> Response {
    let client = match view.get().await {
        Ok(c) => c,
        Err(e) => return unavailable(e),
    };
    let row = client
        .query_opt(
            "SELECT body::text FROM tidemark_demo.users WHERE id = $1",
            &[&id],
        )
        .await;
    match row {
        Ok(Some(row)) => {
            let body: String = row.get(0);
            match serde_json::from_str::<Value>(&body) {
                Ok(user) => Json(user).into_response(),
                Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            }
        }
        Ok(None) => error_response(StatusCode::NOT_FOUND, "no such user"),
        Err(e) => unavailable(cause(&e)),
    }
}

/// The projector: every [`PROJECTOR_POLL`], applies the events committed at least
/// `lag` ago to `users` and records the last one in `checkpoints`, with a `NOTIFY`,
/// in one transaction. A failed round (the database restarting) is retried.
async fn project(url: String, lag: Duration, shutdown: CancellationToken) {
    let lag_us = i64::try_from(lag.as_micros()).unwrap_or(i64::MAX);
    let conn = Conn::new(&url);
    let mut last: Option<i64> = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(PROJECTOR_POLL) => {}
        }
        let Ok(client) = conn.get().await else {
            continue;
        };
        match apply_due(&client, last, lag_us).await {
            Ok(position) => last = Some(position),
            Err(error) => tracing::debug!(%error, "demo projector round failed"),
        }
    }
}

/// One projector round; returns the checkpoint after it.
async fn apply_due(
    client: &Client,
    last: Option<i64>,
    lag_us: i64,
) -> Result<i64, tokio_postgres::Error> {
    let last = match last {
        Some(p) => p,
        None => client
            .query_one(
                "SELECT position FROM tidemark_demo.checkpoints WHERE projection = 'user-view'",
                &[],
            )
            .await?
            .get(0),
    };
    let due = client
        .query(
            "SELECT position, user_id, state::text FROM tidemark_demo.events
             WHERE position > $1 AND committed_at <= clock_timestamp() - $2::bigint * interval '1 microsecond'
             ORDER BY position LIMIT $3",
            &[&last, &lag_us, &BATCH],
        )
        .await?;
    let Some(newest) = due.last().map(|row| row.get::<_, i64>(0)) else {
        return Ok(last);
    };
    let statements: Vec<(String, Option<String>)> = due
        .iter()
        .map(|row| {
            let position: i64 = row.get(0);
            let id: String = row.get(1);
            let state: Option<String> = row.get(2);
            let body = state
                .and_then(|s| serde_json::from_str::<Value>(&s).ok())
                .map(|user| model::stamp(user, &id, position as u64).to_string());
            (id, body)
        })
        .collect();
    // The projector's own connection: a transaction by hand (the client is shared
    // behind an `Arc`, and `Client::transaction` wants it `&mut`).
    let transaction_client = client;
    transaction_client.batch_execute("BEGIN").await?;
    let applied = async {
        for (id, body) in &statements {
            match body {
                Some(body) => {
                    transaction_client
                        .execute(
                            "INSERT INTO tidemark_demo.users (id, body) VALUES ($1, $2::text::jsonb)
                             ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                            &[id, body],
                        )
                        .await?;
                }
                None => {
                    transaction_client
                        .execute("DELETE FROM tidemark_demo.users WHERE id = $1", &[id])
                        .await?;
                }
            }
        }
        transaction_client
            .execute(
                "UPDATE tidemark_demo.checkpoints SET position = $1 WHERE projection = 'user-view'",
                &[&newest],
            )
            .await?;
        transaction_client
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &LOG])
            .await?;
        transaction_client.batch_execute("COMMIT").await
    }
    .await;
    if let Err(e) = applied {
        let _ = transaction_client.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    Ok(newest)
}

/// The gateway's config for a running backend: [`GATEWAY_TOML`] with the listeners,
/// the services' URLs and the database URL (through [`URL_VAR`]).
pub fn demo_config(
    backend: &PgBackend,
    url: &str,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Config, DemoError> {
    walkthrough::gateway_config(
        GATEWAY_TOML,
        "demo --postgres",
        (listen, admin_listen),
        backend.command_addr,
        ("TIDEMARK__UPSTREAMS__USER-VIEW__URL", backend.read_addr),
        &[(URL_VAR, url)],
    )
}

/// Runs the walkthrough against the PostgreSQL at `url` (see the module docs) until
/// `shutdown`, or, with `once`, until it ends; returns what it saw.
pub async fn run(
    opts: DemoOptions,
    url: &str,
    shutdown: CancellationToken,
) -> Result<Walked, DemoError> {
    let admin = walkthrough::bind(opts.admin_listen, "admin listener", "--admin-listen").await?;
    let admin_addr = admin.local_addr()?;
    let backend = PgBackend::start(url, opts.lag, shutdown.child_token()).await?;
    let config = demo_config(&backend, url, opts.listen, admin_addr)?;
    let gateway = Gateway::start(config, admin, &shutdown).await?;
    let stage = Stage {
        title: format!(
            "tidemark demo on PostgreSQL (schema {SCHEMA}): projection lag {:?}",
            opts.lag
        ),
        gateway: gateway.addr,
        admin: admin_addr,
        command: backend.command_addr,
        read: backend.read_addr,
        lag: opts.lag,
        notes: vec![
            "positions      no Write-Position: the gateway's fence reads max(position) of tidemark_demo.events after each write;".into(),
            "               the projector's row in tidemark_demo.checkpoints is the checkpoint (read every 10ms, and on NOTIFY tidemark_demo)".into(),
        ],
    };
    let walked = walkthrough::walk(&stage).await;
    gateway.finish(walked, opts.once, &shutdown).await
}
