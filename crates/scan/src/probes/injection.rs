//! SQL injection in string parameters of read operations, two ways: error-based (a lone
//! quote breaks the query, a doubled quote does not) and boolean differential (a tautology
//! and a contradiction give different answers, while two contradictions agree).

use reqwest::Method;

use super::stable;
use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::{Req, Resp};
use crate::model::{In, Op, type_of};

const PROBE: &str = "injection";
const MAX_PARAMS: usize = 12;

fn same(a: &Resp, b: &Resp) -> bool {
    if a.status != b.status {
        return false;
    }
    match (a.json(), b.json()) {
        (Some(x), Some(y)) => stable(&x) == stable(&y),
        _ => a.text == b.text,
    }
}

pub(crate) async fn run(ctx: &Ctx) {
    let who = ctx.users().first().copied();
    let mut budget = MAX_PARAMS;
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && !o.is_admin() && !o.deprecated && !o.is_auth())
    {
        for p in op
            .params
            .iter()
            .filter(|p| matches!(p.at, In::Query | In::Path))
        {
            let s = ctx.model.resolve(&p.schema);
            if type_of(s) != "string" || s.get("enum").is_some() || s.get("format").is_some() {
                continue;
            }
            if budget == 0 {
                return;
            }
            budget -= 1;
            ctx.ran(op, PROBE);
            let base = ctx
                .param_value(op, &p.name, who)
                .unwrap_or_else(|| "portcullis".into());
            if let Some(f) = probe(ctx, op, &p.name, &base, who).await {
                ctx.report(f);
            }
        }
    }
}

async fn probe(ctx: &Ctx, op: &Op, param: &str, base: &str, who: Option<usize>) -> Option<Finding> {
    let send = |value: String| async move {
        let req = Req::new(Method::GET, ctx.target(op, who, &[(param, value)]));
        match (op.secured, who) {
            (true, Some(w)) => ctx.send_as(req, w).await,
            _ => ctx.send(&req).await.map(|r| (req, r)),
        }
    };
    let (quote_req, quote) = send(format!("{base}'")).await?;
    let (_, doubled) = send(format!("{base}''")).await?;
    let leak = super::misconfig::leak_signature(&quote.text)
        .filter(|_| super::misconfig::leak_signature(&doubled.text).is_none());
    if (quote.status >= 500 && doubled.status < 500)
        || (quote.status >= 400 && leak == Some("SQL text"))
        || leak == Some("database error")
    {
        return Some(
            Finding::new(rules::SQLI, Severity::High, &op.key(), param)
                .detail(format!(
                    "Parameter `{param}`: a lone quote is answered {} while a doubled quote is answered {}: the value is spliced into SQL.",
                    quote.status, doubled.status
                ))
                .evidence(ctx.http.exchange(&quote_req, Some(&quote)))
                .reproduce(ctx.http.curl(&quote_req)),
        );
    }
    for (t, f1, f2) in [
        ("' OR 1=1 -- ", "' AND 1=2 -- ", "' AND 2=3 -- "),
        ("\" OR 1=1 -- ", "\" AND 1=2 -- ", "\" AND 2=3 -- "),
    ] {
        let (treq, tr) = send(format!("{base}{t}")).await?;
        let (_, fr) = send(format!("{base}{f1}")).await?;
        if !tr.ok() || same(&tr, &fr) {
            continue;
        }
        let (_, fr2) = send(format!("{base}{f2}")).await?;
        if same(&fr, &fr2) && tr.text.len() > fr.text.len() {
            return Some(
                Finding::new(rules::SQLI, Severity::High, &op.key(), param)
                    .detail(format!(
                        "Parameter `{param}`: appending `{}` returns more data ({} bytes) than `{}` ({} bytes), which agrees with `{}`: the value is evaluated as SQL.",
                        t.trim(), tr.text.len(), f1.trim(), fr.text.len(), f2.trim()
                    ))
                    .evidence(ctx.http.exchange(&treq, Some(&tr)))
                    .reproduce(ctx.http.curl(&treq)),
            );
        }
    }
    None
}
