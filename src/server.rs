//! The listener loop shared by the client and admin listeners: hyper-util's auto
//! builder (HTTP/1.1 and HTTP/2) with a timer so the header-read timeout applies
//! (`axum::serve` sets none: slowloris), limits on header count and size, a
//! connection limit, optional TLS, a watchdog per connection, and a bounded graceful
//! drain.
//!
//! The watchdog ([`Conn::serve`]) closes a connection whose client sent no byte
//! within `header_read_timeout` of the accept (or of the TLS handshake's end): the
//! auto builder's read that tells HTTP/1 from HTTP/2 has no timeout of its own. It
//! also shuts down gracefully (HTTP/2 `GOAWAY`; HTTP/1.1 closes once idle) a
//! connection with no request being handled and no byte moved for `idle_timeout`.
//! An idle HTTP/1.1 keep-alive connection is closed sooner, by hyper: waiting for
//! the next request's head is bounded by `header_read_timeout`.
//!
//! Upgraded connections (WebSocket) keep their slot and are closed when the drain
//! times out: see [`tunnel`].

mod activity;
pub mod tunnel;

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
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::{headers, Body};
use crate::tls::TlsSource;
use activity::{Activity, InFlight, Watched};
use tunnel::{ClientConn, TunnelSlot};

/// Limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    /// A label for logs (`proxy`, `admin`).
    pub name: &'static str,
    /// Connections served at once (upgraded tunnels included); further ones wait in
    /// the accept queue.
    pub max_connections: usize,
    /// Time to send a request's headers (HTTP/1.1), to send a first byte, to wait
    /// between requests on an HTTP/1.1 keep-alive connection, and to finish the TLS
    /// handshake.
    pub header_read_timeout: Duration,
    /// A connection with no request being handled and no byte moved for this long is
    /// shut down gracefully (HTTP/2 idle connections, chiefly).
    pub idle_timeout: Duration,
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

/// What every connection of a listener shares.
struct Shared {
    builder: auto::Builder<TokioExecutor>,
    name: &'static str,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    /// Cancelled when the drain starts: connections shut down gracefully.
    drain: CancellationToken,
    /// Upgraded tunnels, closed by `close_tunnels` when the drain times out.
    tunnels: TaskTracker,
    close_tunnels: CancellationToken,
}

/// Accepts connections on `listener` until `shutdown`, serving each request with
/// `handler(request, peer)`; then stops accepting and drains open connections (each
/// finishes its in-flight requests; idle keep-alive connections close) for at most
/// `drain_timeout`, after which the rest, upgraded tunnels included, are closed.
pub async fn run<H, F>(
    listener: TcpListener,
    settings: ListenerSettings,
    handler: H,
    shutdown: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let shared = Arc::new(Shared {
        builder: builder(&settings),
        name: settings.name,
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
        drain: CancellationToken::new(),
        tunnels: TaskTracker::new(),
        close_tunnels: CancellationToken::new(),
    });
    let permits = Arc::new(Semaphore::new(settings.max_connections.max(1)));
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
            shared: shared.clone(),
            permit: Arc::new(permit),
        };
        conns.spawn(conn.serve(handler.clone()));
    }
    drop(listener);
    shared.drain.cancel();
    shared.tunnels.close();
    let open = conns.len() + shared.tunnels.len();
    tracing::info!(
        listener = settings.name,
        connections = open,
        "stopped accepting; draining"
    );
    let drained = async {
        while conns.join_next().await.is_some() {}
        shared.tunnels.wait().await;
    };
    if tokio::time::timeout(settings.drain_timeout, drained)
        .await
        .is_ok()
    {
        tracing::info!(listener = settings.name, connections = open, "drained");
        return;
    }
    tracing::warn!(
        listener = settings.name,
        timeout = ?settings.drain_timeout,
        remaining = conns.len() + shared.tunnels.len(),
        "drain timed out; closing the remaining connections"
    );
    conns.abort_all();
    shared.close_tunnels.cancel();
    // The tunnels' tasks end at once when told; bounded all the same.
    let _ = tokio::time::timeout(Duration::from_secs(1), shared.tunnels.wait()).await;
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
    shared: Arc<Shared>,
    /// One of `max_connections`, held until the connection (and its tunnel, if it
    /// upgrades) ends.
    permit: Arc<OwnedSemaphorePermit>,
}

impl Conn {
    async fn serve<H, F>(self, handler: H)
    where
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let (peer, name) = (self.peer, self.shared.name);
        match self.tls.clone() {
            None => {
                let stream = self.stream;
                Self::watch(self.shared, self.permit, false, peer, stream, handler).await
            }
            Some(config) => {
                let accept = tokio_rustls::TlsAcceptor::from(config).accept(self.stream);
                let timeout = self.shared.header_read_timeout;
                let stream = match tokio::time::timeout(timeout, accept).await {
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
                Self::watch(self.shared, self.permit, true, peer, stream, handler).await
            }
        }
    }

    /// Serves the connection under its watchdog (see the module doc).
    async fn watch<S, H, F>(
        shared: Arc<Shared>,
        permit: Arc<OwnedSemaphorePermit>,
        tls: bool,
        peer: SocketAddr,
        stream: S,
        handler: H,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
        let name = shared.name;
        let activity = Activity::new();
        let slot = TunnelSlot::new(permit, shared.tunnels.clone(), shared.close_tunnels.clone());
        let service = {
            let activity = activity.clone();
            service_fn(move |mut req: Request<Incoming>| {
                let in_flight = InFlight::new(&activity);
                let upgrade =
                    headers::is_upgrade(req.headers()) || req.method() == http::Method::CONNECT;
                if tls || upgrade {
                    req.extensions_mut().insert(ClientConn {
                        tls,
                        tunnel: upgrade.then(|| slot.clone()),
                    });
                }
                // Boxed once, here: hyper moves the service future into its
                // per-connection slot, and the handler's future (several KB: the read
                // path, held reads included) would be copied on every move, and kept
                // in that slot's size by every idle keep-alive connection.
                let fut = Box::pin(handler(req, peer));
                async move {
                    let resp = fut.await;
                    drop(in_flight);
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let io = TokioIo::new(Watched::new(stream, activity.clone()));
        let conn = shared.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(conn);
        // A client that sends nothing is closed at the first of the two timeouts.
        let first_byte_by = activity.start() + shared.header_read_timeout.min(shared.idle_timeout);
        let mut check = first_byte_by;
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = conn.as_mut() => break result,
                () = shared.drain.cancelled(), if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = tokio::time::sleep_until(check), if !closing => {
                    let now = Instant::now();
                    if !activity.read_any() {
                        tracing::debug!(listener = name, %peer, "no byte within header_read_timeout; closed");
                        return;
                    }
                    let idle_since = activity.last();
                    if activity.in_flight() > 0 {
                        check = now + shared.idle_timeout;
                    } else if now >= idle_since + shared.idle_timeout {
                        tracing::debug!(listener = name, %peer, "idle for idle_timeout; closing");
                        conn.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        check = idle_since + shared.idle_timeout;
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
        }
    }
}
