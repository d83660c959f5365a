//! API7 (server side request forgery): every URL-valued body field (`format: uri`, or marked
//! `x-portcullis-ssrf`) is pointed at the scan's own loopback canary. A request arriving at
//! the canary is the proof; nothing else is ever used as an SSRF target.

use std::time::Duration;

use serde_json::Value;

use crate::canary::Canary;
use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;

const PROBE: &str = "ssrf";

/// Sets the value at a body pointer (`*` meaning the first array item), creating objects.
fn set(body: &mut Value, ptr: &str, v: Value) {
    let mut cur = body;
    let segs: Vec<&str> = ptr.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if seg == "*" {
            if !cur.is_array() {
                *cur = Value::Array(vec![Value::Null]);
            }
            let Value::Array(a) = cur else { return };
            if a.is_empty() {
                a.push(Value::Null);
            }
            cur = &mut a[0];
        } else {
            if !cur.is_object() {
                *cur = Value::Object(Default::default());
            }
            let Value::Object(m) = cur else { return };
            cur = m.entry(seg).or_insert(Value::Null);
        }
        if last {
            *cur = v.clone();
        }
    }
}

pub(crate) async fn run(ctx: &Ctx) {
    let ops: Vec<_> = ctx
        .model
        .ops
        .iter()
        .filter(|o| !o.url_fields.is_empty() && !o.is_admin() && !o.deprecated && !o.is_auth())
        .collect();
    if ops.is_empty() {
        return;
    }
    let canary = match Canary::start().await {
        Ok(c) => c,
        Err(e) => {
            ctx.note(format!("ssrf: {e}; skipped"));
            return;
        }
    };
    let who = ctx.users().first().copied();
    for (n, op) in ops.into_iter().enumerate() {
        for (k, field) in op.url_fields.iter().enumerate() {
            let marker = format!("portcullis-ssrf-{n}-{k}-{}", super::tag());
            let url = format!("http://{}/latest/meta-data/{marker}", canary.addr);
            let mut body = ctx
                .model
                .sample_body(op)
                .unwrap_or(Value::Object(Default::default()));
            set(&mut body, field, Value::String(url));
            ctx.ran(op, PROBE);
            let req = Req::new(op.method.clone(), ctx.target(op, who, &[])).json(body);
            let sent = match (op.secured, who) {
                (true, Some(w)) => ctx.send_as(req, w).await,
                _ => ctx.send(&req).await.map(|r| (req, r)),
            };
            let Some((req, resp)) = sent else { continue };
            // The fetch may be asynchronous (webhooks): give it a moment.
            let mut hit = canary.hit(&marker);
            for _ in 0..10 {
                if hit.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                hit = canary.hit(&marker);
            }
            if let Some(line) = hit {
                let mut ex = ctx.http.exchange(&req, Some(&resp));
                ex.response
                    .push_str(&format!("\n\n[canary on {} received: {line}]", canary.addr));
                ctx.report(
                    Finding::new(rules::SSRF, Severity::High, &op.key(), field)
                        .detail(format!(
                            "The server fetched the URL given in `{field}`: the scan's loopback canary received `{line}`. Internal services and cloud metadata are reachable the same way."
                        ))
                        .evidence(ex)
                        .reproduce(ctx.http.curl(&req)),
                );
            }
        }
    }
}
