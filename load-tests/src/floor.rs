//! `tidemark-load floor-proxy`: the least an HTTP proxy built on tidemark's stack can
//! cost. hyper's HTTP/1.1 server (what tidemark's client listener hands a plain-TCP
//! HTTP/1.1 connection to, after peeking at its first bytes) in front of a pool of
//! `hyper::client::conn::http1` connections; no routing, no header rewriting, no
//! tokens, no metrics, no logging. The fresh-read scenario runs it
//! pinned to the proxies' core as the `hyper-floor` target: the gap between it and
//! nginx is the stack's, the gap between tidemark and it is tidemark's own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Settings of the floor proxy.
#[derive(Debug, Clone, clap::Args)]
pub struct FloorArgs {
    /// Where it listens (loopback only).
    #[arg(long)]
    pub listen: SocketAddr,
    /// The one upstream it forwards to (loopback only).
    #[arg(long)]
    pub upstream: SocketAddr,
}

/// Idle upstream connections.
struct Pool {
    upstream: SocketAddr,
    host: HeaderValue,
    idle: Mutex<Vec<SendRequest<Body>>>,
}

impl Pool {
    async fn checkout(&self) -> Result<SendRequest<Body>, BoxError> {
        loop {
            let popped = self.idle.lock().map_err(|_| "pool poisoned")?.pop();
            match popped {
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        return Ok(s);
                    }
                }
                None => break,
            }
        }
        let stream = TcpStream::connect(self.upstream).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// An upstream response body that returns its connection to the pool at its end.
struct Returning {
    inner: Incoming,
    back: Option<(SendRequest<Body>, Arc<Pool>)>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if done {
            if let Some((sender, pool)) = self.back.take() {
                if let Ok(mut idle) = pool.idle.lock() {
                    idle.push(sender);
                }
            }
        }
        polled.map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

async fn forward(pool: Arc<Pool>, req: Request<Incoming>) -> Response<Body> {
    match try_forward(pool, req).await {
        Ok(resp) => resp,
        Err(e) => {
            let mut resp = Response::new(
                Empty::new()
                    .map_err(|e: Infallible| -> BoxError { match e {} })
                    .boxed_unsync(),
            );
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            eprintln!("floor-proxy: {e}");
            resp
        }
    }
}

async fn try_forward(pool: Arc<Pool>, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    parts.uri = Uri::try_from(pq)?;
    parts.version = http::Version::HTTP_11;
    parts.headers.insert(http::header::HOST, pool.host.clone());
    let req = Request::from_parts(parts, body.map_err(Into::into).boxed_unsync());
    let mut sender = pool.checkout().await?;
    let resp = sender.send_request(req).await?;
    let back = Some((sender, pool));
    Ok(resp.map(|inner| Returning { inner, back }.boxed_unsync()))
}

/// Serves until killed.
pub async fn run(args: FloorArgs) -> Result<(), String> {
    for addr in [args.listen, args.upstream] {
        if !addr.ip().is_loopback() {
            return Err(format!("{addr} is not a loopback address"));
        }
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("bind {}: {e}", args.listen))?;
    let pool = Arc::new(Pool {
        upstream: args.upstream,
        host: HeaderValue::from_str(&args.upstream.to_string()).map_err(|e| e.to_string())?,
        idle: Mutex::new(Vec::new()),
    });
    // The hyper settings tidemark uses on plain TCP (flat writes, both sides), so
    // the floor stays the least its stack can cost.
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.writev(false);
    let builder = Arc::new(builder);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                eprintln!("floor-proxy: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let builder = builder.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let pool = pool.clone();
                async move { Ok::<_, Infallible>(forward(pool, req).await) }
            });
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}
