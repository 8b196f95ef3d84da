//! A gateway in front of the example CQRS backend (`tidemark::demo::Backend`).
#![allow(dead_code)]

use std::time::Duration;

use tidemark::demo::{Backend, BackendOptions, PushTarget};
use tokio_util::sync::CancellationToken;

use crate::common::{bind_listeners, config, TestGateway};

/// How a scenario is set up.
pub struct Setup {
    pub lag: Duration,
    pub instances: usize,
    /// `sources = [...]` of the projection.
    pub sources: &'static str,
    /// Extra keys of the read route (`max_wait`, `on_timeout`, ...).
    pub read_route: String,
    /// Extra keys of the `[server]` section.
    pub server: String,
    /// Give the routes the write-through cache (`user:{id}`).
    pub cache: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            lag: Duration::from_millis(40),
            instances: 1,
            sources: r#"["push"]"#,
            read_route: "max_wait = \"2s\"\non_timeout = \"primary\"\nprimary = \"commands\""
                .into(),
            server: String::new(),
            cache: true,
        }
    }
}

pub struct Stack {
    pub gateway: TestGateway,
    pub backend: Backend,
    shutdown: CancellationToken,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub async fn start(setup: Setup) -> Stack {
    let listeners = bind_listeners().await;
    let admin = listeners.admin_addr().unwrap();
    let shutdown = CancellationToken::new();
    let push = setup.sources.contains("push").then(|| PushTarget {
        admin_url: format!("http://{admin}"),
        projection: "users".into(),
        admin_token: None,
    });
    let backend = Backend::start(
        BackendOptions {
            lag: setup.lag,
            push,
            checkpoint_header: setup.sources.contains("header"),
            read_instances: setup.instances,
        },
        shutdown.clone(),
    )
    .await
    .unwrap();
    let instances: Vec<String> = backend
        .read_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("r{i} = \"http://{a}\""))
        .collect();
    let polls: Vec<String> = backend
        .read_addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("r{i} = \"http://{a}/checkpoint\""))
        .collect();
    let poll = if setup.sources.contains("poll") {
        format!(
            "poll_urls = {{ {} }}\npoll_interval = \"10ms\"",
            polls.join(", ")
        )
    } else {
        String::new()
    };
    let toml = format!(
        r#"
[server]
{server}
[upstreams.commands]
url = "http://{cmd}"
[upstreams.view]
instances = {{ {instances} }}
[projections.users]
logs = ["users"]
sources = {sources}
{poll}
[[routes]]
name = "write-user"
kind = "write"
path = "/users/{{id}}"
upstream = "commands"
default_log = "users"
{write_cache}
[[routes]]
name = "read-user"
kind = "read"
path = "/users/{{id}}"
upstream = "view"
projection = "users"
{read_cache}
{read_route}
"#,
        server = setup.server,
        cmd = backend.command_addr,
        instances = instances.join(", "),
        sources = setup.sources,
        read_route = setup.read_route,
        write_cache = if setup.cache {
            "cache = { key = \"user:{id}\", ttl = \"30s\" }"
        } else {
            ""
        },
        read_cache = if setup.cache {
            "cache = { key = \"user:{id}\" }"
        } else {
            ""
        },
    );
    let gateway = TestGateway::start_on(config(&toml, &[]), listeners).await;
    Stack {
        gateway,
        backend,
        shutdown,
    }
}
