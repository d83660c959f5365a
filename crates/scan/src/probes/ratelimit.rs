//! API4 (unrestricted resource consumption): a bounded burst on one cheap operation and on
//! login, each from a source address of its own, with no 429 in return; page-size
//! parameters far above their declared maximum that the server honours; and writes that accept
//! a string several times its declared `maxLength`, or a 1 MiB body.

use std::sync::Arc;
use std::time::Instant;

use reqwest::Method;
use serde_json::Value;

use super::{burst, login_body, login_recipe, unknown_account};
use crate::ctx::{Ctx, list_items};
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;
use crate::model::{In, Op};

const PROBE: &str = "rate-limit";
const LOGIN_BURST: u32 = 25;

pub(crate) async fn run(ctx: &Arc<Ctx>) {
    pagination(ctx).await;
    oversized(ctx).await;
    operation_burst(ctx).await;
    login_burst(ctx).await;
}

/// Writes whose JSON body has a free-text field with a declared `maxLength`: the field four
/// times over its bound, then a 1 MiB body (the same field padded), each accepted with a 2xx.
async fn oversized(ctx: &Ctx) {
    const MIB: usize = 1 << 20;
    let Some(who) = ctx.users().first().copied() else {
        return;
    };
    let mut tried = 0;
    for op in ctx.model.ops.iter().filter(|o| {
        matches!(o.method, Method::POST | Method::PUT | Method::PATCH)
            && !o.is_admin()
            && !o.deprecated
            && !o.is_auth()
    }) {
        let Some(schema) = &op.body else { continue };
        let field = ctx
            .model
            .resolve(schema)
            .get("properties")
            .and_then(Value::as_object)
            .and_then(|props| {
                props.iter().find_map(|(name, p)| {
                    let p = ctx.model.resolve(p);
                    let max = p.get("maxLength").and_then(Value::as_u64)?;
                    (crate::model::type_of(p) == "string"
                        && p.get("format").is_none()
                        && p.get("enum").is_none()
                        && max <= 16_384
                        && !op.url_fields.iter().any(|f| f == &format!("/{name}")))
                    .then(|| (name.clone(), max as usize))
                })
            });
        let Some((name, max)) = field else { continue };
        let base = ctx.request(op, Some(who));
        let Some(crate::http::Body::Json(Value::Object(body))) = &base.body else {
            continue;
        };
        if tried == 4 {
            return;
        }
        tried += 1;
        ctx.ran(op, PROBE);
        let with = |n: usize| {
            let mut b = body.clone();
            b.insert(name.clone(), Value::String("a".repeat(n)));
            let mut req = base.clone();
            req.body = None;
            req.json(Value::Object(b))
        };
        let long = max * 4 + 16;
        let Some((req, resp)) = ctx.send_as(with(long), who).await else {
            continue;
        };
        if !resp.ok() {
            continue;
        }
        let mut finding = Finding::new(rules::OVERSIZED, Severity::Medium, &op.key(), &name)
            .detail(format!(
                "`{name}` of {long} characters was accepted ({}) where the description allows {max}.",
                resp.status
            ))
            .evidence(ctx.http.exchange(&req, Some(&resp)))
            .reproduce(ctx.http.curl(&req));
        if let Some((_, big)) = ctx.send_as(with(MIB), who).await
            && big.ok()
        {
            finding.detail.push_str(&format!(
                " A 1 MiB body was accepted too ({}): there is no body size limit either.",
                big.status
            ));
        }
        ctx.report(finding);
        // Put a sane value back (the sampled body), so later probes and scans see a normal
        // object rather than a megabyte of `a`.
        let _ = ctx.send_as(base.clone(), who).await;
    }
}

fn burst_target(ctx: &Ctx) -> Option<(&Op, Option<usize>)> {
    let anon = ctx.anonymous();
    let a = ctx.users().first().copied();
    let ok = |o: &&Op, who: usize| ctx.baseline(o, who).is_some_and(|s| s.resp.ok());
    let mut ops: Vec<&Op> = ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && !o.is_admin() && !o.deprecated && !o.is_auth())
        .collect();
    ops.sort_by_key(|o| (o.has_path_params(), o.path.len()));
    // A cheap public read is the best target; the path of a "health" check is often exempt.
    let public = ops
        .iter()
        .copied()
        .filter(|o| !o.path.contains("health"))
        .find(|o| ok(o, anon));
    public
        .map(|o| (o, None))
        .or_else(|| a.and_then(|a| ops.iter().copied().find(|o| ok(o, a)).map(|o| (o, Some(a)))))
}

async fn operation_burst(ctx: &Arc<Ctx>) {
    let Some((op, who)) = burst_target(ctx) else {
        return;
    };
    let n = ctx.config.burst.min(ctx.http.remaining() / 2);
    if n < 20 {
        ctx.note("rate-limit: not enough budget left for a burst; skipped");
        return;
    }
    ctx.ran(op, PROBE);
    let base = match who {
        Some(w) => ctx.as_who(ctx.request(op, Some(w)), w),
        None => ctx.request(op, None),
    };
    let reqs: Vec<Req> = (0..n).map(|_| base.clone().from(ctx.lane(0, 0))).collect();
    let started = Instant::now();
    let answers = burst(ctx, reqs).await;
    let elapsed = started.elapsed();
    let limited = answers
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.status == 429))
        .count();
    let answered = answers.iter().filter(|(_, r)| r.is_some()).count();
    if limited == 0
        && answered as u32 == n
        && let Some((req, Some(resp))) = answers.last()
    {
        ctx.report(
            Finding::new(rules::RATE_LIMIT, Severity::Medium, &op.key(), "")
                .detail(format!(
                    "{n} requests from one address in {} ms were all answered; none was refused with 429.",
                    elapsed.as_millis()
                ))
                .evidence(ctx.http.exchange(req, Some(resp)))
                .reproduce(format!("for i in $(seq {n}); do {} -o /dev/null -w '%{{http_code}}\\n'; done", ctx.http.curl(req))),
        );
    }
}

fn page_param(op: &Op) -> Option<&crate::model::Param> {
    op.params.iter().find(|p| {
        let n = p.name.to_ascii_lowercase();
        p.at == In::Query
            && [
                "limit",
                "page_size",
                "pagesize",
                "per_page",
                "perpage",
                "size",
                "count",
                "top",
                "take",
                "max",
            ]
            .contains(&n.as_str())
    })
}

async fn pagination(ctx: &Ctx) {
    let anon = ctx.anonymous();
    let a = ctx.users().first().copied();
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && !o.deprecated)
    {
        let Some(p) = page_param(op) else { continue };
        let who = if ctx.baseline(op, anon).is_some_and(|s| s.resp.ok()) {
            None
        } else {
            a
        };
        let max = ctx
            .model
            .resolve(&p.schema)
            .get("maximum")
            .and_then(Value::as_u64)
            .unwrap_or(100);
        let huge = (max.saturating_mul(1000)).clamp(10_000, 1_000_000);
        ctx.ran(op, PROBE);
        let req = Req::new(
            Method::GET,
            ctx.target(op, who, &[(p.name.as_str(), huge.to_string())]),
        );
        let sent = match who {
            Some(w) => ctx.send_as(req, w).await,
            None => ctx.send(&req).await.map(|r| (req, r)),
        };
        let Some((req, resp)) = sent else { continue };
        if !resp.ok() {
            continue;
        }
        let json = resp.json().unwrap_or(Value::Null);
        let echoed = json.get(&p.name).and_then(Value::as_u64) == Some(huge);
        let items = list_items(&json).len() as u64;
        if echoed || items > max {
            ctx.report(
                Finding::new(rules::PAGINATION, Severity::Medium, &op.key(), &p.name)
                    .detail(format!(
                        "`{}={huge}` (declared maximum {max}) was accepted{}: one request can pull unbounded rows.",
                        p.name,
                        if echoed { " and echoed back" } else { "" }
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }
}

async fn login_burst(ctx: &Arc<Ctx>) {
    let Some((who, recipe, account, password)) = login_recipe(ctx) else {
        ctx.note("rate-limit: no identity logs in with a recipe; login burst skipped");
        return;
    };
    let Ok(method) = Method::from_bytes(recipe.method.as_bytes()) else {
        return;
    };
    let real = recipe
        .body
        .get(&account)
        .and_then(Value::as_str)
        .unwrap_or("user")
        .to_owned();
    let _ = who;
    if ctx.http.remaining() < LOGIN_BURST * 2 {
        return;
    }
    if let Some(op) = ctx.model.find(&method, &recipe.path) {
        ctx.ran(op, PROBE);
    }
    // Password spraying from one address: a different unknown account each time, so only a
    // per-address limit can stop it.
    let reqs: Vec<Req> = (0..LOGIN_BURST)
        .map(|i| {
            let body = login_body(
                &recipe,
                &account,
                &password,
                &unknown_account(&real, &format!("spray{i}")),
                "Portcullis-wrong-password-1",
            );
            Req::new(method.clone(), recipe.path.clone())
                .json(body)
                .from(ctx.lane(1, 0))
        })
        .collect();
    let answers = burst(ctx, reqs).await;
    let limited = answers
        .iter()
        .filter(|(_, r)| r.as_ref().is_some_and(|r| r.status == 429))
        .count();
    let answered = answers.iter().filter(|(_, r)| r.is_some()).count();
    if limited == 0
        && answered as u32 == LOGIN_BURST
        && let Some((req, Some(resp))) = answers.last()
    {
        ctx.report(
            Finding::new(rules::LOGIN_RATE_LIMIT, Severity::Medium, &format!("{} {}", recipe.method, recipe.path), "")
                .detail(format!("{LOGIN_BURST} failed logins for different accounts from one address were all answered; none was refused with 429."))
                .evidence(ctx.http.exchange(req, Some(resp)))
                .reproduce(ctx.http.curl(req)),
        );
    }
}
