//! The machine and the versions a run happened on.

use std::path::Path;

use serde::Serialize;

use crate::fresh::write_json;
use crate::procs::version_of;

/// What the report prints about the machine.
#[derive(Debug, Serialize)]
pub struct Machine {
    /// Logical CPUs online.
    pub nproc: String,
    /// CPU model.
    pub cpu_model: String,
    /// MemTotal.
    pub memory: String,
    /// Kernel.
    pub kernel: String,
    /// Load average when the run started (a busy machine skews everything).
    pub loadavg: String,
    /// rustc -V.
    pub rustc: String,
    /// nginx -v.
    pub nginx: String,
    /// redis-server --version.
    pub redis: String,
    /// The tidemark commit measured.
    pub commit: String,
}

fn first_line_with(path: &str, prefix: &str) -> String {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Collects and writes the machine description.
pub fn write(out: &Path) -> Result<(), String> {
    let machine = Machine {
        nproc: version_of("nproc", &[]),
        cpu_model: first_line_with("/proc/cpuinfo", "model name"),
        memory: first_line_with("/proc/meminfo", "MemTotal"),
        kernel: version_of("uname", &["-r"]),
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        rustc: version_of("rustc", &["-V"]),
        nginx: version_of("nginx", &["-v"]),
        redis: version_of("redis-server", &["--version"]),
        commit: version_of("git", &["log", "-1", "--format=%h %s"]),
    };
    write_json(out, &machine)
}
