//! Reads the TOML document into [`RawConfig`], one section (and one upstream,
//! projection and route) at a time, so one unreadable section does not hide the
//! problems of the others. Unknown keys are collected through `serde_ignored`, each
//! reported with a "did you mean" suggestion when a known key is close.

use serde::de::DeserializeOwned;

use super::raw::{keys, RawConfig};
use super::ConfigError;

/// The key of route `index` in messages: `routes[1] (read-user)`, or `routes[1]`
/// when the route has no readable name.
pub fn route_key(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("routes[{index}] ({name})"),
        None => format!("routes[{index}]"),
    }
}

/// Splits the document into raw sections; returns them and the problems found
/// (unknown keys, sections of the wrong shape).
pub fn read_sections(doc: toml::Table) -> (RawConfig, Vec<ConfigError>) {
    let mut errors = Vec::new();
    let mut raw = RawConfig::default();
    for (key, value) in doc {
        let errs = &mut errors;
        match key.as_str() {
            "server" => set(&mut raw.server, section(value, "server", server_keys, errs)),
            "headers" => set(
                &mut raw.headers,
                section(value, "headers", |_| keys::HEADERS, errs),
            ),
            "token" => set(&mut raw.token, section(value, "token", token_keys, errs)),
            "admin" => set(
                &mut raw.admin,
                section(value, "admin", |_| keys::ADMIN, errs),
            ),
            "store" => set(
                &mut raw.store,
                section(value, "store", |_| keys::STORE, errs),
            ),
            "cache" => set(
                &mut raw.cache,
                section(value, "cache", |_| keys::CACHE, errs),
            ),
            "upstreams" => {
                for (name, value) in named_tables(value, "upstreams", errs) {
                    let key = format!("upstreams.{name}");
                    if let Some(u) = section(value, &key, |_| keys::UPSTREAM, errs) {
                        raw.upstreams.insert(name.clone(), u);
                    }
                    raw.upstream_names.push(name);
                }
            }
            "projections" => {
                for (name, value) in named_tables(value, "projections", errs) {
                    let key = format!("projections.{name}");
                    if let Some(p) = section(value, &key, projection_keys, errs) {
                        raw.projections.insert(name.clone(), p);
                    }
                    raw.projection_names.push(name);
                }
            }
            "routes" => raw.routes = routes(value, errs),
            "nats" => raw.nats = section(value, "nats", |_| super::nats::KEYS, errs),
            "kafka" => raw.kafka = section(value, "kafka", |_| super::kafka::KEYS, errs),
            "databases" => {
                for (name, value) in named_tables(value, "databases", errs) {
                    let key = format!("databases.{name}");
                    if let Some(d) = section(value, &key, |_| super::databases::KEYS, errs) {
                        raw.databases.insert(name.clone(), d);
                    }
                    raw.database_names.push(name);
                }
            }
            _ => errors.push(unknown_key(&key, &key, keys::TOP)),
        }
    }
    (raw, errors)
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *slot = value;
    }
}

fn server_keys(parent: &[String]) -> &'static [&'static str] {
    if parent.first().is_some_and(|p| p == "tls") {
        keys::SERVER_TLS
    } else {
        keys::SERVER
    }
}

fn token_keys(parent: &[String]) -> &'static [&'static str] {
    if parent.first().is_some_and(|p| p == "verify_keys") {
        keys::VERIFY_KEY
    } else {
        keys::TOKEN
    }
}

fn route_keys(parent: &[String]) -> &'static [&'static str] {
    match parent.first().map(String::as_str) {
        Some("cache") => keys::ROUTE_CACHE,
        Some("fence") => super::positions::FENCE_KEYS,
        _ => keys::ROUTE,
    }
}

fn projection_keys(parent: &[String]) -> &'static [&'static str] {
    match parent.first().map(String::as_str) {
        Some("postgres") => super::positions::SOURCE_KEYS,
        Some("nats") => super::nats::SOURCE_KEYS,
        Some("kafka") => super::kafka::SOURCE_KEYS,
        _ => keys::PROJECTION,
    }
}

/// `[upstreams.NAME]`-style sections: a table of tables.
fn named_tables(
    value: toml::Value,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Vec<(String, toml::Value)> {
    match value {
        toml::Value::Table(table) => table.into_iter().collect(),
        other => {
            errors.push(wrong_shape(
                key,
                &other,
                &format!("write it as `[{key}.NAME]` tables"),
            ));
            Vec::new()
        }
    }
}

fn routes(value: toml::Value, errors: &mut Vec<ConfigError>) -> Vec<Option<super::raw::RawRoute>> {
    let toml::Value::Array(items) = value else {
        errors.push(wrong_shape(
            "routes",
            &value,
            "write each route as a `[[routes]]` table (double brackets)",
        ));
        return Vec::new();
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let name = item.get("name").and_then(|n| n.as_str()).map(str::to_owned);
            section(item, &route_key(i, name.as_deref()), route_keys, errors)
        })
        .collect()
}

/// Deserializes one table into `T`, reporting every key `T` does not know.
/// `known(parent)` gives the known keys of the table at `parent` (path segments
/// below `prefix`).
fn section<T: DeserializeOwned>(
    value: toml::Value,
    prefix: &str,
    known: fn(&[String]) -> &'static [&'static str],
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    if !value.is_table() {
        errors.push(wrong_shape(prefix, &value, "make it a table of keys"));
        return None;
    }
    let mut unknown = Vec::new();
    let result = serde_ignored::deserialize(value, |path| unknown.push(segments(&path)));
    for path in unknown {
        let Some((last, parent)) = path.split_last() else {
            continue;
        };
        let mut full = prefix.to_string();
        for seg in &path {
            if seg.parse::<usize>().is_ok() {
                full.push_str(&format!("[{seg}]"));
            } else {
                full.push('.');
                full.push_str(seg);
            }
        }
        errors.push(unknown_key(&full, last, known(parent)));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(ConfigError {
                key: nested_key(prefix, &e),
                problem: e.message().to_string(),
                fix: "use the shape shown in config/example.toml".into(),
            });
            None
        }
    }
}

/// The key of a deserialization error: `prefix` plus the path toml names in its
/// message (`in `a.b``), when it gives one.
fn nested_key(prefix: &str, e: &toml::de::Error) -> String {
    let text = e.to_string();
    let inner = text
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("in `").and_then(|l| l.strip_suffix('`')));
    match inner {
        Some(inner) => format!("{prefix}.{inner}"),
        None => prefix.to_string(),
    }
}

fn segments(path: &serde_ignored::Path<'_>) -> Vec<String> {
    use serde_ignored::Path;
    let mut out = Vec::new();
    let mut cur = path;
    loop {
        match cur {
            Path::Root => break,
            Path::Seq { parent, index } => {
                out.push(index.to_string());
                cur = parent;
            }
            Path::Map { parent, key } => {
                out.push(key.clone());
                cur = parent;
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => cur = parent,
        }
    }
    out.reverse();
    out
}

fn wrong_shape(key: &str, value: &toml::Value, fix: &str) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        problem: format!("expected a table, found {}", value.type_str()),
        fix: fix.to_string(),
    }
}

/// The error for an unknown key `name` (full key `key`) among `known`.
pub fn unknown_key(key: &str, name: &str, known: &[&str]) -> ConfigError {
    let fix = if matches!(
        name,
        "secret" | "private_key" | "public_key" | "key" | "password"
    ) {
        "key material is never read from the config file: name an environment variable \
         (`secret_env`, `private_key_env`, `public_key_env`) or a file (`*_file`) holding it"
            .to_string()
    } else {
        match suggest(name, known) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("remove it; the keys here are: {}", known.join(", ")),
        }
    };
    ConfigError {
        key: key.to_string(),
        problem: format!("unknown key `{name}`"),
        fix,
    }
}

/// The known key closest to `name`, if it is close enough to be a likely typo:
/// at most one edit for short names, up to a third of the length for longer ones.
pub fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).clamp(1, 3);
    known
        .iter()
        .map(|k| (edit_distance(&name.to_lowercase(), k), *k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insertions, deletions, substitutions), by characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (RawConfig, Vec<ConfigError>) {
        read_sections(toml::from_str(text).unwrap())
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("max_wait", "max_wait"), 0);
        assert_eq!(edit_distance("maxwait", "max_wait"), 1);
        assert_eq!(edit_distance("max_wiat", "max_wait"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn suggests_only_close_keys() {
        assert_eq!(suggest("max_wiat", keys::ROUTE), Some("max_wait"));
        assert_eq!(suggest("upstrem", keys::ROUTE), Some("upstream"));
        assert_eq!(suggest("Path", keys::ROUTE), Some("path"));
        assert_eq!(suggest("colour", keys::ROUTE), None);
    }

    #[test]
    fn every_unknown_key_is_reported_with_its_full_path() {
        let (_, errors) = read(
            "[server]\nlisten = \"127.0.0.1:1\"\nmax_held_read = 3\n\
             [token]\nsecret = \"x\"\n[[token.verify_keys]]\nkid = \"a\"\nsecret_enb = \"B\"\n\
             [[routes]]\nname = \"r\"\nmax_wiat = \"1s\"\ncache = { key = \"k\", tll = \"1s\" }\n\
             [rotues]\n",
        );
        let got: Vec<(&str, &str)> = errors
            .iter()
            .map(|e| (e.key.as_str(), e.fix.as_str()))
            .collect();
        assert!(
            got.contains(&("server.max_held_read", "did you mean `max_held_reads`?")),
            "{got:?}"
        );
        assert!(
            got.contains(&(
                "token.verify_keys[0].secret_enb",
                "did you mean `secret_env`?"
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&("routes[0] (r).max_wiat", "did you mean `max_wait`?")),
            "{got:?}"
        );
        assert!(
            got.contains(&("routes[0] (r).cache.tll", "did you mean `ttl`?")),
            "{got:?}"
        );
        assert!(
            got.contains(&("rotues", "did you mean `routes`?")),
            "{got:?}"
        );
        let secret = errors.iter().find(|e| e.key == "token.secret").unwrap();
        assert!(secret.fix.contains("never read from the config file"));
        assert_eq!(errors.len(), 6, "{errors:?}");
    }

    #[test]
    fn known_key_lists_match_the_structs() {
        fn all(keys: &[&str]) -> String {
            keys.iter()
                .filter(|k| {
                    !matches!(
                        **k,
                        "verify_keys" | "cache" | "tls" | "postgres" | "fence" | "nats" | "kafka"
                    )
                })
                .map(|k| format!("{k} = 0\n"))
                .collect()
        }
        let text = format!(
            "[server]\n{}[server.tls]\n{}[headers]\n{}[admin]\n{}[store]\n{}[cache]\n{}\
             [upstreams.u]\n{}[projections.p]\n{}[projections.p.postgres]\n{}[token]\n{}\
             [[token.verify_keys]]\n{}[databases.d]\n{}\
             [[routes]]\n{}[routes.cache]\n{}[routes.fence]\n{}\
             [projections.p.nats]\n{}[nats]\n{}[projections.p.kafka]\n{}[kafka]\n{}",
            all(keys::SERVER),
            all(keys::SERVER_TLS),
            all(keys::HEADERS),
            all(keys::ADMIN),
            all(keys::STORE),
            all(keys::CACHE),
            all(keys::UPSTREAM),
            all(keys::PROJECTION),
            all(super::super::positions::SOURCE_KEYS),
            all(keys::TOKEN),
            all(keys::VERIFY_KEY),
            all(super::super::databases::KEYS),
            all(keys::ROUTE),
            all(keys::ROUTE_CACHE),
            all(super::super::positions::FENCE_KEYS),
            all(super::super::nats::SOURCE_KEYS),
            all(super::super::nats::KEYS),
            all(super::super::kafka::SOURCE_KEYS),
            all(super::super::kafka::KEYS),
        );
        let (raw, errors) = read(&text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(raw.routes.len(), 1);
        assert!(raw.routes[0].as_ref().unwrap().cache.is_some());
        assert!(raw.routes[0].as_ref().unwrap().fence.is_some());
        assert!(raw.projections["p"].postgres.is_some());
        assert!(raw.projections["p"].nats.is_some());
        assert!(raw.nats.is_some());
        assert!(raw.projections["p"].kafka.is_some());
        assert!(raw.kafka.is_some());
        assert!(raw.databases.contains_key("d"));
        assert_eq!(raw.token.verify_keys.len(), 1);
    }

    #[test]
    fn a_section_of_the_wrong_shape_does_not_hide_the_others() {
        let (raw, errors) = read(
            "server = 5\nroutes = 3\n[upstreams]\nu = 1\nv = { url = \"http://a\" }\n[cahce]\n",
        );
        let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
        assert!(keys.contains(&"server"));
        assert!(keys.contains(&"routes"));
        assert!(keys.contains(&"upstreams.u"));
        assert!(keys.contains(&"cahce"));
        assert_eq!(raw.upstream_names, vec!["u".to_string(), "v".to_string()]);
        assert!(raw.upstreams.contains_key("v"));
    }
}
