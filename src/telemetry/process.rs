//! Process metrics in the standard Prometheus names (`process_*`, as the official
//! client libraries export them), read from `/proc/self` at scrape time. On systems
//! without `/proc` nothing is rendered. No crate needed: the files are plain text.

use std::fmt::Write;

/// Clock ticks per second of `/proc/*/stat` times (`USER_HZ`). Fixed at 100 by the
/// Linux user-space ABI whatever the kernel's internal `HZ`.
const USER_HZ: f64 = 100.0;

/// One scrape's process figures; `None` where a file could not be read or parsed.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, in bytes.
    pub resident_bytes: Option<u64>,
    /// Virtual memory size, in bytes.
    pub virtual_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Process start, in seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads this process's figures from `/proc/self`.
    pub fn read() -> ProcessStats {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let mut stats = read("/proc/self/stat")
            .map(|s| parse_stat(&s, read("/proc/stat").as_deref()))
            .unwrap_or_default();
        stats.resident_bytes = read("/proc/self/status").and_then(|s| vm_rss(&s));
        stats.max_fds = read("/proc/self/limits").and_then(|s| max_open_files(&s));
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as u64);
        stats
    }

    /// The Prometheus text exposition of these figures (only those known).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: Option<String>| {
            if let Some(v) = value {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
                );
            }
        };
        metric(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds.map(|v| v.to_string()),
        );
        metric(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            self.resident_bytes.map(|v| v.to_string()),
        );
        metric(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            self.virtual_bytes.map(|v| v.to_string()),
        );
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            self.open_fds.map(|v| v.to_string()),
        );
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            self.max_fds.map(|v| v.to_string()),
        );
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.map(|v| v.to_string()),
        );
        out
    }
}

/// CPU time, virtual size and start time from `/proc/self/stat` (and the boot time
/// from `/proc/stat`). The command name (field 2) may hold spaces and parentheses, so
/// fields are counted from the last `)`.
fn parse_stat(stat: &str, proc_stat: Option<&str>) -> ProcessStats {
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcessStats::default();
    };
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let cpu_seconds = match (field(14), field(15)) {
        (Some(utime), Some(stime)) => Some((utime + stime) as f64 / USER_HZ),
        _ => None,
    };
    let boot = proc_stat.and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let start_time_seconds = match (boot, field(22)) {
        (Some(boot), Some(ticks)) => Some(boot as f64 + ticks as f64 / USER_HZ),
        _ => None,
    };
    ProcessStats {
        cpu_seconds,
        virtual_bytes: field(23),
        start_time_seconds,
        ..ProcessStats::default()
    }
}

/// `VmRSS` of `/proc/self/status`, in bytes (the file gives kB).
fn vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// The soft `Max open files` of `/proc/self/limits` (`None` when unlimited).
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    line.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (tide mark) (x) S 1 4242 4242 0 -1 4194560 1 0 0 0 \
        250 50 0 0 20 0 9 0 12345 104857600 2048 18446744073709551615";

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let s = parse_stat(STAT, Some("cpu  1 2 3\nbtime 1700000000\n"));
        assert_eq!(s.cpu_seconds, Some(3.0));
        assert_eq!(s.virtual_bytes, Some(104_857_600));
        assert_eq!(s.start_time_seconds, Some(1_700_000_123.45));
    }

    #[test]
    fn garbage_gives_nothing_rather_than_a_panic() {
        assert_eq!(parse_stat("", None), ProcessStats::default());
        assert_eq!(parse_stat("1 (x) S", None).cpu_seconds, None);
        assert_eq!(vm_rss("VmRSS: lots"), None);
        assert_eq!(
            max_open_files("Max open files  unlimited unlimited files"),
            None
        );
    }

    #[test]
    fn status_and_limits_are_read() {
        assert_eq!(vm_rss("Name:\tx\nVmRSS:\t    2144 kB\n"), Some(2144 * 1024));
        let limits = "Max processes 63 63 processes\nMax open files            1024                524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024));
    }

    #[test]
    fn this_process_reports_itself_on_linux() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return;
        }
        let s = ProcessStats::read();
        assert!(s.resident_bytes.unwrap_or(0) > 0);
        assert!(s.open_fds.unwrap_or(0) > 0);
        assert!(s.start_time_seconds.unwrap_or(0.0) > 1.0e9);
        let text = s.render();
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(text.contains("\nprocess_open_fds "));
    }
}
