//! The promise: through the gateway, a client never reads less than its own writes,
//! with each checkpoint source; straight to the read service it mostly does.

mod common;
mod cqrs;

use common::http;
use cqrs::{start, Setup};

const WORKERS: u64 = 25;
const PAIRS_PER_WORKER: u64 = 40; // 1,000 pairs in all

/// Runs 1,000 write-then-read pairs; returns (stale through the gateway, stale direct).
async fn pairs(stack: &cqrs::Stack) -> (u64, u64) {
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let gw = stack.gateway.url("");
        let direct = format!("http://{}", stack.backend.read_addrs[0]);
        tasks.push(tokio::spawn(async move {
            let client = http();
            let (mut stale_gw, mut stale_direct) = (0, 0);
            for i in 0..PAIRS_PER_WORKER {
                let id = w * 1000 + i;
                // Through the gateway.
                let w1 = client
                    .put_json(&format!("{gw}/users/{id}"), &[], &format!("{{\"n\":{i}}}"))
                    .await;
                assert_eq!(w1.status, 200);
                let token = w1.header("consistency-token").expect("token").to_string();
                let r = client
                    .get(
                        &format!("{gw}/users/{id}"),
                        &[("consistency-token", &token)],
                    )
                    .await;
                assert_eq!(r.status, 200, "{}", r.text());
                if r.version() < w1.version() {
                    stale_gw += 1;
                }
                // The same pair straight to the read service.
                let w2 = client
                    .put_json(&format!("{gw}/users/{id}"), &[], &format!("{{\"n\":{i}}}"))
                    .await;
                let d = client.get(&format!("{direct}/users/{id}"), &[]).await;
                if d.version() < w2.version() {
                    stale_direct += 1;
                }
            }
            (stale_gw, stale_direct)
        }));
    }
    let (mut gw, mut direct) = (0, 0);
    for t in tasks {
        let (g, d) = t.await.unwrap();
        gw += g;
        direct += d;
    }
    (gw, direct)
}

fn assert_promise(source: &str, (stale_gw, stale_direct): (u64, u64)) {
    let total = WORKERS * PAIRS_PER_WORKER;
    assert_eq!(stale_gw, 0, "{source}: stale reads through the gateway");
    assert!(
        stale_direct * 2 > total,
        "{source}: direct reads should mostly be stale, got {stale_direct}/{total}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_pushed_checkpoints() {
    let stack = start(Setup::default()).await;
    assert_promise("push", pairs(&stack).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_polled_checkpoints() {
    let stack = start(Setup {
        sources: r#"["poll"]"#,
        ..Setup::default()
    })
    .await;
    assert_promise("poll", pairs(&stack).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_checkpoints_from_response_headers() {
    // The header source is passive: the gateway learns a checkpoint only from read
    // responses, so held reads fall back to the primary; none is ever stale.
    let stack = start(Setup {
        sources: r#"["header"]"#,
        read_route: "max_wait = \"20ms\"\non_timeout = \"primary\"\nprimary = \"commands\"".into(),
        ..Setup::default()
    })
    .await;
    assert_promise("header", pairs(&stack).await);
    let p = http()
        .get(&stack.gateway.admin_url("/projections"), &[])
        .await
        .json();
    let learned = p["projections"]["users"]["instances"]["r0"]["checkpoint"]["users"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        learned > 0,
        "the gateway learned checkpoints from headers: {p}"
    );
}
