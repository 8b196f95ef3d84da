//! Checkpoint sources that run on their own: one file per kind, each a task per
//! projection (or per instance) that reads positions and hands vectors to the
//! projection's `apply` (the registry keeps checkpoints monotonic: only advances
//! count).
//!
//! - [`poll`]: `GET poll_url` every `poll_interval`.
//! - [`nats`]: a JetStream durable consumer's ack floor, every `interval`.
//! - [`kafka`]: a consumer group's committed offsets, every `interval`.
//! - [`postgres`]: a query (or a framework preset) on a `[databases.NAME]` every
//!   `interval`, and at once on a `NOTIFY` to `listen`.
//!
//! The interface: a source is a [`Reader`] (one read of one target's checkpoint)
//! driven by [`run`] (read, apply, then wait for the interval or a wake), so adding a
//! kind is one file with a `Reader` and its `spawn`, and never touches the proxy.
//!
//! The other sources are not tasks of their own: `push` is the admin API
//! (`src/admin/`), `header` is read from answers in the read path
//! (`src/gateway/read.rs`), and `redis` is the Redis subscriber in
//! `src/store/redis/sync.rs` (shared with the push write-through), which feeds the
//! registry through [`crate::checkpoint::sink`].

pub mod kafka;
pub mod nats;
pub mod poll;
pub mod postgres;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::checkpoint::Projection;
use crate::config::SourceKind;
use crate::position::PositionVector;

/// A boxed error from one read (logged with its sources, never fatal).
pub type ReadError = Box<dyn std::error::Error + Send + Sync>;

/// One target of a source: reads its current checkpoint.
pub trait Reader: Send + Sync + 'static {
    /// Reads the checkpoint once.
    fn read(&self) -> impl Future<Output = Result<PositionVector, ReadError>> + Send;
    /// Names the target in logs (a URL, a database), never a secret.
    fn describe(&self) -> String;
}

/// How a target is scheduled.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kind: SourceKind,
    /// The instance the target reports for (`None`: every instance).
    pub instance: Option<String>,
    /// From the start of one read to the start of the next: a fixed rate (a read that
    /// takes longer is followed by the next at once), so `10ms` is 100 reads a second.
    pub interval: Duration,
    /// Runs the next read at once when notified (e.g. a `NOTIFY`).
    pub wake: Option<Arc<Notify>>,
}

/// Reads, applies, waits; until `shutdown`. Failures never stop the loop: they are
/// logged once per burst (the first at `warn`, the recovery at `info`, the rest at
/// `debug`) and counted as `tidemark_store_errors_total{op=KIND}`.
pub async fn run<R: Reader>(
    projection: Arc<Projection>,
    reader: R,
    schedule: Schedule,
    shutdown: CancellationToken,
) {
    let kind = schedule.kind.as_str();
    let mut failures: u64 = 0;
    let never = Arc::new(Notify::new());
    let wake = schedule.wake.clone().unwrap_or(never);
    loop {
        let started = tokio::time::Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            outcome = reader.read() => outcome,
        };
        let outcome = outcome.and_then(|cp| {
            let instance = match &schedule.instance {
                None => None,
                Some(name) => Some(
                    projection
                        .instance_index(name)
                        .ok_or_else(|| format!("projection has no instance `{name}`"))?,
                ),
            };
            projection.apply(instance, &cp, schedule.kind, Instant::now());
            Ok(())
        });
        match outcome {
            Ok(()) if failures > 0 => {
                tracing::info!(projection = %projection.name(), source = kind, target = %reader.describe(), failures, "checkpoint source recovered");
                failures = 0;
            }
            Ok(()) => {}
            Err(error) => {
                failures += 1;
                metrics::counter!("tidemark_store_errors_total", "op" => kind).increment(1);
                let error = &*error as &dyn std::error::Error;
                if failures == 1 {
                    tracing::warn!(projection = %projection.name(), source = kind, target = %reader.describe(), error, "checkpoint source failing");
                } else {
                    tracing::debug!(projection = %projection.name(), source = kind, target = %reader.describe(), error, failures, "checkpoint source still failing");
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep_until(started + schedule.interval) => {}
        }
    }
}

/// Starts every configured source that is a task of its own (`poll`, `postgres`),
/// until `token`.
pub fn spawn_all(
    config: &crate::config::Config,
    registry: &crate::checkpoint::Registry,
    databases: &crate::database::Databases,
    token: &CancellationToken,
) {
    for (name, p) in &config.projections {
        let Some(projection) = registry.get(name) else {
            continue;
        };
        if let (true, Some(poll)) = (p.sources.contains(&SourceKind::Poll), &p.poll) {
            poll::spawn(projection.clone(), poll.clone(), token.child_token());
        }
        if let (true, Some(pg)) = (
            p.sources.contains(&SourceKind::Postgres),
            config.positions.sources.get(name),
        ) {
            postgres::spawn(projection.clone(), pg, databases, token);
        }
    }
}
