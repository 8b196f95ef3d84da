//! Tests of the token module as a gateway operator sees it: keys load or are refused
//! with a useful message, tokens round-trip, and every bad token is refused with the
//! right reason.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;

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

#[test]
fn round_trip_for_every_algorithm() {
    let rings = [
        ("HS256", hs_ring()),
        (
            "EdDSA",
            ring(
                spec(
                    "ed",
                    TokenAlgorithm::EdDsa,
                    KeyMaterial::Inline(pair(TokenAlgorithm::EdDsa).0.into_bytes()),
                ),
                vec![],
            ),
        ),
        (
            "ES256",
            ring(
                spec(
                    "ec",
                    TokenAlgorithm::Es256,
                    KeyMaterial::Inline(pair(TokenAlgorithm::Es256).0.into_bytes()),
                ),
                vec![],
            ),
        ),
    ];
    for (alg, ring) in rings {
        let sid = new_session_id();
        let p = pos("users=1234,orders=88");
        let token = ring.mint(&sid, &p, now());
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        assert_eq!(header.kid.as_deref(), Some(ring.signing_kid()));
        let claims = ring.verify(&token, now()).unwrap();
        assert_eq!(
            claims,
            Claims {
                iss: "tidemark".into(),
                iat: 1_800_000_000,
                exp: 1_800_003_600,
                sid,
                pos: p,
            },
            "{alg}"
        );
    }
}

#[test]
fn merging_a_write_keeps_the_session_id() {
    let ring = hs_ring();
    let first = ring.mint("session-1", &pos("users=5"), now());
    let mut claims = ring.verify(&first, now()).unwrap();
    claims.pos.merge(&pos("users=7,orders=2"));
    let later = now() + Duration::from_secs(10);
    let second = ring.mint(&claims.sid, &claims.pos, later);
    let merged = ring.verify(&second, later).unwrap();
    assert_eq!(merged.sid, "session-1");
    assert_eq!(merged.pos, pos("orders=2,users=7"));
    assert_eq!(merged.exp, 1_800_003_610);
}

#[test]
fn a_token_without_kid_is_tried_with_the_signing_key() {
    let token = forge(
        r#"{"alg":"HS256"}"#,
        &claims_json(r#","sid":"s","pos":{}"#),
        SECRET,
    );
    assert_eq!(hs_ring().verify(&token, now()).unwrap().sid, "s");
}

#[test]
fn tampered_payload_fails_the_signature() {
    let ring = hs_ring();
    let token = ring.mint("s", &pos("users=5"), now());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(claims_json(r#","sid":"s","pos":{"users":999}"#));
    let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(ring.verify(&tampered, now()), Err(TokenError::Signature));
    let other_key = forge(
        HS_HEADER,
        &claims_json(r#","sid":"s","pos":{}"#),
        b"another-secret-another-secret-!!",
    );
    assert_eq!(ring.verify(&other_key, now()), Err(TokenError::Signature));
}

#[test]
fn alg_none_and_algorithm_confusion_are_refused() {
    let ring = hs_ring();
    let body = URL_SAFE_NO_PAD.encode(claims_json(r#","sid":"s","pos":{}"#));
    for header in [
        r#"{"alg":"none","kid":"k1"}"#,
        r#"{"alg":"none"}"#,
        r#"{"alg":"HS512","kid":"k1"}"#,
    ] {
        let token = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(header));
        assert_eq!(
            ring.verify(&token, now()),
            Err(TokenError::Algorithm),
            "{header}"
        );
    }
    // An HS256 token "signed" with an EdDSA ring's public key as the HMAC secret.
    let (private, public) = pair(TokenAlgorithm::EdDsa);
    let ed = ring_of(spec(
        "ed",
        TokenAlgorithm::EdDsa,
        KeyMaterial::Inline(private.into_bytes()),
    ));
    let confused = forge(
        r#"{"alg":"HS256","kid":"ed"}"#,
        &claims_json(r#","sid":"s","pos":{}"#),
        public.as_bytes(),
    );
    assert_eq!(ed.verify(&confused, now()), Err(TokenError::Algorithm));
}

fn ring_of(signing: KeySpec) -> KeyRing {
    ring(signing, vec![])
}

#[test]
fn unknown_kid_is_reported_with_the_kid() {
    let other = ring(hs("k9", SECRET), vec![]);
    let token = other.mint("s", &pos("users=1"), now());
    assert_eq!(
        hs_ring().verify(&token, now()),
        Err(TokenError::UnknownKey(Some("k9".into())))
    );
}

#[test]
fn another_issuer_is_refused_with_its_name() {
    let mut cfg = config(hs("k1", SECRET), vec![]);
    cfg.issuer = "someone-else".into();
    let token = KeyRing::from_config(&cfg)
        .unwrap()
        .mint("s", &pos("users=1"), now());
    assert_eq!(
        hs_ring().verify(&token, now()),
        Err(TokenError::Issuer("someone-else".into()))
    );
}

#[test]
fn expiry_is_checked_against_the_given_time() {
    let ring = hs_ring();
    let token = ring.mint("s", &pos("users=1"), now());
    let ttl = ring.ttl();
    assert!(ring
        .verify(&token, now() + ttl - Duration::from_secs(1))
        .is_ok());
    assert_eq!(ring.verify(&token, now() + ttl), Err(TokenError::Expired));
    assert_eq!(
        ring.verify(&token, now() + ttl * 2),
        Err(TokenError::Expired)
    );
    assert_eq!(TokenError::Expired.reason(), "expired");
}

#[test]
fn oversize_is_refused_before_parsing() {
    let ring = hs_ring();
    let garbage = "x".repeat(MAX_TOKEN_BYTES + 1);
    assert_eq!(ring.verify(&garbage, now()), Err(TokenError::Oversize));
    let at_limit = "x".repeat(MAX_TOKEN_BYTES);
    assert!(matches!(
        ring.verify(&at_limit, now()),
        Err(TokenError::Malformed(_))
    ));
    // A genuinely signed token that grew too large is refused too.
    let big: PositionVector = (0..300).map(|i| (format!("log-{i}"), u64::MAX)).collect();
    let token = ring.mint("s", &big, now());
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert_eq!(ring.verify(&token, now()), Err(TokenError::Oversize));
}

#[test]
fn garbage_is_malformed() {
    let ring = hs_ring();
    let header = URL_SAFE_NO_PAD.encode(HS_HEADER);
    let body = URL_SAFE_NO_PAD.encode(claims_json(r#","sid":"s","pos":{}"#));
    let cases = [
        String::new(),
        "abc".into(),
        "a.b".into(),
        "a.b.c.d".into(),
        "!!!.###.$$$".into(),
        format!("{}.{body}.sig", URL_SAFE_NO_PAD.encode("not json")),
        format!("{}.{body}.sig", URL_SAFE_NO_PAD.encode(r#"["HS256"]"#)),
        format!("{}.{body}.sig", URL_SAFE_NO_PAD.encode(r#"{"alg":256}"#)),
        format!(
            "{}.{body}.sig",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","crit":["b64"]}"#)
        ),
        format!("{header}.{body}.not*base64"),
        format!("{header}.{body}=.sig"),
    ];
    for token in cases {
        let got = ring.verify(&token, now());
        assert!(
            matches!(got, Err(TokenError::Malformed(_))),
            "{token:?}: {got:?}"
        );
    }
    let not_object = forge(HS_HEADER, "[1,2]", SECRET);
    assert!(matches!(
        ring.verify(&not_object, now()),
        Err(TokenError::Malformed(_))
    ));
}

#[test]
fn claims_of_the_wrong_type_are_refused() {
    let ring = hs_ring();
    let cases = [
        r#","sid":"s","pos":{"users":-1}"#,
        r#","sid":"s","pos":{"users":"5"}"#,
        r#","sid":"s","pos":{"users":1.5}"#,
        r#","sid":"s","pos":"users=5""#,
        r#","sid":"s","pos":{"bad log":5}"#,
        r#","sid":"s""#,
        r#","pos":{}"#,
        r#","sid":"","pos":{}"#,
        r#","sid":7,"pos":{}"#,
    ];
    for extra in cases {
        let token = forge(HS_HEADER, &claims_json(extra), SECRET);
        let got = ring.verify(&token, now());
        assert!(
            matches!(got, Err(TokenError::Claims(_))),
            "{extra}: {got:?}"
        );
    }
    let long_sid = format!(r#","sid":"{}","pos":{{}}"#, "s".repeat(MAX_SID_LEN + 1));
    let token = forge(HS_HEADER, &claims_json(&long_sid), SECRET);
    assert!(matches!(
        ring.verify(&token, now()),
        Err(TokenError::Claims(_))
    ));
    for bad in [
        r#"{"iat":1,"exp":1800003600,"sid":"s","pos":{}}"#,
        r#"{"iss":1,"iat":1,"exp":1800003600,"sid":"s","pos":{}}"#,
        r#"{"iss":"tidemark","iat":1,"sid":"s","pos":{}}"#,
        r#"{"iss":"tidemark","iat":1,"exp":"soon","sid":"s","pos":{}}"#,
    ] {
        let got = ring.verify(&forge(HS_HEADER, bad, SECRET), now());
        assert!(matches!(got, Err(TokenError::Claims(_))), "{bad}: {got:?}");
    }
}

#[test]
fn issuer_and_expiry_are_reported_before_odd_claims() {
    let ring = hs_ring();
    let foreign = r#"{"iss":"evil","iat":1,"exp":1800003600,"pos":"x"}"#;
    assert_eq!(
        ring.verify(&forge(HS_HEADER, foreign, SECRET), now()),
        Err(TokenError::Issuer("evil".into()))
    );
    let expired = r#"{"iss":"tidemark","iat":1,"exp":2,"pos":"x"}"#;
    assert_eq!(
        ring.verify(&forge(HS_HEADER, expired, SECRET), now()),
        Err(TokenError::Expired)
    );
}

#[test]
fn keys_rotate_without_logging_anyone_out() {
    let old = hs_ring();
    let token = old.mint("s", &pos("users=3"), now());
    let k2 = b"a-brand-new-secret-for-kid-k2-xxxxxxxx";
    let rotated = ring(hs("k2", k2), vec![hs("k1", SECRET)]);
    assert_eq!(rotated.verify(&token, now()).unwrap().pos, pos("users=3"));
    let fresh = rotated.mint("s", &pos("users=4"), now());
    assert_eq!(
        jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
        Some("k2")
    );
    assert_eq!(rotated.kids(), vec!["k1", "k2"]);
    let retired = ring(hs("k2", k2), vec![]);
    assert_eq!(
        retired.verify(&token, now()),
        Err(TokenError::UnknownKey(Some("k1".into())))
    );
}

#[test]
fn rotation_across_algorithms_with_a_verify_only_public_key() {
    let (private, public) = pair(TokenAlgorithm::EdDsa);
    let old = ring_of(spec(
        "ed1",
        TokenAlgorithm::EdDsa,
        KeyMaterial::Inline(private.into_bytes()),
    ));
    let token = old.mint("s", &pos("users=1"), now());
    let new = ring(
        hs("k2", SECRET),
        vec![spec(
            "ed1",
            TokenAlgorithm::EdDsa,
            KeyMaterial::Inline(public.into_bytes()),
        )],
    );
    assert_eq!(new.verify(&token, now()).unwrap().sid, "s");
    let (_, es_public) = pair(TokenAlgorithm::Es256);
    let es_verify = spec(
        "es1",
        TokenAlgorithm::Es256,
        KeyMaterial::Inline(es_public.into_bytes()),
    );
    assert!(KeyRing::from_config(&config(hs("k2", SECRET), vec![es_verify])).is_ok());
}

fn load_err(signing: KeySpec, verify_keys: Vec<KeySpec>) -> String {
    KeyRing::from_config(&config(signing, verify_keys))
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn short_hs256_secrets_are_refused_with_the_fix() {
    let msg = load_err(hs("k1", &[b'x'; 31]), vec![]);
    assert!(
        msg.contains("31 bytes") && msg.contains("at least 32"),
        "{msg}"
    );
    assert!(msg.contains("tidemark token keygen"), "{msg}");
    assert!(KeyRing::from_config(&config(hs("k1", &[b'x'; 32]), vec![])).is_ok());
    let msg = load_err(hs("k1", SECRET), vec![hs("old", b"short")]);
    assert!(msg.contains("\"old\""), "{msg}");
}

#[test]
fn secrets_load_from_files_with_the_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secret");
    std::fs::write(&path, b"0123456789abcdef0123456789abcdef\n").unwrap();
    let from_file = ring_of(spec(
        "k1",
        TokenAlgorithm::Hs256,
        KeyMaterial::File(path.clone()),
    ));
    let inline = ring_of(hs("k1", b"0123456789abcdef0123456789abcdef"));
    let token = from_file.mint("s", &pos("users=1"), now());
    assert!(
        inline.verify(&token, now()).is_ok(),
        "newline must not be part of the secret"
    );
    std::fs::write(&path, b"0123456789abcdef0123456789abcde\r\n").unwrap();
    let msg = load_err(
        spec("k1", TokenAlgorithm::Hs256, KeyMaterial::File(path)),
        vec![],
    );
    assert!(msg.contains("31 bytes"), "{msg}");
    let missing = dir.path().join("nope");
    let err = KeyRing::from_config(&config(
        spec(
            "k1",
            TokenAlgorithm::Hs256,
            KeyMaterial::File(missing.clone()),
        ),
        vec![],
    ))
    .unwrap_err();
    assert!(matches!(err, KeyError::File { .. }));
    assert!(err.to_string().contains(&missing.display().to_string()));
}

#[test]
fn secrets_load_from_the_environment_and_a_missing_variable_is_named() {
    let var = "TIDEMARK_TOKEN_TEST_SECRET_ONLY_USED_HERE";
    let missing = "TIDEMARK_TOKEN_TEST_SECRET_NEVER_SET";
    std::env::set_var(var, "0123456789abcdef0123456789abcdef");
    let from_env = ring_of(spec(
        "k1",
        TokenAlgorithm::Hs256,
        KeyMaterial::Env(var.into()),
    ));
    assert!(from_env
        .verify(&from_env.mint("s", &pos("users=1"), now()), now())
        .is_ok());
    let err = KeyRing::from_config(&config(
        spec(
            "k1",
            TokenAlgorithm::Hs256,
            KeyMaterial::Env(missing.into()),
        ),
        vec![],
    ))
    .unwrap_err();
    assert!(matches!(&err, KeyError::MissingEnv { var, .. } if var == missing));
    assert!(err.to_string().contains(missing), "{err}");
}

#[test]
fn duplicate_kids_are_refused() {
    let err = KeyRing::from_config(&config(hs("k1", SECRET), vec![hs("k1", SECRET)])).unwrap_err();
    assert!(matches!(err, KeyError::DuplicateKid(k) if k == "k1"));
}

#[test]
fn bad_pems_and_mismatched_pairs_are_refused() {
    let msg = load_err(
        spec(
            "ed",
            TokenAlgorithm::EdDsa,
            KeyMaterial::Inline(b"not a pem".to_vec()),
        ),
        vec![],
    );
    assert!(
        msg.contains("\"ed\"") && msg.contains("PRIVATE KEY"),
        "{msg}"
    );
    // An ES256 key offered as EdDSA.
    let (es_private, es_public) = pair(TokenAlgorithm::Es256);
    let msg = load_err(
        spec(
            "ed",
            TokenAlgorithm::EdDsa,
            KeyMaterial::Inline(es_private.clone().into_bytes()),
        ),
        vec![],
    );
    assert!(msg.contains("Ed25519"), "{msg}");
    // A public key that belongs to another private key.
    let (_, other_public) = pair(TokenAlgorithm::Es256);
    let mut signing = spec(
        "ec",
        TokenAlgorithm::Es256,
        KeyMaterial::Inline(es_private.clone().into_bytes()),
    );
    signing.public_material = Some(KeyMaterial::Inline(other_public.into_bytes()));
    let msg = load_err(signing.clone(), vec![]);
    assert!(msg.contains("does not belong"), "{msg}");
    signing.public_material = Some(KeyMaterial::Inline(es_public.into_bytes()));
    assert!(KeyRing::from_config(&config(signing, vec![])).is_ok());
    let msg = load_err(
        hs("k1", SECRET),
        vec![spec(
            "v",
            TokenAlgorithm::EdDsa,
            KeyMaterial::Inline(b"junk".to_vec()),
        )],
    );
    assert!(msg.contains("PUBLIC KEY"), "{msg}");
}

#[test]
fn es256_also_takes_an_openssl_sec1_private_key() {
    use p256::pkcs8::LineEnding;
    let key = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let sec1 = key.to_sec1_pem(LineEnding::LF).unwrap();
    let ring = ring_of(spec(
        "ec",
        TokenAlgorithm::Es256,
        KeyMaterial::Inline(sec1.as_bytes().to_vec()),
    ));
    assert!(ring
        .verify(&ring.mint("s", &pos("a=1"), now()), now())
        .is_ok());
}

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
        out.contains("\"users\": 5") && out.contains("\"sid\": \"s1\""),
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

proptest! {
    #[test]
    fn verify_and_inspect_never_panic(s in "\\PC{0,300}") {
        let ring = hs_ring();
        let _ = ring.verify(&s, now());
        let _ = inspect(&s, Some(&ring), now());
    }

    #[test]
    fn verify_never_panics_on_jwt_shaped_input(s in "[A-Za-z0-9_=-]{0,60}\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}") {
        let _ = hs_ring().verify(&s, now());
    }

    #[test]
    fn any_signed_position_vector_round_trips(entries in prop::collection::btree_map("[a-z]{1,8}", any::<u64>(), 0..8)) {
        let ring = hs_ring();
        let p = PositionVector::from_map(entries).unwrap();
        let claims = ring.verify(&ring.mint("s", &p, now()), now()).unwrap();
        prop_assert_eq!(claims.pos, p);
    }
}
