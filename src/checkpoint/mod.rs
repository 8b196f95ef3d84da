//! Checkpoints: per projection, per instance, monotonic; the waiter registry that
//! holds reads until a checkpoint covers them; the gateway's record of when it saw each
//! write position (for staleness budgets and lag); checkpoint sources.
//! (Stub: the checkpoint helper fills in the bodies; the signatures are the contract.)

pub mod poll;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{Config, SourceKind};
use crate::position::PositionVector;

/// All projections' state, built once from the config.
#[derive(Debug)]
pub struct Registry {
    _private: (),
}

/// What [`Projection::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Some instance's checkpoint moved forward.
    pub advanced: bool,
    /// Some log of the report was lower than what was known (ignored, counted).
    pub regressed: bool,
    /// Held reads released by this report.
    pub woken: usize,
}

/// A slot among `server.max_held_reads`; dropping it frees the slot.
#[derive(Debug)]
pub struct HoldPermit {
    _private: (),
}

impl Registry {
    pub fn new(config: &Config) -> Registry {
        let _ = config;
        todo!("checkpoint helper")
    }

    pub fn get(&self, projection: &str) -> Option<&Arc<Projection>> {
        let _ = projection;
        todo!("checkpoint helper")
    }

    /// Every projection, in name order.
    pub fn projections(&self) -> impl Iterator<Item = &Arc<Projection>> + '_ {
        std::iter::empty()
    }

    /// Takes one of the `max_held_reads` slots for a read on `projection`, or `None`
    /// when all are taken.
    pub fn try_hold(&self, projection: &Arc<Projection>) -> Option<HoldPermit> {
        let _ = projection;
        todo!("checkpoint helper")
    }

    /// Reads held now, across projections.
    pub fn held_total(&self) -> usize {
        todo!("checkpoint helper")
    }
}

/// One projection: its instances' checkpoints, its waiters, its write-time record.
#[derive(Debug)]
pub struct Projection {
    _private: (),
}

impl Projection {
    pub fn name(&self) -> &str {
        todo!("checkpoint helper")
    }

    pub fn logs(&self) -> &[String] {
        todo!("checkpoint helper")
    }

    /// Instance names; an instance is addressed by its index here.
    pub fn instances(&self) -> &[String] {
        todo!("checkpoint helper")
    }

    pub fn instance_index(&self, name: &str) -> Option<usize> {
        let _ = name;
        todo!("checkpoint helper")
    }

    /// Applies a reported checkpoint to `instance` (`None`: every instance), keeping
    /// each log's maximum; logs the projection does not consume are ignored. Wakes the
    /// held reads it satisfies, and only those.
    pub fn apply(
        &self,
        instance: Option<usize>,
        checkpoint: &PositionVector,
        source: SourceKind,
        now: Instant,
    ) -> Applied {
        let _ = (instance, checkpoint, source, now);
        todo!("checkpoint helper")
    }

    /// Forgets the checkpoint of `instance` (`None`: all), for a rebuilt projection.
    pub fn reset(&self, instance: Option<usize>) {
        let _ = instance;
        todo!("checkpoint helper")
    }

    /// Every instance's checkpoint, by index.
    pub fn checkpoints(&self) -> Vec<PositionVector> {
        todo!("checkpoint helper")
    }

    /// Resolves at once when an instance covers `required`, else registers a waiter
    /// that is woken by the first `apply` that makes some instance cover it.
    pub fn wait_for(&self, required: &PositionVector) -> Wait {
        let _ = required;
        todo!("checkpoint helper")
    }

    /// Records that the gateway saw a write reach `position` at `now`
    /// (bounded memory).
    pub fn record_write(&self, position: &PositionVector, now: Instant) {
        let _ = (position, now);
        todo!("checkpoint helper")
    }

    /// What an instance must cover to be no more than `budget` behind at `now`: per
    /// log, the newest write position seen at or before `now - budget`.
    pub fn budget_requirement(&self, budget: Duration, now: Instant) -> PositionVector {
        let _ = (budget, now);
        todo!("checkpoint helper")
    }

    /// Each instance's lag at `now`: the age of the oldest recorded write position its
    /// checkpoint does not cover (zero when it covers them all).
    pub fn lags(&self, now: Instant) -> Vec<Duration> {
        let _ = now;
        todo!("checkpoint helper")
    }

    /// Estimated time until some instance covers `required`, from the observed
    /// catch-up rate; `None` when there is no rate yet.
    pub fn eta(&self, required: &PositionVector, now: Instant) -> Option<Duration> {
        let _ = (required, now);
        todo!("checkpoint helper")
    }

    /// Reads held on this projection now.
    pub fn held(&self) -> usize {
        todo!("checkpoint helper")
    }
}

/// The result of [`Projection::wait_for`].
#[derive(Debug)]
pub enum Wait {
    /// This instance covers the requirement now.
    Ready(usize),
    Pending(Waiter),
}

/// A registered waiter. Resolves to the index of an instance that covers the
/// requirement; dropping it deregisters at once.
#[derive(Debug)]
pub struct Waiter {
    _private: (),
}

impl Future for Waiter {
    type Output = usize;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
        let _ = cx;
        todo!("checkpoint helper")
    }
}

/// Feeds checkpoints read from Redis into the registry (the `redis` source).
#[derive(Debug)]
pub struct RegistrySink(pub Arc<Registry>);

impl crate::store::redis::CheckpointSink for RegistrySink {
    fn apply(&self, projection: &str, instance: Option<&str>, checkpoint: &PositionVector) {
        let Some(p) = self.0.get(projection) else {
            return;
        };
        let index = match instance {
            None => None,
            Some(name) => match p.instance_index(name) {
                Some(i) => Some(i),
                None => return,
            },
        };
        let applied = p.apply(index, checkpoint, SourceKind::Redis, Instant::now());
        if applied.advanced {
            metrics::counter!("tidemark_checkpoint_updates_total", "projection" => projection.to_string(), "source" => "redis").increment(1);
        }
    }

    /// Every configured projection: pushes to any gateway are written through to
    /// Redis whatever the projection's other sources, so every one is reloaded.
    fn projections(&self) -> Vec<String> {
        self.0.projections().map(|p| p.name().to_string()).collect()
    }

    fn snapshot(&self) -> Vec<(String, String, PositionVector)> {
        let mut out = Vec::new();
        for p in self.0.projections() {
            for (name, cp) in p.instances().iter().zip(p.checkpoints()) {
                if !cp.is_empty() {
                    out.push((p.name().to_string(), name.clone(), cp));
                }
            }
        }
        out
    }
}
