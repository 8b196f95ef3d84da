//! The write-through cache's identity hash: paid once per read with a token on a route
//! with `cache` (and once per cached write). HMAC-SHA256 over the `Authorization`
//! header.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use tidemark::cache::identity::IdentityKey;
use tidemark::config::CacheVary;

fn bench(c: &mut Criterion) {
    let key = IdentityKey::derive(b"0123456789abcdef0123456789abcdef");
    let mut headers = HeaderMap::new();
    // A typical bearer JWT from an identity provider (~800 bytes).
    let bearer = format!("Bearer {}", "eyJhbGciOiJSUzI1NiJ9.".repeat(38));
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::from_str(&bearer).expect("ASCII"),
    );
    headers.insert(
        http::header::COOKIE,
        HeaderValue::from_static("a=1; session=abcdef0123456789; tm=x.y.z"),
    );
    let auth = [CacheVary::Header(http::header::AUTHORIZATION)];
    c.bench_function("cache/identity_authorization_800b", |b| {
        b.iter(|| key.identity(black_box(&auth), black_box(&headers)))
    });
    let both = [
        CacheVary::Header(http::header::AUTHORIZATION),
        CacheVary::Cookie("session".into()),
    ];
    c.bench_function("cache/identity_authorization_and_cookie", |b| {
        b.iter(|| key.identity(black_box(&both), black_box(&headers)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
