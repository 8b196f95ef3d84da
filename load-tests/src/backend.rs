//! The example CQRS backend (`tidemark::demo`'s command service, projectors and read
//! instances), assembled here so the load tool also knows *when* each read instance
//! applied each position: that is the reference for the wait overhead.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::time::Duration;

use tidemark::demo::command::{self, CommandSide};
use tidemark::demo::instance::ReadInstance;
use tidemark::demo::{instance_name, projector, push, read, PushTarget};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// When an instance's checkpoint reached each value it was seen at, in order.
#[derive(Debug, Default)]
pub struct AppliedLog {
    seen: Mutex<Vec<(u64, Instant)>>,
}

impl AppliedLog {
    /// When the checkpoint first reached `position` or beyond.
    pub fn applied_at(&self, position: u64) -> Option<Instant> {
        let seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let i = seen.partition_point(|(p, _)| *p < position);
        seen.get(i).map(|(_, t)| *t)
    }

    fn push(&self, position: u64, at: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((position, at));
    }
}

/// When each user read (`GET /users/...`) last reached a read instance, by path: with
/// [`AppliedLog`], splits a held read's wait overhead into apply -> arrival at the read
/// instance (push + wake + forward) and the rest (answer back through the gateway).
#[derive(Debug, Default)]
pub struct Arrivals {
    seen: Mutex<HashMap<String, Instant>>,
}

impl Arrivals {
    /// When a read of `path` last arrived.
    pub fn at(&self, path: &str) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
            .copied()
    }

    fn record(&self, path: &str, at: Instant) {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), at);
    }
}

async fn record_arrival(
    State(arrivals): State<Arc<Arrivals>>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() == http::Method::GET && req.uri().path().starts_with("/users/") {
        arrivals.record(req.uri().path(), Instant::now());
    }
    next.run(req).await
}

/// A running backend.
pub struct Backend {
    /// Command service.
    pub command: SocketAddr,
    /// Read instances `r0`, `r1`, ...
    pub reads: Vec<SocketAddr>,
    /// Per instance: when each checkpoint was applied.
    pub applied: Vec<Arc<AppliedLog>>,
    /// When user reads reached the read instances (all instances together).
    pub arrivals: Arc<Arrivals>,
    instances: Vec<Arc<ReadInstance>>,
    shutdown: CancellationToken,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Backend {
    /// Starts the command service and `instances` read instances on 127.0.0.1:0, each
    /// applying events `lag` after their commit and pushing its checkpoint to every
    /// gateway admin URL in `push_to` (projection `users`).
    pub async fn start(
        lag: Duration,
        instances: usize,
        push_to: Vec<SocketAddr>,
    ) -> std::io::Result<Backend> {
        let shutdown = CancellationToken::new();
        let mut feeds = Vec::new();
        let mut reads = Vec::new();
        let mut applied = Vec::new();
        let mut all = Vec::new();
        let arrivals = Arc::new(Arrivals::default());
        for index in 0..instances {
            let instance = Arc::new(ReadInstance::new(instance_name(index)));
            let (feed, events) = mpsc::unbounded_channel();
            feeds.push(feed);
            tokio::spawn(projector::run(
                instance.clone(),
                lag,
                events,
                shutdown.clone(),
            ));
            for admin in &push_to {
                let target = PushTarget {
                    admin_url: format!("http://{admin}"),
                    projection: "users".into(),
                    admin_token: None,
                };
                tokio::spawn(push::run(
                    target,
                    instance.name().to_owned(),
                    instance.subscribe(),
                    shutdown.clone(),
                ));
            }
            let log = Arc::new(AppliedLog::default());
            tokio::spawn(record(instance.subscribe(), log.clone(), shutdown.clone()));
            applied.push(log);
            let listener = listen()?;
            reads.push(listener.local_addr()?);
            let app = read::router(instance.clone(), false).layer(
                axum::middleware::from_fn_with_state(arrivals.clone(), record_arrival),
            );
            serve(listener, app, &shutdown);
            all.push(instance);
        }
        let side = Arc::new(CommandSide::new(feeds));
        let listener = listen()?;
        let command = listener.local_addr()?;
        serve(listener, command::router(side), &shutdown);
        Ok(Backend {
            command,
            reads,
            applied,
            arrivals,
            instances: all,
            shutdown,
        })
    }

    /// User reads served by all read instances together.
    pub fn served(&self) -> u64 {
        self.instances.iter().map(|i| i.served()).sum()
    }
}

async fn record(
    mut checkpoints: tokio::sync::watch::Receiver<u64>,
    log: Arc<AppliedLog>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            changed = checkpoints.changed() => if changed.is_err() { return },
        }
        let position = *checkpoints.borrow_and_update();
        log.push(position, Instant::now());
    }
}

/// A loopback listener with a deep accept queue: a released burst of held reads makes
/// the gateway open thousands of upstream connections at once, and tokio's default
/// backlog (1024) would drop SYNs that then retry only after a second.
fn listen() -> std::io::Result<TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(65_535)
}

fn serve(listener: TcpListener, app: axum::Router, shutdown: &CancellationToken) {
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await;
    });
}
