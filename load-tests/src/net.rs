//! Loopback-only connections and a small one-shot HTTP/1.1 client.
//!
//! Every connection the tool opens goes through [`connect`], which refuses any
//! address outside 127.0.0.0/8 and ::1: this tool generates load, and load belongs
//! on this machine only.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpSocket, TcpStream};

/// A request sender on one HTTP/1.1 connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The target is not a loopback address.
    #[error("refusing non-loopback address {0}: load tests target 127.0.0.0/8 or ::1 only")]
    NotLoopback(SocketAddr),
    /// Connecting failed.
    #[error("connect to {addr} failed")]
    Connect {
        /// The target.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange failed")]
    Http(#[from] hyper::Error),
    /// Building the request failed.
    #[error("bad request")]
    Build(#[from] http::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Refuses anything but 127.0.0.0/8 and ::1.
pub fn ensure_loopback(addr: SocketAddr) -> Result<(), NetError> {
    match addr.ip() {
        IpAddr::V4(v4) if v4.octets()[0] == 127 => Ok(()),
        IpAddr::V6(v6) if v6.is_loopback() => Ok(()),
        _ => Err(NetError::NotLoopback(addr)),
    }
}

/// Connects to `addr` (loopback only), from source address `127.0.0.<source>` when
/// `source` is given (each source address has its own ephemeral port range, so more
/// than ~28,000 connections to one port are possible).
pub async fn connect_tcp(addr: SocketAddr, source: Option<u8>) -> Result<TcpStream, NetError> {
    ensure_loopback(addr)?;
    let err = |source| NetError::Connect { addr, source };
    let stream = match (source, addr) {
        (Some(last), SocketAddr::V4(_)) => {
            let socket = TcpSocket::new_v4().map_err(err)?;
            socket
                .bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
                .map_err(err)?;
            socket.connect(addr).await.map_err(err)?
        }
        _ => TcpStream::connect(addr).await.map_err(err)?,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Opens an HTTP/1.1 connection; its driver runs as a task until the connection ends.
pub async fn connect(addr: SocketAddr, source: Option<u8>) -> Result<Sender, NetError> {
    let stream = connect_tcp(addr, source).await?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// A request sender on one HTTP/2 (h2c, prior knowledge) connection; clones share it.
pub type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Opens an h2c connection (many concurrent requests on one socket).
pub async fn connect_h2(addr: SocketAddr, source: Option<u8>) -> Result<H2Sender, NetError> {
    let stream = connect_tcp(addr, source).await?;
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Sends `req` on an h2 connection and reads the whole answer within `timeout`.
pub async fn send_h2(
    sender: &mut H2Sender,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Reply, NetError> {
    let exchange = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(NetError::Timeout(timeout)),
    }
}

/// A whole response.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl Reply {
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (Null if it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Builds a request for `path` with the given headers and body.
pub fn build(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Request<Full<Bytes>>, NetError> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Ok(req.body(Full::new(body))?)
}

/// Sends `req` on `sender` and reads the whole answer within `timeout`.
pub async fn send(
    sender: &mut Sender,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Reply, NetError> {
    let exchange = async {
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok::<_, hyper::Error>(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => Ok(r?),
        Err(_) => Err(NetError::Timeout(timeout)),
    }
}

/// One request on a fresh connection (setup steps, admin calls): 10 s bound.
pub async fn once(
    method: Method,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Result<Reply, NetError> {
    let timeout = Duration::from_secs(10);
    let mut sender = tokio::time::timeout(timeout, connect(addr, None))
        .await
        .map_err(|_| NetError::Timeout(timeout))??;
    let req = build(method, addr, path, headers, body.into())?;
    send(&mut sender, req, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_allowed() {
        let ok = ["127.0.0.1:80", "127.3.2.1:8080", "[::1]:80"];
        for a in ok {
            assert!(ensure_loopback(a.parse().unwrap()).is_ok(), "{a}");
        }
        let refused = [
            "10.0.0.1:80",
            "0.0.0.0:80",
            "192.168.1.2:80",
            "[::]:80",
            "8.8.8.8:53",
        ];
        for a in refused {
            assert!(ensure_loopback(a.parse().unwrap()).is_err(), "{a}");
        }
    }
}
