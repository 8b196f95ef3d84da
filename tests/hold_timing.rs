//! Hold timing under paused tokio time: `max_wait` is kept to the millisecond, and a
//! checkpoint releases a held read at the instant it arrives.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::Request;
use http_body_util::BodyExt;
use tidemark::cache::{memory::MemoryCache, Cache};
use tidemark::checkpoint::Registry;
use tidemark::config::SourceKind;
use tidemark::gateway::Gateway;
use tidemark::position::PositionVector;
use tidemark::token::KeyRing;
use tokio::time::Instant;

/// A gateway whose read route holds for `max_wait` (plus `extra` route keys), in front
/// of an upstream that is down (a forwarded read shows as 502).
fn gateway(max_wait: &str, extra: &str) -> (Arc<Gateway>, Arc<Registry>, KeyRing) {
    let port = common::closed_port();
    let toml = format!(
        r#"
[upstreams.view]
url = "http://127.0.0.1:{port}"
[projections.users]
logs = ["users"]
[[routes]]
name = "read"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "{max_wait}"
on_timeout = "error"
{extra}
"#
    );
    let config = Arc::new(common::config(&toml, &[]));
    let registry = Arc::new(Registry::new(&config));
    let ring = KeyRing::from_config(&config.token).unwrap();
    let gw = Gateway::new(
        config,
        registry.clone(),
        Cache::Memory(MemoryCache::new(16, 1 << 20)),
        None,
    )
    .unwrap();
    (Arc::new(gw), registry, ring)
}

fn read(ring: &KeyRing, required: &str) -> Request<tidemark::proxy::Body> {
    let token = ring.mint(
        "s1",
        &PositionVector::parse(required, None).unwrap(),
        SystemTime::now(),
    );
    Request::get("/users/1")
        .header("consistency-token", token)
        .body(tidemark::proxy::empty())
        .unwrap()
}

const PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 40000);

#[tokio::test(start_paused = true)]
async fn max_wait_is_kept_to_the_millisecond() {
    for wait in [1u64, 300, 2500] {
        let (gw, _registry, ring) = gateway(&format!("{wait}ms"), "");
        let started = Instant::now();
        let resp = gw.handle_request(read(&ring, "users=5"), PEER).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_millis(wait),
            "max_wait {wait}ms"
        );
        assert_eq!(resp.status(), 503);
        let body: serde_json::Value =
            serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
        assert_eq!(body["waited_ms"], wait);
    }
}

#[tokio::test(start_paused = true)]
async fn a_checkpoint_releases_the_held_read_the_instant_it_arrives() {
    let (gw, registry, ring) = gateway("10s", "");
    let started = Instant::now();
    let held = tokio::spawn(gw.clone().handle_request(read(&ring, "users=5"), PEER));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(registry.held_total(), 1);
    // A lower checkpoint releases nothing.
    registry.get("users").unwrap().apply(
        None,
        &PositionVector::parse("users=4", None).unwrap(),
        SourceKind::Push,
        Instant::now(),
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(registry.held_total(), 1);
    registry.get("users").unwrap().apply(
        None,
        &PositionVector::parse("users=5", None).unwrap(),
        SourceKind::Push,
        Instant::now(),
    );
    let resp = held.await.unwrap();
    // Released at 150 ms and forwarded (the upstream is down here: 502), not at 10 s.
    assert_eq!(started.elapsed(), Duration::from_millis(150));
    assert_eq!(resp.status(), 502);
    assert_eq!(registry.held_total(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_staleness_budget_keeps_lagging_instances_from_serving_even_without_a_token() {
    let (gw, registry, _) = gateway("40ms", "staleness_budget = \"100ms\"");
    let tokenless = || {
        Request::get("/users/1")
            .body(tidemark::proxy::empty())
            .unwrap()
    };
    let users = registry.get("users").unwrap();
    // The gateway saw a write reach users=7; the instance has not applied it.
    users.record_write(
        &PositionVector::parse("users=7", None).unwrap(),
        Instant::now(),
    );

    // 50 ms later the instance is 50 ms behind: within budget, forwarded at once (the
    // upstream is down here, so forwarding shows as a 502).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let resp = gw.clone().handle_request(tokenless(), PEER).await;
    assert_eq!(
        (resp.status().as_u16(), started.elapsed()),
        (502, Duration::ZERO)
    );

    // 150 ms after the write it is over budget: held, then the timeout action.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let resp = gw.clone().handle_request(tokenless(), PEER).await;
    assert_eq!(
        (resp.status().as_u16(), started.elapsed()),
        (503, Duration::from_millis(40))
    );

    // Once it applies the write it serves again.
    users.apply(
        None,
        &PositionVector::parse("users=7", None).unwrap(),
        SourceKind::Push,
        Instant::now(),
    );
    let resp = gw.clone().handle_request(tokenless(), PEER).await;
    assert_eq!(resp.status(), 502);
}
