//! A read whose connection to one instance fails is retried once on another that can
//! serve it, and the failed instance is kept out of the rotation for `eject_for`:
//! with one replica black-holed (its accept queue full: SYNs dropped) or resetting
//! every connection, 10 of 10 reads are answered, none later than
//! `connect_timeout` + 2 s. Errors name the instance.

mod common;
mod ops_support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use ops_support::Upstream;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

use common::{config, http, TestGateway};

/// A listener that never accepts, its accept queue filled: further SYNs are dropped,
/// so connecting to it hangs (as to a host whose backlog overflowed). Keep the
/// returned value alive.
async fn black_hole() -> (SocketAddr, tokio::net::TcpListener, Vec<TcpStream>) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    // Bounded: the queue holds a handful (backlog + 1 on Linux).
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => return (addr, listener, fillers),
        }
    }
    panic!("the accept queue never filled");
}

/// A listener that accepts every connection and resets it at once.
async fn resetter() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // A zero linger resets at once (no blocking on drop, which the
            // deprecation warns of for a non-zero linger).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    addr
}

/// Upstream `name` (unique per test: the metrics recorder is the process's) with
/// instances `a` (bad) and `b` (good).
fn toml(name: &str, bad: SocketAddr, good: &Upstream) -> String {
    format!(
        r#"
[upstreams.{name}]
instances = {{ a = "http://{bad}", b = "{good}" }}
connect_timeout = "500ms"

[projections.users]
logs = ["users"]

[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "{name}"
projection = "users"
"#,
        good = good.url()
    )
}

/// Ten reads, one after the other: all answered 200 by `b`, each within
/// `connect_timeout` + 2 s, and with `b`'s own `Host` (the first, retried from `a`,
/// included), not the client's or `a`'s.
async fn ten_reads(gw: &TestGateway, good: &Upstream) {
    let client = http();
    for n in 0..10 {
        let started = Instant::now();
        let r = client
            .get(&gw.url(&format!("/users/{n}")), &[("host", "app.example")])
            .await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::OK, "read {n}: {}", r.text());
        assert_eq!(r.json()["upstream"], "view");
        assert_eq!(r.json()["host"], good.addr.to_string(), "read {n}");
        assert!(took < Duration::from_millis(2500), "read {n} took {took:?}");
    }
}

#[tokio::test]
async fn reads_survive_a_black_holed_replica() {
    let (bad, _listener, _fillers) = black_hole().await;
    let good = Upstream::start("view").await;
    let gw = TestGateway::start(config(&toml("black-holed", bad, &good), &[])).await;
    ten_reads(&gw, &good).await;
    let metrics = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains(r#"tidemark_upstream_errors_total{upstream="black-holed",instance="a",kind="connect"} 1"#),
        "one connect failure on `a`, then it is ejected:\n{metrics}"
    );
}

#[tokio::test]
async fn reads_survive_a_replica_that_resets_connections() {
    let bad = resetter().await;
    let good = Upstream::start("view").await;
    let gw = TestGateway::start(config(&toml("resetting", bad, &good), &[])).await;
    ten_reads(&gw, &good).await;
}

#[tokio::test]
async fn an_ejected_instance_returns_after_eject_for_and_errors_name_the_instance() {
    let (bad, _listener, _fillers) = black_hole().await;
    // `b` down too: nothing to retry on; every instance ejected is used anyway.
    let dead = common::closed_port();
    let toml = format!(
        r#"
[upstreams.view]
instances = {{ a = "http://{bad}", b = "http://127.0.0.1:{dead}" }}
connect_timeout = "300ms"
eject_for = "1s"

[[routes]]
name = "all"
kind = "passthrough"
path = "/{{*rest}}"
upstream = "view"
"#
    );
    let gw = TestGateway::start(config(&toml, &[])).await;
    let client = http();
    let mut named = Vec::new();
    for _ in 0..4 {
        let r = client.get(&gw.url("/x"), &[]).await;
        assert!(r.status == StatusCode::BAD_GATEWAY, "{}", r.text());
        let detail = r.json()["detail"].as_str().unwrap_or_default().to_string();
        assert!(detail.contains("\"view\""), "{detail}");
        named.push(detail);
    }
    assert!(
        named.iter().any(|d| d.contains("instance \"a\""))
            && named.iter().any(|d| d.contains("instance \"b\"")),
        "both instances were tried and named: {named:?}"
    );
}
