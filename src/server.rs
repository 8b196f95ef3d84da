//! The listener loop shared by the client and admin listeners: hyper-util's auto
//! builder (HTTP/1.1 and h2c) with a timer so the header-read timeout applies
//! (`axum::serve` sets none: slowloris), a connection limit, and a bounded graceful
//! drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::proxy::Body;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// A label for logs (`proxy`, `admin`).
    pub name: &'static str,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_headers: usize,
    pub drain_timeout: Duration,
}

/// Accepts connections on `listener` until `shutdown`, serving each request with
/// `handler(request, peer)`; then drains open connections for at most
/// `drain_timeout`.
pub async fn run<H, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(settings.max_headers);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();

    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: log, back off briefly, go on.
                    tracing::warn!(listener = settings.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let name = settings.name;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let open = graceful.count();
    tokio::select! {
        _ = graceful.shutdown() => {
            tracing::info!(listener = settings.name, connections = open, "drained");
        }
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!(
                listener = settings.name,
                timeout = ?settings.drain_timeout,
                "drain timed out; closing the remaining connections"
            );
        }
    }
}
