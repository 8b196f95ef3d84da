//! The reverse proxy: header hygiene both ways, forwarding headers, streaming large
//! bodies, error answers, passthrough upgrades.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use bytes::Bytes;
use common::{config, http, wait_until, TestGateway};
use futures_util::StreamExt;
use http::Method;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// An upstream that answers with the request's headers as JSON, and sets response
/// headers a proxy must not pass on.
async fn echo_upstream() -> SocketAddr {
    async fn echo(req: Request) -> Response {
        let headers: BTreeMap<String, Vec<String>> = req
            .headers()
            .keys()
            .map(|k| {
                let vals = req
                    .headers()
                    .get_all(k)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_string())
                    .collect();
                (k.to_string(), vals)
            })
            .collect();
        let path = req.uri().path().to_string();
        if path == "/big" {
            // 5 MiB in 64 KiB chunks, streamed.
            let chunks =
                (0..80u8).map(|i| Ok::<_, std::io::Error>(Bytes::from(vec![i; 64 * 1024])));
            return Response::new(AxumBody::from_stream(futures_util::stream::iter(chunks)));
        }
        if path == "/upload" {
            let bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
                .await
                .unwrap();
            let sum: u64 = bytes.iter().map(|b| *b as u64).sum();
            return Response::new(AxumBody::from(format!("{} {}", bytes.len(), sum)));
        }
        if path == "/slow" {
            std::future::pending::<()>().await;
        }
        let mut resp = Response::new(AxumBody::from(serde_json::to_string(&headers).unwrap()));
        let h = resp.headers_mut();
        h.insert("connection", HeaderValue::from_static("x-upstream-secret"));
        h.insert("x-upstream-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("write-position", HeaderValue::from_static("users=9"));
        h.insert("projection-checkpoint", HeaderValue::from_static("users=9"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
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

fn passthrough_config(upstream: &str, extra: &str) -> String {
    format!(
        r#"
[upstreams.echo]
url = "{upstream}"
timeout = "300ms"
{extra}
[[routes]]
name = "all"
kind = "passthrough"
path = "/{{*rest}}"
upstream = "echo"
"#
    )
}

#[tokio::test]
async fn hop_by_hop_and_internal_headers_are_stripped_both_ways() {
    let up = echo_upstream().await;
    let gw = TestGateway::start(config(
        &passthrough_config(&format!("http://{up}"), ""),
        &[],
    ))
    .await;
    let resp = http()
        .get(
            &gw.url("/anything"),
            &[
                ("connection", "x-client-secret"),
                ("x-client-secret", "1"),
                ("proxy-authorization", "Basic Zm9vOmJhcg=="),
                ("te", "trailers"),
                ("write-position", "users=999"),
                ("projection-checkpoint", "users=999"),
                ("consistency-min-position", "users=999"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-custom", "kept"),
            ],
        )
        .await;
    assert_eq!(resp.status, StatusCode::OK);
    let seen = resp.json();
    for gone in [
        "connection",
        "x-client-secret",
        "proxy-authorization",
        "te",
        "write-position",
        "projection-checkpoint",
        "consistency-min-position",
    ] {
        assert!(seen.get(gone).is_none(), "upstream saw {gone}: {seen}");
    }
    assert_eq!(seen["x-custom"][0], "kept");
    // The upstream sees its own authority as Host, as with the previous client.
    assert_eq!(seen["host"][0], up.to_string());
    // Forwarding headers: the spoofed entry is replaced (no trusted hops).
    assert_eq!(seen["x-forwarded-for"][0], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"][0], "http");
    assert_eq!(seen["x-forwarded-host"][0], gw.proxy.to_string());
    // And on the way back.
    for gone in [
        "x-upstream-secret",
        "keep-alive",
        "write-position",
        "projection-checkpoint",
    ] {
        assert!(resp.header(gone).is_none(), "client saw {gone}");
    }
    assert_eq!(resp.header("x-kept"), Some("yes"));
}

#[tokio::test]
async fn trusted_hops_keep_the_last_entries_and_append_the_peer() {
    let up = echo_upstream().await;
    let gw = TestGateway::start(config(
        &passthrough_config(&format!("http://{up}"), ""),
        &[("TIDEMARK__SERVER__TRUSTED_HOPS", "1".into())],
    ))
    .await;
    let resp = http()
        .get(&gw.url("/x"), &[("x-forwarded-for", "6.6.6.6, 10.1.1.1")])
        .await;
    assert_eq!(resp.json()["x-forwarded-for"][0], "10.1.1.1, 127.0.0.1");
}

#[tokio::test]
async fn five_mib_bodies_stream_intact_both_ways() {
    let up = echo_upstream().await;
    let gw = TestGateway::start(config(
        &passthrough_config(&format!("http://{up}"), ""),
        &[],
    ))
    .await;
    let upload: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let want_sum: u64 = upload.iter().map(|b| *b as u64).sum();
    let resp = http()
        .send(Method::POST, &gw.url("/upload"), &[], upload)
        .await;
    assert_eq!(resp.text(), format!("{} {want_sum}", 5 * 1024 * 1024));

    let resp = http().get(&gw.url("/big"), &[]).await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.body.len(), 80 * 64 * 1024);
    for (i, chunk) in resp.body.chunks(64 * 1024).enumerate() {
        assert!(chunk.iter().all(|b| *b == i as u8), "chunk {i} corrupted");
    }
}

#[tokio::test]
async fn errors_are_problem_json_404_502_504() {
    let up = echo_upstream().await;
    let dead = common::closed_port();
    let toml = format!(
        r#"
[upstreams.echo]
url = "http://{up}"
timeout = "300ms"
[upstreams.dead]
url = "http://127.0.0.1:{dead}"
[[routes]]
name = "dead"
kind = "passthrough"
path = "/dead"
upstream = "dead"
[[routes]]
name = "slow"
kind = "passthrough"
path = "/slow"
upstream = "echo"
"#
    );
    let gw = TestGateway::start(config(&toml, &[])).await;
    let client = http();

    let r = client.get(&gw.url("/nowhere"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["type"], "urn:tidemark:problem:no-route");

    let r = client.get(&gw.url("/dead"), &[]).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["status"], 502);

    let r = client.get(&gw.url("/slow"), &[]).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.json()["detail"].as_str().unwrap().contains("echo"));
}

/// An upstream that switches protocols on request and then echoes bytes.
async fn upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    buf.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                assert!(
                    head.contains("upgrade: echo"),
                    "upgrade header forwarded: {head}"
                );
                sock.write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n").await.unwrap();
                let mut data = [0u8; 1024];
                loop {
                    let n = sock.read(&mut data).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    sock.write_all(&data[..n]).await.unwrap();
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn passthrough_routes_carry_protocol_upgrades() {
    let up = upgrade_upstream().await;
    let gw = TestGateway::start(config(
        &passthrough_config(&format!("http://{up}"), ""),
        &[],
    ))
    .await;
    let mut sock = TcpStream::connect(gw.proxy).await.unwrap();
    sock.write_all(b"GET /ws HTTP/1.1\r\nhost: gw\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            sock.read(&mut byte).await.unwrap(),
            1,
            "connection closed early"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    sock.write_all(b"ping through the tunnel").await.unwrap();
    let mut got = vec![0u8; 23];
    sock.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping through the tunnel");
}

#[tokio::test]
async fn admin_health_and_readiness_answer() {
    let up = echo_upstream().await;
    let gw = TestGateway::start(config(
        &passthrough_config(&format!("http://{up}"), ""),
        &[],
    ))
    .await;
    let client = http();
    assert_eq!(
        client.get(&gw.admin_url("/healthz"), &[]).await.status,
        StatusCode::OK
    );
    let ready = client.get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["store"], "memory");
    wait_until(
        std::time::Duration::from_secs(5),
        "metrics page",
        || async { client.get(&gw.admin_url("/metrics"), &[]).await.status == StatusCode::OK },
    )
    .await;
}

/// An upstream whose `/stream` sends its headers and a first chunk at once and the
/// rest once `release` is set; it counts the connections it accepts.
async fn streaming_upstream() -> (SocketAddr, watch::Sender<bool>, Arc<AtomicUsize>) {
    let (release, released) = watch::channel(false);
    let accepted = Arc::new(AtomicUsize::new(0));
    let app = Router::new().fallback(any(move |req: Request| {
        let mut released = released.clone();
        async move {
            if req.uri().path() != "/stream" {
                return Response::new(AxumBody::from("plain"));
            }
            let rest = async move {
                let _ = released.wait_for(|r| *r).await;
                Ok::<_, std::io::Error>(Bytes::from("end"))
            };
            let chunks = futures_util::stream::once(async { Ok(Bytes::from("start ")) })
                .chain(futures_util::stream::once(rest));
            Response::new(AxumBody::from_stream(chunks))
        }
    }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let app = app.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    tower::ServiceExt::oneshot(app.clone(), req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, release, accepted)
}

/// `tidemark_upstream_queued_requests{upstream="capped",instance="default"}` from the
/// admin listener.
async fn queued(gw: &TestGateway) -> f64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(
                "tidemark_upstream_queued_requests{upstream=\"capped\",instance=\"default\"} ",
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no queued gauge for `capped`:\n{text}"))
}

#[tokio::test]
async fn a_request_queued_past_the_timeout_gets_504_and_the_pool_recovers() {
    let (up, release, accepted) = streaming_upstream().await;
    let toml = format!(
        r#"
[upstreams.capped]
url = "http://{up}"
timeout = "1s"
max_connections = 1
[[routes]]
name = "all"
kind = "passthrough"
path = "/{{*rest}}"
upstream = "capped"
"#
    );
    let gw = TestGateway::start(config(&toml, &[])).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<Bytes>>();

    // The only connection stays busy while the client reads this body slowly.
    let streaming = client
        .get(gw.url("/stream").parse().unwrap())
        .await
        .expect("headers arrive at once");
    assert_eq!(streaming.status(), StatusCode::OK);
    let mut body = streaming.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "start ");

    // The next request waits for a connection, in view of the gauge, then times out.
    let waiting = {
        let url = gw.url("/plain");
        tokio::spawn(async move { http().get(&url, &[]).await })
    };
    wait_until(Duration::from_secs(5), "one request queued", || async {
        queued(&gw).await == 1.0
    })
    .await;
    let r = waiting.await.unwrap();
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:tidemark:problem:upstream-timeout");
    assert_eq!(queued(&gw).await, 0.0);

    // The slow body ends: its connection serves the next request.
    release.send_replace(true);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "end");
    let r = http().get(&gw.url("/plain"), &[]).await;
    assert_eq!((r.status, r.text().as_str()), (StatusCode::OK, "plain"));
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one connection throughout"
    );
}
