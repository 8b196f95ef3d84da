//! `tests/run.sh`, the README's one test command, on a machine stand-in: a PATH of
//! stubs (an `apt-get` that records its calls, a `cargo` that records its calls and
//! prints two suites' results for `cargo test`), so the script's decisions are
//! checked without installing anything or running the suite inside itself. It
//! installs exactly what is missing (one quiet `apt-get update`; the Kafka broker
//! `tansu` through `cargo install`), nothing when all is there, passes its arguments
//! to `cargo test --locked`, and closes with the totals line and cargo's status.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run.sh");

fn stub(dir: &Path, name: &str, body: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A PATH directory with the tools the script uses itself, plus `installed`.
fn machine(dir: &Path, installed: &[&str], cargo_status: u8) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["mktemp", "tee", "awk", "rm", "dirname", "id", "cat", "env"] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is on this machine"));
        std::os::unix::fs::symlink(real, bin.join(tool)).unwrap();
    }
    let log = dir.join("calls.log");
    stub(
        &bin,
        "apt-get",
        &format!("echo \"apt-get $*\" >> '{}'", log.display()),
    );
    stub(&bin, "sudo", "exec \"$@\"");
    stub(
        &bin,
        "cargo",
        &format!(
            "echo \"cargo $*\" >> '{}'\n\
             [ \"$1\" = test ] || exit 0\n\
             echo 'test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out'\n\
             echo 'test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out'\n\
             exit {cargo_status}",
            log.display()
        ),
    );
    for tool in installed {
        stub(&bin, tool, "exit 0");
    }
    bin
}

fn run(dir: &Path, bin: &Path, args: &[&str]) -> (Output, String) {
    let out = Command::new("/bin/bash")
        .arg(SCRIPT)
        .args(args)
        .env_clear()
        .env("PATH", bin)
        .env("HOME", dir)
        .output()
        .expect("bash runs the script");
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap_or_default();
    (out, calls)
}

fn postgres_installed() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.flatten().any(|v| v.path().join("bin/initdb").exists()))
        .unwrap_or(false)
}

#[test]
fn installs_only_what_is_missing_then_runs_the_suite_and_totals_it() {
    let dir = tempfile::tempdir().unwrap();
    let bin = machine(dir.path(), &["redis-server", "redis-cli", "wrk"], 0);
    let (out, calls) = run(dir.path(), &bin, &["--test", "config"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines[0], "apt-get update -qq", "{calls}");
    let install = lines[1];
    assert!(install.starts_with("apt-get install -y -qq"), "{calls}");
    let mut wanted = vec!["chromium", "nats-server"];
    if !postgres_installed() {
        wanted.push("postgresql");
    }
    for package in &wanted {
        assert!(
            install.contains(package),
            "{package} missing from: {install}"
        );
    }
    for present in ["redis-server", "wrk"] {
        assert!(
            !install.contains(present),
            "{present} is installed: {install}"
        );
    }
    // No tansu on PATH nor in ~/.cargo/bin (HOME is the temporary directory).
    assert_eq!(
        lines[2], "cargo install tansu --locked --features dynostore",
        "{calls}"
    );
    assert_eq!(
        lines[3], "cargo test --locked --no-fail-fast --test config",
        "{calls}"
    );
    assert_eq!(lines.len(), 4, "{calls}");
    assert_eq!(
        stdout.lines().last(),
        Some("15 passed, 2 failed, 1 skipped"),
        "{stdout}"
    );
}

#[test]
fn an_equipped_machine_installs_nothing_and_cargo_decides_the_status() {
    // The suite needs PostgreSQL's binaries (tests/run.sh installs them first).
    assert!(
        postgres_installed(),
        "no /usr/lib/postgresql/*/bin/initdb: run tests/run.sh, which installs it"
    );
    let dir = tempfile::tempdir().unwrap();
    let all = [
        "redis-server",
        "redis-cli",
        "chromium",
        "nats-server",
        "wrk",
        "tansu",
    ];
    let bin = machine(dir.path(), &all, 101);
    let (out, calls) = run(dir.path(), &bin, &[]);
    assert_eq!(calls, "cargo test --locked --no-fail-fast\n");
    assert_eq!(
        out.status.code(),
        Some(101),
        "cargo's failure is the script's"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("15 passed, 2 failed, 1 skipped")
    );
}

#[test]
fn tansu_installed_by_cargo_is_found_off_path_and_not_installed_again() {
    let dir = tempfile::tempdir().unwrap();
    let all = [
        "redis-server",
        "redis-cli",
        "chromium",
        "nats-server",
        "wrk",
    ];
    let bin = machine(dir.path(), &all, 0);
    // `cargo install` puts it in ~/.cargo/bin, which need not be on PATH.
    let cargo_bin = dir.path().join(".cargo/bin");
    std::fs::create_dir_all(&cargo_bin).unwrap();
    stub(&cargo_bin, "tansu", "exit 0");
    let (out, calls) = run(dir.path(), &bin, &[]);
    assert!(out.status.success(), "{calls}");
    assert!(!calls.contains("cargo install"), "{calls}");
    assert_eq!(
        calls.lines().last(),
        Some("cargo test --locked --no-fail-fast"),
        "{calls}"
    );
}
