//! The upstream HTTP/1.1 client: one connection pool per instance, over hyper's
//! connection API (`hyper::client::conn::http1`), over TCP or TLS (`https://`
//! instances, [`tls`]).
//!
//! A request takes a permit of the instance's cap (`max_connections`; past it,
//! requests wait first come first served, counted by
//! `tidemark_upstream_queued_requests`), then the most recently used idle connection
//! that is still open and ready, else a new one (`connect_timeout`, `TCP_NODELAY`).
//! The connection and the permit travel with the response body ([`PooledBody`]):
//! read to its end, the connection goes back to the idle list; dropped early, failed
//! or upgraded (or answered before the request body was sent whole), it is closed. Idle connections are closed after `pool_idle_timeout`
//! (a reaper task per pool, holding the pool only weakly) and at most
//! `pool_max_idle` are kept.
//!
//! Per request, no hashing, no URI parsing beyond joining the base path, and no task:
//! what can be is computed once per instance ([`Target`]).

mod body;
mod pool;
#[cfg(test)]
mod tests;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use http::uri::{Authority, InvalidUri, PathAndQuery};
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use body::TrackedBody;
pub use body::{Outstanding, PooledBody};
use pool::{Busy, Conn, Shared};

use crate::proxy::Body;

/// Settings of one instance's pool; the defaults come from the upstream's config
/// (`connect_timeout` 3s, `pool_idle_timeout` 90s, `pool_max_idle` 64,
/// `max_connections` 256).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// TCP connect timeout (and, for TLS, the handshake's); past it the request
    /// fails with a connect error.
    pub connect_timeout: Duration,
    /// The TLS client config for `https://` instances (`None`: plain HTTP only).
    pub tls: Option<Arc<tokio_rustls::rustls::ClientConfig>>,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept; 0 disables pooling.
    pub pool_max_idle: usize,
    /// Most connections open at once (busy and idle); further requests queue.
    pub max_connections: usize,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The request's path and the instance's base path make no valid URI.
    #[error("cannot build the upstream URI")]
    Uri(#[source] InvalidUri),
    /// The TCP connection was refused or could not be made.
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    /// The TCP connection was not made within `connect_timeout`.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (an untrusted certificate, a wrong host name...).
    #[error("TLS handshake failed")]
    Tls(#[source] std::io::Error),
    /// The exchange failed once the connection was made (reset, malformed
    /// response, closed before the response).
    #[error("the HTTP/1.1 exchange failed")]
    Http(#[source] hyper::Error),
    /// The pool's semaphore was closed (never, in practice).
    #[error("the connection pool is closed")]
    PoolClosed,
}

impl SendError {
    /// A connect failure or timeout (the request never reached the upstream).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::Tls(_)
        )
    }

    /// The connection failed before any response byte: a connect failure or
    /// timeout, or a connection closed or reset before the response began. The
    /// instance is then ejected, and an idempotent read may be retried elsewhere.
    pub fn connection_failed(&self) -> bool {
        match self {
            SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::Tls(_) => true,
            SendError::Http(e) => {
                e.is_incomplete_message() || e.is_canceled() || io_reset(e).is_some()
            }
            SendError::Uri(_) | SendError::PoolClosed => false,
        }
    }
}

/// The reset, abort or broken pipe under a hyper error, if that is what it is.
fn io_reset(e: &hyper::Error) -> Option<std::io::ErrorKind> {
    use std::error::Error as _;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
            .then_some(io.kind());
        }
        source = s.source();
    }
    None
}

/// What every request to an instance carries, computed once.
#[derive(Debug)]
struct Target {
    /// Host to connect to (IPv6 without brackets) and port (80, or 443 for
    /// `https`, when absent).
    host: String,
    port: u16,
    /// An `https://` instance.
    https: bool,
    /// `https://`: the TLS client config and the name sent (SNI) and verified.
    tls: Option<(Arc<tokio_rustls::rustls::ClientConfig>, ServerName<'static>)>,
    /// `Host` header: the authority (port omitted when the scheme's default).
    host_header: HeaderValue,
    /// For `CONNECT`, sent in authority form.
    authority: Option<Authority>,
    /// The base path without its trailing `/` (empty for none).
    base_path: String,
}

impl Target {
    fn new(base: &Uri, tls: Option<&Arc<tokio_rustls::rustls::ClientConfig>>) -> Target {
        let host = base.host().unwrap_or("localhost");
        let https = base.scheme_str() == Some("https");
        let default_port = if https { 443 } else { 80 };
        let header = match base.port_u16() {
            Some(port) if port != default_port => format!("{host}:{port}"),
            _ => host.to_string(),
        };
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let tls = match (https, tls) {
            (true, Some(config)) => ServerName::try_from(bare.to_string())
                .ok()
                .map(|name| (config.clone(), name)),
            _ => None,
        };
        Target {
            host: bare.to_string(),
            port: base.port_u16().unwrap_or(default_port),
            https,
            tls,
            host_header: HeaderValue::from_str(&header)
                .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
            authority: base.authority().cloned(),
            base_path: base.path().trim_end_matches('/').to_string(),
        }
    }

    /// Origin-form URI (base path, then the request's path and query) and `Host`
    /// (the instance's, whatever the request carried).
    fn prepare(&self, req: &mut Request<Body>) -> Result<(), InvalidUri> {
        let uri = match (req.method(), &self.authority) {
            (&Method::CONNECT, Some(authority)) => Uri::from(authority.clone()),
            _ => upstream_uri(&self.base_path, req.uri().path_and_query())?,
        };
        *req.uri_mut() = uri;
        crate::proxy::headers::set_host(req.headers_mut(), &self.host_header);
        Ok(())
    }
}

/// The origin-form URI sent upstream: `base_path` (no trailing `/`) followed by the
/// request's path and query (`/` when it has none).
pub fn upstream_uri(base_path: &str, pq: Option<&PathAndQuery>) -> Result<Uri, InvalidUri> {
    match pq {
        Some(pq) if base_path.is_empty() => Ok(Uri::from(pq.clone())),
        None if base_path.is_empty() => Ok(Uri::from_static("/")),
        pq => {
            let pq = pq.map(PathAndQuery::as_str).unwrap_or("/");
            Uri::try_from(format!("{base_path}{pq}"))
        }
    }
}

/// The connection pool of one upstream instance.
#[derive(Debug)]
pub struct Pool {
    shared: Arc<Shared>,
    target: Target,
}

impl Pool {
    /// A pool for the instance at `base` (scheme, authority, optional base path).
    /// `queued` is the upstream's `tidemark_upstream_queued_requests` gauge.
    pub fn new(base: &Uri, settings: ClientSettings, queued: metrics::Gauge) -> Pool {
        Pool {
            target: Target::new(base, settings.tls.as_ref()),
            shared: Arc::new(Shared::new(settings, queued)),
        }
    }

    /// Sends `req` (its path and query are kept, its URI and `Host` set for the
    /// instance) and returns the response with its body streamed. Waits for a free
    /// connection when `max_connections` are busy: bound the whole call with the
    /// upstream's `timeout`. A request found not sent on a stale idle connection is
    /// sent again, once, on a new connection.
    ///
    /// Not an `async fn`: the request is prepared here and the future captures it
    /// once (an `async fn` keeps its argument and the local it is moved into both,
    /// 2 x 240 bytes, in a future every forwarded request allocates).
    pub fn send(
        &self,
        mut req: Request<Body>,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, SendError>> + Send + '_
    {
        let prepared = self.target.prepare(&mut req);
        let upgrade_method = req.method() == Method::CONNECT;
        let sent = if req.body().is_end_stream() {
            None
        } else {
            let (parts, body) = req.into_parts();
            let (body, sent) = TrackedBody::new(body);
            req = Request::from_parts(parts, body.boxed_unsync());
            Some(sent)
        };
        async move {
            prepared.map_err(SendError::Uri)?;
            let permit = self.shared.acquire().await?;
            let (mut busy, reused) = match self.shared.checkout(permit).await {
                Ok(busy) => (busy, true),
                // Connecting and resending are boxed: the rare paths stay out of the
                // future every request carries (and that the gateway allocates).
                Err(Some(permit)) => (Box::pin(self.connect(permit)).await?, false),
                Err(None) => (
                    Box::pin(self.connect(self.shared.acquire().await?)).await?,
                    false,
                ),
            };
            let Some(sender) = busy.sender() else {
                return Err(SendError::PoolClosed);
            };
            let tried = sender.try_send_request(req).await;
            let (busy, resp) = match tried {
                Ok(resp) => (busy, resp),
                Err(e) => self.after_failed_send(busy, reused, e)?.await?,
            };
            let upgraded = resp.status() == StatusCode::SWITCHING_PROTOCOLS
                || (upgrade_method && resp.status().is_success());
            let reusable = !upgraded && !closes(&resp);
            Ok(resp.map(|body| PooledBody::new(body, busy, reusable, sent)))
        }
    }

    /// After a send that failed on `busy`: when the connection was a reused idle one
    /// that closed before the request was written, the resend of the request on a
    /// new connection (boxed, and made here, so the failed send, its error and the
    /// request taken back from it stay out of [`Pool::send`]'s future); else the
    /// error.
    #[allow(clippy::type_complexity)]
    fn after_failed_send(
        &self,
        busy: Busy,
        reused: bool,
        mut failed: hyper::client::conn::TrySendError<Request<Body>>,
    ) -> Result<
        std::pin::Pin<
            Box<
                impl std::future::Future<
                        Output = Result<(Busy, Response<hyper::body::Incoming>), SendError>,
                    > + Send
                    + '_,
            >,
        >,
        SendError,
    > {
        match (reused, failed.take_message()) {
            // The idle connection closed before the request was written.
            (true, Some(req)) => Ok(Box::pin(self.resend(busy, req))),
            _ => Err(SendError::Http(failed.into_error())),
        }
    }

    /// Sends `req` again on a new connection, with the permit of `busy` (whose idle
    /// connection turned out closed).
    async fn resend(
        &self,
        busy: Busy,
        req: Request<Body>,
    ) -> Result<(Busy, Response<hyper::body::Incoming>), SendError> {
        let permit = match busy.into_permit() {
            Some(permit) => permit,
            None => self.shared.acquire().await?,
        };
        let mut busy = self.connect(permit).await?;
        let Some(sender) = busy.sender() else {
            return Err(SendError::PoolClosed);
        };
        let resp = sender.send_request(req).await.map_err(SendError::Http)?;
        Ok((busy, resp))
    }

    /// A new connection with `permit`; its task (with upgrades) runs on its own.
    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Busy, SendError> {
        let within = self.shared.settings.connect_timeout;
        let addr = (self.target.host.as_str(), self.target.port);
        let stream = match tokio::time::timeout(within, TcpStream::connect(addr)).await {
            Err(_) => return Err(SendError::ConnectTimeout(within)),
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Ok(Ok(stream)) => stream,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY not set on an upstream connection");
        }
        let conn = match &self.target.tls {
            None if self.target.https => {
                return Err(SendError::Tls(std::io::Error::other(
                    "no TLS client config for this https:// instance (its host is not a valid server name)",
                )))
            }
            None => start(stream).await?,
            Some((config, name)) => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let handshake = connector.connect(name.clone(), stream);
                match tokio::time::timeout(within, handshake).await {
                    Err(_) => return Err(SendError::ConnectTimeout(within)),
                    Ok(Err(e)) => return Err(SendError::Tls(e)),
                    Ok(Ok(stream)) => start(stream).await?,
                }
            }
        };
        Ok(Busy::new(conn, permit, self.shared.clone()))
    }
}

/// The HTTP/1.1 handshake on `io`; the connection's task (with upgrades) runs on its
/// own.
async fn start<IO>(io: IO) -> Result<Conn, SendError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Flat writes, as the server side (see `server::builders`): 293 fewer
    // instructions per proxied read.
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(io))
        .await
        .map_err(SendError::Http)?;
    let (conn_handle, closed) = Conn::new(sender);
    tokio::spawn(async move {
        let _closed = closed;
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(conn_handle)
}

/// The response says the upstream closes the connection after it (`Connection:
/// close`, or HTTP/1.0 without keep-alive): not worth putting back.
fn closes<B>(resp: &Response<B>) -> bool {
    let (mut close, mut keep_alive) = (false, false);
    // A scan, not a lookup: the answer has a handful of headers.
    let lines = resp.headers().iter();
    for (_, line) in lines.filter(|(k, _)| **k == http::header::CONNECTION) {
        for item in line.as_bytes().split(|b| *b == b',') {
            let item = item.trim_ascii();
            close |= item.eq_ignore_ascii_case(b"close");
            keep_alive |= item.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if resp.version() == http::Version::HTTP_10 {
        !keep_alive
    } else {
        close
    }
}
