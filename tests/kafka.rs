//! The Kafka integration suite (a real Kafka-protocol broker, `tansu`, never a mock):
//! a projector that consumes a topic in a consumer group and commits after applying,
//! in front of which tidemark reads the group's committed offsets in the broker
//! (checkpoint source `kafka`) and the topic's high watermarks after each write (fence
//! `kafka_topic`), so neither the command service nor the projector changes.

mod common;
#[path = "support/kafka.rs"]
mod kafka_broker;

#[path = "kafka/app.rs"]
mod app;
#[path = "kafka/config.rs"]
mod config;
#[path = "kafka/source.rs"]
mod source;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use app::App;
use common::TestGateway;
use kafka_broker::KafkaBroker;

pub const CLIENTS: usize = 25;
pub const PAIRS_PER_CLIENT: usize = 20;

/// The gateway's config in front of `app`, with the broker at `brokers`.
pub fn gateway_toml(app: &App, brokers: &str) -> String {
    format!(
        r#"
[kafka]
brokers = ["{brokers}"]
request_timeout = "500ms"
[upstreams.commands]
url = "http://{commands}"
[upstreams.view]
url = "http://{view}"
[projections.users]
logs = {logs:?}
sources = ["kafka"]
[projections.users.kafka]
group = "{group}"
topic = "{topic}"
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "commands"
fence = {{ kafka_topic = "{topic}" }}
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "3s"
on_timeout = "primary"
primary = "commands"
"#,
        commands = app.commands,
        view = app.view,
        logs = app::logs(),
        group = app::GROUP,
        topic = app::TOPIC,
    )
}

/// Outcome of a run of write-then-read pairs (shared by the run's sessions).
#[derive(Debug, Default)]
pub struct Pairs {
    /// Writes answered 2xx, each followed by a read.
    pub pairs: AtomicUsize,
    /// Reads that do not reflect the write just made: answered 404 (nothing
    /// projected yet), or 200 from a record before the written one in its partition
    /// (the `X-Record` headers tell).
    pub stale: AtomicUsize,
    /// Reads that reflect the write but show another value: a record after it, which
    /// can only be an earlier write of the session that was refused (its
    /// acknowledgement lost while the broker was stopped) and landed after it.
    pub landed_later: AtomicUsize,
    /// Reads answered with another error.
    pub failed_reads: AtomicUsize,
    /// Writes whose answer was not 2xx (the command service's 503 while the broker
    /// does not acknowledge, passed on).
    pub failed_writes: AtomicUsize,
    /// Time of each answered write and of each read after it.
    pub times: Times,
    /// The first few stale reads, told (for the assertion's message).
    pub examples: Mutex<Vec<String>>,
}

/// Write and read times (shown by their count only in assertion messages).
#[derive(Default)]
pub struct Times(Mutex<(Vec<Duration>, Vec<Duration>)>);

impl std::fmt::Debug for Times {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} timed pairs", self.0.lock().unwrap().1.len())
    }
}

impl Pairs {
    fn get(n: &AtomicUsize) -> usize {
        n.load(Ordering::Relaxed)
    }

    fn example(&self, told: String) {
        let mut examples = self.examples.lock().unwrap();
        if examples.len() < 5 {
            examples.push(told);
        }
    }

    /// `median / p99` of the writes and of the reads, in milliseconds.
    fn figures(&self) -> String {
        fn q(v: &mut [Duration], q: f64) -> f64 {
            v.sort_unstable();
            let i = ((v.len() as f64 - 1.0) * q).round() as usize;
            v.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        }
        let (mut w, mut r) = self.times.0.lock().unwrap().clone();
        format!(
            "write {:.1} / {:.1} ms, read {:.1} / {:.1} ms (median / p99, {} pairs)",
            q(&mut w, 0.5),
            q(&mut w, 0.99),
            q(&mut r, 0.5),
            q(&mut r, 0.99),
            r.len()
        )
    }
}

/// The record an answer names in `X-Record` (`(partition, offset)`).
fn record_of(r: &common::Resp) -> Option<(i32, i64)> {
    let (p, o) = r.header(app::RECORD)?.split_once(':')?;
    Some((p.parse().ok()?, o.parse().ok()?))
}

/// `clients` sessions, each writing then reading its own user `per_client` times,
/// through `write_base` / `read_base`. A read is stale when it does not reflect the
/// write just made: 404, or a record before the written one (judged by offsets, not
/// values: a refused write may still land, after a later one, and its value is then
/// the latest).
pub async fn run_pairs(
    tag: &str,
    write_base: SocketAddr,
    read_base: SocketAddr,
    clients: usize,
    per_client: usize,
    out: Arc<Pairs>,
) {
    let mut tasks = Vec::new();
    for c in 0..clients {
        let tag = tag.to_string();
        let out = out.clone();
        tasks.push(tokio::spawn(async move {
            let http = common::http();
            let mut token: Option<String> = None;
            for k in 0..per_client {
                let id = format!("{tag}-{c}");
                let value = format!("v{k}");
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("consistency-token", t)])
                    .unwrap_or_default();
                let url = format!("http://{write_base}/users/{id}");
                let started = Instant::now();
                let w = http.send(Method::PUT, &url, &headers, value.clone()).await;
                let wrote = started.elapsed();
                if !w.status.is_success() {
                    out.failed_writes.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(t) = w.header("consistency-token") {
                    token = Some(t.to_string());
                }
                let written = record_of(&w);
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("consistency-token", t)])
                    .unwrap_or_default();
                let started = Instant::now();
                let r = http
                    .get(&format!("http://{read_base}/users/{id}"), &headers)
                    .await;
                let read = started.elapsed();
                {
                    let mut times = out.times.0.lock().unwrap();
                    times.0.push(wrote);
                    times.1.push(read);
                }
                out.pairs.fetch_add(1, Ordering::Relaxed);
                match (r.status, written, record_of(&r)) {
                    (StatusCode::NOT_FOUND, _, _) => {
                        out.stale.fetch_add(1, Ordering::Relaxed);
                    }
                    (StatusCode::OK, Some(w), Some(shown)) => {
                        if shown.0 != w.0 || shown.1 < w.1 {
                            out.example(format!(
                                "{id}: wrote {value:?} at {w:?}, read {:?} at {shown:?} \
                                 (Consistency-Source {:?}, token {:?})",
                                r.text(),
                                r.header("consistency-source"),
                                token,
                            ));
                            out.stale.fetch_add(1, Ordering::Relaxed);
                        } else if r.text() != value {
                            assert!(
                                shown.1 > w.1,
                                "{id}: {shown:?} shows {:?}, not {value:?}",
                                r.text()
                            );
                            out.landed_later.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        out.failed_reads.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

async fn readyz_kafka(gw: &TestGateway) -> String {
    let r = common::http().get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "readyz stays 200: {}", r.text());
    r.json()["kafka"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_group_projector_without_changes_reads_its_writes() {
    let broker = KafkaBroker::start();
    let app = App::start(&broker.address()).await;
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.address()), &[])).await;
    common::wait_until(Duration::from_secs(10), "kafka ok in /readyz", || async {
        readyz_kafka(&gw).await == "ok"
    })
    .await;

    let direct = Arc::new(Pairs::default());
    let (commands, view) = (app.commands, app.view);
    run_pairs(
        "direct",
        commands,
        view,
        CLIENTS,
        PAIRS_PER_CLIENT,
        direct.clone(),
    )
    .await;
    let through = Arc::new(Pairs::default());
    run_pairs(
        "gw",
        gw.proxy,
        gw.proxy,
        CLIENTS,
        PAIRS_PER_CLIENT,
        through.clone(),
    )
    .await;

    // Figures, side by side (a shared 2-core machine: compare, do not read alone).
    eprintln!(
        "kafka suite, {CLIENTS} sessions x {PAIRS_PER_CLIENT} pairs, projector lag {LAG:?}, \
         source interval 20ms, tansu memory storage, 4 partitions:\n  \
         direct to the services: {}, stale {}\n  \
         through the gateway:    {}, stale {}\n  \
         writes acknowledged before the broker's high watermark covered them: {}",
        direct.figures(),
        Pairs::get(&direct.stale),
        through.figures(),
        Pairs::get(&through.stale),
        app.acked_early.load(Ordering::Relaxed),
        LAG = app::LAG,
    );
    assert_eq!(Pairs::get(&through.failed_writes), 0, "{through:?}");
    assert_eq!(Pairs::get(&through.failed_reads), 0, "{through:?}");
    assert_eq!(Pairs::get(&through.pairs), CLIENTS * PAIRS_PER_CLIENT);
    assert_eq!(
        Pairs::get(&through.stale),
        0,
        "stale through the gateway: {through:?}"
    );
    // No write was refused, so none can have landed after a later one.
    assert_eq!(Pairs::get(&through.landed_later), 0, "{through:?}");
    // Straight to the services the lag shows: many reads are stale (a third to a half
    // on this machine; fewer than "most" since the command service waits for the
    // broker's high watermark, see `app::wait_visible`, which gives the projector
    // time).
    assert!(
        Pairs::get(&direct.stale) * 5 > Pairs::get(&direct.pairs),
        "straight to the services at least a fifth of the reads should be stale: {direct:?}"
    );
    // Every read was held until the group committed, then served by the read side:
    // none went to the primary (no fence failed, no hold timed out).
    assert_eq!(app.primary_reads.load(Ordering::Relaxed), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_stopped_mid_run_loses_no_write_answer_and_serves_no_stale_read() {
    let mut broker = KafkaBroker::start();
    let app = App::start(&broker.address()).await;
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.address()), &[])).await;
    common::wait_until(Duration::from_secs(10), "kafka ok in /readyz", || async {
        readyz_kafka(&gw).await == "ok"
    })
    .await;

    let (clients, per_client) = (10, 60);
    let through = Arc::new(Pairs::default());
    let run = tokio::spawn(run_pairs(
        "outage",
        gw.proxy,
        gw.proxy,
        clients,
        per_client,
        through.clone(),
    ));
    common::wait_until(
        Duration::from_secs(30),
        "100 pairs before the outage",
        || async { Pairs::get(&through.pairs) >= 100 },
    )
    .await;
    let paused = Instant::now();
    broker.pause();
    common::wait_until(
        Duration::from_secs(10),
        "kafka degraded in /readyz",
        || async { readyz_kafka(&gw).await == "degraded" },
    )
    .await;
    let degraded_after = paused.elapsed();
    common::wait_until(
        Duration::from_secs(20),
        "a write refused while the broker is stopped",
        || async { Pairs::get(&through.failed_writes) >= 1 },
    )
    .await;
    broker.resume();
    let outage = paused.elapsed();
    common::wait_until(
        Duration::from_secs(30),
        "kafka ok again in /readyz",
        || async { readyz_kafka(&gw).await == "ok" },
    )
    .await;
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("every write and read answered")
        .expect("client tasks");

    let (pairs, failed) = (
        Pairs::get(&through.pairs),
        Pairs::get(&through.failed_writes),
    );
    eprintln!(
        "kafka outage: broker stopped {outage:?} (readyz degraded after {degraded_after:?}); \
         {pairs} pairs, {failed} writes refused by the command service, {} reads sent to \
         the primary, stale {}, {} reads showing a refused write that landed after the \
         one read, {} writes acknowledged before the broker's high watermark covered \
         them; {}",
        app.primary_reads.load(Ordering::Relaxed),
        Pairs::get(&through.stale),
        Pairs::get(&through.landed_later),
        app.acked_early.load(Ordering::Relaxed),
        through.figures(),
    );
    assert_eq!(pairs + failed, clients * per_client, "every write answered");
    assert!(
        pairs > clients * per_client / 2,
        "most writes succeeded: {through:?}"
    );
    assert_eq!(
        Pairs::get(&through.stale),
        0,
        "stale through the gateway: {through:?}"
    );
    assert_eq!(Pairs::get(&through.failed_reads), 0, "{through:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_degrades_readyz_and_fails_no_write() {
    let mut broker = KafkaBroker::start();
    let app = App::start(&broker.address()).await;
    broker.pause();
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.address()), &[])).await;
    assert_eq!(readyz_kafka(&gw).await, "degraded");
    // The command service cannot produce: its own 503 passes through, unchanged.
    let w = common::http()
        .send(Method::PUT, &gw.url("/users/a"), &[], "x")
        .await;
    assert_eq!(w.status, StatusCode::SERVICE_UNAVAILABLE);
    broker.resume();
    common::wait_until(Duration::from_secs(30), "kafka ok in /readyz", || async {
        readyz_kafka(&gw).await == "ok"
    })
    .await;
    let w = common::http()
        .send(Method::PUT, &gw.url("/users/a"), &[], "y")
        .await;
    assert!(w.status.is_success(), "{}", w.status);
    let token = w.header("consistency-token").expect("a token").to_string();
    let r = common::http()
        .get(&gw.url("/users/a"), &[("consistency-token", &token)])
        .await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "y".to_string()));
    gw.stop().await;
}

/// A command service whose writes succeed while the gateway cannot reach the broker
/// (it answers `204` without producing): the fence times out, the answer is passed on
/// at once, and the session's reads of every partition go to the primary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_times_out_passes_the_write_on_and_pins_every_partition() {
    let mut broker = KafkaBroker::start();
    let app = App::start(&broker.address()).await;
    let blind = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route(
            "/users/{id}",
            axum::routing::put(|| async { StatusCode::NO_CONTENT }),
        );
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        addr
    };
    let toml = gateway_toml(&app, &broker.address())
        .replace(
            "[upstreams.view]",
            &format!("[upstreams.blind]\nurl = \"http://{blind}\"\n[upstreams.view]"),
        )
        .replace(
            "upstream = \"commands\"\nfence",
            "upstream = \"blind\"\nfence",
        );
    let gw = TestGateway::start(common::config(&toml, &[])).await;
    common::wait_until(Duration::from_secs(10), "kafka ok in /readyz", || async {
        readyz_kafka(&gw).await == "ok"
    })
    .await;
    broker.pause();
    let http = common::http();
    let started = Instant::now();
    let w = http.send(Method::PUT, &gw.url("/users/a"), &[], "x").await;
    let took = started.elapsed();
    assert_eq!(
        w.status,
        StatusCode::NO_CONTENT,
        "the write's answer is never lost"
    );
    assert!(
        took < Duration::from_millis(1500),
        "the fence gave up at request_timeout (500ms): {took:?}"
    );
    let token = w.header("consistency-token").expect("a token").to_string();
    // The token's `pri` claim marks every partition's log for the primary.
    let claims = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims)
            .expect("base64url"),
    )
    .expect("JSON claims");
    let pinned: Vec<&str> = claims["pri"]
        .as_object()
        .expect("a pri claim")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(pinned, app::logs(), "{claims}");
    let started = Instant::now();
    let r = http
        .get(&gw.url("/users/a"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.header("consistency-source"), Some("primary"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no hold: straight to the primary"
    );
    assert_eq!(app.primary_reads.load(Ordering::Relaxed), 1);
    broker.resume();
    gw.stop().await;
}
