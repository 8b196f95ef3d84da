//! Hardening limits, each answered with the right 4xx: header count and size, token
//! size, cached-write body size, connections, header-read time (slowloris), the admin
//! token on mutating admin endpoints, and key rotation end to end.

mod common;
mod ops_support;

use std::time::Duration;

use http::{Method, StatusCode};
use ops_support::{raw_exchange, read_until_close, status_line, FileGateway, Upstream};
use tokio::io::AsyncWriteExt;

use common::http;

/// A gateway with small limits: `server` and `token` are extra keys of those sections.
fn config(commands: &Upstream, view: &Upstream, server: &str, token: &str) -> String {
    r#"
[server]
max_headers = 20
max_header_bytes = 8192
SERVER

[token]
TOKEN

[cache]
max_request_body_bytes = 1024

[upstreams.commands]
url = "COMMANDS"

[upstreams.view]
url = "VIEW"

[projections.users]
logs = ["users"]

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
default_log = "users"
cache = { key = "user:{id}" }

[[routes]]
name = "write-plain"
kind = "write"
path = "/plain/{id}"
upstream = "commands"
default_log = "users"

[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
max_wait = "100ms"
on_timeout = "error"
cache = { key = "user:{id}" }
"#
    .replace("COMMANDS", &commands.url())
    .replace("VIEW", &view.url())
    .replace("SERVER", server)
    .replace(
        "TOKEN",
        if token.is_empty() {
            "secret_file = \"@DIR@/k1.secret\""
        } else {
            token
        },
    )
}

async fn gateway(server: &str) -> (FileGateway, Upstream, Upstream) {
    let (commands, view) = (
        Upstream::start("commands").await,
        Upstream::start("view").await,
    );
    let gw = FileGateway::start(&config(&commands, &view, server, ""), &[]).await;
    (gw, commands, view)
}

fn get_with_headers(headers: &str) -> Vec<u8> {
    format!("GET /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{headers}\r\n").into_bytes()
}

#[tokio::test]
async fn too_many_headers_are_answered_431() {
    let (gw, _c, _v) = gateway("").await;
    let ok: String = (0..10).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (resp, _) = raw_exchange(gw.proxy, &get_with_headers(&ok), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
    let many: String = (0..30).map(|i| format!("x-h{i}: v\r\n")).collect();
    let (resp, closed) =
        raw_exchange(gw.proxy, &get_with_headers(&many), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 431 "), "{resp}");
    assert!(closed);
}

#[tokio::test]
async fn oversized_headers_are_answered_431() {
    let (gw, _c, _v) = gateway("").await;
    let fits = format!("x-big: {}\r\n", "a".repeat(6000));
    let (resp, _) = raw_exchange(gw.proxy, &get_with_headers(&fits), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
    let big = format!("x-big: {}\r\n", "a".repeat(10_000));
    let (resp, _) = raw_exchange(gw.proxy, &get_with_headers(&big), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 431 "), "{resp}");
}

#[tokio::test]
async fn an_oversized_token_is_answered_400() {
    let (gw, _c, _v) = gateway("").await;
    let token = "a".repeat(5000);
    let r = http()
        .get(&gw.url("/users/1"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["reason"], "oversize");
}

#[tokio::test]
async fn a_cached_write_body_over_the_limit_is_answered_413_before_the_upstream() {
    let (gw, _c, _v) = gateway("").await;
    let big = "x".repeat(2000);
    let r = http()
        .send(Method::PUT, &gw.url("/users/1"), &[], big.clone())
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.json()["type"], "urn:tidemark:problem:payload-too-large");
    assert_eq!(r.json()["limit_bytes"], 1024);

    // Without Content-Length (chunked), the limit holds too.
    let chunked = format!(
        "PUT /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n\
         300\r\n{a}\r\n300\r\n{a}\r\n0\r\n\r\n",
        a = "y".repeat(0x300)
    );
    let (resp, _) = raw_exchange(gw.proxy, chunked.as_bytes(), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 413 "), "{resp}");

    // Neither reached the upstream: the first write it sees is its first.
    let r = http()
        .send(Method::PUT, &gw.url("/users/1"), &[], "x".repeat(1000))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], 1000);
    assert_eq!(
        r.json()["write"],
        1,
        "the refused writes never reached the upstream"
    );
    let r = http()
        .get(
            &gw.url("/users/1"),
            &[("consistency-token", r.header("consistency-token").unwrap())],
        )
        .await;
    assert_eq!(
        r.header("consistency-source"),
        Some("cache"),
        "the write at users=1 is cached"
    );

    // A write route without the cache is not limited.
    let r = http()
        .send(Method::PUT, &gw.url("/plain/1"), &[], big)
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["body_len"], 2000);
}

#[tokio::test]
async fn a_connection_over_max_connections_waits_until_one_closes() {
    let (gw, _c, _v) = gateway("max_connections = 1").await;
    let request = b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n";
    let mut first = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    first.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&got).contains("body_len") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout_at(
            deadline,
            tokio::io::AsyncReadExt::read(&mut first, &mut buf),
        )
        .await
        .expect("the first connection is served")
        .unwrap();
        assert!(n > 0, "the first connection stays open");
        got.extend_from_slice(&buf[..n]);
    }

    // The second connection is queued: no answer while the first is open...
    let mut second = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    second
        .write_all(b"GET /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (early, _) = read_until_close(&mut second, Duration::from_millis(300)).await;
    assert_eq!(early, "", "served while the limit was reached");
    // ...and served once it closes.
    drop(first);
    let (resp, closed) = read_until_close(&mut second, Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
    assert!(closed);
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_line_is_cut_off() {
    let (gw, _c, _v) = gateway("header_read_timeout = \"200ms\"").await;
    let started = tokio::time::Instant::now();
    let (resp, closed) = raw_exchange(gw.proxy, b"GET /users/1 HT", Duration::from_secs(10)).await;
    assert!(closed, "the connection is closed after header_read_timeout");
    assert!(!resp.contains(" 200 "), "{resp}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A complete request is still served.
    let (resp, _) = raw_exchange(gw.proxy, &get_with_headers(""), Duration::from_secs(10)).await;
    assert!(status_line(&resp).contains(" 200 "), "{resp}");
}

#[tokio::test]
async fn mutating_admin_endpoints_need_the_admin_token() {
    let (commands, view) = (
        Upstream::start("commands").await,
        Upstream::start("view").await,
    );
    let text = format!(
        "[admin]\ntoken_env = \"LIMITS_ADMIN\"\n{}",
        config(&commands, &view, "", "")
    );
    let gw = FileGateway::start(&text, &[("LIMITS_ADMIN", "adm1n")]).await;
    let url = gw.admin_url("/projections/users/checkpoint");
    for method in [Method::PUT, Method::DELETE] {
        let r = http()
            .send(method.clone(), &url, &[], r#"{"users": 3}"#)
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        let r = http()
            .send(
                method.clone(),
                &url,
                &[("authorization", "Bearer nope")],
                r#"{"users": 3}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{method}");
        let r = http()
            .send(
                method.clone(),
                &url,
                &[("authorization", "Bearer adm1n")],
                r#"{"users": 3}"#,
            )
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{method}");
    }
    // Reading stays open.
    assert_eq!(
        http().get(&gw.admin_url("/projections"), &[]).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotated_keys_verify_old_tokens_until_the_old_key_is_removed() {
    let (commands, view) = (
        Upstream::start("commands").await,
        Upstream::start("view").await,
    );
    let k1 = config(&commands, &view, "", "");
    let gw = FileGateway::start(&k1, &[]).await;
    let push = http()
        .put_json(
            &gw.admin_url("/projections/users/checkpoint"),
            &[],
            r#"{"users": 100}"#,
        )
        .await;
    assert_eq!(push.status, StatusCode::NO_CONTENT);
    let w = http().put_json(&gw.url("/plain/1"), &[], "{}").await;
    let old = w
        .header("consistency-token")
        .expect("a token signed with k1")
        .to_string();
    let read = |token: String| {
        let url = gw.url("/users/1");
        async move { http().get(&url, &[("consistency-token", &token)]).await }
    };
    assert_eq!(read(old.clone()).await.status, StatusCode::OK);

    // Rotate: sign with k2, keep k1 to verify.
    let rotated = config(
        &commands,
        &view,
        "",
        "kid = \"k2\"\nsecret_file = \"@DIR@/k2.secret\"\n\
         [[token.verify_keys]]\nkid = \"k1\"\nsecret_file = \"@DIR@/k1.secret\"",
    );
    gw.write(&rotated);
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = read(old.clone()).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "the k1 token still verifies: {}",
        r.text()
    );
    assert_eq!(r.header("consistency-source"), Some("projection"));
    let w = http().put_json(&gw.url("/plain/1"), &[], "{}").await;
    let new = w
        .header("consistency-token")
        .expect("a token signed with k2")
        .to_string();
    assert_ne!(new, old);
    assert_eq!(read(new.clone()).await.status, StatusCode::OK);

    // Retire k1.
    let retired = config(
        &commands,
        &view,
        "",
        "kid = \"k2\"\nsecret_file = \"@DIR@/k2.secret\"",
    );
    gw.write(&retired);
    let r = http()
        .send(Method::POST, &gw.admin_url("/reload"), &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let r = read(old).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["reason"], "unknown_key");
    assert_eq!(read(new).await.status, StatusCode::OK);
}
