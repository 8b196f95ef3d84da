//! `tidemark check` on the new keys: every problem named by key, with its fix.

use crate::config::{Config, ConfigError};

const BASE: &str = r#"
[databases.app]
url = "postgres://tidemark@127.0.0.1:5432/app"
[upstreams.commands]
url = "http://127.0.0.1:7001"
[upstreams.view]
url = "http://127.0.0.1:7002"
[projections.users]
logs = ["events"]
sources = ["postgres"]
"#;

fn errors(extra: &str) -> Vec<ConfigError> {
    match Config::from_toml(&format!("{BASE}{extra}"), None, &[]) {
        Ok(_) => Vec::new(),
        Err(e) => e.errors,
    }
}

fn find<'a>(errors: &'a [ConfigError], key: &str) -> &'a ConfigError {
    errors
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error at `{key}` in {errors:#?}"))
}

const ROUTES: &str = r#"
[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
fence = { database = "app", preset = "marten" }
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
"#;

#[test]
fn a_complete_marten_wiring_is_accepted_with_defaults() {
    let config = Config::from_toml(
        &format!("{BASE}[projections.users.postgres]\ndatabase = \"app\"\npreset = \"marten\"\nshard = \"User:All\"\n{ROUTES}"),
        None,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let source = &config.positions.sources["users"];
    assert_eq!(source.interval, std::time::Duration::from_millis(10));
    assert_eq!(source.targets, [(None, "app".to_string())]);
    assert_eq!(source.sql.params, ["events", "User:All"]);
    let fence = &config.positions.fences["write-user"];
    assert_eq!(fence.log, "events");
    assert_eq!(fence.fallback, std::time::Duration::from_secs(5));
}

#[test]
fn unknown_preset_missing_shard_unknown_database_and_fence_on_a_read_route() {
    let errs = errors(
        r#"
[projections.users.postgres]
database = "nope"
preset = "marten"
[projections.other]
logs = ["events"]
sources = ["postgres"]
[projections.other.postgres]
database = "app"
preset = "axon"
[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
fence = { database = "app", preset = "replica-lsn" }
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
fence = { database = "app", preset = "marten" }
"#,
    );
    let e = find(&errs, "projections.users.postgres.database");
    assert!(e.problem.contains("no database `nope`"), "{e:?}");
    assert!(e.fix.contains("app"), "{e:?}");
    let e = find(&errs, "projections.users.postgres.shard");
    assert!(e.fix.contains("User:All"), "{e:?}");
    let e = find(&errs, "projections.other.postgres.preset");
    assert!(e.problem.contains("unknown preset `axon`"), "{e:?}");
    assert!(e.fix.contains("marten"), "{e:?}");
    let e = find(&errs, "routes[0] (write-user).fence.preset");
    assert!(e.problem.contains("primary-lsn"), "{e:?}");
    let e = find(&errs, "routes[1] (read-user).fence");
    assert!(e.problem.contains("`read` route"), "{e:?}");
}

#[test]
fn sources_and_tables_must_agree() {
    let errs = errors(
        r#"
[projections.plain]
logs = ["events"]
[projections.plain.postgres]
database = "app"
query = "SELECT 'events', 1"
"#,
    );
    find(&errs, "projections.users.postgres");
    let e = find(&errs, "projections.plain.postgres");
    assert!(e.fix.contains("\"postgres\""), "{e:?}");
}

#[test]
fn unknown_keys_in_the_new_tables_are_named() {
    let errs = errors(
        "[projections.users.postgres]\ndatabase = \"app\"\npreset = \"marten\"\nshard = \"s\"\nintervall = \"1s\"\n[databases.app2]\nurl = \"postgres://a@b/c\"\npool = 3\n",
    );
    find(&errs, "projections.users.postgres.intervall");
    find(&errs, "databases.app2.pool");
}

#[test]
fn a_custom_fence_names_its_log_and_a_schema_is_an_identifier() {
    let errs = errors(
        r#"
[projections.users.postgres]
database = "app"
preset = "marten"
shard = "User:All"
schema = "app; DROP TABLE x"
[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
fence = { database = "app", query = "SELECT 'events', 1" }
"#,
    );
    find(&errs, "projections.users.postgres.schema");
    let e = find(&errs, "routes[0] (write-user).fence.log");
    assert!(e.fix.contains("log"), "{e:?}");
}

#[test]
fn akka_reads_checkpoints_only_and_needs_the_projection_name() {
    let errs = errors(
        r#"
[projections.users.postgres]
database = "app"
preset = "akka"
shard = "User:All"
[[routes]]
name = "write-user"
kind = "write"
path = "/users/{id}"
upstream = "commands"
fence = { database = "app", preset = "akka" }
"#,
    );
    let e = find(&errs, "projections.users.postgres.shard");
    assert!(e.fix.contains("projection_name"), "{e:?}");
    let e = find(&errs, "projections.users.postgres.projection_name");
    assert!(e.fix.contains("akka_projection_offset_store"), "{e:?}");
    let e = find(&errs, "routes[0] (write-user).fence.preset");
    assert!(e.problem.contains("no single head"), "{e:?}");
    assert!(e.fix.contains("query"), "{e:?}");

    let config = Config::from_toml(
        &format!("{BASE}[projections.users.postgres]\ndatabase = \"app\"\npreset = \"akka\"\nprojection_name = \"UserProjection\"\nschema = \"akka\"\n"),
        None,
        &[],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sql = &config.positions.sources["users"].sql;
    assert!(
        sql.text.contains("\"akka\".akka_projection_offset_store"),
        "{}",
        sql.text
    );
    assert_eq!(sql.params, ["events", "UserProjection"]);
}
