//! Each preset's SQL (checkpoint and fence) against the framework's real table
//! layout in a real PostgreSQL: the position read is the one the framework wrote.

use tidemark::config::Config;
use tidemark::database::{rows, Database};

use crate::app::{self, Layout};
use crate::pg::Postgres;

fn config(url: &str, projection: &str, fence: &str) -> Config {
    let toml = format!(
        r#"
[databases.app]
url = "{url}"
[upstreams.view]
url = "http://127.0.0.1:9"
[upstreams.commands]
url = "http://127.0.0.1:9"
[projections.users]
logs = ["events", "wal"]
sources = ["postgres"]
[projections.users.postgres]
database = "app"
{projection}
[[routes]]
name = "write"
kind = "write"
path = "/users/{{id}}"
upstream = "commands"
fence = {{ database = "app", {fence} }}
[[routes]]
name = "read"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
"#
    );
    crate::common::config(&toml, &[])
}

/// (checkpoint, fence) read through tidemark's own pool and row reader.
async fn read_both(config: &Config) -> (String, String) {
    let db = Database::new(config.positions.databases["app"].clone());
    let source = &config.positions.sources["users"];
    let fence = &config.positions.fences["write"];
    let cp = rows::positions(&db.query(&source.sql).await.expect("checkpoint query"))
        .expect("checkpoint rows");
    let head =
        rows::positions(&db.query(&fence.sql).await.expect("fence query")).expect("fence rows");
    (cp.to_string(), head.to_string())
}

async fn framework(
    layout: Layout,
    projection: &str,
    fence: &str,
    events: usize,
) -> (String, String) {
    let pg = Postgres::start();
    let admin = app::connect(&pg.url()).await;
    admin
        .batch_execute(&format!(
            "{}\nCREATE TABLE users (id text PRIMARY KEY, name text NOT NULL);",
            layout.setup
        ))
        .await
        .expect("layout");
    let config = config(&pg.url(), projection, fence);
    for i in 0..events {
        admin
            .execute(layout.append, &[&format!("u{i}"), &"x".to_string()])
            .await
            .expect("append");
    }
    // The projector has handled the first two events.
    admin.execute(layout.mark, &[&2i64]).await.expect("mark");
    read_both(&config).await
}

#[tokio::test]
async fn marten_reads_the_shard_progress_and_the_event_sequence() {
    let (cp, head) = framework(
        app::MARTEN,
        "preset = \"marten\"\nshard = \"User:All\"",
        "preset = \"marten\"",
        5,
    )
    .await;
    assert_eq!(cp, "events=2");
    assert_eq!(head, "events=5");
}

#[tokio::test]
async fn eventuous_reads_the_checkpoint_and_the_highest_global_position() {
    let (cp, head) = framework(
        app::EVENTUOUS,
        "preset = \"eventuous\"\ncheckpoint = \"UserView\"",
        "preset = \"eventuous\"",
        4,
    )
    .await;
    assert_eq!(cp, "events=2");
    assert_eq!(head, "events=4");
}

#[tokio::test]
async fn commanded_reads_the_subscription_and_the_all_stream_version() {
    let (cp, head) = framework(
        app::COMMANDED,
        "preset = \"commanded\"\nsubscription = \"UserProjector\"",
        "preset = \"commanded\"",
        3,
    )
    .await;
    assert_eq!(cp, "events=2");
    assert_eq!(head, "events=3");
}

#[tokio::test]
async fn akka_reads_the_lowest_sequence_offset_of_the_projection() {
    let (cp, head) = framework(
        app::AKKA,
        "preset = \"akka\"\nprojection_name = \"UserProjection\"",
        app::AKKA_FENCE,
        4,
    )
    .await;
    assert_eq!(cp, "events=2");
    assert_eq!(head, "events=4");
}

#[tokio::test]
async fn akka_with_several_keys_waits_for_the_slowest_and_ignores_other_offsets() {
    let pg = Postgres::start();
    let admin = app::connect(&pg.url()).await;
    admin.batch_execute(app::AKKA.setup).await.expect("layout");
    let config = config(
        &pg.url(),
        "preset = \"akka\"\nprojection_name = \"UserProjection\"",
        app::AKKA_FENCE,
    );
    let (cp, _) = read_both(&config).await;
    assert_eq!(cp, "", "no offset stored yet: no checkpoint");
    admin
        .batch_execute(
            "INSERT INTO akka_projection_offset_store VALUES
               ('UserProjection', 'users-0', '17', 'SEQ', false, 0),
               ('UserProjection', 'users-1', '9', 'SEQ', false, 0),
               ('UserProjection', 'kafka', 'users-0-3', 'STR', false, 0),
               ('OtherProjection', 'users', '2', 'SEQ', false, 0)",
        )
        .await
        .expect("offsets");
    let (cp, _) = read_both(&config).await;
    assert_eq!(cp, "events=9");
}

#[tokio::test]
async fn a_fresh_marten_sequence_and_a_missing_shard_read_as_nothing_yet() {
    let pg = Postgres::start();
    let admin = app::connect(&pg.url()).await;
    admin
        .batch_execute(app::MARTEN.setup)
        .await
        .expect("layout");
    let config = config(
        &pg.url(),
        "preset = \"marten\"\nshard = \"User:All\"",
        "preset = \"marten\"",
    );
    let (cp, head) = read_both(&config).await;
    assert_eq!(cp, "", "no progress row yet: no checkpoint");
    assert_eq!(head, "events=0", "a sequence never called is at 0, not 1");
}

#[tokio::test]
async fn replica_lsn_and_primary_lsn_meet_once_the_standby_replayed() {
    let primary = Postgres::start();
    let standby = primary.standby(std::time::Duration::ZERO);
    primary.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1);");
    let fence_cfg = config(
        &primary.url(),
        "preset = \"replica-lsn\"",
        "preset = \"primary-lsn\"",
    );
    let source_cfg = config(
        &standby.url(),
        "preset = \"replica-lsn\"",
        "preset = \"primary-lsn\"",
    );
    let primary_db = Database::new(fence_cfg.positions.databases["app"].clone());
    let standby_db = Database::new(source_cfg.positions.databases["app"].clone());
    let head = rows::positions(
        &primary_db
            .query(&fence_cfg.positions.fences["write"].sql)
            .await
            .unwrap(),
    )
    .unwrap();
    let expected = primary.psql("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint");
    let head_wal = head.get("wal").expect("wal");
    assert!(head_wal > 0);
    assert!(head_wal <= expected.parse::<u64>().unwrap());
    let source = &source_cfg.positions.sources["users"].sql;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let cp = rows::positions(&standby_db.query(source).await.unwrap()).unwrap();
        if cp.get("wal").is_some_and(|replayed| replayed >= head_wal) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "standby never replayed {head_wal}: {cp}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // On the primary, the replay LSN is NULL: no checkpoint, not 0.
    let on_primary = rows::positions(&primary_db.query(source).await.unwrap()).unwrap();
    assert!(on_primary.is_empty(), "{on_primary}");
}
