//! Promo codes: a sensitive business flow (API6). Each code credits the balance; the secure
//! default lets a user redeem a code once and a few codes a day. `business-flow` removes both;
//! `sqli` builds the code lookup by string concatenation; `nosqli` takes a query operator
//! (`{"$ne": null}`) for a code.

use axum::extract::State;
use axum::response::IntoResponse;
use rusqlite::OptionalExtension;
use serde::Deserialize;
use serde_json::json;

use crate::auth::AuthUser;
use crate::config::Vuln;
use crate::db::now;
use crate::error::{ApiError, ApiResult};
use crate::extract::{Json, RawJson, parse_json};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redeem {
    code: String,
}

enum Outcome {
    Credited(i64, i64),
    UnknownCode,
    AlreadyRedeemed,
    DailyLimit,
}

pub async fn redeem(
    State(state): State<AppState>,
    user: AuthUser,
    RawJson(body): RawJson,
) -> ApiResult<impl IntoResponse> {
    let code = match serde_json::from_slice::<serde_json::Value>(&body) {
        // The `nosqli` weakness: an operator object picks whichever code it matches.
        Ok(serde_json::Value::Object(m))
            if state.config.vulns.has(Vuln::Nosqli)
                && m.len() == 1
                && m.get("code").is_some_and(serde_json::Value::is_object) =>
        {
            let filter = m.get("code").cloned().unwrap_or_default();
            let codes: Vec<String> = state
                .db
                .call(|c| {
                    const SQL: &str = "SELECT code FROM promo_codes ORDER BY code";
                    let mut stmt = c.prepare(SQL).map_err(|e| ApiError::db(SQL, &e))?;
                    stmt.query_map([], |r| r.get(0))
                        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
                        .map_err(|e| ApiError::db(SQL, &e))
                })
                .await?;
            codes
                .into_iter()
                .find(|c| crate::routes::matches_filter(&filter, c))
                .ok_or_else(|| ApiError::unprocessable("`code` is not a valid promo code"))?
        }
        _ => parse_json::<Redeem>(&body)?.code,
    };
    if code.is_empty() || code.len() > 20 {
        return Err(ApiError::unprocessable(
            "`code` must have 1 to 20 characters",
        ));
    }
    let limited = !state.config.vulns.has(Vuln::BusinessFlow);
    let daily = i64::from(state.config.promo_daily_limit);
    let injectable = state.config.vulns.has(Vuln::Sqli);
    let (uid, c_code) = (user.id, code.clone());
    // One transaction: the checks and the credit cannot interleave with a parallel redemption.
    let outcome = state
        .db
        .call(move |c| {
            let tx = c.transaction().map_err(|e| ApiError::db("BEGIN", &e))?;
            const CODE: &str = "SELECT credit_cents FROM promo_codes WHERE code = ?1";
            let found = if injectable {
                // The weakness: the code is spliced into the SQL text.
                let sql = format!("SELECT credit_cents FROM promo_codes WHERE code = '{c_code}'");
                tx.query_row(&sql, [], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(|e| ApiError::db(&sql, &e))?
            } else {
                tx.query_row(CODE, [&c_code], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(|e| ApiError::db(CODE, &e))?
            };
            let Some(credit) = found else {
                return Ok(Outcome::UnknownCode);
            };
            let now = now();
            if limited {
                const SAME: &str = "SELECT COUNT(*) FROM promo_redemptions WHERE user_id = ?1 AND code = ?2";
                let same: i64 =
                    tx.query_row(SAME, [&uid, &c_code], |r| r.get(0)).map_err(|e| ApiError::db(SAME, &e))?;
                if same > 0 {
                    return Ok(Outcome::AlreadyRedeemed);
                }
                const DAY: &str = "SELECT COUNT(*) FROM promo_redemptions WHERE user_id = ?1 AND redeemed_at > ?2";
                let today: i64 = tx
                    .query_row(DAY, rusqlite::params![uid, now - 86_400], |r| r.get(0))
                    .map_err(|e| ApiError::db(DAY, &e))?;
                if today >= daily {
                    return Ok(Outcome::DailyLimit);
                }
            }
            const INS: &str = "INSERT INTO promo_redemptions (user_id, code, redeemed_at) VALUES (?1, ?2, ?3)";
            tx.execute(INS, rusqlite::params![uid, c_code, now]).map_err(|e| ApiError::db(INS, &e))?;
            const CREDIT: &str = "UPDATE users SET balance_cents = balance_cents + ?2 WHERE id = ?1 RETURNING balance_cents";
            let balance: i64 = tx
                .query_row(CREDIT, rusqlite::params![uid, credit], |r| r.get(0))
                .map_err(|e| ApiError::db(CREDIT, &e))?;
            tx.commit().map_err(|e| ApiError::db("COMMIT", &e))?;
            Ok(Outcome::Credited(credit, balance))
        })
        .await?;
    match outcome {
        Outcome::Credited(credit, balance) => Ok(Json(
            json!({ "code": code, "credited_cents": credit, "balance_cents": balance }),
        )),
        Outcome::UnknownCode => Err(ApiError::unprocessable("`code` is not a valid promo code")),
        Outcome::AlreadyRedeemed => Err(ApiError::conflict("this code was already redeemed")),
        Outcome::DailyLimit => {
            Err(ApiError::too_many(3600).with_detail("daily redemption limit reached"))
        }
    }
}
