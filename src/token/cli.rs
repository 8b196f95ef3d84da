//! `tidemark token keygen` and `tidemark token inspect`.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use rand::rngs::OsRng;
use rand::RngCore;

use super::codec::{split, unix_secs};
use super::keys::KeyRing;
use super::MAX_TOKEN_BYTES;
use crate::config::TokenAlgorithm;

/// Where the generated private key goes, for the comment line above it.
const PRIVATE_KEY_HINT: &str = "the signing key: put it in the variable named by \
     `token.secret_env` (TIDEMARK_SECRET by default) or in a key file; keep it secret";

/// Where the generated public key goes, for the comment line above it.
const PUBLIC_KEY_HINT: &str = "verifies tokens of the key above; derived from the private \
     key when omitted; list it in `[[token.verify_keys]]` of gateways that only verify, and \
     keep it there after rotating to a new signing key";

/// New key material for `tidemark token keygen`, printable: an HS256 secret, or a
/// PKCS#8 private key PEM followed by its public key PEM.
///
/// HS256: 32 random bytes from the OS, base64url without padding (43 characters,
/// used as-is as the secret's bytes). EdDSA / ES256: each PEM is preceded by a `#`
/// comment line saying what it is and where it goes (the key loader skips text
/// around a PEM block, so the output can be saved to a file unchanged).
pub fn keygen(alg: TokenAlgorithm) -> String {
    match alg {
        TokenAlgorithm::Hs256 => {
            let mut secret = [0u8; 32];
            OsRng.fill_bytes(&mut secret);
            URL_SAFE_NO_PAD.encode(secret)
        }
        TokenAlgorithm::EdDsa => {
            let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF);
            let public = key.verifying_key().to_public_key_pem(LineEnding::LF);
            render_pair(
                "EdDSA (Ed25519)",
                private.as_deref().map(|s| s.as_str()),
                public,
            )
        }
        TokenAlgorithm::Es256 => {
            let key = p256::SecretKey::random(&mut OsRng);
            let private = key.to_pkcs8_pem(LineEnding::LF);
            let public = key.public_key().to_public_key_pem(LineEnding::LF);
            render_pair(
                "ES256 (P-256)",
                private.as_deref().map(|s| s.as_str()),
                public,
            )
        }
    }
}

fn render_pair<E1: std::fmt::Display, E2: std::fmt::Display>(
    what: &str,
    private: Result<&str, E1>,
    public: Result<String, E2>,
) -> String {
    // Encoding a freshly generated key into PEM has no failure mode in practice; if the
    // encoder ever refused, say so in the output rather than panicking.
    let private = private.map_or_else(
        |e| format!("(cannot encode the private key: {e})\n"),
        str::to_string,
    );
    let public = public.unwrap_or_else(|e| format!("(cannot encode the public key: {e})\n"));
    format!(
        "# {what} private key, PKCS#8 PEM: {PRIVATE_KEY_HINT}\n{private}\
         # {what} public key, SPKI PEM: {PUBLIC_KEY_HINT}\n{public}"
    )
}

/// How `tidemark token inspect` ends: its exit status says whether the token is good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified with the config's keys (exit 0).
    Verified,
    /// A JWT, decoded only: no config was given (exit 0).
    Decoded,
    /// A JWT the config's keys refuse: bad signature, unknown key, expired... (exit 1).
    NotVerified,
    /// Not a JWT at all (exit 1).
    NotJwt,
}

/// The [`Verdict`] on `token`, as [`inspect`] reports it.
pub fn verdict(token: &str, ring: Option<&KeyRing>, now: SystemTime) -> Verdict {
    let token = token.trim();
    if split(token).is_err() {
        return Verdict::NotJwt;
    }
    match ring.map(|ring| ring.verify(token, now)) {
        None => Verdict::Decoded,
        Some(Ok(_)) => Verdict::Verified,
        Some(Err(_)) => Verdict::NotVerified,
    }
}

/// A human-readable account of a token for `tidemark token inspect`: header, claims,
/// and whether it verified with `ring` (or that it was only decoded).
///
/// Never panics: garbage is reported as "not a JWT" with the reason.
pub fn inspect(token: &str, ring: Option<&KeyRing>, now: SystemTime) -> String {
    let token = token.trim();
    let mut out = String::new();
    if token.len() > MAX_TOKEN_BYTES {
        let _ = writeln!(
            out,
            "size: {} bytes, over the {MAX_TOKEN_BYTES}-byte limit (the gateway refuses it unparsed)",
            token.len()
        );
    }
    let parts = match split(token) {
        Ok(parts) => parts,
        Err(e) => {
            let _ = writeln!(out, "not a JWT: {e}");
            return out;
        }
    };
    let _ = writeln!(
        out,
        "header: alg={} kid={}",
        parts.header.alg,
        parts.header.kid.as_deref().unwrap_or("(none)")
    );
    match serde_json::from_slice::<serde_json::Value>(&parts.payload) {
        Ok(claims) => {
            let pretty = serde_json::to_string_pretty(&claims).unwrap_or_default();
            let _ = writeln!(out, "claims: {pretty}");
            for name in ["iat", "exp"] {
                if let Some(t) = claims.get(name).and_then(serde_json::Value::as_u64) {
                    let _ = writeln!(out, "{name}: {}", describe_time(t, now));
                }
            }
        }
        Err(_) => {
            let _ = writeln!(out, "claims: (payload is not JSON)");
        }
    }
    let verdict = match ring {
        None => "decoded only (no key configured)".to_string(),
        Some(ring) => match ring.verify(token, now) {
            Ok(_) => format!(
                "verified with key {}",
                parts.header.kid.as_deref().unwrap_or(ring.signing_kid())
            ),
            Err(e) => format!("NOT verified: {e}"),
        },
    };
    let _ = writeln!(out, "{verdict}");
    out
}

/// First second of year 10000, which RFC 3339 formatting can't show.
const LAST_FORMATTABLE_SECS: u64 = 253_402_300_800;

/// `2026-11-26T23:23:18Z (in 59m 12s)` / `(3m ago)`.
fn describe_time(secs: u64, now: SystemTime) -> String {
    // humantime's formatter errors (and `to_string` would panic) past year 9999.
    let absolute = if secs < LAST_FORMATTABLE_SECS {
        humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(secs)).to_string()
    } else {
        format!("{secs} (beyond year 9999)")
    };
    let now_secs = unix_secs(now);
    let relative = if secs > now_secs {
        format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(secs - now_secs))
        )
    } else if secs == now_secs {
        "now".to_string()
    } else {
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(now_secs - secs))
        )
    };
    format!("{absolute} ({relative})")
}
