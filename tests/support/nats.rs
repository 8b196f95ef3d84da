//! A real `nats-server -js` child process for integration tests (never a mock).
//!
//! Include it with `#[path = "support/nats.rs"] mod nats_server;`. Needs
//! `nats-server` on `PATH` or at `/usr/sbin/nats-server` (Debian package
//! `nats-server`).
//!
//! [`NatsServer::start`]: one server with JetStream on a free 127.0.0.1 port and a
//! temporary store directory; [`NatsServer::kill`] and [`NatsServer::restart`] (same
//! port, same store: streams, messages and consumer state survive) for fault tests.
//! The child is killed on drop. Every wait is bounded and panics naming what it
//! waited for.
#![allow(dead_code)]

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a server may take to greet its first client.
const START_DEADLINE: Duration = Duration::from_secs(15);

/// The `nats-server` binary: on `PATH`, else Debian's `/usr/sbin`.
fn binary() -> PathBuf {
    let sbin = PathBuf::from("/usr/sbin/nats-server");
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("nats-server").is_file()))
        .unwrap_or(false);
    if on_path || !sbin.is_file() {
        PathBuf::from("nats-server")
    } else {
        sbin
    }
}

/// One `nats-server -js` child on 127.0.0.1.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    /// Starts a server on a free port with an empty store; waits until it greets.
    pub fn start() -> NatsServer {
        let mut store = tempfile::tempdir().expect("tempdir");
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let mut server = NatsServer {
                port,
                store,
                child: None,
            };
            if server.spawn_and_wait() {
                return server;
            }
            store = server.take_store();
        }
        panic!("no free port for nats-server after 20 tries");
    }

    fn take_store(mut self) -> tempfile::TempDir {
        self.kill();
        let store = std::mem::replace(&mut self.store, tempfile::tempdir().expect("tempdir"));
        drop(self);
        store
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and store; waits until it greets.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + START_DEADLINE;
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not restart on port {} within {START_DEADLINE:?}",
                self.port
            );
        }
    }

    /// Spawns the child and waits for its greeting; false when it exited first (the
    /// port was taken).
    fn spawn_and_wait(&mut self) -> bool {
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run nats-server (is the nats-server package installed?)");
        self.child = Some(child);
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if greets_with_jetstream(self.port) {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server on port {} did not greet within {START_DEADLINE:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// True when a server on `port` sends its `INFO` line announcing JetStream.
fn greets_with_jetstream(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < buf.len() {
        match stream.read(&mut buf[read..]) {
            Ok(0) | Err(_) => return false,
            Ok(n) => read += n,
        }
        let text = String::from_utf8_lossy(&buf[..read]);
        if text.contains("\r\n") {
            return text.starts_with("INFO ") && text.contains("\"jetstream\":true");
        }
    }
    false
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
