//! Loading keys: sources, refusals with their fix, rotation.

use super::*;

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
fn random_inline_secrets_ending_in_a_line_break_keep_their_length() {
    // The demo draws 32 random bytes; one draw in 128 ends in `\n` or `\r`, which
    // must not shorten the secret below the minimum and stop the gateway.
    let mut secret = [7u8; 32];
    for last in [b'\n', b'\r'] {
        secret[31] = last;
        let ring = ring_of(hs("k1", &secret));
        let token = ring.mint("s", &pos("users=1"), now());
        assert!(ring.verify(&token, now()).is_ok());
        let mut other = secret;
        other[31] = b'x';
        assert!(
            ring_of(hs("k1", &other)).verify(&token, now()).is_err(),
            "the last byte is part of the secret"
        );
    }
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
