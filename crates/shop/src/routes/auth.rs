//! Registration, login, token refresh and logout.
//!
//! Login in the secure default: a per-address rate limit, a per-account failure counter with a
//! lockout (unknown accounts are counted too, so the lockout does not reveal which exist), a
//! dummy hash for unknown accounts and one answer for every failure. `login-no-limit` removes
//! all of it and tells the caller which part was wrong.
//!
//! An attempt is counted against the account before its password is checked, in one
//! statement with the look at the lockout, and forgotten if it succeeds: parallel guesses
//! cannot all pass the look before the first is counted. `login-race` looks first and counts
//! failures after the (slow) password check, as a lockout written the obvious way does.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::json;

use crate::auth::{self, AuthUser, hash_password, issue_pair, verify_password};
use crate::config::Vuln;
use crate::db::{new_id, now};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, RawJson, parse_json};
use crate::routes::{matches_filter, plain_text};
use crate::state::{AppState, Limits};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    email: String,
    password: String,
    name: String,
}

/// What `mass-assignment` lets a client send on registration.
#[derive(Debug, Deserialize)]
pub struct RegisterOpen {
    email: String,
    password: String,
    name: String,
    role: Option<String>,
    balance_cents: Option<i64>,
}

pub(crate) fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    (3..=254).contains(&email.len())
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !email.contains(|c: char| c.is_whitespace() || c.is_control() || "<>\"'".contains(c))
}

/// NIST SP 800-63B: length over composition, and no password from the top of the lists.
fn check_password(password: &str) -> ApiResult<()> {
    const COMMON: &[&str] = &[
        "password",
        "password1",
        "password123",
        "12345678",
        "123456789",
        "1234567890",
        "qwertyuiop",
        "qwerty123",
        "iloveyou",
        "letmein123",
        "admin123",
        "welcome123",
    ];
    let n = password.chars().count();
    if !(8..=128).contains(&n) {
        return Err(ApiError::unprocessable(
            "`password` must have 8 to 128 characters",
        ));
    }
    if COMMON.contains(&password.to_lowercase().as_str()) {
        return Err(ApiError::unprocessable("`password` is too common"));
    }
    Ok(())
}

pub async fn register(
    State(state): State<AppState>,
    RawJson(body): RawJson,
) -> ApiResult<impl IntoResponse> {
    let open = state.config.vulns.has(Vuln::MassAssignment);
    let req: RegisterOpen = if open {
        parse_json::<RegisterOpen>(&body)?
    } else {
        let r = parse_json::<Register>(&body)?;
        RegisterOpen {
            email: r.email,
            password: r.password,
            name: r.name,
            role: None,
            balance_cents: None,
        }
    };
    let email = normalise_email(&req.email);
    if !valid_email(&email) {
        return Err(ApiError::unprocessable("`email` is not a valid address"));
    }
    check_password(&req.password)?;
    plain_text("name", &req.name, 100)?;
    let hash = hash_password(req.password).await?;
    let id = new_id("usr");
    let role = req.role.unwrap_or_else(|| "customer".into());
    let balance = req.balance_cents.unwrap_or(0);
    let (uid, mail, name) = (id.clone(), email.clone(), req.name.clone());
    let created = state
        .db
        .call(move |c| {
            const SQL: &str = "INSERT OR IGNORE INTO users (id, email, password_hash, name, role, balance_cents, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
            c.execute(SQL, rusqlite::params![uid, mail, hash, name, role, balance, now()])
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    if created == 0 {
        return Err(ApiError::conflict(
            "an account could not be created with these details",
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "email": email, "name": req.name })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawJson(body): RawJson,
) -> ApiResult<axum::response::Response> {
    if state.config.vulns.has(Vuln::Nosqli)
        && let Ok(filter) = serde_json::from_slice::<serde_json::Value>(&body)
        && ["email", "password"]
            .iter()
            .any(|k| filter.get(k).is_some_and(serde_json::Value::is_object))
    {
        return operator_login(&state, filter).await;
    }
    let Login { email, password } = parse_json::<Login>(&body)?;
    let ip = peer.ip();
    let limited = !state.config.vulns.has(Vuln::LoginNoLimit);
    if limited {
        Limits::check(&state.limits.login, ip).map_err(ApiError::too_many)?;
    }
    let account = normalise_email(&email);
    if account.len() > 254 || password.len() > 1024 {
        return Err(ApiError::unprocessable("`email` or `password` is too long"));
    }
    // Counted as a failure from here until the password is seen to be right (`login-race`
    // only looks, and counts a failure once the password was checked).
    let racy = state.config.vulns.has(Vuln::LoginRace);
    if limited {
        let wait = if racy {
            locked_for(&state, &account).await?
        } else {
            count_attempt(&state, account.clone()).await?
        };
        if let Some(wait) = wait {
            return Err(ApiError::too_many(wait));
        }
    }
    let lookup = account.clone();
    let user: Option<(String, String, String)> = state
        .db
        .call(move |c| {
            const SQL: &str = "SELECT id, password_hash, role FROM users WHERE email = ?1";
            c.query_row(SQL, [lookup], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    let known = user.is_some();
    let ok = verify_password(
        password,
        user.as_ref().map(|u| u.1.clone()),
        state.dummy_hash.clone(),
    )
    .await;
    let Some((id, _, role)) = user.filter(|_| ok) else {
        if !limited {
            return Err(if known {
                ApiError::unauthorized()
                    .with_internal("wrong password")
                    .with_detail("wrong password for this account")
            } else {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "Not Found",
                    "no account with this email",
                )
            });
        }
        if racy {
            record_failure(&state, account).await?;
        }
        return Err(ApiError::unauthorized().with_detail("invalid email or password"));
    };
    if limited {
        let (acc, ipaddr) = (account, ip.to_string());
        let uid = id.clone();
        state
            .db
            .call(move |c| {
                const SQL: &str = "DELETE FROM login_failures WHERE account = ?1";
                c.execute(SQL, [acc]).map_err(|e| ApiError::db(SQL, &e))?;
                const SQL2: &str = "UPDATE users SET last_login_ip = ?1 WHERE id = ?2";
                c.execute(SQL2, [ipaddr, uid])
                    .map_err(|e| ApiError::db(SQL2, &e))
            })
            .await?;
    }
    let family = new_id("fam");
    Ok(Json(issue_pair(&state, &id, &role, &family).await?).into_response())
}

/// The `nosqli` weakness: a login body with an operator object (`{"$ne": null}`) is handed
/// to a document-store style matcher, as a MongoDB `findOne(body)` would be: the password
/// hash is compared with the operator instead of the password being verified.
async fn operator_login(
    state: &AppState,
    filter: serde_json::Value,
) -> ApiResult<axum::response::Response> {
    let users: Vec<(String, String, String, String)> = state
        .db
        .call(|c| {
            const SQL: &str =
                "SELECT id, email, password_hash, role FROM users ORDER BY created_at";
            let mut stmt = c.prepare(SQL).map_err(|e| ApiError::db(SQL, &e))?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    for (id, email, hash, role) in users {
        let email_ok = filter
            .get("email")
            .is_some_and(|f| matches_filter(f, &email));
        let password = filter.get("password");
        let password_ok = match password {
            Some(serde_json::Value::String(p)) => {
                verify_password(p.clone(), Some(hash), state.dummy_hash.clone()).await
            }
            Some(f) => matches_filter(f, &hash),
            None => false,
        };
        if email_ok && password_ok {
            let family = new_id("fam");
            return Ok(Json(issue_pair(state, &id, &role, &family).await?).into_response());
        }
    }
    Err(ApiError::unauthorized().with_detail("invalid email or password"))
}

/// Seconds left on an account's lockout, if it is locked.
async fn locked_for(state: &AppState, account: &str) -> ApiResult<Option<u64>> {
    let account = account.to_owned();
    let until: Option<i64> = state
        .db
        .call(move |c| {
            const SQL: &str = "SELECT locked_until FROM login_failures WHERE account = ?1";
            c.query_row(SQL, [account], |r| r.get(0))
                .optional()
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    let now = now();
    Ok(until.filter(|&u| u > now).map(|u| (u - now) as u64))
}

/// Counts a failure in the account's window; the `max`-th failure locks the account.
async fn record_failure(state: &AppState, account: String) -> ApiResult<()> {
    let window = state.config.lockout.as_secs() as i64;
    let max = i64::from(state.config.login_max_failures.max(1));
    state
        .db
        .call(move |c| count_failure(c, &account, now(), window, max))
        .await
}

fn count_failure(
    c: &rusqlite::Connection,
    account: &str,
    now: i64,
    window: i64,
    max: i64,
) -> ApiResult<()> {
    const SQL: &str =
        "INSERT INTO login_failures (account, failures, window_start) VALUES (?1, 1, ?2)
        ON CONFLICT(account) DO UPDATE SET
          failures = CASE WHEN window_start <= ?2 - ?3 THEN 1 ELSE failures + 1 END,
          window_start = CASE WHEN window_start <= ?2 - ?3 THEN ?2 ELSE window_start END";
    c.execute(SQL, rusqlite::params![account, now, window])
        .map_err(|e| ApiError::db(SQL, &e))?;
    const LOCK: &str =
        "UPDATE login_failures SET locked_until = ?2 + ?3, failures = 0, window_start = ?2
        WHERE account = ?1 AND failures >= ?4";
    c.execute(LOCK, rusqlite::params![account, now, window, max])
        .map_err(|e| ApiError::db(LOCK, &e))?;
    Ok(())
}

/// Seconds left on the account's lockout if it is locked; else this attempt is counted as a
/// failure (the `max`-th locks the account) until a success forgets it. One call on the
/// database's one connection: no other attempt comes between the look and the count.
async fn count_attempt(state: &AppState, account: String) -> ApiResult<Option<u64>> {
    let window = state.config.lockout.as_secs() as i64;
    let max = i64::from(state.config.login_max_failures.max(1));
    state
        .db
        .call(move |c| {
            let now = now();
            const SQL: &str = "SELECT locked_until FROM login_failures WHERE account = ?1";
            let until: Option<i64> = c
                .query_row(SQL, [&account], |r| r.get(0))
                .optional()
                .map_err(|e| ApiError::db(SQL, &e))?;
            if let Some(u) = until.filter(|&u| u > now) {
                return Ok(Some((u - now) as u64));
            }
            count_failure(c, &account, now, window, max)?;
            Ok(None)
        })
        .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    refresh_token: String,
}

/// Rotates a refresh token. A refresh token presented twice was stolen from one of its two
/// users: the whole family is revoked.
pub async fn refresh(
    State(state): State<AppState>,
    Json(req): Json<Refresh>,
) -> ApiResult<impl IntoResponse> {
    if req.refresh_token.len() > 8192 {
        return Err(ApiError::unauthorized());
    }
    let claims = auth::decode(&state, &req.refresh_token, "refresh").await?;
    let (jti, fam, exp) = (claims.jti.clone(), claims.fam.clone(), claims.exp);
    let fresh = state
        .db
        .call(move |c| {
            const SQL: &str = "UPDATE refresh_tokens SET used = 1 WHERE jti = ?1 AND used = 0
                AND NOT EXISTS(SELECT 1 FROM revoked_families WHERE family = ?2)";
            let n = c
                .execute(SQL, rusqlite::params![jti, fam])
                .map_err(|e| ApiError::db(SQL, &e))?;
            if n == 0 {
                const REVOKE: &str =
                    "INSERT OR IGNORE INTO revoked_families (family, exp) VALUES (?1, ?2)";
                c.execute(REVOKE, rusqlite::params![fam, exp])
                    .map_err(|e| ApiError::db(REVOKE, &e))?;
            }
            Ok(n == 1)
        })
        .await?;
    if !fresh {
        return Err(ApiError::unauthorized());
    }
    // The role is read again: a demoted user's next access token is a customer's.
    let uid = claims.sub.clone();
    let role: Option<String> = state
        .db
        .call(move |c| {
            const SQL: &str = "SELECT role FROM users WHERE id = ?1";
            c.query_row(SQL, [uid], |r| r.get(0))
                .optional()
                .map_err(|e| ApiError::db(SQL, &e))
        })
        .await?;
    let role = role.ok_or_else(ApiError::unauthorized)?;
    Ok(Json(
        issue_pair(&state, &claims.sub, &role, &claims.fam).await?,
    ))
}

/// Ends the session: the access token's `jti` and its whole refresh family are revoked.
pub async fn logout(State(state): State<AppState>, user: AuthUser) -> ApiResult<impl IntoResponse> {
    let c = user.claims;
    let refresh_exp = c.iat + state.config.refresh_ttl.as_secs() as i64;
    state
        .db
        .call(move |db| {
            const SQL: &str = "INSERT OR IGNORE INTO revoked_tokens (jti, exp) VALUES (?1, ?2)";
            db.execute(SQL, rusqlite::params![c.jti, c.exp])
                .map_err(|e| ApiError::db(SQL, &e))?;
            const FAM: &str =
                "INSERT OR IGNORE INTO revoked_families (family, exp) VALUES (?1, ?2)";
            db.execute(FAM, rusqlite::params![c.fam, refresh_exp])
                .map_err(|e| ApiError::db(FAM, &e))?;
            Ok(())
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
