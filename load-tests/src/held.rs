//! Scenario 3: held-read scale. N clients each send one token-gated read that the
//! gateway must hold (no checkpoint covers the token yet), then one checkpoint push
//! per read instance releases them all. Measures the gateway process's resident memory
//! (VmRSS) idle, with N idle connections, and with N held reads; the time from the
//! push to the last forwarded read reaching the upstream and to the last answer; and
//! the gateway's CPU time for the release.
//!
//! Reads travel over h2c connections, 150 streams each (see [`STREAMS_PER_CONNECTION`]
//! for why), or with `--http1` one HTTP/1.1 connection per read (the way browsers
//! behind an HTTP/1.1 load balancer arrive). The projection has four read instances so
//! the gateway's own upstream connections spread over four ports too.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde::Serialize;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::fresh::write_json;
use crate::gateway::{self, GatewaySpec};
use crate::generator::{self, Target};
use crate::net;
use crate::procs;

/// Concurrent reads per h2c connection.
const STREAMS_PER_CONNECTION: usize = 150;

/// Settings of the held-read scenario.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct HeldArgs {
    /// The tidemark binary.
    #[arg(long, default_value = "target/production/tidemark")]
    pub gateway_bin: PathBuf,
    /// Held reads per run.
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub counts: Vec<usize>,
    /// Read instances (each gets one push).
    #[arg(long, default_value_t = 4)]
    pub instances: usize,
    /// One HTTP/1.1 connection per held read instead of h2c streams (each read and its
    /// connection then cost a descriptor in the gateway and one in this tool: keep the
    /// count under RLIMIT_NOFILE).
    #[arg(long)]
    pub http1: bool,
    /// Where the JSON goes.
    #[arg(long)]
    pub out: PathBuf,
    /// Scratch directory.
    #[arg(long)]
    pub scratch: PathBuf,
}

/// One run's figures.
#[derive(Debug, Default, Serialize)]
pub struct HeldFigures {
    /// Reads sent.
    pub reads: usize,
    /// `h2c` or `http1`.
    pub transport: String,
    /// Connections the reads were spread over.
    pub connections: usize,
    /// Connections that could not be opened.
    pub connect_errors: usize,
    /// Highest `held_reads_total` seen before the push.
    pub held_seen: u64,
    /// Seconds until all were held.
    pub hold_all_s: f64,
    /// Gateway VmRSS idle / with the connections open / with the reads held (KiB).
    pub rss_idle_kib: u64,
    /// With the connections open, before any request.
    pub rss_connected_kib: u64,
    /// With every read held.
    pub rss_held_kib: u64,
    /// (held - idle) / reads: a held read including its connection.
    pub kib_per_held_read: f64,
    /// (held - connected) / reads: the held read alone.
    pub kib_per_held_read_excl_connection: f64,
    /// Released reads that reached the upstream.
    pub reached_upstream: u64,
    /// From the start of the checkpoint push to the last read reaching the upstream.
    pub release_to_upstream_ms: f64,
    /// From the start of the push to the gateway holding no read (its
    /// `held_reads_total`, polled every 2 ms over the admin API, reads 0): every read
    /// has left the hold and is on its way upstream.
    pub release_out_of_hold_ms: f64,
    /// From the start of the push to the last answer at the client.
    pub release_all_answered_ms: f64,
    /// Baseline in the same run: the same number of reads sent straight to the read
    /// instances over as many keep-alive connections as the gateway may open to them
    /// (`max_connections` per instance), closed loop: how long the upstream itself
    /// takes to answer them, with no gateway in between.
    pub direct_all_answered_ms: f64,
    /// Connections of that baseline (all instances).
    pub direct_connections: usize,
    /// 2xx answers.
    pub ok: u64,
    /// Other outcomes.
    pub errors: u64,
    /// Gateway CPU seconds from the push to the last answer.
    pub release_cpu_s: f64,
    /// `release_cpu_s / reads`, microseconds (wake + forward + answer).
    pub release_cpu_us_per_read: f64,
    /// Gateway CPU seconds while the reads sat held (over `idle_hold_s`).
    pub hold_cpu_s: f64,
    /// Length of that idle hold, seconds.
    pub idle_hold_s: f64,
}

#[derive(Debug, Serialize)]
struct HeldReport {
    settings: HeldArgs,
    results: Vec<HeldFigures>,
}

/// Runs the scenario and writes its JSON.
pub async fn run(args: HeldArgs) -> Result<(), String> {
    std::fs::create_dir_all(&args.scratch).map_err(|e| e.to_string())?;
    let mut results = Vec::new();
    for &n in &args.counts {
        eprintln!("held: {n} reads");
        let f = one(&args, n).await?;
        eprintln!(
            "held: {n}: {:.2} KiB/read, out of hold {:.1} ms, last at upstream {:.1} ms, last answer {:.1} ms (direct baseline {:.1} ms), ok {} errors {}",
            f.kib_per_held_read,
            f.release_out_of_hold_ms,
            f.release_to_upstream_ms,
            f.release_all_answered_ms,
            f.direct_all_answered_ms,
            f.ok,
            f.errors
        );
        results.push(f);
    }
    write_json(
        &args.out,
        &HeldReport {
            settings: args.clone(),
            results,
        },
    )
}

async fn one(args: &HeldArgs, n: usize) -> Result<HeldFigures, String> {
    let addrs = gateway::addresses().map_err(|e| e.to_string())?;
    let backend = Backend::start(Duration::ZERO, args.instances.max(1), Vec::new())
        .await
        .map_err(|e| e.to_string())?;
    let spec = GatewaySpec {
        command: backend.command,
        reads: backend.reads.clone(),
        max_held_reads: n + 1000,
        max_connections: n + 1000,
        max_wait: "120s".into(),
        on_timeout: "error".into(),
        cache: false,
        redis: None,
    };
    let name = format!("tidemark-held{n}");
    let gw = gateway::start(&args.gateway_bin, &spec, addrs, None, &args.scratch, &name).await?;
    let pid = gw.proc.pid();
    let w = net::once(
        Method::PUT,
        gw.proxy,
        "/users/1",
        &[("content-type", "application/json")],
        r#"{"name":"held"}"#,
    )
    .await
    .map_err(|e| format!("write: {e}"))?;
    let token = w
        .header("consistency-token")
        .ok_or("no token on the write")?
        .to_owned();
    let position = w.json()["version"].as_u64().unwrap_or(1);
    let mut f = HeldFigures {
        reads: n,
        transport: if args.http1 { "http1" } else { "h2c" }.into(),
        ..HeldFigures::default()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    f.rss_idle_kib = procs::rss_kib(pid);

    // h2c connections, STREAMS_PER_CONNECTION reads each (hyper's server allows 200
    // concurrent streams): one HTTP/1.1 connection per held read would need more file
    // descriptors than RLIMIT_NOFILE allows here (20,000, not raisable without
    // CAP_SYS_RESOURCE), in the gateway and in this process.
    let senders = if args.http1 {
        let mut h1 = Vec::with_capacity(n);
        for i in 0..n {
            let source = 1 + (i % 4) as u8;
            match net::connect(gw.proxy, Some(source)).await {
                Ok(s) => h1.push(s),
                Err(_) => f.connect_errors += 1,
            }
        }
        f.connections = h1.len();
        Senders::Http1(h1)
    } else {
        let conns = n.div_ceil(STREAMS_PER_CONNECTION);
        let mut h2 = Vec::with_capacity(conns);
        for i in 0..conns {
            let source = 1 + (i % 4) as u8;
            match net::connect_h2(gw.proxy, Some(source)).await {
                Ok(s) => h2.push(s),
                Err(_) => f.connect_errors += 1,
            }
        }
        if h2.is_empty() {
            return Err("no h2c connection to the gateway".into());
        }
        f.connections = h2.len();
        Senders::H2c((0..n).map(|i| h2[i % h2.len()].clone()).collect())
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    f.rss_connected_kib = procs::rss_kib(pid);

    let sent = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    let build = {
        let token = token.clone();
        let addr = gw.proxy;
        move || {
            net::build(
                Method::GET,
                addr,
                "/users/1",
                &[("consistency-token", &token)],
                Bytes::new(),
            )
            .ok()
        }
    };
    match senders {
        Senders::H2c(senders) => {
            for mut s in senders {
                let req = build();
                tasks.push(tokio::spawn(async move {
                    let r = net::send_h2(&mut s, req?, Duration::from_secs(150)).await;
                    Some((Instant::now(), matches!(r, Ok(r) if r.status.is_success())))
                }));
            }
        }
        Senders::Http1(senders) => {
            for mut s in senders {
                let req = build();
                tasks.push(tokio::spawn(async move {
                    let r = net::send(&mut s, req?, Duration::from_secs(150)).await;
                    Some((Instant::now(), matches!(r, Ok(r) if r.status.is_success())))
                }));
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(90);
    let expected = tasks.len() as u64;
    while Instant::now() < deadline {
        f.held_seen = f.held_seen.max(gw.held().await);
        if f.held_seen >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f.hold_all_s = sent.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_held = procs::cpu_seconds(pid);
    let idle = Duration::from_secs(1);
    tokio::time::sleep(idle).await;
    f.rss_held_kib = procs::rss_kib(pid);
    let cpu_before = procs::cpu_seconds(pid);
    f.hold_cpu_s = cpu_before - cpu_held;
    f.idle_hold_s = idle.as_secs_f64();

    let served_before = backend.served();
    let t0 = Instant::now();
    let mut pushes = Vec::new();
    for i in 0..args.instances.max(1) {
        let admin = gw.admin;
        pushes.push(tokio::spawn(async move {
            let path = format!("/projections/users/checkpoint?instance=r{i}");
            let body = format!("{{\"users\": {position}}}");
            net::once(
                Method::PUT,
                admin,
                &path,
                &[("content-type", "application/json")],
                body,
            )
            .await
        }));
    }
    // Until the gateway holds none (bounded: 60 s).
    let out_deadline = t0 + Duration::from_secs(60);
    while Instant::now() < out_deadline {
        if gw.held().await == 0 {
            f.release_out_of_hold_ms = t0.elapsed().as_secs_f64() * 1e3;
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // Until every read reached the upstream, or none arrived for 2 s (failed forwards).
    let release_deadline = t0 + Duration::from_secs(120);
    let (mut seen, mut seen_at) = (0, t0);
    while Instant::now() < release_deadline {
        let served = backend.served() - served_before;
        if served > seen {
            (seen, seen_at) = (served, Instant::now());
        }
        if served >= expected || seen_at.elapsed() > Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f.reached_upstream = seen;
    f.release_to_upstream_ms = (seen_at - t0).as_secs_f64() * 1e3;
    for p in pushes {
        let _ = p.await;
    }
    let mut last = t0;
    for t in tasks {
        match t.await {
            Ok(Some((done, true))) => {
                f.ok += 1;
                last = last.max(done);
            }
            _ => f.errors += 1,
        }
    }
    f.release_all_answered_ms = (last - t0).as_secs_f64() * 1e3;
    f.release_cpu_s = procs::cpu_seconds(pid) - cpu_before;
    f.release_cpu_us_per_read = f.release_cpu_s * 1e6 / n.max(1) as f64;
    f.kib_per_held_read = (f.rss_held_kib as f64 - f.rss_idle_kib as f64) / n.max(1) as f64;
    f.kib_per_held_read_excl_connection =
        (f.rss_held_kib as f64 - f.rss_connected_kib as f64) / n.max(1) as f64;
    drop(gw);

    // The baseline: the same reads straight to the instances.
    let per_instance = n.div_ceil(backend.reads.len().max(1)) as u64;
    let conns = UPSTREAM_CONNECTIONS.min(per_instance as usize).max(1);
    let loops = backend.reads.iter().map(|&addr| {
        let target = Target {
            name: "direct".into(),
            addr,
            path: "/users/1".into(),
            headers: vec![("consistency-token".into(), token.clone())],
        };
        async move {
            generator::closed_loop(&target, Duration::from_secs(60), conns, per_instance).await
        }
    });
    let direct = futures_util::future::join_all(loops).await;
    f.direct_connections = conns * backend.reads.len();
    f.direct_all_answered_ms = direct.iter().map(|r| r.elapsed_s * 1e3).fold(0.0, f64::max);
    drop(backend);
    Ok(f)
}

/// The client side of the held reads.
enum Senders {
    /// One per read, streams of shared h2c connections.
    H2c(Vec<net::H2Sender>),
    /// One HTTP/1.1 connection per read.
    Http1(Vec<net::Sender>),
}

/// `upstreams.NAME.max_connections` of the gateway under test (its default).
const UPSTREAM_CONNECTIONS: usize = 256;
