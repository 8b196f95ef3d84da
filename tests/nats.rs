//! The NATS JetStream integration suite (a real `nats-server -js`, never a mock): a
//! projector that consumes a stream through a durable consumer and acks after
//! applying, in front of which tidemark reads the consumer's progress in the broker
//! (checkpoint source `nats`) and the stream's head after each write (fence
//! `nats_stream`), so neither the command service nor the projector changes.

mod common;
#[path = "support/nats.rs"]
mod nats_server;

#[path = "nats/app.rs"]
mod app;
#[path = "nats/config.rs"]
mod config;
#[path = "nats/source.rs"]
mod source;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};

use app::App;
use common::TestGateway;
use nats_server::NatsServer;

pub const CLIENTS: usize = 25;
pub const PAIRS_PER_CLIENT: usize = 20;

/// The gateway's config in front of `app`, with the broker at `nats_url`.
pub fn gateway_toml(app: &App, nats_url: &str) -> String {
    format!(
        r#"
[nats]
url = "{nats_url}"
request_timeout = "500ms"
[upstreams.commands]
url = "http://{commands}"
[upstreams.view]
url = "http://{view}"
[projections.users]
logs = ["users"]
sources = ["nats"]
[projections.users.nats]
stream = "{stream}"
consumer = "{consumer}"
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "commands"
fence = {{ nats_stream = "{stream}", log = "users" }}
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
        stream = app::STREAM,
        consumer = app::CONSUMER,
    )
}

/// Outcome of a run of write-then-read pairs (shared by the run's sessions).
#[derive(Debug, Default)]
pub struct Pairs {
    /// Writes answered 2xx, each followed by a read.
    pub pairs: AtomicUsize,
    /// Reads answered 200 with an older value, or 404 (not projected yet).
    pub stale: AtomicUsize,
    /// Reads answered with another error.
    pub failed_reads: AtomicUsize,
    /// Writes whose answer was not 2xx (the command service's 503 while the broker
    /// is down, passed on).
    pub failed_writes: AtomicUsize,
}

impl Pairs {
    fn get(n: &AtomicUsize) -> usize {
        n.load(Ordering::Relaxed)
    }
}

/// `clients` sessions, each writing then reading its own user `per_client` times,
/// through `write_base` / `read_base`. A read is stale when it does not show the
/// value just written.
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
                let w = http.send(Method::PUT, &url, &headers, value.clone()).await;
                if !w.status.is_success() {
                    out.failed_writes.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(t) = w.header("consistency-token") {
                    token = Some(t.to_string());
                }
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("consistency-token", t)])
                    .unwrap_or_default();
                let r = http
                    .get(&format!("http://{read_base}/users/{id}"), &headers)
                    .await;
                out.pairs.fetch_add(1, Ordering::Relaxed);
                let stale = (r.status == StatusCode::OK && r.text() != value)
                    || r.status == StatusCode::NOT_FOUND;
                if stale {
                    out.stale.fetch_add(1, Ordering::Relaxed);
                } else if r.status != StatusCode::OK {
                    out.failed_reads.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
}

async fn readyz_nats(gw: &TestGateway) -> String {
    let r = common::http().get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(r.status, StatusCode::OK, "readyz stays 200: {}", r.text());
    r.json()["nats"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_projector_without_changes_reads_its_writes() {
    let broker = NatsServer::start();
    let app = App::start(&broker.url()).await;
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.url()), &[])).await;
    common::wait_until(Duration::from_secs(10), "nats ok in /readyz", || async {
        readyz_nats(&gw).await == "ok"
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

    assert_eq!(Pairs::get(&through.failed_writes), 0, "{through:?}");
    assert_eq!(Pairs::get(&through.failed_reads), 0, "{through:?}");
    assert_eq!(Pairs::get(&through.pairs), CLIENTS * PAIRS_PER_CLIENT);
    assert_eq!(
        Pairs::get(&through.stale),
        0,
        "stale through the gateway: {through:?}"
    );
    assert!(
        Pairs::get(&direct.stale) * 2 > Pairs::get(&direct.pairs),
        "straight to the services most reads should be stale: {direct:?}"
    );
    // Every read was held until the consumer acked, then served by the read side:
    // none went to the primary (no fence failed, no hold timed out).
    assert_eq!(app.primary_reads.load(Ordering::Relaxed), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_run_loses_no_write_answer_and_serves_no_stale_read() {
    let mut broker = NatsServer::start();
    let app = App::start(&broker.url()).await;
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.url()), &[])).await;
    common::wait_until(Duration::from_secs(10), "nats ok in /readyz", || async {
        readyz_nats(&gw).await == "ok"
    })
    .await;

    let (clients, per_client) = (10, 60);
    let through = Arc::new(Pairs::default());
    let run = tokio::spawn(run_pairs(
        "restart",
        gw.proxy,
        gw.proxy,
        clients,
        per_client,
        through.clone(),
    ));
    common::wait_until(
        Duration::from_secs(20),
        "100 pairs before the crash",
        || async { Pairs::get(&through.pairs) >= 100 },
    )
    .await;
    broker.kill();
    common::wait_until(
        Duration::from_secs(10),
        "nats degraded in /readyz",
        || async { readyz_nats(&gw).await == "degraded" },
    )
    .await;
    common::wait_until(
        Duration::from_secs(20),
        "a write refused while down",
        || async { Pairs::get(&through.failed_writes) >= 1 },
    )
    .await;
    broker.restart();
    common::wait_until(
        Duration::from_secs(20),
        "nats ok again in /readyz",
        || async { readyz_nats(&gw).await == "ok" },
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
    let mut broker = NatsServer::start();
    let app = App::start(&broker.url()).await;
    broker.kill();
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.url()), &[])).await;
    assert_eq!(readyz_nats(&gw).await, "degraded");
    // The command service cannot publish: its own 503 passes through, unchanged.
    let w = common::http()
        .send(Method::PUT, &gw.url("/users/a"), &[], "x")
        .await;
    assert_eq!(w.status, StatusCode::SERVICE_UNAVAILABLE);
    broker.restart();
    common::wait_until(Duration::from_secs(20), "nats ok in /readyz", || async {
        readyz_nats(&gw).await == "ok"
    })
    .await;
    let w = common::http()
        .send(Method::PUT, &gw.url("/users/a"), &[], "x")
        .await;
    assert!(w.status.is_success(), "{}", w.status);
    let token = w.header("consistency-token").expect("a token").to_string();
    let r = common::http()
        .get(&gw.url("/users/a"), &[("consistency-token", &token)])
        .await;
    assert_eq!((r.status, r.text()), (StatusCode::OK, "x".to_string()));
    gw.stop().await;
}

/// End to end with a consumer filtered on `users.>` while other writers fill the
/// stream: the fence's head includes their sequences, and no read waits out
/// `max_wait`. (nats-server 2.9 also moves a filtered consumer's delivered sequence
/// past unmatched messages while a pull request waits; `source::a_filtered_consumer_
/// reaches_the_head_only_through_a_head_read_first` covers the case it does not.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_consumer_is_caught_up_to_the_stream_head() {
    let broker = NatsServer::start();
    let app = App::start_with(&broker.url(), Some("users.>")).await;
    let gw = TestGateway::start(common::config(&gateway_toml(&app, &broker.url()), &[])).await;
    common::wait_until(Duration::from_secs(10), "nats ok in /readyz", || async {
        readyz_nats(&gw).await == "ok"
    })
    .await;
    // Other writers publish to the same stream all along (bounded: 20 s at most).
    let noise = {
        let client = async_nats::connect(broker.url()).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        tokio::spawn(async move {
            for i in 0..4000 {
                let ack = js.publish(format!("noise.{i}"), "n".into()).await;
                let _ = ack.expect("publish").await.expect("PubAck");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let through = Arc::new(Pairs::default());
    run_pairs("filtered", gw.proxy, gw.proxy, 10, 10, through.clone()).await;
    noise.abort();

    assert_eq!(Pairs::get(&through.pairs), 100, "{through:?}");
    assert_eq!(Pairs::get(&through.stale), 0, "{through:?}");
    assert_eq!(Pairs::get(&through.failed_reads), 0, "{through:?}");
    assert_eq!(
        app.primary_reads.load(Ordering::Relaxed),
        0,
        "no read waited out max_wait for a sequence the consumer never gets"
    );
    gw.stop().await;
}
