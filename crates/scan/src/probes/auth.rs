//! API2 (broken authentication), part one: secured operations replayed without credentials
//! and with a token that is not a token. Replays use the request that worked for an identity
//! (its own object ids), so a 2xx shows the data really is served to anyone.

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;

const PROBE: &str = "auth";

pub(crate) async fn run(ctx: &Ctx) {
    let users: Vec<usize> = ctx.users().into_iter().chain(ctx.admins()).collect();
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.secured && !o.deprecated && !o.is_auth())
    {
        // Only operations some identity legitimately got a 2xx from are worth replaying.
        let Some(seen) = users
            .iter()
            .find_map(|&u| ctx.baseline(op, u).filter(|s| s.resp.ok()))
        else {
            continue;
        };
        ctx.ran(op, PROBE);
        let mut anon = seen.req.clone();
        anon.auth = None;
        anon.auth_var = None;
        anon.who = "anonymous".into();
        if let Some(resp) = ctx.send(&anon).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::AUTH_MISSING, Severity::High, &op.key(), "")
                    .detail(format!(
                        "The operation requires authentication in the description, yet answers {} without any credentials.",
                        resp.status
                    ))
                    .evidence(ctx.http.exchange(&anon, Some(&resp)))
                    .reproduce(ctx.http.curl(&anon)),
            );
            continue;
        }
        let garbage: Req = {
            let r = seen.req.clone();
            r.bearer("invalid token", "portcullis.invalid.token", "INVALID_TOKEN")
        };
        if let Some(resp) = ctx.send(&garbage).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::AUTH_GARBAGE, Severity::High, &op.key(), "")
                    .detail(format!(
                        "The operation answers {} to a bearer token that is not a valid token.",
                        resp.status
                    ))
                    .evidence(ctx.http.exchange(&garbage, Some(&resp)))
                    .reproduce(ctx.http.curl(&garbage)),
            );
        }
    }
}
