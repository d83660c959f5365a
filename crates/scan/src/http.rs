//! The only way the scanner talks to the network: a request engine that enforces the budget,
//! the concurrency cap, the rate cap and the loopback rule on every single request, and turns
//! exchanges into redacted evidence and `curl` lines.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::Value;
use tokio::sync::Semaphore;
use url::{Host, Url};

use crate::config::{ScanConfig, SourceAddresses};
use crate::error::ScanError;
use crate::finding::Exchange;
use crate::redact::Redactor;

/// Largest response body kept.
const MAX_BODY: usize = 1 << 20;
/// Characters of a body kept in evidence.
const EXCERPT: usize = 1200;

/// A request body.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    Json(Value),
    Raw { content_type: String, text: String },
}

/// Where a request leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Any address of the shared pool.
    Pool,
    /// Address `index` of a probe's own lane (127.0.(20+lane).(index+1) on Linux loopback).
    Lane(u8, u8),
}

/// One request, described independently of the client that sends it.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) method: Method,
    /// Path and query, already encoded, starting with `/`.
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Option<Body>,
    /// The `Authorization` header value.
    pub(crate) auth: Option<String>,
    /// Who sends it, for evidence (`alice`, `anonymous`, `forged token (alg none)`).
    pub(crate) who: String,
    /// How the credential is written in a reproduction (`$TOKEN_ALICE`).
    pub(crate) auth_var: Option<String>,
    pub(crate) source: Source,
    /// Resend once from another pool address when answered 429 (not for limit probes).
    pub(crate) retry_429: bool,
}

impl Req {
    pub(crate) fn new(method: Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            headers: Vec::new(),
            body: None,
            auth: None,
            who: "anonymous".into(),
            auth_var: None,
            source: Source::Pool,
            retry_429: true,
        }
    }

    pub(crate) fn json(mut self, v: Value) -> Self {
        self.body = Some(Body::Json(v));
        self
    }

    pub(crate) fn raw(mut self, content_type: &str, text: impl Into<String>) -> Self {
        self.body = Some(Body::Raw {
            content_type: content_type.into(),
            text: text.into(),
        });
        self
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends with a token that is not an identity's (forged or garbage).
    pub(crate) fn bearer(mut self, who: &str, token: &str, var: &str) -> Self {
        self.auth = Some(format!("Bearer {token}"));
        self.who = who.into();
        self.auth_var = Some(var.into());
        self
    }

    pub(crate) fn from(mut self, source: Source) -> Self {
        self.source = source;
        self.retry_429 = false;
        self
    }
}

/// An answer, read whole (up to 1 MiB).
#[derive(Clone, Debug)]
pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) headers: HeaderMap,
    pub(crate) text: String,
}

impl Resp {
    pub(crate) fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub(crate) fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.text).ok()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Why a request was not answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    #[error("request budget exhausted")]
    Budget,
    #[error("refusing to send to a non-loopback address")]
    NotLoopback,
    #[error("request failed: {0}")]
    Transport(String),
}

/// The request engine shared by every probe.
#[derive(Debug)]
pub(crate) struct Engine {
    base: Url,
    allow_remote: bool,
    budget: u32,
    sent: AtomicU32,
    refused: AtomicU32,
    gate: Semaphore,
    pacer: Mutex<Instant>,
    interval: Duration,
    timeout: Duration,
    system: reqwest::Client,
    pool: Vec<reqwest::Client>,
    next: AtomicUsize,
    lanes: Mutex<HashMap<IpAddr, reqwest::Client>>,
    spread: bool,
    redactor: RwLock<Redactor>,
}

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    // No proxy (an HTTP_PROXY variable must not carry the scan off the machine), no redirects
    // (a 3xx to a remote host must not be followed).
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(3))
        .pool_max_idle_per_host(4)
}

impl Engine {
    pub(crate) fn new(config: &ScanConfig, base: Url) -> Result<Self, ScanError> {
        let timeout = config.request_timeout;
        let system = builder(timeout)
            .build()
            .map_err(|e| ScanError::Client(e.to_string()))?;
        let spread = config.sources == SourceAddresses::Auto
            && cfg!(target_os = "linux")
            && matches!(base.host(), Some(Host::Ipv4(ip)) if ip.is_loopback());
        let mut pool = Vec::new();
        if spread {
            for i in 1..=32u8 {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 10, i));
                pool.push(
                    builder(timeout)
                        .local_address(ip)
                        .build()
                        .map_err(|e| ScanError::Client(e.to_string()))?,
                );
            }
        }
        let rate = config.rate_per_sec.max(1);
        Ok(Self {
            base,
            allow_remote: config.allow_remote,
            budget: config.budget,
            sent: AtomicU32::new(0),
            refused: AtomicU32::new(0),
            gate: Semaphore::new(config.concurrency.max(1)),
            pacer: Mutex::new(Instant::now()),
            interval: Duration::from_secs(1) / rate,
            timeout,
            system,
            pool,
            next: AtomicUsize::new(0),
            lanes: Mutex::new(HashMap::new()),
            spread,
            redactor: RwLock::new(Redactor::default()),
        })
    }

    /// Requests sent so far.
    pub(crate) fn sent(&self) -> u32 {
        self.sent.load(Ordering::Relaxed).min(self.budget)
    }

    /// Whether a request was refused for lack of budget.
    pub(crate) fn exhausted(&self) -> bool {
        self.refused.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn remaining(&self) -> u32 {
        self.budget
            .saturating_sub(self.sent.load(Ordering::Relaxed))
    }

    /// Whether probes can pick distinct source addresses.
    pub(crate) fn can_rotate_sources(&self) -> bool {
        self.spread
    }

    pub(crate) fn add_secret(&self, s: impl Into<String>) {
        if let Ok(mut r) = self.redactor.write() {
            r.add(s);
        }
    }

    pub(crate) fn redactor(&self) -> Redactor {
        self.redactor.read().map(|r| r.clone()).unwrap_or_default()
    }

    pub(crate) fn url(&self, path: &str) -> Result<Url, SendError> {
        let base = self.base.as_str().trim_end_matches('/');
        let url = Url::parse(&format!("{base}{path}"))
            .map_err(|e| SendError::Transport(format!("bad URL: {e}")))?;
        // Defence in depth: every URL is the target's, and the target was checked, but a path
        // such as `@evil/` must not be able to change the host.
        if url.host() != self.base.host() || url.port() != self.base.port() {
            return Err(SendError::NotLoopback);
        }
        if !self.allow_remote && !is_loopback(&url) {
            return Err(SendError::NotLoopback);
        }
        Ok(url)
    }

    /// Builds the client of `source` now, so a burst's requests all leave together (building
    /// one takes milliseconds, and would space them out).
    pub(crate) fn warm(&self, source: Source) {
        // (The pool's clients are built up front.)
        if let Source::Lane(..) = source {
            let _ = self.client(source);
        }
    }

    fn client(&self, source: Source) -> reqwest::Client {
        if !self.spread {
            return self.system.clone();
        }
        match source {
            Source::Pool => {
                let i = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len().max(1);
                self.pool
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| self.system.clone())
            }
            Source::Lane(lane, index) => {
                let ip = IpAddr::V4(Ipv4Addr::new(
                    127,
                    0,
                    20u8.saturating_add(lane),
                    index.saturating_add(1),
                ));
                let Ok(mut lanes) = self.lanes.lock() else {
                    return self.system.clone();
                };
                lanes
                    .entry(ip)
                    .or_insert_with(|| {
                        builder(self.timeout)
                            .local_address(ip)
                            .build()
                            .unwrap_or_else(|_| self.system.clone())
                    })
                    .clone()
            }
        }
    }

    async fn pace(&self) {
        let at = {
            let Ok(mut next) = self.pacer.lock() else {
                return;
            };
            let now = Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at.into()).await;
    }

    /// Sends `req`, within the budget, concurrency and rate caps.
    pub(crate) async fn send(&self, req: &Req) -> Result<Resp, SendError> {
        let first = self.send_once(req).await?;
        if first.status == 429 && req.retry_429 && req.source == Source::Pool && self.spread {
            return self.send_once(req).await;
        }
        Ok(first)
    }

    async fn send_once(&self, req: &Req) -> Result<Resp, SendError> {
        let url = self.url(&req.path)?;
        if self.sent.fetch_add(1, Ordering::Relaxed) >= self.budget {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(SendError::Budget);
        }
        let _permit = self
            .gate
            .acquire()
            .await
            .map_err(|_| SendError::Transport("engine closed".into()))?;
        self.pace().await;
        let mut rb = self.client(req.source).request(req.method.clone(), url);
        for (k, v) in &req.headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if let Some(a) = &req.auth {
            rb = rb.header("authorization", a.as_str());
        }
        rb = match &req.body {
            Some(Body::Json(v)) => rb.json(v),
            Some(Body::Raw { content_type, text }) => rb
                .header("content-type", content_type.as_str())
                .body(text.clone()),
            None => rb,
        };
        let mut resp = rb
            .send()
            .await
            .map_err(|e| SendError::Transport(without_url(&e)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| SendError::Transport(without_url(&e)))?
        {
            let room = MAX_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        tracing::debug!(method = %req.method, path = %self.redactor().text(&req.path), who = %req.who, status, "sent");
        Ok(Resp {
            status,
            headers,
            text: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// The exchange as redacted evidence.
    pub(crate) fn exchange(&self, req: &Req, resp: Option<&Resp>) -> Exchange {
        let r = self.redactor();
        let mut request = format!("{} {}", req.method, r.text(&req.path));
        if let Some(a) = &req.auth {
            request.push('\n');
            request.push_str(&r.header("Authorization", a));
        }
        for (k, v) in &req.headers {
            request.push('\n');
            request.push_str(&r.header(k, v));
        }
        match &req.body {
            Some(Body::Json(v)) => {
                request.push_str("\n\n");
                request.push_str(&crate::redact::truncate(&r.json(v).to_string(), EXCERPT));
            }
            Some(Body::Raw { text, .. }) => {
                request.push_str("\n\n");
                request.push_str(&r.body(text, EXCERPT));
            }
            None => {}
        }
        let response = resp.map_or_else(String::new, |resp| {
            let mut s = String::new();
            for name in [
                "content-type",
                "location",
                "server",
                "x-powered-by",
                "access-control-allow-origin",
                "access-control-allow-credentials",
                "retry-after",
                "deprecation",
                "sunset",
            ] {
                if let Some(v) = resp.header(name) {
                    s.push_str(&r.header(name, v));
                    s.push('\n');
                }
            }
            if !resp.text.is_empty() {
                s.push('\n');
                s.push_str(&r.body(&resp.text, EXCERPT));
            }
            s
        });
        Exchange {
            identity: req.who.clone(),
            request,
            status: resp.map(|r| r.status),
            response,
        }
    }

    /// A `curl` line repeating `req`, credentials as shell variables.
    pub(crate) fn curl(&self, req: &Req) -> String {
        let r = self.redactor();
        let url = self
            .url(&req.path)
            .map(|u| u.to_string())
            .unwrap_or_else(|_| req.path.clone());
        let mut s = format!("curl -sS -i -X {} {}", req.method, quote(&r.text(&url)));
        if let (Source::Lane(..), true) = (req.source, self.spread) {
            s.push_str(" --interface 127.0.20.1");
        }
        if let Some(auth) = &req.auth {
            let var = req.auth_var.clone().unwrap_or_else(|| "TOKEN".into());
            // The scheme the identity uses (`Bearer`, `Basic`, ...); the credential behind it
            // stays a variable. Double quotes, so that the shell expands it.
            let value = match auth.split_once(' ') {
                Some((scheme, _)) => format!("{scheme} ${var}"),
                None => format!("${var}"),
            };
            s.push_str(&format!(" -H \"Authorization: {value}\""));
        }
        for (k, v) in &req.headers {
            s.push_str(&format!(" -H {}", quote(&r.header(k, v))));
        }
        match &req.body {
            Some(Body::Json(v)) => {
                s.push_str(" -H 'Content-Type: application/json' --data-raw ");
                s.push_str(&quote(&r.json(v).to_string()));
            }
            Some(Body::Raw { content_type, text }) => {
                s.push_str(&format!(
                    " -H {}",
                    quote(&format!("Content-Type: {content_type}"))
                ));
                s.push_str(" --data-raw ");
                s.push_str(&quote(&r.text(text)));
            }
            None => {}
        }
        s
    }
}

/// Whether a URL's host is loopback (names other than localhost are not).
pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        _ => false,
    }
}

/// reqwest's message without the URL (which could carry a secret in its query).
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(i) = e.find(" for url (") {
        e.truncate(i);
    }
    e
}

/// Single-quotes for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curl_lines_keep_the_identitys_scheme_and_hide_its_credential() {
        let config = ScanConfig::new("http://127.0.0.1:9".parse().expect("url"), "api.yaml");
        let engine = Engine::new(&config, config.target.clone()).expect("engine");
        let mut req = Req::new(Method::GET, "/me");
        req.auth = Some("Basic YWxpY2U6czNjcmV0".into());
        req.auth_var = Some("TOKEN_ALICE".into());
        let line = engine.curl(&req);
        assert!(
            line.contains("-H \"Authorization: Basic $TOKEN_ALICE\""),
            "{line}"
        );
        assert!(!line.contains("YWxpY2U6czNjcmV0"), "{line}");
        let bearer = engine.curl(&Req::new(Method::GET, "/me").bearer("bob", "t0k3n", "TOKEN_BOB"));
        assert!(
            bearer.contains("Authorization: Bearer $TOKEN_BOB"),
            "{bearer}"
        );
        assert!(!bearer.contains("t0k3n"), "{bearer}");
    }
}
