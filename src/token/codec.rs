//! Minting and verifying: the JWT wire form of [`Claims`].
//!
//! Verification parses the token itself, in a fixed order (size, structure, `kid`,
//! algorithm, signature, issuer, expiry, claim types), so each failure maps to exactly
//! one [`TokenError`]. jsonwebtoken's `crypto::verify` checks the signature with the
//! key and algorithm the *ring* holds for the token's `kid`; the token's own `alg` is
//! only compared with it, never used.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Header;
use serde::{Deserialize, Serialize};

use super::compact;
use super::keys::{alg_name, jwt_algorithm, KeyRing, VerifyKey};
use super::{Claims, TokenError, MAX_TOKEN_BYTES};
use crate::position::PositionVector;

/// Longest session id accepted in a token, in bytes (ours are 22).
pub const MAX_SID_LEN: usize = 64;

/// Seconds since the Unix epoch (0 for a clock before 1970).
pub(super) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The JOSE header fields tidemark reads. Unknown fields are ignored, `crit` is refused.
#[derive(Deserialize)]
pub(super) struct WireHeader {
    pub(super) alg: String,
    #[serde(default)]
    pub(super) kid: Option<String>,
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// The claims as they travel; `pos` is checked into a [`PositionVector`] afterwards.
#[derive(Deserialize)]
struct WireClaims<'a> {
    #[serde(borrow)]
    iss: Cow<'a, str>,
    iat: u64,
    exp: u64,
    #[serde(borrow)]
    sid: Cow<'a, str>,
    /// The vector in the compact form ([`super::compact`]); what this gateway mints.
    #[serde(borrow, default)]
    p: Option<Cow<'a, str>>,
    /// The vector as a JSON object: the form minted before the compact one, accepted
    /// until such tokens expire.
    #[serde(default)]
    pos: Option<BTreeMap<String, u64>>,
    #[serde(default)]
    pri: BTreeMap<String, u64>,
}

/// A token split into its parts, header decoded.
pub(super) struct Parts<'t> {
    pub(super) header: WireHeader,
    /// `header.payload`, the signed bytes.
    pub(super) message: &'t str,
    pub(super) payload: Vec<u8>,
    pub(super) signature: &'t str,
}

fn malformed(what: &str) -> TokenError {
    TokenError::Malformed(what.to_string())
}

/// Splits and decodes a token: three base64url parts, a JSON object header with `alg`.
pub(super) fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(malformed("expected three dot-separated parts"));
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| malformed("header is not base64url"))?;
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| malformed("payload is not base64url"))?;
    // Checked here for a clear reason; decoded once, by the signature check.
    if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        || s.len() % 4 == 1
    {
        return Err(malformed("signature is not base64url"));
    }
    // serde would also read a struct from a JSON array; a JOSE header is an object.
    if !is_json_object(&header_bytes) {
        return Err(malformed("header is not a JSON object"));
    }
    let header: WireHeader = serde_json::from_slice(&header_bytes)
        .map_err(|_| malformed("header is not a JSON object with a string `alg`"))?;
    if header.crit.is_some() {
        return Err(malformed(
            "header has `crit` extensions this gateway does not understand",
        ));
    }
    Ok(Parts {
        header,
        message: &token[..h.len() + 1 + p.len()],
        payload,
        signature: s,
    })
}

/// Whether `json` starts like an object (`{` after white space).
fn is_json_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

impl KeyRing {
    /// Signs a token for `sid` with frontier `pos`, issued `now`, expiring `now + ttl`.
    ///
    /// Can't fail: the ring's signing key signed a probe token when it was loaded, and
    /// HMAC, Ed25519 and (deterministic, RFC 6979) ECDSA signing have no other failure.
    pub fn mint(&self, sid: &str, pos: &PositionVector, now: SystemTime) -> String {
        self.try_mint(sid, pos, now).expect(
            "signing with a key that passed the load-time self-test cannot fail \
             (HS256/EdDSA/ES256 signing and claim serialization are infallible)",
        )
    }

    /// [`KeyRing::mint`], returning jsonwebtoken's error instead of panicking.
    pub fn try_mint(
        &self,
        sid: &str,
        pos: &PositionVector,
        now: SystemTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        self.try_mint_pinned(sid, pos, &BTreeMap::new(), now)
    }

    /// [`KeyRing::mint`] with the `pri` claim (logs marked for the primary until a
    /// time; entries already past are dropped).
    pub fn mint_pinned(
        &self,
        sid: &str,
        pos: &PositionVector,
        pri: &BTreeMap<String, u64>,
        now: SystemTime,
    ) -> String {
        self.try_mint_pinned(sid, pos, pri, now).expect(
            "signing with a key that passed the load-time self-test cannot fail \
             (HS256/EdDSA/ES256 signing and claim serialization are infallible)",
        )
    }

    fn try_mint_pinned(
        &self,
        sid: &str,
        pos: &PositionVector,
        pri: &BTreeMap<String, u64>,
        now: SystemTime,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let iat = unix_secs(now);
        let live: BTreeMap<String, u64>;
        let pri = if pri.values().all(|&until| until > iat) {
            pri
        } else {
            live = pri
                .iter()
                .filter(|(_, &until)| until > iat)
                .map(|(k, &v)| (k.clone(), v))
                .collect();
            &live
        };
        let claims = SerClaims {
            iss: &self.issuer,
            iat,
            exp: iat.saturating_add(self.ttl.as_secs()),
            sid,
            p: compact::encode(pos),
            pri,
        };
        let mut header = Header::new(jwt_algorithm(self.signing_algorithm));
        header.kid = Some(self.signing_kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
    }

    /// Verifies size, structure, `kid`, algorithm, signature, issuer, expiry (against
    /// `now`) and claim types, in that order.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Oversize);
        }
        let parts = split(token)?;
        let key = self.key_for(parts.header.kid.as_deref())?;
        if parts.header.alg != alg_name(key.algorithm) {
            return Err(TokenError::Algorithm);
        }
        let alg = jwt_algorithm(key.algorithm);
        match jsonwebtoken::crypto::verify(
            parts.signature,
            parts.message.as_bytes(),
            &key.decoding,
            alg,
        ) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(TokenError::Signature),
        }
        self.check_claims(&parts.payload, now)
    }

    /// The key for a token's `kid`; a token without one is tried with the signing key.
    pub(super) fn key_for(&self, kid: Option<&str>) -> Result<&VerifyKey, TokenError> {
        let kid_or_signing = kid.unwrap_or(&self.signing_kid);
        self.keys
            .get(kid_or_signing)
            .ok_or_else(|| TokenError::UnknownKey(kid.map(str::to_string)))
    }

    /// Issuer, expiry, then the types of the rest, on a payload whose signature held.
    fn check_claims(&self, payload: &[u8], now: SystemTime) -> Result<Claims, TokenError> {
        if !is_json_object(payload) {
            return Err(malformed("payload is not a JSON object"));
        }
        let wire: WireClaims = match serde_json::from_slice(payload) {
            Ok(wire) => wire,
            Err(e) => return Err(self.explain_bad_claims(payload, now, &e)),
        };
        if wire.iss != self.issuer {
            return Err(TokenError::Issuer(wire.iss.into_owned()));
        }
        if unix_secs(now) >= wire.exp {
            return Err(TokenError::Expired);
        }
        if wire.sid.is_empty() || wire.sid.len() > MAX_SID_LEN {
            return Err(TokenError::Claims(format!(
                "`sid` must be 1 to {MAX_SID_LEN} characters"
            )));
        }
        let pos = match (wire.p, wire.pos) {
            (Some(p), None) => {
                compact::decode(&p).map_err(|e| TokenError::Claims(format!("`p`: {e}")))?
            }
            (None, Some(pos)) => PositionVector::from_map(pos)
                .map_err(|e| TokenError::Claims(format!("`pos`: {e}")))?,
            (None, None) => return Err(TokenError::Claims("`p` is missing".into())),
            (Some(_), Some(_)) => {
                return Err(TokenError::Claims(
                    "both `p` and `pos` are present; a token has one".into(),
                ))
            }
        };
        Ok(Claims {
            iss: wire.iss.into_owned(),
            iat: wire.iat,
            exp: wire.exp,
            sid: wire.sid.into_owned(),
            pos,
            pri: wire.pri,
            min_position: Default::default(),
        })
    }

    /// Why a signed payload did not parse, keeping the check order: a foreign issuer
    /// or an expired token is reported as such even when other claims are odd.
    fn explain_bad_claims(
        &self,
        payload: &[u8],
        now: SystemTime,
        err: &serde_json::Error,
    ) -> TokenError {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(payload) else {
            return malformed("payload is not a JSON object");
        };
        match map.get("iss") {
            Some(serde_json::Value::String(iss)) if iss != &self.issuer => {
                return TokenError::Issuer(iss.clone())
            }
            Some(serde_json::Value::String(_)) => {}
            Some(_) => return TokenError::Claims("`iss` must be a string".into()),
            None => return TokenError::Claims("`iss` is missing".into()),
        }
        match map.get("exp").map(serde_json::Value::as_u64) {
            Some(Some(exp)) if unix_secs(now) >= exp => return TokenError::Expired,
            Some(Some(_)) => {}
            Some(None) => return TokenError::Claims("`exp` must be a whole number".into()),
            None => return TokenError::Claims("`exp` is missing".into()),
        }
        TokenError::Claims(err.to_string())
    }
}

/// The claims as minted (borrowed, so minting copies nothing).
#[derive(Serialize)]
struct SerClaims<'a> {
    iss: &'a str,
    iat: u64,
    exp: u64,
    sid: &'a str,
    /// The vector in the compact form ([`super::compact`]).
    p: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pri: &'a BTreeMap<String, u64>,
}
