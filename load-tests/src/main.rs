//! `tidemark-load`: the open-loop load generator and the scenarios of
//! `load-tests/README.md`. `load-tests/run.sh` runs them all and writes the report.
//!
//! - [`generator`]: open loop (latency from the intended send time) and closed loop.
//! - [`fresh`], [`ryw`], [`held`]: scenarios 1+5, 2 and 3.
//! - [`sources`]: scenario 6, positions read from PostgreSQL and NATS (fences, sources).
//! - [`report`] and [`svg`]: report.md and the charts from the scenarios' JSON.
//! - [`floor`]: the bare hyper proxy the fresh-read scenario measures as the stack's floor.
//! - [`wrk`] and [`cores`]: the independent generator and the per-core busy figures.
//! - [`backend`], [`gateway`], [`nginx`], [`redis`], [`procs`], [`net`]: the pieces.

mod backend;
mod cap;
mod cores;
mod floor;
mod fresh;
mod gateway;
mod generator;
mod held;
mod machine;
mod net;
mod nginx;
mod procs;
mod redis;
mod report;
mod ryw;
mod sources;
mod stats;
mod svg;
mod wrk;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "Load tests for tidemark (loopback targets only)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Scenario 1 (and 5 with --redis): fresh reads direct vs nginx vs tidemark.
    Fresh(fresh::FreshArgs),
    /// Scenario 2: read-your-writes under projection lag.
    Ryw(ryw::RywArgs),
    /// Scenario 3: many held reads released by one checkpoint.
    Held(held::HeldArgs),
    /// Scenario 6: the postgres and nats sources and fences (real servers on loopback).
    Sources(sources::SourcesArgs),
    /// The bare hyper proxy (the stack's floor; run by `fresh`, not by hand).
    FloorProxy(floor::FloorArgs),
    /// Sends exactly `--requests` GETs, closed loop, and prints the outcome (for
    /// instruction counts under callgrind: `load-tests/callgrind.sh`).
    Count(CountArgs),
    /// Writes the machine description (CPU, memory, versions) as JSON.
    Machine {
        /// Where the JSON goes.
        #[arg(long)]
        out: PathBuf,
    },
    /// Builds report.md and the SVG charts from a results directory.
    Report {
        /// The results directory (holds the scenarios' JSON).
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Settings of `count`.
#[derive(Debug, clap::Args)]
struct CountArgs {
    /// The target (loopback only).
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// Request path.
    #[arg(long, default_value = "/users/1")]
    path: String,
    /// Extra header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests to send, in all.
    #[arg(long)]
    requests: u64,
    /// Bound on the whole run, seconds.
    #[arg(long, default_value_t = 600)]
    timeout_s: u64,
}

async fn count(a: CountArgs) -> Result<(), String> {
    net::ensure_loopback(a.addr).map_err(|e| e.to_string())?;
    let mut headers = Vec::new();
    for h in &a.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("--header {h:?}: expected `name: value`"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    if a.connections == 0 || !a.requests.is_multiple_of(a.connections as u64) {
        return Err(format!(
            "--requests {} must be a multiple of --connections {} (each connection sends as many)",
            a.requests, a.connections
        ));
    }
    let target = generator::Target {
        name: "count".into(),
        addr: a.addr,
        path: a.path,
        headers,
    };
    let r = generator::closed_loop(
        &target,
        std::time::Duration::from_secs(a.timeout_s),
        a.connections,
        a.requests,
    )
    .await;
    println!(
        "sent {} ok {} errors {} in {:.2} s",
        r.sent, r.ok, r.errors, r.elapsed_s
    );
    if r.ok == a.requests && r.sent == a.requests {
        Ok(())
    } else {
        Err(format!(
            "{} of {} requests answered 2xx ({} sent)",
            r.ok, a.requests, r.sent
        ))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tidemark-load: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command {
            Cmd::Fresh(a) => fresh::run(a).await,
            Cmd::Ryw(a) => ryw::run(a).await,
            Cmd::Held(a) => held::run(a).await,
            Cmd::Sources(a) => sources::run(a).await,
            Cmd::FloorProxy(a) => floor::run(a).await,
            Cmd::Count(a) => count(a).await,
            Cmd::Machine { out } => machine::write(&out),
            Cmd::Report { dir } => report::write(&dir),
        }
    });
    // Scenario tasks may still hold connections; do not wait for them.
    runtime.shutdown_background();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidemark-load: {e}");
            ExitCode::FAILURE
        }
    }
}
