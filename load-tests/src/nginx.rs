//! nginx (Debian's package) as a foreground child: one worker, upstream keepalive, its
//! whole configuration and every path it writes in a scratch directory (the system
//! nginx is never touched).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::procs::{self, Proc};

/// What every configuration here starts with: one worker in the foreground, every
/// path in `dir`, no access log, keep-alive with clients raised so that no client
/// reconnects during a run. It opens the `http` block.
fn head(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 65536; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
"#
    )
}

/// The configuration: `worker_processes 1`, keepalive to the upstream and to clients
/// (`keepalive_requests` raised so neither side reconnects during a run; tidemark
/// never closes a keepalive connection by count either), no access log (tidemark
/// writes none).
pub fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"{head}    upstream view {{
        server {upstream};
        keepalive 64;
        keepalive_requests 10000000;
    }}
    server {{
        listen {listen};
        location / {{
            proxy_pass http://view;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"#,
        head = head(dir)
    )
}

/// Starts nginx on `listen` in front of `upstream`, pinned to `core`.
pub async fn start(
    bin: &str,
    dir: &Path,
    listen: SocketAddr,
    upstream: SocketAddr,
    core: Option<usize>,
) -> Result<Proc, String> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, config(dir, listen, upstream)).map_err(|e| e.to_string())?;
    spawn(bin, dir, &conf, listen, core).await
}

/// Runs nginx with `conf` in the foreground and waits until it listens.
async fn spawn(
    bin: &str,
    dir: &Path,
    conf: &Path,
    listen: SocketAddr,
    core: Option<usize>,
) -> Result<Proc, String> {
    let args = vec![
        "-p".to_owned(),
        dir.display().to_string(),
        "-e".to_owned(),
        dir.join("error.log").display().to_string(),
        "-c".to_owned(),
        conf.display().to_string(),
    ];
    let proc = Proc::spawn("nginx", bin, &args, &[], core, &dir.join("nginx.out"))
        .map_err(|e| format!("start {bin}: {e}"))?;
    if procs::wait_listening(listen, Duration::from_secs(10)).await {
        Ok(proc)
    } else {
        Err(format!(
            "nginx not listening on {listen}; see {}",
            dir.display()
        ))
    }
}

/// The body the origin answers every `GET` with (what the demo's read service answers
/// for user 1, in size and shape).
pub const ORIGIN_BODY: &str = r#"{"id":"1","name":"load","version":1}"#;

/// The origin: one nginx worker answering every request with [`ORIGIN_BODY`] from
/// memory, the cheapest upstream there is, so the core it shares with the load
/// generator is not the first to saturate.
pub fn origin_config(dir: &Path, listen: SocketAddr) -> String {
    format!(
        r#"{head}    server {{
        listen {listen};
        location / {{
            default_type application/json;
            return 200 '{ORIGIN_BODY}';
        }}
    }}
}}
"#,
        head = head(dir)
    )
}

/// Starts the origin (see [`origin_config`]) on `listen`, pinned to `core`.
pub async fn start_origin(
    bin: &str,
    dir: &Path,
    listen: SocketAddr,
    core: Option<usize>,
) -> Result<Proc, String> {
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, origin_config(dir, listen)).map_err(|e| e.to_string())?;
    spawn(bin, dir, &conf, listen, core).await
}
