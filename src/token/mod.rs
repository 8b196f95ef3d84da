//! Version tokens: signed JWTs carrying a session's causal frontier (SPEC "Token").
//!
//! A [`KeyRing`] holds one signing key and any number of verify-only keys by `kid`;
//! the algorithm is always taken from the ring, never from the token.
//!
//! - [`keys`]: loading and checking keys ([`KeyRing::from_config`]).
//! - `codec`: [`KeyRing::mint`] and [`KeyRing::verify`] (the JWT wire form).
//! - [`compact`]: the compact text form of the vector in claim `p`.
//! - `transport`: [`extract`] from a header or cookie, [`set_cookie`].
//! - [`verified`]: a bounded memo of verified tokens (a client echoes one token on
//!   every read; its signature is checked once).
//! - `cli`: [`keygen`] and [`inspect`] for `tidemark token ...`.

mod cli;
mod codec;
pub mod compact;
pub mod keys;
pub mod oversize;
mod transport;
pub mod verified;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::position::PositionVector;

pub use cli::{inspect, keygen, verdict, Verdict};
pub use codec::MAX_SID_LEN;
pub use keys::{KeyRing, MIN_HS256_SECRET};
pub use transport::{clear_cookie, extract, fits, set_cookie, Carrier, Oversize, MAX_COOKIE_BYTES};
pub use verified::VerifiedTokens;

/// Tokens larger than this are refused before any parsing (4 KiB, SPEC "Token"): a
/// vector bounded by the configured logs fits easily, and a cap keeps headers small.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The claims of a version token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: `token.issuer` (default `tidemark`); other issuers are refused.
    pub iss: String,
    /// Issued at, seconds since the Unix epoch.
    pub iat: u64,
    /// Expires at, seconds since the Unix epoch (`iat + token.ttl`).
    pub exp: u64,
    /// Random session id, kept across merges.
    pub sid: String,
    /// The session's causal frontier.
    pub pos: PositionVector,
    /// Logs whose reads go to the primary until a time (seconds since the Unix
    /// epoch): set when a write's fence failed, for the fence's `fallback`. Absent
    /// from tokens that never had one.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub pri: std::collections::BTreeMap<String, u64>,
    /// `pos` as a `Consistency-Min-Position` value, written once per verified token
    /// (a client echoes its token on every read): see [`Claims::min_position`].
    #[serde(skip)]
    pub min_position: MinPositionCache,
}

/// A lazily written header value that takes no part in comparisons: two claims are
/// equal whatever either has cached.
#[derive(Debug, Clone, Default)]
pub struct MinPositionCache(std::sync::OnceLock<Option<http::HeaderValue>>);

impl PartialEq for MinPositionCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for MinPositionCache {}

impl Claims {
    /// `pos` in its text form as a header value (`None` for an empty vector), made on
    /// first use and kept with the claims.
    pub fn min_position(&self) -> Option<http::HeaderValue> {
        self.min_position
            .0
            .get_or_init(|| self.pos.header_value())
            .clone()
    }

    /// Whether any of `logs` is marked for the primary at `now_secs`.
    pub fn pinned<S: AsRef<str>>(&self, logs: &[S], now_secs: u64) -> bool {
        logs.iter().any(|l| {
            self.pri
                .get(l.as_ref())
                .is_some_and(|&until| until > now_secs)
        })
    }
}

/// Why a token was not accepted. `Expired` is treated as absent, the rest follow
/// `token.on_invalid`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Over [`MAX_TOKEN_BYTES`]; refused before any parsing.
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    Oversize,
    /// Not three base64url parts with a JSON header and payload.
    #[error("token is not a well-formed JWT: {0}")]
    Malformed(String),
    /// Its `kid` names no key of the ring.
    #[error("token was signed with a key this gateway does not know (kid {0:?})")]
    UnknownKey(Option<String>),
    /// Its `alg` is not the algorithm of the key its `kid` names (`none` included).
    #[error("token's algorithm does not match its key")]
    Algorithm,
    /// The signature does not verify with the key its `kid` names.
    #[error("token signature does not verify")]
    Signature,
    /// Signed, but `iss` is not this gateway's `token.issuer`.
    #[error("token was issued by {0:?}, not by this gateway")]
    Issuer(String),
    /// `exp` is not after the time of the check.
    #[error("token has expired")]
    Expired,
    /// A claim is missing or of the wrong type (`pos`, `sid`, `iat`, ...).
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
    /// The key's environment variable is not set.
    #[error("key {kid:?}: environment variable {var} is not set; set it, or generate one with `tidemark token keygen`")]
    MissingEnv { kid: String, var: String },
    /// The key's file could not be read.
    #[error("key {kid:?}: cannot read {path}: {source}")]
    File {
        kid: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The material is not a usable key (too short, wrong PEM type, mismatched pair).
    #[error("key {kid:?}: {problem}")]
    Invalid { kid: String, problem: String },
    /// Two keys of the ring have the same `kid`.
    #[error("two keys share kid {0:?}; every key needs its own kid")]
    DuplicateKid(String),
}

/// A fresh random session id: 128 random bits, base64url without padding (22 chars).
///
/// From the thread-local CSPRNG, so ids can't be guessed from one another.
pub fn new_session_id() -> String {
    let bytes: [u8; 16] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests;
