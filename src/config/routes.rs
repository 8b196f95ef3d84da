//! `[[routes]]` and every cross-reference: upstream, projection and primary names,
//! read-only keys on other kinds, cache keys against the path's captures, default
//! logs against the projection's logs, and one upstream per projection (whose
//! instances become the projection's instances, checked against `poll_urls`).

use super::raw::RawRoute;
use super::route_fields::{cache, methods, read};
use super::sections::route_key;
use super::validate::Errors;
use super::{values, ProjectionConfig, RouteConfig, RouteKind, UpstreamConfig};
use std::collections::BTreeMap;

/// Every upstream and projection name in the file, readable or not, so a reference to
/// a broken section is not reported again as dangling.
pub struct Names<'a> {
    /// Every `[upstreams.NAME]`.
    pub upstreams: &'a [String],
    /// Every `[projections.NAME]`.
    pub projections: &'a [String],
}

/// Keys only a read route takes.
const READ_ONLY: &[&str] = &[
    "projection",
    "max_wait",
    "on_timeout",
    "primary",
    "staleness_budget",
    "monotonic",
];

/// Validates the routes in file order; returns them and the projections with their
/// instances filled in.
pub fn routes(
    errs: &mut Errors,
    raw: Vec<Option<RawRoute>>,
    names: &Names<'_>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    mut projections: BTreeMap<String, ProjectionConfig>,
) -> (Vec<RouteConfig>, BTreeMap<String, ProjectionConfig>) {
    let mut out = Vec::new();
    let mut seen_names: Vec<(String, String)> = Vec::new();
    // projection -> (upstream, key of the first read route using it)
    let mut readers: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let Some(mut raw) = raw else { continue };
        let name_key = format!("{}.name", route_key(i, None));
        if raw.name.is_none() {
            errs.push(
                &name_key,
                "the route has no name",
                "set `name = \"...\"` (it labels metrics and logs)",
            );
        }
        let name = errs.field::<String>(&name_key, raw.name.take());
        let key = route_key(i, name.as_deref());
        if let Some(name) = &name {
            if let Some((_, first)) = seen_names.iter().find(|(n, _)| n == name) {
                errs.push(
                    format!("{key}.name"),
                    format!("the name `{name}` is also used by {first}"),
                    "give every route its own name (it labels metrics and logs)",
                );
            }
            seen_names.push((name.clone(), key.clone()));
        }
        let Some(route) = route(errs, i, name, raw, names, &projections) else {
            continue;
        };
        if let RouteKind::Read(read) = &route.kind {
            match readers.get(&read.projection) {
                Some((up, first)) if *up != route.upstream => errs.push(
                    format!("{key}.upstream"),
                    format!("projection `{}` is read through upstream `{up}` by {first}, and through `{}` here", read.projection, route.upstream),
                    format!("use upstream `{up}`: a projection's instances are those of the one upstream its read routes use"),
                ),
                Some(_) => {}
                None => {
                    readers.insert(read.projection.clone(), (route.upstream.clone(), key));
                }
            }
        }
        out.push(route);
    }
    for (name, p) in projections.iter_mut() {
        let Some(up) = readers.get(name).and_then(|(up, _)| upstreams.get(up)) else {
            continue;
        };
        p.instances = up.instances.iter().map(|i| i.name.clone()).collect();
        let Some(poll) = &p.poll else { continue };
        for (inst, _) in &poll.targets {
            if let Some(inst) = inst.as_ref().filter(|i| !p.instances.contains(i)) {
                errs.push(
                    format!("projections.{name}.poll_urls.{inst}"),
                    format!("upstream `{}` has no instance `{inst}`", up.name),
                    format!(
                        "use the instance names of upstream `{}`: {}",
                        up.name,
                        p.instances.join(", ")
                    ),
                );
            }
        }
    }
    (out, projections)
}

pub(super) fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none are defined".to_string()
    } else {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A reference to a defined name, or the error listing the valid ones.
pub(super) fn reference(errs: &mut Errors, key: &str, what: &str, name: &str, valid: &[String]) {
    if !valid.iter().any(|v| v == name) {
        errs.push(
            key,
            format!("no {what} is named `{name}`"),
            format!("use one of the {what}s: {}", list(valid)),
        );
    }
}

fn route(
    errs: &mut Errors,
    i: usize,
    name: Option<String>,
    raw: RawRoute,
    names: &Names<'_>,
    projections: &BTreeMap<String, ProjectionConfig>,
) -> Option<RouteConfig> {
    let p = route_key(i, name.as_deref());
    let k = |field: &str| format!("{p}.{field}");
    if let Some(Err(problem)) = name.as_deref().map(values::name) {
        errs.problem(k("name"), problem);
    }
    let kind = errs.field::<String>(&k("kind"), raw.kind);
    let kind = match kind.as_deref() {
        Some(s @ ("read" | "write" | "passthrough")) => Some(s),
        Some(other) => {
            errs.push(
                k("kind"),
                format!("unknown kind `{other}`"),
                "use `read`, `write` or `passthrough`",
            );
            None
        }
        None => {
            errs.push(
                k("kind"),
                "the route has no kind",
                "set `kind = \"read\"`, `\"write\"` or `\"passthrough\"`",
            );
            None
        }
    };
    let methods = methods(errs, &k("methods"), raw.methods, kind);
    let path = errs.field::<String>(&k("path"), raw.path);
    let captures = match &path {
        None => {
            errs.push(
                k("path"),
                "the route has no path",
                "set `path = \"/users/{id}\"` (or `\"/{*rest}\"` for everything)",
            );
            None
        }
        Some(path) => values::path_pattern(path)
            .map_err(|pr| errs.problem(k("path"), pr))
            .ok(),
    };
    let upstream = errs.field::<String>(&k("upstream"), raw.upstream);
    match &upstream {
        Some(u) => reference(errs, &k("upstream"), "upstream", u, names.upstreams),
        None => errs.push(
            k("upstream"),
            "the route has no upstream",
            format!("set `upstream` to one of: {}", list(names.upstreams)),
        ),
    }
    let default_log = errs.field::<String>(&k("default_log"), raw.default_log);
    let cache = raw
        .cache
        .and_then(|c| cache(errs, &k("cache"), c, captures.as_deref(), kind));

    // Read-only keys, read or reported.
    let projection = errs.field::<String>(&k("projection"), raw.projection);
    let max_wait = errs.duration(&k("max_wait"), raw.max_wait);
    let on_timeout = errs.field::<String>(&k("on_timeout"), raw.on_timeout);
    let primary = errs.field::<String>(&k("primary"), raw.primary);
    let staleness_budget = errs.duration(&k("staleness_budget"), raw.staleness_budget);
    let monotonic = errs.field::<bool>(&k("monotonic"), raw.monotonic);
    if let Some(kind @ ("write" | "passthrough")) = kind {
        let set = [
            projection.is_some(),
            max_wait.is_some(),
            on_timeout.is_some(),
            primary.is_some(),
            staleness_budget.is_some(),
            monotonic.is_some(),
        ];
        for (field, _) in READ_ONLY.iter().zip(set).filter(|(_, s)| *s) {
            errs.push(
                k(field),
                format!("`{field}` belongs to read routes; this route is `{kind}`"),
                format!("remove `{field}`, or make the route `kind = \"read\"`"),
            );
        }
    }

    let kind = match kind? {
        "write" => {
            if let Some(log) = default_log
                .as_ref()
                .filter(|l| !crate::position::valid_log_name(l))
            {
                errs.push(
                    k("default_log"),
                    format!("`{log}` is not a valid log name"),
                    "use up to 128 characters without `,`, `=`, `;`, quotes or white space",
                );
            }
            RouteKind::Write
        }
        "passthrough" => {
            if default_log.is_some() {
                errs.push(
                    k("default_log"),
                    "`default_log` belongs to read and write routes; this route is `passthrough`",
                    "remove it (passthrough routes carry no token logic)",
                );
            }
            RouteKind::Passthrough
        }
        _ => {
            let read = read(
                errs,
                &k,
                projection,
                max_wait,
                on_timeout,
                primary,
                staleness_budget,
                monotonic,
                names,
            )?;
            let logs = projections.get(&read.projection).map(|p| p.logs.as_slice());
            match (&default_log, logs) {
                (Some(log), Some(logs)) if !logs.contains(log) => errs.push(
                    k("default_log"),
                    format!(
                        "log `{log}` is not consumed by projection `{}`",
                        read.projection
                    ),
                    format!("use one of its logs: {}", list(logs)),
                ),
                _ => {}
            }
            let default_log = default_log.clone().or_else(|| match logs {
                Some([only]) => Some(only.clone()),
                _ => None,
            });
            return Some(RouteConfig {
                name: name?,
                kind: RouteKind::Read(read),
                methods,
                path: path?,
                upstream: upstream?,
                default_log,
                cache,
            });
        }
    };
    Some(RouteConfig {
        name: name?,
        kind,
        methods,
        path: path?,
        upstream: upstream?,
        default_log,
        cache,
    })
}
