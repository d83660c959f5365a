//! The probes, one module each. Every probe proves a weakness before it reports it: a 2xx
//! alone is never enough where the answer can be compared with what the victim sees.
//!
//! They run in a fixed order ([`ALL`]): passive checks first, then probes that only read,
//! then those that write to the scan's own objects, and the noisy limit probes last so their
//! 429s cannot disturb the others.

use std::sync::Arc;

use serde_json::Value;

use crate::ctx::Ctx;

pub(crate) mod auth;
pub(crate) mod baseline;
pub(crate) mod bfla;
pub(crate) mod bola;
pub(crate) mod exposure;
pub(crate) mod flow;
pub(crate) mod injection;
pub(crate) mod jwt;
pub(crate) mod login;
pub(crate) mod mass;
pub(crate) mod misconfig;
pub(crate) mod ratelimit;
pub(crate) mod ssrf;
pub(crate) mod versions;

/// What the target answers `who` for a path no API has, when that is a 2xx: the target then
/// answers any path (a single-page app's fallback page, a wildcard route), and a 2xx on a path
/// the description does not declare proves nothing unless it looks otherwise ([`caught`]).
pub(crate) async fn catch_all(ctx: &Ctx, who: usize) -> Option<crate::http::Resp> {
    let req = crate::http::Req::new(
        reqwest::Method::GET,
        format!("/portcullis-scan-absent-{}", tag()),
    );
    let (_, resp) = ctx.send_as(req, who).await?;
    resp.ok().then_some(resp)
}

/// Whether `resp`, a 2xx, may be the catch-all's answer again: the same body, or, from a
/// target that answers any path, something that is not JSON.
pub(crate) fn caught(resp: &crate::http::Resp, control: Option<&crate::http::Resp>) -> bool {
    control.is_some_and(|c| c.text == resp.text || resp.json().is_none())
}

/// Every probe, by name, in the order they run.
pub(crate) const ALL: &[&str] = &[
    "exposure",
    "misconfig",
    "auth",
    "jwt",
    "bola",
    "bfla",
    "mass-assignment",
    "ssrf",
    "injection",
    "business-flow",
    "versions",
    "rate-limit",
    "login",
];

pub(crate) async fn run(ctx: &Arc<Ctx>, name: &str) {
    tracing::info!(probe = name, "probe starts");
    match name {
        "exposure" => exposure::run(ctx),
        "misconfig" => misconfig::run(ctx).await,
        "auth" => auth::run(ctx).await,
        "jwt" => jwt::run(ctx).await,
        "bola" => bola::run(ctx).await,
        "bfla" => bfla::run(ctx).await,
        "mass-assignment" => mass::run(ctx).await,
        "ssrf" => ssrf::run(ctx).await,
        "injection" => injection::run(ctx).await,
        "business-flow" => flow::run(ctx).await,
        "versions" => versions::run(ctx).await,
        "rate-limit" => ratelimit::run(ctx).await,
        "login" => login::run(ctx).await,
        _ => {}
    }
}

/// Keys whose values change between two identical requests.
fn volatile(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("request_id")
        || k.contains("requestid")
        || k.contains("correlation")
        || k.contains("nonce")
        || k.contains("trace")
        || k == "instance"
        || k.contains("timestamp")
        || k == "time"
        || k == "date"
}

/// A JSON value without volatile keys, for comparing answers.
pub(crate) fn stable(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !volatile(k))
                .map(|(k, v)| (k.clone(), stable(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(stable).collect()),
        other => other.clone(),
    }
}

/// Whether `seen` (what the attacker got) is the victim's object `own`: the same `id`, or
/// at least 80% of the victim's top-level properties with equal values.
pub(crate) fn same_object(own: &Value, seen: &Value) -> bool {
    let (Some(a), Some(b)) = (own.as_object(), seen.as_object()) else {
        return false;
    };
    if let (Some(x), Some(y)) = (a.get("id"), b.get("id")) {
        return x == y;
    }
    let keys: Vec<_> = a.keys().filter(|k| !volatile(k)).collect();
    if keys.is_empty() {
        return false;
    }
    let equal = keys
        .iter()
        .filter(|k| b.get(k.as_str()) == a.get(k.as_str()))
        .count();
    equal * 5 >= keys.len() * 4
}

/// A short random-looking tag for synthetic accounts and markers (not cryptographic).
pub(crate) fn tag() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{:x}",
        (t as u64) ^ u64::from(std::process::id()).rotate_left(32)
    )
}

/// Sends `reqs` concurrently (the engine still caps requests in flight) and returns the
/// answers in order.
pub(crate) async fn burst(
    ctx: &Arc<Ctx>,
    reqs: Vec<crate::http::Req>,
) -> Vec<(crate::http::Req, Option<crate::http::Resp>)> {
    for r in &reqs {
        ctx.http.warm(r.source);
    }
    let mut set = tokio::task::JoinSet::new();
    for (i, r) in reqs.into_iter().enumerate() {
        let c = ctx.clone();
        set.spawn(async move {
            let resp = c.send(&r).await;
            (i, r, resp)
        });
    }
    let mut out = Vec::new();
    while let Some(done) = set.join_next().await {
        if let Ok(x) = done {
            out.push(x);
        }
    }
    out.sort_by_key(|(i, _, _)| *i);
    out.into_iter().map(|(_, r, s)| (r, s)).collect()
}

/// The login operation of the first identity with a login recipe: (session, recipe), the
/// account field and the password field of its body.
pub(crate) fn login_recipe(
    ctx: &Ctx,
) -> Option<(usize, crate::config::LoginRecipe, String, String)> {
    let (who, recipe) =
        (0..ctx.sessions.len()).find_map(|i| ctx.sessions[i].recipe().map(|r| (i, r.clone())))?;
    let obj = recipe.body.as_object()?;
    let password = obj
        .keys()
        .find(|k| k.to_ascii_lowercase().contains("pass"))?
        .clone();
    let account = obj
        .keys()
        .find(|k| {
            let k = k.to_ascii_lowercase();
            ["email", "user", "login", "account", "name", "phone"]
                .iter()
                .any(|w| k.contains(w))
        })?
        .clone();
    Some((who, recipe, account, password))
}

/// A login body for `account` with a wrong password.
pub(crate) fn login_body(
    recipe: &crate::config::LoginRecipe,
    account_field: &str,
    password_field: &str,
    account: &str,
    password: &str,
) -> Value {
    let mut body = recipe.body.clone();
    if let Value::Object(m) = &mut body {
        m.insert(account_field.into(), Value::String(account.into()));
        m.insert(password_field.into(), Value::String(password.into()));
    }
    body
}

/// An account name that cannot exist, shaped like `real` (an email keeps its domain).
pub(crate) fn unknown_account(real: &str, what: &str) -> String {
    match real.split_once('@') {
        Some((_, domain)) => format!("portcullis-{what}-{}@{domain}", tag()),
        None => format!("portcullis-{what}-{}", tag()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn answers_compare_without_their_volatile_keys() {
        let a = json!({ "error": "wrong email or password", "correlationId": "c-1", "nonce": "n1", "request_id": "r1", "timestamp": 1 });
        let b = json!({ "error": "wrong email or password", "correlationId": "c-2", "nonce": "n2", "request_id": "r2", "timestamp": 2 });
        assert_eq!(super::stable(&a), super::stable(&b));
        let c = json!({ "error": "no such account", "correlationId": "c-3" });
        assert_ne!(super::stable(&a), super::stable(&c));
    }
}
