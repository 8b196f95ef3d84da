//! Write fences: a write route's `fence` reads the head of a log after a 2xx write
//! answer that carries no `Write-Position`, and the rows become the write's position
//! in the token (a head at or past the write: correct, and conservative). One file
//! per kind behind [`Fence`]:
//!
//! - [`postgres`]: a query (or preset) on a `[databases.NAME]`.
//! - [`nats`]: a JetStream stream's last sequence (`nats_stream`).
//! - [`kafka`]: the high watermark of each partition of a topic (`kafka_topic`).
//!
//! A fence that fails (database down, `query_timeout`) never costs the write its
//! answer: the write path marks the fence's log in the token for the primary until
//! `fallback` has passed (claim `pri`, see [`crate::token::Claims`]), and the gate
//! sends the session's reads of that log to the route's primary meanwhile.

pub mod kafka;
pub mod nats;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::database::Databases;
use crate::position::PositionVector;

/// Why a fence gave no position.
pub type FenceError = Box<dyn std::error::Error + Send + Sync>;

/// One route's fence.
#[derive(Debug)]
pub enum Fence {
    Postgres(postgres::PostgresFence),
    Nats(nats::NatsFence),
    Kafka(kafka::KafkaFence),
}

impl Fence {
    /// Reads the head once.
    pub async fn read(&self) -> Result<PositionVector, FenceError> {
        match self {
            Fence::Postgres(f) => f.read().await,
            Fence::Nats(f) => f.read().await,
            Fence::Kafka(f) => f.read().await,
        }
    }

    /// The logs a failed fence marks for the primary (a `kafka_topic` fence: one per
    /// partition).
    pub fn logs(&self) -> &[String] {
        match self {
            Fence::Postgres(f) => std::slice::from_ref(&f.config.log),
            Fence::Nats(f) => std::slice::from_ref(&f.config.log),
            Fence::Kafka(f) => &f.config.logs,
        }
    }

    /// How long a failed fence marks its log.
    pub fn fallback(&self) -> Duration {
        match self {
            Fence::Postgres(f) => f.config.fallback,
            Fence::Nats(f) => f.config.fallback,
            Fence::Kafka(f) => f.config.fallback,
        }
    }

    /// Names the fence in logs and `checkpoint show`.
    pub fn describe(&self) -> String {
        match self {
            Fence::Postgres(f) => f.describe(),
            Fence::Nats(f) => f.describe(),
            Fence::Kafka(f) => f.describe(),
        }
    }
}

/// Seconds since the Unix epoch (the `pri` claim's clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every route's fence, by route name.
#[derive(Debug, Default)]
pub struct Fences(BTreeMap<String, Arc<Fence>>);

impl Fences {
    pub fn new(config: &Config, databases: &Databases) -> Fences {
        Fences(
            config
                .positions
                .fences
                .iter()
                .filter_map(|(route, f)| {
                    let database = databases.get(&f.database)?.clone();
                    let fence = postgres::PostgresFence {
                        database,
                        config: f.clone(),
                    };
                    Some((route.clone(), Arc::new(Fence::Postgres(fence))))
                })
                .collect(),
        )
    }

    pub fn get(&self, route: &str) -> Option<&Arc<Fence>> {
        self.0.get(route)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Fence>)> {
        self.0.iter()
    }
}
