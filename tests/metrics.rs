//! `/metrics`: after a little traffic of each kind (write, fresh read, held read
//! released, timeout, cache hit, bad token, checkpoint push, upstream error, store
//! error) every family of the SPEC is present and has grown, plus upstream latency and
//! process metrics, and every label value comes from a small, known set.
//!
//! The Prometheus recorder is process-wide, so tests compare before and after.

mod common;

use std::collections::BTreeMap;
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
use common::{closed_port, config, http, wait_until, TestGateway};
use http::Method;
use tokio::net::TcpListener;

/// One sample: name, labels, value.
type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format (samples only).
fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => (name.to_string(), parse_labels(rest.trim_end_matches('}'))),
        };
        out.push((name, labels, value));
    }
    out
}

fn parse_labels(mut s: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    while let Some((key, rest)) = s.split_once("=\"") {
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let mut end = rest.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => value.extend(chars.next().map(|(_, c)| c)),
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_string(), value);
        s = &rest[end..];
    }
    labels
}

/// The sum of `name`'s samples whose labels include every pair of `with`.
fn sum(samples: &[Sample], name: &str, with: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && with
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

async fn scrape(gw: &TestGateway) -> (String, Vec<Sample>) {
    let r = http().get(&gw.admin_url("/metrics"), &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    let samples = parse(&text);
    (text, samples)
}

/// A command service (PUT: `Write-Position: users=N`, N counting up) and read service
/// (GET: `{}`) in one.
async fn backend() -> SocketAddr {
    let head = Arc::new(AtomicU64::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(any(move |req: Request| {
        let head = head.clone();
        async move {
            let mut resp = Response::new(AxumBody::from("{}"));
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            if req.method() == Method::PUT {
                let n = head.fetch_add(1, Ordering::SeqCst) + 1;
                let v = HeaderValue::from_str(&format!("users={n}")).unwrap();
                resp.headers_mut().insert("write-position", v);
            }
            resp
        }
    }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn gateway_toml(backend: SocketAddr, store: &str) -> String {
    format!(
        r#"
{store}
[upstreams.app]
url = "http://{backend}"
[upstreams.dead]
url = "http://127.0.0.1:{dead}"
[projections.users]
logs = ["users"]
sources = ["push"]
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{{id}}"
upstream = "app"
default_log = "users"
cache = {{ key = "user:{{id}}", ttl = "30s" }}
[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "app"
projection = "users"
cache = {{ key = "user:{{id}}" }}
max_wait = "10s"
on_timeout = "error"
[[routes]]
name = "read-user-quick"
kind = "read"
methods = ["GET"]
path = "/quick/{{id}}"
upstream = "app"
projection = "users"
max_wait = "50ms"
on_timeout = "error"
[[routes]]
name = "dead"
kind = "passthrough"
path = "/dead/{{*rest}}"
upstream = "dead"
"#,
        dead = closed_port(),
    )
}

async fn write(gw: &TestGateway, id: u64) -> String {
    let r = http()
        .send(Method::PUT, &gw.url(&format!("/users/{id}")), &[], "{}")
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.header("consistency-token").expect("a token").to_string()
}

async fn push(gw: &TestGateway, position: u64) {
    let body = format!("{{\"users\": {position}}}");
    let r = http()
        .put_json(&gw.admin_url("/projections/users/checkpoint"), &[], &body)
        .await;
    assert_eq!(r.status, 204, "{}", r.text());
}

async fn read(gw: &TestGateway, path: &str, token: &str) -> common::Resp {
    http()
        .get(&gw.url(path), &[("consistency-token", token)])
        .await
}

/// The values a label may take in this test's config (`le` aside).
fn allowed(metric: &str, label: &str) -> Vec<&'static str> {
    let buckets = [
        "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    ];
    let buckets2 = ["0.25", "0.5", "1", "2.5", "5", "10", "+Inf"];
    match (metric, label) {
        ("tidemark_upstream_errors_total", "kind") => vec![
            "connect",
            "timeout",
            "protocol",
            "bad_write_position",
            "bad_checkpoint",
        ],
        (_, "kind") => vec!["read", "write", "passthrough", "none"],
        (_, "route") => vec!["", "write-user", "read-user", "read-user-quick", "dead"],
        (_, "source") => vec![
            "",
            "projection",
            "cache",
            "primary",
            "stale",
            "push",
            "redis",
            "header",
            "poll",
        ],
        (_, "status") => vec!["1xx", "2xx", "3xx", "4xx", "5xx"],
        (_, "action") => vec!["primary", "stale", "error"],
        (_, "projection") => vec!["users"],
        (_, "instance") => vec!["default"],
        (_, "upstream") => vec!["app", "dead"],
        (_, "reason") => vec![
            "oversize",
            "malformed",
            "unknown_key",
            "algorithm",
            "signature",
            "issuer",
            "expired",
            "claims",
        ],
        (_, "op") => vec!["cache_get", "cache_put", "push_checkpoint", "poll"]
            .into_iter()
            .chain(REDIS_OPS.iter().copied())
            .collect(),
        (_, "le") => buckets.into_iter().chain(buckets2).collect(),
        _ => vec![],
    }
}

/// Operations of the Redis store (`store::redis::Op`).
const REDIS_OPS: &[&str] = &["push", "republish", "reload", "subscribe", "decode"];

const FAMILIES: &[&str] = &[
    "tidemark_requests_total",
    "tidemark_read_wait_seconds_bucket",
    "tidemark_read_wait_seconds_count",
    "tidemark_held_reads",
    "tidemark_hold_timeouts_total",
    "tidemark_tokens_minted_total",
    "tidemark_tokens_rejected_total",
    "tidemark_cache_hits_total",
    "tidemark_projection_lag_seconds",
    "tidemark_checkpoint_updates_total",
    "tidemark_store_errors_total",
    "tidemark_upstream_errors_total",
    "tidemark_upstream_duration_seconds_bucket",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_start_time_seconds",
];

#[tokio::test]
async fn every_family_is_present_after_traffic_with_bounded_labels() {
    let gw = TestGateway::start(config(&gateway_toml(backend().await, ""), &[])).await;
    let (_, before) = scrape(&gw).await;

    // Write, then a fresh read once the projection reports it.
    let t1 = write(&gw, 1).await;
    push(&gw, 1).await;
    let fresh = read(&gw, "/users/1", &t1).await;
    assert_eq!(fresh.header("consistency-source"), Some("projection"));
    // Cache hit: the projection is behind, the write-through cache is not.
    let t2 = write(&gw, 2).await;
    let cached = read(&gw, "/users/2", &t2).await;
    assert_eq!(cached.header("consistency-source"), Some("cache"));
    // A held read, released by a checkpoint push.
    let held = {
        let (url, token) = (gw.url("/users/3"), t2.clone());
        tokio::spawn(async move { http().get(&url, &[("consistency-token", &token)]).await })
    };
    wait_until(Duration::from_secs(10), "the read is held", || async {
        gw.held().await == 1
    })
    .await;
    let (_, while_held) = scrape(&gw).await;
    assert_eq!(
        sum(
            &while_held,
            "tidemark_held_reads",
            &[("projection", "users")]
        ),
        1.0
    );
    push(&gw, 2).await;
    let released = held.await.unwrap();
    assert_eq!(released.header("consistency-source"), Some("projection"));
    // A hold timeout, a bad token, an upstream error.
    let t3 = write(&gw, 4).await;
    assert_eq!(read(&gw, "/quick/4", &t3).await.status, 503);
    assert_eq!(read(&gw, "/users/1", "not-a-token").await.status, 400);
    assert_eq!(http().get(&gw.url("/dead/x"), &[]).await.status, 502);
    // A store error: a gateway whose Redis is down still answers the write.
    let redis_down = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:{}\"",
        closed_port()
    );
    let gw2 = TestGateway::start(config(&gateway_toml(backend().await, &redis_down), &[])).await;
    write(&gw2, 1).await;

    let (text, after) = scrape(&gw).await;
    for family in FAMILIES {
        assert!(
            after.iter().any(|(n, _, _)| n == family),
            "{family} missing from /metrics:\n{text}"
        );
    }
    for family in FAMILIES.iter().filter(|f| f.starts_with("tidemark_")) {
        let family = family
            .trim_end_matches("_bucket")
            .trim_end_matches("_count");
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no TYPE line for {family}"
        );
    }
    let grew = |name: &str, with: &[(&str, &str)]| {
        let (b, a) = (sum(&before, name, with), sum(&after, name, with));
        assert!(a > b, "{name}{with:?} did not grow: {b} -> {a}\n{text}");
    };
    let read_user = ("route", "read-user");
    grew(
        "tidemark_requests_total",
        &[
            ("route", "write-user"),
            ("kind", "write"),
            ("status", "2xx"),
        ],
    );
    grew(
        "tidemark_requests_total",
        &[read_user, ("source", "projection"), ("status", "2xx")],
    );
    grew("tidemark_requests_total", &[read_user, ("source", "cache")]);
    grew("tidemark_requests_total", &[read_user, ("status", "4xx")]);
    grew(
        "tidemark_requests_total",
        &[("route", "read-user-quick"), ("status", "5xx")],
    );
    grew(
        "tidemark_requests_total",
        &[
            ("route", "dead"),
            ("kind", "passthrough"),
            ("status", "5xx"),
        ],
    );
    grew("tidemark_read_wait_seconds_count", &[read_user]);
    grew(
        "tidemark_hold_timeouts_total",
        &[("route", "read-user-quick"), ("action", "error")],
    );
    grew("tidemark_tokens_minted_total", &[]);
    grew("tidemark_tokens_rejected_total", &[("reason", "malformed")]);
    grew("tidemark_cache_hits_total", &[read_user]);
    grew(
        "tidemark_checkpoint_updates_total",
        &[("projection", "users"), ("source", "push")],
    );
    grew("tidemark_store_errors_total", &[("op", "cache_put")]);
    grew(
        "tidemark_upstream_errors_total",
        &[("upstream", "dead"), ("kind", "connect")],
    );
    grew(
        "tidemark_upstream_duration_seconds_count",
        &[("upstream", "app")],
    );
    grew(
        "tidemark_upstream_duration_seconds_count",
        &[("upstream", "dead")],
    );
    assert!(
        sum(
            &after,
            "tidemark_projection_lag_seconds",
            &[("projection", "users"), ("instance", "default")]
        ) >= 0.0
    );
    assert!(sum(&after, "process_resident_memory_bytes", &[]) > 0.0);

    // Label values are names from the config or small enums: never a token, a path
    // or error text.
    for token in [&t1, &t2, &t3] {
        assert!(!text.contains(token.as_str()), "a token is in /metrics");
    }
    assert!(!text.contains("not-a-token"));
    for (name, labels, _) in after.iter().filter(|(n, _, _)| n.starts_with("tidemark_")) {
        for (key, value) in labels {
            let known = allowed(name, key);
            assert!(
                known.contains(&value.as_str()),
                "{name}: label {key}={value:?} is not one of {known:?}"
            );
        }
    }
    gw2.stop().await;
    gw.stop().await;
}

/// The Grafana dashboard queries only metrics that exist.
#[test]
fn the_grafana_dashboard_uses_only_exported_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../config/grafana-dashboard.json")).unwrap();
    let text = dashboard.to_string();
    let mut used = Vec::new();
    for prefix in ["tidemark_", "process_"] {
        for (i, _) in text.match_indices(prefix) {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            used.push(name);
        }
    }
    assert!(used.len() > 10, "{used:?}");
    let exported: Vec<&str> = FAMILIES
        .iter()
        .copied()
        .chain([
            "process_max_fds",
            "tidemark_upstream_duration_seconds_bucket",
        ])
        .collect();
    for name in used {
        assert!(
            exported.contains(&name.as_str()),
            "the dashboard uses {name}, which is not exported"
        );
    }
}
