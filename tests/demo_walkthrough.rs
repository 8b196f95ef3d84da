//! `tidemark demo --once` (the README's first command) runs its walkthrough to the end.

use std::time::Duration;

use tidemark::demo::walkthrough::{run, DemoOptions};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_walkthrough_completes() {
    let opts = DemoOptions {
        lag: Duration::from_millis(100),
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        once: true,
    };
    tokio::time::timeout(Duration::from_secs(30), run(opts, CancellationToken::new()))
        .await
        .expect("the walkthrough ends by itself")
        .expect("the walkthrough succeeds");
}
