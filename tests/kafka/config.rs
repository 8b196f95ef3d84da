//! `tidemark check` on the Kafka keys: every problem names its key and the fix.

use std::time::Duration;

use tidemark::config::Config;

const BASE: &str = r#"
[upstreams.commands]
url = "http://127.0.0.1:7001"
[upstreams.view]
url = "http://127.0.0.1:7002"
[projections.users]
logs = ["users-0", "users-1", "users-2"]
sources = ["kafka"]
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{id}"
upstream = "view"
projection = "users"
"#;

const WRITE_ROUTE: &str = r#"
[[routes]]
name = "write-user"
kind = "write"
methods = ["PUT"]
path = "/users/{id}"
upstream = "commands"
"#;

const KAFKA: &str = "[kafka]\nbrokers = [\"127.0.0.1:9092\"]\n";
const SOURCE: &str = "[projections.users.kafka]\ngroup = \"users-view\"\ntopic = \"users\"\n";

fn errors(extra: &str) -> Vec<(String, String, String)> {
    match Config::from_toml(&format!("{BASE}{extra}"), None, &[]) {
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

#[test]
fn a_complete_kafka_setup_is_accepted_with_its_defaults() {
    let extra = format!(
        "{WRITE_ROUTE}fence = {{ kafka_topic = \"users\" }}\n[kafka]\nbrokers = [\"kafka-1:9092\", \"kafka-2:9092\"]\n{SOURCE}"
    );
    let config =
        Config::from_toml(&format!("{BASE}{extra}"), None, &[]).unwrap_or_else(|e| panic!("{e}"));
    let kafka = config.kafka.expect("[kafka]");
    assert_eq!(kafka.bootstrap(), "kafka-1:9092,kafka-2:9092");
    assert_eq!(kafka.request_timeout, Duration::from_secs(1));
    let source = config.projections["users"].kafka.clone().expect("source");
    assert_eq!(
        (source.group.as_str(), source.topic.as_str()),
        ("users-view", "users")
    );
    assert_eq!(
        source.partitions,
        vec![0, 1, 2],
        "from the projection's logs"
    );
    assert_eq!(source.interval, Duration::from_millis(20));
    let fence = &config.positions.kafka_fences["write-user"];
    assert_eq!(fence.topic, "users");
    assert_eq!(fence.partitions, vec![0, 1, 2]);
    assert_eq!(fence.logs, vec!["users-0", "users-1", "users-2"]);
    assert_eq!(fence.fallback, Duration::from_secs(5));
}

#[test]
fn the_kafka_source_needs_its_table_and_the_brokers() {
    let e = errors("");
    assert!(
        has(&e, "projections.users.kafka", "needs its settings"),
        "{e:?}"
    );
    let e = errors(SOURCE);
    assert!(
        has(&e, "projections.users.kafka", "needs the brokers"),
        "{e:?}"
    );
    let e = errors(&format!("[kafka]\nbrokers = []\n{SOURCE}"));
    assert!(has(&e, "kafka.brokers", "empty"), "{e:?}");
    let e = errors(&format!(
        "[kafka]\nbrokers = [\"PLAINTEXT://k:9092\", \"k\"]\n{SOURCE}"
    ));
    assert!(has(&e, "kafka.brokers[0]", "scheme"), "{e:?}");
    assert!(has(&e, "kafka.brokers[1]", "no `:PORT`"), "{e:?}");
}

#[test]
fn source_keys_are_checked_one_by_one() {
    let e = errors(&format!(
        "{KAFKA}[projections.users.kafka]\ngroup = \"\"\ntopic = \"us ers\"\ninterval = \"0s\"\ngruop = \"x\"\n"
    ));
    assert!(
        has(
            &e,
            "projections.users.kafka.group",
            "not a usable consumer group"
        ),
        "{e:?}"
    );
    assert!(
        has(
            &e,
            "projections.users.kafka.topic",
            "not a valid Kafka topic"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, "projections.users.kafka.interval", "longer than zero"),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|(k, _, fix)| k.contains("gruop") && fix.contains("group")),
        "{e:?}"
    );
    let e = errors(&format!(
        "{KAFKA}[projections.users.kafka]\ntopic = \"users\"\n"
    ));
    assert!(has(&e, "projections.users.kafka.group", "missing"), "{e:?}");
}

#[test]
fn a_source_topic_must_match_the_projections_logs() {
    let e = errors(&format!(
        "{KAFKA}[projections.users.kafka]\ngroup = \"g\"\ntopic = \"orders\"\n"
    ));
    let (_, _, fix) = e
        .iter()
        .find(|(k, p, _)| k == "projections.users.logs" && p.contains("topic `orders`"))
        .unwrap_or_else(|| panic!("{e:?}"));
    assert!(fix.contains("\"orders-0\""), "{fix}");
}

#[test]
fn a_kafka_fence_is_for_write_routes_and_takes_no_other_fence_keys() {
    let read_fence = BASE.replace(
        "projection = \"users\"\n",
        "projection = \"users\"\nfence = { kafka_topic = \"users\" }\n",
    );
    let e = match Config::from_toml(&format!("{read_fence}{KAFKA}{SOURCE}"), None, &[]) {
        Ok(_) => panic!("a fence on a read route is refused"),
        Err(e) => e.errors,
    };
    assert!(
        e.iter()
            .any(|e| e.key == "routes[0] (read-user).fence" && e.problem.contains("`read` route")),
        "{e:?}"
    );

    let p = "routes[1] (write-user).fence";
    let e = errors(&format!(
        "{WRITE_ROUTE}fence = {{ kafka_topic = \"users\", database = \"app\", log = \"users-0\" }}\n{KAFKA}{SOURCE}"
    ));
    assert!(
        has(
            &e,
            &format!("{p}.database"),
            "belongs to a PostgreSQL fence"
        ),
        "{e:?}"
    );
    assert!(
        has(&e, &format!("{p}.log"), "belongs to other fences"),
        "{e:?}"
    );

    let e = errors(&format!(
        "{WRITE_ROUTE}fence = {{ kafka_topic = \"orders\" }}\n{KAFKA}{SOURCE}"
    ));
    assert!(
        has(
            &e,
            &format!("{p}.kafka_topic"),
            "no projection consumes a partition of topic `orders`"
        ),
        "{e:?}"
    );

    let e = errors(&format!(
        "{WRITE_ROUTE}fence = {{ kafka_topic = \"users\" }}\n{SOURCE}"
    ));
    assert!(
        has(&e, &format!("{p}.kafka_topic"), "needs the brokers"),
        "{e:?}"
    );
}
