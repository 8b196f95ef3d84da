//! Harness of the operability tests (reload, drain, TLS, limits): a tiny upstream,
//! gateways run from a config FILE (so they can reload it), raw TCP helpers.
//! Included with `mod ops_support;` after `mod common;`.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tidemark::config::Config;
use tidemark::reload::ReloadSource;
use tidemark::{Listeners, ServeError, ServeOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// An upstream answering every request with JSON naming itself, the path, the body's
/// length and the `Host` and `X-Forwarded-Proto` it got; writes
/// (any method but GET/HEAD) also carry `Write-Position: users=N` (and `"write": N`),
/// N counting up from 1.
/// Paths under `/slow` wait for [`Upstream::release`] before answering.
pub struct Upstream {
    pub addr: SocketAddr,
    /// Requests under `/slow` that arrived (and wait).
    pub slow_entered: Arc<Semaphore>,
    release: Arc<Semaphore>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(name: &'static str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writes = Arc::new(AtomicU64::new(0));
        let slow_entered = Arc::new(Semaphore::new(0));
        let release = Arc::new(Semaphore::new(0));
        let (entered, gate) = (slow_entered.clone(), release.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (writes, entered, gate) = (writes.clone(), entered.clone(), gate.clone());
                let service = service_fn(move |req: Request<Incoming>| {
                    let (writes, entered, gate) = (writes.clone(), entered.clone(), gate.clone());
                    async move { Ok::<_, Infallible>(answer(name, req, &writes, &entered, &gate).await) }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            slow_entered,
            release,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Lets one waiting `/slow` request answer.
    pub fn release(&self) {
        self.release.add_permits(1);
    }

    /// Waits until `n` `/slow` requests have arrived (at most 10 s).
    pub async fn wait_slow(&self, n: u32) {
        let permits =
            tokio::time::timeout(Duration::from_secs(10), self.slow_entered.acquire_many(n))
                .await
                .expect("slow requests arrive within 10 s")
                .unwrap();
        permits.forget();
    }
}

async fn answer(
    name: &str,
    req: Request<Incoming>,
    writes: &AtomicU64,
    entered: &Semaphore,
    gate: &Semaphore,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let len = body
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    if parts.uri.path().starts_with("/slow") {
        entered.add_permits(1);
        if let Ok(p) = gate.acquire().await {
            p.forget();
        }
    }
    let proto = parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut body = serde_json::json!({"upstream": name, "path": parts.uri.path(), "body_len": len, "forwarded_proto": proto, "host": host});
    let mut resp = Response::builder()
        .header("content-type", "application/json")
        .header("x-upstream", name);
    if parts.method != http::Method::GET && parts.method != http::Method::HEAD {
        let n = writes.fetch_add(1, Ordering::Relaxed) + 1;
        body["write"] = n.into();
        resp = resp.header("write-position", format!("users={n}"));
    }
    resp.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

/// A gateway run from a config file in a temporary directory, reloadable.
pub struct FileGateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub shutdown: CancellationToken,
    pub reload_signal: Arc<Notify>,
    pub handle: Option<JoinHandle<Result<(), ServeError>>>,
    env: Vec<(String, String)>,
}

impl Drop for FileGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The environment every file gateway loads with: listeners on port 0, plus `extra`.
pub fn env(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        (
            "TIDEMARK__SERVER__LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
        (
            "TIDEMARK__SERVER__ADMIN_LISTEN".to_string(),
            "127.0.0.1:0".to_string(),
        ),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

impl FileGateway {
    /// Writes `toml` (`@DIR@` replaced by the temporary directory) with the HS256
    /// secrets `k1.secret` and `k2.secret` beside it, and serves it.
    pub async fn start(toml: &str, extra_env: &[(&str, &str)]) -> FileGateway {
        Self::start_with_files(toml, extra_env, &[]).await
    }

    /// [`FileGateway::start`], with further `(name, contents)` files in the directory.
    pub async fn start_with_files(
        toml: &str,
        extra_env: &[(&str, &str)],
        files: &[(&str, &[u8])],
    ) -> FileGateway {
        let dir = tempfile::tempdir().unwrap();
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).unwrap();
        }
        std::fs::write(
            dir.path().join("k1.secret"),
            "first-secret-0123456789abcdef-0123",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("k2.secret"),
            "second-secret-0123456789abcdef-012",
        )
        .unwrap();
        let path = dir.path().join("tidemark.toml");
        let env = env(extra_env);
        let mut gw = FileGateway {
            proxy: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
            dir,
            path,
            shutdown: CancellationToken::new(),
            reload_signal: Arc::new(Notify::new()),
            handle: None,
            env,
        };
        gw.write(toml);
        let config = Config::load_with_env(&gw.path, &gw.env).unwrap_or_else(|e| panic!("{e}"));
        let listeners = Listeners::bind(&config).await.unwrap();
        gw.proxy = listeners.proxy_addr().unwrap();
        gw.admin = listeners.admin_addr().unwrap();
        let options = ServeOptions {
            reload_from: Some(ReloadSource {
                path: gw.path.clone(),
                env: Some(gw.env.clone()),
            }),
            reload_signal: Some(gw.reload_signal.clone()),
        };
        let token = gw.shutdown.clone();
        gw.handle = Some(tokio::spawn(tidemark::serve_with(
            config, listeners, token, options,
        )));
        gw
    }

    /// Rewrites the config file (`@DIR@` replaced); takes effect on the next reload.
    pub fn write(&self, toml: &str) {
        let text = toml.replace("@DIR@", &self.dir.path().display().to_string());
        std::fs::write(&self.path, text).unwrap();
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

/// Sends raw bytes on a new connection to `addr` and reads until the server closes
/// it or `within` passes; returns what was read and whether the server closed.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], within: Duration) -> (String, bool) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_close(&mut stream, within).await
}

/// Reads from `stream` until EOF (or a reset) or `within` passes.
pub async fn read_until_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The first line of an HTTP/1.1 response (`HTTP/1.1 431 ...`), or "".
pub fn status_line(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}
