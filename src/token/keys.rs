//! The key ring: one signing key and any number of verify-only keys, by `kid`.
//!
//! Every key is parsed and checked at start-up (length of HS256 secrets, PEM type and
//! curve of EdDSA/ES256 keys), and the signing key signs and verifies a probe token
//! before the ring is handed out, so minting can't fail later.

use std::collections::HashMap;
use std::time::Duration;

use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use p256::elliptic_curve::sec1::ToEncodedPoint;

use super::KeyError;
use crate::config::{KeyMaterial, KeySpec, TokenAlgorithm, TokenConfig};

/// Shortest HS256 secret accepted, in bytes (RFC 7518 §3.2: a key of the hash's size).
pub const MIN_HS256_SECRET: usize = 32;

/// A key that verifies tokens: its algorithm comes from the config, never the token.
pub(super) struct VerifyKey {
    pub(super) algorithm: TokenAlgorithm,
    pub(super) decoding: DecodingKey,
}

/// The signing key and every verifying key.
pub struct KeyRing {
    pub(super) issuer: String,
    pub(super) ttl: Duration,
    pub(super) signing_kid: String,
    pub(super) signing_algorithm: TokenAlgorithm,
    pub(super) encoding: EncodingKey,
    pub(super) keys: HashMap<String, VerifyKey>,
    /// Keys the write-through cache's identity hash; derived from the signing key.
    pub(super) identity: crate::cache::identity::IdentityKey,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        f.debug_struct("KeyRing")
            .field("issuer", &self.issuer)
            .field("signing_kid", &self.signing_kid)
            .field("algorithm", &self.signing_algorithm)
            .field("kids", &kids)
            .finish_non_exhaustive()
    }
}

/// The JWT `alg` of a configured algorithm.
pub(super) fn jwt_algorithm(alg: TokenAlgorithm) -> Algorithm {
    match alg {
        TokenAlgorithm::Hs256 => Algorithm::HS256,
        TokenAlgorithm::EdDsa => Algorithm::EdDSA,
        TokenAlgorithm::Es256 => Algorithm::ES256,
    }
}

/// The `alg` header text of a configured algorithm.
pub(super) fn alg_name(alg: TokenAlgorithm) -> &'static str {
    match alg {
        TokenAlgorithm::Hs256 => "HS256",
        TokenAlgorithm::EdDsa => "EdDSA",
        TokenAlgorithm::Es256 => "ES256",
    }
}

impl KeyRing {
    /// Loads every key of `[token]` (from env vars or files) and checks it.
    ///
    /// Errors name the key's `kid` and what to do: a missing variable, an unreadable
    /// file, a secret shorter than 32 bytes, a PEM of the wrong type, a duplicate `kid`.
    pub fn from_config(config: &TokenConfig) -> Result<KeyRing, KeyError> {
        let (encoding, signing_verify) = load_signing(&config.signing)?;
        let identity = crate::cache::identity::IdentityKey::derive(&read_material(
            &config.signing.kid,
            &config.signing.material,
        )?);
        let mut keys = HashMap::new();
        keys.insert(config.signing.kid.clone(), signing_verify);
        for spec in &config.verify_keys {
            if keys.contains_key(&spec.kid) {
                return Err(KeyError::DuplicateKid(spec.kid.clone()));
            }
            keys.insert(spec.kid.clone(), load_verify_only(spec)?);
        }
        let ring = KeyRing {
            issuer: config.issuer.clone(),
            ttl: config.ttl,
            signing_kid: config.signing.kid.clone(),
            signing_algorithm: config.signing.algorithm,
            encoding,
            keys,
            identity,
        };
        ring.self_test()?;
        Ok(ring)
    }

    /// The configured lifetime of minted tokens.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `iss` claim minted and required.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `kid` new tokens are signed with.
    pub fn signing_kid(&self) -> &str {
        &self.signing_kid
    }

    /// The key of the write-through cache's identity hash: derived from the signing
    /// key's material, so gateways that share a signing key (and a Redis cache) hash
    /// identities alike, and nobody without the key can compute one.
    pub fn identity_key(&self) -> &crate::cache::identity::IdentityKey {
        &self.identity
    }

    /// The algorithm new tokens are signed with.
    pub fn algorithm(&self) -> TokenAlgorithm {
        self.signing_algorithm
    }

    /// Every `kid` that verifies, sorted.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        kids
    }

    /// Signs and verifies a probe token, so that a private key and a public key that
    /// do not belong together are refused at start-up rather than on the first write.
    fn self_test(&self) -> Result<(), KeyError> {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let probe = self
            .try_mint("self-test", &crate::position::PositionVector::new(), now)
            .map_err(|e| self.invalid(format!("cannot sign with this key: {e}")))?;
        self.verify(&probe, now).map(|_| ()).map_err(|e| {
            self.invalid(format!(
                "a token signed with the private key does not verify with the public key \
                 ({e}); give the public key that belongs to this private key, or leave it out \
                 to derive it"
            ))
        })
    }

    fn invalid(&self, problem: String) -> KeyError {
        KeyError::Invalid {
            kid: self.signing_kid.clone(),
            problem,
        }
    }
}

fn invalid(spec: &KeySpec, problem: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        kid: spec.kid.clone(),
        problem: problem.into(),
    }
}

/// Reads key material: an environment variable, a file or inline bytes.
pub(super) fn read_material(kid: &str, material: &KeyMaterial) -> Result<Vec<u8>, KeyError> {
    match material {
        KeyMaterial::Env(var) => match std::env::var(var) {
            Ok(value) => Ok(value.into_bytes()),
            Err(std::env::VarError::NotPresent) => Err(KeyError::MissingEnv {
                kid: kid.to_string(),
                var: var.clone(),
            }),
            Err(std::env::VarError::NotUnicode(_)) => Err(KeyError::Invalid {
                kid: kid.to_string(),
                problem: format!("environment variable {var} is not valid UTF-8"),
            }),
        },
        KeyMaterial::File(path) => std::fs::read(path).map_err(|source| KeyError::File {
            kid: kid.to_string(),
            path: path.display().to_string(),
            source,
        }),
        KeyMaterial::Inline(bytes) => Ok(bytes.clone()),
    }
}

/// An HS256 secret: the bytes, at least 32 bytes long. Text from a file or an
/// environment variable has its trailing line breaks trimmed (an editor's or `echo`'s
/// newline is not part of the secret); bytes given in code are taken as they are, so
/// a random secret that happens to end in `\n` keeps its length.
fn hs256_secret(spec: &KeySpec) -> Result<Vec<u8>, KeyError> {
    let mut secret = read_material(&spec.kid, &spec.material)?;
    if !matches!(spec.material, KeyMaterial::Inline(_)) {
        while matches!(secret.last(), Some(b'\n' | b'\r')) {
            secret.pop();
        }
    }
    if secret.len() < MIN_HS256_SECRET {
        return Err(invalid(
            spec,
            format!(
                "the HS256 secret is {} bytes; it must be at least {MIN_HS256_SECRET} bytes \
                 (generate one with `tidemark token keygen`)",
                secret.len()
            ),
        ));
    }
    Ok(secret)
}

fn pem_text(spec: &KeySpec, bytes: Vec<u8>, what: &str) -> Result<String, KeyError> {
    String::from_utf8(bytes).map_err(|_| invalid(spec, format!("the {what} is not PEM text")))
}

/// The signing key, and the key that verifies what it signs.
fn load_signing(spec: &KeySpec) -> Result<(EncodingKey, VerifyKey), KeyError> {
    let material = read_material(&spec.kid, &spec.material)?;
    let public = match &spec.public_material {
        Some(m) if spec.algorithm != TokenAlgorithm::Hs256 => {
            Some(pem_text(spec, read_material(&spec.kid, m)?, "public key")?)
        }
        _ => None,
    };
    let (encoding, decoding) = match spec.algorithm {
        TokenAlgorithm::Hs256 => {
            let secret = hs256_secret(spec)?;
            (
                EncodingKey::from_secret(&secret),
                DecodingKey::from_secret(&secret),
            )
        }
        TokenAlgorithm::EdDsa => {
            let pem = pem_text(spec, material, "private key")?;
            let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem_block(&pem, "PRIVATE KEY"))
                .map_err(|e| {
                    invalid(
                        spec,
                        format!(
                        "not an Ed25519 PKCS#8 private key PEM (`-----BEGIN PRIVATE KEY-----`): \
                         {e}; generate one with `tidemark token keygen` (EdDSA)"
                    ),
                    )
                })?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| invalid(spec, format!("cannot re-encode the private key: {e}")))?;
            let derived = key.verifying_key();
            let verifying = match public {
                Some(pem) => {
                    let given = ed25519_public(spec, &pem)?;
                    if given != derived {
                        return Err(mismatch(spec));
                    }
                    given
                }
                None => derived,
            };
            (
                EncodingKey::from_ed_der(der.as_bytes()),
                DecodingKey::from_ed_der(verifying.as_bytes()),
            )
        }
        TokenAlgorithm::Es256 => {
            let pem = pem_text(spec, material, "private key")?;
            let key = p256::SecretKey::from_pkcs8_pem(pem_block(&pem, "PRIVATE KEY"))
                .or_else(|e| {
                    // Also take OpenSSL's `ecparam -genkey` output (SEC1); report the
                    // PKCS#8 error, the documented format, when that fails too.
                    p256::SecretKey::from_sec1_pem(pem_block(&pem, "EC PRIVATE KEY")).map_err(|_| e)
                })
                .map_err(|e| {
                    invalid(
                        spec,
                        format!(
                            "not a P-256 PKCS#8 private key PEM (`-----BEGIN PRIVATE KEY-----`): \
                             {e}; generate one with `tidemark token keygen` (ES256)"
                        ),
                    )
                })?;
            let der = key
                .to_pkcs8_der()
                .map_err(|e| invalid(spec, format!("cannot re-encode the private key: {e}")))?;
            let derived = key.public_key();
            let verifying = match public {
                Some(pem) => {
                    let given = p256_public(spec, &pem)?;
                    if given != derived {
                        return Err(mismatch(spec));
                    }
                    given
                }
                None => derived,
            };
            (
                EncodingKey::from_ec_der(der.as_bytes()),
                DecodingKey::from_ec_der(verifying.to_encoded_point(false).as_bytes()),
            )
        }
    };
    Ok((
        encoding,
        VerifyKey {
            algorithm: spec.algorithm,
            decoding,
        },
    ))
}

fn mismatch(spec: &KeySpec) -> KeyError {
    invalid(
        spec,
        "the public key does not belong to the private key; give the matching public key, \
         or leave it out to derive it from the private key",
    )
}

/// A verify-only key: an HS256 secret or an SPKI public key PEM.
fn load_verify_only(spec: &KeySpec) -> Result<VerifyKey, KeyError> {
    let decoding = match spec.algorithm {
        TokenAlgorithm::Hs256 => DecodingKey::from_secret(&hs256_secret(spec)?),
        TokenAlgorithm::EdDsa => {
            let pem = pem_text(
                spec,
                read_material(&spec.kid, &spec.material)?,
                "public key",
            )?;
            DecodingKey::from_ed_der(ed25519_public(spec, &pem)?.as_bytes())
        }
        TokenAlgorithm::Es256 => {
            let pem = pem_text(
                spec,
                read_material(&spec.kid, &spec.material)?,
                "public key",
            )?;
            let key = p256_public(spec, &pem)?;
            DecodingKey::from_ec_der(key.to_encoded_point(false).as_bytes())
        }
    };
    Ok(VerifyKey {
        algorithm: spec.algorithm,
        decoding,
    })
}

fn ed25519_public(spec: &KeySpec, pem: &str) -> Result<ed25519_dalek::VerifyingKey, KeyError> {
    ed25519_dalek::VerifyingKey::from_public_key_pem(pem_block(pem, "PUBLIC KEY")).map_err(|e| {
        invalid(
            spec,
            format!(
                "not an Ed25519 public key PEM (`-----BEGIN PUBLIC KEY-----`): {e}; \
                 `tidemark token keygen` prints it after the private key"
            ),
        )
    })
}

fn p256_public(spec: &KeySpec, pem: &str) -> Result<p256::PublicKey, KeyError> {
    p256::PublicKey::from_public_key_pem(pem_block(pem, "PUBLIC KEY")).map_err(|e| {
        invalid(
            spec,
            format!(
                "not a P-256 public key PEM (`-----BEGIN PUBLIC KEY-----`): {e}; \
                 `tidemark token keygen` prints it after the private key"
            ),
        )
    })
}

/// The first `-----BEGIN label-----` ... `-----END label-----` block of `text`, so
/// comment lines around a PEM (as `tidemark token keygen` prints) are ignored.
/// Without such a block, the trimmed text (for the parser to explain).
pub(super) fn pem_block<'a>(text: &'a str, label: &str) -> &'a str {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return text.trim();
    };
    let rest = &text[start..];
    match rest.find(&end) {
        Some(stop) => &rest[..stop + end.len()],
        None => rest.trim(),
    }
}
