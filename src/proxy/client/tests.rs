//! The pool against real upstreams on 127.0.0.1:0: reuse, the cap and its queue,
//! connections the upstream closes, bodies dropped half-read, upgrades, the idle
//! timeout, connect failures.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout, Instant};

use super::*;
use crate::proxy::{boxed, empty, BoxError};

/// Deadline of every wait on a condition.
const DEADLINE: Duration = Duration::from_secs(10);

/// An in-process HTTP/1.1 upstream that counts its connections.
///
/// Paths: `/hold` answers once `release` is set; `/close` answers with
/// `Connection: close`; `/big` streams 1 MiB; `/upgrade` switches protocols and
/// echoes bytes; anything else answers `METHOD URI host=HOST`.
struct Upstream {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    max_open: Arc<AtomicUsize>,
    closed: watch::Receiver<usize>,
    held: watch::Receiver<usize>,
    release: watch::Sender<bool>,
}

type Resp = Response<http_body_util::combinators::BoxBody<Bytes, Infallible>>;

async fn answer(
    mut req: Request<Incoming>,
    held: watch::Sender<usize>,
    mut release: watch::Receiver<bool>,
) -> Result<Resp, Infallible> {
    let text = |s: String| Full::new(Bytes::from(s)).boxed();
    match req.uri().path() {
        "/hold" => {
            held.send_modify(|n| *n += 1);
            let _ = release.wait_for(|r| *r).await;
            held.send_modify(|n| *n -= 1);
            Ok(Response::new(text("held".into())))
        }
        "/close" => {
            let mut resp = Response::new(text("closing".into()));
            resp.headers_mut()
                .insert("connection", http::HeaderValue::from_static("close"));
            Ok(resp)
        }
        "/big" => {
            let chunks = (0..64u8)
                .map(|i| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![i; 16 * 1024]))));
            let body = StreamBody::new(futures_util::stream::iter(chunks));
            Ok(Response::new(body.boxed()))
        }
        "/upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = on.await else { return };
                let mut io = TokioIo::new(upgraded);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
            let mut resp = Response::new(text(String::new()));
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = resp.headers_mut();
            h.insert("connection", http::HeaderValue::from_static("upgrade"));
            h.insert("upgrade", http::HeaderValue::from_static("echo"));
            Ok(resp)
        }
        _ => {
            let host = req
                .headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("-");
            Ok(Response::new(text(format!(
                "{} {} host={host}",
                req.method(),
                req.uri()
            ))))
        }
    }
}

async fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let open = Arc::new(AtomicUsize::new(0));
    let max_open = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = watch::channel(0usize);
    let (held_tx, held) = watch::channel(0usize);
    let (release, release_rx) = watch::channel(false);
    let (a, o, m) = (accepted.clone(), open.clone(), max_open.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let now_open = o.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now_open, Ordering::SeqCst);
            let (closed_tx, held_tx, release_rx, o) = (
                closed_tx.clone(),
                held_tx.clone(),
                release_rx.clone(),
                o.clone(),
            );
            tokio::spawn(async move {
                let service =
                    service_fn(move |req| answer(req, held_tx.clone(), release_rx.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
                o.fetch_sub(1, Ordering::SeqCst);
                closed_tx.send_modify(|n| *n += 1);
            });
        }
    });
    Upstream {
        addr,
        accepted,
        max_open,
        closed,
        held,
        release,
    }
}

fn settings(idle: Duration) -> ClientSettings {
    ClientSettings {
        tls: None,
        connect_timeout: Duration::from_secs(5),
        pool_idle_timeout: idle,
        pool_max_idle: 8,
        max_connections: 256,
    }
}

fn pool_to(base: String, settings: ClientSettings) -> Pool {
    let base: Uri = base.parse().unwrap();
    Pool::new(&base, settings, metrics::gauge!("test_queued"))
}

fn request(path: &str) -> Request<Body> {
    Request::get(path).body(empty()).unwrap()
}

async fn get(pool: &Pool, path: &str) -> (StatusCode, Bytes) {
    let resp = timeout(DEADLINE, pool.send(request(path)))
        .await
        .expect("response within the deadline")
        .expect("request succeeds");
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// Waits until `cond` holds, checking every millisecond, failing after [`DEADLINE`].
async fn wait_until<F: FnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(DEADLINE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

#[tokio::test]
async fn sequential_requests_reuse_one_connection_in_origin_form_with_host() {
    let up = upstream().await;
    let pool = pool_to(
        format!("http://{}", up.addr),
        settings(Duration::from_secs(90)),
    );
    let (status, body) = get(&pool, "/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("GET /a host={}", up.addr));
    let (_, body) = get(&pool, "http://client.example/b?x=1").await;
    assert_eq!(body, format!("GET /b?x=1 host={}", up.addr));
    let (_, body) = get(&pool, "/c").await;
    assert_eq!(body, format!("GET /c host={}", up.addr));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 1, "connection reused");
    assert_eq!(pool.shared.free_permits(), 256);

    // The base path is prefixed; the Host header has no default port.
    let pool = pool_to(
        format!("http://{}/api/", up.addr),
        settings(Duration::from_secs(90)),
    );
    let (_, body) = get(&pool, "/c?y").await;
    assert_eq!(body, format!("GET /api/c?y host={}", up.addr));
    let t = Target::new(&"http://example.com:80/x".parse().unwrap(), None);
    assert_eq!(
        (t.host_header.to_str().unwrap(), t.port),
        ("example.com", 80)
    );
    let t = Target::new(&"http://[::1]:8080".parse().unwrap(), None);
    assert_eq!(
        (t.host.as_str(), t.host_header.to_str().unwrap()),
        ("::1", "[::1]:8080")
    );
}

#[tokio::test]
async fn at_most_max_connections_are_open_and_the_rest_queue() {
    let mut up = upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.max_connections = 2;
    let pool = pool_to(format!("http://{}", up.addr), s);
    let all = futures_util::future::join_all((0..20).map(|_| get(&pool, "/hold")));
    let release = up.release.clone();
    let mut held = up.held.clone();
    let watcher = async {
        within("two held requests", held.wait_for(|n| *n == 2))
            .await
            .unwrap();
        // Both permits are taken: the other 18 requests are queued.
        assert_eq!(pool.shared.free_permits(), 0);
        release.send_replace(true);
    };
    let (results, ()) = tokio::join!(all, watcher);
    for (status, body) in results {
        assert_eq!((status, body), (StatusCode::OK, Bytes::from("held")));
    }
    assert_eq!(up.max_open.load(Ordering::SeqCst), 2, "cap exceeded");
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2, "connections reused");
    assert_eq!(pool.shared.free_permits(), 2);
    assert_eq!(*up.closed.borrow_and_update(), 0);
}

#[tokio::test]
async fn a_connection_the_upstream_closes_is_not_reused() {
    let up = upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.max_connections = 1;
    let pool = pool_to(format!("http://{}", up.addr), s);
    let (status, body) = get(&pool, "/close").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("closing")));
    // The permit is parked until the connection is closed, then freed.
    wait_until("permit freed", || pool.shared.free_permits() == 1).await;
    assert_eq!(
        pool.shared.idle_count(),
        0,
        "a closing connection went idle"
    );
    let (status, _) = get(&pool, "/a").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

/// An upstream that answers one request per connection and then, once `close` is
/// set, closes it without saying so (as one does at its keep-alive timeout).
async fn one_shot_upstream() -> (SocketAddr, watch::Sender<bool>, watch::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (closed_tx, closed) = watch::channel(0usize);
    let (close, close_rx) = watch::channel(false);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (closed_tx, mut close_rx) = (closed_tx.clone(), close_rx.clone());
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                let _ = close_rx.wait_for(|c| *c).await;
                drop(sock);
                closed_tx.send_modify(|n| *n += 1);
            });
        }
    });
    (addr, close, closed)
}

#[tokio::test]
async fn an_idle_connection_closed_by_the_upstream_is_replaced() {
    let (addr, close, mut closed) = one_shot_upstream().await;
    let pool = pool_to(format!("http://{addr}"), settings(Duration::from_secs(90)));
    assert_eq!(get(&pool, "/1").await.1, "ok");
    assert_eq!(
        (pool.shared.idle_count(), pool.shared.idle_closed()),
        (1, 0)
    );
    close.send_replace(true);
    within("upstream closed", closed.wait_for(|n| *n == 1))
        .await
        .unwrap();
    wait_until("the pool sees the close", || pool.shared.idle_closed() == 1).await;
    assert_eq!(get(&pool, "/2").await.1, "ok");
    // The second request had its own connection (closed after it, as the first).
    within("second connection closed", closed.wait_for(|n| *n == 2))
        .await
        .unwrap();
    assert_eq!(pool.shared.free_permits(), 256);
}

#[tokio::test]
async fn a_request_not_sent_on_a_stale_connection_is_sent_on_a_new_one() {
    let up = upstream().await;
    let pool = pool_to(
        format!("http://{}", up.addr),
        settings(Duration::from_secs(90)),
    );
    // A connection of the pool whose task the test ends at will.
    let stream = tokio::net::TcpStream::connect(up.addr).await.unwrap();
    let (mut sender, conn) = http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .unwrap();
    let (kill, killed) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            biased;
            _ = killed => {}
            _ = conn => {}
        }
    });
    within("connection ready", sender.ready()).await.unwrap();
    let _guard = pool.shared.plant_idle(sender);
    // The connection's task ends at its next turn: after the checkout found the
    // connection open and ready and the request was queued on it, before it is written.
    kill.send(()).unwrap();
    let (status, body) = get(&pool, "/retried").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, format!("GET /retried host={}", up.addr));
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_body_dropped_half_read_frees_the_permit_and_the_connection_is_not_reused() {
    let up = upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.max_connections = 1;
    let pool = pool_to(format!("http://{}", up.addr), s);
    let resp = within("response", pool.send(request("/big")))
        .await
        .unwrap();
    let mut body = resp.into_body();
    let first = within("first frame", body.frame()).await.unwrap().unwrap();
    assert!(first.is_data());
    assert_eq!(pool.shared.free_permits(), 0);
    drop(body);
    wait_until("permit freed", || pool.shared.free_permits() == 1).await;
    let (status, body) = get(&pool, "/after").await;
    assert_eq!(
        (status, body.len()),
        (StatusCode::OK, format!("GET /after host={}", up.addr).len())
    );
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    // A body read to its end puts the connection back.
    let (_, big) = get(&pool, "/big").await;
    assert_eq!(big.len(), 1024 * 1024);
    get(&pool, "/again").await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upgraded_connection_leaves_the_pool() {
    let up = upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.max_connections = 1;
    let pool = pool_to(format!("http://{}", up.addr), s);
    let req = Request::get("/upgrade")
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(empty())
        .unwrap();
    let mut resp = within("101", pool.send(req)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    let upgraded = within("upgrade", hyper::upgrade::on(&mut resp))
        .await
        .unwrap();
    let mut io = TokioIo::new(upgraded);
    io.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    within("echo", io.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"ping");
    // The tunnel holds no permit: a plain request gets a new connection meanwhile.
    wait_until("permit freed", || pool.shared.free_permits() == 1).await;
    let (status, _) = get(&pool, "/plain").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    io.write_all(b"pong").await.unwrap();
    within("echo", io.read_exact(&mut got)).await.unwrap();
    assert_eq!(&got, b"pong");
}

#[tokio::test]
async fn request_bodies_are_sent() {
    let up = upstream().await;
    let pool = pool_to(
        format!("http://{}", up.addr),
        settings(Duration::from_secs(90)),
    );
    let req = Request::post("/form")
        .body(boxed(Full::new(Bytes::from("x=1"))))
        .unwrap();
    let resp = within("response", pool.send(req)).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, format!("POST /form host={}", up.addr));
}

/// An upstream that answers each request as soon as it has its head, then reads the
/// (chunked) request body to its end and serves the next request on the connection.
async fn early_answer_upstream() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut byte = [0u8; 1];
                loop {
                    while !seen.ends_with(b"\r\n\r\n") {
                        if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        seen.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&seen).to_ascii_lowercase();
                    seen.clear();
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly";
                    if sock.write_all(answer).await.is_err() {
                        return;
                    }
                    if head.contains("transfer-encoding: chunked") {
                        while !seen.ends_with(b"0\r\n\r\n") {
                            if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                                return;
                            }
                            seen.push(byte[0]);
                        }
                        seen.clear();
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_connection_still_sending_the_request_body_is_not_reused() {
    let (addr, accepted) = early_answer_upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.max_connections = 2;
    let pool = pool_to(format!("http://{addr}"), s);
    // An upload the upstream answers before reading it.
    let (chunks, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
    chunks
        .send(Ok(Frame::data(Bytes::from("part"))))
        .await
        .unwrap();
    let upload = StreamBody::new(tokio_stream_of(rx));
    let req = Request::post("/upload").body(boxed(upload)).unwrap();
    let resp = within("early answer", pool.send(req)).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "early");
    // That connection is busy with the upload: the next request gets its own.
    assert_eq!(get(&pool, "/next").await.1, "early");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    // Once the upload ends, its connection closes and its permit is free again.
    drop(chunks);
    wait_until("permit freed", || pool.shared.free_permits() == 2).await;
    // A body sent whole leaves the connection reusable.
    let req = Request::post("/small")
        .body(boxed(StreamBody::new(futures_util::stream::iter([Ok::<
            _,
            Infallible,
        >(
            Frame::data(Bytes::from("x")),
        )]))))
        .unwrap();
    let resp = within("small upload", pool.send(req)).await.unwrap();
    resp.into_body().collect().await.unwrap();
    assert_eq!(get(&pool, "/after").await.1, "early");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// The receiving half of a channel as a stream.
fn tokio_stream_of<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) })
}

#[tokio::test]
async fn no_idle_connection_is_kept_when_pool_max_idle_is_0() {
    let up = upstream().await;
    let mut s = settings(Duration::from_secs(90));
    s.pool_max_idle = 0;
    let pool = pool_to(format!("http://{}", up.addr), s);
    get(&pool, "/1").await;
    get(&pool, "/2").await;
    assert_eq!(up.accepted.load(Ordering::SeqCst), 2);
    assert_eq!(pool.shared.idle_count(), 0);
}

#[tokio::test]
async fn idle_pooled_connection_is_closed_after_the_idle_timeout() {
    let mut up = upstream().await;
    let pool = pool_to(
        format!("http://{}", up.addr),
        settings(Duration::from_millis(100)),
    );
    get(&pool, "/").await;
    let closed = timeout(Duration::from_secs(5), up.closed.wait_for(|n| *n >= 1)).await;
    assert!(closed.is_ok(), "idle connection still open after 5s");
    assert_eq!(pool.shared.idle_count(), 0);
}

#[tokio::test]
async fn the_reaper_does_not_keep_its_pool_alive() {
    let mut up = upstream().await;
    let pool = pool_to(
        format!("http://{}", up.addr),
        settings(Duration::from_millis(50)),
    );
    get(&pool, "/").await;
    let reaper = Arc::downgrade(&pool.shared);
    drop(pool);
    // The idle connection goes with the pool, and nothing keeps the pool alive.
    within("closed", up.closed.wait_for(|n| *n >= 1))
        .await
        .unwrap();
    assert!(reaper.upgrade().is_none());
}

#[tokio::test]
async fn connect_to_a_closed_port_fails_fast_with_a_connect_error() {
    let port = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    };
    let pool = pool_to(
        format!("http://127.0.0.1:{port}"),
        settings(Duration::from_secs(90)),
    );
    let started = Instant::now();
    let result = timeout(Duration::from_secs(4), pool.send(request("/"))).await;
    let err = result.expect("refused connect took longer than the 4s deadline");
    let err = err.expect_err("nothing listens on the port");
    assert!(err.is_connect(), "{err:?}");
    // Refused at once, not after the 5s connect timeout; the permit is back.
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(pool.shared.free_permits(), 256);
}
