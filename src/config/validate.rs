//! Raw config -> validated [`Config`], every error reported at once.
//!
//! The pipeline: TOML text -> document (a syntax error stops here, with its line and
//! column) -> `TIDEMARK__*` overrides ([`super::env`]) -> raw sections
//! ([`super::sections`]) -> this pass, which checks each section
//! (server, headers, admin, store, cache here; token in [`super::token_section`];
//! upstreams and projections in [`super::upstreams`]; routes and every cross-reference
//! in [`super::routes`]) and collects every problem before returning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;

pub use super::collect::Errors;
use super::raw::{Field, RawAdmin, RawCache, RawHeaders, RawServer, RawStore, RawTls};
use super::{
    databases, env, kafka, nats, positions, routes, sections, token_section, upstreams, values,
};
use super::{
    AdminConfig, CacheConfig, Config, ConfigError, ConfigErrors, HeaderNames, RedisConfig,
    RedisTarget, ServerConfig, SourceKind, StoreConfig, TlsFiles,
};

/// Parses, overrides, and validates; see the module doc.
pub fn from_toml(
    text: &str,
    source: Option<PathBuf>,
    env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    let mut doc = match toml::from_str::<toml::Table>(text) {
        Ok(doc) => doc,
        Err(e) => {
            return Err(ConfigErrors {
                file: source,
                errors: vec![syntax_error(text, &e)],
            })
        }
    };
    let mut errs = Errors(env::apply_overrides(&mut doc, env));
    let (mut raw, section_errors) = sections::read_sections(doc);
    errs.0.extend(section_errors);
    let (raw_sources, raw_fences) = positions::take_raw(&mut raw);

    let server = server(&mut errs, raw.server);
    let headers = headers(&mut errs, raw.headers);
    let token = token_section::token(&mut errs, raw.token);
    let admin = admin(&mut errs, raw.admin, env);
    let store = store(&mut errs, raw.store);
    let cache = cache(&mut errs, raw.cache);
    let upstreams = upstreams::upstreams(&mut errs, raw.upstreams);
    let redis = matches!(store, StoreConfig::Redis(_));
    let databases = databases::databases(&mut errs, std::mem::take(&mut raw.databases), env);
    let nats = raw.nats.take().and_then(|n| nats::nats(&mut errs, n, env));
    let raw_nats_sources: Vec<_> = raw
        .projections
        .iter_mut()
        .map(|(name, p)| (name.clone(), p.nats.take()))
        .collect();
    let kafka = raw.kafka.take().and_then(|k| kafka::kafka(&mut errs, k));
    let raw_kafka_sources: Vec<_> = raw
        .projections
        .iter_mut()
        .map(|(name, p)| (name.clone(), p.kafka.take()))
        .collect();
    let mut projections = upstreams::projections(&mut errs, raw.projections, redis);
    for (name, raw_source) in raw_nats_sources {
        if let Some(p) = projections.get_mut(&name) {
            let wanted = p.sources.contains(&SourceKind::Nats);
            p.nats = nats::source(&mut errs, p, raw_source, wanted, nats.is_some());
        }
    }
    for (name, raw_source) in raw_kafka_sources {
        if let Some(p) = projections.get_mut(&name) {
            let wanted = p.sources.contains(&SourceKind::Kafka);
            p.kafka = kafka::source(&mut errs, p, raw_source, wanted, kafka.is_some());
        }
    }
    let names = routes::Names {
        upstreams: &raw.upstream_names,
        projections: &raw.projection_names,
    };
    let (routes, projections) =
        routes::routes(&mut errs, raw.routes, &names, &upstreams, projections);
    let positions = positions::check(
        &mut errs,
        positions::Raw {
            sources: raw_sources,
            fences: raw_fences,
            database_names: &raw.database_names,
            has_nats: nats.is_some(),
            has_kafka: kafka.is_some(),
        },
        databases,
        &projections,
        &routes,
    );

    if !errs.0.is_empty() {
        env::mark_overridden(&mut errs.0, env);
        return Err(ConfigErrors {
            file: source,
            errors: errs.0,
        });
    }
    Ok(Config {
        source,
        server,
        headers,
        token,
        admin,
        store,
        cache,
        upstreams,
        projections,
        routes,
        nats,
        kafka,
        positions,
    })
}

/// The route table as `tidemark check` prints it.
pub fn describe_routes(config: &Config) -> String {
    super::describe::describe_routes(config)
}

fn syntax_error(text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e
        .span()
        .map(|s| line_column(text, s.start))
        .unwrap_or((1, 1));
    let at = e
        .span()
        .and_then(|s| text.get(s))
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 60 && !t.contains('\n'))
        .map(|t| format!(" (at `{t}`)"))
        .unwrap_or_default();
    ConfigError {
        key: format!("line {line}, column {column}"),
        problem: format!("TOML syntax error: {}{at}", e.message().trim()),
        fix: "correct the TOML syntax at that position (see config/example.toml)".into(),
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

fn server(errs: &mut Errors, raw: RawServer) -> ServerConfig {
    let mut addr = |key: &str, field, default: &str| -> SocketAddr {
        let fallback = default
            .parse()
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
        let Some(text) = errs.field::<String>(key, field) else {
            return fallback;
        };
        text.trim().parse().unwrap_or_else(|_| {
            errs.push(
                key,
                format!("`{text}` is not an IP:PORT address"),
                format!(
                    "write an address such as `0.0.0.0:8080` or `[::1]:8080` (default `{default}`)"
                ),
            );
            fallback
        })
    };
    let listen = addr("server.listen", raw.listen, "127.0.0.1:8080");
    let admin_listen = addr("server.admin_listen", raw.admin_listen, "127.0.0.1:9090");
    if listen == admin_listen && listen.port() != 0 {
        errs.push(
            "server.admin_listen",
            format!("`{admin_listen}` is also server.listen"),
            "give the admin listener its own port (default 9090)",
        );
    }
    ServerConfig {
        listen,
        admin_listen,
        max_held_reads: errs.count_or("server.max_held_reads", raw.max_held_reads, 10_000, 1),
        max_connections: errs.count_or("server.max_connections", raw.max_connections, 10_000, 1),
        header_read_timeout: errs.duration_or(
            "server.header_read_timeout",
            raw.header_read_timeout,
            Duration::from_secs(10),
            true,
        ),
        idle_timeout: errs.duration_or(
            "server.idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(60),
            true,
        ),
        trusted_hops: errs.count_or("server.trusted_hops", raw.trusted_hops, 0, 0),
        drain_timeout: errs.duration_or(
            "server.drain_timeout",
            raw.drain_timeout,
            Duration::from_secs(10),
            false,
        ),
        max_headers: errs.count_or("server.max_headers", raw.max_headers, 100, 1),
        max_header_bytes: errs.count_or(
            "server.max_header_bytes",
            raw.max_header_bytes,
            64 * 1024,
            8192,
        ),
        access_log: errs
            .field("server.access_log", raw.access_log)
            .unwrap_or(false),
        tls: raw.tls.and_then(|tls| server_tls(errs, tls)),
    }
}

/// `[server.tls]`: both files are required. Their contents are read when the
/// listener starts (and on every reload), not here.
fn server_tls(errs: &mut Errors, raw: RawTls) -> Option<TlsFiles> {
    let mut file = |name: &str, field: Field<String>, what: &str| -> Option<PathBuf> {
        let key = format!("server.tls.{name}");
        match errs.field::<String>(&key, field) {
            Some(path) if !path.trim().is_empty() => Some(PathBuf::from(path)),
            _ => {
                errs.push(
                    key,
                    "missing",
                    format!("name the PEM file holding {what}, or remove [server.tls] to serve plain HTTP"),
                );
                None
            }
        }
    };
    let cert_file = file("cert_file", raw.cert_file, "the certificate chain");
    let key_file = file("key_file", raw.key_file, "the private key");
    Some(TlsFiles {
        cert_file: cert_file?,
        key_file: key_file?,
    })
}

fn headers(errs: &mut Errors, raw: RawHeaders) -> HeaderNames {
    let defaults = HeaderNames::default();
    let mut seen: Vec<(String, HeaderName)> = Vec::new();
    let mut one = |name: &str, field: Field<String>, default: HeaderName| -> HeaderName {
        let key = format!("headers.{name}");
        let value = match errs.field(&key, field) {
            None => default,
            Some(text) => HeaderName::from_bytes(text.trim().as_bytes()).unwrap_or_else(|_| {
                errs.push(
                    &key,
                    format!("`{text}` is not a valid header name"),
                    "use letters, digits and `-`, e.g. `X-Consistency-Token`",
                );
                default
            }),
        };
        if let Some((other, _)) = seen.iter().find(|(_, h)| *h == value) {
            errs.push(
                &key,
                format!("`{value}` is also headers.{other}"),
                "give each header its own name",
            );
        }
        seen.push((name.to_string(), value.clone()));
        value
    };
    HeaderNames {
        token: one("token", raw.token, defaults.token),
        level: one("level", raw.level, defaults.level),
        write_position: one(
            "write_position",
            raw.write_position,
            defaults.write_position,
        ),
        checkpoint: one("checkpoint", raw.checkpoint, defaults.checkpoint),
        min_position: one("min_position", raw.min_position, defaults.min_position),
        source: one("source", raw.source, defaults.source),
    }
}

fn admin(errs: &mut Errors, raw: RawAdmin, env: &[(String, String)]) -> AdminConfig {
    let key = "admin.token_env";
    let Some(var) = errs.field::<String>(key, raw.token_env) else {
        return AdminConfig::default();
    };
    match env.iter().find(|(k, _)| *k == var) {
        Some((_, value)) if !value.trim().is_empty() => AdminConfig {
            token: Some(value.clone()),
        },
        Some(_) => {
            errs.push(
                key,
                format!("environment variable `{var}` is empty"),
                format!("set `{var}` to the admin bearer token"),
            );
            AdminConfig::default()
        }
        None => {
            errs.push(key, format!("environment variable `{var}` is not set"), format!("set `{var}` to the admin bearer token, or remove admin.token_env to leave the admin API without auth"));
            AdminConfig::default()
        }
    }
}

fn store(errs: &mut Errors, raw: RawStore) -> StoreConfig {
    let backend = errs.field::<String>("store.backend", raw.backend);
    match backend.as_deref().unwrap_or("memory") {
        "memory" => return StoreConfig::Memory,
        "redis" => {}
        other => {
            errs.push(
                "store.backend",
                format!("unknown backend `{other}`"),
                "use `memory` (one gateway instance) or `redis` (shared by every instance)",
            );
            return StoreConfig::Memory;
        }
    }
    let single = errs.field::<String>("store.redis_url", raw.redis_url);
    let cluster = errs.field::<Vec<String>>("store.cluster_urls", raw.cluster_urls);
    let target = match (single, cluster) {
        (Some(url), None) => {
            if let Err(p) = values::redis_url(&url) {
                errs.problem("store.redis_url", p);
            }
            RedisTarget::Single(url)
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                errs.push(
                    "store.cluster_urls",
                    "no seed node listed",
                    "list at least one `redis://HOST:PORT` node of the cluster",
                );
            }
            for (i, url) in urls.iter().enumerate() {
                if let Err(p) = values::redis_url(url) {
                    errs.problem(format!("store.cluster_urls[{i}]"), p);
                }
            }
            RedisTarget::Cluster(urls)
        }
        (Some(url), Some(_)) => {
            errs.push(
                "store.cluster_urls",
                "both redis_url and cluster_urls are set",
                "keep `redis_url` for one server or `cluster_urls` for a Redis Cluster, not both",
            );
            RedisTarget::Single(url)
        }
        (None, None) => {
            errs.push(
                "store.redis_url",
                "backend `redis` needs a server",
                "set `redis_url = \"redis://HOST:6379\"` or `cluster_urls = [...]`",
            );
            RedisTarget::Single(String::new())
        }
    };
    let key_prefix = errs
        .field::<String>("store.key_prefix", raw.key_prefix)
        .unwrap_or_else(|| "tidemark".into());
    if key_prefix.is_empty() || key_prefix.chars().any(char::is_whitespace) {
        errs.push(
            "store.key_prefix",
            format!("`{key_prefix}` is not a usable key prefix"),
            "use a non-empty prefix without spaces (default `tidemark`)",
        );
    }
    StoreConfig::Redis(RedisConfig {
        target,
        key_prefix,
        connect_timeout: errs.duration_or(
            "store.connect_timeout",
            raw.connect_timeout,
            Duration::from_secs(1),
            true,
        ),
        response_timeout: errs.duration_or(
            "store.response_timeout",
            raw.response_timeout,
            Duration::from_millis(500),
            true,
        ),
        resync_interval: errs.duration_or(
            "store.resync_interval",
            raw.resync_interval,
            Duration::from_secs(5),
            true,
        ),
    })
}

fn cache(errs: &mut Errors, raw: RawCache) -> CacheConfig {
    CacheConfig {
        max_body_bytes: errs.count_or("cache.max_body_bytes", raw.max_body_bytes, 256 * 1024, 0),
        max_entries: errs.count_or("cache.max_entries", raw.max_entries, 100_000, 1),
        max_bytes: errs.count_or("cache.max_bytes", raw.max_bytes, 64 * 1024 * 1024, 1),
        statuses: super::route_fields::cache_statuses(errs, raw.statuses),
        max_request_body_bytes: errs.count_or(
            "cache.max_request_body_bytes",
            raw.max_request_body_bytes,
            1024 * 1024,
            0,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(line_column("a\nbc\n", 0), (1, 1));
        assert_eq!(line_column("a\nbc\n", 3), (2, 2));
        assert_eq!(line_column("é\nx", 1), (1, 1));
    }

    #[test]
    fn a_syntax_error_names_its_line_and_column() {
        let err = from_toml("[server]\nlisten = \"x\nmax = 1\n", None, &[]).unwrap_err();
        assert_eq!(err.errors.len(), 1);
        assert!(
            err.errors[0].key.starts_with("line 2, column"),
            "{:?}",
            err.errors[0]
        );
    }

    #[test]
    fn a_duplicate_key_names_the_key() {
        let err = from_toml("[server]\nlisten = \"a\"\nlisten = \"b\"\n", None, &[]).unwrap_err();
        assert_eq!(err.errors[0].key, "line 3, column 1");
        assert!(
            err.errors[0]
                .problem
                .contains("duplicate key (at `listen`)"),
            "{:?}",
            err.errors[0]
        );
    }

    #[test]
    fn server_limits_and_tls_are_checked() {
        let mut errs = Errors::default();
        let cfg = super::server(&mut errs, RawServer::default());
        assert!(errs.0.is_empty());
        assert_eq!(cfg.max_header_bytes, 64 * 1024);
        assert_eq!(cfg.tls, None);

        let raw: RawServer = toml::from_str(
            "max_header_bytes = 100\n[tls]\ncert_file = \"/c.pem\"\ncert_flie = 1\n",
        )
        .unwrap();
        let mut errs = Errors::default();
        let cfg = super::server(&mut errs, raw);
        let keys: Vec<&str> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["server.max_header_bytes", "server.tls.key_file"]);
        assert_eq!(cfg.tls, None);

        let raw: RawServer =
            toml::from_str("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n").unwrap();
        let cfg = super::server(&mut Errors::default(), raw);
        assert_eq!(
            cfg.tls,
            Some(TlsFiles {
                cert_file: "c.pem".into(),
                key_file: "k.pem".into()
            })
        );
    }

    #[test]
    fn an_unknown_tls_key_gets_a_suggestion() {
        let err = from_toml(
            "[server.tls]\ncert_flie = \"c\"\nkey_file = \"k\"\n",
            None,
            &[],
        )
        .unwrap_err();
        let e = err
            .errors
            .iter()
            .find(|e| e.key == "server.tls.cert_flie")
            .unwrap();
        assert_eq!(e.fix, "did you mean `cert_file`?");
    }
}
