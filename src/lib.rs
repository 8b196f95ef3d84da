//! tidemark: a read-your-writes consistency gateway.
//!
//! Module map (request flow in `../shared/ARCHITECTURE.md`):
//! - [`config`]: TOML -> raw structs -> validated [`config::Config`] (all errors at once);
//!   `config::lint`: warnings on a valid config (`tidemark check`, start-up).
//! - [`position`]: position vectors (parse, format, covers, merge).
//! - [`route`]: the route table (file order, matchit patterns) and cache-key templates.
//! - [`token`]: version tokens (JWT, the vector in a compact claim), key ring,
//!   header/cookie extraction, the size check before handing one out.
//! - [`checkpoint`]: per-projection checkpoints, the waiter registry, write-time record,
//!   checkpoint sources (`checkpoint::sources`: poll, postgres; push in [`admin`],
//!   header in the read path, redis in [`store`]).
//! - [`gate`]: the read decision, a pure function.
//! - [`gateway`]: request handling: route match, token, then the read, write or
//!   passthrough path (the gate's I/O: cache lookups, holds, forwarding).
//! - [`proxy`]: upstream connection pools (per instance, capped), hop-by-hop/forwarded
//!   headers, forwarding.
//! - [`cache`]: the write-through cache (memory, bounded by entries and bytes; Redis
//!   in [`store::redis`]); entries bound to the writer's identity hash.
//! - [`store`]: shared state in Redis.
//! - [`nats`]: the NATS connection (`[nats]`) of the `nats` checkpoint source.
//! - [`kafka`]: the Kafka client (`[kafka]`) of the `kafka` source and fences.
//! - [`database`]: PostgreSQL pools (`[databases.NAME]`) for the `postgres` source and fences.
//! - [`admin`]: the admin listener.
//! - [`cli_checkpoint`]: `tidemark checkpoint push` (a checkpoint to the admin API) and
//!   `checkpoint show` (runs every postgres source and fence once).
//! - [`server`]: the listener loop (limits, TLS via [`tls`], bounded drain).
//! - [`reload`]: config reload (`POST /reload`, SIGHUP): build new, then swap.
//! - [`error`]: errors -> problem+json.
//! - [`telemetry`]: logging (rate-limited lines, the access log), the Prometheus
//!   recorder, process metrics, recent timeouts, per-route figures for the status page.
//! - [`demo`]: the example backend behind `tidemark demo`, tests and load tests.

pub mod admin;
pub mod cache;
pub mod checkpoint;
pub mod cli_checkpoint;
pub mod config;
pub mod database;
pub mod demo;
pub mod error;
pub mod gate;
pub mod gateway;
pub mod kafka;
pub mod nats;
pub mod position;
pub mod proxy;
pub mod reload;
pub mod route;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use arc_swap::ArcSwap;

use crate::cache::{memory::MemoryCache, Cache};
use crate::checkpoint::Registry;
use crate::config::{Config, StoreConfig};
use crate::gateway::Gateway;
use crate::server::ListenerSettings;

/// The two listeners a gateway serves on (bound by the caller, so tests use port 0).
#[derive(Debug)]
pub struct Listeners {
    pub proxy: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds `server.listen` and `server.admin_listen`.
    pub async fn bind(config: &Config) -> std::io::Result<Listeners> {
        let proxy = TcpListener::bind(config.server.listen).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot listen on {} (server.listen): {e}",
                    config.server.listen
                ),
            )
        })?;
        let admin = TcpListener::bind(config.server.admin_listen)
            .await
            .map_err(|e| {
                std::io::Error::new(
                    e.kind(),
                    format!(
                        "cannot listen on {} (server.admin_listen): {e}",
                        config.server.admin_listen
                    ),
                )
            })?;
        Ok(Listeners { proxy, admin })
    }

    pub fn proxy_addr(&self) -> std::io::Result<SocketAddr> {
        self.proxy.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Build(#[from] gateway::BuildError),
    /// The config did not build (keys, routes, TLS files): every error.
    #[error("the gateway cannot start:\n  {}", .0.join("\n  "))]
    Start(Vec<String>),
    #[error(transparent)]
    Nats(#[from] nats::NatsError),
    #[error(transparent)]
    Kafka(#[from] kafka::KafkaError),
}

/// Builds, without serving, what [`serve`] builds from a validated config and can
/// fail on (the key ring from its variables and files, the route table, the TLS
/// files): every error, as [`ServeError::Start`] would list them. `tidemark check`
/// runs it so that it fails wherever `tidemark run` would.
pub fn preflight(config: &Config) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if let Err(e) = token::KeyRing::from_config(&config.token) {
        errors.push(e.to_string());
    }
    if let Err(e) = route::RouteTable::new(&config.routes) {
        errors.push(gateway::BuildError::Routes(e).to_string());
    }
    if let Some(Err(e)) = config.server.tls.as_ref().map(tls::load) {
        errors.push(e.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What [`serve_with`] adds to [`serve`].
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    /// The file `POST /reload` (and `reload_signal`) re-reads. `None`: reload is
    /// unavailable (`POST /reload` answers 404).
    pub reload_from: Option<reload::ReloadSource>,
    /// Each notification reloads the config (the binary wires SIGHUP here).
    pub reload_signal: Option<Arc<tokio::sync::Notify>>,
}

/// Runs a gateway on `listeners` until `shutdown` is cancelled, then drains (bounded by
/// `server.drain_timeout`) and returns. No reload; see [`serve_with`].
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    serve_with(config, listeners, shutdown, ServeOptions::default()).await
}

/// [`serve`], with config reload ([`reload`]).
///
/// Shutdown (`shutdown` cancelled): `/readyz` answers 503, the client listener stops
/// accepting, held reads are answered at once by their route's `on_timeout`, in-flight
/// requests finish, and the client listener's drain is capped at
/// `server.drain_timeout`; the admin listener serves until then (so `/readyz` is seen
/// failing), then stops too.
pub async fn serve_with(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
    options: ServeOptions,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let registry = Arc::new(ArcSwap::from_pointee(Registry::new(&config)));
    let (cache, store) = match &config.store {
        StoreConfig::Memory => (
            Cache::Memory(MemoryCache::new(
                config.cache.max_entries,
                config.cache.max_bytes,
            )),
            None,
        ),
        StoreConfig::Redis(redis) => {
            let sink = Arc::new(reload::LiveSink(registry.clone()));
            let store = Arc::new(store::redis::RedisStore::start(
                redis,
                sink,
                shutdown.child_token(),
            ));
            (Cache::Redis(store.clone()), Some(store))
        }
    };
    let nats = match &config.nats {
        Some(n) => Some(Arc::new(nats::Nats::connect(n).await?)),
        None => None,
    };
    let kafka = match &config.kafka {
        Some(k) => Some(kafka::Kafka::connect(k, kafka::probe_topic(&config))?),
        None => None,
    };
    let shared = reload::Shared {
        registry,
        cache,
        store,
        nats,
        kafka,
    };
    // The recorder first: the gateway's upstreams take their metric handles from it.
    let prometheus = telemetry::prometheus();
    // `gateway` and `reload` are set by the reloader, for each generation.
    let template = admin::AdminState {
        gateway: Arc::new(
            Gateway::new(
                config.clone(),
                shared.registry.load_full(),
                shared.cache.clone(),
                shared.store.clone(),
            )?
            .with_nats(shared.nats.clone())
            .with_kafka(shared.kafka.clone()),
        ),
        prometheus,
        shutdown: shutdown.clone(),
        reload: None,
        history: Arc::new(admin::history::History::new(
            admin::history::HISTORY_SAMPLES,
        )),
    };
    let history = template.history.clone();
    let (reloader, requests) = reload::Reloader::start(
        config.clone(),
        shared,
        template,
        options.reload_from,
        shutdown.clone(),
    )
    .map_err(ServeError::Start)?;
    let live = reloader.live.clone();
    {
        let live = live.clone();
        admin::history::spawn_sampler(
            history,
            move || live.load().gateway.clone(),
            shutdown.child_token(),
        );
    }
    let tls = reloader.tls.clone();
    if let Some(requests) = requests {
        tokio::spawn(reloader.run(requests, options.reload_signal));
    }

    let settings = |name, tls| ListenerSettings {
        name,
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        idle_timeout: config.server.idle_timeout,
        max_headers: config.server.max_headers,
        max_header_bytes: config.server.max_header_bytes,
        drain_timeout: config.server.drain_timeout,
        tls,
    };
    tracing::info!(
        proxy = %listeners.proxy.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        tls = config.server.tls.is_some(),
        routes = config.routes.len(),
        "tidemark listening"
    );
    let admin_stop = CancellationToken::new();
    let admin_live = live.clone();
    let admin = tokio::spawn(server::run(
        listeners.admin,
        settings("admin", None),
        move |req, _peer| {
            let router = admin_live.load().admin.clone();
            async move {
                let resp = match router.oneshot(req.map(axum::body::Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                resp.map(proxy::boxed)
            }
        },
        admin_stop.clone(),
    ));
    let cancelled_at = async {
        shutdown.cancelled().await;
        tokio::time::Instant::now()
    };
    let ((), cancelled_at) = tokio::join!(
        server::run(
            listeners.proxy,
            settings("proxy", Some(tls)),
            move |req, peer| live.load().gateway.clone().handle(req, peer),
            shutdown.clone(),
        ),
        cancelled_at
    );
    // The admin listener served `/readyz` 503 during the drain; it gets what is left
    // of `drain_timeout` to finish its own requests.
    admin_stop.cancel();
    let deadline = cancelled_at + config.server.drain_timeout;
    let mut admin = admin;
    if tokio::time::timeout_at(deadline, &mut admin).await.is_err() {
        admin.abort();
    }
    tracing::info!("tidemark stopped");
    Ok(())
}
