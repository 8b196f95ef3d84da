//! `[upstreams.NAME]` and `[projections.NAME]`, each on its own. The links between
//! them (a projection's instances are those of the upstream its read routes use) are
//! made in [`super::routes`], where the routes are known.

use std::collections::BTreeMap;
use std::time::Duration;

use super::raw::{Field, RawProjection, RawUpstream};
use super::validate::Errors;
use super::{values, InstanceConfig, PollConfig, ProjectionConfig, SourceKind, UpstreamConfig};

/// Default of `upstreams.NAME.max_connections` (per instance).
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Instance name of an upstream given by `url`.
pub const DEFAULT_INSTANCE: &str = "default";

/// Default of `upstreams.NAME.connect_timeout`: survives one dropped SYN (Linux
/// retransmits it after 1 s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Default of `upstreams.NAME.eject_for`.
pub const DEFAULT_EJECT_FOR: Duration = Duration::from_secs(5);

/// Validates every upstream; defaults: connect_timeout `3s`, eject_for `5s`, timeout `30s`,
/// pool_idle_timeout `90s`, pool_max_idle 64, max_connections 256 (at least 1).
pub fn upstreams(
    errs: &mut Errors,
    raw: BTreeMap<String, RawUpstream>,
) -> BTreeMap<String, UpstreamConfig> {
    raw.into_iter()
        .map(|(name, raw)| {
            let up = upstream(errs, &name, raw);
            (name, up)
        })
        .collect()
}

fn upstream(errs: &mut Errors, name: &str, raw: RawUpstream) -> UpstreamConfig {
    let p = format!("upstreams.{name}");
    if let Err(problem) = values::name(name) {
        errs.problem(&p, problem);
    }
    let url = errs.field::<String>(&format!("{p}.url"), raw.url);
    let named = errs.field::<BTreeMap<String, String>>(&format!("{p}.instances"), raw.instances);
    let mut instances = Vec::new();
    match (url, named) {
        (Some(url), None) => {
            if let Some(url) = upstream_url(errs, &format!("{p}.url"), &url) {
                instances.push(InstanceConfig {
                    name: DEFAULT_INSTANCE.into(),
                    url,
                });
            }
        }
        (None, Some(named)) => {
            if named.is_empty() {
                errs.push(
                    format!("{p}.instances"),
                    "no instance listed",
                    "list at least one: `instances = { a = \"http://10.0.0.5:8080\" }`",
                );
            }
            for (inst, url) in named {
                let key = format!("{p}.instances.{inst}");
                if let Err(problem) = values::name(&inst) {
                    errs.problem(&key, problem);
                }
                if let Some(url) = upstream_url(errs, &key, &url) {
                    instances.push(InstanceConfig { name: inst, url });
                }
            }
        }
        (Some(_), Some(_)) => errs.push(
            &p,
            "both `url` and `instances` are set",
            "keep `url` for one instance or `instances = { name = url, ... }` for several",
        ),
        (None, None) => errs.push(
            format!("{p}.url"),
            "the upstream has no address",
            "set `url = \"http://HOST:PORT\"` or `instances = { a = \"http://...\" }`",
        ),
    }
    let https = instances
        .iter()
        .any(|i| i.url.scheme_str() == Some("https"));
    let ca_key = format!("{p}.ca_file");
    let ca_file = errs
        .field::<String>(&ca_key, raw.ca_file)
        .map(std::path::PathBuf::from);
    let ca_certs = match &ca_file {
        None => Vec::new(),
        Some(_) if !https => {
            errs.push(
                &ca_key,
                "set, but no instance of the upstream uses `https://`",
                "remove `ca_file`, or give the instances `https://` URLs",
            );
            Vec::new()
        }
        Some(path) => ca_certificates(path).unwrap_or_else(|problem| {
            errs.push(
                &ca_key,
                format!("`{}`: {problem}", path.display()),
                "name a readable PEM file with `-----BEGIN CERTIFICATE-----` blocks",
            );
            Vec::new()
        }),
    };
    UpstreamConfig {
        name: name.to_string(),
        instances,
        ca_file,
        ca_certs,
        connect_timeout: errs.duration_or(
            &format!("{p}.connect_timeout"),
            raw.connect_timeout,
            DEFAULT_CONNECT_TIMEOUT,
            true,
        ),
        eject_for: errs.duration_or(
            &format!("{p}.eject_for"),
            raw.eject_for,
            DEFAULT_EJECT_FOR,
            false,
        ),
        timeout: errs.duration_or(
            &format!("{p}.timeout"),
            raw.timeout,
            Duration::from_secs(30),
            true,
        ),
        pool_idle_timeout: errs.duration_or(
            &format!("{p}.pool_idle_timeout"),
            raw.pool_idle_timeout,
            Duration::from_secs(90),
            true,
        ),
        pool_max_idle: errs.count_or(&format!("{p}.pool_max_idle"), raw.pool_max_idle, 64, 0),
        max_connections: errs.count_or(
            &format!("{p}.max_connections"),
            raw.max_connections,
            DEFAULT_MAX_CONNECTIONS,
            1,
        ),
    }
}

/// The certificates of a PEM file (at least one).
fn ca_certificates(
    path: &std::path::Path,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, String> {
    use rustls_pki_types::pem::PemObject;
    let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| match e {
            rustls_pki_types::pem::Error::Io(io) => format!("cannot read the file: {io}"),
            other => format!("not a valid PEM file: {other}"),
        })?;
    if certs.is_empty() {
        return Err("no `-----BEGIN CERTIFICATE-----` block".into());
    }
    Ok(certs)
}

/// An instance's URL: `http://` or `https://`.
fn upstream_url(errs: &mut Errors, key: &str, text: &str) -> Option<http::Uri> {
    values::upstream_url(text)
        .map_err(|p| errs.problem(key, p))
        .ok()
}

fn instance_url(errs: &mut Errors, key: &str, text: &str) -> Option<http::Uri> {
    values::http_url(text)
        .map_err(|p| errs.problem(key, p))
        .ok()
}

/// `push` | `redis` | `header` | `poll` | `postgres`.
pub fn parse_source(text: &str) -> Option<SourceKind> {
    match text {
        "push" => Some(SourceKind::Push),
        "redis" => Some(SourceKind::Redis),
        "header" => Some(SourceKind::Header),
        "poll" => Some(SourceKind::Poll),
        "nats" => Some(SourceKind::Nats),
        "kafka" => Some(SourceKind::Kafka),
        "postgres" => Some(SourceKind::Postgres),
        _ => None,
    }
}

/// Validates every projection (instances left empty, filled from the routes);
/// `redis_store` tells whether the `redis` source is available.
pub fn projections(
    errs: &mut Errors,
    raw: BTreeMap<String, RawProjection>,
    redis_store: bool,
) -> BTreeMap<String, ProjectionConfig> {
    raw.into_iter()
        .map(|(name, raw)| {
            let p = projection(errs, &name, raw, redis_store);
            (name, p)
        })
        .collect()
}

fn projection(
    errs: &mut Errors,
    name: &str,
    raw: RawProjection,
    redis_store: bool,
) -> ProjectionConfig {
    let p = format!("projections.{name}");
    if let Err(problem) = values::name(name) {
        errs.problem(&p, problem);
    }
    let logs_key = format!("{p}.logs");
    let logs = errs.field::<Vec<String>>(&logs_key, raw.logs);
    let logs = match logs {
        None => {
            errs.push(
                &logs_key,
                "the projection names no log",
                "list the logs it consumes: `logs = [\"users\"]`",
            );
            Vec::new()
        }
        Some(logs) => {
            if logs.is_empty() {
                errs.push(
                    &logs_key,
                    "the list is empty",
                    "list the logs it consumes: `logs = [\"users\"]`",
                );
            }
            for (i, log) in logs.iter().enumerate() {
                if !crate::position::valid_log_name(log) {
                    errs.push(
                        format!("{logs_key}[{i}]"),
                        format!("`{log}` is not a valid log name"),
                        "use up to 128 characters without `,`, `=`, `;`, quotes or white space",
                    );
                } else if logs[..i].contains(log) {
                    errs.push(
                        format!("{logs_key}[{i}]"),
                        format!("log `{log}` is listed twice"),
                        "list each log once",
                    );
                }
            }
            logs
        }
    };

    let src_key = format!("{p}.sources");
    let mut sources = Vec::new();
    let texts = errs
        .field::<Vec<String>>(&src_key, raw.sources)
        .unwrap_or_else(|| vec!["push".into()]);
    if texts.is_empty() {
        errs.push(
            &src_key,
            "no checkpoint source",
            "list at least one of `push`, `redis`, `header`, `poll`, `postgres`, `nats`, `kafka`",
        );
    }
    for (i, text) in texts.iter().enumerate() {
        match parse_source(text) {
            None => errs.push(
                format!("{src_key}[{i}]"),
                format!("unknown source `{text}`"),
                "use `push`, `redis`, `header`, `poll`, `postgres`, `nats` or `kafka`",
            ),
            Some(s) if sources.contains(&s) => errs.push(
                format!("{src_key}[{i}]"),
                format!("source `{text}` is listed twice"),
                "list each source once",
            ),
            Some(SourceKind::Redis) if !redis_store => {
                errs.push(
                    format!("{src_key}[{i}]"),
                    "source `redis` needs the Redis store",
                    "set `[store] backend = \"redis\"`, or use `push`, `header` or `poll`",
                );
                sources.push(SourceKind::Redis);
            }
            Some(s) => sources.push(s),
        }
    }
    let settings = PollFields {
        url: raw.poll_url,
        urls: raw.poll_urls,
        interval: raw.poll_interval,
        timeout: raw.poll_timeout,
    };
    let poll = poll(errs, &p, settings, sources.contains(&SourceKind::Poll));
    ProjectionConfig {
        name: name.to_string(),
        logs,
        sources,
        instances: Vec::new(),
        poll,
        nats: None,
        kafka: None,
    }
}

/// The `poll_*` keys of a projection.
struct PollFields {
    url: Field<String>,
    urls: Field<BTreeMap<String, String>>,
    interval: Field<String>,
    timeout: Field<String>,
}

fn poll(errs: &mut Errors, p: &str, raw: PollFields, wanted: bool) -> Option<PollConfig> {
    let url = errs.field::<String>(&format!("{p}.poll_url"), raw.url);
    let urls = errs.field::<BTreeMap<String, String>>(&format!("{p}.poll_urls"), raw.urls);
    let interval = errs.duration_or(
        &format!("{p}.poll_interval"),
        raw.interval,
        Duration::from_secs(1),
        true,
    );
    let timeout = errs.duration_or(
        &format!("{p}.poll_timeout"),
        raw.timeout,
        Duration::from_millis(500),
        true,
    );
    if !wanted {
        if url.is_some() || urls.is_some() {
            let which = if url.is_some() {
                "poll_url"
            } else {
                "poll_urls"
            };
            errs.push(
                format!("{p}.{which}"),
                "a poll URL is set but `poll` is not among the sources",
                "add \"poll\" to `sources`, or remove the URL",
            );
        }
        return None;
    }
    let mut targets = Vec::new();
    match (url, urls) {
        (Some(url), None) => {
            if let Some(uri) = instance_url(errs, &format!("{p}.poll_url"), &url) {
                targets.push((None, uri));
            }
        }
        (None, Some(urls)) => {
            if urls.is_empty() {
                errs.push(
                    format!("{p}.poll_urls"),
                    "no URL listed",
                    "map each instance to its checkpoint URL: `poll_urls = { a = \"http://...\" }`",
                );
            }
            for (inst, url) in urls {
                if let Some(uri) = instance_url(errs, &format!("{p}.poll_urls.{inst}"), &url) {
                    targets.push((Some(inst), uri));
                }
            }
        }
        (Some(_), Some(_)) => errs.push(
            format!("{p}.poll_urls"),
            "both `poll_url` and `poll_urls` are set",
            "keep `poll_url` (every instance) or `poll_urls` (one per instance)",
        ),
        (None, None) => errs.push(
            format!("{p}.poll_url"),
            "source `poll` needs a URL",
            "set `poll_url = \"http://HOST/checkpoint\"` or `poll_urls = { instance = url }`",
        ),
    }
    Some(PollConfig {
        targets,
        interval,
        timeout,
    })
}
