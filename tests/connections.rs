//! The client listener's connection slots: a client that sends nothing, an idle
//! HTTP/2 or HTTP/1.1 keep-alive connection, and an upgraded tunnel each hold one of
//! `server.max_connections`; the first three are closed on their own, the tunnel is
//! counted and closed when the drain times out.

mod common;
mod ops_support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ops_support::{read_until_close, status_line, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use common::{config, TestGateway};

/// A gateway with a read-free passthrough of everything to `upstream`, plus `server`
/// keys.
async fn gateway(upstream: &str, server: &str) -> TestGateway {
    let toml = format!(
        r#"
[server]
{server}

[upstreams.up]
url = "{upstream}"

[[routes]]
name = "all"
kind = "passthrough"
path = "/{{*rest}}"
upstream = "up"
"#
    );
    TestGateway::start(config(&toml, &[])).await
}

const GET_CLOSE: &[u8] = b"GET /users/1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn silent_connections_are_closed_after_header_read_timeout_and_free_their_slots() {
    let up = Upstream::start("view").await;
    let gw = gateway(
        &up.url(),
        "max_connections = 2\nheader_read_timeout = \"300ms\"",
    )
    .await;
    // Two clients connect and send nothing: both slots taken.
    let mut silent1 = TcpStream::connect(gw.proxy).await.unwrap();
    let mut silent2 = TcpStream::connect(gw.proxy).await.unwrap();
    let started = Instant::now();

    // A third client is served once the silent ones are closed.
    let mut third = TcpStream::connect(gw.proxy).await.unwrap();
    third.write_all(GET_CLOSE).await.unwrap();
    let (resp, closed) = read_until_close(&mut third, Duration::from_secs(10)).await;
    assert!(
        status_line(&resp).contains(" 200 "),
        "third client: {resp:?}"
    );
    assert!(closed);

    for silent in [&mut silent1, &mut silent2] {
        let (got, closed) = read_until_close(silent, Duration::from_secs(5)).await;
        assert!(closed, "a silent connection is closed");
        assert_eq!(got, "", "nothing is answered to a client that sent nothing");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "closed early: {took:?}");
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_idle_timeout() {
    let up = Upstream::start("view").await;
    let gw = gateway(&up.url(), "idle_timeout = \"300ms\"").await;
    let tcp = TcpStream::connect(gw.proxy).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get(format!("http://{}/users/1", gw.proxy))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let idle_from = Instant::now();

    // The gateway ends the connection (GOAWAY, then close): the client's connection
    // task finishes.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the idle HTTP/2 connection is closed within 5 s")
        .unwrap()
        .ok();
    assert!(idle_from.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn an_idle_http1_keep_alive_connection_is_closed_after_header_read_timeout() {
    let up = Upstream::start("view").await;
    let gw = gateway(&up.url(), "header_read_timeout = \"300ms\"").await;
    let mut sock = TcpStream::connect(gw.proxy).await.unwrap();
    // The answer, on a connection kept alive...
    get_kept_alive(&mut sock, "the first request").await;
    // ...then closed when no next request comes.
    let idle_from = Instant::now();
    let (rest, closed) = read_until_close(&mut sock, Duration::from_secs(5)).await;
    assert!(closed, "an idle keep-alive connection is closed");
    assert_eq!(rest, "");
    assert!(idle_from.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn a_client_trickling_its_request_head_is_closed_at_header_read_timeout() {
    let up = Upstream::start("view").await;
    let gw = gateway(&up.url(), "header_read_timeout = \"300ms\"").await;
    let mut sock = TcpStream::connect(gw.proxy).await.unwrap();
    let started = Instant::now();
    sock.write_all(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n")
        .await
        .unwrap();
    // One byte of a header every 50 ms: bytes keep moving, the head never ends.
    let mut closed_after = None;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if sock.write_all(b"x").await.is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 256];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(1), sock.read(&mut buf)).await {
            assert!(matches!(r, Ok(0) | Err(_)), "nothing is answered: {r:?}");
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let took = closed_after.expect("the trickling client is cut off");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[tokio::test]
async fn a_keep_alive_connection_busier_than_header_read_timeout_stays_open() {
    let up = Upstream::start("view").await;
    let gw = gateway(&up.url(), "header_read_timeout = \"300ms\"").await;
    let mut sock = TcpStream::connect(gw.proxy).await.unwrap();
    // Twelve requests 100 ms apart on one connection: 1.2 s in all, four times the
    // timeout, each head sent whole well within it.
    for i in 0..12 {
        get_kept_alive(&mut sock, &format!("request {i}")).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends a keep-alive `GET /users/1` on `sock` and reads its whole answer (the
/// upstream's body names `body_len`); fails if the connection closes first.
async fn get_kept_alive(sock: &mut TcpStream, what: &str) {
    sock.write_all(b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !String::from_utf8_lossy(&got).contains("body_len") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{what}: answered within 5 s"))
            .unwrap();
        assert!(n > 0, "{what}: the connection was closed before the answer");
        got.extend_from_slice(&buf[..n]);
    }
}

/// An upstream that switches protocols on request and then echoes bytes.
async fn upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut byte = [0u8; 1];
                while !buf.ends_with(b"\r\n\r\n") {
                    if sock.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    buf.push(byte[0]);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                    .await;
                let mut data = [0u8; 1024];
                loop {
                    let n = sock.read(&mut data).await.unwrap_or(0);
                    if n == 0 || sock.write_all(&data[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Opens a tunnel through the gateway and checks it echoes.
async fn tunnel(gw: &TestGateway) -> TcpStream {
    let mut sock = TcpStream::connect(gw.proxy).await.unwrap();
    sock.write_all(b"GET /ws HTTP/1.1\r\nhost: gw\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut byte))
            .await
            .expect("the upgrade is answered")
            .unwrap();
        assert_eq!(n, 1, "connection closed early");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    sock.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), sock.read_exact(&mut got))
        .await
        .expect("echoed")
        .unwrap();
    assert_eq!(&got, b"ping");
    sock
}

#[tokio::test]
async fn an_upgraded_tunnel_keeps_its_connection_slot() {
    let up = upgrade_upstream().await;
    let gw = gateway(&format!("http://{up}"), "max_connections = 1").await;
    let tunnel = tunnel(&gw).await;

    // The tunnel holds the only slot: another client waits...
    let mut other = TcpStream::connect(gw.proxy).await.unwrap();
    other.write_all(GET_CLOSE).await.unwrap();
    let (early, _) = read_until_close(&mut other, Duration::from_millis(500)).await;
    assert_eq!(early, "", "served while the tunnel held the only slot");
    // ...until the tunnel closes.
    drop(tunnel);
    let (resp, _) = read_until_close(&mut other, Duration::from_secs(10)).await;
    assert!(
        status_line(&resp).starts_with("HTTP/1.1 "),
        "not served: {resp:?}"
    );
}

#[tokio::test]
async fn upgraded_tunnels_are_closed_when_the_drain_times_out() {
    let up = upgrade_upstream().await;
    let gw = gateway(&format!("http://{up}"), "drain_timeout = \"300ms\"").await;
    let mut tunnel = tunnel(&gw).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), gw.stop())
        .await
        .expect("the gateway stops within 5 s");
    let (_, closed) = read_until_close(&mut tunnel, Duration::from_secs(2)).await;
    assert!(closed, "the tunnel is closed by the shutdown");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the tunnel had drain_timeout to finish"
    );
}
