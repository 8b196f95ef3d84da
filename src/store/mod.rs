//! Shared state backends. `memory` needs nothing here (the checkpoint registry and
//! the memory cache are the store); `redis` shares checkpoints and the cache between
//! gateways.

pub mod burst;
pub mod redis;

pub use burst::ErrorBurst;

/// A store operation failed. Never fails a write; counted and logged once per burst.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("redis is not connected")]
    Disconnected,
    #[error("stored value is not valid: {0}")]
    Decode(String),
}
