//! The route table as `tidemark check` prints it: a header line (listeners, store),
//! then one aligned line per route in match order.

use super::values::redact_url;
use super::{Config, RedisTarget, RouteKind, StoreConfig};

const COLUMNS: [&str; 9] = [
    "#",
    "NAME",
    "KIND",
    "METHODS",
    "PATH",
    "UPSTREAM (INSTANCES)",
    "PROJECTION",
    "WAIT/ON_TIMEOUT",
    "CACHE KEY",
];

/// Renders `config`'s route table (see the module doc). Redis passwords are masked.
pub fn describe_routes(config: &Config) -> String {
    let store = match &config.store {
        StoreConfig::Memory => "memory".to_string(),
        StoreConfig::Redis(r) => match &r.target {
            RedisTarget::Single(url) => format!("redis {}", redact_url(url)),
            RedisTarget::Cluster(urls) => {
                format!(
                    "redis cluster {}",
                    urls.iter()
                        .map(|u| redact_url(u))
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
        },
    };
    let mut out = format!(
        "listen {}  admin {}  store {}  routes {}\n",
        config.server.listen,
        config.server.admin_listen,
        store,
        config.routes.len()
    );
    let mut rows: Vec<[String; 9]> = vec![COLUMNS.map(String::from)];
    for (i, r) in config.routes.iter().enumerate() {
        let methods = if r.methods.is_empty() {
            "*".to_string()
        } else {
            r.methods
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let instances = config
            .upstreams
            .get(&r.upstream)
            .map(|u| {
                u.instances
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default();
        let (projection, wait) = match &r.kind {
            RouteKind::Read(read) => {
                let mut wait = format!(
                    "{}/{}",
                    humantime::format_duration(read.max_wait),
                    read.on_timeout.as_str()
                );
                if let Some(p) = &read.primary {
                    wait.push_str(&format!("({p})"));
                }
                (read.projection.clone(), wait)
            }
            _ => ("-".to_string(), "-".to_string()),
        };
        let cache = r.cache.as_ref().map_or("-".to_string(), |c| c.key.clone());
        rows.push([
            i.to_string(),
            r.name.clone(),
            r.kind.as_str().to_string(),
            methods,
            r.path.clone(),
            format!("{} ({instances})", r.upstream),
            projection,
            wait,
            cache,
        ]);
    }
    let mut widths = [0usize; 9];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let mut line = String::new();
        for (j, (cell, w)) in row.iter().zip(widths).enumerate() {
            if j + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}
