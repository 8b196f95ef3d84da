//! Raw serde structs mirroring the TOML file, before validation.
//!
//! Every leaf is a [`Lenient`] value: a value of the wrong TOML type does not stop
//! deserialization, it is kept as [`Lenient::Invalid`] so validation reports it with
//! its exact key next to every other problem. Durations, URLs, enums and header names
//! are read as strings and parsed during validation for the same reason. Keys the
//! structs do not know are collected by [`super::sections`] (through `serde_ignored`),
//! not refused by `deny_unknown_fields`, which would stop at the first.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

/// A leaf value that deserializes whatever its TOML type: either the expected `T`
/// or the reason it is not one.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<T> {
    /// The value, of the expected type.
    Valid(T),
    /// A value of another type, kept so validation can name the key.
    Invalid {
        /// What the deserializer expected and found, e.g. `invalid type: integer
        /// `300`, expected a string`.
        message: String,
    },
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = toml::Value::deserialize(deserializer)?;
        let err = match T::deserialize(value.clone()) {
            Ok(v) => return Ok(Lenient::Valid(v)),
            Err(e) => e,
        };
        // A scalar where a string is expected (`kid = 2`, `max_wait = 300`, or an
        // override `TIDEMARK__TOKEN__KID=2` read as TOML) is taken as its text, so
        // the value's own check explains what is wrong, if anything.
        if !value.is_table() && !value.is_array() && !value.is_str() {
            let text = match &value {
                toml::Value::Datetime(d) => d.to_string(),
                other => other.to_string(),
            };
            if let Ok(v) = T::deserialize(toml::Value::String(text)) {
                return Ok(Lenient::Valid(v));
            }
        }
        Ok(Lenient::Invalid {
            message: err.message().to_string(),
        })
    }
}

/// An optional leaf (absent keys take their default during validation).
pub type Field<T> = Option<Lenient<T>>;

/// `[server]`
#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    /// Client listener, `IP:PORT`. Default `127.0.0.1:8080`.
    pub listen: Field<String>,
    /// Admin listener, `IP:PORT`. Default `127.0.0.1:9090`.
    pub admin_listen: Field<String>,
    /// Reads held at once. Default 10000; at least 1.
    pub max_held_reads: Field<usize>,
    /// Client connections at once. Default 10000; at least 1.
    pub max_connections: Field<usize>,
    /// Duration. Default `10s`; above zero.
    pub header_read_timeout: Field<String>,
    /// Duration. Default `60s`; above zero.
    pub idle_timeout: Field<String>,
    /// Trusted proxies in front. Default 0.
    pub trusted_hops: Field<usize>,
    /// Duration. Default `10s`.
    pub drain_timeout: Field<String>,
    /// Request headers accepted. Default 100; at least 1.
    pub max_headers: Field<usize>,
    /// Bytes of a request's head (request line and headers). Default 65536; at
    /// least 8192.
    pub max_header_bytes: Field<usize>,
    /// One access-log line per client request. Default false.
    pub access_log: Field<bool>,
    /// `[server.tls]`: TLS on the client listener. Default: none (plain HTTP).
    pub tls: Option<RawTls>,
}

/// `[server.tls]`
#[derive(Debug, Default, Deserialize)]
pub struct RawTls {
    /// PEM file: the certificate chain, leaf first (required).
    pub cert_file: Field<String>,
    /// PEM file: the private key (PKCS#8, PKCS#1 or SEC1; required).
    pub key_file: Field<String>,
}

/// `[headers]`
#[derive(Debug, Default, Deserialize)]
pub struct RawHeaders {
    /// Header name. Default `consistency-token`.
    pub token: Field<String>,
    /// Header name. Default `consistency-level`.
    pub level: Field<String>,
    /// Header name. Default `write-position`.
    pub write_position: Field<String>,
    /// Header name. Default `projection-checkpoint`.
    pub checkpoint: Field<String>,
    /// Header name. Default `consistency-min-position`.
    pub min_position: Field<String>,
    /// Header name. Default `consistency-source`.
    pub source: Field<String>,
}

/// `[token]`
#[derive(Debug, Default, Deserialize)]
pub struct RawToken {
    /// `iss` claim. Default `tidemark`.
    pub issuer: Field<String>,
    /// `HS256` (default) | `EdDSA` | `ES256`.
    pub algorithm: Field<String>,
    /// Signing key id. Default `k1`.
    pub kid: Field<String>,
    /// HS256: variable holding the secret. Default `TIDEMARK_SECRET`.
    pub secret_env: Field<String>,
    /// HS256: file holding the secret (instead of `secret_env`).
    pub secret_file: Field<String>,
    /// EdDSA/ES256: variable holding the PKCS#8 PEM signing key.
    pub private_key_env: Field<String>,
    /// EdDSA/ES256: file holding the PKCS#8 PEM signing key.
    pub private_key_file: Field<String>,
    /// EdDSA/ES256, optional: variable holding the public key PEM.
    pub public_key_env: Field<String>,
    /// EdDSA/ES256, optional: file holding the public key PEM.
    pub public_key_file: Field<String>,
    /// Duration. Default `1h`; above zero.
    pub ttl: Field<String>,
    /// `reject` (default) | `ignore`.
    pub on_invalid: Field<String>,
    /// Cookie name also carrying the token. Default: none.
    pub cookie: Field<String>,
    /// Cookie `Secure` attribute. Default true.
    pub cookie_secure: Field<bool>,
    /// Verify-only keys (rotation). Default: none.
    #[serde(default)]
    pub verify_keys: Vec<RawVerifyKey>,
}

/// `[[token.verify_keys]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawVerifyKey {
    /// Key id (required, unique in the ring).
    pub kid: Field<String>,
    /// Default: the signing key's algorithm.
    pub algorithm: Field<String>,
    /// HS256 secret variable (one source only).
    pub secret_env: Field<String>,
    /// HS256 secret file (one source only).
    pub secret_file: Field<String>,
    /// EdDSA/ES256 public key PEM variable (one source only).
    pub public_key_env: Field<String>,
    /// EdDSA/ES256 public key PEM file (one source only).
    pub public_key_file: Field<String>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    /// Variable holding the admin bearer token; must be set when named. Default: no auth.
    pub token_env: Field<String>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    /// `memory` (default) | `redis`.
    pub backend: Field<String>,
    /// Redis: one server (`redis://...`); exclusive with `cluster_urls`.
    pub redis_url: Field<String>,
    /// Redis: cluster seed nodes; exclusive with `redis_url`.
    pub cluster_urls: Field<Vec<String>>,
    /// Default `tidemark`.
    pub key_prefix: Field<String>,
    /// Duration. Default `1s`.
    pub connect_timeout: Field<String>,
    /// Duration. Default `500ms`.
    pub response_timeout: Field<String>,
    /// Duration. Default `5s`.
    pub resync_interval: Field<String>,
}

/// `[cache]`
#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    /// Default 262144.
    pub max_body_bytes: Field<usize>,
    /// Default 100000; at least 1.
    pub max_entries: Field<usize>,
    /// Default 67108864 (64 MiB); at least 1.
    pub max_bytes: Field<usize>,
    /// Default `[200, 201]`.
    pub statuses: Field<Vec<u16>>,
    /// Largest request body a write route with `cache` forwards. Default 1048576.
    pub max_request_body_bytes: Field<usize>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    /// One instance (`default`); exclusive with `instances`.
    pub url: Field<String>,
    /// Named instances; exclusive with `url`.
    pub instances: Field<BTreeMap<String, String>>,
    /// Duration. Default `3s`.
    pub connect_timeout: Field<String>,
    /// PEM file of CA certificates trusted for `https://` instances, besides the
    /// system's roots. Default: none.
    pub ca_file: Field<String>,
    /// Duration an instance whose connection failed is out of the rotation. Default
    /// `5s`; `0s` disables.
    pub eject_for: Field<String>,
    /// Duration to response headers. Default `30s`.
    pub timeout: Field<String>,
    /// Duration. Default `90s`.
    pub pool_idle_timeout: Field<String>,
    /// Default 64.
    pub pool_max_idle: Field<usize>,
    /// Most connections open to each instance at once. Default 256.
    pub max_connections: Field<usize>,
}

/// `[projections.NAME]`
#[derive(Debug, Default, Deserialize)]
pub struct RawProjection {
    /// Logs consumed (required, non-empty).
    pub logs: Field<Vec<String>>,
    /// `push` | `redis` | `header` | `poll` | `nats`. Default `["push"]`.
    pub sources: Field<Vec<String>>,
    /// `poll`: URL for every instance; exclusive with `poll_urls`.
    pub poll_url: Field<String>,
    /// `poll`: URL per instance; exclusive with `poll_url`.
    pub poll_urls: Field<BTreeMap<String, String>>,
    /// Duration. Default `1s`.
    pub poll_interval: Field<String>,
    /// Duration. Default `500ms`.
    pub poll_timeout: Field<String>,
    /// `[projections.NAME.nats]`: the `nats` source.
    pub nats: Option<super::nats::RawNatsSource>,
    /// `[projections.NAME.kafka]`: the `kafka` source.
    pub kafka: Option<super::kafka::RawKafkaSource>,
    /// `[projections.NAME.postgres]`: the `postgres` source.
    pub postgres: Option<super::positions::RawPostgresSource>,
}

/// `[[routes]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    /// Unique route name (required).
    pub name: Field<String>,
    /// `read` | `write` | `passthrough` (required).
    pub kind: Field<String>,
    /// Default by kind (see [`super::RouteConfig::methods`]).
    pub methods: Field<Vec<String>>,
    /// matchit pattern (required).
    pub path: Field<String>,
    /// Upstream name (required).
    pub upstream: Field<String>,
    /// Log of bare positions (read and write routes).
    pub default_log: Field<String>,
    /// Read routes: projection name (required).
    pub projection: Field<String>,
    /// Read routes: duration. Default `300ms`.
    pub max_wait: Field<String>,
    /// Read routes: `primary` | `stale` | `error`.
    pub on_timeout: Field<String>,
    /// Read routes: upstream for strong reads and timeouts.
    pub primary: Field<String>,
    /// Read routes: duration. Default: no bound.
    pub staleness_budget: Field<String>,
    /// Read routes. Default false.
    pub monotonic: Field<bool>,
    /// Read and write routes: the write-through cache.
    pub cache: Option<RawRouteCache>,
    /// Write routes: `fence = { database, preset | query }`.
    pub fence: Option<super::positions::RawFence>,
}

/// A route's `cache = { key, ttl, scope }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawRouteCache {
    /// Key template with the path's `{captures}` (required).
    pub key: Field<String>,
    /// Duration. Default `30s`.
    pub ttl: Field<String>,
    /// `session` (default) | `global`.
    pub scope: Field<String>,
    /// Header names and `cookie:NAME`s. Default `["authorization"]`.
    pub vary: Field<Vec<String>>,
}

/// The whole file, each section deserialized on its own (see [`super::sections`]).
/// A section that could not be read at all (not a table) keeps its defaults here and
/// is already reported; an upstream or projection that could not be read is still in
/// `upstream_names` / `projection_names`, so references to it are not reported a
/// second time as dangling.
#[derive(Debug, Default)]
pub struct RawConfig {
    /// `[server]` (all defaults when absent).
    pub server: RawServer,
    /// `[headers]`
    pub headers: RawHeaders,
    /// `[token]`
    pub token: RawToken,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[store]`
    pub store: RawStore,
    /// `[cache]`
    pub cache: RawCache,
    /// Upstreams that deserialized, by name.
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// Every upstream name in the file, readable or not.
    pub upstream_names: Vec<String>,
    /// Projections that deserialized, by name.
    pub projections: BTreeMap<String, RawProjection>,
    /// Every projection name in the file, readable or not.
    pub projection_names: Vec<String>,
    /// Routes in file order; `None` for a route that is not a table.
    pub routes: Vec<Option<RawRoute>>,
    /// `[nats]`, when present.
    pub nats: Option<super::nats::RawNats>,
    /// `[kafka]`, when present.
    pub kafka: Option<super::kafka::RawKafka>,
    /// `[databases.NAME]` that deserialized, by name.
    pub databases: BTreeMap<String, super::databases::RawDatabase>,
    /// Every database name in the file, readable or not.
    pub database_names: Vec<String>,
}

/// Known keys of each table, for "did you mean" suggestions. A unit test checks them
/// against the structs above.
pub mod keys {
    /// Top-level sections.
    pub const TOP: &[&str] = &[
        "server",
        "headers",
        "token",
        "admin",
        "store",
        "cache",
        "upstreams",
        "projections",
        "routes",
        "nats",
        "kafka",
        "databases",
    ];
    /// `[server]`
    pub const SERVER: &[&str] = &[
        "listen",
        "admin_listen",
        "max_held_reads",
        "max_connections",
        "header_read_timeout",
        "idle_timeout",
        "trusted_hops",
        "drain_timeout",
        "max_headers",
        "max_header_bytes",
        "access_log",
        "tls",
    ];
    /// `[server.tls]`
    pub const SERVER_TLS: &[&str] = &["cert_file", "key_file"];
    /// `[headers]`
    pub const HEADERS: &[&str] = &[
        "token",
        "level",
        "write_position",
        "checkpoint",
        "min_position",
        "source",
    ];
    /// `[token]`
    pub const TOKEN: &[&str] = &[
        "issuer",
        "algorithm",
        "kid",
        "secret_env",
        "secret_file",
        "private_key_env",
        "private_key_file",
        "public_key_env",
        "public_key_file",
        "ttl",
        "on_invalid",
        "cookie",
        "cookie_secure",
        "verify_keys",
    ];
    /// `[[token.verify_keys]]`
    pub const VERIFY_KEY: &[&str] = &[
        "kid",
        "algorithm",
        "secret_env",
        "secret_file",
        "public_key_env",
        "public_key_file",
    ];
    /// `[admin]`
    pub const ADMIN: &[&str] = &["token_env"];
    /// `[store]`
    pub const STORE: &[&str] = &[
        "backend",
        "redis_url",
        "cluster_urls",
        "key_prefix",
        "connect_timeout",
        "response_timeout",
        "resync_interval",
    ];
    /// `[cache]`
    pub const CACHE: &[&str] = &[
        "max_body_bytes",
        "max_entries",
        "max_bytes",
        "max_request_body_bytes",
        "statuses",
    ];
    /// `[upstreams.NAME]`
    pub const UPSTREAM: &[&str] = &[
        "url",
        "instances",
        "connect_timeout",
        "ca_file",
        "eject_for",
        "timeout",
        "pool_idle_timeout",
        "pool_max_idle",
        "max_connections",
    ];
    /// `[projections.NAME]`
    pub const PROJECTION: &[&str] = &[
        "logs",
        "sources",
        "poll_url",
        "poll_urls",
        "poll_interval",
        "poll_timeout",
        "nats",
        "postgres",
        "kafka",
    ];
    /// `[[routes]]`
    pub const ROUTE: &[&str] = &[
        "name",
        "kind",
        "methods",
        "path",
        "upstream",
        "default_log",
        "projection",
        "max_wait",
        "on_timeout",
        "primary",
        "staleness_budget",
        "monotonic",
        "cache",
        "fence",
    ];
    /// A route's `cache = {...}`.
    pub const ROUTE_CACHE: &[&str] = &["key", "ttl", "scope", "vary"];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_of_the_wrong_type_is_kept_not_fatal() {
        let text = "listen = [1]\nmax_held_reads = \"5\"\ntrusted_hops = 2";
        let server = RawServer::deserialize(toml::from_str::<toml::Table>(text).unwrap()).unwrap();
        let Some(Lenient::Invalid { message }) = &server.listen else {
            panic!("{:?}", server.listen)
        };
        assert!(message.contains("sequence"), "{message}");
        assert!(matches!(
            server.max_held_reads,
            Some(Lenient::Invalid { .. })
        ));
        assert_eq!(server.trusted_hops, Some(Lenient::Valid(2)));
    }

    #[test]
    fn a_scalar_where_a_string_is_expected_is_taken_as_text() {
        let text = "listen = 8080\ndrain_timeout = 1.5";
        let server = RawServer::deserialize(toml::from_str::<toml::Table>(text).unwrap()).unwrap();
        assert_eq!(server.listen, Some(Lenient::Valid("8080".to_string())));
        assert_eq!(
            server.drain_timeout,
            Some(Lenient::Valid("1.5".to_string()))
        );
    }
}
