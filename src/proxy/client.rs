//! The pooled upstream HTTP client (hyper-util legacy client): connect timeout, pool
//! timer (so idle timeouts apply), idle limit.
//!
//! Two traps this module exists to avoid: hyper-util's legacy client ignores
//! `pool_idle_timeout` unless a `pool_timer` is set (idle connections would then live
//! until the upstream closes them), and `HttpConnector` has no connect timeout by
//! default (a black-holed upstream would hang a request for the OS's SYN timeout).

use std::time::Duration;

use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::proxy::Body;

/// The client type every upstream call uses.
pub type HttpClient = Client<HttpConnector, Body>;

/// Settings of one client (one per upstream); the defaults come from the upstream's
/// config (`connect_timeout` 1s, `pool_idle_timeout` 90s, `pool_max_idle` 64).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// TCP connect timeout; past it the request fails with a connect error.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per host (instance); 0 disables pooling.
    pub pool_max_idle: usize,
}

/// Builds a client: HTTP/1.1 to upstreams, `TCP_NODELAY` (requests are small and
/// latency-bound), connect timeout, pool timer so the idle timeout applies.
///
/// The connector does not insist on an `http` scheme (`enforce_http(false)`): the
/// config decides which URLs are valid, and the client speaks plain TCP to whatever
/// authority it is given (no TLS to upstreams).
pub fn build(settings: &ClientSettings) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(settings.connect_timeout));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(settings.pool_idle_timeout)
        .pool_max_idle_per_host(settings.pool_max_idle)
        .build(connector)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::watch;
    use tokio::time::{timeout, Instant};

    use super::*;
    use crate::proxy::empty;

    /// An in-process upstream that counts accepted and closed connections.
    struct Upstream {
        addr: SocketAddr,
        accepted: Arc<AtomicUsize>,
        closed: watch::Receiver<usize>,
    }

    async fn upstream() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (closed_tx, closed) = watch::channel(0usize);
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let closed_tx = closed_tx.clone();
                tokio::spawn(async move {
                    let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("hello {}", req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    closed_tx.send_modify(|n| *n += 1);
                });
            }
        });
        Upstream {
            addr,
            accepted,
            closed,
        }
    }

    fn settings(idle: Duration) -> ClientSettings {
        ClientSettings {
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: idle,
            pool_max_idle: 8,
        }
    }

    async fn get(client: &HttpClient, url: String) -> (StatusCode, Bytes) {
        let req = Request::get(url).body(empty()).unwrap();
        let resp = client.request(req).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    #[tokio::test]
    async fn gets_from_an_upstream_and_reuses_the_connection() {
        let up = upstream().await;
        let client = build(&settings(Duration::from_secs(90)));
        let (status, body) = get(&client, format!("http://{}/a", up.addr)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello /a");
        let (_, body) = get(&client, format!("http://{}/b?x=1", up.addr)).await;
        assert_eq!(body, "hello /b");
        assert_eq!(
            up.accepted.load(Ordering::SeqCst),
            1,
            "pooled connection reused"
        );
    }

    #[tokio::test]
    async fn idle_pooled_connection_is_closed_after_the_idle_timeout() {
        // Without `pool_timer` this connection would stay open until the deadline.
        let mut up = upstream().await;
        let client = build(&settings(Duration::from_millis(100)));
        get(&client, format!("http://{}/", up.addr)).await;
        let closed = timeout(Duration::from_secs(5), up.closed.wait_for(|n| *n >= 1)).await;
        assert!(closed.is_ok(), "idle connection still open after 5s");
    }

    #[tokio::test]
    async fn connect_to_a_closed_port_fails_fast_with_a_connect_error() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let client = build(&settings(Duration::from_secs(90)));
        let req = Request::get(format!("http://127.0.0.1:{port}/"))
            .body(empty())
            .unwrap();
        let started = Instant::now();
        let result = timeout(Duration::from_secs(4), client.request(req)).await;
        let err = result.expect("refused connect took longer than the 4s deadline");
        let err = err.expect_err("nothing listens on the port");
        assert!(err.is_connect(), "{err:?}");
        // Refused at once, not after the 5s connect timeout.
        assert!(started.elapsed() < Duration::from_secs(4));
    }
}
