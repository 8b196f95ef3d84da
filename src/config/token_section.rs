//! `[token]` and `[[token.verify_keys]]` -> [`TokenConfig`].
//!
//! Key material is named here (an environment variable or a file), never given: the
//! token module loads it at start-up, so a missing variable is its error, not ours.
//! What is checked here is the shape: one source per key, the kind of source the
//! algorithm needs (a shared secret for HS256, PEM keys for EdDSA/ES256), and unique
//! `kid`s across the ring.

use std::path::PathBuf;
use std::time::Duration;

use super::raw::{Field, RawToken, RawVerifyKey};
use super::validate::Errors;
use super::{values, CookieConfig, KeyMaterial, KeySpec, OnInvalid, TokenAlgorithm, TokenConfig};

/// Default variable holding the HS256 secret.
pub const DEFAULT_SECRET_ENV: &str = "TIDEMARK_SECRET";

/// `HS256` | `EdDSA` | `ES256` (case-insensitive).
pub fn parse_algorithm(text: &str) -> Option<TokenAlgorithm> {
    match text.to_ascii_uppercase().as_str() {
        "HS256" => Some(TokenAlgorithm::Hs256),
        "EDDSA" => Some(TokenAlgorithm::EdDsa),
        "ES256" => Some(TokenAlgorithm::Es256),
        _ => None,
    }
}

/// The configured name of an algorithm.
pub fn algorithm_name(alg: TokenAlgorithm) -> &'static str {
    match alg {
        TokenAlgorithm::Hs256 => "HS256",
        TokenAlgorithm::EdDsa => "EdDSA",
        TokenAlgorithm::Es256 => "ES256",
    }
}

/// Validates `[token]`; defaults: issuer `tidemark`, HS256, kid `k1`, secret from
/// `TIDEMARK_SECRET`, ttl `1h`, on_invalid `reject`, no cookie.
pub fn token(errs: &mut Errors, raw: RawToken) -> TokenConfig {
    let algorithm = algorithm(
        errs,
        "token.algorithm",
        raw.algorithm,
        TokenAlgorithm::Hs256,
    );
    let issuer = errs
        .field::<String>("token.issuer", raw.issuer)
        .unwrap_or_else(|| "tidemark".into());
    if issuer.trim().is_empty() {
        errs.push(
            "token.issuer",
            "the issuer is empty",
            "set a non-empty `iss` value (default `tidemark`)",
        );
    }
    let kid = errs
        .field::<String>("token.kid", raw.kid)
        .unwrap_or_else(|| "k1".into());
    check_kid(errs, "token.kid", &kid);

    let secret_env = errs.field("token.secret_env", raw.secret_env);
    let secret_file = errs.field("token.secret_file", raw.secret_file);
    let private_env = errs.field("token.private_key_env", raw.private_key_env);
    let private_file = errs.field("token.private_key_file", raw.private_key_file);
    let public_env = errs.field("token.public_key_env", raw.public_key_env);
    let public_file = errs.field("token.public_key_file", raw.public_key_file);

    let (material, public_material) = if algorithm == TokenAlgorithm::Hs256 {
        for (name, set) in [
            ("private_key_env", &private_env),
            ("private_key_file", &private_file),
            ("public_key_env", &public_env),
            ("public_key_file", &public_file),
        ] {
            if set.is_some() {
                errs.push(
                    format!("token.{name}"),
                    format!("`{name}` is for EdDSA/ES256 keys; the algorithm is HS256"),
                    "remove it, or set `algorithm = \"EdDSA\"` (or `\"ES256\"`)",
                );
            }
        }
        let material = one_source(
            errs,
            "token",
            ("secret_env", secret_env),
            ("secret_file", secret_file),
        )
        .unwrap_or_else(|| KeyMaterial::Env(DEFAULT_SECRET_ENV.into()));
        (material, None)
    } else {
        let alg = algorithm_name(algorithm);
        for (name, set) in [("secret_env", &secret_env), ("secret_file", &secret_file)] {
            if set.is_some() {
                errs.push(
                    format!("token.{name}"),
                    format!("`{name}` is for HS256 secrets; the algorithm is {alg}"),
                    "use `private_key_env` or `private_key_file` (a PKCS#8 PEM)",
                );
            }
        }
        let private = one_source(
            errs,
            "token",
            ("private_key_env", private_env),
            ("private_key_file", private_file),
        );
        if private.is_none() {
            errs.push("token.private_key_env", format!("algorithm {alg} needs a signing key"), "set `private_key_env` (a variable holding a PKCS#8 PEM) or `private_key_file`; `tidemark token keygen` makes one");
        }
        let public = one_source(
            errs,
            "token",
            ("public_key_env", public_env),
            ("public_key_file", public_file),
        );
        (private.unwrap_or(KeyMaterial::Env(String::new())), public)
    };
    let signing = KeySpec {
        kid,
        algorithm,
        material,
        public_material,
    };

    let mut verify_keys = Vec::new();
    for (i, raw) in raw.verify_keys.into_iter().enumerate() {
        if let Some(key) = verify_key(errs, i, raw, algorithm) {
            let seen = std::iter::once(&signing)
                .chain(verify_keys.iter())
                .any(|k: &KeySpec| k.kid == key.kid);
            if seen {
                errs.push(
                    format!("token.verify_keys[{i}].kid"),
                    format!("kid `{}` is already in the key ring", key.kid),
                    "give every key its own kid (verification picks the key by kid)",
                );
            }
            verify_keys.push(key);
        }
    }

    let on_invalid = match errs
        .field::<String>("token.on_invalid", raw.on_invalid)
        .as_deref()
    {
        None | Some("reject") => OnInvalid::Reject,
        Some("ignore") => OnInvalid::Ignore,
        Some(other) => {
            errs.push(
                "token.on_invalid",
                format!("unknown value `{other}`"),
                "use `reject` (answer 400) or `ignore` (treat as no token)",
            );
            OnInvalid::Reject
        }
    };
    let secure = errs
        .field("token.cookie_secure", raw.cookie_secure)
        .unwrap_or(true);
    let cookie = errs
        .field::<String>("token.cookie", raw.cookie)
        .map(|name| {
            if let Err(p) = values::cookie_name(&name) {
                errs.problem("token.cookie", p);
            }
            CookieConfig { name, secure }
        });
    TokenConfig {
        issuer,
        ttl: errs.duration_or("token.ttl", raw.ttl, Duration::from_secs(3600), true),
        on_invalid,
        cookie,
        signing,
        verify_keys,
    }
}

fn algorithm(
    errs: &mut Errors,
    key: &str,
    field: Field<String>,
    default: TokenAlgorithm,
) -> TokenAlgorithm {
    let Some(text) = errs.field::<String>(key, field) else {
        return default;
    };
    parse_algorithm(&text).unwrap_or_else(|| {
        errs.push(
            key,
            format!("unsupported algorithm `{text}`"),
            "use `HS256` (default), `EdDSA` or `ES256`",
        );
        default
    })
}

fn check_kid(errs: &mut Errors, key: &str, kid: &str) {
    if kid.is_empty() || kid.len() > 64 || kid.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        errs.push(
            key,
            format!("`{kid}` is not a usable kid"),
            "use 1 to 64 visible characters, e.g. `k2`",
        );
    }
}

/// At most one of an env/file pair; `None` when neither is set.
fn one_source(
    errs: &mut Errors,
    prefix: &str,
    env: (&str, Option<String>),
    file: (&str, Option<String>),
) -> Option<KeyMaterial> {
    match (env.1, file.1) {
        (Some(_), Some(_)) => {
            errs.push(
                format!("{prefix}.{}", file.0),
                format!("both `{}` and `{}` are set", env.0, file.0),
                format!("keep one of `{}` and `{}`", env.0, file.0),
            );
            None
        }
        (Some(var), None) => Some(KeyMaterial::Env(var)),
        (None, Some(path)) => Some(KeyMaterial::File(PathBuf::from(path))),
        (None, None) => None,
    }
}

/// One `[[token.verify_keys]]` entry; its algorithm defaults to the signing key's.
fn verify_key(
    errs: &mut Errors,
    i: usize,
    raw: RawVerifyKey,
    default_alg: TokenAlgorithm,
) -> Option<KeySpec> {
    let prefix = format!("token.verify_keys[{i}]");
    let algorithm = algorithm(
        errs,
        &format!("{prefix}.algorithm"),
        raw.algorithm,
        default_alg,
    );
    let kid = errs.field::<String>(&format!("{prefix}.kid"), raw.kid);
    if kid.is_none() {
        errs.push(
            format!("{prefix}.kid"),
            "a verify key needs a kid",
            "set `kid` to the kid of the tokens this key verifies",
        );
    }
    let sources = [
        (
            "secret_env",
            errs.field(&format!("{prefix}.secret_env"), raw.secret_env),
        ),
        (
            "secret_file",
            errs.field(&format!("{prefix}.secret_file"), raw.secret_file),
        ),
        (
            "public_key_env",
            errs.field(&format!("{prefix}.public_key_env"), raw.public_key_env),
        ),
        (
            "public_key_file",
            errs.field(&format!("{prefix}.public_key_file"), raw.public_key_file),
        ),
    ];
    let set: Vec<(&str, String)> = sources
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect();
    let hs = algorithm == TokenAlgorithm::Hs256;
    let wanted = if hs {
        "`secret_env` or `secret_file`"
    } else {
        "`public_key_env` or `public_key_file`"
    };
    let [(name, value)] = set.as_slice() else {
        let problem = if set.is_empty() {
            "no key source".to_string()
        } else {
            format!("{} key sources set", set.len())
        };
        errs.push(prefix, problem, format!("set exactly one of {wanted}"));
        return None;
    };
    if name.starts_with("secret") != hs {
        errs.push(
            format!("{prefix}.{name}"),
            format!(
                "`{name}` does not fit algorithm {}",
                algorithm_name(algorithm)
            ),
            format!("use {wanted}"),
        );
    }
    let kid = kid?;
    check_kid(errs, &format!("{prefix}.kid"), &kid);
    let material = if name.ends_with("_env") {
        KeyMaterial::Env(value.clone())
    } else {
        KeyMaterial::File(PathBuf::from(value))
    };
    Some(KeySpec {
        kid,
        algorithm,
        material,
        public_material: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    fn check(text: &str) -> (TokenConfig, Vec<String>) {
        let raw = RawToken::deserialize(toml::from_str::<toml::Table>(text).unwrap()).unwrap();
        let mut errs = Errors::default();
        let token = token(&mut errs, raw);
        (token, errs.0.into_iter().map(|e| e.key).collect())
    }

    #[test]
    fn hs256_secret_from_a_file_or_the_default_variable() {
        let (t, errs) = check("");
        assert!(errs.is_empty());
        assert_eq!(
            t.signing.material,
            KeyMaterial::Env(DEFAULT_SECRET_ENV.into())
        );
        let (t, errs) = check("secret_file = \"/run/s\"");
        assert!(errs.is_empty());
        assert_eq!(t.signing.material, KeyMaterial::File("/run/s".into()));
        let (_, errs) = check("secret_file = \"/run/s\"\nsecret_env = \"S\"");
        assert_eq!(errs, ["token.secret_file"]);
    }

    #[test]
    fn key_sources_must_fit_the_algorithm() {
        let (_, errs) = check("private_key_env = \"K\"");
        assert_eq!(errs, ["token.private_key_env"]);
        let (_, errs) = check("algorithm = \"EdDSA\"\nsecret_env = \"S\"");
        assert_eq!(errs, ["token.secret_env", "token.private_key_env"]);
        let (t, errs) =
            check("algorithm = \"es256\"\nprivate_key_env = \"K\"\npublic_key_file = \"/p\"");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(t.signing.algorithm, TokenAlgorithm::Es256);
        assert_eq!(
            t.signing.public_material,
            Some(KeyMaterial::File("/p".into()))
        );
    }

    #[test]
    fn verify_keys_need_one_fitting_source_and_their_own_kid() {
        let (t, errs) = check(
            "[[verify_keys]]\nkid = \"k0\"\nsecret_env = \"OLD\"\n\
             [[verify_keys]]\nkid = \"k1\"\nsecret_env = \"OLDER\"\n\
             [[verify_keys]]\nkid = \"e\"\nalgorithm = \"EdDSA\"\nsecret_env = \"X\"\n\
             [[verify_keys]]\nsecret_env = \"Y\"\n",
        );
        assert_eq!(
            t.verify_keys[0].algorithm,
            TokenAlgorithm::Hs256,
            "defaults to the signing algorithm"
        );
        assert_eq!(
            errs,
            [
                "token.verify_keys[1].kid",
                "token.verify_keys[2].secret_env",
                "token.verify_keys[3].kid"
            ]
        );
    }

    #[test]
    fn cookie_on_invalid_and_ttl() {
        let (t, errs) =
            check("cookie = \"tm\"\ncookie_secure = false\non_invalid = \"ignore\"\nttl = \"15m\"");
        assert!(errs.is_empty(), "{errs:?}");
        let cookie = t.cookie.unwrap();
        assert_eq!((cookie.name.as_str(), cookie.secure), ("tm", false));
        assert_eq!(t.on_invalid, OnInvalid::Ignore);
        assert_eq!(t.ttl, Duration::from_secs(900));
        let (_, errs) =
            check("cookie = \"a b\"\non_invalid = \"drop\"\nttl = \"0s\"\nissuer = \"\"");
        assert_eq!(
            errs,
            [
                "token.issuer",
                "token.on_invalid",
                "token.cookie",
                "token.ttl"
            ]
        );
    }
}
