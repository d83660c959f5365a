//! The state every handler shares.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::auth::{Keys, RsaKeys};
use crate::config::{Rate, ShopConfig, Vuln, WEAK_JWT_SECRET};
use crate::db::Db;
use crate::error::ApiError;
use crate::ssrf::AvatarFetcher;

/// Cheap to clone: one `Arc`.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Inner>);

#[derive(Debug)]
pub struct Inner {
    pub config: ShopConfig,
    pub db: Db,
    pub keys: Keys,
    /// A real Argon2id hash of a random password, verified against for unknown accounts so that
    /// a login for a missing account takes as long as one for an existing account.
    pub dummy_hash: String,
    pub limits: Limits,
    pub avatar: AvatarFetcher,
    /// The OpenAPI description, rendered as JSON once.
    pub spec_json: String,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Keyed GCRA limiters by client address.
#[derive(Debug)]
pub struct Limits {
    pub all: DefaultKeyedRateLimiter<IpAddr>,
    pub login: DefaultKeyedRateLimiter<IpAddr>,
}

fn quota(rate: Rate) -> Quota {
    let per_minute = NonZeroU32::new(rate.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(rate.burst).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(per_minute).allow_burst(burst)
}

impl Limits {
    fn new(config: &ShopConfig) -> Self {
        Self {
            all: RateLimiter::keyed(quota(config.rate_limit)),
            login: RateLimiter::keyed(quota(config.login_rate)),
        }
    }

    /// Forgets idle keys, so a flood of distinct addresses cannot grow memory without bound.
    pub fn sweep(&self) {
        self.all.retain_recent();
        self.login.retain_recent();
    }

    /// `Err(seconds to wait)` when `ip` is over `limiter`'s rate.
    pub fn check(limiter: &DefaultKeyedRateLimiter<IpAddr>, ip: IpAddr) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        limiter.check_key(&ip).map_err(|not_until| {
            not_until
                .wait_time_from(DefaultClock::default().now())
                .as_secs()
                + 1
        })
    }
}

/// Why the shop could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("cannot hash the administrator password: {0}")]
    Hash(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("cannot render the OpenAPI description: {0}")]
    Spec(String),
    #[error("cannot build the token key: {0}")]
    Key(String),
    #[error("the administrator password must have at least 12 characters")]
    WeakAdminPassword,
}

impl AppState {
    pub async fn new(config: ShopConfig) -> Result<Self, StartError> {
        if config.admin_password.chars().count() < 12 {
            return Err(StartError::WeakAdminPassword);
        }
        let kid_table = config.vulns.has(Vuln::JwtKidInjection);
        let secret = match (&config.jwt_secret, config.vulns.has(Vuln::JwtWeakSecret)) {
            (_, true) => WEAK_JWT_SECRET.as_bytes().to_vec(),
            (Some(s), false) => s.clone(),
            // The key table stores text.
            (None, false) if kid_table => hex(&random_bytes(32)).into_bytes(),
            (None, false) => random_bytes(32),
        };
        let admin_hash = crate::auth::hash_password(config.admin_password.clone())
            .await
            .map_err(|e| StartError::Hash(e.to_string()))?;
        let dummy_hash = crate::auth::hash_password(hex(&random_bytes(16)))
            .await
            .map_err(|e| StartError::Hash(e.to_string()))?;
        let db = {
            let (path, email) = (config.db_path.clone(), config.admin_email.clone());
            tokio::task::spawn_blocking(move || {
                Db::open(path.as_deref(), (&email, "Administrator", &admin_hash))
            })
            .await
            .map_err(|e| StartError::Hash(e.to_string()))??
        };
        let rsa = if config.jwt_rsa_key() {
            let rsa = tokio::task::spawn_blocking(RsaKeys::generate)
                .await
                .map_err(|e| StartError::Key(e.to_string()))?
                .map_err(StartError::Key)?;
            Some(rsa)
        } else {
            None
        };
        let keys = Keys::new(&secret, rsa, config.jwt_rsa_signing(), kid_table)
            .map_err(|e| StartError::Key(e.to_string()))?;
        if kid_table {
            let stored = String::from_utf8_lossy(keys.hmac_secret()).into_owned();
            db.call(move |c| {
                const SQL: &str = "INSERT OR REPLACE INTO jwt_keys (kid, secret) VALUES (?1, ?2)";
                c.execute(SQL, [crate::auth::HMAC_KID, stored.as_str()])
                    .map_err(|e| ApiError::db(SQL, &e))
            })
            .await
            .map_err(|e| StartError::Key(e.to_string()))?;
        }
        let avatar = AvatarFetcher::new(&config).map_err(|e| StartError::Client(e.to_string()))?;
        let spec_json = crate::spec::json().map_err(StartError::Spec)?;
        Ok(Self(Arc::new(Inner {
            limits: Limits::new(&config),
            keys,
            config,
            db,
            dummy_hash,
            avatar,
            spec_json,
        })))
    }
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    buf
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How often idle rate-limit keys are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);
