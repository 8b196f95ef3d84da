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
    pub listen: Field<String>,
    pub admin_listen: Field<String>,
    pub max_held_reads: Field<usize>,
    pub max_connections: Field<usize>,
    pub header_read_timeout: Field<String>,
    pub trusted_hops: Field<usize>,
    pub drain_timeout: Field<String>,
    pub max_headers: Field<usize>,
}

/// `[headers]`
#[derive(Debug, Default, Deserialize)]
pub struct RawHeaders {
    pub token: Field<String>,
    pub level: Field<String>,
    pub write_position: Field<String>,
    pub checkpoint: Field<String>,
    pub min_position: Field<String>,
    pub source: Field<String>,
}

/// `[token]`
#[derive(Debug, Default, Deserialize)]
pub struct RawToken {
    pub issuer: Field<String>,
    pub algorithm: Field<String>,
    pub kid: Field<String>,
    pub secret_env: Field<String>,
    pub secret_file: Field<String>,
    pub private_key_env: Field<String>,
    pub private_key_file: Field<String>,
    pub public_key_env: Field<String>,
    pub public_key_file: Field<String>,
    pub ttl: Field<String>,
    pub on_invalid: Field<String>,
    pub cookie: Field<String>,
    pub cookie_secure: Field<bool>,
    #[serde(default)]
    pub verify_keys: Vec<RawVerifyKey>,
}

/// `[[token.verify_keys]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawVerifyKey {
    pub kid: Field<String>,
    pub algorithm: Field<String>,
    pub secret_env: Field<String>,
    pub secret_file: Field<String>,
    pub public_key_env: Field<String>,
    pub public_key_file: Field<String>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    pub token_env: Field<String>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
pub struct RawStore {
    pub backend: Field<String>,
    pub redis_url: Field<String>,
    pub cluster_urls: Field<Vec<String>>,
    pub key_prefix: Field<String>,
    pub connect_timeout: Field<String>,
    pub response_timeout: Field<String>,
    pub resync_interval: Field<String>,
}

/// `[cache]`
#[derive(Debug, Default, Deserialize)]
pub struct RawCache {
    pub max_body_bytes: Field<usize>,
    pub max_entries: Field<usize>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Default, Deserialize)]
pub struct RawUpstream {
    pub url: Field<String>,
    pub instances: Field<BTreeMap<String, String>>,
    pub connect_timeout: Field<String>,
    pub timeout: Field<String>,
    pub pool_idle_timeout: Field<String>,
    pub pool_max_idle: Field<usize>,
}

/// `[projections.NAME]`
#[derive(Debug, Default, Deserialize)]
pub struct RawProjection {
    pub logs: Field<Vec<String>>,
    pub sources: Field<Vec<String>>,
    pub poll_url: Field<String>,
    pub poll_urls: Field<BTreeMap<String, String>>,
    pub poll_interval: Field<String>,
    pub poll_timeout: Field<String>,
}

/// `[[routes]]`
#[derive(Debug, Default, Deserialize)]
pub struct RawRoute {
    pub name: Field<String>,
    pub kind: Field<String>,
    pub methods: Field<Vec<String>>,
    pub path: Field<String>,
    pub upstream: Field<String>,
    pub default_log: Field<String>,
    pub projection: Field<String>,
    pub max_wait: Field<String>,
    pub on_timeout: Field<String>,
    pub primary: Field<String>,
    pub staleness_budget: Field<String>,
    pub monotonic: Field<bool>,
    pub cache: Option<RawRouteCache>,
}

/// A route's `cache = { key, ttl, scope }`.
#[derive(Debug, Default, Deserialize)]
pub struct RawRouteCache {
    pub key: Field<String>,
    pub ttl: Field<String>,
    pub scope: Field<String>,
}

/// The whole file, each section deserialized on its own (see [`super::sections`]).
/// A section that could not be read at all (not a table) is `None`/absent here and
/// already reported; its names are still in `upstream_names` etc. so references to
/// it are not reported a second time as dangling.
#[derive(Debug, Default)]
pub struct RawConfig {
    pub server: RawServer,
    pub headers: RawHeaders,
    pub token: RawToken,
    pub admin: RawAdmin,
    pub store: RawStore,
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
    ];
    /// `[server]`
    pub const SERVER: &[&str] = &[
        "listen",
        "admin_listen",
        "max_held_reads",
        "max_connections",
        "header_read_timeout",
        "trusted_hops",
        "drain_timeout",
        "max_headers",
    ];
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
    pub const CACHE: &[&str] = &["max_body_bytes", "max_entries"];
    /// `[upstreams.NAME]`
    pub const UPSTREAM: &[&str] = &[
        "url",
        "instances",
        "connect_timeout",
        "timeout",
        "pool_idle_timeout",
        "pool_max_idle",
    ];
    /// `[projections.NAME]`
    pub const PROJECTION: &[&str] = &[
        "logs",
        "sources",
        "poll_url",
        "poll_urls",
        "poll_interval",
        "poll_timeout",
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
    ];
    /// A route's `cache = {...}`.
    pub const ROUTE_CACHE: &[&str] = &["key", "ttl", "scope"];
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
