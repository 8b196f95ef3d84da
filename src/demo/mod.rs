//! `tidemark demo`: an example command service, a projector that applies events after
//! a lag, and a read service, all in-process, with the gateway in front on the
//! embedded store. The same backend serves the integration tests and load tests.
//! (Stub: the demo helper fills in the bodies; the signatures are the contract.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Where the projector pushes its checkpoint after each applied event.
#[derive(Debug, Clone)]
pub struct PushTarget {
    /// The gateway admin listener's base URL, e.g. `http://127.0.0.1:9090`.
    pub admin_url: String,
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

/// A running example backend.
#[derive(Debug)]
pub struct Backend {
    /// Command service (also the primary: it answers GETs from the write model).
    pub command_addr: SocketAddr,
    /// Read-service instances, in instance order (named `r0`, `r1`, ...).
    pub read_addrs: Vec<SocketAddr>,
}

impl Backend {
    /// Starts the services on `127.0.0.1:0`; they stop on `shutdown`.
    pub async fn start(
        options: BackendOptions,
        shutdown: CancellationToken,
    ) -> std::io::Result<Backend> {
        let _ = (options, shutdown);
        todo!("demo helper")
    }
}
pub mod walkthrough;
