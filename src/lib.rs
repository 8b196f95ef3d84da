//! tidemark: a read-your-writes consistency gateway.
//!
//! Module map (request flow in `../shared/ARCHITECTURE.md`):
//! - [`config`]: TOML -> raw structs -> validated [`config::Config`] (all errors at once).
//! - [`position`]: position vectors (parse, format, covers, merge).
//! - [`route`]: the route table (file order, matchit patterns) and cache-key templates.
//! - [`token`]: version tokens (JWT), key ring, header/cookie extraction.
//! - [`checkpoint`]: per-projection checkpoints, the waiter registry, write-time record,
//!   checkpoint sources (poll here; push in [`admin`], header in the read path).
//! - [`gate`]: the read decision, a pure function.
//! - [`proxy`]: upstream client, hop-by-hop/forwarded headers, forwarding.
//! - [`cache`]: the write-through cache (memory; Redis in [`store::redis`]).
//! - [`store`]: shared state in Redis.
//! - [`admin`]: the admin listener.
//! - [`cli_checkpoint`]: `tidemark checkpoint push` (a checkpoint to the admin API).
//! - [`error`]: errors -> problem+json.
//! - [`demo`]: the example backend behind `tidemark demo`, tests and load tests.

pub mod admin;
pub mod cache;
pub mod checkpoint;
pub mod cli_checkpoint;
pub mod config;
pub mod demo;
pub mod error;
pub mod gate;
pub mod gateway;
pub mod position;
pub mod proxy;
pub mod route;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod token;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::cache::{memory::MemoryCache, Cache};
use crate::checkpoint::Registry;
use crate::config::{Config, SourceKind, StoreConfig};
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
}

/// Runs a gateway on `listeners` until `shutdown` is cancelled, then drains (bounded by
/// `server.drain_timeout`) and returns.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let registry = Arc::new(Registry::new(&config));
    let (cache, store) = match &config.store {
        StoreConfig::Memory => (
            Cache::Memory(MemoryCache::new(config.cache.max_entries)),
            None,
        ),
        StoreConfig::Redis(redis) => {
            let sink = Arc::new(checkpoint::RegistrySink(registry.clone()));
            let store = Arc::new(store::redis::RedisStore::start(
                redis,
                sink,
                shutdown.child_token(),
            ));
            (Cache::Redis(store.clone()), Some(store))
        }
    };
    for (name, p) in &config.projections {
        if let (true, Some(poll), Some(projection)) = (
            p.sources.contains(&SourceKind::Poll),
            &p.poll,
            registry.get(name),
        ) {
            checkpoint::poll::spawn(projection.clone(), poll.clone(), shutdown.child_token());
        }
    }
    let gateway = Arc::new(Gateway::new(config.clone(), registry, cache, store)?);

    let admin_state = admin::AdminState {
        gateway: gateway.clone(),
        prometheus: telemetry::prometheus(),
        shutdown: shutdown.clone(),
    };
    let router = admin::router(admin_state);
    let settings = |name| ListenerSettings {
        name,
        max_connections: config.server.max_connections,
        header_read_timeout: config.server.header_read_timeout,
        max_headers: config.server.max_headers,
        drain_timeout: config.server.drain_timeout,
    };
    tracing::info!(
        proxy = %listeners.proxy.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        admin = %listeners.admin.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        routes = config.routes.len(),
        "tidemark listening"
    );
    let admin = tokio::spawn(server::run(
        listeners.admin,
        settings("admin"),
        move |req, _peer| {
            let router = router.clone();
            async move {
                let resp = match router.oneshot(req.map(axum::body::Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                resp.map(proxy::boxed)
            }
        },
        shutdown.clone(),
    ));
    server::run(
        listeners.proxy,
        settings("proxy"),
        move |req, peer| gateway.clone().handle(req, peer),
        shutdown,
    )
    .await;
    let _ = admin.await;
    Ok(())
}
