//! The baseline: every readable operation called once by every identity (and anonymously),
//! creations first, so that later probes have each identity's own objects and know what a
//! legitimate answer looks like.

use reqwest::Method;

use crate::ctx::Ctx;
use crate::model::Op;

/// Creations the baseline may perform: POSTs on collections that are not auth, admin,
/// sensitive or URL-fetching operations.
pub(crate) fn creatable(op: &Op) -> bool {
    op.method == Method::POST
        && !op.has_path_params()
        && !op.is_auth()
        && !op.is_admin()
        && !op.sensitive
        && !crate::probes::flow::looks_sensitive(op)
        && op.url_fields.is_empty()
        && !op.deprecated
}

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    for op in ctx.model.ops.iter().filter(|o| creatable(o)) {
        for &u in &users {
            let req = ctx.request(op, Some(u));
            if let Some((req, resp)) = ctx.send_as(req, u).await {
                ctx.harvest(op, u, &resp);
                ctx.record_baseline(op, u, req, resp);
            }
        }
    }
    // Collections before items, so item paths can use harvested ids.
    let mut gets: Vec<&Op> = ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET)
        .collect();
    gets.sort_by_key(|o| o.path.ends_with('}'));
    for op in gets {
        for who in 0..ctx.sessions.len() {
            let req = ctx.request(op, Some(who));
            if let Some((req, resp)) = ctx.send_as(req, who).await {
                ctx.harvest(op, who, &resp);
                ctx.record_baseline(op, who, req, resp);
            }
        }
    }
}
