//! `[databases.NAME]`: PostgreSQL connections tidemark may query (checkpoint source
//! `postgres` and write fences). Raw and validated halves side by side.
//!
//! No password in the file: a `url` carrying one is refused (the file is often
//! checked in); `url_env` names the variable holding a URL that may carry one.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::collect::Errors;
use super::raw::Field;

/// Connections per database. Default 2: the sources run one query per interval and
/// fences one per write without `Write-Position`; two keep a slow query from
/// blocking the next.
pub const DEFAULT_POOL_SIZE: usize = 2;
/// Default `2s`: above the kernel's first SYN retransmit (1s).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default `1s`: a checkpoint or fence query reads one row by key.
pub const DEFAULT_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// `[databases.NAME]` as written.
#[derive(Debug, Default, Deserialize)]
pub struct RawDatabase {
    /// `postgres://user@host:port/db` (no password). One of `url`, `url_env`.
    pub url: Field<String>,
    /// The environment variable holding the URL (it may carry a password).
    pub url_env: Field<String>,
    /// Default 2; at least 1.
    pub pool_size: Field<usize>,
    /// Duration. Default `2s`.
    pub connect_timeout: Field<String>,
    /// Duration. Default `1s`.
    pub query_timeout: Field<String>,
}

/// Known keys of `[databases.NAME]`.
pub const KEYS: &[&str] = &[
    "url",
    "url_env",
    "pool_size",
    "connect_timeout",
    "query_timeout",
];

/// A validated `[databases.NAME]`.
#[derive(Clone)]
pub struct DatabaseConfig {
    pub name: String,
    /// The parsed connection settings (the password, if any, came from `url_env`).
    pub connect: tokio_postgres::Config,
    /// `host:port/dbname` for logs and `/readyz` (never the password).
    pub display: String,
    /// Default 2.
    pub pool_size: usize,
    /// Default `2s`.
    pub connect_timeout: Duration,
    /// Default `1s`: a query past it fails (the source retries next interval; a
    /// fence takes its `fallback`).
    pub query_timeout: Duration,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("name", &self.name)
            .field("display", &self.display)
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("query_timeout", &self.query_timeout)
            .finish()
    }
}

/// Validates every `[databases.NAME]`; `env` resolves `url_env`.
pub fn databases(
    errs: &mut Errors,
    raw: BTreeMap<String, RawDatabase>,
    env: &[(String, String)],
) -> BTreeMap<String, DatabaseConfig> {
    raw.into_iter()
        .filter_map(|(name, raw)| database(errs, &name, raw, env).map(|d| (name, d)))
        .collect()
}

fn database(
    errs: &mut Errors,
    name: &str,
    raw: RawDatabase,
    env: &[(String, String)],
) -> Option<DatabaseConfig> {
    let p = format!("databases.{name}");
    if let Err(problem) = super::values::name(name) {
        errs.problem(&p, problem);
    }
    let pool_size = errs.count_or(
        &format!("{p}.pool_size"),
        raw.pool_size,
        DEFAULT_POOL_SIZE,
        1,
    );
    let connect_timeout = errs.duration_or(
        &format!("{p}.connect_timeout"),
        raw.connect_timeout,
        DEFAULT_CONNECT_TIMEOUT,
        true,
    );
    let query_timeout = errs.duration_or(
        &format!("{p}.query_timeout"),
        raw.query_timeout,
        DEFAULT_QUERY_TIMEOUT,
        true,
    );
    let url = errs.field::<String>(&format!("{p}.url"), raw.url);
    let url_env = errs.field::<String>(&format!("{p}.url_env"), raw.url_env);
    let (key, text, from_file) = match (url, url_env) {
        (Some(url), None) => (format!("{p}.url"), url, true),
        (None, Some(var)) => {
            let key = format!("{p}.url_env");
            match env.iter().find(|(k, _)| *k == var) {
                Some((_, v)) if !v.trim().is_empty() => (key, v.clone(), false),
                _ => {
                    errs.push(
                        key,
                        format!("environment variable `{var}` is not set or empty"),
                        format!("set `{var}` to the database URL, e.g. `postgres://tidemark:PASSWORD@HOST:5432/app`"),
                    );
                    return None;
                }
            }
        }
        (Some(_), Some(_)) => {
            errs.push(
                format!("{p}.url"),
                "both `url` and `url_env` are set",
                "keep one: `url` (no password) or `url_env` (the variable holding the URL)",
            );
            return None;
        }
        (None, None) => {
            errs.push(
                format!("{p}.url"),
                "the database has no URL",
                "set `url = \"postgres://USER@HOST:5432/DB\"` or `url_env = \"VARIABLE\"`",
            );
            return None;
        }
    };
    let connect = match tokio_postgres::Config::from_str(text.trim()) {
        Ok(c) => c,
        Err(e) => {
            // The error text never echoes the URL (it may hold a password).
            errs.push(
                key,
                format!("not a PostgreSQL connection URL ({e})"),
                "write `postgres://USER@HOST:PORT/DB`",
            );
            return None;
        }
    };
    if from_file && connect.get_password().is_some() {
        errs.push(
            key,
            "the URL carries a password, and config files are often checked in",
            format!("remove the password and put the whole URL in an environment variable named by `{p}.url_env`"),
        );
        return None;
    }
    if connect.get_hosts().is_empty() {
        errs.push(
            key,
            "the URL names no host",
            "write `postgres://USER@HOST:PORT/DB`",
        );
        return None;
    }
    Some(DatabaseConfig {
        name: name.to_string(),
        display: display(&connect),
        connect,
        pool_size,
        connect_timeout,
        query_timeout,
    })
}

/// `host:port/dbname`, for messages.
fn display(c: &tokio_postgres::Config) -> String {
    let host = match c.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => String::new(),
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str, env: &[(&str, &str)]) -> (BTreeMap<String, DatabaseConfig>, Errors) {
        let raw: BTreeMap<String, RawDatabase> = toml::from_str(toml_text).unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut errs = Errors::default();
        let out = databases(&mut errs, raw, &env);
        (out, errs)
    }

    #[test]
    fn defaults_and_display() {
        let (dbs, errs) = check("[app]\nurl = \"postgres://tm@127.0.0.1:6543/app\"", &[]);
        assert!(errs.0.is_empty(), "{:?}", errs.0);
        let db = &dbs["app"];
        assert_eq!(db.pool_size, 2);
        assert_eq!(db.connect_timeout, Duration::from_secs(2));
        assert_eq!(db.query_timeout, Duration::from_secs(1));
        assert_eq!(db.display, "127.0.0.1:6543/app");
    }

    #[test]
    fn a_password_in_the_file_is_refused_with_the_fix() {
        let (dbs, errs) = check("[app]\nurl = \"postgres://tm:s3cret@db/app\"", &[]);
        assert!(dbs.is_empty());
        assert_eq!(errs.0.len(), 1);
        assert_eq!(errs.0[0].key, "databases.app.url");
        assert!(errs.0[0].fix.contains("url_env"), "{:?}", errs.0[0]);
        assert!(!format!("{:?}", errs.0).contains("s3cret"));
    }

    #[test]
    fn url_env_may_carry_a_password() {
        let (dbs, errs) = check(
            "[app]\nurl_env = \"APP_DB\"",
            &[("APP_DB", "postgres://tm:s3cret@db:5432/app")],
        );
        assert!(errs.0.is_empty(), "{:?}", errs.0);
        assert!(!format!("{:?}", dbs["app"]).contains("s3cret"));
        let (_, errs) = check("[app]\nurl_env = \"MISSING\"", &[]);
        assert_eq!(errs.0[0].key, "databases.app.url_env");
    }

    #[test]
    fn every_problem_is_reported() {
        let (_, errs) = check(
            "[a]\npool_size = 0\nquery_timeout = \"soon\"\n[b]\nurl = \"x\"\nurl_env = \"Y\"",
            &[],
        );
        let keys: Vec<_> = errs.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "databases.a.pool_size",
                "databases.a.query_timeout",
                "databases.a.url",
                "databases.b.url"
            ]
        );
    }
}
