//! Version tokens: signed JWTs carrying a session's causal frontier (SPEC "Token").
//!
//! A [`KeyRing`] holds one signing key and any number of verify-only keys by `kid`;
//! the algorithm is always taken from the ring, never from the token. (Stub: the token
//! helper fills in the bodies; the signatures are the contract other modules use.)

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::config::{TokenAlgorithm, TokenConfig};
use crate::position::PositionVector;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of a version token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub iat: u64,
    pub exp: u64,
    /// Random session id, kept across merges.
    pub sid: String,
    /// The session's causal frontier.
    pub pos: PositionVector,
}

/// Why a token was not accepted. `Expired` is treated as absent, the rest follow
/// `token.on_invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    Oversize,
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("token was signed with a key this gateway does not know (kid {0:?})")]
    UnknownKey(Option<String>),
    #[error("token's algorithm does not match its key")]
    Algorithm,
    #[error("token signature does not verify")]
    Signature,
    #[error("token was issued by {0:?}, not by this gateway")]
    Issuer(String),
    #[error("token has expired")]
    Expired,
    #[error("token claims are invalid: {0}")]
    Claims(String),
}

impl TokenError {
    /// Bounded label for `tokens_rejected_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Oversize => "oversize",
            TokenError::Malformed(_) => "malformed",
            TokenError::UnknownKey(_) => "unknown_key",
            TokenError::Algorithm => "algorithm",
            TokenError::Signature => "signature",
            TokenError::Issuer(_) => "issuer",
            TokenError::Expired => "expired",
            TokenError::Claims(_) => "claims",
        }
    }
}

/// A key could not be loaded at start-up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {kid:?}: environment variable {var} is not set; set it, or generate one with `tidemark token keygen`")]
    MissingEnv { kid: String, var: String },
    #[error("key {kid:?}: cannot read {path}: {source}")]
    File {
        kid: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key {kid:?}: {problem}")]
    Invalid { kid: String, problem: String },
    #[error("two keys share kid {0:?}; every key needs its own kid")]
    DuplicateKid(String),
}

/// The signing key and every verifying key.
pub struct KeyRing {
    _private: (),
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads every key of `[token]` (from env vars or files) and checks it.
    pub fn from_config(config: &TokenConfig) -> Result<KeyRing, KeyError> {
        let _ = config;
        todo!("token helper")
    }

    /// Signs a token for `sid` with frontier `pos`, issued `now`, expiring `now + ttl`.
    pub fn mint(&self, sid: &str, pos: &PositionVector, now: SystemTime) -> String {
        let _ = (sid, pos, now);
        todo!("token helper")
    }

    /// Verifies size, structure, `kid`, algorithm, signature, issuer, expiry (against
    /// `now`) and claim types, in that order.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        let _ = (token, now);
        todo!("token helper")
    }

    /// The configured lifetime of minted tokens.
    pub fn ttl(&self) -> Duration {
        todo!("token helper")
    }
}

/// A fresh random session id (128 bits, base64url).
pub fn new_session_id() -> String {
    todo!("token helper")
}

/// The token a request carries: the header first, then the cookie named `cookie`.
/// Returns the raw text (not yet verified).
pub fn extract<'a>(
    headers: &'a HeaderMap,
    header: &HeaderName,
    cookie: Option<&str>,
) -> Option<&'a str> {
    let _ = (headers, header, cookie);
    todo!("token helper")
}

/// A `Set-Cookie` value for `token`: `HttpOnly; SameSite=Lax; Path=/; Max-Age=ttl`
/// and `Secure` when asked.
pub fn set_cookie(name: &str, token: &str, secure: bool, ttl: Duration) -> HeaderValue {
    let _ = (name, token, secure, ttl);
    todo!("token helper")
}

/// New key material for `tidemark token keygen`, printable: an HS256 secret, or a
/// PKCS#8 private key PEM followed by its public key PEM.
pub fn keygen(alg: TokenAlgorithm) -> String {
    let _ = alg;
    todo!("token helper")
}

/// A human-readable account of a token for `tidemark token inspect`: header, claims,
/// and whether it verified with `ring` (or that it was only decoded).
pub fn inspect(token: &str, ring: Option<&KeyRing>, now: SystemTime) -> String {
    let _ = (token, ring, now);
    todo!("token helper")
}
