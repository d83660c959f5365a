//! State behind one trait: revocations (by `jti` until the token's own expiry, and by subject
//! with a cut-off time) and single-use refresh tokens.
//!
//! - [`MemoryStore`]: everything in the process; lost on restart.
//! - [`EmbeddedStore`]: the same in memory for the per-request checks, written through to a
//!   crash-safe redb file first, so a revocation acknowledged by the admin API survives a crash
//!   and a restart.
//!
//! Checks are synchronous memory lookups; writes may block on disk and belong on a blocking
//! thread. Expired entries are dropped as new ones arrive, so the sets stay bounded by the
//! tokens' own lifetimes.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;

/// A store failure (disk, corruption); the caller fails closed.
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

pub trait Store: Send + Sync + fmt::Debug {
    /// Counts one failure of `key` in a window of `window` seconds; returns the count.
    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError>;
    /// Holds `key` back until `until`.
    fn block(&self, key: &str, until: i64) -> Result<(), StoreError>;
    /// Until when `key` is held back (0: not).
    fn blocked_until(&self, key: &str) -> i64;
    /// Forgets `key`'s failures and block.
    fn clear(&self, key: &str) -> Result<(), StoreError>;
    /// Remembers `key` (a client that has logged in to an account) until `until`.
    fn remember(&self, key: &str, until: i64) -> Result<(), StoreError>;
    fn remembered(&self, key: &str, now: i64) -> bool;
    /// Revokes one token until `exp` (seconds since the epoch).
    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError>;
    /// Revokes every token of `sub` issued at or before `before`.
    fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError>;
    /// Whether a token with these claims is revoked.
    fn is_revoked(&self, jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> bool;
    /// Marks a single-use token used; `Ok(false)` when it had been used already.
    fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError>;
    fn revocations(&self, now: i64) -> Revocations;
}

/// Failures of one key in its window, and until when it is held back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throttle {
    pub failures: u32,
    pub window_start: i64,
    pub blocked_until: i64,
}

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

impl MemoryStore {
    fn fail_in(&self, key: &str, now: i64, window: i64) -> Result<Throttle, StoreError> {
        self.with(|s| {
            if s.throttles.len() >= 4096 && s.throttles.len().is_power_of_two() {
                s.throttles
                    .retain(|_, t| t.blocked_until > now || t.window_start + window > now);
            }
            let t = s.throttles.entry(key.to_owned()).or_default();
            if t.window_start + window <= now {
                t.failures = 0;
                t.window_start = now;
            }
            t.failures = t.failures.saturating_add(1);
            *t
        })
    }

    fn throttle(&self, key: &str) -> Throttle {
        self.with(|s| s.throttles.get(key).copied().unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Store for MemoryStore {
    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        self.fail_in(key, now, window).map(|t| t.failures)
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
pub struct EmbeddedStore {
    db: Database,
    memory: MemoryStore,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

fn db_err(e: impl fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

impl EmbeddedStore {
    /// Opens (or creates) `dir/state.redb` and loads what has not expired.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError(format!("cannot create {}: {e}", dir.display())))?;
        let db = Database::create(dir.join("state.redb")).map_err(db_err)?;
        let w = db.begin_write().map_err(db_err)?;
        for t in [TOKENS, SUBJECTS, USED, KNOWN] {
            w.open_table(t).map_err(db_err)?;
        }
        w.open_table(THROTTLES).map_err(db_err)?;
        w.commit().map_err(db_err)?;
        let memory = MemoryStore::default();
        let now = now();
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
        Ok(Self { db, memory })
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
        w.commit().map_err(db_err)
    }
}

impl EmbeddedStore {
    fn write_throttle(&self, key: &str, t: Option<Throttle>) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(db_err)?;
        {
            let mut table = w.open_table(THROTTLES).map_err(db_err)?;
            match t {
                Some(t) => table
                    .insert(key, (t.failures, t.window_start, t.blocked_until))
                    .map(|_| ()),
                None => table.remove(key).map(|_| ()),
            }
            .map_err(db_err)?;
        }
        w.commit().map_err(db_err)
    }
}

impl Store for EmbeddedStore {
    fn fail(&self, key: &str, now: i64, window: i64) -> Result<u32, StoreError> {
        let t = self.memory.fail_in(key, now, window)?;
        self.write_throttle(key, Some(t))?;
        Ok(t.failures)
    }

    fn block(&self, key: &str, until: i64) -> Result<(), StoreError> {
        self.memory.block(key, until)?;
        self.write_throttle(key, Some(self.memory.throttle(key)))
    }

    fn blocked_until(&self, key: &str) -> i64 {
        self.memory.blocked_until(key)
    }

    fn clear(&self, key: &str) -> Result<(), StoreError> {
        self.memory.clear(key)?;
        self.write_throttle(key, None)
    }

    fn remember(&self, key: &str, until: i64) -> Result<(), StoreError> {
        self.write(KNOWN, key, until)?;
        self.memory.remember(key, until)
    }

    fn remembered(&self, key: &str, now: i64) -> bool {
        self.memory.remembered(key, now)
    }

    fn revoke_token(&self, jti: &str, exp: i64) -> Result<(), StoreError> {
        self.write(TOKENS, jti, exp)?;
        self.memory.revoke_token(jti, exp)
    }

    fn revoke_subject(&self, sub: &str, before: i64) -> Result<(), StoreError> {
        self.write(SUBJECTS, sub, before)?;
        self.memory.revoke_subject(sub, before)
    }

    fn is_revoked(&self, jti: Option<&str>, sub: Option<&str>, iat: Option<i64>) -> bool {
        self.memory.is_revoked(jti, sub, iat)
    }

    fn use_once(&self, jti: &str, exp: i64, now: i64) -> Result<bool, StoreError> {
        if !self.memory.use_once(jti, exp, now)? {
            return Ok(false);
        }
        self.write(USED, jti, exp)?;
        Ok(true)
    }

    fn revocations(&self, now: i64) -> Revocations {
        self.memory.revocations(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: &dyn Store) {
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
        store.remember("known|a|ip", now + 60).expect("write");
        assert!(store.remembered("known|a|ip", now));
        let list = store.revocations(now);
        assert_eq!(list.tokens, vec![("a".to_owned(), now + 60)]);
        assert_eq!(list.subjects, vec![("u2".to_owned(), now)]);
    }

    #[test]
    fn memory_store() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn embedded_store_survives_reopening() {
        let dir = std::env::temp_dir().join(format!("portcullis-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = EmbeddedStore::open(&dir).expect("open");
            exercise(&s);
        }
        let s = EmbeddedStore::open(&dir).expect("reopen");
        let now = now();
        assert!(s.is_revoked(Some("a"), None, Some(now)));
        assert!(s.is_revoked(None, Some("u2"), Some(now - 1)));
        assert!(
            !s.use_once("r1", now + 60, now).expect("write"),
            "the refresh token stays used"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
