//! The write-through cache: a write route's 2xx response kept under its expanded key,
//! scoped to the writer's session (or global), tagged with the write's position, so a
//! read whose instances lag can be answered from it. Backends: memory (here) and Redis
//! (`store::redis`).

pub mod identity;
pub mod memory;

use std::time::Duration;

use bytes::Bytes;

use crate::config::CacheScope;
use crate::position::PositionVector;
use crate::store::StoreError;

/// One cached write response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// The write's position (merged token frontier restricted to nothing: the write's own).
    pub position: PositionVector,
    /// The writer's identity ([`identity`]): only a read of the same identity is
    /// answered from this entry.
    pub identity: String,
}

/// The cache backend in use. Clones share one cache.
#[derive(Debug, Clone)]
pub enum Cache {
    Memory(memory::MemoryCache),
    Redis(std::sync::Arc<crate::store::redis::RedisStore>),
}

impl Cache {
    /// The entry for `key` visible to session `sid` and written by a request of the
    /// same `identity`: the session's own first, then a global one.
    pub async fn get(
        &self,
        key: &str,
        sid: &str,
        identity: &str,
    ) -> Result<Option<CachedResponse>, StoreError> {
        match self {
            Cache::Memory(m) => Ok(m.get(key, sid, identity, tokio::time::Instant::now())),
            Cache::Redis(r) => r.cache_get(key, sid, identity).await,
        }
    }

    /// Stores `entry` under `key` in `scope` (session `sid`) for `ttl`.
    pub async fn put(
        &self,
        key: &str,
        scope: CacheScope,
        sid: &str,
        entry: CachedResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        match self {
            Cache::Memory(m) => {
                m.put(key, scope, sid, entry, ttl, tokio::time::Instant::now());
                Ok(())
            }
            Cache::Redis(r) => r.cache_put(key, scope, sid, entry, ttl).await,
        }
    }
}
