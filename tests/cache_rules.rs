//! What the write-through cache may store and whom it may answer (issue 10 items 5, 6
//! and 7; issue 13 item 7), end to end through a gateway in front of a real HTTP
//! service, on the memory backend and on a real `redis-server`.

mod common;
#[path = "support/redis_server.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::{config, http, Http, Resp, TestGateway};
use redis_server::RedisServer;
use tokio::net::TcpListener;

/// Bytes of a `/big/...` write's answer.
const BIG: usize = 20_000;

/// One service for both sides. Writes (`PUT`) append to log `users` and report the
/// position; `/users/me` answers the caller's `Authorization`, `/empty` 204, `/accepted`
/// 202 with a body, `/big/...` 20,000 bytes, anything else its path. Reads answer
/// `read <path> as <authorization>` and never report a checkpoint, so a read that
/// needs the write is answered from the cache or, after `max_wait`, `stale`.
async fn service() -> SocketAddr {
    async fn handle(State(head): State<Arc<AtomicU64>>, req: Request) -> Response {
        let path = req.uri().path().to_string();
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_string();
        if req.method() != Method::PUT {
            return Response::new(format!("read {path} as {auth}").into());
        }
        let n = head.fetch_add(1, Ordering::SeqCst) + 1;
        let mut resp = match path.as_str() {
            "/users/me" => Response::new(format!("written by {auth}").into()),
            "/empty" => {
                let mut r = Response::new(axum::body::Body::empty());
                *r.status_mut() = StatusCode::NO_CONTENT;
                r
            }
            "/accepted" => {
                let mut r = Response::new("{\"queued\":true}".into());
                *r.status_mut() = StatusCode::ACCEPTED;
                r
            }
            p if p.starts_with("/big/") => Response::new(vec![b'x'; BIG].into()),
            p => Response::new(format!("wrote {p}").into()),
        };
        resp.headers_mut()
            .insert("write-position", HeaderValue::from(n));
        resp
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(any(handle))
        .with_state(Arc::new(AtomicU64::new(0)));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn toml(up: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[token]
cookie = "tm"
cookie_secure = false
[upstreams.svc]
url = "http://{up}"
[projections.users]
logs = ["users"]
[[routes]]
name = "me-write"
kind = "write"
methods = ["PUT"]
path = "/users/me"
upstream = "svc"
default_log = "users"
cache = {{ key = "me" }}
[[routes]]
name = "me-read"
kind = "read"
path = "/users/me"
upstream = "svc"
projection = "users"
max_wait = "30ms"
on_timeout = "stale"
cache = {{ key = "me" }}
[[routes]]
name = "doc-write"
kind = "write"
methods = ["PUT"]
path = "/orgs/{{org}}/docs/{{id}}"
upstream = "svc"
default_log = "users"
cache = {{ key = "doc:{{org}}:{{id}}", scope = "global" }}
[[routes]]
name = "doc-read"
kind = "read"
path = "/orgs/{{org}}/docs/{{id}}"
upstream = "svc"
projection = "users"
max_wait = "30ms"
on_timeout = "stale"
cache = {{ key = "doc:{{org}}:{{id}}" }}
[[routes]]
name = "write"
kind = "write"
methods = ["PUT"]
path = "/{{*rest}}"
upstream = "svc"
default_log = "users"
cache = {{ key = "r:{{rest}}" }}
[[routes]]
name = "read"
kind = "read"
path = "/{{*rest}}"
upstream = "svc"
projection = "users"
max_wait = "30ms"
on_timeout = "stale"
cache = {{ key = "r:{{rest}}" }}
{extra}
"#
    )
}

/// The `name=value` of the token cookie a response sets.
fn token_cookie(r: &Resp) -> String {
    let set = r.header("set-cookie").expect("token cookie set");
    set.split(';').next().unwrap().to_string()
}

async fn put(client: &Http, gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> Resp {
    let r = client.put_json(&gw.url(path), headers, "{}").await;
    assert!(r.status.is_success(), "PUT {path}: {}", r.status);
    r
}

/// Issue 10 item 6: user A writes `/users/me` with a cookie token and logs out; user
/// B on the same browser (same cookie, other `Authorization`) reads `/users/me` and
/// is not answered from A's entry. A, still logged in, is.
async fn the_cache_does_not_cross_users(gw: &TestGateway) {
    let client = http();
    let w = put(
        &client,
        gw,
        "/users/me",
        &[("authorization", "Bearer alice")],
    )
    .await;
    let cookie = token_cookie(&w);

    let a = client
        .get(
            &gw.url("/users/me"),
            &[("cookie", &cookie), ("authorization", "Bearer alice")],
        )
        .await;
    assert_eq!(
        a.header("consistency-source"),
        Some("cache"),
        "A's own entry"
    );
    assert_eq!(a.text(), "written by Bearer alice");

    let b = client
        .get(
            &gw.url("/users/me"),
            &[("cookie", &cookie), ("authorization", "Bearer bob")],
        )
        .await;
    assert_eq!(b.status, StatusCode::OK);
    assert_ne!(
        b.header("consistency-source"),
        Some("cache"),
        "{}",
        b.text()
    );
    assert_eq!(b.text(), "read /users/me as Bearer bob");

    let anonymous = client
        .get(&gw.url("/users/me"), &[("cookie", &cookie)])
        .await;
    assert_ne!(anonymous.header("consistency-source"), Some("cache"));
}

#[tokio::test]
async fn memory_cache_entries_belong_to_the_writer_s_identity() {
    let gw = TestGateway::start(config(&toml(service().await, ""), &[])).await;
    the_cache_does_not_cross_users(&gw).await;
}

#[tokio::test]
async fn redis_cache_entries_belong_to_the_writer_s_identity() {
    let redis = RedisServer::start();
    let store = format!(
        "[store]\nbackend = \"redis\"\nredis_url = \"{}\"\n",
        redis.url()
    );
    let gw = TestGateway::start(config(&toml(service().await, &store), &[])).await;
    the_cache_does_not_cross_users(&gw).await;
    // The entry in Redis holds a hash of the identity, never the credential.
    let keys = redis.cli(&["--scan", "--pattern", "*cache*"]);
    let key = keys
        .lines()
        .find(|k| k.contains("{me}"))
        .expect("entry in Redis");
    let value = redis.cli(&["GET", key]);
    assert!(value.contains("written by Bearer alice"), "{value}");
    assert_eq!(
        value.matches("alice").count(),
        1,
        "only in the body: {value}"
    );
}

/// Issue 10 item 7: with `scope = "global"`, `/orgs/acme:1/docs/2` and
/// `/orgs/acme/docs/1:2` are different keys.
#[tokio::test]
async fn two_paths_never_share_a_cache_key() {
    let gw = TestGateway::start(config(&toml(service().await, ""), &[])).await;
    let client = http();
    let w = put(&client, &gw, "/orgs/acme:1/docs/2", &[]).await;
    let cookie = token_cookie(&w);
    let other = client
        .get(&gw.url("/orgs/acme/docs/1:2"), &[("cookie", &cookie)])
        .await;
    assert_ne!(
        other.header("consistency-source"),
        Some("cache"),
        "{}",
        other.text()
    );
    assert_eq!(other.text(), "read /orgs/acme/docs/1:2 as nobody");
    let same = client
        .get(&gw.url("/orgs/acme:1/docs/2"), &[("cookie", &cookie)])
        .await;
    assert_eq!(same.header("consistency-source"), Some("cache"));
    assert_eq!(same.text(), "wrote /orgs/acme:1/docs/2");
}

/// Issue 13 item 7: only answers that can stand for the resource are stored: a 204
/// (no body) and a 202 are not (`cache.statuses` defaults to 200 and 201).
#[tokio::test]
async fn only_answers_that_stand_for_the_resource_are_cached() {
    let gw = TestGateway::start(config(&toml(service().await, ""), &[])).await;
    let client = http();
    for path in ["/empty", "/accepted"] {
        let w = put(&client, &gw, path, &[]).await;
        let r = client
            .get(&gw.url(path), &[("cookie", &token_cookie(&w))])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert_eq!(r.header("consistency-source"), Some("stale"), "{path}");
        assert_eq!(r.text(), format!("read {path} as nobody"));
    }
    let w = put(&client, &gw, "/fine", &[]).await;
    let r = client
        .get(&gw.url("/fine"), &[("cookie", &token_cookie(&w))])
        .await;
    assert_eq!(r.header("consistency-source"), Some("cache"));

    // Configurable: with 202 listed, the 202's body is cached.
    let gw = TestGateway::start(config(
        &toml(service().await, "[cache]\nstatuses = [200, 201, 202]"),
        &[],
    ))
    .await;
    let w = put(&client, &gw, "/accepted", &[]).await;
    let r = client
        .get(&gw.url("/accepted"), &[("cookie", &token_cookie(&w))])
        .await;
    assert_eq!(r.header("consistency-source"), Some("cache"));
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "a hit returns the command's answer"
    );
}

/// The value of an unlabelled gauge or counter on the admin `/metrics` page.
async fn metric(gw: &TestGateway, name: &str) -> f64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not on /metrics:\n{text}"))
}

/// Issue 10 item 5: writes totalling twelve times `cache.max_bytes` leave the memory
/// cache under its budget (`tidemark_cache_bytes`, a process-wide gauge: the other
/// tests here cache a few hundred bytes each), the newest entries answering.
#[tokio::test]
async fn the_memory_cache_keeps_its_byte_budget() {
    let budget = 100_000;
    let gw = TestGateway::start(config(
        &toml(service().await, &format!("[cache]\nmax_bytes = {budget}")),
        &[],
    ))
    .await;
    let client = http();
    let mut first = String::new();
    let mut last = String::new();
    for i in 0..60 {
        // No token: each write is a new session, as a client without one is.
        let w = put(&client, &gw, &format!("/big/{i}"), &[]).await;
        assert_eq!(w.body.len(), BIG);
        last = token_cookie(&w);
        if i == 0 {
            first = last.clone();
        }
        let bytes = metric(&gw, "tidemark_cache_bytes").await;
        assert!(
            bytes <= budget as f64,
            "{bytes} bytes cached after write {i}"
        );
    }
    let r = client.get(&gw.url("/big/59"), &[("cookie", &last)]).await;
    assert_eq!(
        r.header("consistency-source"),
        Some("cache"),
        "the newest stays"
    );
    assert_eq!(r.body.len(), BIG);
    let r = client.get(&gw.url("/big/0"), &[("cookie", &first)]).await;
    assert_eq!(
        r.header("consistency-source"),
        Some("stale"),
        "the oldest went"
    );
}

/// The new keys are checked with the key and the fix: `vary` items, `statuses`,
/// templates that could not expand injectively; defaults when absent.
#[test]
fn cache_keys_are_validated_with_key_and_fix() {
    let up: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let bad = toml(up, "[cache]\nstatuses = [200, 204, 404]\nmax_bytes = 0")
        .replace(
            "cache = {{ key = \"me\" }}"
                .replace("{{", "{")
                .replace("}}", "}")
                .as_str(),
            "cache = { key = \"me\", vary = [\"cookie\", \"no header\", \"cookie:a;b\"] }",
        )
        .replace("key = \"doc:{org}:{id}\"", "key = \"doc:{org}{id}\"")
        .replace("key = \"r:{rest}\"", "key = \"r%{rest}\"");
    let err = tidemark::config::Config::from_toml(&bad, None, &[])
        .expect_err("refused")
        .to_string();
    for needle in [
        "cache.statuses",
        "204 can't be cached",
        "404 can't be cached",
        "cache.max_bytes",
        "`cookie` as a whole",
        "`no header` is not a header name",
        "`a;b` is not a valid cookie name",
        "side by side",
        "`%` can't be used",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
    }

    let ok = tidemark::config::Config::from_toml(&toml(up, ""), None, &[]).expect("valid");
    assert_eq!(ok.cache.max_bytes, 64 * 1024 * 1024);
    assert_eq!(ok.cache.statuses, [200, 201]);
    let vary = &ok.routes[0].cache.as_ref().unwrap().vary;
    assert_eq!(
        vary,
        &[tidemark::config::CacheVary::Header(
            axum::http::header::AUTHORIZATION
        )]
    );
}
