//! Tracing: W3C `traceparent`/`tracestate` reach the upstream untouched on every kind
//! of route, and each request is one span whose fields (route, kind, source, wait,
//! status) a JSON log line carries, without the client's token.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::HeaderValue;
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::{config, http, wait_until, TestGateway};
use http::Method;
use tokio::net::TcpListener;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// An upstream that answers with the request's headers as JSON; writes (PUT) report a
/// position so the gateway mints a token.
async fn echo_upstream() -> SocketAddr {
    async fn echo(req: Request) -> Response {
        let headers: BTreeMap<String, Vec<String>> = req
            .headers()
            .keys()
            .map(|k| {
                let values = req.headers().get_all(k).iter();
                let values = values.map(|v| v.to_str().unwrap_or("?").to_string());
                (k.to_string(), values.collect())
            })
            .collect();
        let put = req.method() == Method::PUT;
        let mut resp = Response::new(AxumBody::from(serde_json::to_string(&headers).unwrap()));
        if put {
            let h = resp.headers_mut();
            h.insert("write-position", HeaderValue::from_static("users=5"));
        }
        resp
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, Router::new().fallback(any(echo)))
            .await
            .unwrap();
    });
    addr
}

fn gateway_config(upstream: SocketAddr) -> String {
    format!(
        r#"
[upstreams.echo]
url = "http://{upstream}"
[projections.users]
logs = ["users"]
sources = ["push"]
[[routes]]
name = "trace-write"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "echo"
default_log = "users"
[[routes]]
name = "trace-read"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "echo"
projection = "users"
max_wait = "2s"
on_timeout = "error"
[[routes]]
name = "trace-pass"
kind = "passthrough"
path = "/pass/{{*rest}}"
upstream = "echo"
"#
    )
}

/// Log lines written by the process-wide JSON subscriber this test binary installs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let bytes = self.0.lock().unwrap().clone();
        String::from_utf8_lossy(&bytes)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Installs (once) a JSON subscriber at `debug` for tidemark, as `--log-json` with
/// `RUST_LOG=debug` would, writing into memory.
fn logs() -> Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("tidemark=debug")
            .with_writer(move || writer.clone())
            .init();
        captured
    })
    .clone()
}

#[tokio::test]
async fn traceparent_and_tracestate_reach_the_upstream_untouched() {
    let upstream = echo_upstream().await;
    let gw = TestGateway::start(config(&gateway_config(upstream), &[])).await;
    let trace = [("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)];
    let write = http()
        .send(Method::PUT, &gw.url("/users/1"), &trace, "{}")
        .await;
    let token = write
        .header("consistency-token")
        .expect("a token")
        .to_string();
    let mut with_token = trace.to_vec();
    with_token.push(("consistency-token", &token));
    http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 5}"#,
        )
        .await;
    let read = http().get(&gw.url("/users/1"), &with_token).await;
    let pass = http().get(&gw.url("/pass/anything"), &trace).await;
    for (what, resp) in [("write", write), ("read", read), ("passthrough", pass)] {
        assert_eq!(resp.status, 200, "{what}: {}", resp.text());
        let seen = resp.json();
        assert_eq!(
            seen["traceparent"],
            serde_json::json!([TRACEPARENT]),
            "{what}: {seen}"
        );
        assert_eq!(
            seen["tracestate"],
            serde_json::json!([TRACESTATE]),
            "{what}: {seen}"
        );
    }
}

#[tokio::test]
async fn each_request_is_one_span_with_route_kind_source_wait_and_status() {
    let logs = logs();
    let upstream = echo_upstream().await;
    let gw = TestGateway::start(config(&gateway_config(upstream), &[])).await;
    let write = http()
        .send(Method::PUT, &gw.url("/users/7"), &[], "{}")
        .await;
    let token = write.header("consistency-token").unwrap().to_string();
    let read = {
        let url = gw.url("/users/7");
        let token = token.clone();
        tokio::spawn(async move { http().get(&url, &[("consistency-token", &token)]).await })
    };
    wait_until(Duration::from_secs(5), "the read is held", || async {
        gw.held().await == 1
    })
    .await;
    http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 5}"#,
        )
        .await;
    assert_eq!(read.await.unwrap().status, 200);
    let bad = http()
        .get(&gw.url("/users/7"), &[("consistency-token", "not-a-token")])
        .await;
    assert_eq!(bad.status, 400);

    let span_of = |route: &str, status: u64| {
        let lines = logs.lines();
        lines.into_iter().find(|l| {
            l["target"] == "tidemark::access"
                && l["span"]["route"] == route
                && l["span"]["path"] == "/users/7"
                && l["span"]["status"] == status
        })
    };
    wait_until(Duration::from_secs(5), "access lines are logged", || {
        let found = span_of("trace-read", 200).is_some() && span_of("trace-read", 400).is_some();
        async move { found }
    })
    .await;
    let held = span_of("trace-read", 200).unwrap();
    let span = &held["span"];
    assert_eq!(span["name"], "request");
    assert_eq!(span["kind"], "read");
    assert_eq!(span["source"], "projection");
    assert_eq!(span["method"], "GET");
    assert_eq!(span["path"], "/users/7");
    let wait = span["wait_ms"].as_f64().expect("wait_ms is a number");
    assert!(wait > 0.0, "the held read waited: {span}");
    let write = span_of("trace-write", 200).expect("the write's access line");
    assert_eq!(write["span"]["kind"], "write");
    assert!(
        write["span"].get("source").is_none(),
        "writes have no source"
    );

    let text = logs.text();
    assert!(!text.contains(&token), "a token was logged");
    assert!(!text.contains("not-a-token"), "a rejected token was logged");
}
