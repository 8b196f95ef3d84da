//! The read path case by case: timeout actions, the write-through cache and its
//! session isolation, consistency levels, replica choice, the held-reads cap, clients
//! hanging up while held, monotonic reads.

mod common;
mod cqrs;

use std::time::Duration;

use common::{http, wait_until};
use cqrs::{start, Setup};
use tokio::io::AsyncWriteExt;

/// A projection that will not catch up within any test.
const FOREVER: Duration = Duration::from_secs(3600);

fn timeout_route(action: &str) -> String {
    let primary = if action == "primary" {
        "\nprimary = \"commands\""
    } else {
        ""
    };
    format!("max_wait = \"100ms\"\non_timeout = \"{action}\"{primary}")
}

/// A scenario whose reads can only be answered by holding (no write-through cache).
fn uncached(setup: Setup) -> Setup {
    Setup {
        cache: false,
        ..setup
    }
}

async fn write(stack: &cqrs::Stack, id: u64, token: Option<&str>) -> common::Resp {
    let headers: Vec<(&str, &str)> = token
        .map(|t| vec![("consistency-token", t)])
        .unwrap_or_default();
    let r = http()
        .put_json(
            &stack.gateway.url(&format!("/users/{id}")),
            &headers,
            "{\"name\":\"Ada\"}",
        )
        .await;
    assert_eq!(r.status, 200);
    r
}

/// Writes user 1, then reads it back with the writer's token from a projection that
/// never catches up (no cache), so the read ends with the route's `on_timeout` action.
async fn read_after_timeout(action: &str) -> (common::Resp, common::Resp) {
    let stack = start(uncached(Setup {
        lag: FOREVER,
        read_route: timeout_route(action),
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let token = w.header("consistency-token").unwrap();
    let r = http()
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", token)],
        )
        .await;
    (w, r)
}

#[tokio::test]
async fn timeout_primary_answers_from_the_primary() {
    let (w, r) = read_after_timeout("primary").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("consistency-source"), Some("primary"));
    assert_eq!(r.version(), w.version(), "the primary has the write");
    let timing = r.header("server-timing").unwrap();
    assert!(
        timing.starts_with("tidemark;dur=") && timing.contains("desc=\"primary\""),
        "{timing}"
    );
}

#[tokio::test]
async fn timeout_stale_answers_from_the_freshest_instance_and_says_so() {
    let (_, r) = read_after_timeout("stale").await;
    assert_eq!(r.header("consistency-source"), Some("stale"));
    assert_eq!(r.status, 404, "the read model does not have the user yet");
}

#[tokio::test]
async fn timeout_error_is_a_503_problem_with_the_vectors_and_retry_after() {
    let (w, r) = read_after_timeout("error").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    let body = r.json();
    assert_eq!(body["projection"], "users");
    assert_eq!(body["required"]["users"], w.version());
    assert!(body["checkpoint"].is_object());
}

#[tokio::test]
async fn a_lagging_read_is_answered_from_the_writers_cache_entry_only() {
    let stack = start(Setup {
        lag: FOREVER,
        read_route: timeout_route("error"),
        ..Setup::default()
    })
    .await;
    let client = http();
    let a = write(&stack, 1, None).await;
    let token_a = a.header("consistency-token").unwrap();
    let r = client
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", token_a)],
        )
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("consistency-source"), Some("cache"));
    assert_eq!(r.body, a.body, "the write's own response is served");

    // Another session, with a requirement of its own, never sees A's entry.
    let b = write(&stack, 2, None).await;
    let token_b = b.header("consistency-token").unwrap();
    let r = client
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", token_b)],
        )
        .await;
    assert_eq!(
        r.status, 503,
        "B holds and times out instead of reading A's cache entry"
    );
    assert_ne!(r.header("consistency-source"), Some("cache"));
}

#[tokio::test]
async fn eventual_reads_never_wait_and_strong_reads_go_to_the_primary() {
    let stack = start(Setup {
        lag: FOREVER,
        read_route: timeout_route("primary"),
        ..Setup::default()
    })
    .await;
    let client = http();
    let w = write(&stack, 1, None).await;
    let token = w.header("consistency-token").unwrap();
    let r = client
        .get(
            &stack.gateway.url("/users/1"),
            &[
                ("consistency-token", token),
                ("consistency-level", "eventual"),
            ],
        )
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));
    assert_eq!(r.status, 404, "eventual reads what the projection has");
    let r = client
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-level", "strong")],
        )
        .await;
    assert_eq!(r.header("consistency-source"), Some("primary"));
    assert_eq!(r.version(), w.version());
    let r = client
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-level", "sometimes")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["type"],
        "urn:tidemark:problem:invalid-consistency-level"
    );
}

#[tokio::test]
async fn reads_go_to_an_instance_that_covers_them_with_the_min_position_forwarded() {
    // r0 applies after 200 ms, r1 after 400 ms.
    let stack = start(uncached(Setup {
        lag: Duration::from_millis(200),
        instances: 2,
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let v = w.version();
    stack.backend.wait_checkpoint(0, v).await.unwrap();
    wait_until(
        Duration::from_secs(5),
        "the push reached the gateway",
        || async {
            let p = http()
                .get(&stack.gateway.admin_url("/projections"), &[])
                .await
                .json();
            p["projections"]["users"]["instances"]["r0"]["checkpoint"]["users"].as_u64() == Some(v)
        },
    )
    .await;
    assert!(stack.backend.checkpoint(1).unwrap() < v, "r1 still lags");
    let before = (
        stack.backend.requests_served(0).unwrap(),
        stack.backend.requests_served(1).unwrap(),
    );
    for _ in 0..5 {
        let r = http()
            .get(
                &stack.gateway.url("/users/1"),
                &[("consistency-token", w.header("consistency-token").unwrap())],
            )
            .await;
        assert_eq!(r.version(), v);
        assert_eq!(
            r.header("seen-min-position"),
            Some(format!("users={v}").as_str())
        );
    }
    let after = (
        stack.backend.requests_served(0).unwrap(),
        stack.backend.requests_served(1).unwrap(),
    );
    assert_eq!(
        after.0 - before.0,
        5,
        "every read went to r0, the instance that covers it"
    );
    assert_eq!(after.1, before.1);
}

#[tokio::test]
async fn past_the_held_reads_cap_reads_are_refused_at_once() {
    let stack = start(uncached(Setup {
        lag: FOREVER,
        read_route: "max_wait = \"30s\"\non_timeout = \"error\"".into(),
        server: "max_held_reads = 2".into(),
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let token = w.header("consistency-token").unwrap().to_string();
    let mut held = Vec::new();
    for _ in 0..2 {
        let url = stack.gateway.url("/users/1");
        let token = token.clone();
        held.push(tokio::spawn(async move {
            http().get(&url, &[("consistency-token", &token)]).await
        }));
    }
    wait_until(Duration::from_secs(5), "two reads held", || async {
        stack.gateway.held().await == 2
    })
    .await;
    let started = std::time::Instant::now();
    let r = http()
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", &token)],
        )
        .await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["type"], "urn:tidemark:problem:held-reads-full");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once, not after max_wait"
    );
    for h in held {
        h.abort();
    }
}

#[tokio::test]
async fn a_client_that_hangs_up_while_held_frees_its_slot() {
    let stack = start(uncached(Setup {
        lag: FOREVER,
        read_route: "max_wait = \"60s\"\non_timeout = \"error\"".into(),
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let token = w.header("consistency-token").unwrap();
    let mut sock = tokio::net::TcpStream::connect(stack.gateway.proxy)
        .await
        .unwrap();
    let req = format!("GET /users/1 HTTP/1.1\r\nhost: gw\r\nconsistency-token: {token}\r\n\r\n");
    sock.write_all(req.as_bytes()).await.unwrap();
    wait_until(Duration::from_secs(5), "the read is held", || async {
        stack.gateway.held().await == 1
    })
    .await;
    drop(sock);
    wait_until(Duration::from_secs(5), "the slot is freed", || async {
        stack.gateway.held().await == 0
    })
    .await;
}

#[tokio::test]
async fn held_reads_are_released_when_the_checkpoint_arrives() {
    let stack = start(uncached(Setup {
        lag: Duration::from_millis(150),
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let r = http()
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", w.header("consistency-token").unwrap())],
        )
        .await;
    assert_eq!(r.header("consistency-source"), Some("projection"));
    assert_eq!(r.version(), w.version());
    let timing = r.header("server-timing").unwrap();
    let held_ms: f64 = timing
        .trim_start_matches("tidemark;dur=")
        .split(';')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        held_ms > 50.0,
        "the read was held until the projection caught up: {timing}"
    );
}

#[tokio::test]
async fn monotonic_reads_advance_the_token_to_the_answering_instance() {
    let stack = start(uncached(Setup {
        lag: Duration::from_millis(20),
        read_route: "max_wait = \"2s\"\nmonotonic = true".into(),
        ..Setup::default()
    }))
    .await;
    let w = write(&stack, 1, None).await;
    let w2 = write(&stack, 2, None).await;
    stack
        .backend
        .wait_checkpoint(0, w2.version())
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(5),
        "push reached the gateway",
        || async {
            let p = http()
                .get(&stack.gateway.admin_url("/projections"), &[])
                .await
                .json();
            p["projections"]["users"]["instances"]["r0"]["checkpoint"]["users"].as_u64()
                >= Some(w2.version())
        },
    )
    .await;
    let r = http()
        .get(
            &stack.gateway.url("/users/1"),
            &[("consistency-token", w.header("consistency-token").unwrap())],
        )
        .await;
    assert_eq!(r.status, 200);
    let token = r
        .header("consistency-token")
        .expect("monotonic reads return a token");
    let ring = tidemark::token::KeyRing::from_config(
        &common::config("[upstreams.u]\nurl = \"http://127.0.0.1:1\"", &[]).token,
    )
    .unwrap();
    let claims = ring.verify(token, std::time::SystemTime::now()).unwrap();
    assert!(
        claims.pos.get("users").unwrap() >= w2.version(),
        "advanced past the session's own write"
    );
}
