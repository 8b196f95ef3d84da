//! nginx (Debian's package) as a foreground child: one worker, upstream keepalive, its
//! whole configuration and every path it writes in a scratch directory (the system
//! nginx is never touched).

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::procs::{self, Proc};

/// The configuration: `worker_processes 1`, keepalive to the upstream and to clients
/// (`keepalive_requests` raised so neither side reconnects during a run; tidemark
/// never closes a keepalive connection by count either), no access log (tidemark
/// writes none).
pub fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
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
    upstream view {{
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
"#
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
