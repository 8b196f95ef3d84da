//! What an operator sees from `tidemark run` at the default log level (the built
//! binary, JSON lines on stderr): hold timeouts as one `warn` line per route per
//! interval (not one per request), a failing checkpoint poll once, reloads at `info`,
//! start-up's config warnings, writes on a log no projection consumes (counted and
//! logged once); the access log (`server.access_log = true`) with route, source and
//! wait; and `Retry-After` from the measured lag, not the slow rate of a sparse log.

#[path = "support/binary.rs"]
mod binary;
mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use binary::Running;
use common::{closed_port, http, wait_until};
use http::Method;
use tokio::net::TcpListener;

/// Command and read service in one: a PUT under `/items/` reports the next `items`
/// position; a PUT under `/orphans/` reports a bare `5` (the route's `default_log`).
async fn backend() -> SocketAddr {
    let head = Arc::new(AtomicU64::new(0));
    let app = Router::new().fallback(any(move |req: Request| {
        let head = head.clone();
        async move {
            let mut resp = Response::new(AxumBody::from("{}"));
            if req.method() == Method::PUT {
                let v = if req.uri().path().starts_with("/items/") {
                    format!("items={}", head.fetch_add(1, Ordering::SeqCst) + 1)
                } else {
                    "5".to_string()
                };
                resp.headers_mut()
                    .insert("write-position", HeaderValue::from_str(&v).unwrap());
            }
            resp
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn config_file(dir: &std::path::Path, backend: SocketAddr) -> std::path::PathBuf {
    let file = dir.join("tidemark.toml");
    let dead = closed_port();
    std::fs::write(
        &file,
        format!(
            r#"
[server]
access_log = true
[upstreams.app]
url = "http://{backend}"
[upstreams.polled]
url = "http://{backend}"
[projections.items]
logs = ["items"]
[projections.polled]
logs = ["events"]
sources = ["poll"]
poll_url = "http://127.0.0.1:{dead}/checkpoint"
poll_interval = "50ms"
[[routes]]
name = "write-item"
kind = "write"
methods = ["PUT"]
path = "/items/{{id}}"
upstream = "app"
default_log = "items"
[[routes]]
name = "write-orphan"
kind = "write"
methods = ["PUT"]
path = "/orphans/{{id}}"
upstream = "app"
default_log = "item"
[[routes]]
name = "read-item"
kind = "read"
methods = ["GET"]
path = "/items/{{id}}"
upstream = "app"
projection = "items"
max_wait = "50ms"
on_timeout = "error"
[[routes]]
name = "read-polled"
kind = "read"
methods = ["GET"]
path = "/polled/{{id}}"
upstream = "polled"
projection = "polled"
"#
        ),
    )
    .unwrap();
    file
}

fn env() -> Vec<(&'static str, String)> {
    vec![
        ("TIDEMARK__SERVER__LISTEN", "127.0.0.1:0".into()),
        ("TIDEMARK__SERVER__ADMIN_LISTEN", "127.0.0.1:0".into()),
        (
            "TIDEMARK_SECRET",
            "0123456789abcdef0123456789abcdef-test".into(),
        ),
    ]
}

async fn write(gw: &Running, path: &str) -> String {
    let w = http().send(Method::PUT, &gw.url(path), &[], "{}").await;
    assert_eq!(w.status, 200, "{}", w.text());
    w.header("consistency-token")
        .unwrap_or_default()
        .to_string()
}

async fn push(gw: &Running, pos: u64) {
    let r = http()
        .put_json(
            &gw.admin_url("/projections/items/checkpoint"),
            &[],
            &format!("{{\"items\": {pos}}}"),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
}

/// The value of the metric line starting with `series` (labels included).
async fn metric(gw: &Running, series: &str) -> f64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn level(line: &serde_json::Value) -> &str {
    line["level"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_level_logs_are_few_and_say_what_happened() {
    let dir = tempfile::tempdir().unwrap();
    let gw = Running::start(&config_file(dir.path(), backend().await), &env());

    // Start-up: the config warning `tidemark check` prints.
    let warning = gw.wait_message("no projection consumes log `item`").await;
    assert_eq!(level(&warning), "WARN");

    // Retry-After on a sparse log: one write every 1.5 s applied quickly reads as a
    // slow rate (2/3 position per second, so ~4.5 s for three more); the projection's
    // measured lag is ~50 ms, and Retry-After says 1 (a whole second, the least HTTP
    // can say), the body the estimate itself.
    write(&gw, "/items/1").await;
    push(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    write(&gw, "/items/2").await;
    push(&gw, 2).await;
    let mut token = String::new();
    for id in 3..=5 {
        token = write(&gw, &format!("/items/{id}")).await;
    }

    // 20 reads time out: one `warn` line for the route, not twenty.
    let mut reads = Vec::new();
    for _ in 0..20 {
        let url = gw.url("/items/5");
        let token = token.clone();
        reads.push(tokio::spawn(async move {
            http()
                .get(&url, &[("consistency-token", token.as_str())])
                .await
        }));
    }
    for r in reads {
        let r = r.await.unwrap();
        assert_eq!(r.status, 503, "{}", r.text());
        assert_eq!(r.header("retry-after"), Some("1"), "{}", r.text());
        let ms = r.json()["retry_after_ms"].as_u64().unwrap();
        assert!(ms < 1000, "the estimate is the lag, not the rate: {ms} ms");
    }
    assert_eq!(
        metric(
            &gw,
            "tidemark_hold_timeouts_total{route=\"read-item\",action=\"error\"}"
        )
        .await,
        20.0
    );
    let timeouts = gw.messages("held reads reached max_wait");
    assert_eq!(timeouts.len(), 1, "rate-limited: {timeouts:#?}");
    assert_eq!(level(&timeouts[0]), "WARN");
    assert_eq!(timeouts[0]["fields"]["route"], "read-item");
    assert_eq!(timeouts[0]["fields"]["projection"], "items");

    // Writes on a log no projection consumes: counted each, logged once.
    for id in 1..=3 {
        write(&gw, &format!("/orphans/{id}")).await;
    }
    assert_eq!(
        metric(
            &gw,
            "tidemark_unconsumed_positions_total{route=\"write-orphan\"}"
        )
        .await,
        3.0
    );
    let unconsumed = gw.messages("name logs no projection consumes");
    assert_eq!(unconsumed.len(), 1, "{unconsumed:#?}");
    assert_eq!(level(&unconsumed[0]), "WARN");
    assert_eq!(unconsumed[0]["fields"]["route"], "write-orphan");

    // A failing poll source: `warn` once for the burst, however many polls fail.
    let poll = gw.wait_message("checkpoint poll failing").await;
    assert_eq!(level(&poll), "WARN");
    wait_until(Duration::from_secs(10), "several polls failed", || async {
        metric(&gw, "tidemark_store_errors_total{op=\"poll\"}").await >= 5.0
    })
    .await;
    assert_eq!(gw.messages("checkpoint poll failing").len(), 1);

    // A reload and its outcome at `info`.
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let reloaded = gw.wait_message("config reloaded").await;
    assert_eq!(level(&reloaded), "INFO");

    // The access log: one `info` line per client request, under tidemark::access.
    push(&gw, 5).await;
    let fresh = http()
        .get(
            &gw.url("/items/5"),
            &[("consistency-token", token.as_str())],
        )
        .await;
    assert_eq!(fresh.status, 200);
    wait_until(Duration::from_secs(10), "the last access line", || async {
        gw.lines()
            .iter()
            .filter(|l| l["target"] == "tidemark::access")
            .count()
            == 5 + 20 + 3 + 1
    })
    .await;
    let access: Vec<String> = gw
        .lines()
        .iter()
        .filter(|l| l["target"] == "tidemark::access")
        .inspect(|l| assert_eq!(level(l), "INFO"))
        .map(|l| l["fields"]["message"].as_str().unwrap().to_string())
        .collect();
    assert!(
        access[0].contains("\"PUT /items/1 HTTP/1.1\" 200 route=write-item source=- wait_ms=-"),
        "{access:#?}"
    );
    assert!(
        access[5].contains("\"GET /items/5 HTTP/1.1\" 503 route=read-item source=- wait_ms=-"),
        "{access:#?}"
    );
    let last = access.last().unwrap();
    assert!(
        last.contains("\"GET /items/5 HTTP/1.1\" 200 route=read-item source=projection wait_ms="),
        "{last}"
    );
    assert!(
        access.iter().all(|l| !l.contains("eyJ")),
        "no token in the access log"
    );
}
