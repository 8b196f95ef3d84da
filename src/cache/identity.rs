//! Who a cache entry belongs to: a keyed hash of the request's identity headers.
//!
//! A session id alone does not name a user: with the cookie transport the token
//! survives a logout, and the next user of that browser would be answered from the
//! previous user's write. So every entry also records the writer's identity, and a
//! read whose identity differs is never answered from it.
//!
//! The identity is HMAC-SHA256 over the route's `cache.vary` items (by default the
//! `Authorization` header), each as its name, whether present, its length and its
//! bytes (so no two distinct inputs share one message), keyed by a key derived from
//! the token signing key: unguessable without that key, the same on every gateway
//! sharing it (the Redis backend), and never the raw credential. 128 bits of the MAC
//! are kept, base64url (22 characters).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http::header::COOKIE;
use http::HeaderMap;
use sha2::Sha256;

use crate::config::CacheVary;

/// The key identities are hashed with (32 bytes; see [`IdentityKey::derive`]).
#[derive(Clone)]
pub struct IdentityKey([u8; 32]);

impl std::fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentityKey(..)")
    }
}

impl IdentityKey {
    /// HMAC-SHA256(`secret`, a fixed label): `secret` is the token signing key's
    /// material, so gateways that sign alike hash identities alike.
    pub fn derive(secret: &[u8]) -> IdentityKey {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(b"tidemark cache identity v1");
        IdentityKey(mac.finalize().into_bytes().into())
    }

    /// The identity of a request with `headers` for a route varying on `vary`.
    pub fn identity(&self, vary: &[CacheVary], headers: &HeaderMap) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        for item in vary {
            let (kind, name, value): (&[u8], &[u8], Option<&[u8]>) = match item {
                CacheVary::Header(name) => (
                    b"h",
                    name.as_str().as_bytes(),
                    headers.get(name).map(|v| v.as_bytes()),
                ),
                CacheVary::Cookie(name) => (b"c", name.as_bytes(), cookie(headers, name)),
            };
            mac.update(kind);
            mac.update(&(name.len() as u64).to_be_bytes());
            mac.update(name);
            match value {
                None => mac.update(&[0]),
                Some(v) => {
                    mac.update(&[1]);
                    mac.update(&(v.len() as u64).to_be_bytes());
                    mac.update(v);
                }
            }
        }
        let out = mac.finalize().into_bytes();
        URL_SAFE_NO_PAD.encode(&out[..16])
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (first match).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(COOKIE).iter().find_map(|line| {
        line.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
    })
}

#[cfg(test)]
mod tests {
    use http::{HeaderName, HeaderValue};

    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn auth() -> Vec<CacheVary> {
        vec![CacheVary::Header(http::header::AUTHORIZATION)]
    }

    #[test]
    fn same_credentials_same_identity_others_differ() {
        let k = IdentityKey::derive(b"a signing key of thirty-two bytes!");
        let a = k.identity(&auth(), &headers(&[("authorization", "Bearer a")]));
        assert_eq!(
            a,
            k.identity(&auth(), &headers(&[("authorization", "Bearer a")]))
        );
        assert_eq!(a.len(), 22);
        assert!(!a.contains("Bearer"));
        assert_ne!(
            a,
            k.identity(&auth(), &headers(&[("authorization", "Bearer b")]))
        );
        assert_ne!(a, k.identity(&auth(), &HeaderMap::new()));
        assert_ne!(
            k.identity(&auth(), &HeaderMap::new()),
            k.identity(&auth(), &headers(&[("authorization", "")])),
            "absent and empty differ"
        );
        let other = IdentityKey::derive(b"another signing key, thirty-two!!");
        assert_ne!(
            a,
            other.identity(&auth(), &headers(&[("authorization", "Bearer a")]))
        );
    }

    #[test]
    fn cookies_and_headers_vary_as_configured() {
        let k = IdentityKey::derive(b"k");
        let vary = vec![
            CacheVary::Header(http::header::AUTHORIZATION),
            CacheVary::Cookie("session".into()),
        ];
        let s1 = headers(&[("cookie", "tm=t; session=one")]);
        let s2 = headers(&[("cookie", "session=two; tm=t")]);
        assert_ne!(k.identity(&vary, &s1), k.identity(&vary, &s2));
        let s1b = headers(&[("cookie", "x=1"), ("cookie", "session=one")]);
        assert_eq!(k.identity(&vary, &s1), k.identity(&vary, &s1b));
        assert_eq!(
            k.identity(&[], &s1),
            k.identity(&[], &s2),
            "no vary: one identity"
        );
    }
}
