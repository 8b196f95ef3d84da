//! Real PostgreSQL servers for integration tests (never a mock).
//!
//! Include it with `#[path = "support/postgres.rs"] mod postgres;`. Needs Debian's
//! `postgresql` package: the binaries are taken from `PATH` or the newest
//! `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, so as root every
//! server command runs as the `postgres` user through `setpriv` (which execs: the
//! child's pid is the postmaster's), in a temp dir handed to that user.
//!
//! - [`Postgres::start`]: a primary on a free 127.0.0.1 port (trust auth, fsync off,
//!   `wal_level = replica`), its unix socket in the temp dir.
//! - [`Postgres::standby`]: a streaming hot standby made with `pg_basebackup -R`,
//!   lagging by `recovery_min_apply_delay`.
//! - [`Postgres::kill`] (immediate shutdown, like a crash) and [`Postgres::restart`]
//!   (same port, same data) for fault tests. Stopped the same way on drop.
//!
//! Every wait is bounded by a deadline and panics with what it was waiting for.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const START_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// The path of a PostgreSQL binary: the newest `/usr/lib/postgresql/*/bin` (Debian's
/// layout, where all of them are), else `PATH` (some systems link only a few, such
/// as `initdb` and `pg_ctl`, into `/usr/local/bin`).
pub fn bin(name: &str) -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join(name).is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, dir)) = found.pop() {
        return dir.join(name);
    }
    std::env::var("PATH")
        .ok()
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("PostgreSQL's `{name}` not found under /usr/lib/postgresql/*/bin or on PATH (install Debian's `postgresql`)"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// A command for a server binary, as the `postgres` user when we are root.
fn server_command(bin: &str) -> Command {
    let path = self::bin(bin);
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--reset-env",
        ]);
        c.arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) -> Output {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Waits until `ready`; panics after `deadline` naming `what`.
pub fn wait_until(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !ready() {
        assert!(
            Instant::now() < end,
            "timed out after {deadline:?} waiting for {what}"
        );
        std::thread::sleep(POLL);
    }
}

/// One PostgreSQL server child on 127.0.0.1.
pub struct Postgres {
    port: u16,
    data: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    _tempdir: tempfile::TempDir,
}

impl Postgres {
    /// A primary on a free port, ready to accept connections.
    pub fn start() -> Postgres {
        let (tempdir, dir) = Self::tempdir();
        let data = dir.join("data");
        let mut initdb = server_command("initdb");
        initdb.arg("-D").arg(&data).args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb, "initdb");
        std::fs::write(
            data.join("postgresql.auto.conf"),
            "fsync = off\nfull_page_writes = off\nwal_level = replica\nmax_wal_senders = 4\nlisten_addresses = '127.0.0.1'\nshared_buffers = 16MB\n",
        )
        .expect("write postgresql.auto.conf");
        let mut pg = Postgres {
            port: 0,
            data,
            dir,
            child: None,
            _tempdir: tempdir,
        };
        pg.spawn_on_free_port();
        pg
    }

    /// A hot standby of `self` (streaming replication from `pg_basebackup -R`),
    /// applying WAL `apply_delay` after the primary committed it.
    pub fn standby(&self, apply_delay: Duration) -> Postgres {
        let (tempdir, dir) = Self::tempdir();
        let data = dir.join("data");
        let mut backup = server_command("pg_basebackup");
        backup
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "--no-sync", "-U", "postgres"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        run(backup, "pg_basebackup");
        let mut conf =
            std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap_or_default();
        conf.push_str(&format!(
            "\nhot_standby = on\nrecovery_min_apply_delay = '{}ms'\nwal_receiver_status_interval = 1s\n",
            apply_delay.as_millis()
        ));
        std::fs::write(data.join("postgresql.auto.conf"), conf).expect("write standby conf");
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("-R").arg("postgres:postgres").arg(&dir);
                    c
                },
                "chown",
            );
        }
        let mut pg = Postgres {
            port: 0,
            data,
            dir,
            child: None,
            _tempdir: tempdir,
        };
        pg.spawn_on_free_port();
        pg
    }

    fn tempdir() -> (tempfile::TempDir, PathBuf) {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let dir = tempdir.path().to_owned();
        if is_root() {
            let mut c = Command::new("chown");
            c.arg("postgres:postgres").arg(&dir);
            run(c, "chown");
        }
        (tempdir, dir)
    }

    fn spawn_on_free_port(&mut self) {
        for _ in 0..10 {
            self.port = free_port();
            if self.spawn_and_wait() {
                return;
            }
        }
        panic!("could not start postgres on a free port after 10 attempts");
    }

    /// Spawns the postmaster on `self.port`; false when it exited at once.
    fn spawn_and_wait(&mut self) -> bool {
        let log = std::fs::File::create(self.dir.join(format!("log-{}", self.port)))
            .expect("create the server log");
        let mut c = server_command("postgres");
        c.arg("-D")
            .arg(&self.data)
            .args(["-p", &self.port.to_string()])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        self.child = Some(c.spawn().expect("spawn postgres"));
        let end = Instant::now() + START_DEADLINE;
        loop {
            if self.is_ready() {
                return true;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(_)) = child.try_wait() {
                    self.child = None;
                    return false;
                }
            }
            assert!(
                Instant::now() < end,
                "postgres on port {} was not ready within {START_DEADLINE:?}; log: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(POLL);
        }
    }

    /// `pg_isready` says the server accepts connections.
    pub fn is_ready(&self) -> bool {
        Command::new(bin("pg_isready"))
            .args([
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-t",
                "1",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("log-{}", self.port))).unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` (trust auth: no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL with `psql` (stops at the first error) and returns the unaligned,
    /// tuples-only output.
    pub fn psql(&self, sql: &str) -> String {
        let mut c = Command::new(bin("psql"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
        ])
        .args(["-d", "postgres", "-v", "ON_ERROR_STOP=1", "-Atq", "-c", sql]);
        String::from_utf8_lossy(&run(c, "psql").stdout)
            .trim()
            .to_string()
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, no checkpoint, like a
    /// crash) and waits until it exited.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let end = Instant::now() + START_DEADLINE;
            loop {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > end {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        wait_until("the killed postgres to stop", START_DEADLINE, || {
            !self.is_ready()
        });
    }

    /// Starts the server again on the same port with the same data (crash recovery).
    pub fn restart(&mut self) {
        self.kill();
        let end = Instant::now() + START_DEADLINE;
        while !self.spawn_and_wait() {
            assert!(
                Instant::now() < end,
                "postgres could not restart on port {}: {}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(POLL);
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
