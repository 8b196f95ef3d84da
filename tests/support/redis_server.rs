//! Real `redis-server` processes for integration tests (never a mock).
//!
//! Include it from a test crate with
//! `#[path = "support/redis_server.rs"] mod redis_server;`
//! (a path include, so each test crate compiles only what it uses and `tests/support`
//! needs no `mod.rs`). Needs `redis-server` and `redis-cli` on `PATH` (Debian package
//! `redis-server`).
//!
//! - [`RedisServer::start`]: one server on a free 127.0.0.1 port, no persistence;
//!   [`RedisServer::kill`] and [`RedisServer::restart`] (same port, empty) for fault
//!   tests. The child is killed on drop.
//! - [`RedisCluster::start`]: `n` masters joined with `redis-cli --cluster create`,
//!   ready once every node reports `cluster_state:ok`.
//!
//! Every wait is bounded by a deadline and panics with what it was waiting for.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to answer its first PING.
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long a cluster may take to reach `cluster_state:ok`.
const CLUSTER_DEADLINE: Duration = Duration::from_secs(30);
/// Pause between two checks of a condition while waiting on it.
const POLL: Duration = Duration::from_millis(20);

/// Waits until `ready` returns true, polling every 20 ms; panics after `deadline`
/// naming `what`.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    loop {
        if ready() {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// A port on 127.0.0.1 that was free a moment ago (bind port 0, read it, release it).
/// Callers retry on the (rare) collision.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// True when a server on `port` answers `PING` with `+PONG`.
pub fn pings(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}

/// Runs `redis-cli -p <port> <args>` and returns its standard output (the command
/// must succeed).
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli (is redis-tools installed?)");
    assert!(
        output.status.success(),
        "redis-cli {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One `redis-server` child on 127.0.0.1.
pub struct RedisServer {
    port: u16,
    extra: Vec<String>,
    dir: PathBuf,
    child: Option<Child>,
    _tempdir: Option<tempfile::TempDir>,
}

impl RedisServer {
    /// Starts a server on a free port, without persistence, and waits until it answers.
    pub fn start() -> RedisServer {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        let mut server = Self::start_with(Vec::new(), &dir, |_| true);
        server._tempdir = Some(tempdir);
        server
    }

    /// Starts a server with `extra` arguments, working in `dir`, on a free port that
    /// `port_ok` accepts; retries on a port collision.
    fn start_with(extra: Vec<String>, dir: &Path, port_ok: impl Fn(u16) -> bool) -> RedisServer {
        for _ in 0..20 {
            let port = free_port();
            if !port_ok(port) {
                continue;
            }
            let mut server = RedisServer {
                port,
                extra: extra.clone(),
                dir: dir.to_owned(),
                child: None,
                _tempdir: None,
            };
            if server.spawn_and_wait() {
                return server;
            }
        }
        panic!("could not start redis-server on a free port after 20 attempts");
    }

    /// Spawns the child on `self.port`; false when it exited at once (port taken).
    fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server (is redis-server installed?)");
        self.child = Some(child);
        let end = Instant::now() + START_DEADLINE;
        loop {
            if pings(self.port) {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_status)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            assert!(
                Instant::now() < end,
                "redis-server on port {} did not answer PING within {START_DEADLINE:?}",
                self.port
            );
            std::thread::sleep(POLL);
        }
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server; returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        cli(self.port, args)
    }

    /// Kills the server (SIGKILL) and waits until the port refuses connections.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(
            "the killed redis-server to stop answering",
            START_DEADLINE,
            || !pings(self.port),
        );
    }

    /// Starts the server again on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        let end = Instant::now() + START_DEADLINE;
        // The port was ours a moment ago; retry briefly if the OS has not released it.
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < end,
                "redis-server could not restart on port {}",
                self.port
            );
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A Redis Cluster of masters only, each a [`RedisServer`].
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    _tempdir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `masters` nodes (at least 3, Redis's minimum), creates the cluster, and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> RedisCluster {
        assert!(masters >= 3, "redis cluster needs at least 3 masters");
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut nodes = Vec::with_capacity(masters);
        for i in 0..masters {
            let dir = tempdir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&dir).expect("node dir");
            // The cluster bus needs a port too: pick one now, passed as --cluster-port.
            let bus = free_port();
            let extra = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                dir.join("nodes.conf").display().to_string(),
                "--cluster-port".to_owned(),
                bus.to_string(),
                "--cluster-node-timeout".to_owned(),
                "5000".to_owned(),
            ];
            nodes.push(RedisServer::start_with(extra, &dir, |port| port != bus));
        }
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port()))
            .collect();
        let output = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster {
            nodes,
            _tempdir: tempdir,
        };
        wait_until("cluster_state:ok on every node", CLUSTER_DEADLINE, || {
            cluster
                .nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        });
        cluster
    }

    /// The nodes, in creation order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Every node's URL, to use as cluster seeds.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// `redis-cli -c` (follows MOVED redirects) against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = vec!["-c"];
        all.extend_from_slice(args);
        self.nodes[0].cli(&all)
    }
}
