//! The validated policy: what the gateway runs on. Every value here has been checked; nothing
//! is left as a string to be parsed on the hot path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::inventory::{Inventory, RouteId};

/// Development mode may relax what is shown to clients; production never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Production,
    Development,
}

/// Where a secret comes from. Inline secrets load, with a warning.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Inline(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            SecretSource::Inline(_) => f.write_str("Inline(redacted)"),
        }
    }
}

/// The upstream API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`, as sent in the upstream request's `Host`.
    pub authority: http::uri::Authority,
    pub scheme: http::uri::Scheme,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `None` only on loopback.
    pub token: Option<SecretSource>,
}

/// Caps and timeouts of the accept and proxy phases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 25_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            workers: 0,
        }
    }
}

/// The CORS policy (an exact origin allowlist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<HeaderValue>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<Method>,
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
}

/// Headers set on and removed from every response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// The response-header policy: the defaults, and per-route overrides applied after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    pub all: HeaderRules,
    pub per_route: Vec<(RouteId, HeaderRules)>,
}

impl HeaderPolicy {
    pub fn for_route(&self, id: RouteId) -> Option<&HeaderRules> {
        self.per_route
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, h)| h)
    }
}

/// The whole validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    pub mode: Mode,
    pub tls: Option<Tls>,
    pub admin: Option<Admin>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub cors: Option<Cors>,
    pub headers: HeaderPolicy,
    pub inventory: Inventory,
    /// Pass upstream 5xx bodies through (development only).
    pub expose_upstream_errors: bool,
}
