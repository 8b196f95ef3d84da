//! Version tokens through the gateway: minted on writes, merged, and every kind of
//! bad token refused (or ignored when configured).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use base64::Engine;
use common::{config, http, SECRET};
use tidemark::config::{KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};
use tidemark::position::PositionVector;
use tidemark::token::KeyRing;
use tokio::net::TcpListener;

/// A command service: every write appends to log `users` and reports its position;
/// `/nopos` reports none, `/badpos` reports garbage, `/fail` answers 500.
async fn command_service() -> SocketAddr {
    async fn handle(State(head): State<Arc<AtomicU64>>, req: Request) -> Response {
        let mut resp = Response::new(axum::body::Body::from("{\"ok\":true}"));
        match req.uri().path() {
            "/nopos" => {}
            "/badpos" => {
                resp.headers_mut()
                    .insert("write-position", HeaderValue::from_static("users=-3"));
            }
            "/fail" => {
                *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                resp.headers_mut()
                    .insert("write-position", HeaderValue::from_static("users=77"));
            }
            "/orders" => {
                resp.headers_mut().insert(
                    "write-position",
                    HeaderValue::from_static("orders=5,unknown=9"),
                );
            }
            _ => {
                let n = head.fetch_add(1, Ordering::SeqCst) + 1;
                resp.headers_mut()
                    .insert("write-position", HeaderValue::from(n));
            }
        }
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

fn toml(upstream: SocketAddr, token_extra: &str) -> String {
    format!(
        r#"
[token]
{token_extra}
[upstreams.cmd]
url = "http://{upstream}"
[upstreams.view]
url = "http://{upstream}"
[projections.users]
logs = ["users", "orders"]
[[routes]]
name = "write"
kind = "write"
methods = ["PUT", "POST"]
path = "/{{*rest}}"
upstream = "cmd"
default_log = "users"
[[routes]]
name = "read"
kind = "read"
path = "/{{*rest}}"
upstream = "view"
projection = "users"
max_wait = "50ms"
on_timeout = "stale"
"#
    )
}

fn ring(kid: &str, secret: &[u8]) -> KeyRing {
    KeyRing::from_config(&TokenConfig {
        issuer: "tidemark".into(),
        ttl: Duration::from_secs(3600),
        on_invalid: OnInvalid::Reject,
        cookie: None,
        signing: KeySpec {
            kid: kid.into(),
            algorithm: TokenAlgorithm::Hs256,
            material: KeyMaterial::Inline(secret.to_vec()),
            public_material: None,
        },
        verify_keys: vec![],
    })
    .unwrap()
}

#[tokio::test]
async fn writes_mint_a_token_and_later_writes_merge_into_it() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, ""), &[])).await;
    let client = http();
    let verify = ring("k1", SECRET);

    let first = client.put_json(&gw.url("/users/1"), &[], "{}").await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(
        first.header("write-position").is_none(),
        "Write-Position is stripped"
    );
    let t1 = first
        .header("consistency-token")
        .expect("token minted")
        .to_string();
    let c1 = verify.verify(&t1, SystemTime::now()).unwrap();
    assert_eq!(c1.pos, PositionVector::parse("users=1", None).unwrap());

    let second = client
        .put_json(&gw.url("/users/2"), &[("consistency-token", &t1)], "{}")
        .await;
    let c2 = verify
        .verify(
            second.header("consistency-token").unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(c2.sid, c1.sid, "the session id is kept across merges");
    assert_eq!(c2.pos, PositionVector::parse("users=2", None).unwrap());

    // Logs no projection consumes never enter the token.
    let third = client
        .put_json(
            &gw.url("/orders"),
            &[(
                "consistency-token",
                second.header("consistency-token").unwrap(),
            )],
            "{}",
        )
        .await;
    let c3 = verify
        .verify(
            third.header("consistency-token").unwrap(),
            SystemTime::now(),
        )
        .unwrap();
    assert_eq!(
        c3.pos,
        PositionVector::parse("users=2,orders=5", None).unwrap()
    );
}

#[tokio::test]
async fn writes_without_a_usable_position_pass_through_without_a_token() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, ""), &[])).await;
    let client = http();
    for path in ["/nopos", "/badpos", "/fail"] {
        let r = client.put_json(&gw.url(path), &[], "{}").await;
        assert!(
            r.header("consistency-token").is_none(),
            "{path} got a token"
        );
        assert!(
            r.header("write-position").is_none(),
            "{path} leaked Write-Position"
        );
    }
    assert_eq!(
        client.put_json(&gw.url("/fail"), &[], "{}").await.status,
        StatusCode::INTERNAL_SERVER_ERROR
    );
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn bad_tokens_are_refused_with_a_problem() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, ""), &[])).await;
    let client = http();
    let good = client
        .put_json(&gw.url("/users/1"), &[], "{}")
        .await
        .header("consistency-token")
        .unwrap()
        .to_string();

    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    let tampered = {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&parts[1])
            .unwrap();
        let text = String::from_utf8(payload)
            .unwrap()
            .replace("\"sid\":\"", "\"sid\":\"forged-");
        format!("{}.{}.{}", parts[0], b64(text.as_bytes()), parts[2])
    };
    let alg_none = {
        parts[0] = b64(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#);
        format!("{}.{}.", parts[0], parts[1])
    };
    let unknown_kid = ring("k9", b"another-secret-another-secret-another").mint(
        "s",
        &PositionVector::new(),
        SystemTime::now(),
    );
    let oversize = "a".repeat(5000);
    let cases = [
        ("tampered", tampered.as_str(), "signature"),
        ("alg none", alg_none.as_str(), ""),
        ("unknown kid", unknown_kid.as_str(), "unknown_key"),
        ("oversize", oversize.as_str(), "oversize"),
        ("garbage", "not-a-token", "malformed"),
    ];
    for (what, token, reason) in cases {
        let r = client
            .get(&gw.url("/users/1"), &[("consistency-token", token)])
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(
            r.header("content-type"),
            Some("application/problem+json"),
            "{what}"
        );
        let body = r.json();
        assert_eq!(body["type"], "urn:tidemark:problem:invalid-token", "{what}");
        if !reason.is_empty() {
            assert_eq!(body["reason"], reason, "{what}");
        }
        // Writes refuse them too.
        let w = client
            .put_json(&gw.url("/users/1"), &[("consistency-token", token)], "{}")
            .await;
        assert_eq!(w.status, StatusCode::BAD_REQUEST, "write with {what}");
    }
}

#[tokio::test]
async fn on_invalid_ignore_treats_bad_tokens_as_absent_and_expired_tokens_are_absent() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, "on_invalid = \"ignore\""), &[])).await;
    let client = http();
    let r = client
        .put_json(
            &gw.url("/users/1"),
            &[("consistency-token", "garbage")],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        r.header("consistency-token").is_some(),
        "a fresh token is minted"
    );

    let expired = ring("k1", SECRET).mint(
        "old-session",
        &PositionVector::parse("users=1", None).unwrap(),
        SystemTime::now() - Duration::from_secs(7200),
    );
    let r = client
        .put_json(
            &gw.url("/users/1"),
            &[("consistency-token", &expired)],
            "{}",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let claims = ring("k1", SECRET)
        .verify(r.header("consistency-token").unwrap(), SystemTime::now())
        .unwrap();
    assert_ne!(
        claims.sid, "old-session",
        "an expired token starts a new session"
    );
}

#[tokio::test]
async fn the_token_travels_in_a_cookie_when_configured() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(
        &toml(up, "cookie = \"tm\"\ncookie_secure = false"),
        &[],
    ))
    .await;
    let client = http();
    let r = client.put_json(&gw.url("/users/1"), &[], "{}").await;
    let cookie = r.header("set-cookie").expect("cookie set").to_string();
    assert!(cookie.starts_with("tm="), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(!cookie.contains("Secure"), "{cookie}");
    let value = cookie.split(';').next().unwrap().to_string();
    let r2 = client
        .put_json(&gw.url("/users/2"), &[("cookie", &value)], "{}")
        .await;
    let c2 = ring("k1", SECRET)
        .verify(r2.header("consistency-token").unwrap(), SystemTime::now())
        .unwrap();
    assert_eq!(
        c2.pos,
        PositionVector::parse("users=2", None).unwrap(),
        "the cookie's token was merged"
    );
}

/// Sends a GET with a raw `Consistency-Token` header value (any bytes) over a plain
/// TCP connection, returning the status and the whole answer as text.
async fn get_with_raw_token(gw: &common::TestGateway, path: &str, token: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(gw.proxy).await.unwrap();
    let mut req =
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nConsistency-Token: ")
            .into_bytes();
    req.extend_from_slice(token);
    req.extend_from_slice(b"\r\n\r\n");
    conn.write_all(&req).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    (status, text)
}

/// `tidemark_tokens_rejected_total{reason="malformed"}` on the admin `/metrics`.
async fn malformed(gw: &common::TestGateway) -> u64 {
    let text = http().get(&gw.admin_url("/metrics"), &[]).await.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("tidemark_tokens_rejected_total{reason=\"malformed\"} ")?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// Issue 10, item 9: a token header that is present but not visible ASCII is invalid:
/// `400` problem+json (`reason` `malformed`) under `on_invalid = "reject"`, absent
/// under `"ignore"`.
#[tokio::test]
async fn a_token_that_is_not_visible_ascii_is_invalid_not_absent() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, ""), &[])).await;
    let before = malformed(&gw).await;
    // (Control bytes never get this far: hyper's parser answers 400 itself.)
    for token in [&b"\xff\xfe"[..], b"abc.d\xc3\xa9f.ghi", b"abc.d f.ghi"] {
        let (status, text) = get_with_raw_token(&gw, "/users/1", token).await;
        assert_eq!(status, 400, "{token:?}: {text}");
        assert!(text.contains("application/problem+json"), "{text}");
        assert!(text.contains("\"reason\":\"malformed\""), "{text}");
    }
    // The recorder is process-wide: other tests count too, never down.
    assert!(malformed(&gw).await >= before + 3);

    let up = command_service().await;
    let gw = common::TestGateway::start(config(&toml(up, "on_invalid = \"ignore\""), &[])).await;
    let (status, text) = get_with_raw_token(&gw, "/users/1", b"\xff\xfe").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("consistency-source: projection"),
        "answered as a tokenless read: {text}"
    );
}

/// Issue 13, item 8: with the cookie transport, a token that no longer verifies is
/// dropped and the cookie cleared (same attributes, `Max-Age=0`); reads and writes go
/// on as tokenless, even under `on_invalid = "reject"`. The header keeps `on_invalid`.
#[tokio::test]
async fn a_cookie_token_that_no_longer_verifies_is_dropped_and_cleared() {
    let up = command_service().await;
    let gw = common::TestGateway::start(config(
        &toml(up, "cookie = \"tm\"\ncookie_secure = false"),
        &[],
    ))
    .await;
    let client = http();
    let now = SystemTime::now();
    let users = PositionVector::parse("users=1", None).unwrap();
    let cases = [
        (
            "key changed",
            ring("k1", b"a-retired-secret-a-retired-secret-xx").mint("s", &users, now),
        ),
        (
            "unknown key",
            ring("k9", b"another-secret-another-secret-another").mint("s", &users, now),
        ),
        (
            "expired",
            ring("k1", SECRET).mint("s", &users, now - Duration::from_secs(7200)),
        ),
        ("garbage", "not-a-token".to_string()),
    ];
    for (what, bad) in &cases {
        let cookie = format!("other=1; tm={bad}");
        let r = client
            .get(&gw.url("/users/1"), &[("cookie", &cookie)])
            .await;
        assert_eq!(r.status, StatusCode::OK, "{what}: read: {}", r.text());
        assert_eq!(r.header("consistency-source"), Some("projection"), "{what}");
        let cleared: Vec<&str> = r
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            cleared,
            ["tm=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"],
            "{what}"
        );

        let w = client
            .put_json(&gw.url("/users/1"), &[("cookie", &cookie)], "{}")
            .await;
        assert_eq!(w.status, StatusCode::OK, "{what}: write: {}", w.text());
        let set: Vec<&str> = w
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(set.len(), 1, "{what}: one cookie, the new token: {set:?}");
        let fresh = set[0]
            .strip_prefix("tm=")
            .unwrap()
            .split(';')
            .next()
            .unwrap();
        let claims = ring("k1", SECRET).verify(fresh, SystemTime::now()).unwrap();
        assert_ne!(claims.sid, "s", "{what}: a new session");
    }

    // The header transport keeps `on_invalid` (reject).
    let r = client
        .get(&gw.url("/users/1"), &[("consistency-token", &cases[0].1)])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.header("set-cookie").is_none());
}
