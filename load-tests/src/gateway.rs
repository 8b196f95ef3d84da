//! A tidemark gateway as its own process (`tidemark run --config FILE`), so it can be
//! pinned to a core and its memory and CPU read from /proc.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::Method;

use crate::net;
use crate::procs::{self, Proc};

/// The HS256 secret every load-test gateway signs with (not a secret: loopback only).
pub const SECRET: &str = "load-test-secret-0123456789abcdef-0123456789";

/// How to configure one gateway.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The command service.
    pub command: SocketAddr,
    /// Read instances `r0`, `r1`, ...
    pub reads: Vec<SocketAddr>,
    /// `server.max_held_reads`.
    pub max_held_reads: usize,
    /// `server.max_connections`.
    pub max_connections: usize,
    /// The read route's `max_wait`.
    pub max_wait: String,
    /// `on_timeout` of the read route.
    pub on_timeout: String,
    /// Whether the write and read routes use the write-through cache.
    pub cache: bool,
    /// `store.redis_url` (backend `redis`) or `None` (memory).
    pub redis: Option<String>,
}

impl GatewaySpec {
    /// The TOML file for this gateway on `proxy` / `admin`.
    pub fn toml(&self, proxy: SocketAddr, admin: SocketAddr) -> String {
        let instances: Vec<String> = self
            .reads
            .iter()
            .enumerate()
            .map(|(i, a)| format!("r{i} = \"http://{a}\""))
            .collect();
        let store = match &self.redis {
            Some(url) => format!("backend = \"redis\"\nredis_url = \"{url}\""),
            None => "backend = \"memory\"".to_owned(),
        };
        let (write_cache, read_cache) = if self.cache {
            (
                "cache = { key = \"user:{id}\", ttl = \"30s\" }",
                "cache = { key = \"user:{id}\" }",
            )
        } else {
            ("", "")
        };
        format!(
            r#"[server]
listen = "{proxy}"
admin_listen = "{admin}"
max_held_reads = {held}
max_connections = {conns}

[token]
secret_env = "TIDEMARK_SECRET"

[store]
{store}

[upstreams.commands]
url = "http://{command}"
pool_max_idle = 1024

[upstreams.view]
instances = {{ {instances} }}
pool_max_idle = 1024

[projections.users]
logs = ["users"]
sources = ["push"]

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{{id}}"
upstream = "commands"
default_log = "users"
{write_cache}

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{{id}}"
upstream = "view"
projection = "users"
max_wait = "{max_wait}"
on_timeout = "{on_timeout}"
primary = "commands"
{read_cache}
"#,
            held = self.max_held_reads,
            conns = self.max_connections,
            command = self.command,
            instances = instances.join(", "),
            max_wait = self.max_wait,
            on_timeout = self.on_timeout,
        )
    }
}

/// A running gateway process.
pub struct Gateway {
    /// Client listener.
    pub proxy: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// The process.
    pub proc: Proc,
}

/// Picks the two listener addresses (so backends can push to the admin API before the
/// gateway starts).
pub fn addresses() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let proxy = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    let admin = SocketAddr::from(([127, 0, 0, 1], procs::free_port()?));
    Ok((proxy, admin))
}

/// Starts `bin run --config` on `proxy`/`admin`, pinned to `core`, and waits for
/// `/healthz`.
pub async fn start(
    bin: &Path,
    spec: &GatewaySpec,
    (proxy, admin): (SocketAddr, SocketAddr),
    core: Option<usize>,
    dir: &Path,
    name: &str,
) -> Result<Gateway, String> {
    start_toml(
        bin,
        &spec.toml(proxy, admin),
        (proxy, admin),
        core,
        dir,
        name,
    )
    .await
}

/// [`start`] with a config written by the caller (which must listen on `proxy` and
/// `admin` and sign with `TIDEMARK_SECRET`).
pub async fn start_toml(
    bin: &Path,
    toml: &str,
    (proxy, admin): (SocketAddr, SocketAddr),
    core: Option<usize>,
    dir: &Path,
    name: &str,
) -> Result<Gateway, String> {
    let config_path = dir.join(format!("{name}.toml"));
    std::fs::write(&config_path, toml)
        .map_err(|e| format!("write {}: {e}", config_path.display()))?;
    let args = vec![
        "run".to_owned(),
        "--config".to_owned(),
        config_path.display().to_string(),
    ];
    let proc = Proc::spawn(
        name,
        &bin.display().to_string(),
        &args,
        &[("TIDEMARK_SECRET", SECRET), ("RUST_LOG", "info")],
        core,
        &dir.join(format!("{name}.log")),
    )
    .map_err(|e| format!("start {}: {e}", bin.display()))?;
    let mut gw = Gateway { proxy, admin, proc };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if !gw.proc.running() {
            return Err(format!(
                "gateway {name} exited; see {}/{name}.log",
                dir.display()
            ));
        }
        if let Ok(r) = net::once(Method::GET, admin, "/healthz", &[], "").await {
            if r.status.is_success() {
                return Ok(gw);
            }
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    Err(format!("gateway {name} not healthy within 15 s"))
}

impl Gateway {
    /// `held_reads_total` from `/projections`.
    pub async fn held(&self) -> u64 {
        match net::once(Method::GET, self.admin, "/projections", &[], "").await {
            Ok(r) => r.json()["held_reads_total"].as_u64().unwrap_or(0),
            Err(_) => 0,
        }
    }
}
