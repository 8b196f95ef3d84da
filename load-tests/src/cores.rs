//! How busy each core was during a run, from `/proc/stat` (all processes, kernel time
//! included): the evidence that a run was bound by the proxy's core and not by the
//! core of the load generator and upstream.

/// Busy and total ticks per core (`cpuN` lines of `/proc/stat`), indexed by core.
#[derive(Debug, Clone, Default)]
pub struct Sample(Vec<(u64, u64)>);

/// Reads `/proc/stat` now; empty when it cannot be read (not Linux).
pub fn sample() -> Sample {
    std::fs::read_to_string("/proc/stat")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

/// Parses the `cpuN` lines: busy = everything but `idle` and `iowait`.
fn parse(text: &str) -> Sample {
    let mut cores = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(name) = fields.next() else { continue };
        let Some(index) = name
            .strip_prefix("cpu")
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        let ticks: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        if ticks.len() < 5 {
            continue;
        }
        let total: u64 = ticks.iter().sum();
        let idle = ticks[3] + ticks[4];
        if cores.len() <= index {
            cores.resize(index + 1, (0, 0));
        }
        cores[index] = (total - idle, total);
    }
    Sample(cores)
}

/// The fraction of `core`'s time that was busy between `before` and `after`
/// (0 when unknown).
pub fn busy(before: &Sample, after: &Sample, core: usize) -> f64 {
    match (before.0.get(core), after.0.get(core)) {
        (Some(&(b0, t0)), Some(&(b1, t1))) if t1 > t0 => {
            b1.saturating_sub(b0) as f64 / (t1 - t0) as f64
        }
        _ => 0.0,
    }
}

/// Which side limited a closed-loop run, from the proxy process's share of its core
/// and how busy the tool's core was: `proxy` when only the proxy's core was full.
pub fn bound(proxy_share: f64, tool_core_busy: f64) -> &'static str {
    const FULL: f64 = 0.95;
    match (proxy_share >= FULL, tool_core_busy >= FULL) {
        (true, false) => "proxy",
        (false, true) => "tool",
        (true, true) => "both",
        (false, false) => "neither",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_fraction_per_core_from_two_samples() {
        let a = parse("cpu  9 9 9 9 9 0 0 0 0 0\ncpu0 100 0 50 800 50 0 0 0 0 0\ncpu1 10 0 0 990 0 0 0 0 0 0\n");
        let b = parse("cpu  9 9 9 9 9 0 0 0 0 0\ncpu0 160 0 80 810 50 0 0 0 0 0\ncpu1 60 0 0 1040 0 0 0 0 0 0\n");
        assert!((busy(&a, &b, 0) - 0.9).abs() < 1e-9);
        assert!((busy(&a, &b, 1) - 0.5).abs() < 1e-9);
        assert_eq!(busy(&a, &b, 7), 0.0);
        assert_eq!(bound(0.99, 0.6), "proxy");
        assert_eq!(bound(0.7, 0.99), "tool");
    }
}
