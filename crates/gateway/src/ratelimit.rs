//! The limit phase: rate limits by GCRA (the generic cell rate algorithm: each key keeps one
//! number, its theoretical arrival time), one rule per policy entry, keyed by client address,
//! subject, claim or header; several rules stack on one route (per address *and* per user, so
//! rotating addresses does not escape a per-user limit). A request is counted by all its
//! rules or by none: one refused by a per-user rule does not use up its per-address budget.
//!
//! The same algorithm runs in the process ([`LocalLimiter`]) and in Redis (a Lua script in
//! [`crate::redis`]), with the same numbers: `count` per `period`, bursts of `burst`. With
//! Redis the replicas share one budget; when Redis does not answer, each replica falls back
//! to the local limiter with the budget divided by the replica count.
//!
//! The local table is sharded, keeps its entries across policy reloads (a rule keeps its
//! counters while its name, rate and burst stay the same), and is bounded: idle keys are
//! dropped first, and a flood of distinct keys evicts the keys nearest to idle rather than
//! growing without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use portcullis_guard::Rejection;
use portcullis_guard::jwt::Verified;
use portcullis_policy::{Policy, RateKey, RateRule, StateBackend};

use crate::redis::{RateAnswer, RateCheck, RedisStore};

const SHARDS: usize = 64;

type Table = HashMap<String, u64, ahash::RandomState>;

/// Keys kept by default across all rules (about 100 bytes each).
pub const DEFAULT_MAX_KEYS: usize = 1 << 20;

/// GCRA state for every rule and key, shared by the workers and kept across reloads.
#[derive(Debug)]
pub struct LocalLimiter {
    shards: Box<[Mutex<Table>]>,
    per_shard: usize,
    /// Keyed at random per process: clients choose the keys, so collisions must not be
    /// predictable.
    hasher: ahash::RandomState,
    evicted: AtomicU64,
}

/// One rule's check, in microseconds and cells.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub interval: u64,
    pub burst: u32,
}

fn micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl LocalLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(Table::with_hasher(ahash::RandomState::new())))
                .collect(),
            per_shard: (max_keys / SHARDS).max(16),
            hasher: ahash::RandomState::new(),
            evicted: AtomicU64::new(0),
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) % SHARDS as u64) as usize
    }

    /// Keys evicted to stay under the bound.
    pub fn evicted(&self) -> u64 {
        self.evicted.load(Ordering::Relaxed)
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Decides for all `checks` at once, at `now` (microseconds since the epoch).
    pub fn decide(&self, checks: &[(&str, Cell)], now: u64) -> Vec<RateAnswer> {
        if let [(key, cell)] = checks {
            return vec![self.decide_one(key, *cell, now)];
        }
        let mut shards: Vec<usize> = checks.iter().map(|(k, _)| self.shard_of(k)).collect();
        let mut order = shards.clone();
        order.sort_unstable();
        order.dedup();
        // Lock the shards involved in one order, so two requests never wait on each other
        // crosswise, and decide and commit under the same locks.
        let mut guards: Vec<(usize, std::sync::MutexGuard<'_, Table>)> =
            Vec::with_capacity(order.len());
        for i in order {
            match self.shards[i].lock() {
                Ok(g) => guards.push((i, g)),
                // A poisoned shard: refuse rather than guess.
                Err(_) => return vec![RateAnswer::Denied { retry_after: 1 }; checks.len()],
            }
        }
        let mut answers = Vec::with_capacity(checks.len());
        let mut news = Vec::with_capacity(checks.len());
        let mut denied = false;
        for ((key, cell), shard) in checks.iter().zip(shards.iter_mut()) {
            let map = &guards.iter().find(|(i, _)| i == shard).map(|(_, g)| g);
            let tat = map
                .and_then(|m| m.get(*key).copied())
                .map_or(now, |t| t.max(now));
            let interval = cell.interval.max(1);
            let new = tat.saturating_add(interval);
            let allow_at =
                new.saturating_sub(interval.saturating_mul(u64::from(cell.burst.max(1))));
            if allow_at > now {
                denied = true;
                answers.push(RateAnswer::Denied {
                    retry_after: (allow_at - now).div_ceil(1_000_000).max(1),
                });
            } else {
                answers.push(RateAnswer::Allowed {
                    remaining: (now - allow_at) / interval,
                });
            }
            news.push(new);
        }
        if !denied {
            for (((key, _), shard), new) in checks.iter().zip(&shards).zip(news) {
                if let Some((_, m)) = guards.iter_mut().find(|(i, _)| i == shard) {
                    if let Some(t) = m.get_mut(*key) {
                        *t = new;
                        continue;
                    }
                    if m.len() >= self.per_shard {
                        self.make_room(m, now);
                    }
                    m.insert((*key).to_owned(), new);
                }
            }
        }
        answers
    }

    /// One rule: one shard, one lookup (the common case).
    fn decide_one(&self, key: &str, cell: Cell, now: u64) -> RateAnswer {
        let Ok(mut m) = self.shards[self.shard_of(key)].lock() else {
            return RateAnswer::Denied { retry_after: 1 };
        };
        let interval = cell.interval.max(1);
        let slot = m.get_mut(key);
        let tat = slot.as_deref().map_or(now, |t| (*t).max(now));
        let new = tat.saturating_add(interval);
        let allow_at = new.saturating_sub(interval.saturating_mul(u64::from(cell.burst.max(1))));
        if allow_at > now {
            return RateAnswer::Denied {
                retry_after: (allow_at - now).div_ceil(1_000_000).max(1),
            };
        }
        match slot {
            Some(t) => *t = new,
            None => {
                if m.len() >= self.per_shard {
                    self.make_room(&mut m, now);
                }
                m.insert(key.to_owned(), new);
            }
        }
        RateAnswer::Allowed {
            remaining: (now - allow_at) / interval,
        }
    }

    /// Drops idle keys (their budget is whole again, so nothing is lost); if the shard is
    /// still full, the half nearest to idle goes.
    fn make_room(&self, m: &mut Table, now: u64) {
        let before = m.len();
        m.retain(|_, tat| *tat > now);
        if m.len() >= self.per_shard {
            let mut tats: Vec<u64> = m.values().copied().collect();
            let mid = tats.len() / 2;
            let (_, median, _) = tats.select_nth_unstable(mid);
            let median = *median;
            m.retain(|_, tat| *tat > median);
        }
        self.evicted
            .fetch_add((before - m.len()) as u64, Ordering::Relaxed);
    }
}

/// One compiled rule.
#[derive(Debug)]
struct Limit {
    rule: RateRule,
    /// `name|interval|burst|`: a changed rule starts afresh, an unchanged one keeps its state
    /// across a reload.
    id: String,
    cell: Cell,
    /// The share of one replica when the shared backend does not answer.
    fallback: Cell,
}

/// What is left of the tightest rule, for the `RateLimit` headers of an allowed request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headroom {
    pub rule: String,
    pub quota: u32,
    pub window: u64,
    pub remaining: u64,
}

/// The compiled rate limits of a policy.
#[derive(Debug, Default)]
pub struct RateLimits {
    limits: Vec<Limit>,
    /// Per route, indices into `limits`.
    per_route: Vec<Vec<usize>>,
    /// Per route: whether a rate, quota or concurrency rule keys on a body field.
    body_keyed: Vec<bool>,
}

impl RateLimits {
    pub fn new(policy: &Policy) -> Self {
        let replicas = match &policy.state {
            StateBackend::Redis(r) => r.replicas.max(1),
            _ => 1,
        };
        let mut per_route = vec![Vec::new(); policy.inventory.len()];
        let mut limits = Vec::new();
        for rule in &policy.rate_limits {
            let interval = u64::try_from((rule.period / rule.count.max(1)).as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let cell = Cell {
                interval,
                burst: rule.burst.max(1),
            };
            let fallback = Cell {
                interval: interval.saturating_mul(u64::from(replicas)),
                burst: rule.burst.div_ceil(replicas).max(1),
            };
            for &r in &rule.routes {
                if let Some(list) = per_route.get_mut(r) {
                    list.push(limits.len());
                }
            }
            limits.push(Limit {
                id: format!("{}|{}|{}|", rule.name, interval, cell.burst),
                rule: rule.clone(),
                cell,
                fallback,
            });
        }
        let mut body_keyed = vec![false; policy.inventory.len()];
        let keyed = policy
            .rate_limits
            .iter()
            .map(|r| (&r.routes, &r.key))
            .chain(policy.quotas.iter().map(|q| (&q.routes, &q.key)))
            .chain(
                policy
                    .concurrency_limits
                    .iter()
                    .map(|c| (&c.routes, &c.key)),
            );
        for (routes, key) in keyed {
            if key.needs_body() {
                for &r in routes {
                    if let Some(slot) = body_keyed.get_mut(r) {
                        *slot = true;
                    }
                }
            }
        }
        Self {
            limits,
            per_route,
            body_keyed,
        }
    }

    /// Whether a limit of `route` keys on a body field (the body must be read first).
    pub fn keyed_on_body(&self, route: usize) -> bool {
        self.body_keyed.get(route).copied().unwrap_or(false)
    }

    /// Counts this request against every rule of its route: in Redis when the gateway has it
    /// and it answers, in the process otherwise. `Ok` carries the tightest rule's headroom.
    /// Whether any rate rule covers `route`.
    pub fn applies(&self, route: usize) -> bool {
        self.per_route.get(route).is_some_and(|l| !l.is_empty())
    }

    pub async fn check(
        &self,
        route: usize,
        facts: &Facts<'_>,
        local: &LocalLimiter,
        redis: Option<&RedisStore>,
    ) -> Result<Option<Headroom>, Rejection> {
        let Some(list) = self.per_route.get(route).filter(|l| !l.is_empty()) else {
            return Ok(None);
        };
        let keys: Vec<String> = list
            .iter()
            .map(|&i| key_of(&self.limits[i].rule.key, facts))
            .collect();
        let mut answers = None;
        if let Some(r) = redis {
            let checks: Vec<RateCheck<'_>> = list
                .iter()
                .zip(&keys)
                .map(|(&i, key)| {
                    let l = &self.limits[i];
                    RateCheck {
                        rule: &l.id,
                        key,
                        interval: Duration::from_micros(l.cell.interval),
                        burst: l.cell.burst,
                    }
                })
                .collect();
            // Boxed: the Redis exchange's state is most of this future's size.
            answers = Box::pin(r.rate(&checks)).await.ok();
        }
        let answers = match answers {
            Some(a) => a,
            None => {
                let shared = redis.is_some();
                let ids: Vec<String> = list
                    .iter()
                    .zip(&keys)
                    .map(|(&i, key)| {
                        let l = &self.limits[i];
                        if shared {
                            format!("fallback|{}{key}", l.id)
                        } else {
                            format!("{}{key}", l.id)
                        }
                    })
                    .collect();
                let checks: Vec<(&str, Cell)> = list
                    .iter()
                    .zip(&ids)
                    .map(|(&i, id)| {
                        let l = &self.limits[i];
                        (id.as_str(), if shared { l.fallback } else { l.cell })
                    })
                    .collect();
                local.decide(&checks, micros())
            }
        };
        let mut tightest: Option<Headroom> = None;
        for (&i, answer) in list.iter().zip(answers) {
            let l = &self.limits[i];
            match answer {
                RateAnswer::Denied { retry_after } => {
                    return Err(Rejection::RateLimited {
                        rule: l.rule.name.clone(),
                        quota: l.rule.count,
                        window: l.rule.period.as_secs(),
                        retry_after,
                    });
                }
                RateAnswer::Allowed { remaining } => {
                    if tightest.as_ref().is_none_or(|t| remaining < t.remaining) {
                        tightest = Some(Headroom {
                            rule: l.rule.name.clone(),
                            quota: l.rule.count,
                            window: l.rule.period.as_secs(),
                            remaining,
                        });
                    }
                }
            }
        }
        Ok(tightest)
    }
}

/// What a request offers to key a limit on.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub client: std::net::IpAddr,
    pub claims: Option<&'a Verified>,
    pub headers: &'a HeaderMap,
    /// The JSON body, read only when a rule of the route keys on it.
    pub body: Option<&'a serde_json::Value>,
}

/// The counting key of a request for a rule: the subject, claim, header or body field when the
/// rule names one and the request has it, the client address otherwise.
/// A value as part of a key: `%` and `+` escaped, so the parts of a compound key (`+`) stay
/// apart however the client spells its values (an API key `sk+ip:1.2.3.4` is one part, and
/// the log redacts all of it).
fn part(kind: &str, v: &str) -> String {
    let mut out = String::with_capacity(kind.len() + v.len() + 1);
    out.push_str(kind);
    out.push(':');
    for c in v.chars().take(256) {
        match c {
            '%' => out.push_str("%25"),
            '+' => out.push_str("%2B"),
            c => out.push(c),
        }
    }
    out
}

pub fn key_of(k: &RateKey, f: &Facts<'_>) -> String {
    let client = portcullis_guard::forward::Counted(f.client);
    match k {
        RateKey::Ip => format!("ip:{client}"),
        RateKey::User => match f.claims.and_then(|c| c.str_claim("sub")) {
            Some(sub) => part("sub", sub),
            None => format!("ip:{client}"),
        },
        RateKey::Claim(name) => match f.claims.and_then(|c| c.claim_text(name)) {
            Some(v) => part("claim", &v),
            None => format!("ip:{client}"),
        },
        RateKey::Header(h) => match f.headers.get(h).and_then(|v| v.to_str().ok()) {
            Some(v) => part("header", v),
            None => format!("ip:{client}"),
        },
        // Trimmed and lower-cased, as an account name: `Alice@X` and `alice@x ` are one key.
        RateKey::Body(pointer) => match f
            .body
            .and_then(|b| b.pointer(pointer))
            .and_then(|v| v.as_str())
            .map(|v| v.trim().to_lowercase())
            .filter(|v| !v.is_empty())
        {
            Some(v) => part("body", &v),
            None => format!("ip:{client}"),
        },
        RateKey::All(parts) => parts
            .iter()
            .map(|p| key_of(p, f))
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// A key as the log may show it: header values (API keys) are secrets and are redacted.
pub fn loggable_key(key: &str) -> String {
    key.split('+')
        .map(|part| match part.split_once(':') {
            Some(("header", _)) => "header:[redacted]".to_owned(),
            _ => part.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// Quotas on business flows (API6), kept in the state store (so they survive restarts with
/// the embedded store and are shared by replicas with Redis): checked before forwarding,
/// counted after the answer.
pub mod quota {
    use portcullis_guard::Rejection;
    use portcullis_guard::store::Store;
    use portcullis_policy::QuotaRule;

    fn store_key(rule: &QuotaRule, key: &str) -> String {
        format!("quota|{}|{key}", rule.name)
    }

    /// Refuses when the key has used up the quota (and, failing closed, when the store
    /// cannot say).
    pub async fn check(
        store: &dyn Store,
        rule: &QuotaRule,
        key: &str,
        now: i64,
    ) -> Result<(), Rejection> {
        let until = store
            .blocked_until(&[&store_key(rule, key)])
            .await
            .map_err(|e| {
                tracing::error!(target: "portcullis::quota", error = %e, "quota state unreadable: request refused");
                Rejection::Unavailable
            })?
            .first()
            .copied()
            .unwrap_or(0);
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

    /// Takes one use, atomically: the `limit`-th use closes the quota for a window from now,
    /// and a use beyond the limit (parallel requests racing past the check) is refused.
    /// Returns the uses so far in the window. A store that cannot count refuses (fail closed).
    pub async fn take(
        store: &dyn Store,
        rule: &QuotaRule,
        key: &str,
        now: i64,
    ) -> Result<u32, Rejection> {
        let window = i64::try_from(rule.window.as_secs()).unwrap_or(86_400);
        let k = store_key(rule, key);
        let used = store.count(&k, now, window, rule.limit).await.map_err(|e| {
            tracing::error!(target: "portcullis::quota", error = %e, "quota use not counted: request refused");
            Rejection::Unavailable
        })?;
        if used > rule.limit {
            give_back(store, rule, key).await;
            return Err(Rejection::RateLimited {
                rule: rule.name.clone(),
                quota: rule.limit,
                window: rule.window.as_secs(),
                retry_after: rule.window.as_secs().max(1),
            });
        }
        Ok(used)
    }

    /// Gives a taken use back (the request failed and the quota counts successes, or never
    /// reached the upstream).
    pub async fn give_back(store: &dyn Store, rule: &QuotaRule, key: &str) {
        if let Err(e) = store.release(&store_key(rule, key), rule.limit).await {
            tracing::error!(target: "portcullis::quota", error = %e, "quota use not given back");
        }
    }
}

/// Concurrency limits: requests of one key in flight at once, per rule. Counted in this
/// process (a request in flight lives in one replica), from the limit phase until the
/// upstream's answer head arrives.
#[derive(Debug, Default)]
pub struct Inflight {
    map: Mutex<HashMap<String, u32>>,
}

/// Held while a request is in flight; gives its places back when dropped.
#[derive(Debug)]
pub struct Permit {
    inflight: std::sync::Arc<Inflight>,
    keys: Vec<String>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inflight.map.lock() {
            for k in &self.keys {
                if let Some(n) = m.get_mut(k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        m.remove(k);
                    }
                }
            }
        }
    }
}

impl Inflight {
    /// Takes one place under every `(key, max)`, or none: `Err(i)` names the rule that is
    /// full. The map holds only keys with requests in flight, so it is bounded by the
    /// connection cap.
    pub fn acquire(
        self: &std::sync::Arc<Self>,
        wants: Vec<(String, u32)>,
    ) -> Result<Permit, usize> {
        let Ok(mut m) = self.map.lock() else {
            return Err(0);
        };
        if let Some(i) = wants
            .iter()
            .position(|(k, max)| m.get(k).copied().unwrap_or(0) >= *max)
        {
            return Err(i);
        }
        for (k, _) in &wants {
            *m.entry(k.clone()).or_insert(0) += 1;
        }
        Ok(Permit {
            inflight: self.clone(),
            keys: wants.into_iter().map(|(k, _)| k).collect(),
        })
    }
}

/// The burst detector of sensitive flows: per key, the requests of the current window and a
/// moving average of past windows (each completed window weighs half, empty windows decay
/// it), in this process.
#[derive(Debug, Default)]
pub struct Bursts {
    map: Mutex<HashMap<String, Pace>>,
}

#[derive(Debug, Clone, Copy)]
struct Pace {
    window_start: u64,
    count: u32,
    baseline: f64,
    flagged: bool,
}

/// What the detector makes of one more request.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Normal,
    /// Far above the key's own baseline; `first` once per window (log and count it once).
    Flagged {
        first: bool,
        retry_after: u64,
    },
}

/// Keys the detector keeps before it forgets the stalest.
const MAX_PACES: usize = 100_000;

impl Bursts {
    pub fn observe(&self, key: &str, rule: &portcullis_policy::BurstRule, now_ms: u64) -> Verdict {
        let Ok(mut m) = self.map.lock() else {
            return Verdict::Normal;
        };
        let w = u64::try_from(rule.window.as_millis())
            .unwrap_or(60_000)
            .max(1);
        if m.len() >= MAX_PACES && !m.contains_key(key) {
            m.retain(|_, p| p.flagged || now_ms.saturating_sub(p.window_start) < w * 16);
            if m.len() >= MAX_PACES {
                // Still full: the stalest quarter goes (flagged keys stay), so a flood of new
                // keys neither wipes every baseline nor forces a scan on every insert.
                let mut starts: Vec<u64> = m
                    .values()
                    .filter(|p| !p.flagged)
                    .map(|p| p.window_start)
                    .collect();
                if !starts.is_empty() {
                    let cut = starts.len() / 4;
                    let (_, at, _) = starts.select_nth_unstable(cut);
                    let at = *at;
                    m.retain(|_, p| p.flagged || p.window_start > at);
                }
            }
        }
        let p = m.entry(key.to_owned()).or_insert(Pace {
            window_start: now_ms,
            count: 0,
            baseline: 0.0,
            flagged: false,
        });
        let passed = now_ms.saturating_sub(p.window_start) / w;
        if passed >= 1 {
            p.baseline = 0.5 * f64::from(p.count) + 0.5 * p.baseline;
            // Windows with no request at all pull the baseline down.
            p.baseline *= 0.5f64.powi(i32::try_from(passed - 1).unwrap_or(i32::MAX).min(64));
            p.window_start += passed * w;
            p.count = 0;
            p.flagged = false;
        }
        p.count = p.count.saturating_add(1);
        if p.count > rule.min && f64::from(p.count) > rule.factor * p.baseline.max(1.0) {
            let first = !p.flagged;
            p.flagged = true;
            let retry_after = (p.window_start + w)
                .saturating_sub(now_ms)
                .div_ceil(1000)
                .max(1);
            return Verdict::Flagged { first, retry_after };
        }
        Verdict::Normal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use portcullis_policy::BurstRule;

    fn rule() -> BurstRule {
        BurstRule {
            window: Duration::from_secs(60),
            factor: 4.0,
            min: 5,
            block: true,
        }
    }

    #[test]
    fn a_steady_pace_is_normal_and_a_jump_above_it_is_flagged() {
        let (b, r) = (Bursts::default(), rule());
        let mut t = 0;
        // Ten windows of 4 requests: the baseline settles near 4.
        for _ in 0..10 {
            for _ in 0..4 {
                assert_eq!(b.observe("u", &r, t), Verdict::Normal);
            }
            t += 60_000;
        }
        // The baseline is just under 4: 15 in the next window stay within 4x; the 16th not.
        for _ in 0..15 {
            assert_eq!(b.observe("u", &r, t), Verdict::Normal);
        }
        assert!(matches!(
            b.observe("u", &r, t),
            Verdict::Flagged { first: true, .. }
        ));
        assert!(matches!(
            b.observe("u", &r, t),
            Verdict::Flagged { first: false, .. }
        ));
        // Another key has its own baseline; a new key is flagged past `min`.
        for _ in 0..5 {
            assert_eq!(b.observe("v", &r, t), Verdict::Normal);
        }
        assert!(matches!(b.observe("v", &r, t), Verdict::Flagged { .. }));
    }

    #[test]
    fn api_keys_never_reach_the_log() {
        assert_eq!(
            loggable_key("ip:127.0.0.1+header:sk_live_secret"),
            "ip:127.0.0.1+header:[redacted]"
        );
        assert_eq!(loggable_key("sub:usr_1"), "sub:usr_1");
        // A `+` in an API key does not split it: what follows is not shown either.
        assert_eq!(part("header", "pk+SECRET1%"), "header:pk%2BSECRET1%25");
        assert_eq!(
            loggable_key(&format!(
                "{}+{}",
                part("ip", "10.0.0.1"),
                part("header", "pk+SECRET1")
            )),
            "ip:10.0.0.1+header:[redacted]"
        );
    }

    #[test]
    fn the_local_gcra_allows_the_burst_then_the_rate_all_or_nothing() {
        let l = LocalLimiter::new(1024);
        let cell = Cell {
            interval: 1_000_000,
            burst: 3,
        };
        let loose = Cell {
            interval: 1_000,
            burst: 100,
        };
        let now = 10_000_000_000;
        for left in [2, 1, 0] {
            assert_eq!(
                l.decide(&[("a", cell)], now),
                vec![RateAnswer::Allowed { remaining: left }]
            );
        }
        assert_eq!(
            l.decide(&[("b", loose), ("a", cell)], now),
            vec![
                RateAnswer::Allowed { remaining: 99 },
                RateAnswer::Denied { retry_after: 1 }
            ]
        );
        // The refused request used nothing of the loose rule.
        assert_eq!(
            l.decide(&[("b", loose)], now),
            vec![RateAnswer::Allowed { remaining: 99 }]
        );
        // One interval later, one more.
        assert_eq!(
            l.decide(&[("a", cell)], now + 1_000_000),
            vec![RateAnswer::Allowed { remaining: 0 }]
        );
    }

    #[test]
    fn a_flood_of_keys_stays_within_the_bound() {
        let l = LocalLimiter::new(SHARDS * 16);
        let cell = Cell {
            interval: 60_000_000,
            burst: 5,
        };
        for i in 0..100_000 {
            l.decide(&[(&format!("k{i}"), cell)], 1_000_000);
        }
        assert!(l.len() <= SHARDS * 16, "{}", l.len());
        assert!(l.evicted() > 90_000);
    }
}
