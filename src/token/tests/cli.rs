//! `tidemark token keygen|inspect`, session ids, metric labels.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;

#[test]
fn keygen_output_is_ready_to_use() {
    let secret = keygen(TokenAlgorithm::Hs256);
    assert_eq!(secret.len(), 43);
    assert_eq!(URL_SAFE_NO_PAD.decode(&secret).unwrap().len(), 32);
    assert_ne!(secret, keygen(TokenAlgorithm::Hs256));
    assert!(KeyRing::from_config(&config(hs("k1", secret.as_bytes()), vec![])).is_ok());
    for alg in [TokenAlgorithm::EdDsa, TokenAlgorithm::Es256] {
        let out = keygen(alg);
        let comments: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(comments.len(), 2, "{out}");
        assert!(comments[0].contains("private key") && comments[1].contains("public key"));
        assert!(
            out.contains("-----BEGIN PRIVATE KEY-----")
                && out.contains("-----BEGIN PUBLIC KEY-----")
        );
    }
}

#[test]
fn session_ids_are_128_random_bits() {
    let a = new_session_id();
    assert_eq!(a.len(), 22);
    assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), 16);
    assert_ne!(a, new_session_id());
}

#[test]
fn inspect_describes_a_token() {
    let ring = hs_ring();
    let token = ring.mint("s1", &pos("users=5"), now());
    let out = inspect(&token, Some(&ring), now());
    assert!(out.contains("alg=HS256 kid=k1"), "{out}");
    assert!(
        out.contains("vector: users=5 (1 logs, compact `p`)") && out.contains("\"sid\": \"s1\""),
        "{out}"
    );
    assert!(out.contains("exp: 2027-01-15T09:00:00Z (in 1h)"), "{out}");
    assert!(out.contains("verified with key k1"), "{out}");
    let other = ring_of(hs("k1", b"another-secret-another-secret-!!"));
    let out = inspect(&token, Some(&other), now());
    assert!(
        out.contains("NOT verified: token signature does not verify"),
        "{out}"
    );
    let out = inspect(&token, None, now() + Duration::from_secs(7200));
    assert!(
        out.contains("(1h ago)") && out.contains("decoded only (no key configured)"),
        "{out}"
    );
    assert!(inspect("garbage", None, now()).contains("not a JWT"));
    let far = forge(HS_HEADER, r#"{"exp":18446744073709551615}"#, SECRET);
    assert!(inspect(&far, Some(&ring), now()).contains("beyond year 9999"));
}

#[test]
fn reasons_are_bounded_metric_labels() {
    let all = [
        TokenError::Oversize,
        TokenError::Malformed("x".into()),
        TokenError::UnknownKey(None),
        TokenError::Algorithm,
        TokenError::Signature,
        TokenError::Issuer("x".into()),
        TokenError::Expired,
        TokenError::Claims("x".into()),
    ];
    let reasons: std::collections::BTreeSet<&str> = all.iter().map(TokenError::reason).collect();
    assert_eq!(reasons.len(), all.len());
}
