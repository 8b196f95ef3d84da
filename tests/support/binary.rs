//! The built `tidemark` binary as a user runs it: `tidemark run` as a child process
//! with JSON logs on stderr (collected), the listeners found from its
//! "tidemark listening" line; and one-shot commands (`check`, `token inspect`,
//! `demo`). Included with `#[path = "support/binary.rs"] mod binary;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Every wait on the child gives up after this.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The binary cargo built for these tests.
pub fn tidemark() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    // The default log level, whatever the caller's shell says.
    cmd.env_remove("RUST_LOG")
        .env_remove("TIDEMARK_LOG_JSON")
        .stdin(Stdio::null());
    cmd
}

/// Runs a one-shot command to completion (bounded by [`DEADLINE`]).
pub fn output(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tidemark starts");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(out) => out.expect("tidemark runs"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("tidemark (pid {pid}) did not exit within {DEADLINE:?}");
        }
    }
}

/// `tidemark run --log-json` in the background; killed on drop.
pub struct Running {
    child: Child,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    lines: Arc<Mutex<Vec<serde_json::Value>>>,
}

impl Running {
    /// Starts `tidemark run --config <config> --log-json` with `env` added, and
    /// waits for its listeners.
    pub fn start(config: &std::path::Path, env: &[(&str, String)]) -> Running {
        let mut cmd = tidemark();
        cmd.args(["run", "--log-json", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("tidemark run starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    let value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                    lines.lock().unwrap().push(value);
                }
            });
        }
        let started = Instant::now();
        let (proxy, admin) = loop {
            let found = lines.lock().unwrap().iter().find_map(|l| {
                if l["fields"]["message"] != "tidemark listening" {
                    return None;
                }
                let addr = |k: &str| l["fields"][k].as_str()?.parse::<SocketAddr>().ok();
                Some((addr("proxy")?, addr("admin")?))
            });
            if let Some(found) = found {
                break found;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "tidemark run exited ({status}) before listening: {:#?}",
                    lines.lock().unwrap()
                );
            }
            assert!(
                started.elapsed() < DEADLINE,
                "tidemark run did not listen within {DEADLINE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Running {
            child,
            proxy,
            admin,
            lines,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The log lines so far (JSON objects; `{"raw": ...}` for any other line).
    pub fn lines(&self) -> Vec<serde_json::Value> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines whose message contains `text`.
    pub fn messages(&self, text: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| {
                l["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .collect()
    }

    /// Waits until a line's message contains `text`; returns the first such line.
    pub async fn wait_message(&self, text: &str) -> serde_json::Value {
        let started = Instant::now();
        loop {
            if let Some(l) = self.messages(text).into_iter().next() {
                return l;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "no log line containing {text:?} within {DEADLINE:?}: {:#?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
