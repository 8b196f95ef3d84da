//! The promise: through the gateway, a client never reads less than its own writes,
//! with each checkpoint source; straight to the read service it mostly does.

mod common;
mod cqrs;

use common::http;
use cqrs::{start, Setup};

const WORKERS: u64 = 25;
const PAIRS_PER_WORKER: u64 = 40; // 1,000 pairs in all

/// What 1,000 write-then-read pairs saw.
struct Outcome {
    stale_gateway: u64,
    stale_direct: u64,
    /// Gateway reads answered by the projection (held until it caught up).
    from_projection: u64,
}

/// Runs 1,000 write-then-read pairs through the gateway, and the same pairs with the
/// read sent straight to the read service.
async fn pairs(stack: &cqrs::Stack) -> Outcome {
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let gw = stack.gateway.url("");
        let direct = format!("http://{}", stack.backend.read_addrs[0]);
        tasks.push(tokio::spawn(async move {
            let client = http();
            let (mut stale_gw, mut stale_direct, mut from_projection) = (0, 0, 0);
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
                if r.header("consistency-source") == Some("projection") {
                    from_projection += 1;
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
            (stale_gw, stale_direct, from_projection)
        }));
    }
    let mut out = Outcome {
        stale_gateway: 0,
        stale_direct: 0,
        from_projection: 0,
    };
    for t in tasks {
        let (g, d, p) = t.await.unwrap();
        out.stale_gateway += g;
        out.stale_direct += d;
        out.from_projection += p;
    }
    out
}

fn assert_promise(source: &str, out: &Outcome) {
    let total = WORKERS * PAIRS_PER_WORKER;
    assert_eq!(
        out.stale_gateway, 0,
        "{source}: stale reads through the gateway"
    );
    assert!(
        out.stale_direct * 2 > total,
        "{source}: direct reads should mostly be stale, got {}/{total}",
        out.stale_direct
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_pushed_checkpoints() {
    let stack = start(Setup {
        cache: false,
        ..Setup::default()
    })
    .await;
    let out = pairs(&stack).await;
    assert_promise("push", &out);
    assert_eq!(
        out.from_projection,
        WORKERS * PAIRS_PER_WORKER,
        "every read was held until the projection caught up"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_polled_checkpoints() {
    let stack = start(Setup {
        sources: r#"["poll"]"#,
        cache: false,
        ..Setup::default()
    })
    .await;
    let out = pairs(&stack).await;
    assert_promise("poll", &out);
    assert_eq!(
        out.from_projection,
        WORKERS * PAIRS_PER_WORKER,
        "every read was held until a poll saw the checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_stale_reads_with_checkpoints_from_response_headers() {
    // The header source is passive: the gateway learns an instance's checkpoint from
    // the reads it forwards there. Other clients' token-less reads (background traffic,
    // bounded in count and time) teach it, and release the held reads.
    let stack = start(Setup {
        sources: r#"["header"]"#,
        cache: false,
        ..Setup::default()
    })
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let url = stack.gateway.url("/users/0");
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = http();
            for _ in 0..20_000 {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let r = client.get(&url, &[]).await;
                assert_eq!(r.header("consistency-source"), Some("projection"));
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let out = pairs(&stack).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    background.await.unwrap();
    assert_promise("header", &out);
    assert_eq!(
        out.from_projection,
        WORKERS * PAIRS_PER_WORKER,
        "every read was released by a checkpoint learned from a response header"
    );
}
