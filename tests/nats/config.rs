//! `tidemark check` on the NATS keys: every problem names its key and the fix.

use tidemark::config::Config;

const BASE: &str = r#"
[upstreams.commands]
url = "http://127.0.0.1:7001"
[upstreams.view]
url = "http://127.0.0.1:7002"
[projections.users]
logs = ["users"]
sources = ["nats"]
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
"#;

fn errors(extra: &str, env: &[(&str, &str)]) -> Vec<(String, String, String)> {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    match Config::from_toml(&format!("{BASE}{extra}"), None, &env) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .errors
            .into_iter()
            .map(|e| (e.key, e.problem, e.fix))
            .collect(),
    }
}

fn has(errors: &[(String, String, String)], key: &str, problem: &str) -> bool {
    errors
        .iter()
        .any(|(k, p, _)| k == key && p.contains(problem))
}

const WRITE_ROUTE: &str = r#"
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{id}"
upstream = "commands"
"#;

#[test]
fn a_complete_nats_setup_is_accepted_with_its_defaults() {
    let extra = format!(
        "{WRITE_ROUTE}fence = {{ nats_stream = \"USERS\" }}\ndefault_log = \"users\"\n[nats]\nurl_env = \"NATS_URL\"\n[projections.users.nats]\nstream = \"USERS\"\nconsumer = \"users-view\"\n"
    );
    let env = [("NATS_URL", "nats://u:secret@127.0.0.1:4222")];
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config =
        Config::from_toml(&format!("{BASE}{extra}"), None, &env).unwrap_or_else(|e| panic!("{e}"));
    let nats = config.nats.expect("[nats]");
    assert_eq!(nats.display, "127.0.0.1:4222");
    assert_eq!(nats.request_timeout, std::time::Duration::from_secs(1));
    let source = config.projections["users"].nats.clone().expect("source");
    assert_eq!(source.log, "users");
    assert_eq!(source.interval, std::time::Duration::from_millis(20));
    let fence = &config.positions.nats_fences["write-user"];
    assert_eq!(
        (fence.stream.as_str(), fence.log.as_str()),
        ("USERS", "users")
    );
    assert_eq!(fence.fallback, std::time::Duration::from_secs(5));
}

#[test]
fn the_nats_source_needs_its_table_and_the_server() {
    let e = errors("", &[]);
    assert!(
        has(&e, "projections.users.nats", "needs its settings"),
        "{e:?}"
    );
    let e = errors(
        "[projections.users.nats]\nstream = \"USERS\"\nconsumer = \"v\"\n",
        &[],
    );
    assert!(
        has(&e, "projections.users.nats", "needs a NATS server"),
        "{e:?}"
    );
}

#[test]
fn source_keys_are_checked_one_by_one() {
    let e = errors(
        "[nats]\nurl = \"nats://127.0.0.1:4222\"\n[projections.users.nats]\nstream = \"US.ERS\"\nlog = \"orders\"\ninterval = \"0s\"\nconsumr = \"x\"\n",
        &[],
    );
    assert!(
        has(
            &e,
            "projections.users.nats.stream",
            "not a valid JetStream name"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "projections.users.nats.consumer", "missing"),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "projections.users.nats.log",
            "not one of the projection's logs"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "projections.users.nats.interval", "longer than zero"),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|(k, _, fix)| k.contains("consumr") && fix.contains("consumer")),
        "{e:?}"
    );
}

#[test]
fn the_connection_refuses_a_password_in_the_file_and_a_missing_variable() {
    let source = "[projections.users.nats]\nstream = \"USERS\"\nconsumer = \"v\"\n";
    let e = errors(
        &format!("[nats]\nurl = \"nats://u:pw@127.0.0.1:4222\"\n{source}"),
        &[],
    );
    assert!(has(&e, "nats.url", "carries a password"), "{e:?}");
    assert!(
        !format!("{e:?}").contains("pw@"),
        "never echo the secret: {e:?}"
    );
    let e = errors(&format!("[nats]\nurl_env = \"NOPE\"\n{source}"), &[]);
    assert!(has(&e, "nats.url_env", "`NOPE` is not set"), "{e:?}");
    let e = errors(
        &format!("[nats]\nurl = \"http://127.0.0.1:4222\"\n{source}"),
        &[],
    );
    assert!(has(&e, "nats.url", "not a NATS URL"), "{e:?}");
}

#[test]
fn a_nats_fence_takes_no_database_keys_and_needs_a_known_log() {
    let extra = format!(
        "{WRITE_ROUTE}fence = {{ nats_stream = \"USERS\", database = \"app\", log = \"orders\" }}\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n[projections.users.nats]\nstream = \"USERS\"\nconsumer = \"v\"\n"
    );
    let e = errors(&extra, &[]);
    let p = "routes[1] (write-user).fence";
    assert!(
        has(
            &e,
            &format!("{p}.database"),
            "belongs to a PostgreSQL fence"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, &format!("{p}.log"), "which no projection consumes"),
        "{e:?}"
    );
}
