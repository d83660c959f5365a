//! API3 (excessive data exposure), passive: every 2xx JSON answer of the baseline is compared
//! with the response schema the description declares. Secret-looking properties are reported
//! whether declared or not; other properties only when undeclared.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::model::Model;

const PROBE: &str = "exposure";

/// Names that are secrets in any answer.
fn secret_name(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "private_key",
        "api_key",
        "apikey",
    ]
    .iter()
    .any(|s| k.contains(s))
        || crate::redact::personal_secret(&k)
        || k.ends_with("_hash")
        || k == "hash"
}

/// Names that are secrets unless the contract declares them (token endpoints do).
fn token_name(k: &str) -> bool {
    k.to_ascii_lowercase().contains("token")
}

pub(crate) fn run(ctx: &Ctx) {
    for ((key, who), seen) in ctx.all_baseline() {
        let Some(op) = ctx.model.ops.iter().find(|o| o.key() == key) else {
            continue;
        };
        // API descriptions served by the API name every property, secrets included.
        let p = op.path.to_ascii_lowercase();
        if ["openapi", "swagger", "api-docs"]
            .iter()
            .any(|w| p.contains(w))
        {
            continue;
        }
        if !seen.resp.ok() {
            continue;
        }
        let Some(json) = seen.resp.json() else {
            continue;
        };
        ctx.ran(op, PROBE);
        let mut undeclared = BTreeSet::new();
        let mut secrets = BTreeSet::new();
        walk(
            &ctx.model,
            &json,
            op.response.as_ref(),
            String::new(),
            &mut undeclared,
            &mut secrets,
            0,
        );
        let ex = ctx.http.exchange(&seen.req, Some(&seen.resp));
        let curl = ctx.http.curl(&seen.req);
        let who = &ctx.sessions[who].name;
        if !secrets.is_empty() {
            let list: Vec<_> = secrets.into_iter().collect();
            ctx.report(
                Finding::new(rules::EXPOSURE_SENSITIVE, Severity::High, &key, "")
                    .detail(format!(
                        "The answer to {who} carries secret properties: {}.",
                        list.join(", ")
                    ))
                    .evidence(ex.clone())
                    .reproduce(curl.clone()),
            );
        }
        if !undeclared.is_empty() {
            let list: Vec<_> = undeclared.into_iter().collect();
            ctx.report(
                Finding::new(rules::EXPOSURE_UNDECLARED, Severity::Medium, &key, "")
                    .detail(format!(
                        "The answer to {who} carries properties the description does not declare: {}.",
                        list.join(", ")
                    ))
                    .evidence(ex)
                    .reproduce(curl),
            );
        }
    }
}

fn walk(
    model: &Model,
    v: &Value,
    schema: Option<&Value>,
    at: String,
    undeclared: &mut BTreeSet<String>,
    secrets: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 8 {
        return;
    }
    match v {
        Value::Object(m) => {
            let declared = schema.and_then(|s| model.declared(s));
            for (k, val) in m {
                let p = format!("{at}/{k}");
                let is_declared = declared.as_ref().is_some_and(|d| d.contains(k));
                let scalar = val.is_string() || val.is_number();
                if (secret_name(k) || (token_name(k) && !is_declared)) && scalar {
                    secrets.insert(p.clone());
                }
                if declared.is_some() && !is_declared {
                    undeclared.insert(p);
                } else {
                    let sub = schema.and_then(|s| model.property(s, k));
                    walk(model, val, sub, p, undeclared, secrets, depth + 1);
                }
            }
        }
        Value::Array(a) => {
            let items = schema
                .map(|s| model.resolve(s))
                .and_then(|s| s.get("items"));
            for item in a.iter().take(20) {
                walk(
                    model,
                    item,
                    items,
                    format!("{at}/*"),
                    undeclared,
                    secrets,
                    depth + 1,
                );
            }
        }
        _ => {}
    }
}
