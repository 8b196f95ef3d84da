//! The parts of a route with their own rules: read-route settings (`projection`,
//! `max_wait`, `on_timeout`, `primary`, ...), `methods` and `cache`.

use std::time::Duration;

use http::Method;

use super::raw::{Field, RawRouteCache};
use super::routes::{list, reference, Names};
use super::validate::Errors;
use super::{values, CacheScope, CacheVary, OnTimeout, ReadRoute, RouteCache};

/// A read route's settings; `None` when it has no projection (reported).
#[allow(clippy::too_many_arguments)]
pub fn read(
    errs: &mut Errors,
    k: &dyn Fn(&str) -> String,
    projection: Option<String>,
    max_wait: Option<Duration>,
    on_timeout: Option<String>,
    primary: Option<String>,
    staleness_budget: Option<Duration>,
    monotonic: Option<bool>,
    names: &Names<'_>,
) -> Option<ReadRoute> {
    match &projection {
        Some(p) => reference(errs, &k("projection"), "projection", p, names.projections),
        None => errs.push(
            k("projection"),
            "a read route needs a projection",
            format!("set `projection` to one of: {}", list(names.projections)),
        ),
    }
    if let Some(p) = &primary {
        reference(errs, &k("primary"), "upstream", p, names.upstreams);
    }
    let on_timeout = match on_timeout.as_deref() {
        None if primary.is_some() => OnTimeout::Primary,
        None => OnTimeout::Error,
        Some("primary") => {
            if primary.is_none() {
                errs.push(
                    k("on_timeout"),
                    "`on_timeout = \"primary\"` but the route has no primary",
                    format!(
                        "set `primary` to an upstream ({}), or use `stale` or `error`",
                        list(names.upstreams)
                    ),
                );
            }
            OnTimeout::Primary
        }
        Some("stale") => OnTimeout::Stale,
        Some("error") => OnTimeout::Error,
        Some(other) => {
            errs.push(
                k("on_timeout"),
                format!("unknown value `{other}`"),
                "use `primary`, `stale` or `error`",
            );
            OnTimeout::Error
        }
    };
    Some(ReadRoute {
        projection: projection?,
        max_wait: max_wait.unwrap_or(Duration::from_millis(300)),
        on_timeout,
        primary,
        staleness_budget,
        monotonic: monotonic.unwrap_or(false),
    })
}

/// The route's methods; defaults by kind (read GET, HEAD; write POST, PUT, PATCH,
/// DELETE; passthrough every method, an empty list).
pub fn methods(
    errs: &mut Errors,
    key: &str,
    field: Field<Vec<String>>,
    kind: Option<&str>,
) -> Vec<Method> {
    let Some(texts) = errs.field::<Vec<String>>(key, field) else {
        return match kind {
            Some("read") => vec![Method::GET, Method::HEAD],
            Some("write") => vec![Method::POST, Method::PUT, Method::PATCH, Method::DELETE],
            _ => Vec::new(),
        };
    };
    let mut out: Vec<Method> = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        match values::method(text) {
            Ok(m) if !out.contains(&m) => out.push(m),
            Ok(_) => {}
            Err(p) => errs.problem(format!("{key}[{i}]"), p),
        }
    }
    out
}

/// `cache = { key, ttl, scope }`; the key's captures are checked against the path's.
pub fn cache(
    errs: &mut Errors,
    key: &str,
    raw: RawRouteCache,
    captures: Option<&[String]>,
    kind: Option<&str>,
) -> Option<RouteCache> {
    if kind == Some("passthrough") {
        errs.push(
            key,
            "`cache` belongs to read and write routes; this route is `passthrough`",
            "remove `cache`, or make the route `read` or `write`",
        );
    }
    let template = errs.field::<String>(&format!("{key}.key"), raw.key);
    match (&template, captures) {
        (None, _) => errs.push(
            format!("{key}.key"),
            "the cache has no key",
            "set `key`, e.g. `cache = { key = \"user:{id}\" }`",
        ),
        (Some(t), Some(caps)) => {
            if let Err(p) = values::cache_key(t, caps) {
                errs.problem(format!("{key}.key"), p);
            } else if let Err(e) = crate::route::KeyTemplate::parse(t, caps) {
                errs.push(
                    format!("{key}.key"),
                    format!("cache key `{t}`: {e}"),
                    "separate captures with literal text such as `:` and leave `%` out",
                );
            }
        }
        (Some(_), None) => {}
    }
    let ttl = errs.duration_or(
        &format!("{key}.ttl"),
        raw.ttl,
        Duration::from_secs(30),
        true,
    );
    let scope = match errs
        .field::<String>(&format!("{key}.scope"), raw.scope)
        .as_deref()
    {
        None | Some("session") => CacheScope::Session,
        Some("global") => CacheScope::Global,
        Some(other) => {
            errs.push(
                format!("{key}.scope"),
                format!("unknown scope `{other}`"),
                "use `session` (default: only the writer's session sees it) or `global`",
            );
            CacheScope::Session
        }
    };
    let vary = cache_vary(errs, &format!("{key}.vary"), raw.vary);
    Some(RouteCache {
        key: template?,
        ttl,
        scope,
        vary,
    })
}

/// `cache.vary`: header names and `cookie:NAME`s; default `["authorization"]`.
fn cache_vary(errs: &mut Errors, key: &str, raw: Field<Vec<String>>) -> Vec<CacheVary> {
    let Some(items) = errs.field::<Vec<String>>(key, raw) else {
        return vec![CacheVary::Header(http::header::AUTHORIZATION)];
    };
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        match item.strip_prefix("cookie:") {
            Some(name) => match values::cookie_name(name) {
                Ok(()) => out.push(CacheVary::Cookie(name.to_string())),
                Err(p) => errs.problem(key, p),
            },
            None => match http::HeaderName::from_bytes(item.as_bytes()) {
                Ok(name) if name == http::header::COOKIE => errs.push(
                    key,
                    "`cookie` as a whole varies on every cookie, the token's included",
                    "name the cookies that identify the user: `cookie:NAME`",
                ),
                Ok(name) => out.push(CacheVary::Header(name)),
                Err(_) => errs.push(
                    key,
                    format!("`{item}` is not a header name"),
                    "use header names (`authorization`) or `cookie:NAME`",
                ),
            },
        }
    }
    out
}

/// `[cache] statuses`: 2xx statuses whose answers have a body; default `[200, 201]`.
pub fn cache_statuses(errs: &mut Errors, raw: Field<Vec<u16>>) -> Vec<u16> {
    let Some(statuses) = errs.field::<Vec<u16>>("cache.statuses", raw) else {
        return vec![200, 201];
    };
    for &s in &statuses {
        if !(200..=299).contains(&s) || (204..=206).contains(&s) {
            errs.push(
                "cache.statuses",
                format!("{s} can't be cached: a cached answer stands for the resource"),
                "list 2xx statuses that carry the resource, e.g. `[200, 201]` (not 204, 205 or 206)",
            );
        }
    }
    statuses
}
