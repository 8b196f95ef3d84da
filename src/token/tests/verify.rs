//! Minting and verifying: round trips and every refusal reason.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::*;
use proptest::prelude::*;

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
                pri: Default::default(),
                min_position: Default::default(),
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
