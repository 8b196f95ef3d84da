//! `wrk` (Debian's package) as an independent load generator: the cross-check of the
//! tool's own closed loop. One thread (`-t1`), `connections` keep-alive connections,
//! run as a child of this tool, so it inherits the tool's core (`taskset -c 0`).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Command;

use crate::generator::RunResult;
use crate::stats::Summary;

/// What one `wrk` run printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WrkOutput {
    pub requests: u64,
    pub seconds: f64,
    pub rps: f64,
    pub non_2xx: u64,
    pub socket_errors: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
}

/// Runs `wrk -t1 -c<connections> -d<seconds>s --latency` with `headers` against
/// `http://addr{path}`, bounded by the duration plus 15 s.
pub async fn run(
    name: &str,
    addr: SocketAddr,
    path: &str,
    headers: &[(String, String)],
    connections: usize,
    duration: Duration,
) -> Result<RunResult, String> {
    if !addr.ip().is_loopback() {
        return Err(format!("refusing a non-loopback target {addr}"));
    }
    let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
    let mut cmd = Command::new("wrk");
    cmd.arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg("--timeout")
        .arg("5s");
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    cmd.arg(format!("http://{addr}{path}")).kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(seconds + 15), cmd.output())
        .await
        .map_err(|_| "wrk did not finish in time".to_owned())?
        .map_err(|e| format!("start wrk (apt-get install wrk): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let w = parse(&text).ok_or_else(|| format!("unreadable wrk output:\n{text}"))?;
    let errors = w.non_2xx + w.socket_errors;
    Ok(RunResult {
        target: name.to_owned(),
        mode: "wrk".into(),
        connections,
        elapsed_s: w.seconds,
        sent: w.requests,
        ok: w.requests.saturating_sub(w.non_2xx),
        errors,
        achieved_rps: w.rps,
        latency: Summary {
            p50_us: w.p50_us,
            p90_us: w.p90_us,
            p99_us: w.p99_us,
            ..Summary::default()
        },
        ..RunResult::default()
    })
}

/// Reads wrk's report: `N requests in Xs`, `Requests/sec:`, the latency distribution,
/// `Non-2xx or 3xx responses:` and `Socket errors:`.
pub fn parse(text: &str) -> Option<WrkOutput> {
    let mut w = WrkOutput::default();
    let mut seen_requests = false;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            w.rps = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx = rest.trim().parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            w.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum();
        } else if line.contains(" requests in ") {
            let mut parts = line.split_whitespace();
            w.requests = parts.next()?.parse().ok()?;
            let secs = parts.nth(2)?.trim_end_matches(',');
            w.seconds = duration_us(secs)? as f64 / 1e6;
            seen_requests = true;
        } else if let Some((pct, value)) = line.split_once('%') {
            let us = duration_us(value.trim());
            match (pct.trim(), us) {
                ("50", Some(us)) => w.p50_us = us,
                ("90", Some(us)) => w.p90_us = us,
                ("99", Some(us)) => w.p99_us = us,
                _ => {}
            }
        }
    }
    (seen_requests && w.rps > 0.0).then_some(w)
}

/// `783.00us`, `1.20ms`, `4.00s`, `2.00m` in microseconds.
fn duration_us(text: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60e6)
    } else {
        return None;
    };
    let v: f64 = number.parse().ok()?;
    Some((v * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 4s test @ http://127.0.0.1:41000/users/1
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     0.89ms  211.40us   9.01ms   90.12%
    Req/Sec    72.11k     2.10k   75.00k    80.00%
  Latency Distribution
     50%  783.00us
     75%    1.00ms
     90%    1.20ms
     99%    2.01ms
  287045 requests in 4.00s, 51.20MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:  71760.25
Transfer/sec:     12.80MB
";

    #[test]
    fn reads_throughput_latency_and_errors() {
        let w = parse(SAMPLE).expect("parsed");
        assert_eq!(w.requests, 287_045);
        assert!((w.seconds - 4.0).abs() < 1e-9);
        assert!((w.rps - 71_760.25).abs() < 1e-6);
        assert_eq!((w.p50_us, w.p90_us, w.p99_us), (783, 1_200, 2_010));
        assert_eq!((w.non_2xx, w.socket_errors), (5, 3));
    }

    #[test]
    fn output_without_a_result_is_refused() {
        assert_eq!(
            parse("unable to connect to 127.0.0.1:1 Connection refused"),
            None
        );
    }
}
