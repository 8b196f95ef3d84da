//! Configuration: TOML (one file) -> raw serde structs -> one validation pass that
//! reports every error at once -> the validated [`Config`] below.
//!
//! `TIDEMARK__SECTION__KEY` environment variables override file keys (see [`env`]).
//! The validated types carry parsed values only (durations, URIs, header names), so
//! nothing downstream re-parses or re-validates.

pub mod databases;
pub mod env;
pub mod kafka;
pub mod lint;
pub mod nats;
pub mod positions;
pub mod raw;
pub mod validate;

mod collect;
mod describe;
mod route_fields;
mod routes;
mod sections;
mod token_section;
mod upstreams;
mod values;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Method, Uri};

pub use databases::DatabaseConfig;
pub use positions::{FenceConfig, PositionsConfig, PostgresSourceConfig};

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages (`None` when built in code).
    pub source: Option<PathBuf>,
    pub server: ServerConfig,
    pub headers: HeaderNames,
    pub token: TokenConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub cache: CacheConfig,
    /// Upstreams by name, in name order.
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Projections by name, in name order.
    pub projections: BTreeMap<String, ProjectionConfig>,
    /// Routes in file order (the order they match in).
    pub routes: Vec<RouteConfig>,
    /// `[nats]`: the NATS connection of the `nats` source. Default: none.
    pub nats: Option<nats::NatsConfig>,
    /// `[kafka]`: the brokers of the `kafka` source and `kafka_topic` fences.
    /// Default: none.
    pub kafka: Option<kafka::KafkaConfig>,
    /// `[databases.NAME]`, the `postgres` checkpoint sources and the write fences.
    pub positions: PositionsConfig,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Client listener. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// Admin listener. Default `127.0.0.1:9090`.
    pub admin_listen: SocketAddr,
    /// Reads held at once, across projections; past it, `503` at once. Default 10000.
    pub max_held_reads: usize,
    /// Client connections open at once; past it new connections wait in the accept
    /// queue. Default 10000.
    pub max_connections: usize,
    /// Time a client has to send a request's headers (slowloris guard). Default `10s`.
    pub header_read_timeout: Duration,
    /// A client connection with no request being handled and no byte moved for this
    /// long is shut down gracefully (HTTP/2 `GOAWAY`): idle connections would
    /// otherwise hold a `max_connections` slot forever. Default `60s`.
    pub idle_timeout: Duration,
    /// Proxies in front of tidemark whose `X-Forwarded-*` entries are trusted. Default 0:
    /// client-sent forwarding headers are replaced, not appended to.
    pub trusted_hops: usize,
    /// Longest a graceful shutdown waits for in-flight requests. Default `10s`.
    pub drain_timeout: Duration,
    /// Most request headers accepted (count); past it hyper answers `431`. Default 100.
    pub max_headers: usize,
    /// Most bytes of a request's head (request line and headers; HTTP/2: the header
    /// list); past it `431`. Default 64 KiB: far above any real browser's headers and a
    /// 4 KiB token, small enough that a flood of large heads stays cheap. At least
    /// 8192 (hyper's smallest read buffer).
    pub max_header_bytes: usize,
    /// One line per client request at `info` under the target `tidemark::access`
    /// (method, path, status, route, source, wait). Default false: an access log is a
    /// choice (volume, privacy), and when off it costs nothing per request.
    pub access_log: bool,
    /// `[server.tls]`: TLS (rustls) on the client listener; ALPN `h2`, `http/1.1`.
    /// Default: none (plain HTTP). The admin listener is always plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// `[server.tls]`: PEM files, read at start-up and on every reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key_file: PathBuf,
}

/// `[headers]`: every header name of the contract is configurable.
#[derive(Debug, Clone)]
pub struct HeaderNames {
    /// Default `consistency-token`.
    pub token: HeaderName,
    /// Default `consistency-level`.
    pub level: HeaderName,
    /// Default `write-position`.
    pub write_position: HeaderName,
    /// Default `projection-checkpoint`.
    pub checkpoint: HeaderName,
    /// Default `consistency-min-position`.
    pub min_position: HeaderName,
    /// Default `consistency-source`.
    pub source: HeaderName,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            token: HeaderName::from_static("consistency-token"),
            level: HeaderName::from_static("consistency-level"),
            write_position: HeaderName::from_static("write-position"),
            checkpoint: HeaderName::from_static("projection-checkpoint"),
            min_position: HeaderName::from_static("consistency-min-position"),
            source: HeaderName::from_static("consistency-source"),
        }
    }
}

/// JWT algorithms tidemark signs and verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenAlgorithm {
    Hs256,
    EdDsa,
    Es256,
}

/// Where key material comes from. Never the config file itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An environment variable: the HS256 secret's bytes, or a PEM key.
    Env(String),
    /// A file: the HS256 secret's bytes (trailing newline trimmed), or a PEM key.
    File(PathBuf),
    /// Bytes given in code (the demo, tests); never produced from TOML.
    Inline(Vec<u8>),
}

/// One key of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// The JWT `kid`. Default for the signing key: `k1`.
    pub kid: String,
    pub algorithm: TokenAlgorithm,
    /// HS256: the shared secret. EdDSA/ES256: for the signing key the PKCS#8 private
    /// key PEM, for verify-only keys the SPKI public key PEM.
    pub material: KeyMaterial,
    /// EdDSA/ES256 signing key only: the public key PEM, if not derivable.
    pub public_material: Option<KeyMaterial>,
}

/// What to do with a token that is malformed, wrongly signed, of another issuer or too large.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnInvalid {
    /// Answer `400` (default).
    Reject,
    /// Treat the request as if it had no token.
    Ignore,
}

/// `[token]`
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// `iss` claim minted and required. Default `tidemark`.
    pub issuer: String,
    /// Lifetime of a minted token. Default `1h`.
    pub ttl: Duration,
    pub on_invalid: OnInvalid,
    /// Also read (and set) the token in this cookie. Default: none.
    pub cookie: Option<CookieConfig>,
    /// The key new tokens are signed with (also verifies).
    pub signing: KeySpec,
    /// Further keys that verify only (rotation): `[[token.verify_keys]]`.
    pub verify_keys: Vec<KeySpec>,
}

#[derive(Debug, Clone)]
pub struct CookieConfig {
    pub name: String,
    /// Set the `Secure` attribute. Default true.
    pub secure: bool,
}

/// `[admin]`
#[derive(Debug, Clone, Default)]
pub struct AdminConfig {
    /// Bearer token required by mutating admin endpoints, read from the environment
    /// variable named by `admin.token_env` at start-up. `None`: no auth.
    pub token: Option<String>,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// Embedded, in-process, one gateway instance (default).
    Memory,
    Redis(RedisConfig),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    pub target: RedisTarget,
    /// Prefix of every key and channel. Default `tidemark`.
    pub key_prefix: String,
    /// Default `1s`.
    pub connect_timeout: Duration,
    /// Default `500ms`.
    pub response_timeout: Duration,
    /// How often every checkpoint is reloaded from its key (pub/sub is only a hint).
    /// Default `5s`.
    pub resync_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// `store.redis_url`
    Single(String),
    /// `store.cluster_urls`: Redis Cluster seed nodes.
    Cluster(Vec<String>),
}

/// `[cache]`: the write-through cache's limits.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Largest response body stored; larger ones stream through uncached and are
    /// counted. Default 256 KiB.
    pub max_body_bytes: usize,
    /// Most entries of the memory backend. Default 100000.
    pub max_entries: usize,
    /// Most bytes the memory backend holds: bodies, keys, identities, positions and
    /// a per-entry overhead are counted; eviction keeps it (expired entries first,
    /// then the oldest). Default 64 MiB: with `max_entries` alone, 100000 entries of
    /// up to 256 KiB could grow the process by 25 GiB.
    pub max_bytes: usize,
    /// Statuses of write answers the cache stores (only with a non-empty body): those
    /// that can stand for the resource a read of the route returns. Default
    /// `[200, 201]`: a `202 Accepted` or `204 No Content` is not the resource.
    pub statuses: Vec<u16>,
    /// Largest request body a write route with `cache` forwards; a larger one is
    /// answered `413` without reaching the upstream. Such bodies are read whole before
    /// forwarding (so the 413 can come before anything is sent). Default 1 MiB.
    pub max_request_body_bytes: usize,
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    pub name: String,
    /// `url = ...` gives one instance named `default`; `instances = {a = ..., b = ...}`
    /// gives named instances (in name order).
    pub instances: Vec<InstanceConfig>,
    /// TCP connect timeout. Default `3s`: Linux sends the first SYN retransmit after
    /// 1 s, so a 1 s timeout failed a connect whenever one SYN was dropped (an accept
    /// queue overflowing once); 3 s leaves the retransmit 2 s to be answered.
    pub connect_timeout: Duration,
    /// `ca_file`: the PEM file of extra CA certificates trusted for `https://`
    /// instances (besides the system's roots), and its certificates, read when the
    /// config is loaded (and on every reload). Default: none.
    pub ca_file: Option<std::path::PathBuf>,
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Passive health: an instance whose connection failed (refused, reset before any
    /// response byte, connect timeout) is out of the rotation this long, unless every
    /// instance is. Default `5s`; `0s` disables.
    pub eject_for: Duration,
    /// Time to the response's headers, after which the gateway answers `504`. Default `30s`.
    pub timeout: Duration,
    /// Idle pooled connections are closed after this. Default `90s`.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per instance. Default 64.
    pub pool_max_idle: usize,
    /// Most connections open to each instance at once (busy and idle). A request that
    /// finds them all busy waits, first come first served, for one to become free;
    /// the wait counts against `timeout`. Default 256: enough for a busy service,
    /// and it keeps a burst of released reads from opening one connection each
    /// (and exhausting file descriptors). At least 1.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct InstanceConfig {
    pub name: String,
    /// Scheme and authority (and an optional base path) of the instance.
    pub url: Uri,
}

/// Ways a projection's checkpoints reach the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SourceKind {
    Push,
    Redis,
    Header,
    Poll,
    Nats,
    Kafka,
    Postgres,
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Push => "push",
            SourceKind::Redis => "redis",
            SourceKind::Header => "header",
            SourceKind::Poll => "poll",
            SourceKind::Nats => "nats",
            SourceKind::Kafka => "kafka",
            SourceKind::Postgres => "postgres",
        }
    }
}

/// `[projections.NAME]`
#[derive(Debug, Clone)]
pub struct ProjectionConfig {
    pub name: String,
    /// Logs the projection consumes.
    pub logs: Vec<String>,
    pub sources: Vec<SourceKind>,
    /// Instance names: those of the upstream its read routes use (derived; all of a
    /// projection's read routes must share one upstream).
    pub instances: Vec<String>,
    /// `poll` source settings, when `sources` has `poll`.
    pub poll: Option<PollConfig>,
    /// `nats` source settings, when `sources` has `nats`.
    pub nats: Option<nats::NatsSourceConfig>,
    /// `kafka` source settings, when `sources` has `kafka`.
    pub kafka: Option<kafka::KafkaSourceConfig>,
}

#[derive(Debug, Clone)]
pub struct PollConfig {
    /// (instance, URL) pairs; `poll_url` applies to every instance (instance `None`).
    pub targets: Vec<(Option<String>, Uri)>,
    /// Default `1s`; each wait is jittered by up to 10%.
    pub interval: Duration,
    /// Default `500ms`.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    Primary,
    Stale,
    Error,
}

impl OnTimeout {
    pub fn as_str(self) -> &'static str {
        match self {
            OnTimeout::Primary => "primary",
            OnTimeout::Stale => "stale",
            OnTimeout::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheScope {
    /// Entries are seen only by the session (token `sid`) that wrote them (default).
    Session,
    /// Entries are seen by every session.
    Global,
}

/// A route's `cache = { key, ttl, scope, vary }`.
#[derive(Debug, Clone)]
pub struct RouteCache {
    /// Key template, `{capture}` expanded from the path, e.g. `user:{id}`.
    pub key: String,
    /// Write routes: how long an entry lives. Default `30s`.
    pub ttl: Duration,
    pub scope: CacheScope,
    /// What names the caller: an entry is only answered to a read whose values of
    /// these match the writer's (hashed, see `cache::identity`). Default
    /// `["authorization"]`; `[]` shares entries between all callers.
    pub vary: Vec<CacheVary>,
}

/// One item of a route's `cache.vary`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheVary {
    /// A request header (`"authorization"`).
    Header(http::HeaderName),
    /// A cookie (`"cookie:session"`).
    Cookie(String),
}

/// Read-route settings.
#[derive(Debug, Clone)]
pub struct ReadRoute {
    pub projection: String,
    /// Longest a read is held. Default `300ms`.
    pub max_wait: Duration,
    /// Default `primary` when `primary` is set, else `error`.
    pub on_timeout: OnTimeout,
    /// Upstream answering `strong` reads and `on_timeout = "primary"`.
    pub primary: Option<String>,
    /// Instances further behind than this (in time) never serve the route.
    pub staleness_budget: Option<Duration>,
    /// Advance the client's token to the checkpoint of the instance that answered.
    pub monotonic: bool,
}

#[derive(Debug, Clone)]
pub enum RouteKind {
    Read(ReadRoute),
    Write,
    Passthrough,
}

impl RouteKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RouteKind::Read(_) => "read",
            RouteKind::Write => "write",
            RouteKind::Passthrough => "passthrough",
        }
    }
}

/// `[[routes]]`
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub kind: RouteKind,
    /// Empty: every method. Defaults: read `GET, HEAD`; write `POST, PUT, PATCH,
    /// DELETE`; passthrough every method.
    pub methods: Vec<Method>,
    /// matchit pattern: `{name}` captures, a trailing `{*rest}`.
    pub path: String,
    pub upstream: String,
    /// Log of bare positions (`Write-Position: 1234`). Default: the projection's log
    /// when it has exactly one.
    pub default_log: Option<String>,
    pub cache: Option<RouteCache>,
}

/// Every problem found in a config, each naming where and how to fix it.
#[derive(Debug, thiserror::Error)]
#[error("{}", render_errors(.file.as_deref(), .errors))]
pub struct ConfigErrors {
    pub file: Option<PathBuf>,
    pub errors: Vec<ConfigError>,
}

/// One config problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted key, e.g. `routes[1].projection` or `upstreams.user-view.url`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

fn render_errors(file: Option<&std::path::Path>, errors: &[ConfigError]) -> String {
    let file = file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "<config>".to_string());
    let mut out = format!("{} error(s) in {file}:", errors.len());
    for e in errors {
        out.push_str(&format!(
            "\n  {file}: `{}`: {}; fix: {}",
            e.key, e.problem, e.fix
        ));
    }
    out
}

impl Config {
    /// Reads `path`, applies `TIDEMARK__*` overrides from the process environment,
    /// and validates. Every error is reported at once.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: Some(path.to_path_buf()),
            errors: vec![ConfigError {
                key: "<file>".into(),
                problem: format!("cannot read the file: {e}"),
                fix: "pass an existing, readable TOML file with --config".into(),
            }],
        })?;
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::from_toml(&text, Some(path.to_path_buf()), &vars)
    }

    /// Like [`Config::load`], with the given environment instead of the process's
    /// (`(name, value)` pairs; `TIDEMARK__*` overrides and the variables keys name).
    pub fn load_with_env(
        path: &std::path::Path,
        env: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigErrors {
            file: Some(path.to_path_buf()),
            errors: vec![ConfigError {
                key: "<file>".into(),
                problem: format!("cannot read the file: {e}"),
                fix: "pass an existing, readable TOML file with --config".into(),
            }],
        })?;
        Self::from_toml(&text, Some(path.to_path_buf()), env)
    }

    /// Parses and validates TOML text with the given environment (`(name, value)`
    /// pairs; only `TIDEMARK__*` ones are used).
    pub fn from_toml(
        text: &str,
        source: Option<PathBuf>,
        env: &[(String, String)],
    ) -> Result<Config, ConfigErrors> {
        validate::from_toml(text, source, env)
    }
}
