//! The command connection: one multiplexed [`ConnectionManager`] to a single server,
//! or a [`ClusterConnection`] to a Redis Cluster, behind one [`Handle`] that speaks
//! [`redis::aio::ConnectionLike`] so scripts, commands and pipelines are written once.
//!
//! Both connect lazily: a Redis that is down at start-up leaves the gateway degraded,
//! and every call fails fast (bounded by the caller) until Redis answers again.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use super::super::StoreError;
use crate::config::{RedisConfig, RedisTarget};

/// Where commands go.
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(Box<ClusterSlot>),
    /// The configured URL(s) could not be parsed: every call fails with this error.
    Invalid(RedisError),
}

/// A cluster connection made on first use and remade after a connection-level error
/// (the nodes may have restarted, moved, or all been down at start-up).
pub(crate) struct ClusterSlot {
    client: ClusterClient,
    conn: tokio::sync::Mutex<Option<ClusterConnection>>,
}

/// A connection ready for one call.
pub(crate) enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// Builds the connection (no I/O happens here).
    pub(crate) fn new(config: &RedisConfig) -> Conn {
        match build(config) {
            Ok(conn) => conn,
            Err(err) => Conn::Invalid(err),
        }
    }

    /// A handle for one call; connects a cluster that is not connected yet.
    pub(crate) async fn handle(&self) -> Result<Handle, StoreError> {
        match self {
            Conn::Single(manager) => Ok(Handle::Single(manager.clone())),
            Conn::Cluster(slot) => {
                let mut guard = slot.conn.lock().await;
                if let Some(conn) = guard.as_ref() {
                    return Ok(Handle::Cluster(conn.clone()));
                }
                let conn = slot.client.get_async_connection().await?;
                *guard = Some(conn.clone());
                Ok(Handle::Cluster(conn))
            }
            Conn::Invalid(err) => Err(StoreError::Redis(err.clone())),
        }
    }

    /// Called after a failed call: a cluster connection that lost its nodes is
    /// dropped so the next call starts again from the seeds. (The single-server
    /// [`ConnectionManager`] reconnects by itself.)
    /// Never waits: when another call holds the slot it is reconnecting already.
    pub(crate) fn on_error(&self, error: &StoreError) {
        if let (Conn::Cluster(slot), StoreError::Redis(err)) = (self, error) {
            if err.is_io_error()
                || err.is_unrecoverable_error()
                || err.kind() == ErrorKind::ClusterConnectionNotFound
            {
                if let Ok(mut guard) = slot.conn.try_lock() {
                    *guard = None;
                }
            }
        }
    }
}

fn build(config: &RedisConfig) -> Result<Conn, RedisError> {
    match &config.target {
        RedisTarget::Single(url) => {
            let client = Client::open(url.as_str())?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.response_timeout))
                // One quick retry, then fail: callers are bounded by the response
                // timeout anyway, and the next call starts a fresh attempt.
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(config.response_timeout);
            let manager = ConnectionManager::new_lazy_with_config(client, manager_config)?;
            Ok(Conn::Single(manager))
        }
        RedisTarget::Cluster(seeds) => {
            let client = ClusterClientBuilder::new(seeds.iter().map(String::as_str))
                .connection_timeout(config.connect_timeout)
                .response_timeout(config.response_timeout)
                .retries(2)
                .build()?;
            Ok(Conn::Cluster(Box::new(ClusterSlot {
                client,
                conn: tokio::sync::Mutex::new(None),
            })))
        }
    }
}

/// True when `error` means Redis could not be reached (as opposed to Redis answering
/// with an error): the store is then reported unhealthy.
pub(crate) fn unreachable(error: &StoreError) -> bool {
    match error {
        StoreError::Timeout(_) | StoreError::Disconnected => true,
        StoreError::Decode(_) => false,
        StoreError::Redis(err) => match err.kind() {
            ErrorKind::Server(kind) => matches!(
                kind,
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
            ),
            ErrorKind::Parse | ErrorKind::UnexpectedReturnType => false,
            _ => true,
        },
    }
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_errors_that_mean_redis_is_out_of_reach_make_the_store_unhealthy() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let server = |kind| StoreError::Redis(RedisError::from((ErrorKind::Server(kind), "x")));
        assert!(unreachable(&StoreError::Timeout(
            std::time::Duration::from_millis(1)
        )));
        assert!(unreachable(&StoreError::Disconnected));
        assert!(unreachable(&StoreError::Redis(RedisError::from(io))));
        assert!(unreachable(&server(ServerErrorKind::ClusterDown)));
        assert!(unreachable(&server(ServerErrorKind::BusyLoading)));
        assert!(!unreachable(&server(ServerErrorKind::ResponseError)));
        assert!(!unreachable(&server(ServerErrorKind::CrossSlot)));
        assert!(!unreachable(&StoreError::Decode("bad".into())));
    }
}
