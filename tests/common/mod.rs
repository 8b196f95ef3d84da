//! Shared integration-test harness: gateways on 127.0.0.1:0 in-process, an HTTP client,
//! condition waits with deadlines. Included with `mod common;`.
#![allow(dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tidemark::config::{Config, KeyMaterial};
use tidemark::Listeners;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The HS256 secret every test gateway signs with.
pub const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

/// Parses `toml` with the listeners on port 0 and the test secret.
pub fn config(toml: &str, extra_env: &[(&str, String)]) -> Config {
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
    env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    let mut config = Config::from_toml(toml, None, &env).unwrap_or_else(|e| panic!("{e}"));
    config.token.signing.material = KeyMaterial::Inline(SECRET.to_vec());
    config
}

/// A gateway running in this process.
pub struct TestGateway {
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start(config: Config) -> TestGateway {
        let listeners = Listeners::bind(&config).await.expect("bind 127.0.0.1:0");
        TestGateway::start_on(config, listeners).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Stops the gateway and waits for it to drain.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            let _ = h.await;
        }
    }

    /// `held_reads_total` from the admin API.
    pub async fn held(&self) -> u64 {
        let r = http().get(&self.admin_url("/projections"), &[]).await;
        r.json()["held_reads_total"].as_u64().unwrap_or(0)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `version` of a user JSON body (0 for a 404 or anything else).
    pub fn version(&self) -> u64 {
        if self.status != StatusCode::OK {
            return 0;
        }
        self.json()["version"].as_u64().unwrap_or(0)
    }
}

/// A pooled test client.
#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

pub fn http() -> Http {
    Http {
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Http {
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Resp {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("response within 30 s")
            .expect("request succeeds");
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.expect("body").to_bytes();
        Resp {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.send(Method::GET, url, headers, Bytes::new()).await
    }

    pub async fn put_json(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Resp {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        self.send(Method::PUT, url, &h, body.to_string()).await
    }
}

/// Waits until `cond` holds, checking every few milliseconds, failing after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A free loopback port (nothing listens on it once this returns).
pub fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Binds a gateway's two listeners on port 0 (so the admin URL is known before the
/// backend that pushes to it starts).
pub async fn bind_listeners() -> Listeners {
    Listeners {
        proxy: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    }
}

impl TestGateway {
    /// Runs `config` on listeners bound beforehand.
    pub async fn start_on(config: Config, listeners: Listeners) -> TestGateway {
        let proxy = listeners.proxy_addr().unwrap();
        let admin = listeners.admin_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            tidemark::serve(config, listeners, token)
                .await
                .expect("gateway runs");
        });
        TestGateway {
            proxy,
            admin,
            shutdown,
            handle: Some(handle),
        }
    }
}
