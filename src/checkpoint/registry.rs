//! The registry of every projection, and the global cap on held reads
//! (`server.max_held_reads`).
//!
//! On a reload ([`Registry::reloaded`]) an instance is the same instance when its name
//! and URL are unchanged: a repointed instance starts with no checkpoint (the new
//! server has reported nothing), and a projection the reload changed is replaced by
//! one that forwards its advances to the old one, so reads held on the old one are
//! still released (see [`Projection::forward_to`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Projection;
use crate::config::{Config, RouteKind, SourceKind};

/// All projections' state, built once from the config.
#[derive(Debug)]
pub struct Registry {
    projections: BTreeMap<String, Arc<Projection>>,
    /// Per projection, each instance's `(name, URL)`: what makes it the same instance
    /// across a reload.
    identities: BTreeMap<String, Vec<(String, String)>>,
    /// Per projection, its configured sources; `None`: every source (a registry built
    /// without a config, [`Registry::from_projections`]).
    sources: Option<BTreeMap<String, BTreeSet<SourceKind>>>,
    held: Arc<AtomicUsize>,
    max_held: usize,
}

/// What [`Registry::reloaded`] started afresh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fresh {
    /// Projections that started with no checkpoint: new ones, and those whose `logs`
    /// changed.
    pub projections: Vec<String>,
    /// `projection/instance` of each instance of a kept projection that starts with no
    /// checkpoint: new, or repointed to another URL.
    pub instances: Vec<String>,
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
        let mut registry = Registry::from_projections(projections, config.server.max_held_reads);
        registry.configure(config);
        registry
    }

    /// Records the instance identities and sources of `config`.
    fn configure(&mut self, config: &Config) {
        self.identities = identities(config);
        self.sources = Some(
            config
                .projections
                .values()
                .map(|p| (p.name.clone(), p.sources.iter().copied().collect()))
                .collect(),
        );
    }

    /// The registry for a reloaded `config`. A projection whose logs and instances
    /// (names and URLs) are unchanged is kept as the same object: its checkpoints,
    /// held reads, write record and catch-up rates survive the reload. Any other is
    /// replaced by a new object that keeps the checkpoint of each instance whose name
    /// and URL are unchanged when its logs are unchanged (a repointed or new instance
    /// starts with none; a projection whose logs changed starts afresh) and forwards
    /// its advances to the old object, where reads held before the reload wait.
    /// Held reads count against one shared `max_held_reads` across both.
    pub fn reloaded(&self, config: &Config) -> (Registry, Fresh) {
        let mut fresh = Fresh::default();
        let identities = identities(config);
        let projections = config
            .projections
            .values()
            .map(|p| {
                let new = Projection::new(p.name.clone(), &p.logs, &p.instances);
                let new_ids = identity(&identities, &new);
                let Some(old) = self.projections.get(&p.name) else {
                    fresh.projections.push(p.name.clone());
                    return (p.name.clone(), Arc::new(new));
                };
                let old_ids = identity(&self.identities, old);
                if old.logs() == new.logs() && old_ids == new_ids {
                    return (p.name.clone(), Arc::clone(old));
                }
                let map: Vec<Option<usize>> = new_ids
                    .iter()
                    .map(|id| old_ids.iter().position(|o| o == id))
                    .collect();
                if old.logs() != new.logs() {
                    fresh.projections.push(p.name.clone());
                } else {
                    for (i, kept) in map.iter().enumerate() {
                        if kept.is_none() {
                            fresh
                                .instances
                                .push(format!("{}/{}", p.name, new.instances()[i]));
                        }
                    }
                }
                new.forward_to(old, map);
                (p.name.clone(), Arc::new(new))
            })
            .collect();
        let mut registry = Registry {
            projections,
            identities: BTreeMap::new(),
            sources: None,
            held: Arc::clone(&self.held),
            max_held: config.server.max_held_reads,
        };
        registry.configure(config);
        (registry, fresh)
    }

    /// True when `projection` lists `source` in its `sources` (a registry built
    /// without a config accepts every source).
    pub fn listens(&self, projection: &str, source: SourceKind) -> bool {
        match &self.sources {
            None => true,
            Some(sources) => sources.get(projection).is_some_and(|s| s.contains(&source)),
        }
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
            identities: BTreeMap::new(),
            sources: None,
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

/// Per projection, each instance's `(name, URL)`, from the upstream its read routes
/// use (a projection no read route uses has instances without URLs).
fn identities(config: &Config) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for route in &config.routes {
        let RouteKind::Read(read) = &route.kind else {
            continue;
        };
        if let Some(up) = config.upstreams.get(&route.upstream) {
            out.entry(read.projection.clone()).or_insert_with(|| {
                up.instances
                    .iter()
                    .map(|i| (i.name.clone(), i.url.to_string()))
                    .collect()
            });
        }
    }
    out
}

/// `projection`'s instances as `(name, URL)` (URL empty when unknown).
fn identity(
    identities: &BTreeMap<String, Vec<(String, String)>>,
    projection: &Projection,
) -> Vec<(String, String)> {
    let known = identities.get(projection.name());
    projection
        .instances()
        .iter()
        .map(|name| {
            let url = known
                .and_then(|ids| ids.iter().find(|(n, _)| n == name))
                .map(|(_, url)| url.clone())
                .unwrap_or_default();
            (name.clone(), url)
        })
        .collect()
}

impl Drop for HoldPermit {
    fn drop(&mut self) {
        self.projection.held.fetch_sub(1, Ordering::Relaxed);
        self.global.fetch_sub(1, Ordering::AcqRel);
    }
}
