//! The `tidemark demo` walkthrough: starts the example backend and a gateway on the
//! embedded store in front of it, then shows a write, a stale direct read, and a
//! fresh read through the gateway, and prints curl commands to try.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::RngCore;
use tokio_util::sync::CancellationToken;

use super::{Backend, BackendOptions, PushTarget};
use crate::config::{Config, KeyMaterial};
use crate::Listeners;

/// The config the demo runs (upstream URLs and listeners are overridden at run time).
pub const DEMO_TOML: &str = include_str!("../../config/demo.toml");

/// `tidemark demo` options.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub lag: Duration,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Exit after the walkthrough.
    pub once: bool,
}

/// Any failure of the demo, shown to the user as is.
pub type DemoError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the demo's gateway config for a running backend.
pub fn demo_config(
    backend: &Backend,
    listen: SocketAddr,
    admin_listen: SocketAddr,
) -> Result<Config, DemoError> {
    gateway_config(
        DEMO_TOML,
        "config/demo.toml",
        (listen, admin_listen),
        backend.command_addr,
        (
            "TIDEMARK__UPSTREAMS__USER-VIEW__INSTANCES__R0",
            backend.read_addrs[0],
        ),
        &[],
    )
}

/// A demo gateway's config: `toml` (`origin` in its errors) with the listeners, the
/// command service's and a read service's URLs (`read.0` the variable naming it) and
/// `extra` variables, signing with a random key unless `TIDEMARK_SECRET` is set.
pub(super) fn gateway_config(
    toml: &str,
    origin: &str,
    (listen, admin_listen): (SocketAddr, SocketAddr),
    command: SocketAddr,
    read: (&str, SocketAddr),
    extra: &[(&str, &str)],
) -> Result<Config, DemoError> {
    let mut env = vec![
        ("TIDEMARK__SERVER__LISTEN".to_string(), listen.to_string()),
        (
            "TIDEMARK__SERVER__ADMIN_LISTEN".to_string(),
            admin_listen.to_string(),
        ),
        (
            "TIDEMARK__UPSTREAMS__USER-COMMANDS__URL".to_string(),
            format!("http://{command}"),
        ),
        (read.0.to_string(), format!("http://{}", read.1)),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let mut config = Config::from_toml(toml, Some(origin.into()), &env)?;
    if std::env::var_os("TIDEMARK_SECRET").is_none() {
        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        config.token.signing.material = KeyMaterial::Inline(secret.to_vec());
    }
    Ok(config)
}

/// Serves a demo service's `app` on `listener` until `shutdown`.
pub(super) fn serve_service(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
) {
    let stop = shutdown.clone().cancelled_owned();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stop)
            .await
        {
            tracing::warn!(%error, "demo service stopped with an error");
        }
    });
}

/// Binds `addr`; a failure (a busy port, typically) names the address and the flag
/// that changes it.
pub(super) async fn bind(
    addr: SocketAddr,
    what: &str,
    flag: &str,
) -> Result<tokio::net::TcpListener, DemoError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program is using it)"
        } else {
            ""
        };
        format!(
            "cannot listen on {addr} for the demo's {what}: {e}{hint}; \
             choose another address with `tidemark demo {flag} 127.0.0.1:PORT`"
        )
        .into()
    })
}

/// Runs the demo until `shutdown` (or, with `once`, until the walkthrough ends).
pub async fn run(opts: DemoOptions, shutdown: CancellationToken) -> Result<(), DemoError> {
    let admin = bind(opts.admin_listen, "admin listener", "--admin-listen").await?;
    let admin_addr = admin.local_addr()?;
    let backend = Backend::start(
        BackendOptions {
            lag: opts.lag,
            push: Some(PushTarget {
                admin_url: format!("http://{admin_addr}"),
                projection: "user-view".into(),
                admin_token: None,
            }),
            checkpoint_header: true,
            read_instances: 1,
        },
        shutdown.child_token(),
    )
    .await?;
    let config = demo_config(&backend, opts.listen, admin_addr)?;
    let gateway = Gateway::start(config, admin, &shutdown).await?;
    let stage = Stage {
        title: format!("tidemark demo: projection lag {:?}", opts.lag),
        gateway: gateway.addr,
        admin: admin_addr,
        command: backend.command_addr,
        read: backend.read_addrs[0],
        lag: opts.lag,
        notes: Vec::new(),
    };
    let walked = walk(&stage).await;
    gateway.finish(walked, opts.once, &shutdown).await?;
    Ok(())
}

/// A gateway the demo runs in-process.
pub(super) struct Gateway {
    /// Its client listener.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<Result<(), crate::ServeError>>,
    stop: CancellationToken,
}

impl Gateway {
    /// Binds the client listener `config.server.listen` and serves `config` with the
    /// already bound `admin` listener, until [`Gateway::finish`].
    pub async fn start(
        config: Config,
        admin: tokio::net::TcpListener,
        shutdown: &CancellationToken,
    ) -> Result<Gateway, DemoError> {
        let proxy = bind(config.server.listen, "gateway", "--listen").await?;
        let listeners = Listeners { proxy, admin };
        let addr = listeners.proxy_addr()?;
        let stop = shutdown.child_token();
        let task = tokio::spawn(crate::serve(config, listeners, stop.clone()));
        Ok(Gateway { addr, task, stop })
    }

    /// After the walkthrough: serves until `shutdown` unless `once` (or the
    /// walkthrough failed), then stops everything and returns the walkthrough's
    /// outcome (or the gateway's error).
    pub async fn finish<T>(
        self,
        walked: Result<T, DemoError>,
        once: bool,
        shutdown: &CancellationToken,
    ) -> Result<T, DemoError> {
        if walked.is_ok() && !once {
            println!("\nServing until Ctrl-C.");
            shutdown.cancelled().await;
        }
        self.stop.cancel();
        shutdown.cancel();
        let served = self.task.await;
        // A gateway that stopped on its own is why a walkthrough fails: say so first.
        match served {
            Ok(Ok(())) => Ok(walked?),
            Ok(Err(e)) => Err(match walked {
                Ok(_) => e.into(),
                Err(w) => format!("the gateway stopped: {e} (the walkthrough: {w})").into(),
            }),
            Err(e) => Err(format!("the gateway's task failed: {e}").into()),
        }
    }
}

/// What the walkthrough prints about, and where it sends its requests.
pub(super) struct Stage {
    /// The first line.
    pub title: String,
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub command: SocketAddr,
    pub read: SocketAddr,
    pub lag: Duration,
    /// Lines printed under the addresses (where positions come from).
    pub notes: Vec<String>,
}

/// What the walkthrough saw: a write through the gateway, then the same user read
/// straight from the read service and through the gateway with the write's token.
#[derive(Debug, Clone)]
pub struct Walked {
    /// The `version` of the written user (its position in the `users` log).
    pub written: u64,
    /// The direct read's status and the `version` it showed (`None`: no user, or no
    /// version in the body).
    pub direct_status: u16,
    pub direct_version: Option<u64>,
    /// The read through the gateway: the `version` it showed (never below `written`,
    /// or the walkthrough fails) and its `Consistency-Source`.
    pub gateway_version: u64,
    pub gateway_source: String,
}

impl Walked {
    /// The direct read did not show the write (a missing user or an older version).
    pub fn direct_was_stale(&self) -> bool {
        self.direct_version.is_none_or(|v| v < self.written)
    }
}

/// Steps 1-3 (write, direct read, read through the gateway) and the curl lines.
/// Fails if the write is refused or the gateway answers a stale read.
pub(super) async fn walk(stage: &Stage) -> Result<Walked, DemoError> {
    let Stage {
        gateway: gateway_addr,
        admin: admin_addr,
        ..
    } = *stage;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    println!("{}", stage.title);
    println!("  gateway        http://{gateway_addr}   (admin http://{admin_addr})");
    println!("  command svc    http://{}", stage.command);
    println!("  read svc       http://{}", stage.read);
    for note in &stage.notes {
        println!("  {note}");
    }
    println!();

    let id = rand::random::<u32>() % 100_000;
    let body = r#"{"name":"Ada","plan":"pro"}"#.to_string();
    println!("1. Write through the gateway:  PUT /users/{id} {body}");
    let (status, headers, text) = call(
        &client,
        Method::PUT,
        &format!("http://{gateway_addr}/users/{id}"),
        None,
        Some(body),
    )
    .await?;
    let Some(written) = version(&text).filter(|_| status.is_success()) else {
        return Err(format!("the write through the gateway failed: {status} {text}").into());
    };
    let token = headers
        .get("consistency-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    println!("   -> {status} {text}");
    println!(
        "   -> Consistency-Token: {}...\n",
        &token[..token.len().min(40)]
    );

    println!("2. Read straight from the read service (no gateway):");
    let (direct_status, _, text) = call(
        &client,
        Method::GET,
        &format!("http://{}/users/{id}", stage.read),
        None,
        None,
    )
    .await?;
    let direct_version = version(&text).filter(|_| direct_status.is_success());
    let verdict = if direct_version.is_none_or(|v| v < written) {
        "<- stale: the projection has not caught up"
    } else {
        "<- already fresh: the projection caught up before this read"
    };
    println!("   -> {direct_status} {text}   {verdict}\n");

    println!("3. Read through the gateway with the token:");
    let started = Instant::now();
    let (status, headers, text) = call(
        &client,
        Method::GET,
        &format!("http://{gateway_addr}/users/{id}"),
        Some(&token),
        None,
    )
    .await?;
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let gateway_version = match version(&text) {
        Some(v) if status.is_success() && v >= written => v,
        _ => {
            return Err(format!(
            "the gateway answered a stale read ({status} {text}) after writing version {written}"
        )
            .into())
        }
    };
    println!("   -> {status} {text}");
    println!(
        "   -> Consistency-Source: {}, Server-Timing: {} (answered after {:?})\n",
        header("consistency-source"),
        header("server-timing"),
        started.elapsed()
    );

    println!("Try it yourself:");
    println!("  TOKEN=$(curl -si -X PUT http://{gateway_addr}/users/7 -d '{{\"name\":\"Grace\"}}' | awk -F': ' 'tolower($1)==\"consistency-token\" {{print $2}}' | tr -d '\\r')");
    println!(
        "  curl -s http://{}/users/7                     # read service: stale for {:?}",
        stage.read, stage.lag
    );
    println!("  curl -si http://{gateway_addr}/users/7 -H \"Consistency-Token: $TOKEN\"   # gateway: fresh");
    println!("  curl -s http://{admin_addr}/projections        # checkpoints and held reads");
    Ok(Walked {
        written,
        direct_status: direct_status.as_u16(),
        direct_version,
        gateway_version,
        gateway_source: header("consistency-source"),
    })
}

/// The `version` of a user JSON body.
fn version(text: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(text).ok()?["version"].as_u64()
}

async fn call(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Result<(http::StatusCode, http::HeaderMap, String), DemoError> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token.filter(|t| !t.is_empty()) {
        req = req.header("consistency-token", t);
    }
    if body.is_some() {
        req = req.header("content-type", "application/json");
    }
    let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
    let resp = client.request(req).await?;
    let (parts, body) = resp.into_parts();
    let bytes = body.collect().await?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&bytes).into_owned(),
    ))
}
