//! Keys from an identity provider's JWKS endpoint: fetched, cached for as long as its
//! `Cache-Control: max-age` says (within bounds), refreshed in the background when stale and
//! at once for an unknown `kid` — at most once per `min_interval`, so tokens with random kids
//! cannot make the gateway hammer the provider — and served stale for `max_stale` when the
//! provider is down, then dropped (fail closed). Every key is pinned to one of the configured
//! algorithms.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use portcullis_guard::jwt::{KeySet, Verifier};
use portcullis_policy::JwksSource;

#[derive(Debug)]
pub struct JwksCache {
    source: JwksSource,
    client: reqwest::Client,
    set: ArcSwapOption<KeySet>,
    expires_at: AtomicI64,
    last_attempt: AtomicI64,
    fetching: tokio::sync::Mutex<()>,
    /// Sets installed so far: a request that waited on another's fetch tells by it whether
    /// that fetch brought a new set.
    installed: AtomicU64,
}

/// The largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// `max-age` from a `Cache-Control` header.
fn max_age(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    let cc = headers.get(reqwest::header::CACHE_CONTROL)?.to_str().ok()?;
    if cc
        .split(',')
        .any(|d| matches!(d.trim(), "no-store" | "no-cache"))
    {
        return Some(0);
    }
    cc.split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|v| v.parse().ok())
}

impl JwksCache {
    pub fn new(source: JwksSource) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("jwks client: {e}"))?;
        Ok(Self {
            source,
            client,
            set: ArcSwapOption::empty(),
            expires_at: AtomicI64::new(0),
            last_attempt: AtomicI64::new(i64::MIN / 2),
            fetching: tokio::sync::Mutex::new(()),
            installed: AtomicU64::new(0),
        })
    }

    /// The keys to verify with now: fresh, or stale within `max_stale`; none after that.
    pub fn current(&self, now: i64) -> Option<Arc<KeySet>> {
        let set = self.set.load_full()?;
        (now <= self
            .expires_at
            .load(Ordering::Relaxed)
            .saturating_add(secs(self.source.max_stale)))
        .then_some(set)
    }

    /// Whether a background refresh should start: the set is stale and no fetch was tried
    /// within `min_interval`.
    pub fn refresh_due(&self, now: i64) -> bool {
        now >= self.expires_at.load(Ordering::Relaxed)
            && now
                >= self
                    .last_attempt
                    .load(Ordering::Relaxed)
                    .saturating_add(secs(self.source.min_interval))
    }

    /// Fetches the set unless a fetch happened less than `min_interval` ago. Returns whether
    /// a new set was installed.
    pub async fn refresh(&self, verifier: &Verifier, now: i64) -> bool {
        let seen = self.installed.load(Ordering::Acquire);
        let Ok(_guard) = self.fetching.try_lock() else {
            // Another request is fetching: wait for it, then use what it got (tokens signed
            // with a key just rotated in arrive together, and all of them are to pass).
            let _ = self.fetching.lock().await;
            return self.installed.load(Ordering::Acquire) != seen;
        };
        if now
            < self
                .last_attempt
                .load(Ordering::Relaxed)
                .saturating_add(secs(self.source.min_interval))
        {
            return false;
        }
        self.last_attempt.store(now, Ordering::Relaxed);
        match self.fetch(verifier).await {
            Ok((set, ttl)) => {
                tracing::info!(target: "portcullis::jwks", keys = set.len(), ttl, "key set fetched");
                // At most a day, unless `min_interval` is longer (it wins: no fetch comes
                // sooner anyway).
                let ttl = ttl.min(86_400).max(secs(self.source.min_interval));
                self.set.store(Some(Arc::new(set)));
                self.expires_at
                    .store(now.saturating_add(ttl), Ordering::Relaxed);
                self.installed.fetch_add(1, Ordering::Release);
                true
            }
            Err(e) => {
                tracing::warn!(target: "portcullis::jwks", error = %e, "key set fetch failed; serving the cached set while it may be served");
                false
            }
        }
    }

    async fn fetch(&self, verifier: &Verifier) -> Result<(KeySet, i64), String> {
        let mut resp = self
            .client
            .get(&self.source.url)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        let ttl = max_age(resp.headers()).unwrap_or(secs(self.source.refresh));
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err("the key set is over 1 MiB".into());
            }
        }
        let set = verifier.key_set(&body, &self.source.algs)?;
        Ok((set, ttl))
    }
}
