//! `tidemark demo --postgres URL` against a real PostgreSQL started by the test:
//! the walkthrough ends by itself with a stale direct read and a fresh read through
//! the gateway, recreating only its own schema; and its services, which return no
//! positions, read their writes through the gateway (fence + `postgres` source)
//! while the same reads straight to the read service are mostly stale.

mod common;
#[path = "support/postgres.rs"]
mod pg;

use std::time::Duration;

use http::{Method, StatusCode};
use tidemark::demo::postgres::{demo_config, PgBackend};
use tidemark::demo::walkthrough::DemoOptions;
use tokio_util::sync::CancellationToken;

use common::TestGateway;
use pg::Postgres;

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
async fn the_postgres_walkthrough_completes_and_keeps_to_its_schema() {
    let pg = Postgres::start();
    pg.psql("CREATE TABLE public.keep_me (n int); INSERT INTO public.keep_me VALUES (42);");
    // Twice: the second run drops the first run's schema and starts afresh.
    for run in 0..2 {
        let walked = tokio::time::timeout(
            Duration::from_secs(30),
            tidemark::demo::postgres::run(options(), &pg.url(), CancellationToken::new()),
        )
        .await
        .expect("the walkthrough ends by itself")
        .unwrap_or_else(|e| panic!("run {run}: the walkthrough fails: {e} ({e:?})"));
        assert!(
            walked.direct_was_stale(),
            "run {run}: the direct read should be stale: {walked:?}"
        );
        assert!(walked.gateway_version >= walked.written, "{walked:?}");
        // A fresh schema: the walkthrough's write is the log's first event.
        assert_eq!(walked.written, 1, "run {run}: {walked:?}");
        assert_eq!(
            pg.psql("SELECT count(*) FROM tidemark_demo.events"),
            "1",
            "run {run}"
        );
    }
    assert_eq!(pg.psql("SELECT n FROM public.keep_me"), "42");
    assert_eq!(
        pg.psql("SELECT string_agg(table_name, ',' ORDER BY table_name) FROM information_schema.tables WHERE table_schema = 'tidemark_demo'"),
        "checkpoints,events,users"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_url_is_a_clear_error() {
    let port = common::closed_port();
    let error = tidemark::demo::postgres::run(
        options(),
        &format!("postgres://postgres:secret@127.0.0.1:{port}/postgres"),
        CancellationToken::new(),
    )
    .await
    .expect_err("nothing listens there");
    let text = error.to_string();
    assert!(text.contains("--postgres"), "{text}");
    assert!(!text.contains("secret"), "the password leaked: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_services_read_their_writes_through_the_gateway() {
    let pg = Postgres::start();
    let shutdown = CancellationToken::new();
    let backend = PgBackend::start(&pg.url(), LAG, shutdown.clone())
        .await
        .expect("the demo backend starts");
    let config = demo_config(
        &backend,
        &pg.url(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .expect("the demo's config is valid");
    let gw = TestGateway::start(config).await;
    let http = common::http();

    let (mut direct_stale, mut gateway_stale) = (0, 0);
    const PAIRS: usize = 20;
    for i in 0..PAIRS {
        let id = format!("d{i}");
        let body = format!(r#"{{"n":{i}}}"#);
        // Straight to the services.
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
        // Through the gateway, with the token its fence made.
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
    // A body that is not a JSON object is refused and writes nothing.
    let bad = http.put_json(&gw.url("/users/x"), &[], "[1]").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        pg.psql("SELECT count(*) FROM tidemark_demo.events WHERE user_id = 'x'"),
        "0"
    );
    gw.stop().await;
    shutdown.cancel();
}
