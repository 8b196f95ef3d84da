//! `tidemark demo`: an example command service, a projector that applies events after
//! a lag, and a read service, all in-process, with the gateway in front on the
//! embedded store. The same backend serves the integration tests and load tests.
//!
//! - [`command`]: the command service (log `users`, write model, primary reads).
//! - [`projector`]: one task per read instance, applying events after its lag.
//! - [`instance`]: a read instance's model and checkpoint, committed together.
//! - [`read`]: the read service of each instance (`/users/{id}`, `/checkpoint`).
//! - [`push`]: checkpoint pushes to the gateway's admin API.
//! - [`model`]: events, the write model and the `PATCH` merge.
//! - [`wire`]: header names, body parsing and error answers shared by the services.
//! - [`walkthrough`]: `tidemark demo` itself (the gateway in front, steps, curl lines).
//! - [`postgres`], [`nats`]: `tidemark demo --postgres URL` / `--nats URL`, the same
//!   walkthrough with the log in a real PostgreSQL or JetStream stream and services
//!   that report no positions (the gateway reads them with a fence and a source).
//!
//! HTTP surface (header names are the gateway's defaults):
//!
//! | Service | Request | Answer |
//! |---|---|---|
//! | command | `PUT`/`POST /users/{id}` (JSON object) | `200` user (body + `id`, `version`), `Write-Position: users=N` |
//! | command | `PATCH /users/{id}` (JSON merge patch) | same, merged over the previous user |
//! | command | `DELETE /users/{id}` | `204`, `Write-Position` |
//! | command | `GET /users/{id}` | `200` user or `404` from the write model (the primary) |
//! | `r<i>` | `GET /users/{id}` | `200` user or `404` from the read model; `Projection-Checkpoint` if enabled |
//! | `r<i>` | `GET /checkpoint` | `{"users": N}` (for the `poll` source) |
//!
//! A body that is not a JSON object is `400 {"error": "..."}`. Every service echoes a
//! request's `Consistency-Min-Position` as `Seen-Min-Position`. With a [`PushTarget`],
//! each instance `PUT`s `{"users": N}` to
//! `{admin_url}/projections/{projection}/checkpoint?instance=r<i>` after applying.
//!
//! The services are served with `axum::serve`, which has no header-read timeout: fine
//! for a demo on `127.0.0.1`, not for an exposed service.

pub mod command;
pub mod instance;
pub mod model;
pub mod nats;
pub mod postgres;
pub mod projector;
pub mod push;
pub mod read;
pub mod walkthrough;
pub mod wire;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use command::CommandSide;
use instance::ReadInstance;

/// Where the projector pushes its checkpoint after each applied event.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The gateway admin listener's base URL, e.g. `http://127.0.0.1:9090`.
    pub admin_url: String,
    /// The projection name in `PUT /projections/{projection}/checkpoint`.
    pub projection: String,
    /// Sent as `Authorization: Bearer ...` when set.
    pub admin_token: Option<String>,
}

/// How the example backend behaves.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Time between a write's commit and its projection's.
    pub lag: Duration,
    /// Push checkpoints to a gateway (the `push` source).
    pub push: Option<PushTarget>,
    /// Send `Projection-Checkpoint` on read responses (the `header` source).
    pub checkpoint_header: bool,
    /// Number of read-service instances (replicas), each with its own projector
    /// applying the same events after `lag` (instance `i` after `lag * (i + 1)`).
    pub read_instances: usize,
}

impl Default for BackendOptions {
    /// A 200 ms lag (long enough to see stale reads by hand, short enough not to
    /// annoy), no push, the checkpoint header on, one read instance.
    fn default() -> Self {
        BackendOptions {
            lag: Duration::from_millis(200),
            push: None,
            checkpoint_header: true,
            read_instances: 1,
        }
    }
}

/// Why a [`Backend`] query could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The instance index is out of range.
    #[error("no read instance {index}: the backend has {count}")]
    NoSuchInstance {
        /// The index asked for.
        index: usize,
        /// How many instances there are.
        count: usize,
    },
    /// The backend was shut down before the condition held.
    #[error("the demo backend stopped")]
    Stopped,
}

/// A running example backend.
#[derive(Debug)]
pub struct Backend {
    /// Command service (also the primary: it answers GETs from the write model).
    pub command_addr: SocketAddr,
    /// Read-service instances, in instance order (named `r0`, `r1`, ...).
    pub read_addrs: Vec<SocketAddr>,
    command: Arc<CommandSide>,
    instances: Vec<Arc<ReadInstance>>,
    shutdown: CancellationToken,
}

/// The name of read instance `index`: `r0`, `r1`, ... (the `?instance=` of pushes).
pub fn instance_name(index: usize) -> String {
    format!("r{index}")
}

impl Backend {
    /// Starts the services on `127.0.0.1:0`; they stop on `shutdown`.
    pub async fn start(
        options: BackendOptions,
        shutdown: CancellationToken,
    ) -> std::io::Result<Backend> {
        let command = TcpListener::bind("127.0.0.1:0").await?;
        let mut reads = Vec::with_capacity(options.read_instances);
        for _ in 0..options.read_instances {
            reads.push(TcpListener::bind("127.0.0.1:0").await?);
        }
        Self::start_on(options, command, reads, shutdown).await
    }

    /// Starts the services on listeners the caller bound (e.g. fixed ports for
    /// `tidemark demo`): one read instance per listener in `reads`, whose length must
    /// equal `options.read_instances` (else `InvalidInput`).
    pub async fn start_on(
        options: BackendOptions,
        command: TcpListener,
        reads: Vec<TcpListener>,
        shutdown: CancellationToken,
    ) -> io::Result<Backend> {
        if reads.len() != options.read_instances {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} read listeners for {} read instances",
                    reads.len(),
                    options.read_instances
                ),
            ));
        }
        let command_addr = command.local_addr()?;
        let read_addrs = reads
            .iter()
            .map(TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;

        let mut feeds = Vec::with_capacity(reads.len());
        let mut instances = Vec::with_capacity(reads.len());
        for (index, listener) in reads.into_iter().enumerate() {
            let instance = Arc::new(ReadInstance::new(instance_name(index)));
            let (feed, events) = mpsc::unbounded_channel();
            feeds.push(feed);
            tokio::spawn(projector::run(
                Arc::clone(&instance),
                projector::instance_lag(options.lag, index),
                events,
                shutdown.clone(),
            ));
            if let Some(target) = &options.push {
                tokio::spawn(push::run(
                    target.clone(),
                    instance.name().to_owned(),
                    instance.subscribe(),
                    shutdown.clone(),
                ));
            }
            let app = read::router(Arc::clone(&instance), options.checkpoint_header);
            serve(listener, app, instance.name().to_owned(), &shutdown);
            instances.push(instance);
        }
        let side = Arc::new(CommandSide::new(feeds));
        serve(
            command,
            command::router(Arc::clone(&side)),
            "command".to_owned(),
            &shutdown,
        );
        tracing::debug!(%command_addr, ?read_addrs, "demo backend started");
        Ok(Backend {
            command_addr,
            read_addrs,
            command: side,
            instances,
            shutdown,
        })
    }

    /// `http://<command_addr>`.
    pub fn command_url(&self) -> String {
        format!("http://{}", self.command_addr)
    }

    /// `http://<read_addrs[index]>`, if that instance exists.
    pub fn read_url(&self, index: usize) -> Option<String> {
        self.read_addrs
            .get(index)
            .map(|addr| format!("http://{addr}"))
    }

    /// The last position written to the `users` log (0 before any write).
    pub fn head(&self) -> u64 {
        self.command.head()
    }

    /// Instance `index`'s checkpoint: every event up to it is in its read model.
    pub fn checkpoint(&self, index: usize) -> Option<u64> {
        self.instances
            .get(index)
            .map(|instance| instance.checkpoint())
    }

    /// `GET /users/{id}` requests instance `index` has served (`/checkpoint` polls are
    /// not counted), so tests can check which replica the gateway chose.
    pub fn requests_served(&self, index: usize) -> Option<u64> {
        self.instances.get(index).map(|instance| instance.served())
    }

    /// `GET /users/{id}` requests the command service (the primary) has served.
    pub fn primary_reads_served(&self) -> u64 {
        self.command.primary_reads()
    }

    /// Resolves once instance `index`'s checkpoint is at least `position` (its read
    /// model already holds the data by then). Wrap it in a timeout in tests.
    pub async fn wait_checkpoint(&self, index: usize, position: u64) -> Result<(), DemoError> {
        let instance = self.instances.get(index).ok_or(DemoError::NoSuchInstance {
            index,
            count: self.instances.len(),
        })?;
        let mut checkpoints = instance.subscribe();
        tokio::select! {
            biased;
            reached = checkpoints.wait_for(|checkpoint| *checkpoint >= position) => {
                reached.map(|_| ()).map_err(|_| DemoError::Stopped)
            }
            () = self.shutdown.cancelled() => Err(DemoError::Stopped),
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, logging how it ended.
fn serve(listener: TcpListener, app: Router, name: String, shutdown: &CancellationToken) {
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(service = %name, %error, "demo service stopped with an error");
        }
    });
}
