//! API5 (broken function level authorization): administrative operations (an `admin` tag or
//! path segment) called by normal users, and method switching on administrative paths (an
//! undeclared GET that answers). Reads only: administrative writes are tried only with
//! `allow_destructive`.

use reqwest::Method;

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;

const PROBE: &str = "bfla";

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    if users.is_empty() {
        return;
    }
    let admin_ops: Vec<_> = ctx
        .model
        .ops
        .iter()
        .filter(|o| o.is_admin() && !o.deprecated)
        .collect();
    if admin_ops.is_empty() {
        return;
    }
    let Some(&first) = users.first() else { return };
    let control = super::catch_all(ctx, first).await;
    for op in &admin_ops {
        ctx.ran(op, PROBE);
        for &u in &users {
            let seen = if op.method == Method::GET {
                match ctx.baseline(op, u) {
                    Some(s) => Some((s.req, s.resp)),
                    None => ctx.send_as(ctx.request(op, Some(u)), u).await,
                }
            } else if ctx.config.allow_destructive {
                ctx.send_as(ctx.request(op, Some(u)), u).await
            } else {
                None
            };
            let Some((req, resp)) = seen else { continue };
            // A declared operation: only the catch-all's very page is no answer of its own
            // (a 204 or a CSV export is no JSON and still the operation's).
            if resp.ok() && control.as_ref().is_none_or(|c| c.text != resp.text) {
                ctx.report(
                    Finding::new(rules::BFLA, Severity::High, &op.key(), "")
                        .detail(format!(
                            "The administrative operation answered {} to {}, a normal user.",
                            resp.status, ctx.sessions[u].name
                        ))
                        .evidence(ctx.http.exchange(&req, Some(&resp)))
                        .reproduce(ctx.http.curl(&req)),
                );
                break;
            }
        }
    }
    // Method switching: GET on administrative paths that declare only other methods.
    let mut paths: Vec<&str> = admin_ops.iter().map(|o| o.path.as_str()).collect();
    paths.dedup();
    for path in paths {
        if ctx.model.find(&Method::GET, path).is_some() {
            continue;
        }
        let Some(op) = admin_ops.iter().find(|o| o.path == path) else {
            continue;
        };
        let Some(&u) = users.first() else { continue };
        let req = Req::new(Method::GET, ctx.target(op, Some(u), &[]));
        let Some((req, resp)) = ctx.send_as(req, u).await else {
            continue;
        };
        if resp.ok() && !super::caught(&resp, control.as_ref()) {
            ctx.report(
                Finding::new(rules::BFLA, Severity::High, &format!("GET {path}"), "method-switch")
                    .detail(format!(
                        "GET is not declared on this administrative path, yet it answered {} to {}, a normal user.",
                        resp.status, ctx.sessions[u].name
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }
}
