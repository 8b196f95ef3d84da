//! A small event-sourced app on a real PostgreSQL, in a framework's table layout,
//! that returns no `Write-Position`: a command service (appends an event), a
//! projector task (applies events to `users` and records its checkpoint in the
//! framework's progress table, in one transaction, every `PROJECTOR_INTERVAL`),
//! and a read service (`GET /users/{id}` from `users`).
//!
//! Appends are serialized (one connection behind a mutex) so the log's order is
//! its commit order, as the frameworks' own high-water-mark logic guarantees.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// How often the projector catches up: reads straight after a write are stale.
pub const PROJECTOR_INTERVAL: Duration = Duration::from_millis(100);

/// One framework's layout and statements.
#[derive(Clone, Copy)]
pub struct Layout {
    /// Creates the framework's tables (as its migrations do) and `users`.
    pub setup: &'static str,
    /// Appends one event: `$1` user id, `$2` name.
    pub append: &'static str,
    /// Events after `$1`: rows of (position bigint, user text, name text).
    pub since: &'static str,
    /// Records the checkpoint `$1` (bigint).
    pub mark: &'static str,
    /// The primary's answer: user `$1`'s latest name, from the write side.
    pub latest: &'static str,
}

const USERS: &str = "CREATE TABLE users (id text PRIMARY KEY, name text NOT NULL);";

/// Marten: `mt_events` numbered by `mt_events_sequence`; progress in
/// `mt_event_progression` (Marten's EventProgressionTable), shard `User:All`.
pub const MARTEN: Layout = Layout {
    setup: "CREATE SEQUENCE public.mt_events_sequence;
        CREATE TABLE public.mt_events (seq_id bigint PRIMARY KEY, id uuid NOT NULL, stream_id uuid, version integer NOT NULL, data jsonb NOT NULL, type varchar(500) NOT NULL, timestamp timestamptz DEFAULT now() NOT NULL);
        CREATE TABLE public.mt_event_progression (name varchar PRIMARY KEY, last_seq_id bigint NULL, last_updated timestamp with time zone DEFAULT (transaction_timestamp()));",
    append: "INSERT INTO public.mt_events (seq_id, id, stream_id, version, data, type) VALUES (nextval('public.mt_events_sequence'), gen_random_uuid(), gen_random_uuid(), 1, jsonb_build_object('user', $1::text, 'name', $2::text), 'user_renamed')",
    since: "SELECT seq_id, data->>'user', data->>'name' FROM public.mt_events WHERE seq_id > $1 ORDER BY seq_id",
    mark: "INSERT INTO public.mt_event_progression (name, last_seq_id) VALUES ('User:All', $1) ON CONFLICT (name) DO UPDATE SET last_seq_id = excluded.last_seq_id, last_updated = transaction_timestamp()",
    latest: "SELECT data->>'name' FROM public.mt_events WHERE data->>'user' = $1 ORDER BY seq_id DESC LIMIT 1",
};

/// Eventuous: `eventuous.messages` (global_position identity) and
/// `eventuous.checkpoints(id, position)`, checkpoint id `UserView`.
pub const EVENTUOUS: Layout = Layout {
    setup: "CREATE SCHEMA eventuous;
        CREATE TABLE eventuous.streams (stream_name varchar(1000) NOT NULL, stream_id integer PRIMARY KEY GENERATED ALWAYS AS IDENTITY, version integer NOT NULL DEFAULT(-1), CONSTRAINT uq_streams_name UNIQUE (stream_name));
        CREATE TABLE eventuous.messages (message_id uuid NOT NULL, message_type varchar NOT NULL, stream_id integer NOT NULL, stream_position integer NOT NULL, global_position bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY, json_data jsonb NOT NULL, json_metadata jsonb NULL, created timestamp NOT NULL);
        CREATE TABLE eventuous.checkpoints (id varchar PRIMARY KEY, position bigint NULL);",
    append: "INSERT INTO eventuous.messages (message_id, message_type, stream_id, stream_position, json_data, created) VALUES (gen_random_uuid(), 'UserRenamed', 1, 0, jsonb_build_object('user', $1::text, 'name', $2::text), now())",
    since: "SELECT global_position, json_data->>'user', json_data->>'name' FROM eventuous.messages WHERE global_position > $1 ORDER BY global_position",
    mark: "INSERT INTO eventuous.checkpoints (id, position) VALUES ('UserView', $1) ON CONFLICT (id) DO UPDATE SET position = excluded.position",
    latest: "SELECT json_data->>'name' FROM eventuous.messages WHERE json_data->>'user' = $1 ORDER BY global_position DESC LIMIT 1",
};

/// Commanded's EventStore: the `$all` stream's version in `streams`, and
/// `subscriptions(stream_uuid, subscription_name, last_seen)`, subscription
/// `UserProjector`.
pub const COMMANDED: Layout = Layout {
    setup: "CREATE TABLE public.streams (stream_id bigserial PRIMARY KEY NOT NULL, stream_uuid text NOT NULL, stream_version bigint default 0 NOT NULL, created_at timestamp with time zone DEFAULT NOW() NOT NULL, deleted_at timestamp with time zone);
        CREATE UNIQUE INDEX ix_streams_stream_uuid ON public.streams (stream_uuid);
        INSERT INTO public.streams (stream_uuid, stream_version) VALUES ('$all', 0);
        CREATE TABLE public.subscriptions (subscription_id bigserial PRIMARY KEY NOT NULL, stream_uuid text NOT NULL, subscription_name text NOT NULL, last_seen bigint NULL, created_at timestamp with time zone DEFAULT NOW() NOT NULL);
        CREATE UNIQUE INDEX ix_subscriptions_stream_uuid_subscription_name ON public.subscriptions (stream_uuid, subscription_name);
        CREATE TABLE public.app_events (event_number bigint PRIMARY KEY, data jsonb NOT NULL);",
    append: "WITH v AS (UPDATE public.streams SET stream_version = stream_version + 1 WHERE stream_uuid = '$all' RETURNING stream_version) INSERT INTO public.app_events (event_number, data) SELECT stream_version, jsonb_build_object('user', $1::text, 'name', $2::text) FROM v",
    since: "SELECT event_number, data->>'user', data->>'name' FROM public.app_events WHERE event_number > $1 ORDER BY event_number",
    mark: "INSERT INTO public.subscriptions (stream_uuid, subscription_name, last_seen) VALUES ('$all', 'UserProjector', $1) ON CONFLICT (stream_uuid, subscription_name) DO UPDATE SET last_seen = excluded.last_seen",
    latest: "SELECT data->>'name' FROM public.app_events WHERE data->>'user' = $1 ORDER BY event_number DESC LIMIT 1",
};

/// Akka Projections over akka-persistence-jdbc 5.x: `event_journal` (global
/// `ordering`) and `event_tag` as the plugin's own postgres-create-schema.sql makes
/// them, the offset store as akka-projection's create-table-postgres.sql makes it;
/// the projection `UserProjection` runs `eventsByTag("users")` (key `users`) and
/// stores `Sequence` offsets (manifest `SEQ`, the ordering as text).
pub const AKKA: Layout = Layout {
    setup: "CREATE TABLE IF NOT EXISTS public.event_journal(ordering BIGSERIAL, persistence_id VARCHAR(255) NOT NULL, sequence_number BIGINT NOT NULL, deleted BOOLEAN DEFAULT FALSE NOT NULL, writer VARCHAR(255) NOT NULL, write_timestamp BIGINT, adapter_manifest VARCHAR(255), event_ser_id INTEGER NOT NULL, event_ser_manifest VARCHAR(255) NOT NULL, event_payload BYTEA NOT NULL, meta_ser_id INTEGER, meta_ser_manifest VARCHAR(255), meta_payload BYTEA, PRIMARY KEY(persistence_id, sequence_number));
        CREATE UNIQUE INDEX event_journal_ordering_idx ON public.event_journal(ordering);
        CREATE TABLE IF NOT EXISTS public.event_tag(event_id BIGINT, tag VARCHAR(256), PRIMARY KEY(event_id, tag), CONSTRAINT fk_event_journal FOREIGN KEY(event_id) REFERENCES event_journal(ordering) ON DELETE CASCADE);
        CREATE TABLE IF NOT EXISTS akka_projection_offset_store (projection_name VARCHAR(255) NOT NULL, projection_key VARCHAR(255) NOT NULL, current_offset VARCHAR(255) NOT NULL, manifest VARCHAR(4) NOT NULL, mergeable BOOLEAN NOT NULL, last_updated BIGINT NOT NULL, PRIMARY KEY(projection_name, projection_key));
        CREATE INDEX IF NOT EXISTS akka_projection_name_index ON akka_projection_offset_store (projection_name);",
    append: "WITH e AS (INSERT INTO public.event_journal (persistence_id, sequence_number, writer, write_timestamp, event_ser_id, event_ser_manifest, event_payload) VALUES ('user|' || $1::text, (SELECT COALESCE(max(sequence_number), 0) + 1 FROM public.event_journal WHERE persistence_id = 'user|' || $1::text), 'tidemark-test', 0, 1, 'UserRenamed', convert_to(json_build_object('user', $1::text, 'name', $2::text)::text, 'UTF8')) RETURNING ordering) INSERT INTO public.event_tag (event_id, tag) SELECT ordering, 'users' FROM e",
    since: "SELECT j.ordering, convert_from(j.event_payload, 'UTF8')::json->>'user', convert_from(j.event_payload, 'UTF8')::json->>'name' FROM public.event_journal j JOIN public.event_tag t ON t.event_id = j.ordering AND t.tag = 'users' WHERE j.ordering > $1 ORDER BY j.ordering",
    mark: "INSERT INTO akka_projection_offset_store (projection_name, projection_key, current_offset, manifest, mergeable, last_updated) VALUES ('UserProjection', 'users', $1::bigint::text, 'SEQ', false, 0) ON CONFLICT (projection_name, projection_key) DO UPDATE SET current_offset = excluded.current_offset, last_updated = excluded.last_updated",
    latest: "SELECT convert_from(event_payload, 'UTF8')::json->>'name' FROM public.event_journal WHERE persistence_id = 'user|' || $1 ORDER BY ordering DESC LIMIT 1",
};

/// The fence for [`AKKA`]: the newest event carrying the projection's tag (a custom
/// query: Akka has no preset fence).
pub const AKKA_FENCE: &str = "query = \"SELECT 'events'::text, COALESCE(max(event_id), 0) FROM public.event_tag WHERE tag = 'users'\", log = \"events\"";

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// The running app: its two HTTP services and the projector.
pub struct App {
    pub commands: SocketAddr,
    pub view: SocketAddr,
    /// Answers from the write side (`latest`): the read routes' `primary`.
    pub primary: SocketAddr,
    stop: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl App {
    /// Creates the layout on `url` and starts the services and the projector.
    pub async fn start(url: &str, layout: Layout) -> App {
        let admin = connect(url).await;
        admin
            .batch_execute(&format!("{}\n{USERS}", layout.setup))
            .await
            .expect("create the framework's tables");
        Self::start_on(url, url, layout, true).await
    }

    /// Services on `write_url` (commands) and `read_url` (views); the projector
    /// runs only with `project` (a hot standby replays instead). Each connection
    /// reconnects after its database restarted.
    pub async fn start_on(write_url: &str, read_url: &str, layout: Layout, project: bool) -> App {
        let stop = CancellationToken::new();
        let writer = Arc::new(Db::new(write_url).await);
        let commands = Router::new()
            .route(
                "/users/{id}",
                axum::routing::put(
                    move |State(db): State<Arc<Db>>, Path(id): Path<String>, body: String| async move {
                        // One append at a time: the log's order is its commit order.
                        let mut client = db.client.lock().await;
                        let result = match client.as_ref() {
                            Some(c) if !c.is_closed() => {
                                c.execute(layout.append, &[&id, &body]).await
                            }
                            _ => {
                                *client = try_connect(&db.url).await;
                                return (
                                    StatusCode::SERVICE_UNAVAILABLE,
                                    "database down".to_string(),
                                );
                            }
                        };
                        match result {
                            Ok(_) => (StatusCode::OK, "saved".to_string()),
                            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                        }
                    },
                ),
            )
            .with_state(writer);
        let view = lookup(read_url, "SELECT name FROM users WHERE id = $1").await;
        let primary = lookup(write_url, layout.latest).await;
        let commands = serve(commands, stop.clone()).await;
        let view = serve(view, stop.clone()).await;
        let primary = serve(primary, stop.clone()).await;
        if project {
            tokio::spawn(project_loop(write_url.to_string(), layout, stop.clone()));
        }
        App {
            commands,
            view,
            primary,
            stop,
        }
    }
}

/// `GET /users/{id}`: the first column of `sql` for `$1 = id` (404 without a row).
async fn lookup(url: &str, sql: &'static str) -> Router {
    let db = Arc::new(Db::new(url).await);
    Router::new()
        .route(
            "/users/{id}",
            get(
                move |State(db): State<Arc<Db>>, Path(id): Path<String>| async move {
                    let mut client = db.client.lock().await;
                    let result = match client.as_ref() {
                        Some(c) if !c.is_closed() => c.query_opt(sql, &[&id]).await,
                        _ => {
                            *client = try_connect(&db.url).await;
                            return (StatusCode::SERVICE_UNAVAILABLE, String::new());
                        }
                    };
                    match result {
                        Ok(Some(row)) => (StatusCode::OK, row.get::<_, String>(0)),
                        Ok(None) => (StatusCode::NOT_FOUND, String::new()),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                },
            ),
        )
        .with_state(db)
}

/// One connection that is replaced when it closed.
struct Db {
    url: String,
    client: Mutex<Option<Client>>,
}

impl Db {
    async fn new(url: &str) -> Db {
        Db {
            url: url.to_string(),
            client: Mutex::new(Some(connect(url).await)),
        }
    }
}

async fn try_connect(url: &str) -> Option<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.ok()?;
    tokio::spawn(connection);
    Some(client)
}

async fn serve(router: Router, stop: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    addr
}

/// Applies new events and records the checkpoint in one transaction, every
/// `PROJECTOR_INTERVAL`; errors (a restarted database) are retried next round.
async fn project_loop(url: String, layout: Layout, stop: CancellationToken) {
    let mut last: i64 = 0;
    let mut db: Option<Client> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROJECTOR_INTERVAL) => {}
        }
        if db.as_ref().is_none_or(Client::is_closed) {
            db = try_connect(&url).await;
        }
        let Some(db) = db.as_mut() else { continue };
        let Ok(tx) = db.transaction().await else {
            continue;
        };
        let Ok(rows) = tx.query(layout.since, &[&last]).await else {
            continue;
        };
        let mut next = last;
        let mut ok = true;
        for row in &rows {
            let (pos, user, name): (i64, String, String) = (row.get(0), row.get(1), row.get(2));
            if tx
                .execute(
                    "INSERT INTO users (id, name) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET name = excluded.name",
                    &[&user, &name],
                )
                .await
                .is_err()
            {
                ok = false;
                break;
            }
            next = pos;
        }
        if !ok || rows.is_empty() {
            continue;
        }
        if tx.execute(layout.mark, &[&next]).await.is_err() {
            continue;
        }
        if tx.commit().await.is_ok() {
            last = next;
        }
    }
}
