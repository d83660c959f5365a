//! The Redis backend: the state every replica of the gateway shares (rate-limit counters,
//! quotas, login holds, revocations, used refresh tokens), so N replicas behave as one.
//!
//! - Every decision is one round trip and atomic: a Lua script (rate limits, counters, holds)
//!   or a single command (`SET NX` for a single-use token). The rate-limit script reads the
//!   time from Redis (`TIME`); counters and login holds are stamped with the replica's clock
//!   (their keys expire by Redis's), so replicas keep their clocks in step (NTP).
//! - Every key carries a TTL, so Redis holds only what still matters.
//! - Keys are hash-tagged one by one (`prefix{kind:id}:field`), so a Redis Cluster spreads
//!   them; the keys of one script share a tag.
//! - When Redis does not answer within `timeout`, the call falls back and Redis is left alone
//!   for `retry_interval`, then tried again: rate limits use local limits scaled to the
//!   replica count, counters and holds a local memory store, revocation checks fail closed
//!   (or open, if configured), single-use tokens fail closed. The transitions are logged once
//!   and the state is in the metrics (`portcullis_state_backend_up`,
//!   `portcullis_state_fallbacks_total`). A revocation written while Redis is down is refused
//!   to the admin (503) but still honoured by this replica.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use portcullis_guard::store::{Backoff, LocalStore, MemoryStore, Revocations, Store, StoreError};
use portcullis_policy::{RedisServers, RedisState, SecretSource};
use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, RedisFuture, Script, Value};
use tokio::sync::Mutex;

use crate::metrics::Metrics;

/// Rate checks: for each key, allowed (1/0) and then the seconds to wait (denied) or the
/// requests left (allowed). All-or-nothing: a request refused by one rule uses no other.
/// ARGV: per key, the emission interval and the burst, in microseconds and cells.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, news, denied = {}, {}, false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = now
  local stored = redis.call('GET', KEYS[i])
  if stored then tat = math.max(tonumber(stored), now) end
  local new = tat + interval
  local allow_at = new - interval * burst
  if allow_at > now then
    denied = true
    out[2 * i - 1] = 0
    out[2 * i] = math.ceil((allow_at - now) / 1000000)
  else
    news[i] = new
    out[2 * i - 1] = 1
    out[2 * i] = math.floor((now - allow_at) / interval)
  end
end
if not denied then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', math.ceil((news[i] - now) / 1000) + 1)
  end
end
return out
";

/// Counts one failure in a window that starts with the first (KEYS[1], ARGV window seconds);
/// with a limit (ARGV[2] > 0) the limit-th use also holds KEYS[2] for a window from now.
const COUNT: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local limit = tonumber(ARGV[2])
if limit > 0 and n >= limit then
  local until_ = tonumber(ARGV[3]) + tonumber(ARGV[1])
  local held = tonumber(redis.call('GET', KEYS[2]) or '0')
  if until_ > held then redis.call('SET', KEYS[2], until_, 'EXAT', until_) end
end
return n
";

/// One attempt on a counter KEYS[1] and its hold KEYS[2] (see `Store::attempt`): refused while
/// held; else counted (the count lasting ARGV[1] seconds past the attempt's hold) and, from
/// the ARGV[2]-th count, held for ARGV[3] seconds doubled per further count, at most ARGV[4].
/// ARGV[5] is now. Returns {1, count} or {0, held until}.
const ATTEMPT: &str = r"
local now = tonumber(ARGV[5])
local held = tonumber(redis.call('GET', KEYS[2]) or '0')
if held > now then return {0, held} end
local n = redis.call('INCR', KEYS[1])
local limit = tonumber(ARGV[2])
local d = 0
if n >= limit then
  d = math.min(tonumber(ARGV[3]) * 2 ^ math.min(n - limit, 30), tonumber(ARGV[4]))
end
-- The count lasts the window past this attempt's hold: while the guessing goes on, the holds
-- keep growing to their cap (a window from the first failure would end under them).
redis.call('EXPIRE', KEYS[1], string.format('%d', tonumber(ARGV[1]) + d))
if d > 0 then
  local until_ = string.format('%d', now + d)
  -- Expires d seconds from now by Redis's clock: a Redis clock ahead of the gateway's must
  -- not end the hold early.
  if tonumber(until_) > held then redis.call('SET', KEYS[2], until_, 'EX', string.format('%d', d)) end
end
return {1, n}
";

/// Gives one use of KEYS[1] back (never below 0); below ARGV[1] again, the hold KEYS[2] goes.
const RELEASE: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then n = redis.call('DECR', KEYS[1]) end
if n < tonumber(ARGV[1]) then redis.call('DEL', KEYS[2]) end
return n
";

/// Sets KEYS[1] to ARGV[1] unless it holds a larger number; expires at ARGV[2].
const RAISE: &str = r"
local v = tonumber(ARGV[1])
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if v > held then
  if ARGV[2] == '0' then redis.call('SET', KEYS[1], ARGV[1])
  else redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2]) end
elseif ARGV[2] == '0' then
  -- Kept without an end even when written before with one (an older gateway's).
  redis.call('PERSIST', KEYS[1])
end
return 1
";

/// One rate rule's check for [`RedisStore::rate`].
#[derive(Debug)]
pub struct RateCheck<'a> {
    pub rule: &'a str,
    pub key: &'a str,
    pub interval: Duration,
    pub burst: u32,
}

/// The answer for one rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RateAnswer {
    Allowed { remaining: u64 },
    Denied { retry_after: u64 },
}

enum Conn {
    /// One server: the connection manager reconnects by itself.
    Single(ConnectionManager),
    /// Cluster or Sentinel: connected on first use, connected again after a failure.
    Lazy(Box<Lazy>),
}

enum Connector {
    Cluster(redis::cluster::ClusterClient),
    Sentinel(Mutex<redis::sentinel::SentinelClient>),
}

struct Lazy {
    connector: Connector,
    current: Mutex<Option<Handle>>,
}

impl Lazy {
    async fn handle(&self) -> redis::RedisResult<Handle> {
        let mut current = self.current.lock().await;
        if let Some(h) = current.as_ref() {
            return Ok(h.clone());
        }
        let h = match &self.connector {
            Connector::Cluster(c) => Handle::Cluster(c.get_async_connection().await?),
            // The sentinels name the master of the moment.
            Connector::Sentinel(c) => {
                Handle::Multiplexed(c.lock().await.get_async_connection().await?)
            }
        };
        *current = Some(h.clone());
        Ok(h)
    }
}

/// The connection handle, cheap to clone per call.
#[derive(Clone)]
enum Handle {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Multiplexed(MultiplexedConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Single(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
            Handle::Multiplexed(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Single(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Handle::Multiplexed(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Single(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
            Handle::Multiplexed(c) => c.get_db(),
        }
    }
}

/// Redis, with a local fallback.
pub struct RedisStore {
    conn: Conn,
    prefix: String,
    timeout: Duration,
    retry_interval: Duration,
    revocations_fail_open: bool,
    /// The replicas sharing this Redis: while it is away each one counts a quota against its
    /// share of the limit, as rate limits do.
    replicas: u32,
    /// Milliseconds since the epoch before which Redis is not tried.
    resting_until: AtomicU64,
    up: AtomicBool,
    fallback: MemoryStore,
    metrics: Arc<Metrics>,
    gcra: Script,
    count: Script,
    raise: Script,
    release: Script,
    attempt: Script,
    /// Refresh-token uses whose reply never came (a timeout, a dropped connection): the marks
    /// this replica tried to write, by `jti`. Such a write may have landed; the client's retry
    /// that finds one of these marks finds its own first use, not a thief's.
    unanswered: std::sync::Mutex<HashMap<String, Vec<String>>>,
}

/// Refresh-token uses without an answer remembered at once (a bound for a long outage).
const MAX_UNANSWERED: usize = 4096;

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("up", &self.up.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Server answers that mean "not now, and maybe not this server": a failover in progress
/// (`READONLY` from a demoted master), a restart (`LOADING`), no master (`MASTERDOWN`), a
/// stuck script (`BUSY`), memory full (`OOM`), a Cluster resharding or down.
fn unavailable(e: &redis::RedisError) -> bool {
    matches!(
        e.code().unwrap_or(""),
        "READONLY" | "LOADING" | "MASTERDOWN" | "BUSY" | "OOM" | "TRYAGAIN" | "CLUSTERDOWN"
    )
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError(format!("redis: {e}"))
}

impl RedisStore {
    /// Builds the connection (lazily: the gateway starts, and falls back, while Redis is
    /// down). Fails only on a malformed address or an unset environment variable.
    pub fn connect(cfg: &RedisState, metrics: Arc<Metrics>) -> Result<Self, StoreError> {
        let conn = match &cfg.servers {
            RedisServers::Single(source) => {
                let url = match source {
                    SecretSource::Inline(u) => u.clone(),
                    SecretSource::Env(name) => std::env::var(name).map_err(|_| {
                        StoreError(format!(
                            "environment variable `{name}` (state.redis.url_env) is not set"
                        ))
                    })?,
                    SecretSource::File(path) => std::fs::read_to_string(path)
                        .map_err(|e| StoreError(format!("cannot read {}: {e}", path.display())))?
                        .trim()
                        .to_owned(),
                };
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StoreError(format!("state.redis.url: {e}")))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(cfg.timeout))
                    .set_response_timeout(Some(cfg.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(cfg.retry_interval);
                Conn::Single(
                    ConnectionManager::new_lazy_with_config(client, config)
                        .map_err(|e| StoreError(format!("state.redis.url: {e}")))?,
                )
            }
            RedisServers::Cluster(nodes) => {
                let client = redis::cluster::ClusterClientBuilder::new(nodes.clone())
                    .connection_timeout(cfg.timeout)
                    .response_timeout(cfg.timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| StoreError(format!("state.redis.cluster: {e}")))?;
                Conn::Lazy(Box::new(Lazy {
                    connector: Connector::Cluster(client),
                    current: Mutex::new(None),
                }))
            }
            RedisServers::Sentinel { master, nodes } => {
                // The master is reached with the user, password and database of the first
                // sentinel's URL (one password for sentinels and master, the usual setup):
                // without them it was asked with none, and refused every command.
                let first = nodes
                    .first()
                    .map(|n| redis::IntoConnectionInfo::into_connection_info(n.as_str()))
                    .transpose()
                    .map_err(|e| StoreError(format!("state.redis.sentinel: {e}")))?;
                let node = first.map(|i| {
                    redis::sentinel::SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(i.redis_settings().clone())
                });
                let client = redis::sentinel::SentinelClient::build(
                    nodes.clone(),
                    master.clone(),
                    node,
                    redis::sentinel::SentinelServerType::Master,
                )
                .map_err(|e| StoreError(format!("state.redis.sentinel: {e}")))?;
                Conn::Lazy(Box::new(Lazy {
                    connector: Connector::Sentinel(Mutex::new(client)),
                    current: Mutex::new(None),
                }))
            }
        };
        metrics.state_up.set(1);
        Ok(Self {
            conn,
            prefix: cfg.prefix.clone(),
            timeout: cfg.timeout,
            retry_interval: cfg.retry_interval,
            revocations_fail_open: cfg.revocations_fail_open,
            replicas: cfg.replicas.max(1),
            resting_until: AtomicU64::new(0),
            up: AtomicBool::new(true),
            fallback: MemoryStore::default(),
            metrics,
            gcra: Script::new(GCRA),
            count: Script::new(COUNT),
            raise: Script::new(RAISE),
            release: Script::new(RELEASE),
            attempt: Script::new(ATTEMPT),
            unanswered: std::sync::Mutex::default(),
        })
    }

    async fn handle(&self) -> redis::RedisResult<Handle> {
        match &self.conn {
            Conn::Single(c) => Ok(Handle::Single(c.clone())),
            Conn::Lazy(l) => l.handle().await,
        }
    }

    fn is_cluster(&self) -> bool {
        matches!(&self.conn, Conn::Lazy(l) if matches!(l.connector, Connector::Cluster(_)))
    }

    /// Runs one call against Redis, within the timeout, unless Redis is resting after a
    /// failure. Connection failures and timeouts start a rest; a script error does not.
    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: AsyncFnOnce(Handle) -> redis::RedisResult<T>,
    {
        if millis() < self.resting_until.load(Ordering::Relaxed) {
            self.fell_back(op);
            return Err(StoreError("redis: resting after a failure".into()));
        }
        let result = tokio::time::timeout(self.timeout, async {
            let h = self.handle().await?;
            f(h).await
        })
        .await;
        match result {
            Ok(Ok(v)) => {
                if !self.up.swap(true, Ordering::Relaxed) {
                    self.metrics.state_up.set(1);
                    tracing::warn!(target: "portcullis::state", "redis reachable again: shared state restored");
                }
                Ok(v)
            }
            Ok(Err(e))
                if !(e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_timeout()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
                    || unavailable(&e)) =>
            {
                tracing::error!(target: "portcullis::state", op, error = %e, "redis refused a command");
                Err(store_err(e))
            }
            other => {
                let reason = match other {
                    Err(_) => "timeout".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(_)) => String::new(),
                };
                self.rest();
                self.fell_back(op);
                if self.up.swap(false, Ordering::Relaxed) {
                    self.metrics.state_up.set(0);
                    tracing::error!(target: "portcullis::state", op, error = %reason, "redis unreachable: falling back to local state");
                }
                Err(StoreError(format!("redis: {reason}")))
            }
        }
    }

    fn rest(&self) {
        let until = millis() + u64::try_from(self.retry_interval.as_millis()).unwrap_or(1000);
        self.resting_until.store(until, Ordering::Relaxed);
        if let Conn::Lazy(l) = &self.conn {
            // Connect afresh next time (on Sentinel, the master may have moved).
            if let Ok(mut c) = l.current.try_lock() {
                *c = None;
            }
        }
    }

    fn unanswered(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.unanswered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fell_back(&self, op: &'static str) {
        self.metrics.state_fallback(op);
    }

    fn key(&self, kind: &str, id: &str, field: &str) -> String {
        // The id may hold any byte but `}` would end the tag early.
        let id = id.replace('%', "%25").replace('}', "%7D");
        format!("{}{{{kind}:{id}}}{field}", self.prefix)
    }

    fn throttle_keys(&self, key: &str) -> (String, String) {
        (self.key("h", key, ":n"), self.key("h", key, ":b"))
    }

    /// Checks a request against its route's rules in one round trip (one per rule on a
    /// Cluster, where the rules' keys live on different nodes).
    pub async fn rate(&self, checks: &[RateCheck<'_>]) -> Result<Vec<RateAnswer>, StoreError> {
        let keys: Vec<String> = checks
            .iter()
            // Tagged by rule and key: a Cluster spreads one rule's clients over its nodes.
            .map(|c| self.key("r", &format!("{}{}", c.rule, c.key), ""))
            .collect();
        let cluster = self.is_cluster();
        let groups: Vec<Vec<usize>> = if cluster {
            (0..checks.len()).map(|i| vec![i]).collect()
        } else {
            vec![(0..checks.len()).collect()]
        };
        let mut answers = vec![RateAnswer::Allowed { remaining: 0 }; checks.len()];
        let invoke = |group: &[usize]| {
            let mut inv = self.gcra.prepare_invoke();
            for &i in group {
                let c = &checks[i];
                let interval = u64::try_from(c.interval.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                inv.key(&keys[i]).arg(interval).arg(c.burst.max(1));
            }
            inv
        };
        let results: Vec<Vec<i64>> = if groups.len() == 1 {
            let inv = invoke(&groups[0]);
            vec![
                self.call("rate", async |mut h| inv.invoke_async(&mut h).await)
                    .await?,
            ]
        } else {
            let mut set = Vec::new();
            for g in &groups {
                let inv = invoke(g);
                set.push(async move {
                    self.call("rate", async |mut h| inv.invoke_async(&mut h).await)
                        .await
                });
            }
            let mut out = Vec::new();
            for f in set {
                out.push(f.await?);
            }
            out
        };
        for (g, r) in groups.iter().zip(results) {
            for (j, &i) in g.iter().enumerate() {
                let (ok, n) = (
                    r.get(2 * j).copied().unwrap_or(0),
                    r.get(2 * j + 1).copied().unwrap_or(1),
                );
                answers[i] = if ok == 1 {
                    RateAnswer::Allowed {
                        remaining: u64::try_from(n).unwrap_or(0),
                    }
                } else {
                    RateAnswer::Denied {
                        retry_after: u64::try_from(n).unwrap_or(1).max(1),
                    }
                };
            }
        }
        Ok(answers)
    }

    /// Reads many keys: one MGET, or one GET each on a Cluster.
    async fn get_many(
        &self,
        op: &'static str,
        keys: &[String],
    ) -> Result<Vec<Option<i64>>, StoreError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        if self.is_cluster() && keys.len() > 1 {
            let mut out = Vec::with_capacity(keys.len());
            for k in keys {
                out.push(
                    self.call(op, async |mut h| {
                        redis::cmd("GET")
                            .arg(k)
                            .query_async::<Option<i64>>(&mut h)
                            .await
                    })
                    .await?,
                );
            }
            return Ok(out);
        }
        self.call(op, async |mut h| {
            redis::cmd("MGET")
                .arg(keys)
                .query_async::<Vec<Option<i64>>>(&mut h)
                .await
        })
        .await
    }
}

#[async_trait]
impl Store for RedisStore {
    fn shared_backend_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    async fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        let (n, b) = self.throttle_keys(key);
        let inv = {
            let mut i = self.count.prepare_invoke();
            i.key(&n).key(&b).arg(window.max(1)).arg(0).arg(now);
            i
        };
        match self
            .call("fail", async |mut h| inv.invoke_async::<u32>(&mut h).await)
            .await
        {
            Ok(v) => Ok(v),
            Err(_) => LocalStore::fail(&self.fallback, key, now, window),
        }
    }

    async fn count(&self, key: &str, now: i64, window: i64, limit: u32) -> Result<u32, StoreError> {
        let (n, b) = self.throttle_keys(key);
        let inv = {
            let mut i = self.count.prepare_invoke();
            i.key(&n)
                .key(&b)
                .arg(window.max(1))
                .arg(limit.max(1))
                .arg(now);
            i
        };
        match self
            .call("count", async |mut h| inv.invoke_async::<u32>(&mut h).await)
            .await
        {
            Ok(v) => Ok(v),
            Err(_) => {
                // Each replica counts against its share of the limit (at least one use, as
                // rate limits get), so together they stay about within it while they cannot
                // see each other's uses (nor those made before the outage). The count given
                // back is scaled to the whole limit: its last share use is the limit-th.
                let share = (limit / self.replicas).max(1);
                let c = LocalStore::fail(&self.fallback, key, now, window)?;
                if c >= share {
                    LocalStore::block(&self.fallback, key, now + window)?;
                }
                Ok(if c > share {
                    limit.saturating_add(1)
                } else {
                    c.saturating_mul(limit) / share
                })
            }
        }
    }

    async fn attempt(
        &self,
        key: &str,
        now: i64,
        backoff: Backoff,
    ) -> Result<Result<u32, i64>, StoreError> {
        // Holds made locally while Redis was away still count.
        let local = LocalStore::blocked_until(&self.fallback, key);
        if local > now {
            return Ok(Err(local));
        }
        let (n, b) = self.throttle_keys(key);
        let inv = {
            let mut i = self.attempt.prepare_invoke();
            i.key(&n)
                .key(&b)
                .arg(backoff.window.max(1))
                .arg(backoff.limit.max(1))
                .arg(backoff.base.max(1))
                .arg(backoff.max.max(1))
                .arg(now);
            i
        };
        match self
            .call("attempt", async |mut h| {
                inv.invoke_async::<(i64, i64)>(&mut h).await
            })
            .await
        {
            Ok((1, count)) => Ok(Ok(u32::try_from(count).unwrap_or(u32::MAX))),
            Ok((_, until)) => Ok(Err(until)),
            Err(_) => LocalStore::attempt(&self.fallback, key, now, backoff),
        }
    }

    async fn release(&self, key: &str, limit: u32) -> Result<(), StoreError> {
        let (n, b) = self.throttle_keys(key);
        let inv = {
            let mut i = self.release.prepare_invoke();
            i.key(&n).key(&b).arg(limit);
            i
        };
        match self
            .call("release", async |mut h| {
                inv.invoke_async::<i64>(&mut h).await
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => LocalStore::release(&self.fallback, key, limit),
        }
    }

    async fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        let (_, b) = self.throttle_keys(key);
        let inv = {
            let mut i = self.raise.prepare_invoke();
            i.key(&b).arg(until).arg(until);
            i
        };
        match self
            .call("block", async |mut h| inv.invoke_async::<i64>(&mut h).await)
            .await
        {
            Ok(_) => Ok(()),
            Err(_) => LocalStore::block(&self.fallback, key, until),
        }
    }

    async fn blocked_until(&self, keys: &[&str]) -> Result<Vec<i64>, StoreError> {
        let bs: Vec<String> = keys.iter().map(|k| self.throttle_keys(k).1).collect();
        let local = keys
            .iter()
            .map(|k| LocalStore::blocked_until(&self.fallback, k));
        match self.get_many("blocked_until", &bs).await {
            // Holds made locally while Redis was away still count.
            Ok(v) => Ok(v
                .into_iter()
                .zip(local)
                .map(|(r, l)| r.unwrap_or(0).max(l))
                .collect()),
            Err(_) => Ok(local.collect()),
        }
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let (n, b) = self.throttle_keys(key);
        LocalStore::clear(&self.fallback, key)?;
        self.call("clear", async |mut h| {
            redis::cmd("DEL")
                .arg(&n)
                .arg(&b)
                .query_async::<i64>(&mut h)
                .await
        })
        .await
        .map(|_| ())
        .or(Ok(()))
    }

    async fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        let k = self.key("k", key, "");
        match self
            .call("remember", async |mut h| {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(until)
                    .arg("EXAT")
                    .arg(until)
                    .query_async::<()>(&mut h)
                    .await
            })
            .await
        {
            Ok(()) => Ok(()),
            Err(_) => LocalStore::remember(&self.fallback, key, until),
        }
    }

    async fn remembered(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        let k = self.key("k", key, "");
        match self
            .call("remembered", async |mut h| {
                redis::cmd("EXISTS")
                    .arg(&k)
                    .query_async::<bool>(&mut h)
                    .await
            })
            .await
        {
            Ok(v) => Ok(v || LocalStore::remembered(&self.fallback, key, now)),
            Err(_) => Ok(LocalStore::remembered(&self.fallback, key, now)),
        }
    }

    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        // Honoured here whatever happens to Redis.
        LocalStore::revoke_token(&self.fallback, jti, exp)?;
        let (k, index) = (self.key("t", jti, ""), self.key("index", "tokens", ""));
        let now = portcullis_guard::jwt::now();
        // The revocation first (it is what requests look up), then the listing's index: two
        // calls, as the keys live in different Cluster slots.
        self.call("revoke", async |mut h| {
            redis::cmd("SET")
                .arg(&k)
                .arg(exp)
                .arg("EXAT")
                .arg(exp.max(now + 1))
                .query_async::<()>(&mut h)
                .await
        })
        .await?;
        self.call("revoke", async |mut h| {
            redis::pipe()
                .cmd("ZADD")
                .arg(&index)
                .arg(exp)
                .arg(jti)
                .ignore()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&index)
                .arg("-inf")
                .arg(now)
                .ignore()
                // The index outlives its longest entry, no more: a TTL on first write, pushed
                // later by later expiries.
                .cmd("EXPIREAT")
                .arg(&index)
                .arg(exp.max(now + 1))
                .arg("NX")
                .ignore()
                .cmd("EXPIREAT")
                .arg(&index)
                .arg(exp.max(now + 1))
                .arg("GT")
                .ignore()
                .query_async::<()>(&mut h)
                .await
        })
        .await
    }

    async fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        LocalStore::revoke_subject(&self.fallback, sub, before)?;
        let (k, index) = (self.key("s", sub, ""), self.key("index", "subjects", ""));
        let inv = {
            let mut i = self.raise.prepare_invoke();
            // No expiry (`0`): a cut-off has no end, as in the other stores. A token's
            // lifetime is the issuer's to choose, and a stolen long-lived one must stay
            // refused; revoked subjects are few.
            i.key(&k).arg(before).arg(0);
            i
        };
        self.call("revoke", async |mut h| {
            inv.invoke_async::<i64>(&mut h).await
        })
        .await?;
        self.call("revoke", async |mut h| {
            redis::pipe()
                .cmd("ZADD")
                .arg(&index)
                .arg("GT")
                .arg(before)
                .arg(sub)
                .ignore()
                .cmd("PERSIST")
                .arg(&index)
                .ignore()
                .query_async::<()>(&mut h)
                .await
        })
        .await
    }

    async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        iat: Option<i64>,
    ) -> Result<bool, StoreError> {
        if LocalStore::is_revoked(&self.fallback, jti, sub, iat) {
            return Ok(true);
        }
        let keys: Vec<String> = [
            jti.map(|j| self.key("t", j, "")),
            sub.map(|s| self.key("s", s, "")),
        ]
        .into_iter()
        .flatten()
        .collect();
        match self.get_many("revocation", &keys).await {
            Ok(values) => {
                let mut values = values.into_iter();
                let token = jti.is_some() && values.next().flatten().is_some();
                let subject = sub.is_some()
                    && values
                        .next()
                        .flatten()
                        .is_some_and(|cut| iat.is_none_or(|i| i <= cut));
                Ok(token || subject)
            }
            Err(_) if self.revocations_fail_open => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        let k = self.key("u", jti, "");
        // This attempt's mark, to know it again if the reply is lost.
        let mark = format!("{:016x}", rand::random::<u64>());
        // No fallback: without the shared record, a stolen copy could be used on another
        // replica. The refresh is refused until Redis answers.
        let set = self
            .call("use_once", async |mut h| {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(&mark)
                    .arg("NX")
                    .arg("EXAT")
                    .arg(exp.max(now + 1))
                    .query_async::<Option<String>>(&mut h)
                    .await
            })
            .await;
        let tried = match set {
            Ok(Some(_)) => {
                self.unanswered().remove(jti);
                return Ok(true);
            }
            // Taken: by a thief, or by this replica's own earlier try whose reply was lost
            // (the client, refused then, is trying again).
            Ok(None) => match self.unanswered().remove(jti) {
                Some(tried) => tried,
                None => return Ok(false),
            },
            Err(e) => {
                let mut unanswered = self.unanswered();
                if unanswered.len() < MAX_UNANSWERED || unanswered.contains_key(jti) {
                    let marks = unanswered.entry(jti.to_owned()).or_default();
                    if marks.len() < 8 {
                        marks.push(mark);
                    }
                }
                return Err(e);
            }
        };
        let held = self
            .call("use_once", async |mut h| {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<String>>(&mut h)
                    .await
            })
            .await;
        match held {
            Ok(held) => Ok(held.is_some_and(|m| tried.contains(&m))),
            Err(e) => {
                // Still unknown: the marks stay for the next try.
                self.unanswered().insert(jti.to_owned(), tried);
                Err(e)
            }
        }
    }

    async fn unuse(&self, jti: &str) -> Result<(), StoreError> {
        let k = self.key("u", jti, "");
        self.call("unuse", async |mut h| {
            redis::cmd("DEL").arg(&k).query_async::<i64>(&mut h).await
        })
        .await
        .map(|_| ())
    }

    async fn revocations(&self, now: i64) -> Result<Revocations, StoreError> {
        let (tokens, subjects) = (
            self.key("index", "tokens", ""),
            self.key("index", "subjects", ""),
        );
        let read = async |index: &str, min: i64| -> Result<Vec<(String, i64)>, StoreError> {
            let list: Vec<(String, f64)> = self
                .call("revocations", async |mut h| {
                    redis::cmd("ZRANGE")
                        .arg(index)
                        .arg(format!("({min}"))
                        .arg("+inf")
                        .arg("BYSCORE")
                        .arg("WITHSCORES")
                        .query_async(&mut h)
                        .await
                })
                .await?;
            #[allow(clippy::cast_possible_truncation)]
            Ok(list.into_iter().map(|(k, v)| (k, v as i64)).collect())
        };
        let mut out = Revocations {
            tokens: read(&tokens, now).await?,
            subjects: read(&subjects, i64::MIN).await?,
        };
        out.tokens.sort();
        out.subjects.sort();
        Ok(out)
    }
}
