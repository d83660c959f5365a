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

#[derive(Debug, Default)]
struct Sets {
    tokens: HashMap<String, i64>,
    subjects: HashMap<String, i64>,
    used: HashMap<String, i64>,
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

impl Store for MemoryStore {
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
        for t in [TOKENS, SUBJECTS, USED] {
            w.open_table(t).map_err(db_err)?;
        }
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
            memory.with(|s| {
                s.tokens.extend(tokens);
                s.subjects.extend(subjects);
                s.used.extend(used);
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

impl Store for EmbeddedStore {
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
