//! State behind one trait: revocations (by `jti` until the token's own expiry, and by subject
//! with a cut-off time), single-use refresh tokens, failure counters and holds (login
//! protection, quotas).
//!
//! [`Store`] is asynchronous, so a backend may be another process (the gateway's Redis
//! store, shared by several replicas). The in-process backends implement the synchronous
//! [`LocalStore`] and get [`Store`] from it:
//!
//! - [`MemoryStore`]: everything in the process; lost on restart.
//! - [`EmbeddedStore`]: the same in memory for the per-request checks, written through to a
//!   crash-safe redb file first (on a blocking thread), so a revocation acknowledged by the
//!   admin API survives a crash and a restart.
//!
//! Expired entries are dropped as new ones arrive, so the sets stay bounded by the tokens'
//! own lifetimes; the embedded store's file is pruned of them when it opens and every few
//! thousand writes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

/// A store failure (disk, corruption, an unreachable server); the caller fails closed.
#[derive(Debug, thiserror::Error)]
#[error("state store: {0}")]
pub struct StoreError(pub String);

/// What is revoked now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Revocations {
    /// (jti, expiry of the token)
    pub tokens: Vec<(String, i64)>,
    /// (subject, tokens issued at or before this time are revoked)
    pub subjects: Vec<(String, i64)>,
}

/// How failures of a key hold it back: from the `limit`-th failure in a window of `window`
/// seconds, for `base` seconds, doubled for each further failure, at most `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub limit: u32,
    pub window: i64,
    pub base: i64,
    pub max: i64,
}

impl Backoff {
    /// How long the `count`-th failure holds the key (0: not at all).
    pub fn hold(&self, count: u32) -> i64 {
        if count < self.limit.max(1) {
            return 0;
        }
        let over = (count - self.limit.max(1)).min(30);
        self.base
            .max(1)
            .saturating_mul(1 << over)
            .min(self.max.max(1))
    }
}

/// The state the gateway's phases share, wherever it lives. Times are seconds since the epoch.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug {
    /// Whether a shared backend is answering (`true` for one in the process): while it is not,
    /// the gateway serves from its local fallback, which readiness reports.
    fn shared_backend_up(&self) -> bool {
        true
    }

    /// Counts one failure of `key` in a window of `window` seconds; returns the count.
    async fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError>;
    /// Holds `key` back until `until` (a later hold already there stays).
    async fn block(&self, key: &str, until: i64) -> Result<(), StoreError>;
    /// Until when each key is held back (0: not), in one look.
    async fn blocked_until(&self, keys: &[&str]) -> Result<Vec<i64>, StoreError>;
    /// Forgets `key`'s failures and hold.
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
    /// Remembers `key` (a client that has logged in to an account) until `until`.
    async fn remember(&self, key: &str, until: i64) -> Result<(), StoreError>;
    async fn remembered(&self, key: &str, now: i64) -> Result<bool, StoreError>;
    /// Revokes one token until `exp`.
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError>;
    /// Revokes every token of `sub` issued at or before `before`.
    async fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError>;
    /// Whether a token with these claims is revoked.
    async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        iat: Option<i64>,
    ) -> Result<bool, StoreError>;
    /// Marks a single-use token used; `Ok(false)` when it had been used already.
    async fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError>;
    /// Gives a use taken by [`Store::use_once`] back: the request it was taken for was
    /// refused before the upstream judged it, and its retry is no theft.
    async fn unuse(&self, jti: &str) -> Result<(), StoreError>;
    async fn revocations(&self, now: i64) -> Result<Revocations, StoreError>;
    /// Counts one use of `key` in a window of `window` seconds and, at the `limit`-th use,
    /// holds it back for a window from now; returns the count. One decision: a backend
    /// shared by several processes makes it atomic.
    async fn count(&self, key: &str, now: i64, window: i64, limit: u32) -> Result<u32, StoreError> {
        let n = self.fail(key, now, window).await?;
        if n >= limit {
            self.block(key, now + window).await?;
        }
        Ok(n)
    }
    /// Gives one counted use of `key` back; below `limit` again, its hold is lifted.
    async fn release(&self, key: &str, limit: u32) -> Result<(), StoreError>;
    /// Lets one attempt on `key` through unless the key is held (`Ok(Err(until))`). An
    /// attempt let through is counted as a failure before its outcome is known, and holds the
    /// key as that failure would (`backoff`); the count is returned (`Ok(Ok(n))`) and lasts
    /// `backoff.window` past the later of the attempt and its hold. One
    /// decision, atomic: parallel attempts cannot all pass one look at the key before any of
    /// them is counted. An attempt that did not fail is settled afterwards with `clear` or
    /// `release`.
    async fn attempt(
        &self,
        key: &str,
        now: i64,
        backoff: Backoff,
    ) -> Result<Result<u32, i64>, StoreError>;
}

/// The synchronous form of [`Store`] for backends inside the process.
pub trait LocalStore: Send + Sync + fmt::Debug {
    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError>;
    fn block(&self, key: &str, until: i64) -> Result<(), StoreError>;
    fn blocked_until(&self, key: &str) -> i64;
    fn clear(&self, key: &str) -> Result<(), StoreError>;
    fn remember(&self, key: &str, until: i64) -> Result<(), StoreError>;
    fn remembered(&self, key: &str, now: i64) -> bool;
    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError>;
    fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError>;
    fn is_revoked(&self, jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> bool;
    fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError>;
    fn unuse(&self, jti: &str) -> Result<(), StoreError>;
    fn revocations(&self, now: i64) -> Revocations;
    fn release(&self, key: &str, limit: u32) -> Result<(), StoreError>;
    fn attempt(
        &self,
        key: &str,
        now: i64,
        backoff: Backoff,
    ) -> Result<Result<u32, i64>, StoreError>;
}

/// Failures of one key in its window, and until when it is held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttle {
    pub failures: u32,
    pub window_start: i64,
    pub blocked_until: i64,
    /// The counting window (seconds; 0 when unknown, as after loading from disk).
    pub window: i64,
}

/// Counters kept in memory at most (each a key and a few numbers: about 100 bytes).
const MAX_THROTTLES: usize = if cfg!(test) { 1 << 13 } else { 1 << 18 };

#[derive(Debug, Default)]
struct Sets {
    tokens: HashMap<String, i64>,
    subjects: HashMap<String, i64>,
    used: HashMap<String, i64>,
    throttles: HashMap<String, Throttle>,
    known: HashMap<String, i64>,
}

impl Sets {
    fn sweep(map: &mut HashMap<String, i64>, now: i64) {
        // Amortised: only when the map has grown.
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, exp| *exp > now);
        }
    }

    /// `key`'s counter, in its current window of `window` seconds.
    fn throttle<'s>(s: &'s mut Sets, key: &str, now: i64, window: i64) -> &'s mut Throttle {
        if s.throttles.len() >= 4096 && s.throttles.len().is_power_of_two() {
            // Each entry by its own window (a day-long quota is not swept by a login's
            // 15 minutes); entries loaded from disk, whose window is unknown, keep a month.
            let end = |t: &Throttle| {
                let w = if t.window > 0 { t.window } else { 31 * 86_400 };
                t.blocked_until.max(t.window_start.saturating_add(w))
            };
            s.throttles.retain(|_, t| end(t) > now);
            // Still past the bound, every entry live (a flood of distinct keys: random
            // account names, say): the counters that count least go, the oldest of them first,
            // down to three quarters of the bound. Holds stay, and so does a key with many
            // failures (a flood's keys have one each: evicting by age alone would let a flood
            // wipe out the count of an account guessed at earlier).
            if s.throttles.len() >= MAX_THROTTLES {
                let mut ranked: Vec<(bool, u32, i64, String)> = s
                    .throttles
                    .iter()
                    .map(|(k, t)| (t.blocked_until > now, t.failures, end(t), k.clone()))
                    .collect();
                let cut = ranked.len() - MAX_THROTTLES * 3 / 4;
                ranked.select_nth_unstable(cut);
                for (.., k) in &ranked[..cut] {
                    s.throttles.remove(k);
                }
            }
        }
        let t = s.throttles.entry(key.to_owned()).or_default();
        if t.window_start + window <= now {
            t.failures = 0;
            t.window_start = now;
        }
        t.window = window;
        t
    }
}

/// Everything in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    sets: Mutex<Sets>,
}

fn now() -> i64 {
    crate::jwt::now()
}

impl MemoryStore {
    fn with<R>(&self, f: impl FnOnce(&mut Sets) -> R) -> Result<R, StoreError> {
        self.sets
            .lock()
            .map(|mut s| f(&mut s))
            .map_err(|_| StoreError("lock poisoned".into()))
    }
}

impl LocalStore for MemoryStore {
    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        self.with(|s| {
            let t = Sets::throttle(s, key, now, window);
            t.failures = t.failures.saturating_add(1);
            t.failures
        })
    }

    fn attempt(&self, key: &str, now: i64, b: Backoff) -> Result<Result<u32, i64>, StoreError> {
        self.with(|s| {
            let t = Sets::throttle(s, key, now, b.window);
            if t.blocked_until > now {
                return Err(t.blocked_until);
            }
            // The count lasts `window` past the later of the last attempt and its hold: a
            // window counted from the first failure would end under the doubled holds (with
            // the defaults they add up to longer than it) and hand out the free tries again.
            // So the holds keep growing to their cap while the guessing goes on.
            t.window_start = now.max(t.blocked_until);
            t.failures = t.failures.saturating_add(1);
            let hold = b.hold(t.failures);
            if hold > 0 {
                t.blocked_until = t.blocked_until.max(now.saturating_add(hold));
                t.window_start = t.blocked_until;
            }
            Ok(t.failures)
        })
    }

    fn release(&self, key: &str, limit: u32) -> Result<(), StoreError> {
        self.with(|s| {
            if let Some(t) = s.throttles.get_mut(key) {
                t.failures = t.failures.saturating_sub(1);
                if t.failures < limit {
                    t.blocked_until = 0;
                }
            }
        })
    }

    fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        self.with(|s| {
            let t = s.throttles.entry(key.to_owned()).or_default();
            t.blocked_until = t.blocked_until.max(until);
        })
    }

    fn blocked_until(&self, key: &str) -> i64 {
        // A poisoned lock holds everyone back.
        self.with(|s| s.throttles.get(key).map_or(0, |t| t.blocked_until))
            .unwrap_or(i64::MAX)
    }

    fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.with(|s| {
            s.throttles.remove(key);
        })
    }

    fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        self.with(|s| {
            Sets::sweep(&mut s.known, now());
            s.known.insert(key.to_owned(), until);
        })
    }

    fn remembered(&self, key: &str, now: i64) -> bool {
        self.with(|s| s.known.get(key).is_some_and(|u| *u > now))
            .unwrap_or(false)
    }

    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.with(|s| {
            Sets::sweep(&mut s.tokens, now());
            s.tokens.insert(jti.to_owned(), exp);
        })
    }

    fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        self.with(|s| {
            let e = s.subjects.entry(sub.to_owned()).or_insert(before);
            *e = (*e).max(before);
        })
    }

    fn is_revoked(&self, jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> bool {
        // A poisoned lock fails closed.
        self.with(|s| {
            jti.is_some_and(|j| s.tokens.contains_key(j))
                || sub
                    .and_then(|u| s.subjects.get(u))
                    .is_some_and(|cut| iat.is_none_or(|i| i <= *cut))
        })
        .unwrap_or(true)
    }

    fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        self.with(|s| {
            Sets::sweep(&mut s.used, now);
            s.used.insert(jti.to_owned(), exp).is_none()
        })
    }

    fn unuse(&self, jti: &str) -> Result<(), StoreError> {
        self.with(|s| {
            s.used.remove(jti);
        })
    }

    fn revocations(&self, now: i64) -> Revocations {
        self.with(|s| {
            let mut tokens: Vec<_> = s
                .tokens
                .iter()
                .filter(|(_, e)| **e > now)
                .map(|(j, e)| (j.clone(), *e))
                .collect();
            let mut subjects: Vec<_> = s.subjects.iter().map(|(j, e)| (j.clone(), *e)).collect();
            tokens.sort();
            subjects.sort();
            Revocations { tokens, subjects }
        })
        .unwrap_or_default()
    }
}

const TOKENS: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");
const SUBJECTS: TableDefinition<&str, i64> = TableDefinition::new("revoked_subjects");
const USED: TableDefinition<&str, i64> = TableDefinition::new("used_tokens");
const THROTTLES: TableDefinition<&str, (u32, i64, i64)> = TableDefinition::new("throttles");
const KNOWN: TableDefinition<&str, i64> = TableDefinition::new("known_clients");

/// redb on disk, memory for reads.
#[derive(Clone)]
pub struct EmbeddedStore(Arc<Durable>);

/// The embedded store's synchronous core.
pub struct Durable {
    db: Database,
    memory: MemoryStore,
    /// Writes since the store opened: every [`PRUNE_EVERY`]th prunes the file.
    writes: AtomicU64,
}

/// A counter row on disk does not say its window: it is kept this long after its window's start
/// (as in memory after a reload), unless it holds a client back longer.
const THROTTLE_KEEP: i64 = 31 * 86_400;
/// Durable writes between two prunes of the rows that have expired (each prune reads every
/// row once: amortised, a few rows read per write). Fewer under test, where every write
/// waits for the disk.
const PRUNE_EVERY: u64 = if cfg!(test) { 64 } else { 4096 };

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl fmt::Debug for Durable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Durable").finish_non_exhaustive()
    }
}

fn db_err(e: impl fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/state.redb` and loads what has not expired.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Durable::open(dir).map(|d| Self(Arc::new(d)))
    }

    /// The synchronous core, for callers already on a blocking thread.
    pub fn durable(&self) -> &Durable {
        &self.0
    }
}

impl Durable {
    fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let file = dir.join("state.redb");
        let db = Database::create(&file).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError(format!(
                "{} is in use by another process (another gateway started from the same \
                 folder?): give each gateway its own `state.path`, or share state through \
                 `backend: redis`",
                file.display()
            )),
            e => StoreError(format!("{}: {e}", file.display())),
        })?;
        let w = db.begin_write().map_err(db_err)?;
        for t in [TOKENS, SUBJECTS, USED, KNOWN] {
            w.open_table(t).map_err(db_err)?;
        }
        w.open_table(THROTTLES).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        let now = now();
        let durable = Self {
            db,
            memory: MemoryStore::default(),
            writes: AtomicU64::new(0),
        };
        durable.prune(now)?;
        let Self { db, memory, .. } = &durable;
        {
            let r = db.begin_read().map_err(db_err)?;
            let load = |t: TableDefinition<&str, i64>,
                        keep_expired: bool|
             -> Result<Vec<(String, i64)>, StoreError> {
                let table = r.open_table(t).map_err(db_err)?;
                let mut out = Vec::new();
                for row in table.iter().map_err(db_err)? {
                    let (k, v) = row.map_err(db_err)?;
                    if keep_expired || v.value() > now {
                        out.push((k.value().to_owned(), v.value()));
                    }
                }
                Ok(out)
            };
            let tokens = load(TOKENS, false)?;
            let subjects = load(SUBJECTS, true)?;
            let used = load(USED, false)?;
            let known = load(KNOWN, false)?;
            let mut throttles = Vec::new();
            for row in r
                .open_table(THROTTLES)
                .map_err(db_err)?
                .iter()
                .map_err(db_err)?
            {
                let (k, v) = row.map_err(db_err)?;
                let (failures, window_start, blocked_until) = v.value();
                throttles.push((
                    k.value().to_owned(),
                    Throttle {
                        failures,
                        window_start,
                        blocked_until,
                        window: 0,
                    },
                ));
            }
            memory.with(|s| {
                s.tokens.extend(tokens);
                s.subjects.extend(subjects);
                s.used.extend(used);
                s.known.extend(known);
                s.throttles.extend(throttles);
            })?;
        }
        Ok(durable)
    }

    /// Deletes the rows that have expired: revoked and used tokens past their expiry, clients
    /// remembered until a time now past, counters that neither hold a client back nor count
    /// any more. Revoked subjects stay (a cut-off has no end). Memory forgets the same entries
    /// on its own (`Sets::sweep`); without this the file would keep every token, client and
    /// counter it ever saw.
    fn prune(&self, now: i64) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        for t in [TOKENS, USED, KNOWN] {
            w.open_table(t)
                .map_err(db_err)?
                .retain(|_, until| until > now)
                .map_err(db_err)?;
        }
        w.open_table(THROTTLES)
            .map_err(db_err)?
            .retain(|_, (_, window_start, blocked_until)| {
                blocked_until > now || window_start.saturating_add(THROTTLE_KEEP) > now
            })
            .map_err(db_err)?;
        w.commit().map_err(db_err)
    }

    /// Counts a durable write, pruning the file every [`PRUNE_EVERY`] writes. A prune that
    /// fails is logged and tried again at the next turn: the write itself went through.
    fn wrote(&self) {
        if self.writes.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1
            && let Err(e) = self.prune(now())
        {
            tracing::warn!(target: "portcullis::store", error = %e.0, "expired rows could not be pruned from the embedded store");
        }
    }

    fn write(
        &self,
        table: TableDefinition<&str, i64>,
        key: &str,
        value: i64,
    ) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(table).map_err(db_err)?;
            let keep = t.get(key).map_err(db_err)?.map(|v| v.value());
            t.insert(key, keep.map_or(value, |k| k.max(value)))
                .map_err(db_err)?;
        }
        // Durable before the caller is told: a crash after this returns loses nothing.
        w.commit().map_err(db_err)?;
        self.wrote();
        Ok(())
    }
}

impl Durable {
    /// Writes `key`'s counter as memory holds it now. Read inside the write transaction
    /// (redb runs one at a time), so of two parallel changes the one committed last writes
    /// the state after both, whichever order their transactions took.
    fn write_throttle(&self, key: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = w.open_table(THROTTLES).map_err(db_err)?;
            let t = self.memory.with(|s| s.throttles.get(key).copied())?;
            match t {
                Some(t) => table
                    .insert(key, (t.failures, t.window_start, t.blocked_until))
                    .map(|_| ()),
                None => table.remove(key).map(|_| ()),
            }
            .map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        self.wrote();
        Ok(())
    }
}

impl LocalStore for Durable {
    fn release(&self, key: &str, limit: u32) -> Result<(), StoreError> {
        LocalStore::release(&self.memory, key, limit)?;
        self.write_throttle(key)
    }

    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        let n = LocalStore::fail(&self.memory, key, now, window)?;
        self.write_throttle(key)?;
        Ok(n)
    }

    fn attempt(&self, key: &str, now: i64, b: Backoff) -> Result<Result<u32, i64>, StoreError> {
        let a = LocalStore::attempt(&self.memory, key, now, b)?;
        if a.is_ok() {
            self.write_throttle(key)?;
        }
        Ok(a)
    }

    fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        LocalStore::block(&self.memory, key, until)?;
        self.write_throttle(key)
    }

    fn blocked_until(&self, key: &str) -> i64 {
        LocalStore::blocked_until(&self.memory, key)
    }

    fn clear(&self, key: &str) -> Result<(), StoreError> {
        LocalStore::clear(&self.memory, key)?;
        self.write_throttle(key)
    }

    fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        self.write(KNOWN, key, until)?;
        LocalStore::remember(&self.memory, key, until)
    }

    fn remembered(&self, key: &str, now: i64) -> bool {
        LocalStore::remembered(&self.memory, key, now)
    }

    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.write(TOKENS, jti, exp)?;
        LocalStore::revoke_token(&self.memory, jti, exp)
    }

    fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        self.write(SUBJECTS, sub, before)?;
        LocalStore::revoke_subject(&self.memory, sub, before)
    }

    fn is_revoked(&self, jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> bool {
        LocalStore::is_revoked(&self.memory, jti, sub, iat)
    }

    fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        if !LocalStore::use_once(&self.memory, jti, exp, now)? {
            return Ok(false);
        }
        if let Err(e) = self.write(USED, jti, exp) {
            // Not on disk: the use goes back, or the client's retry would be taken for a
            // theft (and revoke every token of the user).
            LocalStore::unuse(&self.memory, jti)?;
            return Err(e);
        }
        Ok(true)
    }

    fn unuse(&self, jti: &str) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = w.open_table(USED).map_err(db_err)?;
            t.remove(jti).map_err(db_err)?;
        }
        w.commit().map_err(db_err)?;
        LocalStore::unuse(&self.memory, jti)
    }

    fn revocations(&self, now: i64) -> Revocations {
        LocalStore::revocations(&self.memory, now)
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn release(&self, key: &str, limit: u32) -> Result<(), StoreError> {
        LocalStore::release(self, key, limit)
    }
    async fn attempt(
        &self,
        key: &str,
        now: i64,
        b: Backoff,
    ) -> Result<Result<u32, i64>, StoreError> {
        LocalStore::attempt(self, key, now, b)
    }
    async fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        LocalStore::fail(self, key, now, window)
    }
    async fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        LocalStore::block(self, key, until)
    }
    async fn blocked_until(&self, keys: &[&str]) -> Result<Vec<i64>, StoreError> {
        Ok(keys
            .iter()
            .map(|k| LocalStore::blocked_until(self, k))
            .collect())
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        LocalStore::clear(self, key)
    }
    async fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        LocalStore::remember(self, key, until)
    }
    async fn remembered(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        Ok(LocalStore::remembered(self, key, now))
    }
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        LocalStore::revoke_token(self, jti, exp)
    }
    async fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        LocalStore::revoke_subject(self, sub, before)
    }
    async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        iat: Option<i64>,
    ) -> Result<bool, StoreError> {
        Ok(LocalStore::is_revoked(self, jti, sub, iat))
    }
    async fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        LocalStore::use_once(self, jti, exp, now)
    }
    async fn unuse(&self, jti: &str) -> Result<(), StoreError> {
        LocalStore::unuse(self, jti)
    }
    async fn revocations(&self, now: i64) -> Result<Revocations, StoreError> {
        Ok(LocalStore::revocations(self, now))
    }
}

impl EmbeddedStore {
    /// Runs a write on a blocking thread: redb commits wait for the disk.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Durable) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let d = self.0.clone();
        tokio::task::spawn_blocking(move || f(&d))
            .await
            .map_err(|e| StoreError(format!("write task: {e}")))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn release(&self, key: &str, limit: u32) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.release(&key, limit)).await
    }
    async fn attempt(
        &self,
        key: &str,
        now: i64,
        b: Backoff,
    ) -> Result<Result<u32, i64>, StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.attempt(&key, now, b)).await
    }
    async fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.fail(&key, now, window)).await
    }
    async fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.block(&key, until)).await
    }
    async fn blocked_until(&self, keys: &[&str]) -> Result<Vec<i64>, StoreError> {
        Ok(keys.iter().map(|k| self.0.blocked_until(k)).collect())
    }
    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.clear(&key)).await
    }
    async fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        let key = key.to_owned();
        self.write(move |d| d.remember(&key, until)).await
    }
    async fn remembered(&self, key: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self.0.remembered(key, now))
    }
    async fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.write(move |d| d.revoke_token(&jti, exp)).await
    }
    async fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        let sub = sub.to_owned();
        self.write(move |d| d.revoke_subject(&sub, before)).await
    }
    async fn is_revoked(
        &self,
        jti: Option<&str>,
        sub: Option<&str>,
        iat: Option<i64>,
    ) -> Result<bool, StoreError> {
        Ok(self.0.is_revoked(jti, sub, iat))
    }
    async fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        let jti = jti.to_owned();
        self.write(move |d| d.use_once(&jti, exp, now)).await
    }
    async fn unuse(&self, jti: &str) -> Result<(), StoreError> {
        let jti = jti.to_owned();
        self.write(move |d| d.unuse(&jti)).await
    }
    async fn revocations(&self, now: i64) -> Result<Revocations, StoreError> {
        Ok(self.0.revocations(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn LocalStore) {
        let now = now();
        assert!(!store.is_revoked(Some("a"), Some("u1"), Some(now)));
        store.revoke_token("a", now + 60).expect("write");
        assert!(store.is_revoked(Some("a"), Some("u1"), Some(now)));
        store.revoke_subject("u2", now).expect("write");
        assert!(
            store.is_revoked(Some("b"), Some("u2"), Some(now - 10)),
            "issued before the cut-off"
        );
        assert!(
            store.is_revoked(Some("b"), Some("u2"), Some(now)),
            "issued in the same second"
        );
        assert!(
            store.is_revoked(Some("b"), Some("u2"), None),
            "no iat: cannot prove it is newer"
        );
        assert!(
            !store.is_revoked(Some("b"), Some("u2"), Some(now + 1)),
            "issued after"
        );
        assert!(store.use_once("r1", now + 60, now).expect("write"));
        assert!(!store.use_once("r1", now + 60, now).expect("write"));
        assert_eq!(store.fail("k", now, 60).expect("write"), 1);
        assert_eq!(store.fail("k", now, 60).expect("write"), 2);
        assert_eq!(
            store.fail("k", now + 61, 60).expect("write"),
            1,
            "a new window"
        );
        store.block("k", now + 30).expect("write");
        assert_eq!(store.blocked_until("k"), now + 30);
        // Attempts: counted before their outcome, held from the limit on, refused while held.
        let b = Backoff {
            limit: 2,
            window: 60,
            base: 5,
            max: 60,
        };
        assert_eq!(store.attempt("t", now, b).expect("write"), Ok(1));
        assert_eq!(store.blocked_until("t"), 0, "under the limit: no hold");
        assert_eq!(store.attempt("t", now, b).expect("write"), Ok(2));
        assert_eq!(store.blocked_until("t"), now + 5, "held as a failure would");
        assert_eq!(
            store.attempt("t", now + 1, b).expect("write"),
            Err(now + 5),
            "refused, not counted"
        );
        store.release("t", b.limit).expect("write");
        assert_eq!(store.blocked_until("t"), 0, "given back: below the limit");
        assert_eq!(store.attempt("t", now + 2, b).expect("write"), Ok(2));
        assert_eq!(
            store.attempt("t", now + 7, b).expect("write"),
            Ok(3),
            "after the hold, one more: held twice as long"
        );
        assert_eq!(store.blocked_until("t"), now + 17);
        store.remember("known|a|ip", now + 60).expect("write");
        assert!(store.remembered("known|a|ip", now));
        let list = store.revocations(now);
        assert_eq!(list.tokens, vec![("a".to_owned(), now + 60)]);
        assert_eq!(list.subjects, vec![("u2".to_owned(), now)]);
    }

    #[test]
    fn backoff_doubles_from_the_limit_to_the_cap() {
        let b = Backoff {
            limit: 3,
            window: 900,
            base: 2,
            max: 60,
        };
        assert_eq!(
            [1, 2, 3, 4, 5, 6, 13, 99].map(|n| b.hold(n)),
            [0, 0, 2, 4, 8, 16, 60, 60]
        );
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_bounded_and_the_guessed_key_stays() {
        let memory = MemoryStore::default();
        let store: &dyn LocalStore = &memory;
        let now = now();
        let b = Backoff {
            limit: 1_000_000,
            window: 900,
            base: 1,
            max: 60,
        };
        store.block("held", now + 600).expect("write");
        // The account guessed at first, then a flood of one-off keys no newer than it (its
        // name sorts before theirs: no tie goes its way by chance).
        for _ in 0..5 {
            assert!(store.attempt("acct-victim", now, b).expect("write").is_ok());
        }
        for i in 0..MAX_THROTTLES * 3 {
            store.fail(&format!("random-{i}"), now, 900).expect("write");
        }
        let kept = memory.with(|s| s.throttles.len()).expect("lock");
        assert!(kept <= MAX_THROTTLES, "{kept} counters");
        assert!(store.blocked_until("held") > now);
        let victim = memory
            .with(|s| s.throttles.get("acct-victim").copied())
            .expect("lock");
        assert!(victim.is_some_and(|t| t.failures == 5), "{victim:?}");
    }

    #[test]
    fn parallel_changes_reach_the_disk_in_full() {
        let dir = std::env::temp_dir().join(format!("portcullis-order-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = now();
        let s = EmbeddedStore::open(&dir).expect("open");
        let d = s.durable();
        let on_disk = || {
            let r = d.db.begin_read().expect("read");
            let t = r.open_table(THROTTLES).expect("table");
            t.get("p").expect("get").map_or(0, |v| v.value().0)
        };
        // Two failures at once, again and again: the disk has every one. (The order the two
        // transactions take is not forced here: the window where it mattered, between a
        // change in memory and its transaction starting, was too narrow to hit.)
        let together = std::sync::Barrier::new(2);
        for round in 1..=200u32 {
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    scope.spawn(|| {
                        together.wait();
                        d.fail("p", now, 3600).expect("write");
                    });
                }
            });
            assert_eq!(on_disk(), 2 * round, "round {round}");
        }
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The rows of one table in the file.
    fn rows(d: &Durable, t: TableDefinition<&str, i64>) -> u64 {
        use redb::ReadableTableMetadata as _;
        let r = d.db.begin_read().expect("read");
        r.open_table(t).expect("table").len().expect("len")
    }

    #[test]
    fn expired_rows_leave_the_file() {
        let dir = std::env::temp_dir().join(format!("portcullis-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = now();
        let month = THROTTLE_KEEP;
        {
            let s = EmbeddedStore::open(&dir).expect("open");
            let d = s.durable();
            // Fewer writes than a prune's turn: all of them are still in the file here.
            for i in 0..10 {
                d.revoke_token(&format!("old{i}"), now - 1).expect("write");
                d.use_once(&format!("used{i}"), now - 1, now - 100)
                    .expect("write");
                d.remember(&format!("known{i}"), now - 1).expect("write");
                d.fail(&format!("stale{i}"), now - month - 10, 60)
                    .expect("write");
            }
            d.revoke_token("live", now + 600).expect("write");
            d.use_once("used-live", now + 600, now).expect("write");
            d.remember("known-live", now + 600).expect("write");
            d.fail("counting", now - 30, 3600).expect("write");
            d.block("held", now + 600).expect("write");
            d.revoke_subject("u1", now - month * 2).expect("write");
            assert_eq!(rows(d, TOKENS), 11);
            assert_eq!(rows(d, USED), 11);
            assert_eq!(rows(d, KNOWN), 11);
        }
        // Reopened: only what still counts is left, in the file and in memory.
        let s = EmbeddedStore::open(&dir).expect("reopen");
        let d = s.durable();
        assert_eq!(rows(d, TOKENS), 1);
        assert_eq!(rows(d, USED), 1);
        assert_eq!(rows(d, KNOWN), 1);
        assert_eq!(rows(d, SUBJECTS), 1, "a subject's cut-off has no end");
        let throttles = {
            let r = d.db.begin_read().expect("read");
            let t = r.open_table(THROTTLES).expect("table");
            let mut keys: Vec<String> = t
                .iter()
                .expect("iter")
                .map(|row| row.expect("row").0.value().to_owned())
                .collect();
            keys.sort();
            keys
        };
        assert_eq!(throttles, ["counting", "held"]);
        assert!(d.is_revoked(Some("live"), None, Some(now)));
        assert!(!d.use_once("used-live", now + 600, now).expect("write"));
        assert!(d.blocked_until("held") > now);
        // And while it runs: every `PRUNE_EVERY` writes.
        for i in 0..PRUNE_EVERY {
            d.revoke_token(&format!("brief{i}"), now - 1)
                .expect("write");
        }
        assert!(rows(d, TOKENS) < PRUNE_EVERY, "pruned while running");
        assert!(d.is_revoked(Some("live"), None, Some(now)));
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn embedded_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("portcullis-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = EmbeddedStore::open(&dir).expect("open");
            exercise(s.durable());
        }
        let s = EmbeddedStore::open(&dir).expect("reopen");
        let s = s.durable();
        let now = now();
        assert!(s.is_revoked(Some("a"), None, Some(now)));
        assert!(s.is_revoked(None, Some("u2"), Some(now - 1)));
        assert!(
            !s.use_once("r1", now + 60, now).expect("write"),
            "the refresh token stays used"
        );
        assert!(s.blocked_until("t") > now, "an attempt's hold stays");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Two gateways on one folder: the second is told which file and what to do, not redb's
    /// bare "Database already open".
    #[test]
    fn a_store_in_use_is_named_with_the_way_out() {
        let dir = std::env::temp_dir().join(format!("portcullis-busy-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = EmbeddedStore::open(&dir).expect("open");
        let Err(e) = EmbeddedStore::open(&dir) else {
            panic!("the same file opened twice");
        };
        let msg = e.to_string();
        assert!(
            msg.contains(&dir.join("state.redb").display().to_string())
                && msg.contains("in use by another process")
                && msg.contains("state.path"),
            "{msg}"
        );
        drop(first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
