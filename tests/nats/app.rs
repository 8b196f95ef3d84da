//! A small JetStream app that returns no `Write-Position`: a command service
//! (`PUT /users/{id}` publishes `users.ID` to stream `USERS` and answers once the
//! `PubAck` arrives; `GET /users/{id}` is the write side's latest value, the
//! primary), a projector (a durable pull consumer `users-view` that applies each
//! message `LAG` after it was published, then acks it), and a read service (`GET
//! /users/{id}` from the projector's model).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

/// How long the projector takes to apply a message: reads straight after a write
/// are stale.
pub const LAG: Duration = Duration::from_millis(40);
pub const STREAM: &str = "USERS";
pub const CONSUMER: &str = "users-view";

/// user id -> (stream sequence, value).
type Model = Arc<Mutex<HashMap<String, (u64, String)>>>;

pub struct App {
    pub commands: SocketAddr,
    pub view: SocketAddr,
    /// Messages the projector applied (redeliveries included).
    pub applied: Arc<std::sync::atomic::AtomicU64>,
    /// `GET`s the command service (the read route's primary) answered.
    pub primary_reads: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[derive(Clone)]
struct Commands {
    js: jetstream::Context,
    written: Model,
    primary_reads: Arc<std::sync::atomic::AtomicU64>,
}

async fn put_user(State(s): State<Commands>, Path(id): Path<String>, body: String) -> StatusCode {
    let ack = async {
        s.js.publish(format!("users.{id}"), body.clone().into())
            .await?
            .await
    };
    match tokio::time::timeout(Duration::from_secs(2), ack).await {
        Ok(Ok(ack)) => {
            let mut w = s.written.lock().unwrap();
            let entry = w.entry(id).or_insert((0, String::new()));
            if ack.sequence > entry.0 {
                *entry = (ack.sequence, body);
            }
            StatusCode::NO_CONTENT
        }
        // The broker is down: the write did not happen, and the client is told so.
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

async fn get_user(State(model): State<Model>, Path(id): Path<String>) -> (StatusCode, String) {
    match model.lock().unwrap().get(&id) {
        Some((_, v)) => (StatusCode::OK, v.clone()),
        None => (StatusCode::NOT_FOUND, String::new()),
    }
}

async fn get_written(State(s): State<Commands>, Path(id): Path<String>) -> (StatusCode, String) {
    s.primary_reads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    get_user(State(s.written), Path(id)).await
}

async fn serve(router: Router, shutdown: CancellationToken) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .unwrap();
    });
    addr
}

impl App {
    /// Creates the stream and the durable consumer, then starts the services.
    pub async fn start(nats_url: &str) -> App {
        App::start_with(nats_url, None).await
    }

    /// [`App::start`] with the stream also taking `noise.>`, and the consumer
    /// filtered on `filter` when given (e.g. `users.>`).
    pub async fn start_with(nats_url: &str, filter: Option<&str>) -> App {
        let client = async_nats::connect(nats_url)
            .await
            .expect("connect to NATS");
        let js = jetstream::new(client);
        let stream = js
            .create_stream(jetstream::stream::Config {
                name: STREAM.into(),
                subjects: vec!["users.>".into(), "noise.>".into()],
                ..Default::default()
            })
            .await
            .expect("create stream");
        let consumer: jetstream::consumer::PullConsumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(CONSUMER.into()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5),
                filter_subject: filter.unwrap_or_default().into(),
                ..Default::default()
            })
            .await
            .expect("create consumer");
        let shutdown = CancellationToken::new();
        let written = Model::default();
        let model = Model::default();
        let applied = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let primary_reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        tokio::spawn(project(
            consumer,
            model.clone(),
            applied.clone(),
            shutdown.clone(),
        ));
        let commands = Router::new()
            .route("/users/{id}", get(get_written).put(put_user))
            .with_state(Commands {
                js,
                written,
                primary_reads: primary_reads.clone(),
            });
        let view = Router::new()
            .route("/users/{id}", get(get_user))
            .with_state(model);
        App {
            commands: serve(commands, shutdown.clone()).await,
            view: serve(view, shutdown.clone()).await,
            applied,
            primary_reads,
            shutdown,
        }
    }
}

/// The projector: applies each message `LAG` after it was published, then acks it (ack
/// after apply). Applies are idempotent by stream sequence (a redelivery after a
/// broker restart never overwrites a newer value). Re-subscribes after an error.
async fn project(
    consumer: jetstream::consumer::PullConsumer,
    model: Model,
    applied: Arc<std::sync::atomic::AtomicU64>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(_) => {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = messages.next() => next,
            };
            let Some(Ok(message)) = next else { break };
            let Ok(info) = message.info() else { continue };
            let sequence = info.stream_sequence;
            let due = std::time::SystemTime::from(info.published) + LAG;
            let id = message
                .subject
                .as_str()
                .strip_prefix("users.")
                .unwrap_or_default()
                .to_string();
            let value = String::from_utf8_lossy(&message.payload).into_owned();
            let wait = due
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::sleep(wait).await;
            {
                let mut m = model.lock().unwrap();
                let entry = m.entry(id).or_insert((0, String::new()));
                if sequence > entry.0 {
                    *entry = (sequence, value);
                }
            }
            applied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // Ack after apply: the broker's ack floor is the projector's checkpoint.
            let _ = message.ack().await;
        }
    }
}
