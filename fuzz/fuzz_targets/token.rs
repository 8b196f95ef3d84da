//! Token decoding: verify and inspect never panic on any input, and nothing but a
//! token this ring minted verifies.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use tidemark::config::{KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};
use tidemark::token::{inspect, KeyRing};

fn ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        KeyRing::from_config(&TokenConfig {
            issuer: "tidemark".into(),
            ttl: Duration::from_secs(3600),
            on_invalid: OnInvalid::Reject,
            cookie: None,
            signing: KeySpec {
                kid: "k1".into(),
                algorithm: TokenAlgorithm::Hs256,
                material: KeyMaterial::Inline(b"fuzz-secret-fuzz-secret-fuzz-secret!".to_vec()),
                public_material: None,
            },
            verify_keys: vec![],
        })
        .expect("the fuzz key ring loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let now = SystemTime::now();
    // Random input never carries a valid HMAC; a success would mean a forgery.
    assert!(ring().verify(text, now).is_err());
    let _ = inspect(text, Some(ring()), now);
    let _ = inspect(text, None, now);
});
