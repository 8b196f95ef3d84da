//! redis-server as a child on a free port, and `INFO commandstats` over a raw RESP
//! connection (no client library needed for one command).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::net;
use crate::procs::{self, Proc};

/// Starts `redis-server` on `addr` without persistence, pinned to `core`.
pub async fn start(dir: &Path, addr: SocketAddr, core: Option<usize>) -> Result<Proc, String> {
    let args: Vec<String> = [
        "--port",
        &addr.port().to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        &dir.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let proc = Proc::spawn(
        "redis",
        "redis-server",
        &args,
        &[],
        core,
        &dir.join("redis.log"),
    )
    .map_err(|e| format!("start redis-server: {e}"))?;
    if procs::wait_listening(addr, Duration::from_secs(10)).await {
        Ok(proc)
    } else {
        Err("redis-server did not start".into())
    }
}

/// `calls` per command from `INFO commandstats` (the `info` command itself excluded).
pub async fn command_calls(addr: SocketAddr) -> Result<BTreeMap<String, u64>, String> {
    let mut stream = net::connect_tcp(addr, None)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("redis closed the connection".to_owned());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(body) = bulk(&buf) {
                return Ok(body);
            }
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| "INFO timed out".to_owned())??;
    Ok(parse_commandstats(&text))
}

/// The payload of a complete RESP bulk string, if `buf` holds one.
fn bulk(buf: &[u8]) -> Option<String> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let len: usize = std::str::from_utf8(buf.get(1..end)?).ok()?.parse().ok()?;
    let body = buf.get(end + 2..end + 2 + len)?;
    Some(String::from_utf8_lossy(body).into_owned())
}

fn parse_commandstats(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        if name == "info" {
            continue;
        }
        let calls = fields
            .split(',')
            .find_map(|f| f.strip_prefix("calls="))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        out.insert(name.to_owned(), calls);
    }
    out
}

/// `after - before`, per command, omitting zeros.
pub fn delta(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(k, a)| {
            let d = a.saturating_sub(before.get(k).copied().unwrap_or(0));
            (d > 0).then(|| (k.clone(), d))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_parsed_without_the_info_command() {
        let text = "# Commandstats\r\ncmdstat_get:calls=12,usec=30,usec_per_call=2.5\r\ncmdstat_info:calls=3,usec=1\r\ncmdstat_evalsha:calls=2,usec=9\r\n";
        let stats = parse_commandstats(text);
        assert_eq!(stats.get("get"), Some(&12));
        assert_eq!(stats.get("evalsha"), Some(&2));
        assert!(!stats.contains_key("info"));
    }

    #[test]
    fn a_bulk_string_is_complete_only_with_all_its_bytes() {
        assert_eq!(bulk(b"$5\r\nhel"), None);
        assert_eq!(bulk(b"$5\r\nhello\r\n").as_deref(), Some("hello"));
    }
}
