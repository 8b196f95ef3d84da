//! A real Kafka-protocol broker (`tansu`, in-memory storage) as a child process for
//! integration tests (never a mock).
//!
//! Include it with `#[path = "support/kafka.rs"] mod kafka_broker;`. Needs `tansu`
//! on `PATH` or in `~/.cargo/bin` (`cargo install tansu --locked --features
//! dynostore`; `tests/run.sh` installs it when missing): without it the test fails
//! with that command in its message, it is never skipped.
//!
//! [`KafkaBroker::start`]: one broker on a free 127.0.0.1 port, ready once it answers
//! a metadata request. [`KafkaBroker::pause`] / [`KafkaBroker::resume`] stop and
//! continue it (SIGSTOP / SIGCONT): an outage that keeps its data (with memory
//! storage a restart would lose every record and commit). The child is killed on
//! drop. Every wait is bounded and panics naming what it waited for.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;

/// How long a broker may take to answer its first metadata request.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The `tansu` binary: on `PATH`, else `~/.cargo/bin/tansu`; panics with the install
/// command when neither exists.
fn binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("tansu"))
            .find(|f| f.is_file())
    });
    let cargo_bin = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/tansu"))
        .filter(|f| f.is_file());
    on_path.or(cargo_bin).unwrap_or_else(|| {
        panic!(
            "the Kafka tests need the `tansu` broker: run tests/run.sh, or \
             `cargo install tansu --locked --features dynostore`"
        )
    })
}

/// One `tansu broker` child on 127.0.0.1.
pub struct KafkaBroker {
    port: u16,
    child: Option<Child>,
    paused: bool,
}

impl KafkaBroker {
    /// Starts a broker on a free port; waits until it answers a metadata request.
    pub fn start() -> KafkaBroker {
        let binary = binary();
        for _ in 0..20 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("bind 127.0.0.1:0")
                .port();
            let mut broker = KafkaBroker {
                port,
                child: None,
                paused: false,
            };
            if broker.spawn_and_wait(&binary) {
                return broker;
            }
        }
        panic!("no free port for tansu after 20 tries");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, for `bootstrap.servers` and `[kafka] brokers`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the broker (SIGSTOP): its sockets stay open and nothing answers, as with
    /// a hung or partitioned broker. Its data is kept.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// Lets a paused broker go on (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    fn signal(&self, name: &str) {
        let pid = self.child.as_ref().expect("broker running").id();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} {pid}: {status}");
    }

    /// Spawns the child and waits until it answers; false when it exited first (the
    /// port was taken).
    fn spawn_and_wait(&mut self, binary: &PathBuf) -> bool {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let child = Command::new(binary)
            .arg("broker")
            .args(["--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu/"])
            .env_remove("STORAGE_ENGINE")
            .env_remove("LISTENER_URL")
            .env_remove("ADVERTISED_LISTENER_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run {} broker: {e}", binary.display()));
        self.child = Some(child);
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.address())
            .set("log_level", "0")
            .create()
            .expect("a metadata client");
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if client
                .fetch_metadata(None, Duration::from_millis(500))
                .is_ok_and(|m| !m.brokers().is_empty())
            {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "tansu on port {} did not answer a metadata request within {START_DEADLINE:?}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.paused {
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(child.id().to_string())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
