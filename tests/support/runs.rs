//! Write-then-read runs across gateways, readiness waits, and a projector stand-in
//! that runs the Redis recipe. Included with
//! `#[path = "support/runs.rs"] mod runs;` next to `mod common;` and
//! `mod redis_server;` (path include, like `redis_server.rs`).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidemark::demo::{Backend, DemoError};
use tidemark::store::redis::CHECKPOINT_SCRIPT;
use tokio::task::JoinHandle;

use crate::common::{http, wait_until, Http, Resp, TestGateway};

/// Every wait on a condition gives up after this.
const DEADLINE: Duration = Duration::from_secs(30);
/// A run's worker stops after this many pairs even if nobody stops it.
const MAX_PAIRS_PER_WORKER: u64 = 5_000;

/// What a run of write-then-read pairs saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub pairs: u64,
    /// Writes answered with anything but 2xx.
    pub failed_writes: u64,
    /// Reads older than the write before them (or not 200).
    pub stale: u64,
    /// Reads per `Consistency-Source`.
    pub sources: BTreeMap<String, u64>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.pairs += other.pairs;
        self.failed_writes += other.failed_writes;
        self.stale += other.stale;
        for (source, n) in other.sources {
            *self.sources.entry(source).or_default() += n;
        }
    }
}

/// One pair: write user `id` via `writer`, then read it via each of `readers` with
/// the write's token.
async fn pair(client: &Http, writer: &str, readers: &[String], id: u64, tally: &mut Tally) {
    tally.pairs += 1;
    let w = client
        .put_json(
            &format!("{writer}/users/{id}"),
            &[],
            &format!("{{\"n\":{id}}}"),
        )
        .await;
    if !w.status.is_success() {
        tally.failed_writes += 1;
        return;
    }
    let Some(token) = w.header("consistency-token") else {
        tally.failed_writes += 1;
        return;
    };
    for reader in readers {
        let r = client
            .get(
                &format!("{reader}/users/{id}"),
                &[("consistency-token", token)],
            )
            .await;
        if r.version() < w.version() {
            tally.stale += 1;
        }
        let source = r.header("consistency-source").unwrap_or("none").to_owned();
        *tally.sources.entry(source).or_default() += 1;
    }
}

/// `workers` x `per_worker` pairs (user ids from `first_id`): write via `writer`,
/// read via each of `readers`.
pub async fn pairs(
    writer: &TestGateway,
    readers: &[&TestGateway],
    workers: u64,
    per_worker: u64,
    first_id: u64,
) -> Tally {
    let writer = writer.url("");
    let readers: Vec<String> = readers.iter().map(|g| g.url("")).collect();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (writer, readers) = (writer.clone(), readers.clone());
        tasks.push(tokio::spawn(async move {
            let client = http();
            let mut tally = Tally::default();
            for i in 0..per_worker {
                let id = first_id + w * per_worker + i;
                pair(&client, &writer, &readers, id, &mut tally).await;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for t in tasks {
        tally.merge(t.await.expect("worker"));
    }
    tally
}

/// Pairs (write via A, read via B) running in the background until stopped.
pub struct Run {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Run {
    /// Starts `workers` workers; user ids from `first_id`.
    pub fn start(a: &TestGateway, b: &TestGateway, workers: u64, first_id: u64) -> Run {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let (writer, readers) = (a.url(""), vec![b.url("")]);
        let tasks = (0..workers)
            .map(|w| {
                let (done, stop, tally) = (done.clone(), stop.clone(), tally.clone());
                let (writer, readers) = (writer.clone(), readers.clone());
                tokio::spawn(async move {
                    let client = http();
                    let mut mine = Tally::default();
                    for i in 0..MAX_PAIRS_PER_WORKER {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let id = first_id + w * MAX_PAIRS_PER_WORKER + i;
                        pair(&client, &writer, &readers, id, &mut mine).await;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.lock().expect("tally").merge(mine);
                })
            })
            .collect();
        Run {
            done,
            stop,
            tally,
            tasks,
        }
    }

    pub fn pairs_done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Waits until `n` pairs are done in all.
    pub async fn wait_pairs(&self, n: u64, within: Duration) {
        wait_until(within, &format!("{n} pairs"), || async {
            self.pairs_done() >= n
        })
        .await;
    }

    /// Stops the workers (each finishes its pair) and returns what they saw.
    pub async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("worker");
        }
        std::mem::take(&mut *self.tally.lock().expect("tally"))
    }
}

/// `store` of the gateway's `/readyz`: `ok`, `degraded` or `memory`.
pub async fn store_state(gw: &TestGateway) -> String {
    let r = http().get(&gw.admin_url("/readyz"), &[]).await;
    r.json()["store"].as_str().unwrap_or_default().to_owned()
}

/// Waits until the gateway's `/readyz` reports the store as `state`.
pub async fn wait_store(gw: &TestGateway, state: &str) {
    wait_until(
        DEADLINE,
        &format!("/readyz of {} to say store {state}", gw.admin),
        || async { store_state(gw).await == state },
    )
    .await;
}

/// Instance `r0`'s `users` checkpoint on a gateway (`/projections`).
pub async fn checkpoint(gw: &TestGateway) -> u64 {
    let r = http().get(&gw.admin_url("/projections"), &[]).await;
    r.json()["projections"]["users"]["instances"]["r0"]["checkpoint"]["users"]
        .as_u64()
        .unwrap_or(0)
}

/// How long the gateway held a read, from `Server-Timing: tidemark;dur=<ms>`.
pub fn held_ms(r: &Resp) -> f64 {
    r.header("server-timing")
        .and_then(|t| t.split(';').find_map(|p| p.strip_prefix("dur=")))
        .and_then(|d| d.parse().ok())
        .unwrap_or(0.0)
}

/// A projector's connection to Redis, running the README's projector recipe.
pub enum Recipe {
    Single(redis::aio::MultiplexedConnection),
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Recipe {
    pub async fn single(url: &str) -> Recipe {
        let client = redis::Client::open(url).expect("redis url");
        Recipe::Single(
            client
                .get_multiplexed_async_connection()
                .await
                .expect("connect to redis"),
        )
    }

    pub async fn cluster(urls: Vec<String>) -> Recipe {
        let client = redis::cluster::ClusterClient::new(urls).expect("cluster urls");
        Recipe::Cluster(
            client
                .get_async_connection()
                .await
                .expect("connect to cluster"),
        )
    }

    /// The documented command: `EVAL <config/redis-checkpoint.lua> 1
    /// <prefix>:cp:{users} <prefix>:checkpoints users * users <position>`.
    pub async fn report(&mut self, prefix: &str, position: u64) -> redis::RedisResult<u64> {
        let mut eval = redis::cmd("EVAL");
        eval.arg(CHECKPOINT_SCRIPT)
            .arg(1)
            .arg(format!("{prefix}:cp:{{users}}"))
            .arg(format!("{prefix}:checkpoints"))
            .arg("users")
            .arg("*")
            .arg("users")
            .arg(position);
        match self {
            Recipe::Single(conn) => eval.query_async(conn).await,
            Recipe::Cluster(conn) => eval.query_async(conn).await,
        }
    }

    /// Reports instance 0's checkpoint each time the backend's projector commits
    /// (after the commit, as the recipe requires). Runs until the backend stops or a
    /// report fails (returns why); callers race it against their run.
    pub async fn follow(mut self, backend: &Backend, prefix: &str) -> String {
        let mut next = 1;
        for _ in 0..1_000_000 {
            if let Err(DemoError::Stopped | DemoError::NoSuchInstance { .. }) =
                backend.wait_checkpoint(0, next).await
            {
                return "backend stopped".into();
            }
            let position = backend.checkpoint(0).unwrap_or(next);
            if let Err(e) = self.report(prefix, position).await {
                return format!("EVAL failed: {e}");
            }
            next = position + 1;
        }
        "report limit reached".into()
    }
}
