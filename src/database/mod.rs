//! PostgreSQL connections (`[databases.NAME]`), shared by the `postgres` checkpoint
//! source and write fences: one [`Database`] per name, built with the gateway.
//!
//! - [`pool`]: [`Database`], a small pool with connect/query timeouts, reconnect
//!   with backoff, and the health `/readyz` shows.
//! - [`rows`]: rows of `(log, position)` -> a position vector.
//! - [`presets`]: the SQL of each framework preset.
//!
//! Driver: tokio-postgres (pure Rust, no libpq, async on the runtime the gateway
//! already runs; sqlx would add its own pool, macros and a larger dependency tree for
//! the one-row queries tidemark runs).

pub mod pool;
pub mod presets;
pub mod rows;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use pool::{Database, DbError, Health};
pub use presets::{Preset, Sql, Use};

use crate::config::DatabaseConfig;

/// Every `[databases.NAME]`, by name.
#[derive(Debug, Default, Clone)]
pub struct Databases(BTreeMap<String, Arc<Database>>);

impl Databases {
    /// One pool per database; nothing connects until the first query.
    pub fn new(configs: &BTreeMap<String, DatabaseConfig>) -> Databases {
        Databases(
            configs
                .iter()
                .map(|(name, c)| (name.clone(), Arc::new(Database::new(c.clone()))))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Database>> {
        self.0.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Arc<Database>)> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
