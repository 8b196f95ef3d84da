//! The embedded cache backend: a bounded map with per-entry expiry.
//!
//! Entries live under `key`, either in one session's scope (token `sid`) or in the
//! global scope. Two ordered indexes make bounding cheap: insertion order (`seq`) and
//! expiry order (`(expires_at, seq)`), both `BTreeMap`s, so a put at capacity drops
//! expired entries first, then the oldest insertion, in O(log n) each. Time is passed
//! in (`now`) so tests are deterministic.
//!
//! Invariant (under the one mutex): `len` and `bytes` are the count and the
//! [`entry_bytes`] sum of the entries in `slots`, each of which is in `by_insertion`
//! (and in `by_expiry` when it expires); after every put `len <= max_entries` and
//! `bytes <= max_bytes`: an entry larger than `max_bytes` on its own is not stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::CachedResponse;
use crate::config::CacheScope;

/// A bounded in-process cache of write responses (the `memory` store backend).
/// Clones share their entries (a config reload keeps the cache).
#[derive(Debug, Clone)]
pub struct MemoryCache {
    max_entries: usize,
    max_bytes: usize,
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    slots: HashMap<String, Slot>,
    /// Insertion order: seq -> where the entry lives.
    by_insertion: BTreeMap<u64, Location>,
    /// Expiry order of entries that expire (a ttl too large for the clock never does).
    by_expiry: BTreeSet<(Instant, u64)>,
    next_seq: u64,
    len: usize,
    /// Sum of [`entry_bytes`] of the entries stored.
    bytes: usize,
}

/// What one entry is counted as against `cache.max_bytes`: its body, key, session id,
/// content type, identity and position text, plus [`ENTRY_OVERHEAD`].
pub fn entry_bytes(key: &str, sid: Option<&str>, r: &CachedResponse) -> usize {
    let position: usize = r.position.iter().map(|(l, _)| l.len() + 8).sum();
    // The key and session id are held twice: in the map and in the insertion index.
    2 * (key.len() + sid.map_or(0, str::len))
        + r.body.len()
        + r.content_type.as_ref().map_or(0, String::len)
        + r.identity.len()
        + position
        + ENTRY_OVERHEAD
}

/// Bytes counted per entry beyond its data: the map and index nodes, the `Stored`
/// and `Location` records and the allocations' headers (an estimate on the high side).
pub const ENTRY_OVERHEAD: usize = 256;

/// Every entry stored under one key.
#[derive(Debug, Default)]
struct Slot {
    global: Option<Stored>,
    sessions: HashMap<String, Stored>,
}

#[derive(Debug)]
struct Stored {
    response: CachedResponse,
    expires_at: Option<Instant>,
    seq: u64,
    /// [`entry_bytes`] of this entry.
    size: usize,
}

impl Stored {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

/// Where an entry lives: its key and its session (`None`: global).
#[derive(Debug, Clone)]
struct Location {
    key: String,
    sid: Option<String>,
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes (counted by
    /// [`entry_bytes`]; expired ones go first, then oldest). `0` stores nothing. The
    /// config defaults are 100000 (`cache.max_entries`) and 64 MiB (`cache.max_bytes`).
    pub fn new(max_entries: usize, max_bytes: usize) -> MemoryCache {
        MemoryCache {
            max_entries,
            max_bytes,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// The session's own live entry for `key`, else a live global one, written by a
    /// request of the same `identity` ([`super::identity`]): an entry of another
    /// identity is never returned. An expired entry is never returned (and is dropped
    /// when met).
    pub fn get(
        &self,
        key: &str,
        sid: &str,
        identity: &str,
        now: Instant,
    ) -> Option<CachedResponse> {
        let mut inner = self.lock();
        let slot = inner.slots.get(key)?;
        if let Some(own) = slot.sessions.get(sid) {
            if !own.live(now) {
                let seq = own.seq;
                inner.remove(seq);
            } else if own.response.identity == identity {
                return Some(own.response.clone());
            }
        }
        let slot = inner.slots.get(key)?;
        let global = slot.global.as_ref()?;
        if !global.live(now) {
            let seq = global.seq;
            inner.remove(seq);
            return None;
        }
        (global.response.identity == identity).then(|| global.response.clone())
    }

    /// Stores `entry` under `key` for `ttl`, in session `sid`'s scope or (with
    /// [`CacheScope::Global`]) for every session, replacing the entry of that key and
    /// scope. At capacity, expired entries go first, then the oldest insertion. A zero
    /// `ttl` stores nothing.
    pub fn put(
        &self,
        key: &str,
        scope: CacheScope,
        sid: &str,
        entry: CachedResponse,
        ttl: Duration,
        now: Instant,
    ) {
        let sid = match scope {
            CacheScope::Session => Some(sid),
            CacheScope::Global => None,
        };
        let size = entry_bytes(key, sid, &entry);
        if self.max_entries == 0 || ttl.is_zero() || size > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.find(key, sid).map(|s| s.seq) {
            inner.remove(old);
        }
        let full =
            |inner: &Inner| inner.len >= self.max_entries || inner.bytes + size > self.max_bytes;
        if full(&inner) {
            inner.purge_expired(now);
        }
        while full(&inner) {
            let Some((&oldest, _)) = inner.by_insertion.first_key_value() else {
                break;
            };
            inner.remove(oldest);
        }
        inner.insert(key, sid, entry, now.checked_add(ttl), size);
        metrics::gauge!("tidemark_cache_bytes").set(inner.bytes as f64);
    }

    /// Drops every expired entry; returns how many. The cache never needs this to
    /// stay bounded; a periodic sweep may call it to free memory early.
    pub fn purge_expired(&self, now: Instant) -> usize {
        self.lock().purge_expired(now)
    }

    /// Entries stored, expired ones included until they are dropped.
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// Bytes stored, counted by [`entry_bytes`] (expired entries included until they
    /// are dropped); never more than `max_bytes`.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// True when no entry is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map stays consistent across a panic elsewhere, so a poisoned lock is used.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn find(&self, key: &str, sid: Option<&str>) -> Option<&Stored> {
        let slot = self.slots.get(key)?;
        match sid {
            Some(sid) => slot.sessions.get(sid),
            None => slot.global.as_ref(),
        }
    }

    fn insert(
        &mut self,
        key: &str,
        sid: Option<&str>,
        response: CachedResponse,
        expires_at: Option<Instant>,
        size: usize,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let stored = Stored {
            response,
            expires_at,
            seq,
            size,
        };
        let slot = self.slots.entry(key.to_string()).or_default();
        match sid {
            Some(sid) => {
                slot.sessions.insert(sid.to_string(), stored);
            }
            None => slot.global = Some(stored),
        }
        self.by_insertion.insert(
            seq,
            Location {
                key: key.to_string(),
                sid: sid.map(str::to_string),
            },
        );
        if let Some(at) = expires_at {
            self.by_expiry.insert((at, seq));
        }
        self.len += 1;
        self.bytes += size;
    }

    /// Removes the entry inserted as `seq` from the map and both indexes.
    fn remove(&mut self, seq: u64) {
        let Some(loc) = self.by_insertion.remove(&seq) else {
            return;
        };
        let Some(slot) = self.slots.get_mut(&loc.key) else {
            return;
        };
        let stored = match &loc.sid {
            Some(sid) => slot.sessions.remove(sid),
            None => slot.global.take(),
        };
        if slot.global.is_none() && slot.sessions.is_empty() {
            self.slots.remove(&loc.key);
        }
        if let Some(stored) = stored {
            if let Some(at) = stored.expires_at {
                self.by_expiry.remove(&(at, seq));
            }
            self.len -= 1;
            self.bytes -= stored.size;
        }
    }

    fn purge_expired(&mut self, now: Instant) -> usize {
        let mut purged = 0;
        while let Some(&(at, seq)) = self.by_expiry.first() {
            if at > now {
                break;
            }
            self.remove(seq);
            purged += 1;
        }
        purged
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::position::PositionVector;

    const TTL: Duration = Duration::from_secs(30);
    const ID: &str = "identity-a";

    fn response(body: &'static str) -> CachedResponse {
        CachedResponse {
            status: 200,
            content_type: Some("application/json".into()),
            body: Bytes::from_static(body.as_bytes()),
            position: PositionVector::parse("users=5", None).unwrap(),
            identity: ID.into(),
        }
    }

    fn body(r: Option<CachedResponse>) -> Option<Bytes> {
        r.map(|r| r.body)
    }

    #[test]
    fn session_entry_is_seen_only_by_its_session() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put("user:1", CacheScope::Session, "A", response("a"), TTL, now);
        assert_eq!(c.get("user:1", "A", ID, now), Some(response("a")));
        assert_eq!(c.get("user:1", "B", ID, now), None);
        assert_eq!(c.get("user:2", "A", ID, now), None);
    }

    #[test]
    fn global_entry_is_seen_by_every_session() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put("user:1", CacheScope::Global, "A", response("g"), TTL, now);
        assert_eq!(body(c.get("user:1", "A", ID, now)).unwrap(), "g");
        assert_eq!(body(c.get("user:1", "B", ID, now)).unwrap(), "g");
    }

    #[test]
    fn own_session_entry_comes_before_the_global_one() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put("user:1", CacheScope::Global, "X", response("g"), TTL, now);
        c.put("user:1", CacheScope::Session, "A", response("a"), TTL, now);
        assert_eq!(body(c.get("user:1", "A", ID, now)).unwrap(), "a");
        assert_eq!(body(c.get("user:1", "B", ID, now)).unwrap(), "g");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn expired_entries_are_never_returned() {
        let c = MemoryCache::new(10, usize::MAX);
        let t0 = Instant::now();
        c.put("k", CacheScope::Session, "A", response("a"), TTL, t0);
        c.put("k", CacheScope::Global, "A", response("g"), TTL * 2, t0);
        assert!(c
            .get("k", "A", ID, t0 + TTL - Duration::from_millis(1))
            .is_some());
        // The session entry expired: the still-live global one answers.
        assert_eq!(body(c.get("k", "A", ID, t0 + TTL)).unwrap(), "g");
        assert_eq!(c.get("k", "A", ID, t0 + TTL * 2), None);
        assert_eq!(c.get("k", "B", ID, t0 + TTL * 2), None);
        assert!(c.is_empty(), "expired entries met by get are dropped");
    }

    #[test]
    fn zero_ttl_and_zero_capacity_store_nothing() {
        let now = Instant::now();
        let c = MemoryCache::new(10, usize::MAX);
        c.put(
            "k",
            CacheScope::Global,
            "A",
            response("a"),
            Duration::ZERO,
            now,
        );
        assert!(c.is_empty());
        let c = MemoryCache::new(0, usize::MAX);
        c.put("k", CacheScope::Global, "A", response("a"), TTL, now);
        assert!(c.is_empty());
        assert_eq!(c.get("k", "A", ID, now), None);
    }

    #[test]
    fn huge_ttl_never_expires() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put(
            "k",
            CacheScope::Global,
            "A",
            response("a"),
            Duration::MAX,
            now,
        );
        assert!(c.get("k", "A", ID, now + TTL * 1000).is_some());
    }

    #[test]
    fn overwrite_replaces_the_entry_of_that_scope() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put("k", CacheScope::Session, "A", response("old"), TTL, now);
        c.put("k", CacheScope::Session, "A", response("new"), TTL, now);
        assert_eq!(body(c.get("k", "A", ID, now)).unwrap(), "new");
        assert_eq!(c.len(), 1);
        c.put("k", CacheScope::Session, "B", response("b"), TTL, now);
        assert_eq!(body(c.get("k", "A", ID, now)).unwrap(), "new");
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn overwrite_renews_the_expiry() {
        let c = MemoryCache::new(10, usize::MAX);
        let t0 = Instant::now();
        c.put("k", CacheScope::Session, "A", response("1"), TTL, t0);
        c.put(
            "k",
            CacheScope::Session,
            "A",
            response("2"),
            TTL,
            t0 + TTL / 2,
        );
        assert_eq!(body(c.get("k", "A", ID, t0 + TTL)).unwrap(), "2");
    }

    #[test]
    fn at_capacity_the_oldest_insertion_goes() {
        let c = MemoryCache::new(3, usize::MAX);
        let now = Instant::now();
        for k in ["k1", "k2", "k3", "k4"] {
            c.put(k, CacheScope::Global, "A", response("x"), TTL, now);
        }
        assert_eq!(c.len(), 3);
        assert_eq!(c.get("k1", "A", ID, now), None);
        for k in ["k2", "k3", "k4"] {
            assert!(c.get(k, "A", ID, now).is_some(), "{k}");
        }
    }

    #[test]
    fn overwritten_entry_counts_as_newest() {
        let c = MemoryCache::new(2, usize::MAX);
        let now = Instant::now();
        c.put("k1", CacheScope::Global, "A", response("x"), TTL, now);
        c.put("k2", CacheScope::Global, "A", response("x"), TTL, now);
        c.put("k1", CacheScope::Global, "A", response("y"), TTL, now);
        c.put("k3", CacheScope::Global, "A", response("x"), TTL, now);
        assert_eq!(c.get("k2", "A", ID, now), None);
        assert_eq!(body(c.get("k1", "A", ID, now)).unwrap(), "y");
        assert!(c.get("k3", "A", ID, now).is_some());
    }

    #[test]
    fn at_capacity_expired_entries_go_before_older_live_ones() {
        let c = MemoryCache::new(3, usize::MAX);
        let t0 = Instant::now();
        c.put(
            "old-live",
            CacheScope::Global,
            "A",
            response("x"),
            TTL * 10,
            t0,
        );
        c.put("short-1", CacheScope::Session, "A", response("x"), TTL, t0);
        c.put("short-2", CacheScope::Session, "B", response("x"), TTL, t0);
        let later = t0 + TTL;
        c.put("new", CacheScope::Global, "A", response("x"), TTL, later);
        assert_eq!(c.len(), 2, "both expired entries dropped");
        assert!(c.get("old-live", "A", ID, later).is_some());
        assert!(c.get("new", "A", ID, later).is_some());
    }

    #[test]
    fn purge_expired_counts_what_it_dropped() {
        let c = MemoryCache::new(10, usize::MAX);
        let t0 = Instant::now();
        c.put("a", CacheScope::Global, "A", response("x"), TTL, t0);
        c.put("b", CacheScope::Global, "A", response("x"), TTL * 2, t0);
        assert_eq!(c.purge_expired(t0), 0);
        assert_eq!(c.purge_expired(t0 + TTL), 1);
        assert_eq!(c.len(), 1);
        assert_eq!(c.purge_expired(t0 + TTL * 2), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn many_sessions_stay_bounded() {
        let c = MemoryCache::new(100, usize::MAX);
        let now = Instant::now();
        for i in 0..1000 {
            let sid = format!("s{i}");
            c.put("user:1", CacheScope::Session, &sid, response("x"), TTL, now);
        }
        assert_eq!(c.len(), 100);
        assert!(c.get("user:1", "s999", ID, now).is_some());
        assert!(c.get("user:1", "s899", ID, now).is_none());
    }

    #[test]
    fn an_entry_is_never_answered_to_another_identity() {
        let c = MemoryCache::new(10, usize::MAX);
        let now = Instant::now();
        c.put("me", CacheScope::Session, "A", response("a"), TTL, now);
        c.put("doc", CacheScope::Global, "A", response("g"), TTL, now);
        assert!(c.get("me", "A", ID, now).is_some());
        assert_eq!(c.get("me", "A", "identity-b", now), None);
        assert_eq!(c.get("doc", "B", "identity-b", now), None);
        let mut own = response("b");
        own.identity = "identity-b".into();
        c.put("doc", CacheScope::Session, "A", own, TTL, now);
        // The session's entry is of another identity: the global one still answers.
        assert_eq!(body(c.get("doc", "A", ID, now)).unwrap(), "g");
        assert_eq!(body(c.get("doc", "A", "identity-b", now)).unwrap(), "b");
    }

    #[test]
    fn the_byte_budget_is_kept() {
        let budget = 64 * 1024;
        let c = MemoryCache::new(1_000_000, budget);
        let now = Instant::now();
        let big = Bytes::from(vec![b'x'; 5000]);
        let mut written = 0;
        for i in 0..200 {
            let mut r = response("");
            r.body = big.clone();
            c.put(
                &format!("k{i}"),
                CacheScope::Session,
                &format!("s{i}"),
                r,
                TTL,
                now,
            );
            written += big.len();
            assert!(c.bytes() <= budget, "{} > {budget} after {i}", c.bytes());
        }
        assert!(written > 10 * budget);
        assert!(
            c.bytes() > budget - 6000,
            "the budget is used: {}",
            c.bytes()
        );
        assert!(c.get("k199", "s199", ID, now).is_some(), "newest kept");
        assert!(c.get("k0", "s0", ID, now).is_none(), "oldest evicted");
        let mut huge = response("");
        huge.body = Bytes::from(vec![b'x'; budget]);
        c.put("huge", CacheScope::Global, "A", huge, TTL, now);
        assert!(
            c.get("huge", "A", ID, now).is_none(),
            "larger than the budget alone"
        );
        assert!(
            c.get("k199", "s199", ID, now).is_some(),
            "nothing evicted for it"
        );
    }
}
