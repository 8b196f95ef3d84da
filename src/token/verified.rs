//! A bounded memo of tokens already verified, so a client echoing the same token on
//! every read pays for the signature and the JSON once, not per request.
//!
//! Keyed by the whole token text (compared in full, so two tokens never share an
//! entry); only tokens whose verification succeeded are kept, and expiry is checked
//! against `now` on every hit, so a memoized token expires exactly when it would have.
//! The memo belongs to one [`KeyRing`]: a reload builds a new ring and a new memo, so
//! a retired key's tokens are verified afresh (and refused).
//!
//! Two generations of at most `capacity` entries each: when the young one is full it
//! becomes the old one and the previous old one is dropped; a hit in the old
//! generation is moved to the young one. Memory stays under `2 × capacity` entries
//! and tokens in use stay in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::codec::unix_secs;
use super::{Claims, KeyRing, TokenError};

/// Entries per generation by default (two generations: at most 8,192 tokens, about
/// 4 MiB with typical tokens of 300 bytes).
pub const DEFAULT_CAPACITY: usize = 4096;

/// Verified tokens by their text.
#[derive(Debug)]
pub struct VerifiedTokens {
    capacity: usize,
    generations: Mutex<Generations>,
}

/// Hashed with foldhash (seeded per process): every read with a token hashes the whole
/// token (~300 bytes), and SipHash cost ~700 instructions of it. Flooding is not a
/// concern: only tokens that verified (signed by the gateway) are ever inserted, so
/// no caller can choose colliding keys; a lookup of any other text is one probe.
type Memo = HashMap<Box<[u8]>, Arc<Claims>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Generations {
    young: Memo,
    old: Memo,
}

impl Default for VerifiedTokens {
    fn default() -> Self {
        VerifiedTokens::new(DEFAULT_CAPACITY)
    }
}

impl VerifiedTokens {
    /// A memo of at most `2 × capacity` tokens; `capacity` 0 keeps none.
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens {
            capacity,
            generations: Mutex::new(Generations::default()),
        }
    }

    /// `ring.verify(token, now)`, memoized: the same answer, without the signature
    /// check when `token` was verified before (expiry is still checked against `now`).
    pub fn verify(
        &self,
        ring: &KeyRing,
        token: &str,
        now: SystemTime,
    ) -> Result<Arc<Claims>, TokenError> {
        self.verify_raw(ring, token.as_bytes(), now)
    }

    /// [`VerifiedTokens::verify`] of the bytes a request carried: a token seen before
    /// is found by its bytes (the memo holds only tokens that verified, so only
    /// valid text); any other is checked to be visible ASCII first
    /// ([`super::transport::visible`]), then verified.
    pub fn verify_raw(
        &self,
        ring: &KeyRing,
        token: &[u8],
        now: SystemTime,
    ) -> Result<Arc<Claims>, TokenError> {
        if let Some(claims) = self.lookup(token) {
            if unix_secs(now) >= claims.exp {
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let text = super::transport::visible(token)?;
        let claims = Arc::new(ring.verify(text, now)?);
        self.insert(token, claims.clone());
        Ok(claims)
    }

    /// Tokens held now (both generations).
    pub fn len(&self) -> usize {
        self.generations
            .lock()
            .map(|g| g.young.len() + g.old.len())
            .unwrap_or(0)
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, token: &[u8]) -> Option<Arc<Claims>> {
        if self.capacity == 0 {
            return None;
        }
        let mut g = self.generations.lock().ok()?;
        if let Some(claims) = g.young.get(token) {
            return Some(claims.clone());
        }
        let (key, claims) = g.old.remove_entry(token)?;
        g.promote(self.capacity, key, claims.clone());
        Some(claims)
    }

    fn insert(&self, token: &[u8], claims: Arc<Claims>) {
        if self.capacity == 0 {
            return;
        }
        if let Ok(mut g) = self.generations.lock() {
            g.promote(self.capacity, token.into(), claims);
        }
    }
}

impl Generations {
    fn promote(&mut self, capacity: usize, key: Box<[u8]>, claims: Arc<Claims>) {
        if self.young.len() >= capacity {
            self.old = std::mem::take(&mut self.young);
        }
        self.young.insert(key, claims);
    }
}
