//! Tests of the token module as a gateway operator sees it: keys load or are refused
//! with a useful message, tokens round-trip, and every bad token is refused with the
//! right reason.

mod cli;
mod keys;
mod verified;
mod verify;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};

use super::keys::pem_block;
use super::*;
use crate::config::{KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn spec(kid: &str, algorithm: TokenAlgorithm, material: KeyMaterial) -> KeySpec {
    KeySpec {
        kid: kid.into(),
        algorithm,
        material,
        public_material: None,
    }
}

fn hs(kid: &str, secret: &[u8]) -> KeySpec {
    spec(
        kid,
        TokenAlgorithm::Hs256,
        KeyMaterial::Inline(secret.to_vec()),
    )
}

fn config(signing: KeySpec, verify_keys: Vec<KeySpec>) -> TokenConfig {
    TokenConfig {
        issuer: "tidemark".into(),
        ttl: Duration::from_secs(3600),
        on_invalid: OnInvalid::Reject,
        cookie: None,
        signing,
        verify_keys,
    }
}

fn ring(signing: KeySpec, verify_keys: Vec<KeySpec>) -> KeyRing {
    KeyRing::from_config(&config(signing, verify_keys)).expect("ring loads")
}

fn hs_ring() -> KeyRing {
    ring(hs("k1", SECRET), vec![])
}

/// A generated key pair: (private PEM with keygen's comment lines, public PEM).
fn pair(alg: TokenAlgorithm) -> (String, String) {
    let out = keygen(alg);
    let public = pem_block(&out, "PUBLIC KEY").to_string();
    (out, public)
}

fn pos(text: &str) -> PositionVector {
    PositionVector::parse(text, None).unwrap()
}

/// A token with any header and payload JSON, correctly HMAC-signed with `secret`.
fn forge(header: &str, claims: &str, secret: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(secret);
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{message}.{sig}")
}

const HS_HEADER: &str = r#"{"alg":"HS256","kid":"k1","typ":"JWT"}"#;

fn claims_json(extra: &str) -> String {
    format!(r#"{{"iss":"tidemark","iat":1800000000,"exp":1800003600{extra}}}"#)
}

fn ring_of(signing: KeySpec) -> KeyRing {
    ring(signing, vec![])
}

fn load_err(signing: KeySpec, verify_keys: Vec<KeySpec>) -> String {
    KeyRing::from_config(&config(signing, verify_keys))
        .expect_err("should be refused")
        .to_string()
}
