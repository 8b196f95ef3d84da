//! The listener loop shared by the client and admin listeners: hyper-util's auto
//! builder (HTTP/1.1 and HTTP/2) with a timer so the header-read timeout applies
//! (`axum::serve` sets none: slowloris), limits on header count and size, a
//! connection limit, optional TLS, and a bounded graceful drain.

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
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;

use crate::proxy::Body;
use crate::tls::TlsSource;

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// A label for logs (`proxy`, `admin`).
    pub name: &'static str,
    /// Connections served at once; further ones wait in the accept queue.
    pub max_connections: usize,
    /// Time to send a request's headers (HTTP/1.1), and to finish the TLS handshake.
    pub header_read_timeout: Duration,
    /// Request headers accepted (count); past it `431`.
    pub max_headers: usize,
    /// Bytes of a request head (HTTP/1.1 read buffer, HTTP/2 header list); past it
    /// `431`. At least 8192.
    pub max_header_bytes: usize,
    /// Longest the drain waits for open connections before closing them.
    pub drain_timeout: Duration,
    /// TLS config read per accepted connection; `None` (or an empty source): plain.
    pub tls: Option<TlsSource>,
}

/// Accepts connections on `listener` until `shutdown`, serving each request with
/// `handler(request, peer)`; then stops accepting and drains open connections (each
/// finishes its in-flight requests; idle keep-alive connections close) for at most
/// `drain_timeout`, after which the rest are closed.
pub async fn run<H, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let builder = Arc::new(builder(&settings));
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();

    loop {
        // Reap finished connection tasks so the set stays as small as the open set.
        while conns.try_join_next().is_some() {}
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
        let conn = Conn {
            stream,
            peer,
            tls: settings.tls.as_ref().and_then(|t| t.load_full()),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            name: settings.name,
            handshake_timeout: settings.header_read_timeout,
            _permit: permit,
        };
        conns.spawn(conn.serve(handler.clone()));
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        listener = settings.name,
        connections = open,
        "stopped accepting; draining"
    );
    tokio::select! {
        _ = graceful.shutdown() => {
            tracing::info!(listener = settings.name, connections = open, "drained");
        }
        _ = tokio::time::sleep(settings.drain_timeout) => {
            tracing::warn!(
                listener = settings.name,
                timeout = ?settings.drain_timeout,
                remaining = conns.len(),
                "drain timed out; closing the remaining connections"
            );
        }
    }
    conns.abort_all();
}

/// The connection builder with the listener's limits.
fn builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// One accepted connection, before its (optional) TLS handshake.
struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
    name: &'static str,
    handshake_timeout: Duration,
    /// One of `max_connections`, held until the connection ends.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    async fn serve<H, F>(self, handler: H)
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let (peer, name) = (self.peer, self.name);
        let service = service_fn(move |req: Request<Incoming>| {
            let fut = handler(req, peer);
            async move { Ok::<_, Infallible>(fut.await) }
        });
        let result = match self.tls {
            None => {
                let conn = self
                    .builder
                    .serve_connection_with_upgrades(TokioIo::new(self.stream), service)
                    .into_owned();
                self.watcher.watch(conn).await
            }
            Some(config) => {
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(self.stream);
                let stream = match tokio::time::timeout(self.handshake_timeout, accept).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = name, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(listener = name, %peer, "TLS handshake timed out");
                        return;
                    }
                };
                let conn = self
                    .builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                self.watcher.watch(conn).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
        }
    }
}
