//! A CPU cap for one proxy at a time (a cgroup with a CFS quota), so that a maximum
//! is bound by the proxy and not by the core the generator and the origin share.
//!
//! On a 2-core machine the proxy needs about as much CPU per request as the generator
//! and the origin together (two sockets each way against one each), so with a whole
//! core each side both fill at once and every maximum is bound by both. Capped at a
//! fraction of its core (`--cpu-cap`, e.g. 0.6), the proxy reaches its quota while the
//! tool's core still has room: the maximum is then the proxy's, and the ratio of two
//! proxies' maxima is the ratio of their work per request. Each capped run says it
//! was: the proxy used ~its quota, the kernel throttled it (`nr_throttled` of
//! `cpu.stat`), and the tool core stayed below 95%.
//!
//! cgroup v2 (`cpu.max`) where `/sys/fs/cgroup` is the unified hierarchy with the
//! `cpu` controller, else cgroup v1 (`cpu.cfs_quota_us` under `/sys/fs/cgroup/cpu`).
//! Needs root (or a delegated cgroup); without it the capped runs are skipped and the
//! report says why.

use std::path::{Path, PathBuf};

/// The CFS period: short, so a capped proxy is paused for at most a few ms at a time
/// (the default 100 ms would stall every connection for tens of ms per period).
const PERIOD_US: u64 = 10_000;

/// One cgroup with a CPU quota; removed when dropped (its processes moved out first).
#[derive(Debug)]
pub struct CpuCap {
    dir: PathBuf,
    /// The parent's `cgroup.procs`: where processes go back to.
    parent_procs: PathBuf,
    v2: bool,
    entered: Vec<u32>,
}

/// Throttling counters of a cap (`cpu.stat`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Throttle {
    pub periods: u64,
    pub throttled: u64,
}

impl CpuCap {
    /// Makes a cgroup named `name` capped at `fraction` of one core.
    pub fn new(name: &str, fraction: f64) -> Result<CpuCap, String> {
        if !(0.05..=1.0).contains(&fraction) {
            return Err(format!(
                "--cpu-cap {fraction}: give a fraction of one core between 0.05 and 1"
            ));
        }
        let quota = (PERIOD_US as f64 * fraction).round() as u64;
        let unified = Path::new("/sys/fs/cgroup");
        let v2 = std::fs::read_to_string(unified.join("cgroup.controllers"))
            .map(|c| c.split_whitespace().any(|x| x == "cpu"))
            .unwrap_or(false);
        let base = if v2 {
            // The cpu controller must be on for the children of the root.
            let _ = std::fs::write(unified.join("cgroup.subtree_control"), "+cpu");
            unified.to_path_buf()
        } else {
            let v1 = unified.join("cpu");
            if !v1.join("cpu.cfs_quota_us").exists() {
                return Err(
                    "no cgroup cpu controller (neither cgroup v2 with `cpu` nor v1 /sys/fs/cgroup/cpu)"
                        .into(),
                );
            }
            v1
        };
        let dir = base.join(format!("tidemark-load-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot make cgroup {}: {e} (needs root)", dir.display()))?;
        let cap = CpuCap {
            parent_procs: base.join("cgroup.procs"),
            dir,
            v2,
            entered: Vec::new(),
        };
        let written = if v2 {
            std::fs::write(cap.dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))
        } else {
            std::fs::write(cap.dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())
                .and_then(|()| std::fs::write(cap.dir.join("cpu.cfs_quota_us"), quota.to_string()))
        };
        written.map_err(|e| format!("cannot set the quota of {}: {e}", cap.dir.display()))?;
        Ok(cap)
    }

    /// Moves `pids` (whole processes, every thread) under the cap.
    pub fn enter(&mut self, pids: &[u32]) -> Result<(), String> {
        for &pid in pids {
            std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
                .map_err(|e| format!("cannot cap process {pid}: {e}"))?;
            self.entered.push(pid);
        }
        Ok(())
    }

    /// Moves every process entered back to the parent (uncapped).
    pub fn leave(&mut self) {
        for pid in self.entered.drain(..) {
            let _ = std::fs::write(&self.parent_procs, pid.to_string());
        }
    }

    /// The cap's throttling counters so far.
    pub fn throttle(&self) -> Throttle {
        let text = std::fs::read_to_string(self.dir.join("cpu.stat")).unwrap_or_default();
        parse_stat(&text)
    }

    /// `v2` or `v1`, for the report.
    pub fn kind(&self) -> &'static str {
        if self.v2 {
            "cgroup v2 cpu.max"
        } else {
            "cgroup v1 cpu.cfs_quota_us"
        }
    }

    /// The period, microseconds.
    pub fn period_us(&self) -> u64 {
        PERIOD_US
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        self.leave();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `nr_periods` and `nr_throttled` of a `cpu.stat` (same names in v1 and v2).
fn parse_stat(text: &str) -> Throttle {
    let mut t = Throttle::default();
    for line in text.lines() {
        let mut kv = line.split_whitespace();
        match (kv.next(), kv.next().and_then(|v| v.parse::<u64>().ok())) {
            (Some("nr_periods"), Some(v)) => t.periods = v,
            (Some("nr_throttled"), Some(v)) => t.throttled = v,
            _ => {}
        }
    }
    t
}

/// The fraction of periods in which the cap throttled, between two readings.
pub fn throttled_fraction(before: Throttle, after: Throttle) -> f64 {
    let periods = after.periods.saturating_sub(before.periods);
    if periods == 0 {
        return 0.0;
    }
    after.throttled.saturating_sub(before.throttled) as f64 / periods as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_read_from_cpu_stat_in_both_versions() {
        let v1 = parse_stat("nr_periods 400\nnr_throttled 380\nthrottled_time 123\n");
        let v2 = parse_stat(
            "usage_usec 9\nuser_usec 5\nsystem_usec 4\nnr_periods 500\nnr_throttled 450\nthrottled_usec 7\n",
        );
        assert_eq!((v1.periods, v1.throttled), (400, 380));
        assert_eq!((v2.periods, v2.throttled), (500, 450));
        assert!((throttled_fraction(v1, v2) - 0.7).abs() < 1e-9);
        assert_eq!(throttled_fraction(v2, v2), 0.0);
    }

    #[test]
    fn a_cap_outside_a_fraction_of_a_core_is_refused() {
        assert!(CpuCap::new("test", 0.0)
            .unwrap_err()
            .contains("between 0.05 and 1"));
        assert!(CpuCap::new("test", 1.5)
            .unwrap_err()
            .contains("between 0.05 and 1"));
    }
}
