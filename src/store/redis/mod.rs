//! The Redis backend: checkpoints shared between gateways (and written by projectors),
//! and the shared write-through cache. One Redis server or a Redis Cluster.
//!
//! # Layout in Redis
//!
//! Every name starts with `key_prefix` (default `tidemark`, written `<p>` below). Hash
//! tags (`{...}`) keep each multi-key operation in one cluster slot.
//!
//! | name | type | content |
//! |---|---|---|
//! | `<p>:cp:{<projection>}` | hash | field `<instance>/<log>` (instance `*` = every instance) -> decimal position |
//! | `<p>:checkpoints` | channel | `<projection>\n<instance or *>\n<log>=<pos>,...` (the fields just raised) |
//! | `<p>:cache:{<key>}:s:<sid>` | string, PX ttl | a session's cached write response |
//! | `<p>:cache:{<key>}:g` | string, PX ttl | the global cached write response (same slot) |
//!
//! Instance names must not contain `/` (the script refuses them); log names may.
//!
//! # Checkpoints
//!
//! Writes go through one Lua script, `config/redis-checkpoint.lua` (also the projector
//! recipe, see the README, "Redis: many gateways"): a monotonic max per field, comparing positions as
//! decimal strings (u64 positions do not fit Lua's doubles), then a `PUBLISH` of what
//! it raised. [`RedisStore::push_checkpoint`] runs it for the admin push API.
//!
//! A sync task (`sync.rs`) keeps the gateway's registry (a [`CheckpointSink`]) fed:
//! a dedicated subscriber connection (single server: that server; cluster: one seed at
//! a time, rotating on failure, since Redis Cluster forwards `PUBLISH` to every node)
//! applies each message as a hint; the keys are the truth, so on every (re)subscribe
//! and every `resync_interval` it reloads each projection's hash (`HGETALL`) for the
//! projections the sink knows ([`CheckpointSink::projections`]). On every
//! (re)subscribe it first republishes the sink's snapshot through the max script, so
//! a Redis that restarted empty learns again what this gateway knows (harmless when
//! Redis holds higher values). Lost connections are retried with jittered
//! exponential backoff (100 ms up to 2 s); a subscriber that stops answering `PING`
//! within the response timeout is replaced.
//!
//! # Cache
//!
//! [`RedisStore::cache_put`] `SET`s one key with `PX ttl`; [`RedisStore::cache_get`]
//! reads the session and the global entry with one `MGET` (one round trip, one slot)
//! and prefers the session's. Values are `tmc1\n<status>\n<+content-type or ->\n<position>\n<body>`.
//!
//! # Faults
//!
//! Nothing here blocks for long or panics: every call is bounded by
//! `response_timeout` (the connection manager's own timeouts are set from
//! [`RedisConfig`] too), connections are made lazily in the background, and
//! [`RedisStore::healthy`] is false while Redis cannot be reached. Every failure is
//! counted in `tidemark_store_errors_total{op}` and logged once per burst
//! ([`super::ErrorBurst`]); ops: `push`, `republish`, `reload`, `cache_get`,
//! `cache_put`, `subscribe`, `decode`.

mod cache;
mod checkpoints;
mod conn;
mod keys;
mod sync;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::{ErrorBurst, StoreError};
use crate::cache::CachedResponse;
use crate::config::{CacheScope, RedisConfig};
use crate::position::PositionVector;

pub use keys::ALL_INSTANCES;

/// The checkpoint script (also the projector recipe): `KEYS[1]` the projection's hash,
/// `ARGV` channel, projection, instance (`*` = every instance), then log/position
/// pairs. Returns the number of fields raised.
pub const CHECKPOINT_SCRIPT: &str = include_str!("../../../config/redis-checkpoint.lua");

/// Where checkpoints read from Redis go (the gateway's checkpoint registry), and what
/// this gateway knows, to republish to a Redis that came back empty.
pub trait CheckpointSink: Send + Sync + 'static {
    /// Applies a checkpoint learned from Redis. `instance` `None`: every instance.
    /// Unknown projections or instances are ignored.
    fn apply(&self, projection: &str, instance: Option<&str>, checkpoint: &PositionVector);
    /// Every checkpoint to republish to a Redis that restarted empty, as (projection,
    /// instance, checkpoint): those learned from the shared sources (`push`, `redis`).
    fn snapshot(&self) -> Vec<(String, String, PositionVector)>;
    /// The projections whose checkpoints are reloaded from Redis: the configured
    /// projections with the `redis` source. The default derives them from
    /// [`snapshot`](Self::snapshot), which misses a projection that has no checkpoint
    /// yet: implementors should return the configured names.
    fn projections(&self) -> Vec<String> {
        let mut names: Vec<String> = self.snapshot().into_iter().map(|(p, _, _)| p).collect();
        names.sort_unstable();
        names.dedup();
        names
    }
}

/// The operations whose failures are counted (metric label `op`) and logged per burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Push,
    Republish,
    Reload,
    CacheGet,
    CachePut,
    Subscribe,
    Decode,
}

impl Op {
    const ALL: [Op; 7] = [
        Op::Push,
        Op::Republish,
        Op::Reload,
        Op::CacheGet,
        Op::CachePut,
        Op::Subscribe,
        Op::Decode,
    ];

    fn label(self) -> &'static str {
        match self {
            Op::Push => "push",
            Op::Republish => "republish",
            Op::Reload => "reload",
            Op::CacheGet => "cache_get",
            Op::CachePut => "cache_put",
            Op::Subscribe => "subscribe",
            Op::Decode => "decode",
        }
    }
}

/// State shared by the store handle(s) and the sync task.
pub(crate) struct Inner {
    conn: conn::Conn,
    keys: keys::Keys,
    script: redis::Script,
    config: RedisConfig,
    /// The last command (or cluster connection attempt) reached Redis.
    commands_ok: AtomicBool,
    /// The subscriber connection is up.
    subscribed: AtomicBool,
    /// Asks the sync task to reload every projection's hash now (after a config
    /// reload added or changed projections).
    resync: tokio::sync::Notify,
    bursts: [ErrorBurst; 7],
}

impl Inner {
    fn new(config: &RedisConfig) -> Self {
        Self {
            conn: conn::Conn::new(config),
            keys: keys::Keys::new(&config.key_prefix),
            script: redis::Script::new(CHECKPOINT_SCRIPT),
            config: config.clone(),
            commands_ok: AtomicBool::new(true),
            subscribed: AtomicBool::new(false),
            resync: tokio::sync::Notify::new(),
            bursts: Op::ALL.map(|op| ErrorBurst::new(op.label())),
        }
    }

    fn burst(&self, op: Op) -> &ErrorBurst {
        // `Op::ALL` lists the variants in declaration order.
        &self.bursts[op as usize]
    }

    /// Runs one store call bounded by the response timeout, and records its outcome
    /// (health, error count, burst log).
    async fn call<T, F>(&self, op: Op, call: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, StoreError>>,
    {
        let limit = self.config.response_timeout;
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Timeout(limit)),
        };
        match &result {
            Ok(_) => {
                self.commands_ok.store(true, Ordering::Release);
                self.burst(op).success();
            }
            Err(error) => self.failed(op, error),
        }
        result
    }

    fn failed(&self, op: Op, error: &StoreError) {
        self.burst(op).failure(error);
        if conn::unreachable(error) {
            self.commands_ok.store(false, Ordering::Release);
        }
        self.conn.on_error(error);
    }

    fn healthy(&self) -> bool {
        self.commands_ok.load(Ordering::Acquire) && self.subscribed.load(Ordering::Acquire)
    }
}

/// A handle on the Redis store. Cheap to clone (clones share the connections); the
/// sync task stops at `shutdown` or when the last clone is dropped.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    _stop: Arc<DropGuard>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.config.target)
            .field("key_prefix", &self.inner.config.key_prefix)
            .field("healthy", &self.healthy())
            .finish()
    }
}

impl RedisStore {
    /// Starts the store: connections are made in the background (a Redis that is down
    /// at start-up leaves the gateway degraded, not dead), and a sync task feeds
    /// `sink` from Redis until `shutdown`. Must be called inside a Tokio runtime.
    pub fn start(
        config: &RedisConfig,
        sink: Arc<dyn CheckpointSink>,
        shutdown: CancellationToken,
    ) -> RedisStore {
        let inner = Arc::new(Inner::new(config));
        let stop = shutdown.child_token();
        tokio::spawn(sync::run(inner.clone(), sink, stop.clone()));
        RedisStore {
            inner,
            _stop: Arc::new(stop.drop_guard()),
        }
    }

    /// Writes a checkpoint through to Redis (monotonic max) and publishes it.
    /// `instance` `None`: every instance. An empty checkpoint is a no-op.
    pub async fn push_checkpoint(
        &self,
        projection: &str,
        instance: Option<&str>,
        checkpoint: &PositionVector,
    ) -> Result<(), StoreError> {
        self.inner
            .max_checkpoint(Op::Push, projection, instance, checkpoint)
            .await
            .map(drop)
    }

    /// The cached entry for `key` visible to session `sid` (its own, else a global one).
    /// One round trip. `key` should be non-empty: in a cluster an empty key's session
    /// and global entries fall in different slots and the read fails (CROSSSLOT).
    pub async fn cache_get(
        &self,
        key: &str,
        sid: &str,
    ) -> Result<Option<CachedResponse>, StoreError> {
        self.inner.cache_get(key, sid).await
    }

    /// Stores `entry` under `key` in `scope` (session `sid`, or every session) for
    /// `ttl` (at least 1 ms).
    pub async fn cache_put(
        &self,
        key: &str,
        scope: CacheScope,
        sid: &str,
        entry: CachedResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.inner.cache_put(key, scope, sid, &entry, ttl).await
    }

    /// Reloads every projection's checkpoints from Redis now rather than at the next
    /// `resync_interval` (a config reload calls it for its new or changed
    /// projections). Returns at once; the sync task does the reload (or, while Redis
    /// is out of reach, on its next subscribe).
    pub fn resync(&self) {
        self.inner.resync.notify_one();
    }

    /// True while the last Redis operation (or connection attempt) succeeded and the
    /// subscriber connection is up. False from start-up until the first subscribe.
    pub fn healthy(&self) -> bool {
        self.inner.healthy()
    }
}
