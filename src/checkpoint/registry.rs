//! The registry of every projection, and the global cap on held reads
//! (`server.max_held_reads`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Projection;
use crate::config::Config;

/// All projections' state, built once from the config.
#[derive(Debug)]
pub struct Registry {
    projections: BTreeMap<String, Arc<Projection>>,
    held: Arc<AtomicUsize>,
    max_held: usize,
}

/// A slot among `server.max_held_reads`; dropping it frees the slot (and the
/// projection's share of [`Projection::held`]).
#[derive(Debug)]
pub struct HoldPermit {
    global: Arc<AtomicUsize>,
    projection: Arc<Projection>,
}

impl Registry {
    /// One [`Projection`] per `config.projections` entry (instances from
    /// `ProjectionConfig.instances`, or one named `default`), capped at
    /// `server.max_held_reads` held reads.
    pub fn new(config: &Config) -> Registry {
        let projections = config
            .projections
            .values()
            .map(|p| Projection::new(p.name.clone(), &p.logs, &p.instances));
        Registry::from_projections(projections, config.server.max_held_reads)
    }

    /// A registry of the given projections (keyed by name; a later duplicate name
    /// replaces an earlier one) allowing `max_held_reads` held reads at once.
    pub fn from_projections(
        projections: impl IntoIterator<Item = Projection>,
        max_held_reads: usize,
    ) -> Registry {
        Registry {
            projections: projections
                .into_iter()
                .map(|p| (p.name().to_string(), Arc::new(p)))
                .collect(),
            held: Arc::new(AtomicUsize::new(0)),
            max_held: max_held_reads,
        }
    }

    /// The projection named `projection`.
    pub fn get(&self, projection: &str) -> Option<&Arc<Projection>> {
        self.projections.get(projection)
    }

    /// Every projection, in name order.
    pub fn projections(&self) -> impl Iterator<Item = &Arc<Projection>> + '_ {
        self.projections.values()
    }

    /// Takes one of the `max_held_reads` slots for a read on `projection`, or `None`
    /// when all are taken.
    pub fn try_hold(&self, projection: &Arc<Projection>) -> Option<HoldPermit> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_held).then_some(n + 1)
            })
            .ok()?;
        projection.held.fetch_add(1, Ordering::Relaxed);
        Some(HoldPermit {
            global: Arc::clone(&self.held),
            projection: Arc::clone(projection),
        })
    }

    /// Reads held now, across projections.
    pub fn held_total(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }

    /// The cap on held reads (`server.max_held_reads`).
    pub fn max_held(&self) -> usize {
        self.max_held
    }
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        self.projection.held.fetch_sub(1, Ordering::Relaxed);
        self.global.fetch_sub(1, Ordering::AcqRel);
    }
}
