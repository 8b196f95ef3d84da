//! A small Kafka app that returns no `Write-Position`: a command service (`PUT
//! /users/{id}` produces a record keyed by the id to topic `users` with `acks=all`
//! and answers once the broker acknowledged it; `GET /users/{id}` is the write side's
//! latest value, the primary), a projector (consumer group `users-view`, on every
//! partition through `assign()`, that applies each record `LAG` after it was produced,
//! then commits the next offset), and a read service (`GET /users/{id}` from the
//! projector's model).
//!
//! For the tests' judgement only (the gateway ignores it): a write's answer and every
//! read's carry `X-Record: PARTITION:OFFSET`, the record written or the record whose
//! value is shown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

/// How long the projector takes to apply a record: reads straight after a write are
/// stale.
pub const LAG: Duration = Duration::from_millis(40);
pub const TOPIC: &str = "users";
pub const GROUP: &str = "users-view";
pub const PARTITIONS: i32 = 4;

/// user id -> ((partition, offset), value).
type Model = Arc<Mutex<HashMap<String, ((i32, i64), String)>>>;

pub struct App {
    pub commands: SocketAddr,
    pub view: SocketAddr,
    /// Records the projector applied.
    pub applied: Arc<AtomicU64>,
    /// `GET`s the command service (the read route's primary) answered.
    pub primary_reads: Arc<AtomicU64>,
    /// Writes the broker acknowledged before its high watermark covered them (the
    /// command service waited for it: see [`wait_visible`]).
    pub acked_early: Arc<AtomicU64>,
    shutdown: CancellationToken,
    stop_projector: Arc<AtomicBool>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.stop_projector.store(true, Ordering::Relaxed);
    }
}

/// The logs of the topic's partitions: `users-0` ... `users-3`.
pub fn logs() -> Vec<String> {
    (0..PARTITIONS).map(|p| format!("{TOPIC}-{p}")).collect()
}

/// Creates `topic` with `partitions` and waits until its metadata shows them all.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let created = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("CreateTopics answered");
    for result in created {
        result.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("client");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let seen = client
            .fetch_metadata(Some(topic), Duration::from_secs(1))
            .ok()
            .and_then(|m| m.topics().first().map(|t| t.partitions().len()));
        if seen == Some(partitions as usize) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "topic {topic} has {seen:?} partitions, not {partitions}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A producer that waits for every in-sync replica (`acks=all`) and gives up on a
/// record after 2s; one request in flight per connection, so a record answered late
/// is never appended after a later one of the same key.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("message.timeout.ms", "2000")
        .set("linger.ms", "0")
        .set("max.in.flight.requests.per.connection", "1")
        .set("log_level", "0")
        .create()
        .expect("producer")
}

#[derive(Clone)]
struct Commands {
    producer: FutureProducer,
    written: Model,
    primary_reads: Arc<AtomicU64>,
    /// For the high watermarks (ListOffsets), read as the gateway's fence reads them
    /// (librdkafka's defaults: the isolation level included).
    watermarks: Arc<BaseConsumer>,
    /// Records acknowledged before the broker's high watermark covered them.
    acked_early: Arc<AtomicU64>,
}

/// Waits until `topic`'s partition `partition` shows a high watermark past `offset`
/// (at most 2 s); returns whether it had to wait.
///
/// Kafka answers an `acks=all` produce once the high watermark covers the record, so a
/// ListOffsets after the acknowledgement shows it: what the `kafka_topic` fence
/// relies on. tansu (the tests' broker) can acknowledge first, under load: then the
/// fence reads a watermark before the record and a read is released before its write
/// is applied (seen here: a write at offset 129 with a fence at 129). The command
/// service waits for the watermark itself, so the tests hold tidemark to Kafka's
/// contract and not to tansu's lag.
fn wait_visible(watermarks: &BaseConsumer, partition: i32, offset: i64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut waited = false;
    while std::time::Instant::now() < deadline {
        match watermarks.fetch_watermarks(TOPIC, partition, Duration::from_millis(500)) {
            Ok((_, high)) if high > offset => return waited,
            _ => waited = true,
        }
    }
    waited
}

/// The `X-Record` header: where a record is in the topic.
pub const RECORD: &str = "x-record";

fn record_header((partition, offset): (i32, i64)) -> [(&'static str, String); 1] {
    [(RECORD, format!("{partition}:{offset}"))]
}

async fn put_user(
    State(s): State<Commands>,
    Path(id): Path<String>,
    body: String,
) -> Result<(StatusCode, [(&'static str, String); 1]), StatusCode> {
    let record = FutureRecord::to(TOPIC).key(&id).payload(&body);
    match s.producer.send(record, Duration::from_secs(2)).await {
        Ok(delivery) => {
            let at = (delivery.partition, delivery.offset);
            let watermarks = s.watermarks.clone();
            let waited = tokio::task::spawn_blocking(move || wait_visible(&watermarks, at.0, at.1))
                .await
                .unwrap_or(false);
            if waited {
                s.acked_early.fetch_add(1, Ordering::Relaxed);
            }
            let mut w = s.written.lock().unwrap();
            let entry = w.entry(id).or_insert(((0, -1), String::new()));
            if at.1 > entry.0 .1 {
                *entry = (at, body);
            }
            Ok((StatusCode::NO_CONTENT, record_header(at)))
        }
        // The broker did not acknowledge: the client is told the write failed (the
        // record may still be in the log: the acknowledgement, not the record, can be
        // what was lost).
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

async fn get_user(
    State(model): State<Model>,
    Path(id): Path<String>,
) -> Result<([(&'static str, String); 1], String), StatusCode> {
    match model.lock().unwrap().get(&id) {
        Some((at, v)) => Ok((record_header(*at), v.clone())),
        None => Err(StatusCode::NOT_FOUND),
    }
}

async fn get_written(
    State(s): State<Commands>,
    Path(id): Path<String>,
) -> Result<([(&'static str, String); 1], String), StatusCode> {
    s.primary_reads.fetch_add(1, Ordering::Relaxed);
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
    /// Creates the topic, then starts the projector and the services.
    pub async fn start(brokers: &str) -> App {
        create_topic(brokers, TOPIC, PARTITIONS).await;
        let shutdown = CancellationToken::new();
        let stop_projector = Arc::new(AtomicBool::new(false));
        let written = Model::default();
        let model = Model::default();
        let applied = Arc::new(AtomicU64::new(0));
        let primary_reads = Arc::new(AtomicU64::new(0));
        let acked_early = Arc::new(AtomicU64::new(0));
        {
            let (brokers, model, applied, stop) = (
                brokers.to_string(),
                model.clone(),
                applied.clone(),
                stop_projector.clone(),
            );
            std::thread::spawn(move || project(&brokers, model, applied, stop));
        }
        let commands = Router::new()
            .route("/users/{id}", get(get_written).put(put_user))
            .with_state(Commands {
                producer: producer(brokers),
                written,
                primary_reads: primary_reads.clone(),
                watermarks: Arc::new(
                    ClientConfig::new()
                        .set("bootstrap.servers", brokers)
                        .set("log_level", "0")
                        .create()
                        .expect("watermarks client"),
                ),
                acked_early: acked_early.clone(),
            });
        let view = Router::new()
            .route("/users/{id}", get(get_user))
            .with_state(model);
        App {
            commands: serve(commands, shutdown.clone()).await,
            view: serve(view, shutdown.clone()).await,
            applied,
            primary_reads,
            acked_early,
            shutdown,
            stop_projector,
        }
    }
}

/// The projector (its own thread, as a consumer's poll loop is): group `users-view`
/// on every partition via `assign()` (from its committed offsets, else the start);
/// applies each record `LAG` after its timestamp, then commits the next offset
/// (commit after apply), and re-commits every applied position every 200ms, so a
/// commit lost while the broker was unreachable is made good. Applies are idempotent
/// by offset.
fn project(brokers: &str, model: Model, applied: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // tansu answers a fetch when its wait runs out rather than when a record
        // arrives: a short wait keeps the projector's lag near `LAG`.
        .set("fetch.wait.max.ms", "5")
        .set("log_level", "0")
        .create()
        .expect("projector consumer");
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Stored)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut done: HashMap<i32, i64> = HashMap::new();
    let mut last_full = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if last_full.elapsed() >= Duration::from_millis(200) && !done.is_empty() {
            let _ = consumer.commit(&commit_list(&done), CommitMode::Async);
            last_full = std::time::Instant::now();
        }
        let Some(Ok(message)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let (partition, offset) = (message.partition(), message.offset());
        let produced = message
            .timestamp()
            .to_millis()
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
            .unwrap_or_else(SystemTime::now);
        if let Ok(wait) = (produced + LAG).duration_since(SystemTime::now()) {
            std::thread::sleep(wait);
        }
        let id = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let value = message
            .payload()
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .unwrap_or_default();
        {
            let mut m = model.lock().unwrap();
            let entry = m.entry(id).or_insert(((partition, -1), String::new()));
            if offset > entry.0 .1 {
                *entry = ((partition, offset), value);
            }
        }
        applied.fetch_add(1, Ordering::Relaxed);
        // Commit after apply: the group's committed offset is the projector's checkpoint.
        let next = done.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        let mut one = HashMap::new();
        one.insert(partition, *next);
        let _ = consumer.commit(&commit_list(&one), CommitMode::Async);
    }
}

fn commit_list(offsets: &HashMap<i32, i64>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(TOPIC, p, Offset::Offset(o))
            .unwrap();
    }
    tpl
}
