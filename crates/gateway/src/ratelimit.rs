//! The limit phase: GCRA rate limits (governor's keyed limiters), one per policy rule, keyed by
//! client address, subject, claim or header; several rules stack on one route (per address
//! *and* per user, so rotating addresses does not escape a per-user limit). Idle keys are
//! swept as checks go by, so a flood of distinct keys does not keep its memory.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::HeaderMap;
use portcullis_guard::Rejection;
use portcullis_guard::jwt::Verified;
use portcullis_policy::{Policy, RateKey, RateRule};

#[derive(Debug)]
struct Limit {
    rule: RateRule,
    limiter: DefaultKeyedRateLimiter<String>,
}

/// The compiled rate limits of a policy.
#[derive(Debug, Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
    /// Per route, indices into `limits`.
    per_route: Vec<Vec<usize>>,
    checks: AtomicU64,
}

/// Checks between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 8192;

impl RateLimits {
    pub fn new(policy: &Policy) -> Self {
        let mut per_route = vec![Vec::new(); policy.inventory.len()];
        let mut limits = Vec::new();
        for rule in &policy.rate_limits {
            let per_cell = rule.period / rule.count.max(1);
            let Some(quota) = Quota::with_period(per_cell) else {
                continue;
            };
            let quota = quota.allow_burst(NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN));
            for &r in &rule.routes {
                if let Some(list) = per_route.get_mut(r) {
                    list.push(limits.len());
                }
            }
            limits.push(Limit {
                rule: rule.clone(),
                limiter: RateLimiter::keyed(quota),
            });
        }
        Self {
            limits,
            per_route,
            checks: AtomicU64::new(0),
        }
    }

    /// Counts this request against every rule of its route.
    pub fn check(
        &self,
        route: usize,
        client: std::net::IpAddr,
        claims: Option<&Verified>,
        headers: &HeaderMap,
    ) -> Result<(), Rejection> {
        let Some(list) = self.per_route.get(route).filter(|l| !l.is_empty()) else {
            return Ok(());
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            for l in &self.limits {
                l.limiter.retain_recent();
            }
        }
        for &i in list {
            let l = &self.limits[i];
            let key = key_of(&l.rule.key, client, claims, headers);
            if let Err(not_until) = l.limiter.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Rejection::RateLimited {
                    rule: l.rule.name.clone(),
                    quota: l.rule.count,
                    window: l.rule.period.as_secs(),
                    retry_after: wait.as_secs() + 1,
                });
            }
        }
        Ok(())
    }
}

/// The counting key of a request for a rule: the subject, claim or header when the rule names
/// one and the request has it, the client address otherwise.
pub fn key_of(
    k: &RateKey,
    client: std::net::IpAddr,
    claims: Option<&Verified>,
    headers: &HeaderMap,
) -> String {
    match k {
        RateKey::Ip => format!("ip:{client}"),
        RateKey::User => match claims.and_then(|c| c.str_claim("sub")) {
            Some(sub) => format!("sub:{sub}"),
            None => format!("ip:{client}"),
        },
        RateKey::Claim(name) => match claims.and_then(|c| c.claim_text(name)) {
            Some(v) => format!("claim:{v}"),
            None => format!("ip:{client}"),
        },
        RateKey::Header(h) => match headers.get(h).and_then(|v| v.to_str().ok()) {
            Some(v) => format!("header:{}", v.chars().take(256).collect::<String>()),
            None => format!("ip:{client}"),
        },
    }
}

/// Quotas on business flows (API6), kept in the state store (so they survive restarts with
/// the embedded store): checked before forwarding, counted after the answer.
pub mod quota {
    use std::sync::Arc;

    use portcullis_guard::Rejection;
    use portcullis_guard::store::Store;
    use portcullis_policy::QuotaRule;

    fn store_key(rule: &QuotaRule, key: &str) -> String {
        format!("quota|{}|{key}", rule.name)
    }

    /// Refuses when the key has used up the quota.
    pub fn check(
        store: &dyn Store,
        rule: &QuotaRule,
        key: &str,
        now: i64,
    ) -> Result<(), Rejection> {
        let until = store.blocked_until(&store_key(rule, key));
        if until > now {
            return Err(Rejection::RateLimited {
                rule: rule.name.clone(),
                quota: rule.limit,
                window: rule.window.as_secs(),
                retry_after: u64::try_from(until - now).unwrap_or(1).max(1),
            });
        }
        Ok(())
    }

    /// Counts one use; the `limit`-th use closes the quota for a window from now.
    pub async fn count(store: Arc<dyn Store>, rule: QuotaRule, key: String, now: i64) {
        let window = i64::try_from(rule.window.as_secs()).unwrap_or(86_400);
        let stored = tokio::task::spawn_blocking(move || {
            let k = store_key(&rule, &key);
            let n = store.fail(&k, now, window)?;
            if n >= rule.limit {
                store.block(&k, now + window)?;
            }
            Ok::<_, portcullis_guard::store::StoreError>(())
        })
        .await;
        if !matches!(stored, Ok(Ok(()))) {
            tracing::error!(target: "portcullis::quota", "quota use not stored");
        }
    }
}
