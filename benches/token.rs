//! Token costs on the request path: every request with a token pays one `verify`,
//! every write one `mint`. Goal: HS256 verify <= 3 us for a token with 3 logs.

use std::time::{Duration, UNIX_EPOCH};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tidemark::config::{KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};
use tidemark::position::PositionVector;
use tidemark::token::{keygen, KeyRing};

fn ring(algorithm: TokenAlgorithm, material: Vec<u8>) -> KeyRing {
    KeyRing::from_config(&TokenConfig {
        issuer: "tidemark".into(),
        ttl: Duration::from_secs(3600),
        on_invalid: OnInvalid::Reject,
        cookie: None,
        signing: KeySpec {
            kid: "k1".into(),
            algorithm,
            material: KeyMaterial::Inline(material),
            public_material: None,
        },
        verify_keys: vec![],
    })
    .expect("bench key ring loads")
}

fn bench(c: &mut Criterion) {
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pos = PositionVector::parse("users=1234567,orders=88812,billing=4242", None)
        .expect("valid vector");
    let sid = "Zm9vYmFyYmF6cXV4cXV1eA";

    let hs_secret = keygen(TokenAlgorithm::Hs256);
    let hs = ring(TokenAlgorithm::Hs256, hs_secret.clone().into_bytes());
    let hs_token = hs.mint(sid, &pos, now);
    c.bench_function("token/verify_hs256_3_logs", |b| {
        b.iter(|| hs.verify(black_box(&hs_token), now).expect("verifies"))
    });
    c.bench_function("token/mint_hs256_3_logs", |b| {
        b.iter(|| hs.mint(black_box(sid), black_box(&pos), now))
    });

    // A projection over 128 Kafka partitions with 12-digit positions (issue 10).
    let wide: PositionVector = (0..128u64)
        .map(|i| (format!("user-events-{i}"), 987_654_321_000 + i * 7_919))
        .collect();
    let wide_token = hs.mint(sid, &wide, now);
    // The JSON-form token of this vector is over the 4 KiB cap: verify it with the
    // cap out of the way only where it fits.
    if wide_token.len() <= tidemark::token::MAX_TOKEN_BYTES {
        c.bench_function("token/verify_hs256_128_logs", |b| {
            b.iter(|| hs.verify(black_box(&wide_token), now).expect("verifies"))
        });
    }
    c.bench_function("token/mint_hs256_128_logs", |b| {
        b.iter(|| hs.mint(black_box(sid), black_box(&wide), now))
    });

    // The JSON-object form (`pos`) minted before the compact one, signed the way the
    // old code did (same claim order), for an A/B in one build: mint of both forms,
    // and verify of old-form tokens (still accepted) against new-form ones.
    #[derive(serde::Serialize)]
    struct OldClaims<'a> {
        iss: &'a str,
        iat: u64,
        exp: u64,
        sid: &'a str,
        pos: &'a PositionVector,
    }
    let old_key = jsonwebtoken::EncodingKey::from_secret(hs_secret.as_bytes());
    let old_mint = |pos: &PositionVector| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = OldClaims {
            iss: "tidemark",
            iat: 1_800_000_000,
            exp: 1_800_003_600,
            sid,
            pos,
        };
        jsonwebtoken::encode(&header, &claims, &old_key).expect("signs")
    };
    let old_token = old_mint(&pos);
    c.bench_function("token/verify_hs256_3_logs_json_pos", |b| {
        b.iter(|| hs.verify(black_box(&old_token), now).expect("verifies"))
    });
    c.bench_function("token/mint_hs256_3_logs_json_pos", |b| {
        b.iter(|| old_mint(black_box(&pos)))
    });
    c.bench_function("token/mint_hs256_128_logs_json_pos", |b| {
        b.iter(|| old_mint(black_box(&wide)))
    });

    let ed = ring(
        TokenAlgorithm::EdDsa,
        keygen(TokenAlgorithm::EdDsa).into_bytes(),
    );
    let ed_token = ed.mint(sid, &pos, now);
    c.bench_function("token/verify_eddsa_3_logs", |b| {
        b.iter(|| ed.verify(black_box(&ed_token), now).expect("verifies"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
