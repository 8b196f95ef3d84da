//! `LISTEN` wake: with an interval far longer than the test, a `NOTIFY` on the
//! source's `listen` channel releases a held read within a few milliseconds.

use std::time::{Duration, Instant};

use crate::app::{self, App};
use crate::common::{self, TestGateway};
use crate::pg::Postgres;
use crate::ryw::gateway_toml;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notify_releases_a_held_read_at_once() {
    let pg = Postgres::start();
    let db = app::connect(&pg.url()).await;
    db.batch_execute(&format!(
        "{}\nCREATE TABLE users (id text PRIMARY KEY, name text NOT NULL);",
        app::MARTEN.setup
    ))
    .await
    .unwrap();
    // No projector: the test projects by hand.
    let app = App::start_on(&pg.url(), &pg.url(), app::MARTEN, false).await;
    let toml = gateway_toml(
        &app,
        &pg.url(),
        &pg.url(),
        "preset = \"marten\"\nshard = \"User:All\"\ninterval = \"1h\"\nlisten = \"tidemark_wake\"",
        "preset = \"marten\"",
        "events",
        "",
    );
    let gw = TestGateway::start(common::config(&toml, &[])).await;
    // The LISTEN session is up once the server lists it.
    common::wait_until(Duration::from_secs(10), "LISTEN session", || async {
        let c = app::connect(&pg.url()).await;
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'",
            &[],
        )
        .await
        .map(|r| r.get::<_, i64>(0) > 0)
        .unwrap_or(false)
    })
    .await;
    let http = common::http();
    let w = http
        .send(http::Method::PUT, &gw.url("/users/ada"), &[], "v1")
        .await;
    assert_eq!(w.status, 200);
    let token = w
        .header("consistency-token")
        .expect("fenced token")
        .to_string();
    let url = gw.url("/users/ada");
    let read = tokio::spawn(async move {
        let r = common::http()
            .get(&url, &[("consistency-token", &token)])
            .await;
        (r, Instant::now())
    });
    common::wait_until(Duration::from_secs(5), "the read is held", || async {
        gw.held().await == 1
    })
    .await;
    let notified = Instant::now();
    db.batch_execute(
        "BEGIN; INSERT INTO users VALUES ('ada', 'v1'); \
         INSERT INTO public.mt_event_progression (name, last_seq_id) VALUES ('User:All', 1); \
         NOTIFY tidemark_wake; COMMIT;",
    )
    .await
    .unwrap();
    let (r, answered) = read.await.unwrap();
    let wake = answered.duration_since(notified);
    eprintln!("NOTIFY to released read: {wake:?}");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "v1");
    assert!(
        wake < Duration::from_millis(250),
        "released {wake:?} after the NOTIFY (interval 1h)"
    );
    gw.stop().await;
}
