//! The pooled upstream HTTP client (hyper-util legacy client): connect timeout, pool
//! timer (so idle timeouts apply), idle limit. (Stub: the routing helper fills in.)

use std::time::Duration;

use hyper_util::client::legacy::{connect::HttpConnector, Client};

use crate::proxy::Body;

/// The client type every upstream call uses.
pub type HttpClient = Client<HttpConnector, Body>;

/// Settings of one client (one per upstream).
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub connect_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
}

/// Builds a client: HTTP/1.1 to upstreams, `TCP_NODELAY`, connect timeout, pool timer.
pub fn build(settings: &ClientSettings) -> HttpClient {
    let _ = settings;
    todo!("routing helper")
}
