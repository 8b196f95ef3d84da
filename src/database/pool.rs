//! [`Database`]: a small pool of tokio-postgres connections to one
//! `[databases.NAME]`.
//!
//! `pool_size` slots, each an optional connected client behind its own async mutex.
//! A query takes the first free slot (else waits for the next in rotation), connects
//! it if it is empty or closed, and runs with `query_timeout`. Invariant: a slot
//! holds a client only while its connection task runs; a failed connect or a
//! connection error empties the slot, and connecting again is refused (fast, with
//! [`DbError::Backoff`]) until the backoff (100ms doubling up to 5s) has passed, so
//! a database that is down costs callers nothing and is not hammered.
//!
//! Health (for `/readyz`): `idle` until the first query, then `ok` after a success
//! and `degraded` after a connection failure or timeout (a SQL error in a good
//! connection leaves it `ok`: the database answered).

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use super::Sql;
use crate::config::DatabaseConfig;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot connect to database `{name}` ({display})")]
    Connect {
        name: String,
        display: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("no connection to database `{0}` within {1:?}")]
    ConnectTimeout(String, Duration),
    #[error("database `{0}` is down; the next connect attempt is in {1:?}")]
    Backoff(String, Duration),
    #[error("query on database `{0}` failed")]
    Query(String, #[source] tokio_postgres::Error),
    #[error("query on database `{0}` took longer than {1:?}")]
    Timeout(String, Duration),
}

/// What `/readyz` reports for a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not queried yet.
    Idle,
    Ok,
    /// The last connect or query did not reach the database.
    Degraded,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Idle => "idle",
            Health::Ok => "ok",
            Health::Degraded => "degraded",
        }
    }
}

/// One `[databases.NAME]`: see the module doc.
pub struct Database {
    config: DatabaseConfig,
    slots: Vec<tokio::sync::Mutex<Option<Client>>>,
    next: AtomicUsize,
    health: AtomicU8,
    /// (no connect before, current delay); under a std mutex held for no await.
    backoff: Mutex<(Option<Instant>, Duration)>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("config", &self.config)
            .field("health", &self.health())
            .finish()
    }
}

impl Database {
    /// A pool that connects on first use.
    pub fn new(config: DatabaseConfig) -> Database {
        let slots = (0..config.pool_size.max(1))
            .map(|_| tokio::sync::Mutex::new(None))
            .collect();
        Database {
            config,
            slots,
            next: AtomicUsize::new(0),
            health: AtomicU8::new(0),
            backoff: Mutex::new((None, FIRST_BACKOFF)),
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn config(&self) -> &DatabaseConfig {
        &self.config
    }

    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Relaxed) {
            0 => Health::Idle,
            1 => Health::Ok,
            _ => Health::Degraded,
        }
    }

    fn set_health(&self, health: Health) {
        let value = match health {
            Health::Idle => 0,
            Health::Ok => 1,
            Health::Degraded => 2,
        };
        let before = self.health.swap(value, Ordering::Relaxed);
        if before != value && before != 0 {
            match health {
                Health::Degraded => {
                    tracing::warn!(database = %self.config.name, "database unreachable")
                }
                _ => tracing::info!(database = %self.config.name, "database reachable again"),
            }
        }
    }

    /// Runs `sql` with its text parameters, bounded by `query_timeout` (the wait for
    /// a slot and the connect count against `connect_timeout` first).
    pub async fn query(&self, sql: &Sql) -> Result<Vec<Row>, DbError> {
        let mut slot = self.take_slot().await;
        if slot.as_ref().is_none_or(Client::is_closed) {
            *slot = None;
            *slot = Some(self.connect().await?);
        }
        let Some(client) = slot.as_ref() else {
            unreachable!("the slot was just filled")
        };
        let params: Vec<&(dyn ToSql + Sync)> = sql
            .params
            .iter()
            .map(|p| p as &(dyn ToSql + Sync))
            .collect();
        let timeout = self.config.query_timeout;
        match tokio::time::timeout(timeout, client.query(sql.text.as_str(), &params)).await {
            Ok(Ok(rows)) => {
                self.set_health(Health::Ok);
                Ok(rows)
            }
            Ok(Err(e)) => {
                if client.is_closed() {
                    *slot = None;
                    self.failed();
                }
                Err(DbError::Query(self.config.name.clone(), e))
            }
            Err(_) => {
                // The connection is busy with the abandoned query: drop it.
                *slot = None;
                self.failed();
                Err(DbError::Timeout(self.config.name.clone(), timeout))
            }
        }
    }

    async fn take_slot(&self) -> tokio::sync::MutexGuard<'_, Option<Client>> {
        for slot in &self.slots {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[i].lock().await
    }

    async fn connect(&self) -> Result<Client, DbError> {
        let name = &self.config.name;
        {
            let backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = backoff.0 {
                let now = Instant::now();
                if now < at {
                    return Err(DbError::Backoff(name.clone(), at - now));
                }
            }
        }
        let mut connect = self.config.connect.clone();
        connect.connect_timeout(self.config.connect_timeout);
        if connect.get_application_name().is_none() {
            connect.application_name("tidemark");
        }
        let attempt = tokio::time::timeout(self.config.connect_timeout, connect.connect(NoTls));
        match attempt.await {
            Ok(Ok((client, connection))) => {
                let db = name.clone();
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(database = %db, %error, "database connection ended");
                    }
                });
                *self.backoff.lock().unwrap_or_else(|p| p.into_inner()) = (None, FIRST_BACKOFF);
                Ok(client)
            }
            Ok(Err(source)) => {
                self.failed();
                Err(DbError::Connect {
                    name: name.clone(),
                    display: self.config.display.clone(),
                    source,
                })
            }
            Err(_) => {
                self.failed();
                Err(DbError::ConnectTimeout(
                    name.clone(),
                    self.config.connect_timeout,
                ))
            }
        }
    }

    /// A connection-level failure: degraded, and the next connect waits.
    fn failed(&self) {
        metrics::counter!("tidemark_store_errors_total", "op" => "postgres").increment(1);
        self.set_health(Health::Degraded);
        let mut backoff = self.backoff.lock().unwrap_or_else(|p| p.into_inner());
        let delay = backoff.1;
        *backoff = (Some(Instant::now() + delay), (delay * 2).min(MAX_BACKOFF));
    }
}
