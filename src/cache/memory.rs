//! The embedded cache backend: a bounded map with per-entry expiry. (Stub: the routing
//! helper fills in the bodies.)

use std::time::Duration;

use tokio::time::Instant;

use super::CachedResponse;
use crate::config::CacheScope;

#[derive(Debug)]
pub struct MemoryCache {
    _private: (),
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries (expired ones go first, then oldest).
    pub fn new(max_entries: usize) -> MemoryCache {
        let _ = max_entries;
        todo!("routing helper")
    }

    /// The session's own live entry for `key`, else a live global one.
    pub fn get(&self, key: &str, sid: &str, now: Instant) -> Option<CachedResponse> {
        let _ = (key, sid, now);
        todo!("routing helper")
    }

    pub fn put(
        &self,
        key: &str,
        scope: CacheScope,
        sid: &str,
        entry: CachedResponse,
        ttl: Duration,
        now: Instant,
    ) {
        let _ = (key, scope, sid, entry, ttl, now);
        todo!("routing helper")
    }

    pub fn len(&self) -> usize {
        todo!("routing helper")
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
