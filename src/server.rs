//! The listener loop shared by the client and admin listeners: HTTP/1.1 and HTTP/2
//! with a timer so the header-read timeout applies (`axum::serve` sets none:
//! slowloris), limits on header count and size, a connection limit, optional TLS, a
//! watchdog per connection, and a bounded graceful drain.
//!
//! On plain TCP the protocol is told from the client's first bytes, peeked (left in
//! the socket): the h2c preface goes to hyper's HTTP/2 server, anything else to its
//! HTTP/1.1 server, each given the bare stream. hyper-util's auto builder, used over
//! TLS, reads those bytes itself and replays them through a wrapper on every read,
//! and its first short read made hyper's HTTP/1.1 read buffer double to 16 KiB for
//! the connection's life (8 KiB of each held read's memory).
//!
//! The watchdog ([`Conn::serve`], [`drive`]) closes a connection whose client sent
//! no byte within `header_read_timeout` of the accept (or of the TLS handshake's
//! end): the auto builder's read that tells HTTP/1 from HTTP/2 has no timeout of its
//! own. It closes an HTTP/1.1 connection whose request head is not complete within
//! `header_read_timeout` of hyper starting to read it (the first head, and the wait
//! for each next one on a keep-alive connection): hyper's own timer for that cost a
//! heap allocation and a timer registration per request, so [`head_timer`] has hyper
//! report the deadline to the watchdog instead. It also shuts down gracefully (HTTP/2
//! `GOAWAY`; HTTP/1.1 closes once idle) a connection with no request being handled
//! and no byte moved for `idle_timeout`.
//!
//! Upgraded connections (WebSocket) keep their slot and are closed when the drain
//! times out: see [`tunnel`].

mod activity;
mod arms;
mod head_timer;
pub mod tunnel;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
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
use arms::Arms;
use head_timer::{HeadTimer, Observed};
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
    /// TLS connections (the protocol is read after the handshake).
    builder: auto::Builder<TokioExecutor>,
    /// Plain TCP, once [`sniff`] told the protocol.
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
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
    let (http1, http2) = builders(&settings);
    let shared = Arc::new(Shared {
        builder: builder(&settings),
        http1,
        http2,
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

impl Shared {
    /// A client that sends nothing is closed at the first of the two timeouts.
    fn first_byte_by(&self, activity: &Activity) -> Instant {
        activity.start() + self.header_read_timeout.min(self.idle_timeout)
    }

    /// How often the watchdog looks at least (see [`drive`]).
    fn look_every(&self) -> Duration {
        self.header_read_timeout
            .min(self.idle_timeout / 4)
            .max(Duration::from_millis(1))
    }
}

/// The connection builder with the listener's limits.
fn builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(HeadTimer)
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// The HTTP/1.1 and HTTP/2 builders for plain TCP, with the same limits as
/// [`builder`]'s.
fn builders(settings: &ListenerSettings) -> (http1::Builder, http2::Builder<TokioExecutor>) {
    let mut h1 = http1::Builder::new();
    // One flat write per answer instead of `writev` of the head and the body:
    // measured on fresh reads, 464 fewer instructions and about 3% less CPU per
    // read (load-tests/REPORT.md). Body bytes are copied into hyper's buffer first,
    // which costs little next to the kernel's own copy.
    h1.writev(false)
        .timer(HeadTimer)
        .header_read_timeout(settings.header_read_timeout)
        .max_headers(settings.max_headers)
        .max_buf_size(settings.max_header_bytes.max(8192));
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX));
    (h1, h2)
}

/// The protocol a plain-TCP client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    Http1,
    /// h2c with prior knowledge: the connection preface.
    Http2,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the client's first bytes so far say: `None` while they are a proper prefix of
/// the h2c preface (more are needed).
fn proto_of(first: &[u8]) -> Option<Proto> {
    let n = first.len().min(PREFACE.len());
    if first[..n] != PREFACE[..n] {
        Some(Proto::Http1)
    } else if n == PREFACE.len() {
        Some(Proto::Http2)
    } else {
        None
    }
}

/// Peeks at a plain-TCP client's first bytes (they stay in the socket for the server
/// that takes the connection) until they tell the protocol. `None`: the client closed,
/// sent nothing (or a part of the preface only) within `within`, or the drain began.
async fn sniff(stream: &TcpStream, within: Duration, drain: &CancellationToken) -> Option<Proto> {
    let deadline = Instant::now() + within;
    let mut first = [0u8; PREFACE.len()];
    loop {
        let n = tokio::select! {
            peeked = stream.peek(&mut first) => match peeked {
                Ok(0) | Err(_) => return None,
                Ok(n) => n,
            },
            () = tokio::time::sleep_until(deadline) => return None,
            () = drain.cancelled() => return None,
        };
        if let Some(proto) = proto_of(&first[..n]) {
            return Some(proto);
        }
        // A part of the preface: the socket stays readable while it holds unread
        // bytes, so look again shortly (bounded by the deadline above).
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(1)) => {}
            () = tokio::time::sleep_until(deadline) => return None,
        }
    }
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
                let within = self
                    .shared
                    .header_read_timeout
                    .min(self.shared.idle_timeout);
                let Some(proto) = sniff(&self.stream, within, &self.shared.drain).await else {
                    tracing::debug!(listener = name, %peer, "no request within header_read_timeout; closed");
                    return;
                };
                let stream = self.stream;
                Self::watch(
                    self.shared,
                    self.permit,
                    false,
                    peer,
                    stream,
                    Some(proto),
                    handler,
                )
                .await
            }
            Some(config) => {
                // Boxed: the handshake's state would otherwise size the task of every
                // connection, plain ones included.
                let accept = Box::pin(tokio_rustls::TlsAcceptor::from(config).accept(self.stream));
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
                Self::watch(self.shared, self.permit, true, peer, stream, None, handler).await
            }
        }
    }

    /// Serves the connection under its watchdog (see the module doc), with the server
    /// `proto` names (`None`: the auto builder tells from the first bytes).
    #[allow(clippy::too_many_arguments)]
    async fn watch<S, H, F>(
        shared: Arc<Shared>,
        permit: Arc<OwnedSemaphorePermit>,
        tls: bool,
        peer: SocketAddr,
        stream: S,
        proto: Option<Proto>,
        handler: H,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Body>> + Send + 'static,
    {
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
        // Each arm's connection boxed: it is allocated at the size of the protocol the
        // client speaks (the auto builder's state is far larger than HTTP/1.1's), and
        // the connection task stays small.
        match proto {
            None => {
                let conn = shared.builder.serve_connection_with_upgrades(io, service);
                Box::pin(drive(&shared, &activity, peer, conn, |c| {
                    c.graceful_shutdown()
                }))
                .await
            }
            Some(Proto::Http1) => {
                let conn = shared.http1.serve_connection(io, service).with_upgrades();
                Box::pin(drive(&shared, &activity, peer, conn, |c| {
                    c.graceful_shutdown()
                }))
                .await
            }
            Some(Proto::Http2) => {
                let conn = shared.http2.serve_connection(io, service);
                Box::pin(drive(&shared, &activity, peer, conn, |c| {
                    c.graceful_shutdown()
                }))
                .await
            }
        }
    }
}

/// What woke [`drive`]'s loop.
enum Watch<E> {
    /// The connection ended.
    Ended(Result<(), E>),
    /// The drain began.
    Drain,
    /// The look timer fired.
    Look,
}

/// Drives `conn` to its end under the watchdog: closed when the client sent no byte by
/// the first-byte deadline or did not complete an HTTP/1.1 request head within
/// `header_read_timeout` ([`head_timer`]), shut down gracefully (`shutdown`) when the
/// drain starts or when it has been idle (no request being handled, no byte moved)
/// for `idle_timeout`.
///
/// The watchdog's timer is re-armed when it fires, never per request or per byte. It
/// looks at least every `min(header_read_timeout, idle_timeout / 4)`: every head
/// that starts after a look has its deadline after the next one (which then re-arms
/// at that deadline), and the last movement of bytes is dated to the look that first
/// saw it, so an idle connection is closed between `idle_timeout` and
/// `1.25 × idle_timeout` after its last byte, never before.
async fn drive<C, E>(
    shared: &Shared,
    activity: &Activity,
    peer: SocketAddr,
    conn: C,
    shutdown: fn(std::pin::Pin<&mut C>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let name = shared.name;
    let mut check = shared
        .first_byte_by(activity)
        .min(activity.start() + shared.look_every());
    // The watchdog's arms, polled only when one of them woke the task ([`arms`]), not
    // at every wake of the connection as a `select!` would.
    let arms = Arms::new();
    let drain = shared.drain.cancelled();
    let look = tokio::time::sleep_until(check);
    tokio::pin!(conn, drain, look);
    // Few locals: this future is every connection's (a held HTTP/1.1 read's included).
    let mut closing = false;
    // The movement count at the last look, and since when (nanoseconds from the
    // start) it has not changed.
    let (mut seen_moved, mut idle_since) = (activity.moved(), 0u64);
    let result = loop {
        let event = std::future::poll_fn(|cx| {
            // Keeps `activity`'s head deadline up to date (see [`head_timer`]).
            let mut observed = Observed {
                conn: conn.as_mut(),
                activity,
            };
            if let Poll::Ready(result) = std::pin::Pin::new(&mut observed).poll(cx) {
                return Poll::Ready(Watch::Ended(result));
            }
            // Once closing, the drain and the looks have nothing more to do.
            if closing || !arms.due(cx) {
                return Poll::Pending;
            }
            let mut arm_cx = arms.context();
            if drain.as_mut().poll(&mut arm_cx).is_ready() {
                return Poll::Ready(Watch::Drain);
            }
            if look.as_mut().poll(&mut arm_cx).is_ready() {
                return Poll::Ready(Watch::Look);
            }
            Poll::Pending
        })
        .await;
        match event {
            Watch::Ended(result) => break result,
            Watch::Drain => {
                shutdown(conn.as_mut());
                closing = true;
            }
            Watch::Look => {
                let now = Instant::now();
                if !activity.read_any() && now >= shared.first_byte_by(activity) {
                    tracing::debug!(listener = name, %peer, "no byte within header_read_timeout; closed");
                    return;
                }
                if activity.head().is_some_and(|by| now >= by) {
                    tracing::debug!(listener = name, %peer, "no complete request head within header_read_timeout; closed");
                    return;
                }
                let moved = activity.moved();
                if moved != seen_moved || activity.in_flight() > 0 {
                    seen_moved = moved;
                    idle_since = activity.since_start(now);
                }
                let idle_until =
                    activity.start() + Duration::from_nanos(idle_since) + shared.idle_timeout;
                if now >= idle_until {
                    tracing::debug!(listener = name, %peer, "idle for idle_timeout; closing");
                    shutdown(conn.as_mut());
                    closing = true;
                    continue;
                }
                // Every deadline here is after `now` (each passed one returned above).
                check = (now + shared.look_every()).min(idle_until);
                if !activity.read_any() {
                    check = check.min(shared.first_byte_by(activity));
                }
                if let Some(by) = activity.head() {
                    check = check.min(by);
                }
                look.as_mut().reset(check);
                // The reset timer registers at its next poll.
                arms.rearm();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = name, %peer, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_tell_h2c_from_http1() {
        assert_eq!(proto_of(PREFACE), Some(Proto::Http2));
        assert_eq!(proto_of(b"GET / HTTP/1.1\r\n"), Some(Proto::Http1));
        // POST, PUT and PATCH start like the preface: one more byte tells.
        assert_eq!(proto_of(b"P"), None);
        assert_eq!(proto_of(b"PUT /x HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(proto_of(b"PATCH /x"), Some(Proto::Http1));
        assert_eq!(proto_of(b"PRI * HTTP/2.0\r\n"), None);
        assert_eq!(proto_of(b"PRI * HTTP/1.1\r\n"), Some(Proto::Http1));
        assert_eq!(proto_of(b""), None);
    }
}
