//! API9 (improper inventory management): deprecated versions are held to the standard of
//! the current one (no answer without credentials, no answer to another user's object), and
//! undeclared older siblings of current paths (`/v1/...` when the description has `/v2/...`)
//! are looked for.

use reqwest::Method;

use super::same_object;
use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;
use crate::model::{Op, version_of};

const PROBE: &str = "versions";

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    let Some(&a) = users.first() else { return };
    let b = users.get(1).copied();
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && o.deprecated)
    {
        deprecated(ctx, op, a, b).await;
    }
    siblings(ctx, a).await;
}

async fn deprecated(ctx: &Ctx, op: &Op, a: usize, b: Option<usize>) {
    ctx.ran(op, PROBE);
    let path = ctx.target(op, Some(a), &[]);
    let Some((own_req, own)) = ctx.send_as(Req::new(Method::GET, path.clone()), a).await else {
        return;
    };
    let own_json = own.json();
    let anon = Req::new(Method::GET, path.clone());
    if op.secured
        && let Some(resp) = ctx.send(&anon).await
        && resp.ok()
    {
        ctx.report(
            Finding::new(rules::OLD_VERSION, Severity::High, &op.key(), "anonymous")
                .detail(format!(
                    "The deprecated operation answers {} without credentials, although it (and its successor) require authentication.",
                    resp.status
                ))
                .evidence(ctx.http.exchange(&anon, Some(&resp)))
                .reproduce(ctx.http.curl(&anon)),
        );
        return;
    }
    if let (Some(b), Some(own_json)) = (b, own_json.as_ref())
        && own.ok()
        && op.has_path_params()
        && let Some((req, resp)) = ctx.send_as(Req::new(Method::GET, path), b).await
        && resp.ok()
        && resp.json().is_some_and(|j| same_object(own_json, &j))
    {
        ctx.report(
            Finding::new(rules::OLD_VERSION, Severity::High, &op.key(), "owner")
                .detail(format!(
                    "The deprecated operation serves {}'s object to {}: the old version lacks the owner check.",
                    ctx.sessions[a].name, ctx.sessions[b].name
                ))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
        return;
    }
    if own.ok() {
        ctx.report(
            Finding::new(rules::OLD_VERSION_LIVE, Severity::Info, &op.key(), "")
                .detail("The deprecated operation is still served (with the same controls as far as the scan can tell); plan its removal.")
                .evidence(ctx.http.exchange(&own_req, Some(&own)))
                .reproduce(ctx.http.curl(&own_req)),
        );
    }
}

async fn siblings(ctx: &Ctx, a: usize) {
    let mut tried = 0;
    let control = super::catch_all(ctx, a).await;
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && !o.deprecated)
    {
        let Some((n, tail)) = version_of(&op.path) else {
            continue;
        };
        // The versions just below this one, newest first, and the first two (the usual
        // forgotten ones): a date-like version (`/v20240101`) would otherwise be millions.
        let mut candidates: Vec<u32> = (1..n).rev().take(4).collect();
        for k in 1..n.min(3) {
            if !candidates.contains(&k) {
                candidates.push(k);
            }
        }
        for k in candidates {
            if tried >= 24 {
                return;
            }
            let sibling = format!("/v{k}{tail}");
            if ctx.model.ops.iter().any(|o| o.path == sibling) {
                continue;
            }
            tried += 1;
            ctx.ran(op, PROBE);
            let current = ctx.target(op, Some(a), &[]);
            let Some(rest) = current.strip_prefix(&format!("/v{n}")) else {
                continue;
            };
            let path = format!("/v{k}{rest}");
            let Some((req, resp)) = ctx.send_as(Req::new(Method::GET, path.clone()), a).await
            else {
                continue;
            };
            if !resp.ok() || super::caught(&resp, control.as_ref()) {
                continue;
            }
            let key = format!("GET {sibling}");
            let anon = Req::new(Method::GET, path);
            let open = match ctx.send(&anon).await {
                Some(r) if r.ok() && op.secured && !super::caught(&r, control.as_ref()) => Some(r),
                _ => None,
            };
            let f = match open {
                Some(r) => Finding::new(rules::OLD_VERSION, Severity::High, &key, "undeclared")
                    .detail(format!(
                        "An undocumented older version of `{}` answers {} without credentials.",
                        op.path, r.status
                    ))
                    .evidence(ctx.http.exchange(&anon, Some(&r)))
                    .reproduce(ctx.http.curl(&anon)),
                None => Finding::new(rules::OLD_VERSION, Severity::Medium, &key, "undeclared")
                    .detail(format!(
                        "An undocumented older version of `{}` still answers ({}).",
                        op.path, resp.status
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            };
            ctx.report(f);
        }
    }
}
