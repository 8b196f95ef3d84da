//! Config loading as a user meets it: the SPEC example, the shipped files, every
//! error kind in one run, unknown-key suggestions, env overrides, durations.

use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use tidemark::config::{
    validate::describe_routes, CacheScope, Config, ConfigErrors, KeyMaterial, OnInvalid, OnTimeout,
    RouteKind, SourceKind, StoreConfig, TokenAlgorithm,
};

/// The example of SPEC "Config", verbatim.
const SPEC_EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
admin_listen = "127.0.0.1:9090"
max_held_reads = 10000

[token]
secret_env = "TIDEMARK_SECRET"   # HS256 key read from this variable
ttl = "1h"
on_invalid = "reject"

[store]
backend = "memory"               # memory (embedded, one instance) | redis
# redis_url = "redis://10.0.0.5:6379"                         # one Redis server
# cluster_urls = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"]   # Redis Cluster seeds

[upstreams.user-commands]
url = "http://127.0.0.1:7001"

[upstreams.user-view]
instances = { a = "http://127.0.0.1:7002", b = "http://127.0.0.1:7003" }

[projections.user-view]
logs = ["users"]
sources = ["push", "header"]

[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT", "PATCH", "POST", "DELETE"]
path = "/users/{id}"
upstream = "user-commands"
default_log = "users"
cache = { key = "user:{id}", ttl = "30s" }

[[routes]]
name = "read-user"
kind = "read"
methods = ["GET"]
path = "/users/{id}"
upstream = "user-view"
projection = "user-view"
max_wait = "300ms"
on_timeout = "primary"           # primary | stale | error
primary = "user-commands"
cache = { key = "user:{id}" }
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, Some(PathBuf::from("test.toml")), &env(vars))
}

fn errors(text: &str) -> ConfigErrors {
    load(text, &[]).expect_err("the config should be refused")
}

fn keys(errs: &ConfigErrors) -> Vec<&str> {
    errs.errors.iter().map(|e| e.key.as_str()).collect()
}

fn shipped(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_spec_example_loads_with_defaults_filled_in() {
    let c = load(SPEC_EXAMPLE, &[]).unwrap();
    assert_eq!(c.source, Some(PathBuf::from("test.toml")));
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
    assert_eq!(c.server.max_held_reads, 10_000);
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
    assert_eq!((c.server.trusted_hops, c.server.max_headers), (0, 100));
    assert_eq!(c.headers.token.as_str(), "consistency-token");
    assert_eq!(c.headers.write_position.as_str(), "write-position");

    assert_eq!(c.token.issuer, "tidemark");
    assert_eq!(c.token.ttl, Duration::from_secs(3600));
    assert_eq!(c.token.on_invalid, OnInvalid::Reject);
    assert!(c.token.cookie.is_none());
    assert_eq!(c.token.signing.kid, "k1");
    assert_eq!(c.token.signing.algorithm, TokenAlgorithm::Hs256);
    assert_eq!(
        c.token.signing.material,
        KeyMaterial::Env("TIDEMARK_SECRET".into())
    );
    assert!(c.token.verify_keys.is_empty());
    assert!(c.admin.token.is_none());
    assert!(matches!(c.store, StoreConfig::Memory));
    assert_eq!(
        (c.cache.max_body_bytes, c.cache.max_entries),
        (262_144, 100_000)
    );

    let commands = &c.upstreams["user-commands"];
    assert_eq!(commands.instances.len(), 1);
    assert_eq!(commands.instances[0].name, "default");
    assert_eq!(commands.instances[0].url, "http://127.0.0.1:7001/");
    assert_eq!(commands.connect_timeout, Duration::from_secs(3));
    assert_eq!(commands.eject_for, Duration::from_secs(5));
    assert!(commands.ca_file.is_none());
    assert_eq!(commands.timeout, Duration::from_secs(30));
    assert_eq!(commands.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(commands.pool_max_idle, 64);
    assert_eq!(commands.max_connections, 256);
    let view = &c.upstreams["user-view"];
    let names: Vec<&str> = view.instances.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);

    let p = &c.projections["user-view"];
    assert_eq!(p.logs, ["users"]);
    assert_eq!(p.sources, [SourceKind::Push, SourceKind::Header]);
    assert_eq!(p.instances, ["a", "b"]);
    assert!(p.poll.is_none());

    assert_eq!(c.routes.len(), 2);
    let w = &c.routes[0];
    assert_eq!(
        (w.name.as_str(), w.path.as_str(), w.upstream.as_str()),
        ("write-user", "/users/{id}", "user-commands")
    );
    assert!(matches!(w.kind, RouteKind::Write));
    assert_eq!(
        w.methods,
        [Method::PUT, Method::PATCH, Method::POST, Method::DELETE]
    );
    assert_eq!(w.default_log.as_deref(), Some("users"));
    let wc = w.cache.as_ref().unwrap();
    assert_eq!(
        (wc.key.as_str(), wc.ttl, wc.scope),
        ("user:{id}", Duration::from_secs(30), CacheScope::Session)
    );

    let r = &c.routes[1];
    let RouteKind::Read(read) = &r.kind else {
        panic!("read-user is a read route")
    };
    assert_eq!(read.projection, "user-view");
    assert_eq!(read.max_wait, Duration::from_millis(300));
    assert_eq!(read.on_timeout, OnTimeout::Primary);
    assert_eq!(read.primary.as_deref(), Some("user-commands"));
    assert_eq!(read.staleness_budget, None);
    assert!(!read.monotonic);
    assert_eq!(r.methods, [Method::GET]);
    assert_eq!(
        r.default_log.as_deref(),
        Some("users"),
        "the projection's only log"
    );
}

#[test]
fn route_defaults_depend_on_the_kind() {
    let text = r#"
[upstreams.up]
url = "http://127.0.0.1:1"
[projections.p]
logs = ["a", "b"]
[[routes]]
name = "r"
kind = "read"
path = "/r"
upstream = "up"
projection = "p"
[[routes]]
name = "w"
kind = "write"
path = "/w"
upstream = "up"
[[routes]]
name = "x"
kind = "passthrough"
path = "/{*rest}"
upstream = "up"
"#;
    let c = load(text, &[]).unwrap();
    let RouteKind::Read(read) = &c.routes[0].kind else {
        panic!()
    };
    assert_eq!(read.on_timeout, OnTimeout::Error, "no primary: error");
    assert_eq!(c.routes[0].methods, [Method::GET, Method::HEAD]);
    assert_eq!(c.routes[0].default_log, None, "two logs: no default");
    assert_eq!(
        c.routes[1].methods,
        [Method::POST, Method::PUT, Method::PATCH, Method::DELETE]
    );
    assert_eq!(c.routes[1].default_log, None);
    assert!(c.routes[2].methods.is_empty(), "passthrough: every method");
    assert_eq!(c.projections["p"].sources, [SourceKind::Push]);
    assert_eq!(c.projections["p"].instances, ["default"]);
}

#[test]
fn the_shipped_files_load() {
    for name in ["example.toml", "demo.toml"] {
        let c = Config::from_toml(&shipped(name), Some(name.into()), &[])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.routes.is_empty(), "{name}");
    }
}

#[test]
fn the_demo_config_is_what_the_demo_expects() {
    let c = load(&shipped("demo.toml"), &[]).unwrap();
    assert_eq!(
        c.upstreams["user-commands"].instances[0].url,
        "http://127.0.0.1:7001/"
    );
    assert_eq!(
        c.upstreams["user-view"].instances[0].url,
        "http://127.0.0.1:7002/"
    );
    assert_eq!(
        c.projections["user-view"].sources,
        [SourceKind::Push, SourceKind::Header]
    );
    let names: Vec<&str> = c.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["write-user", "read-user", "passthrough"]);
    let RouteKind::Read(read) = &c.routes[1].kind else {
        panic!()
    };
    assert_eq!(
        (read.max_wait, read.on_timeout),
        (Duration::from_secs(2), OnTimeout::Primary)
    );
    assert_eq!(read.primary.as_deref(), Some("user-commands"));
    assert_eq!(c.routes[2].path, "/{*rest}");
    // The demo moves the services with overrides.
    let moved = load(
        &shipped("demo.toml"),
        &[
            (
                "TIDEMARK__UPSTREAMS__USER-VIEW__INSTANCES__R0",
                "http://127.0.0.1:40001",
            ),
            ("TIDEMARK__SERVER__LISTEN", "127.0.0.1:0"),
        ],
    )
    .unwrap();
    let r0 = &moved.upstreams["user-view"].instances[0];
    assert_eq!(
        (r0.name.as_str(), r0.url.to_string()),
        ("r0", "http://127.0.0.1:40001/".to_string())
    );
    assert_eq!(moved.server.listen.port(), 0);
}

/// One config with every kind of error; each must be reported, in one run.
const ALL_ERRORS: &str = r#"
[server]
max_held_reads = 0
header_read_timeout = "soon"

[store]
backend = "redis"

[upstreams.cmd]
url = "ftp://cmd.internal"

[upstreams.view]
instances = { a = "http://127.0.0.1:7002", b = "http://127.0.0.1:7003" }

[upstreams.view2]
url = "http://127.0.0.1:7004"

[projections.pv]
logs = ["users"]
sources = ["poll", "redis-ish"]
poll_urls = { a = "http://127.0.0.1:7002/cp", zz = "http://127.0.0.1:7002/cp" }

[[routes]]
name = "read-nothing"
kind = "read"
path = "/a"
upstream = "view"

[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "nope"
projection = "ghost"
primary = "missing"
max_wait = "2 fortnights"
cache = { key = "user:{uid}" }

[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "cmd"
max_wait = "1s"
monotonic = true

[[routes]]
name = "read-user"
kind = "read"
path = "/dup"
upstream = "view"
projection = "pv"
on_timeout = "primary"
default_log = "orders"

[[routes]]
name = "read-other"
kind = "read"
path = "/other"
upstream = "view2"
projection = "pv"
"#;

#[test]
fn every_error_kind_is_reported_in_one_run() {
    let errs = errors(ALL_ERRORS);
    let got = keys(&errs);
    let expect = [
        ("server.max_held_reads", "at least 1"),
        ("server.header_read_timeout", "not a duration"),
        ("store.redis_url", "needs a server"),
        ("upstreams.cmd.url", "ftp"),
        ("projections.pv.sources[1]", "unknown source"),
        ("routes[0] (read-nothing).projection", "needs a projection"),
        (
            "routes[1] (read-user).upstream",
            "no upstream is named `nope`",
        ),
        (
            "routes[1] (read-user).projection",
            "no projection is named `ghost`",
        ),
        (
            "routes[1] (read-user).primary",
            "no upstream is named `missing`",
        ),
        ("routes[1] (read-user).max_wait", "not a duration"),
        ("routes[1] (read-user).cache.key", "{uid}"),
        ("routes[2] (write-user).max_wait", "belongs to read routes"),
        ("routes[2] (write-user).monotonic", "belongs to read routes"),
        (
            "routes[3] (read-user).name",
            "also used by routes[1] (read-user)",
        ),
        ("routes[3] (read-user).on_timeout", "no primary"),
        (
            "routes[3] (read-user).default_log",
            "not consumed by projection `pv`",
        ),
        (
            "routes[4] (read-other).upstream",
            "read through upstream `view`",
        ),
        ("projections.pv.poll_urls.zz", "no instance `zz`"),
    ];
    for (key, problem) in expect {
        let e = errs
            .errors
            .iter()
            .find(|e| e.key == key)
            .unwrap_or_else(|| panic!("no error for `{key}`; got {got:#?}"));
        assert!(
            e.problem.contains(problem),
            "`{key}`: {:?} lacks {problem:?}",
            e.problem
        );
        assert!(!e.fix.is_empty(), "`{key}` has no fix");
    }
    assert_eq!(
        errs.errors.len(),
        expect.len(),
        "unexpected extra errors: {got:#?}"
    );

    // The fixes list the valid names, and the message names the file.
    let dangling = errs
        .errors
        .iter()
        .find(|e| e.key == "routes[1] (read-user).upstream")
        .unwrap();
    assert!(
        dangling.fix.contains("`cmd`, `view`, `view2`"),
        "{}",
        dangling.fix
    );
    let cache = errs
        .errors
        .iter()
        .find(|e| e.key.ends_with("cache.key"))
        .unwrap();
    assert!(cache.fix.contains("`{id}`"), "{}", cache.fix);
    let rendered = errs.to_string();
    assert!(
        rendered.starts_with(&format!("{} error(s) in test.toml:", expect.len())),
        "{rendered}"
    );
    assert!(
        rendered.contains("test.toml: `routes[1] (read-user).projection`"),
        "{rendered}"
    );
}

#[test]
fn unknown_keys_get_suggestions() {
    let errs = errors(
        r#"
[server]
listne = "127.0.0.1:1"
[upstreams.u]
url = "http://127.0.0.1:1"
timout = "1s"
[[routes]]
name = "r"
kind = "passthrough"
path = "/"
upstream = "u"
max_wiat = "1s"
colour = "blue"
"#,
    );
    let fix = |key: &str| {
        errs.errors
            .iter()
            .find(|e| e.key == key)
            .map(|e| e.fix.clone())
            .unwrap_or_else(|| panic!("no `{key}` in {:?}", keys(&errs)))
    };
    assert_eq!(fix("server.listne"), "did you mean `listen`?");
    assert_eq!(fix("upstreams.u.timout"), "did you mean `timeout`?");
    assert_eq!(fix("routes[0] (r).max_wiat"), "did you mean `max_wait`?");
    assert!(fix("routes[0] (r).colour").contains("the keys here are: name, kind"));
    assert_eq!(errs.errors.len(), 4, "{:?}", keys(&errs));
}

#[test]
fn an_upstream_max_connections_of_zero_is_refused_with_the_key_named() {
    let text = |n: &str| {
        format!(
            r#"
[upstreams.u]
url = "http://127.0.0.1:1"
max_connections = {n}
[[routes]]
name = "r"
kind = "passthrough"
path = "/"
upstream = "u"
"#
        )
    };
    let errs = errors(&text("0"));
    assert_eq!(keys(&errs), ["upstreams.u.max_connections"]);
    assert!(
        errs.errors[0].problem.contains("at least 1"),
        "{:?}",
        errs.errors[0]
    );
    assert!(
        errs.errors[0].fix.contains("default 256"),
        "{:?}",
        errs.errors[0]
    );
    assert!(errs.to_string().contains("upstreams.u.max_connections"));

    let c = load(&text("2"), &[]).unwrap();
    assert_eq!(c.upstreams["u"].max_connections, 2);
    let c = load(
        &text("2"),
        &[("TIDEMARK__UPSTREAMS__U__MAX_CONNECTIONS", "1000")],
    )
    .unwrap();
    assert_eq!(c.upstreams["u"].max_connections, 1000);
    let errs = errors(&text("2").replace("max_connections", "max_conections"));
    assert_eq!(errs.errors[0].fix, "did you mean `max_connections`?");
}

#[test]
fn wrong_types_are_reported_with_every_other_problem() {
    let errs = errors(
        r#"
[server]
max_held_reads = "many"
listen = 8080
[token]
cookie_secure = "yes"
issuer = ["a"]
"#,
    );
    assert_eq!(
        keys(&errs),
        [
            "server.listen",
            "server.max_held_reads",
            "token.issuer",
            "token.cookie_secure"
        ]
    );
    assert!(
        errs.errors[0]
            .problem
            .contains("`8080` is not an IP:PORT address"),
        "{:?}",
        errs.errors[0]
    );
    assert!(
        errs.errors[1].problem.contains("expected usize"),
        "{:?}",
        errs.errors[1]
    );
    assert!(
        errs.errors[2].problem.contains("expected a string"),
        "{:?}",
        errs.errors[2]
    );
    assert!(
        errs.errors[3].problem.contains("expected a boolean"),
        "{:?}",
        errs.errors[3]
    );
}

#[test]
fn a_syntax_error_gives_line_and_column() {
    let errs = errors("[server]\nlisten = 127.0.0.1:8080\n");
    assert_eq!(errs.errors.len(), 1);
    assert!(
        errs.errors[0].key.starts_with("line 2, column"),
        "{:?}",
        errs.errors[0]
    );
}

#[test]
fn env_overrides_a_scalar_a_nested_url_and_an_array_element() {
    let c = load(
        SPEC_EXAMPLE,
        &[
            ("TIDEMARK__SERVER__MAX_HELD_READS", "7"),
            (
                "TIDEMARK__UPSTREAMS__USER-COMMANDS__URL",
                "http://10.1.2.3:9000",
            ),
            ("TIDEMARK__ROUTES__1__MAX_WAIT", "750ms"),
            ("TIDEMARK__PROJECTIONS__USER-VIEW__SOURCES", "[\"push\"]"),
            ("TIDEMARK_SECRET", "not-an-override"),
        ],
    )
    .unwrap();
    assert_eq!(c.server.max_held_reads, 7);
    assert_eq!(
        c.upstreams["user-commands"].instances[0].url,
        "http://10.1.2.3:9000/"
    );
    let RouteKind::Read(read) = &c.routes[1].kind else {
        panic!()
    };
    assert_eq!(read.max_wait, Duration::from_millis(750));
    assert_eq!(c.projections["user-view"].sources, [SourceKind::Push]);
}

#[test]
fn a_bad_override_names_the_variable_and_validation_still_runs() {
    let errs = load(
        SPEC_EXAMPLE,
        &[
            ("TIDEMARK__ROUTES__5__MAX_WAIT", "1s"),
            ("TIDEMARK__SERVER__MAX_HELD_READS", "0"),
            ("TIDEMARK__SERVER__LISTEN__HOST", "x"),
        ],
    )
    .unwrap_err();
    let got = keys(&errs);
    assert!(got.contains(&"TIDEMARK__ROUTES__5__MAX_WAIT"), "{got:?}");
    assert!(got.contains(&"TIDEMARK__SERVER__LISTEN__HOST"), "{got:?}");
    assert!(got.contains(&"server.max_held_reads"), "{got:?}");
    assert_eq!(got.len(), 3);
    let held = errs
        .errors
        .iter()
        .find(|e| e.key == "server.max_held_reads")
        .unwrap();
    assert!(
        held.problem
            .ends_with("(set by `TIDEMARK__SERVER__MAX_HELD_READS`)"),
        "{}",
        held.problem
    );
}

#[test]
fn durations_are_human_readable() {
    let with =
        |wait: &str| SPEC_EXAMPLE.replace("max_wait = \"300ms\"", &format!("max_wait = {wait}"));
    for (text, want) in [
        ("\"250ms\"", 250),
        ("\"2s\"", 2000),
        ("\"1m30s\"", 90_000),
        ("\"0ms\"", 0),
    ] {
        let c = load(&with(text), &[]).unwrap();
        let RouteKind::Read(read) = &c.routes[1].kind else {
            panic!()
        };
        assert_eq!(read.max_wait, Duration::from_millis(want), "{text}");
    }
    for bad in ["\"300\"", "\"3 parsecs\"", "300"] {
        let errs = load(&with(bad), &[]).unwrap_err();
        assert_eq!(keys(&errs), ["routes[1] (read-user).max_wait"], "{bad}");
    }
    let errs = load(&with("\"300\""), &[]).unwrap_err();
    assert!(
        errs.errors[0].fix.contains("`250ms`, `2s`"),
        "{}",
        errs.errors[0].fix
    );
}

#[test]
fn admin_token_comes_from_the_named_variable() {
    let text = format!("{SPEC_EXAMPLE}\n[admin]\ntoken_env = \"ADMIN_TOKEN\"\n");
    let c = load(&text, &[("ADMIN_TOKEN", "s3cret")]).unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("s3cret"));
    let errs = load(&text, &[]).unwrap_err();
    assert_eq!(keys(&errs), ["admin.token_env"]);
    assert!(
        errs.errors[0].problem.contains("`ADMIN_TOKEN`"),
        "{:?}",
        errs.errors[0]
    );
}

#[test]
fn token_keys_are_named_never_given() {
    let text = SPEC_EXAMPLE.replace(
        "secret_env = \"TIDEMARK_SECRET\"   # HS256 key read from this variable",
        "algorithm = \"EdDSA\"\nkid = \"k2\"\nprivate_key_file = \"/keys/k2.pem\"\ncookie = \"tm\"",
    )
        + "[[token.verify_keys]]\nkid = \"k1\"\nalgorithm = \"HS256\"\nsecret_env = \"OLD\"\n";
    let c = load(&text, &[]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.token.signing.algorithm, TokenAlgorithm::EdDsa);
    assert_eq!(
        c.token.signing.material,
        KeyMaterial::File("/keys/k2.pem".into())
    );
    assert_eq!(
        c.token.verify_keys[0].material,
        KeyMaterial::Env("OLD".into())
    );
    let cookie = c.token.cookie.unwrap();
    assert_eq!((cookie.name.as_str(), cookie.secure), ("tm", true));

    let bad = SPEC_EXAMPLE.replace(
        "secret_env = \"TIDEMARK_SECRET\"   # HS256 key read from this variable",
        "secret = \"hunter2\"\nalgorithm = \"RS256\"",
    ) + "[[token.verify_keys]]\nkid = \"k1\"\nsecret_env = \"A\"\nsecret_file = \"/b\"\n";
    let errs = load(&bad, &[]).unwrap_err();
    let got = keys(&errs);
    assert!(got.contains(&"token.secret"), "{got:?}");
    assert!(got.contains(&"token.algorithm"), "{got:?}");
    assert!(got.contains(&"token.verify_keys[0]"), "{got:?}");
    assert_eq!(got.len(), 3, "{got:?}");
}

#[test]
fn the_route_table_is_aligned_and_in_match_order() {
    let text = format!("{SPEC_EXAMPLE}\n[[routes]]\nname = \"rest\"\nkind = \"passthrough\"\npath = \"/{{*rest}}\"\nupstream = \"user-commands\"\n");
    let c = load(&text, &[]).unwrap();
    let table = describe_routes(&c);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0],
        "listen 127.0.0.1:8080  admin 127.0.0.1:9090  store memory  routes 3"
    );
    assert!(lines[1].starts_with("#  NAME"), "{table}");
    assert!(lines[2].starts_with("0  write-user  write"), "{table}");
    assert!(
        lines[3].contains("user-view (a,b)") && lines[3].contains("300ms/primary(user-commands)"),
        "{table}"
    );
    assert!(
        lines[4].contains("passthrough") && lines[4].contains('*'),
        "{table}"
    );
    let path_col = lines[1].find("PATH").unwrap();
    assert!(
        lines[2..].iter().all(|l| l[path_col..].starts_with('/')),
        "{table}"
    );
}

#[test]
fn a_route_missing_its_required_keys_reports_each() {
    let errs = errors("[[routes]]\nmethods = [\"GET\"]\n[[routes]]\nkind = \"read\"\n");
    assert_eq!(
        keys(&errs),
        [
            "routes[0].name",
            "routes[0].kind",
            "routes[0].path",
            "routes[0].upstream",
            "routes[1].name",
            "routes[1].path",
            "routes[1].upstream",
            "routes[1].projection",
        ]
    );
    assert!(
        errs.errors[3].fix.contains("none are defined"),
        "{:?}",
        errs.errors[3]
    );
}
