//! Token size (issue 10, item 2): every token the gateway mints is accepted by it and
//! fits a cookie. The vector travels in the compact claim `p`; tokens minted in the
//! older JSON form (`pos`) are still accepted until they expire.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use common::{config, http};
use proptest::prelude::*;
use tidemark::config::{KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};
use tidemark::position::PositionVector;
use tidemark::token::{self, KeyRing, MAX_COOKIE_BYTES, MAX_TOKEN_BYTES};
use tokio::net::TcpListener;

/// The cookie name the README's example uses.
const COOKIE: &str = "tidemark_token";

fn ring(alg: TokenAlgorithm, material: Vec<u8>) -> KeyRing {
    KeyRing::from_config(&TokenConfig {
        issuer: "tidemark".into(),
        ttl: Duration::from_secs(3600),
        on_invalid: OnInvalid::Reject,
        cookie: None,
        signing: KeySpec {
            kid: "2026-11-primary".into(),
            algorithm: alg,
            material: KeyMaterial::Inline(material),
            public_material: None,
        },
        verify_keys: vec![],
    })
    .expect("key ring")
}

/// One ring per algorithm, keys from `tidemark token keygen`'s own generator.
fn rings() -> Vec<(TokenAlgorithm, KeyRing)> {
    [
        TokenAlgorithm::Hs256,
        TokenAlgorithm::Es256,
        TokenAlgorithm::EdDsa,
    ]
    .into_iter()
    .map(|alg| (alg, ring(alg, token::keygen(alg).into_bytes())))
    .collect()
}

/// `user-events-0` .. `user-events-{n-1}` at the given positions.
fn partitions(positions: &[u64]) -> PositionVector {
    positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (format!("user-events-{i}"), p))
        .collect()
}

fn assert_fits(ring: &KeyRing, alg: TokenAlgorithm, pos: &PositionVector) -> usize {
    let now = SystemTime::now();
    let sid = token::new_session_id();
    let minted = ring.mint(&sid, pos, now);
    assert!(
        minted.len() <= MAX_TOKEN_BYTES,
        "{alg:?}: {} logs gave a {}-byte token",
        pos.len(),
        minted.len()
    );
    let cookie = token::set_cookie(COOKIE, &minted, true, ring.ttl());
    assert!(
        cookie.len() <= MAX_COOKIE_BYTES,
        "{alg:?}: Set-Cookie of {} bytes",
        cookie.len()
    );
    let claims = ring.verify(&minted, now).expect("the gateway accepts it");
    assert_eq!(&claims.pos, pos, "{alg:?}: the vector survives");
    minted.len()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// 128 Kafka-partition logs with random 12-digit positions fit, whatever the
    /// algorithm (ES256 and EdDSA signatures are 86 characters, HS256's 43).
    #[test]
    fn one_hundred_twenty_eight_partitions_fit_a_cookie(
        positions in proptest::collection::vec(100_000_000_000u64..1_000_000_000_000, 128)
    ) {
        let pos = partitions(&positions);
        for (alg, ring) in RINGS.with(|r| r.clone()) {
            assert_fits(&ring, alg, &pos);
        }
    }
}

thread_local! {
    static RINGS: Vec<(TokenAlgorithm, Arc<KeyRing>)> =
        rings().into_iter().map(|(a, r)| (a, Arc::new(r))).collect();
}

/// The worst case of that shape: every position the largest 12-digit number; printed
/// (`--nocapture`) for the README's size table, with the most partitions that fit.
#[test]
fn worst_case_sizes() {
    for (alg, ring) in rings() {
        for n in [128usize, 192] {
            let size = assert_fits(&ring, alg, &partitions(&vec![999_999_999_999; n]));
            println!("{alg:?} {n} partitions: {size} bytes");
        }
        let fits = |n: usize| {
            let t = ring.mint(
                "Zm9vYmFyYmF6cXV4cXV1eA",
                &partitions(&vec![999_999_999_999; n]),
                SystemTime::now(),
            );
            token::fits(&t, Some(&token::set_cookie(COOKIE, &t, true, ring.ttl()))).is_ok()
        };
        let most = (192..400).take_while(|&n| fits(n)).last().unwrap_or(0);
        println!("{alg:?}: at most {most} partitions fit a cookie");
        assert!(most >= 192);
    }
}

/// A token minted before the compact encoding (claim `pos`, a JSON object) is still
/// accepted; one with both forms is refused.
#[test]
fn tokens_in_the_older_json_form_are_still_accepted() {
    let ring = ring(
        TokenAlgorithm::Hs256,
        b"0123456789abcdef0123456789abcdef-test".to_vec(),
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |claims: serde_json::Value| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("2026-11-primary".into());
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef-test"),
        )
        .unwrap()
    };
    let old = sign(serde_json::json!({
        "iss": "tidemark", "iat": now, "exp": now + 600, "sid": "old-session",
        "pos": {"users": 1234, "orders": 88}
    }));
    let claims = ring
        .verify(&old, SystemTime::now())
        .expect("old form accepted");
    assert_eq!(
        claims.pos,
        PositionVector::parse("users=1234,orders=88", None).unwrap()
    );
    let inspected = token::inspect(&old, Some(&ring), SystemTime::now());
    assert!(
        inspected.contains("vector: orders=88,users=1234"),
        "{inspected}"
    );

    let both = sign(serde_json::json!({
        "iss": "tidemark", "iat": now, "exp": now + 600, "sid": "s",
        "pos": {"users": 1}, "p": "0:users=B"
    }));
    assert!(ring.verify(&both, SystemTime::now()).is_err());
}

/// `tidemark token inspect` decodes the compact vector.
#[test]
fn inspect_shows_the_compact_vector() {
    let (alg, ring) = rings().remove(0);
    let pos = partitions(&[5, 123_456_789_012, 7]);
    let minted = ring.mint("s", &pos, SystemTime::now());
    let out = token::inspect(&minted, Some(&ring), SystemTime::now());
    assert!(
        out.contains(
            "vector: user-events-0=5,user-events-1=123456789012,user-events-2=7 (3 logs, compact `p`)"
        ),
        "{alg:?}: {out}"
    );
    assert!(out.contains("verified with key"), "{out}");
}

/// A command service whose every write reports a position on each of `logs`, and a
/// read service that answers at once (it never reports a checkpoint).
async fn service(logs: Arc<Vec<String>>) -> SocketAddr {
    async fn handle(State(logs): State<Arc<Vec<String>>>, req: Request) -> Response {
        let mut resp = Response::new(axum::body::Body::from("{\"ok\":true}"));
        if req.method() == axum::http::Method::PUT {
            let text = logs
                .iter()
                .enumerate()
                .map(|(i, l)| format!("{l}={}", 987_654_321_000 + i as u64))
                .collect::<Vec<_>>()
                .join(",");
            resp.headers_mut()
                .insert("write-position", HeaderValue::from_str(&text).unwrap());
        }
        resp
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(any(handle)).with_state(logs);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn gateway_toml(up: SocketAddr, logs: &[String]) -> String {
    let list: Vec<String> = logs.iter().map(|l| format!("\"{l}\"")).collect();
    format!(
        r#"
[token]
cookie = "{COOKIE}"
[upstreams.svc]
url = "http://{up}"
[projections.events]
logs = [{}]
[[routes]]
name = "write"
kind = "write"
methods = ["PUT"]
path = "/{{*rest}}"
upstream = "svc"
[[routes]]
name = "read"
kind = "read"
path = "/{{*rest}}"
upstream = "svc"
projection = "events"
max_wait = "20ms"
on_timeout = "stale"
"#,
        list.join(", ")
    )
}

/// End to end: a write over 128 partitions gets a token (header and cookie) the
/// gateway then accepts on a read, which it holds for those positions.
#[tokio::test]
async fn a_token_over_128_partitions_is_minted_and_accepted() {
    let logs: Vec<String> = (0..128).map(|i| format!("user-events-{i}")).collect();
    let up = service(Arc::new(logs.clone())).await;
    let gw = common::TestGateway::start(config(&gateway_toml(up, &logs), &[])).await;
    let client = http();
    let w = client.put_json(&gw.url("/e/1"), &[], "{}").await;
    assert_eq!(w.status, StatusCode::OK);
    let minted = w
        .header("consistency-token")
        .expect("token minted")
        .to_string();
    assert!(minted.len() <= MAX_TOKEN_BYTES, "{} bytes", minted.len());
    let cookie = w.header("set-cookie").expect("cookie set").to_string();
    assert!(cookie.len() <= MAX_COOKIE_BYTES, "{} bytes", cookie.len());
    let r = client
        .get(&gw.url("/e/1"), &[("consistency-token", &minted)])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("consistency-source"),
        Some("stale"),
        "the read was held for the token's positions (no checkpoint: it timed out)"
    );
    let pair = cookie.split(';').next().unwrap();
    let r = client.get(&gw.url("/e/1"), &[("cookie", pair)]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("consistency-source"), Some("stale"));
}

/// A vector too large even compactly is never handed out: the write is answered,
/// without a token and with `Consistency-Token-Error: oversize`, and counted.
#[tokio::test]
async fn a_token_that_cannot_fit_is_not_minted_and_the_answer_says_so() {
    let logs: Vec<String> = (0..128)
        .map(|i| format!("{i:03}-{}", "x".repeat(100)))
        .collect();
    let up = service(Arc::new(logs.clone())).await;
    let gw = common::TestGateway::start(config(&gateway_toml(up, &logs), &[])).await;
    let client = http();
    let w = client.put_json(&gw.url("/e/1"), &[], "{}").await;
    assert_eq!(w.status, StatusCode::OK, "the write is answered");
    assert_eq!(w.text(), "{\"ok\":true}");
    assert!(w.header("consistency-token").is_none());
    assert!(w.header("set-cookie").is_none());
    assert_eq!(w.header("consistency-token-error"), Some("oversize"));
    let metrics = client.get(&gw.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tidemark_tokens_oversize_total") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

/// How much the compact form saves against the JSON object form, for the record.
#[test]
fn the_compact_form_is_less_than_half_the_json_form() {
    let pos = partitions(&vec![123_456_789_012; 128]);
    let compact = token::compact::encode(&pos);
    let json = serde_json::to_string(&pos.clone().into_inner()).unwrap();
    assert!(
        compact.len() * 2 < json.len(),
        "{} vs {}",
        compact.len(),
        json.len()
    );
    let map: BTreeMap<String, u64> = pos.into_inner();
    assert_eq!(map.len(), 128);
}
