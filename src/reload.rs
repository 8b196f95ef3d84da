//! Config reload: `POST /reload` on the admin listener and SIGHUP (wired by the
//! binary through [`crate::ServeOptions::reload_signal`]) re-read the config file,
//! build a complete new [`Gateway`] (routes, keys, upstreams, TLS), and only then
//! swap it in. Requests read the current [`Live`] once, when they start, so requests
//! in flight (held reads included) finish on the gateway they started on.
//!
//! A file that does not load, validate or build changes nothing: every error is
//! logged, counted (`tidemark_config_reloads_total{result="error"}`) and returned.
//!
//! What survives a reload: each projection whose logs and instances (names and URLs)
//! are unchanged is kept as the same object (checkpoints, held reads, lag record; see
//! [`Registry::reloaded`]); a new projection, or one whose logs changed, starts
//! afresh, and a new or repointed instance starts with no checkpoint: they wait for
//! their sources (the Redis store is asked to reload its checkpoints at once). Reads
//! held on a replaced projection are released by its replacement's advances. The
//! write-through cache is kept. Poll sources restart on the new config. What a reload cannot change ([`RESTART_ONLY`]): the listeners, their
//! limits, the drain timeout, the store backend, and the cache's size; a change
//! there is logged and the running value kept.

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminState};
use crate::cache::Cache;
use crate::checkpoint::{self, Registry, RegistrySink};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::position::PositionVector;
use crate::store::redis::{CheckpointSink, RedisStore};
use crate::tls::{self, TlsSource};

/// Keys a reload cannot change (the running value is kept, with a warning).
pub const RESTART_ONLY: &[&str] = &[
    "server.listen",
    "server.admin_listen",
    "server.max_connections",
    "server.header_read_timeout",
    "server.idle_timeout",
    "server.max_headers",
    "server.max_header_bytes",
    "server.drain_timeout",
    "store",
    "cache.max_entries",
    "cache.max_bytes",
    "nats",
    "kafka",
];

/// What serves requests now: read once per request.
pub struct Live {
    pub gateway: Arc<Gateway>,
    /// The admin API, bound to `gateway`.
    pub admin: Router,
}

impl Live {
    /// The admin router for `gateway`, every other admin field taken from `template`.
    fn new(gateway: Arc<Gateway>, template: &AdminState) -> Live {
        let state = AdminState {
            gateway: gateway.clone(),
            ..template.clone()
        };
        Live {
            gateway,
            admin: admin::router(state),
        }
    }
}

/// Asks the running gateway to reload its config file.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::Sender<oneshot::Sender<ReloadResult>>,
}

/// A reload's outcome: what changed, or every error (the old config keeps serving).
pub type ReloadResult = Result<ReloadOutcome, Vec<String>>;

/// Reload requests, each with where to send its outcome.
pub(crate) type Requests = mpsc::Receiver<oneshot::Sender<ReloadResult>>;

impl ReloadHandle {
    /// Reloads and waits for the outcome. Reloads run one at a time.
    pub async fn reload(&self) -> ReloadResult {
        let (tx, rx) = oneshot::channel();
        let stopped = || vec!["the gateway is shutting down; nothing was reloaded".to_string()];
        self.tx.send(tx).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// A successful reload.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub file: PathBuf,
    pub routes: usize,
    /// Projections that started afresh (new, or their logs changed).
    pub fresh_projections: Vec<String>,
    /// `projection/instance` of the instances that start with no checkpoint in a kept
    /// projection (new, or repointed to another URL).
    pub fresh_instances: Vec<String>,
    /// Restart-only keys whose new value was ignored.
    pub ignored: Vec<&'static str>,
}

impl ReloadOutcome {
    /// The `POST /reload` answer.
    pub fn to_json(&self) -> Value {
        json!({
            "status": "reloaded",
            "file": self.file.display().to_string(),
            "routes": self.routes,
            "fresh_projections": self.fresh_projections,
            "fresh_instances": self.fresh_instances,
            "ignored_restart_only_keys": self.ignored,
        })
    }
}

/// Where a reload reads the config.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    pub path: PathBuf,
    /// The environment (overrides, key variables); `None`: the process's, read anew
    /// on each reload.
    pub env: Option<Vec<(String, String)>>,
}

/// Builds gateways from configs and swaps them in; owns the poll sources.
pub(crate) struct Reloader {
    source: Option<ReloadSource>,
    pub(crate) live: Arc<ArcSwap<Live>>,
    registry: Arc<ArcSwap<Registry>>,
    pub(crate) tls: TlsSource,
    cache: Cache,
    store: Option<Arc<RedisStore>>,
    nats: Option<Arc<crate::nats::Nats>>,
    kafka: Option<Arc<crate::kafka::Kafka>>,
    template: AdminState,
    shutdown: CancellationToken,
    polls: CancellationToken,
}

/// The parts shared by every generation of the gateway, chosen at start-up.
pub(crate) struct Shared {
    pub registry: Arc<ArcSwap<Registry>>,
    pub cache: Cache,
    pub store: Option<Arc<RedisStore>>,
    /// `[nats]`, connected at start-up (restart-only).
    pub nats: Option<Arc<crate::nats::Nats>>,
    /// `[kafka]`, set up at start-up (restart-only).
    pub kafka: Option<Arc<crate::kafka::Kafka>>,
}

impl Reloader {
    /// The first generation, from `config`. `template` gives the admin fields
    /// other than the gateway; its `reload` handle is set here when `source` is.
    pub(crate) fn start(
        config: Arc<Config>,
        shared: Shared,
        mut template: AdminState,
        source: Option<ReloadSource>,
        shutdown: CancellationToken,
    ) -> Result<(Reloader, Option<Requests>), Vec<String>> {
        let registry = shared.registry.load_full();
        let (gateway, tls_config) = build(config, registry.clone(), &shared, &shutdown, None)?;
        let (handle, rx) = match source {
            Some(_) => {
                let (tx, rx) = mpsc::channel(4);
                (Some(ReloadHandle { tx }), Some(rx))
            }
            None => (None, None),
        };
        template.reload = handle;
        template.gateway = gateway.clone();
        let polls = shutdown.child_token();
        spawn_polls(&gateway, &registry, &polls);
        let reloader = Reloader {
            source,
            live: Arc::new(ArcSwap::from_pointee(Live::new(gateway, &template))),
            registry: shared.registry,
            tls: Arc::new(arc_swap::ArcSwapOption::new(tls_config)),
            cache: shared.cache,
            store: shared.store,
            nats: shared.nats,
            kafka: shared.kafka,
            template,
            shutdown,
            polls,
        };
        Ok((reloader, rx))
    }

    /// Serves reload requests (and `signal` notifications) until shutdown.
    pub(crate) async fn run(mut self, mut requests: Requests, signal: Option<Arc<Notify>>) {
        let signal = signal.unwrap_or_default();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                Some(reply) = requests.recv() => {
                    let _ = reply.send(self.reload());
                }
                _ = signal.notified() => {
                    let _ = self.reload();
                }
            }
        }
    }

    /// Reloads the file: everything new is built before anything is swapped.
    pub(crate) fn reload(&mut self) -> ReloadResult {
        let result = self.try_reload();
        match &result {
            Ok(o) => {
                metrics::counter!("tidemark_config_reloads_total", "result" => "ok").increment(1);
                tracing::info!(file = %o.file.display(), routes = o.routes, fresh_projections = ?o.fresh_projections, fresh_instances = ?o.fresh_instances, "config reloaded");
            }
            Err(errors) => {
                metrics::counter!("tidemark_config_reloads_total", "result" => "error")
                    .increment(1);
                for error in errors {
                    tracing::error!(%error, "config reload refused");
                }
                tracing::warn!(
                    errors = errors.len(),
                    "config not reloaded; the previous config keeps serving"
                );
            }
        }
        result
    }

    fn try_reload(&mut self) -> ReloadResult {
        let Some(source) = &self.source else {
            return Err(vec![
                "started without a config file; nothing to reload".into()
            ]);
        };
        let loaded = match &source.env {
            Some(env) => Config::load_with_env(&source.path, env),
            None => Config::load(&source.path),
        };
        let mut config = loaded.map_err(|e| {
            let file = source.path.display().to_string();
            e.errors
                .iter()
                .map(|e| format!("{file}: `{}`: {}; fix: {}", e.key, e.problem, e.fix))
                .collect::<Vec<_>>()
        })?;
        let running = self.live.load().gateway.config.clone();
        let ignored = keep_restart_only(&running, &mut config);
        for key in &ignored {
            tracing::warn!(
                key,
                "this key cannot change on reload; the running value is kept (restart to apply)"
            );
        }
        let (registry, fresh) = self.registry.load().reloaded(&config);
        let registry = Arc::new(registry);
        let shared = Shared {
            registry: self.registry.clone(),
            cache: self.cache.clone(),
            store: self.store.clone(),
            nats: self.nats.clone(),
            kafka: self.kafka.clone(),
        };
        // The recent hold timeouts shown on the status page outlive a reload.
        let recent = self.live.load().gateway.recent_timeouts.clone();
        let (gateway, tls_config) = build(
            Arc::new(config),
            registry.clone(),
            &shared,
            &self.shutdown,
            Some(recent),
        )?;
        // Everything is built: swap.
        self.registry.store(registry.clone());
        self.polls.cancel();
        self.polls = self.shutdown.child_token();
        spawn_polls(&gateway, &registry, &self.polls);
        if let Some(store) = &self.store {
            // New, changed or newly `redis`-fed projections learn Redis's checkpoints
            // now, not at the next `resync_interval`.
            store.resync();
        }
        self.tls.store(tls_config);
        let outcome = ReloadOutcome {
            file: source.path.clone(),
            routes: gateway.config.routes.len(),
            fresh_projections: fresh.projections,
            fresh_instances: fresh.instances,
            ignored,
        };
        self.live
            .store(Arc::new(Live::new(gateway, &self.template)));
        Ok(outcome)
    }
}

type Built = (
    Arc<Gateway>,
    Option<Arc<tokio_rustls::rustls::ServerConfig>>,
);

/// A complete gateway (and TLS config) for `config`, or every error.
fn build(
    config: Arc<Config>,
    registry: Arc<Registry>,
    shared: &Shared,
    shutdown: &CancellationToken,
    recent_timeouts: Option<Arc<crate::telemetry::RecentTimeouts>>,
) -> Result<Built, Vec<String>> {
    let mut errors = Vec::new();
    let tls_config = match config.server.tls.as_ref().map(tls::load).transpose() {
        Ok(t) => t,
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    };
    let gateway = Gateway::new(config, registry, shared.cache.clone(), shared.store.clone());
    match gateway.map(|g| {
        g.with_nats(shared.nats.clone())
            .with_kafka(shared.kafka.clone())
    }) {
        Ok(mut g) if errors.is_empty() => {
            if let Some(recent) = recent_timeouts {
                g.recent_timeouts = recent;
            }
            Ok((Arc::new(g.with_drain(shutdown.clone())), tls_config))
        }
        Ok(_) => Err(errors),
        Err(e) => {
            errors.insert(0, e.to_string());
            Err(errors)
        }
    }
}

/// Copies the running values of [`RESTART_ONLY`] keys into `new`; returns the keys
/// whose value differed.
fn keep_restart_only(running: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut ignored = Vec::new();
    let (old, s) = (&running.server, &mut new.server);
    macro_rules! keep {
        ($key:literal, $old:expr, $new:expr) => {
            if $old != $new {
                ignored.push($key);
                $new = $old.clone();
            }
        };
    }
    keep!("server.listen", old.listen, s.listen);
    keep!("server.admin_listen", old.admin_listen, s.admin_listen);
    keep!(
        "server.max_connections",
        old.max_connections,
        s.max_connections
    );
    keep!(
        "server.header_read_timeout",
        old.header_read_timeout,
        s.header_read_timeout
    );
    keep!("server.idle_timeout", old.idle_timeout, s.idle_timeout);
    keep!("server.max_headers", old.max_headers, s.max_headers);
    keep!(
        "server.max_header_bytes",
        old.max_header_bytes,
        s.max_header_bytes
    );
    keep!("server.drain_timeout", old.drain_timeout, s.drain_timeout);
    keep!("store", running.store, new.store);
    keep!("nats", running.nats, new.nats);
    keep!("kafka", running.kafka, new.kafka);
    keep!(
        "cache.max_entries",
        running.cache.max_entries,
        new.cache.max_entries
    );
    keep!(
        "cache.max_bytes",
        running.cache.max_bytes,
        new.cache.max_bytes
    );
    ignored
}

/// Starts the checkpoint sources that run on their own (`poll`, `postgres`, `nats`,
/// `kafka`), until `token`.
pub(crate) fn spawn_polls(gateway: &Gateway, registry: &Registry, token: &CancellationToken) {
    checkpoint::sources::spawn_all(&gateway.config, registry, &gateway.databases, token);
    checkpoint::sources::nats::spawn_all(&gateway.config, registry, gateway.nats.as_ref(), token);
    checkpoint::sources::kafka::spawn_all(&gateway.config, registry, gateway.kafka.as_ref(), token);
}

/// The Redis store's sink: always the current registry.
#[derive(Debug)]
pub(crate) struct LiveSink(pub Arc<ArcSwap<Registry>>);

impl CheckpointSink for LiveSink {
    fn apply(&self, projection: &str, instance: Option<&str>, checkpoint: &PositionVector) {
        RegistrySink(self.0.load_full()).apply(projection, instance, checkpoint);
    }

    fn projections(&self) -> Vec<String> {
        RegistrySink(self.0.load_full()).projections()
    }

    fn snapshot(&self) -> Vec<(String, String, PositionVector)> {
        RegistrySink(self.0.load_full()).snapshot()
    }
}
