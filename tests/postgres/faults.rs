//! Faults: the database killed mid-run and restarted (no write answer lost, no stale
//! read, `/readyz` degraded then ok); a fence that times out takes the fallback (the
//! session's reads go to the primary until `fallback` has passed).

use std::time::{Duration, Instant};

use crate::app::{self, App};
use crate::common::{self, TestGateway};
use crate::pg::Postgres;
use crate::ryw::{gateway_toml, run_pairs_n};

async fn readyz_db(gw: &TestGateway, name: &str) -> String {
    let r = common::http().get(&gw.admin_url("/readyz"), &[]).await;
    assert_eq!(r.status, 200, "/readyz stays 200 whatever the databases do");
    r.json()["databases"][name]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_killed_mid_run_loses_no_answer_and_serves_no_stale_read() {
    let mut pg = Postgres::start();
    let app = App::start(&pg.url(), app::MARTEN).await;
    let toml = gateway_toml(
        &app,
        &pg.url(),
        &pg.url(),
        "preset = \"marten\"\nshard = \"User:All\"",
        "preset = \"marten\"",
        "events",
        "primary = \"primary\"",
    );
    let gw = TestGateway::start(common::config(&toml, &[])).await;
    common::wait_until(Duration::from_secs(10), "database app ok", || async {
        readyz_db(&gw, "app").await == "ok"
    })
    .await;
    let proxy = gw.proxy;
    let run = tokio::spawn(async move { run_pairs_n("fault", proxy, proxy, 10, 40).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    let killed_at = Instant::now();
    pg.kill();
    common::wait_until(Duration::from_secs(10), "/readyz: app degraded", || async {
        readyz_db(&gw, "app").await == "degraded"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    pg.restart();
    common::wait_until(Duration::from_secs(20), "/readyz: app ok again", || async {
        readyz_db(&gw, "app").await == "ok"
    })
    .await;
    let recovered = killed_at.elapsed();
    let pairs = run.await.expect("every request got an answer");
    eprintln!("fault run: {pairs:?}, database back in the gateway after {recovered:?}");
    assert_eq!(pairs.stale, 0, "{pairs:?}");
    assert!(pairs.pairs > 0, "{pairs:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_that_times_out_sends_the_sessions_reads_to_the_primary() {
    let pg = Postgres::start();
    let app = App::start(&pg.url(), app::MARTEN).await;
    // The fence's database answers after 300ms; its query_timeout is 50ms.
    let slow = "query = \"SELECT 'events'::text, last_value FROM public.mt_events_sequence, pg_sleep(0.3)\", log = \"events\", fallback = \"2s\"";
    let toml = gateway_toml(
        &app,
        &pg.url(),
        &pg.url(),
        "preset = \"marten\"\nshard = \"User:All\"",
        slow,
        "events",
        "primary = \"primary\"",
    )
    .replace(
        "[databases.head]\n",
        "[databases.head]\nquery_timeout = \"50ms\"\n",
    );
    let gw = TestGateway::start(common::config(&toml, &[])).await;
    let http = common::http();
    let started = Instant::now();
    let w = http
        .send(http::Method::PUT, &gw.url("/users/ada"), &[], "v1")
        .await;
    let took = started.elapsed();
    assert_eq!(w.status, 200, "the write's answer is never lost");
    assert_eq!(w.text(), "saved");
    assert!(
        took < Duration::from_millis(300),
        "the fence gave up at its timeout: {took:?}"
    );
    let token = w
        .header("consistency-token")
        .expect("a token marking the fallback")
        .to_string();
    let r = http
        .get(&gw.url("/users/ada"), &[("consistency-token", &token)])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "v1");
    assert_eq!(r.header("consistency-source"), Some("primary"));
    // Past the fallback the same token reads from the projection again.
    common::wait_until(
        Duration::from_secs(6),
        "reads back on the projection",
        || {
            let http = http.clone();
            let url = gw.url("/users/ada");
            let token = token.clone();
            async move {
                let r = http.get(&url, &[("consistency-token", &token)]).await;
                r.header("consistency-source") == Some("projection")
            }
        },
    )
    .await;
    gw.stop().await;
}
