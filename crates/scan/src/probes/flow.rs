//! API6 (unrestricted access to sensitive business flows): an operation marked sensitive
//! (`x-portcullis-sensitive: true`, the configuration, or a redeem/coupon/voucher path) is
//! repeated by one user; if every repetition succeeds, nothing limits the flow.

use reqwest::Method;

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::model::Op;

const PROBE: &str = "business-flow";
const REPEATS: usize = 6;

/// Paths that name a flow worth abusing.
pub(crate) fn looks_sensitive(op: &Op) -> bool {
    let p = op.path.to_ascii_lowercase();
    op.method == Method::POST
        && [
            "redeem",
            "coupon",
            "voucher",
            "giftcard",
            "gift-card",
            "referral",
            "vote",
        ]
        .iter()
        .any(|w| p.contains(w))
}

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    // The last user: the first (A) is the victim other probes rely on.
    let Some(&who) = users.last() else { return };
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| (o.sensitive || looks_sensitive(o)) && !o.deprecated)
    {
        ctx.ran(op, PROBE);
        let mut ok = 0;
        let mut last = None;
        for _ in 0..REPEATS {
            let Some((req, resp)) = ctx.send_as(ctx.request(op, Some(who)), who).await else {
                break;
            };
            if !resp.ok() {
                break;
            }
            ok += 1;
            last = Some((req, resp));
        }
        if ok == REPEATS
            && let Some((req, resp)) = last
        {
            ctx.report(
                Finding::new(rules::BUSINESS_FLOW, Severity::Medium, &op.key(), "")
                    .detail(format!(
                        "{} repeated this sensitive operation {REPEATS} times with the same input and every attempt succeeded.",
                        ctx.sessions[who].name
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }
}
