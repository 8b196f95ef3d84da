//! `tidemark demo --nats URL` against a real `nats-server -js` started by the test:
//! the walkthrough ends by itself with a stale direct read and a fresh read through
//! the gateway; and its services (a command service that waits for the PubAck and
//! answers no position, a durable pull consumer that acks after applying) read their
//! writes through the gateway (`nats_stream` fence + `nats` source) while the same
//! reads straight to the read service are mostly stale.

mod common;
#[path = "support/nats.rs"]
mod nats_server;

use std::time::Duration;

use http::{Method, StatusCode};
use tidemark::demo::nats::{demo_config, NatsBackend};
use tidemark::demo::walkthrough::DemoOptions;
use tokio_util::sync::CancellationToken;

use common::TestGateway;
use nats_server::NatsServer;

const LAG: Duration = Duration::from_millis(300);

fn options() -> DemoOptions {
    DemoOptions {
        lag: LAG,
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        once: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_walkthrough_completes_and_recreates_its_stream() {
    let nats = NatsServer::start();
    // Twice: the second run deletes the first run's stream and starts afresh.
    for run in 0..2 {
        let walked = tokio::time::timeout(
            Duration::from_secs(30),
            tidemark::demo::nats::run(options(), &nats.url(), CancellationToken::new()),
        )
        .await
        .expect("the walkthrough ends by itself")
        .unwrap_or_else(|e| panic!("run {run}: the walkthrough fails: {e} ({e:?})"));
        assert!(
            walked.direct_was_stale(),
            "run {run}: the direct read should be stale: {walked:?}"
        );
        assert!(walked.gateway_version >= walked.written, "{walked:?}");
        assert_eq!(walked.written, 1, "run {run}: a fresh stream: {walked:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_jetstream_or_no_server_is_a_clear_error() {
    let port = common::closed_port();
    let error = tidemark::demo::nats::run(
        options(),
        &format!("nats://127.0.0.1:{port}"),
        CancellationToken::new(),
    )
    .await
    .expect_err("nothing listens there");
    assert!(error.to_string().contains("--nats"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_services_read_their_writes_through_the_gateway() {
    let nats = NatsServer::start();
    let shutdown = CancellationToken::new();
    let backend = NatsBackend::start(&nats.url(), LAG, shutdown.clone())
        .await
        .expect("the demo backend starts");
    let config = demo_config(
        &backend,
        &nats.url(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("the demo's config is valid");
    let gw = TestGateway::start(config).await;
    let http = common::http();

    let (mut direct_stale, mut gateway_stale) = (0, 0);
    const PAIRS: usize = 20;
    for i in 0..PAIRS {
        let body = format!(r#"{{"n":{i}}}"#);
        let id = format!("d{i}");
        let w = http
            .put_json(
                &format!("http://{}/users/{id}", backend.command_addr),
                &[],
                &body,
            )
            .await;
        assert_eq!(w.status, StatusCode::OK, "{}", w.text());
        assert!(w.header("write-position").is_none());
        let r = http
            .get(&format!("http://{}/users/{id}", backend.read_addr), &[])
            .await;
        if r.version() < w.version() {
            direct_stale += 1;
        }
        let id = format!("g{i}");
        let w = http
            .put_json(&gw.url(&format!("/users/{id}")), &[], &body)
            .await;
        assert_eq!(w.status, StatusCode::OK, "{}", w.text());
        let token = w.header("consistency-token").expect("a token").to_string();
        let r = http
            .get(
                &gw.url(&format!("/users/{id}")),
                &[("consistency-token", &token)],
            )
            .await;
        if r.version() < w.version() || r.json()["n"] != i {
            gateway_stale += 1;
        }
    }
    assert_eq!(gateway_stale, 0, "stale reads through the gateway");
    assert!(
        direct_stale * 2 > PAIRS,
        "straight to the read service most reads should be stale: {direct_stale} of {PAIRS}"
    );

    // PATCH merges over the last write and DELETE removes, both read back fresh.
    let w = http
        .put_json(&gw.url("/users/p"), &[], r#"{"a":1,"b":2}"#)
        .await;
    let token = w.header("consistency-token").unwrap().to_string();
    let w = http
        .send(
            Method::PATCH,
            &gw.url("/users/p"),
            &[("consistency-token", &token)],
            r#"{"b":null,"c":3}"#,
        )
        .await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.text());
    let token = w.header("consistency-token").unwrap().to_string();
    let r = http
        .get(&gw.url("/users/p"), &[("consistency-token", &token)])
        .await;
    assert_eq!(
        r.json(),
        serde_json::json!({"a": 1, "c": 3, "id": "p", "version": w.version()})
    );
    let d = http
        .send(
            Method::DELETE,
            &gw.url("/users/p"),
            &[("consistency-token", &token)],
            "",
        )
        .await;
    assert_eq!(d.status, StatusCode::NO_CONTENT);
    let token = d.header("consistency-token").unwrap().to_string();
    let r = http
        .get(&gw.url("/users/p"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
    let bad = http.put_json(&gw.url("/users/x"), &[], "[1]").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    gw.stop().await;
    shutdown.cancel();
}
