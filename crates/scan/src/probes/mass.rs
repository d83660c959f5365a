//! API3 (mass assignment): privileged properties that answers carry but request schemas do
//! not accept (role, balance, price, status, owner...) are sent on creates and updates of the
//! scan's own objects, and counted only when reading back shows the server took them. Updated
//! values are restored afterwards.

use std::collections::BTreeMap;

use reqwest::Method;
use serde_json::{Map, Value, json};

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::{Req, Resp};
use crate::model::{In, Op, type_of};

const PROBE: &str = "mass-assignment";

/// Property names that only the server should set.
pub(crate) fn privileged(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    if n == "id" {
        return false;
    }
    [
        "role",
        "admin",
        "permission",
        "scope",
        "balance",
        "credit",
        "price",
        "cost",
        "total",
        "amount",
        "discount",
        "status",
        "state",
        "verified",
        "approved",
        "owner",
        "user_id",
        "account_id",
        "tenant",
        "org_id",
        "plan",
        "tier",
        "quota",
        "level",
        "premium",
        "points",
        "group",
        "is_",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A value for `name` that differs from `before`, or `None` when none can be chosen.
fn tampered(
    ctx: &Ctx,
    schema: &Value,
    name: &str,
    before: Option<&Value>,
    attacker: Option<&str>,
) -> Option<Value> {
    let n = name.to_ascii_lowercase();
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        let fresh = |v: &&Value| Some(*v) != before && !v.is_null();
        let preferred = [
            "admin",
            "paid",
            "approved",
            "active",
            "verified",
            "completed",
            "shipped",
        ];
        return preferred
            .iter()
            .find_map(|p| options.iter().filter(fresh).find(|v| v.as_str() == Some(p)))
            .or_else(|| options.iter().rfind(fresh))
            .cloned();
    }
    let max = schema
        .get("maximum")
        .and_then(Value::as_i64)
        .unwrap_or(i64::MAX);
    let v = match type_of(schema) {
        "integer" | "number" => {
            if ["price", "cost", "total", "amount"]
                .iter()
                .any(|w| n.contains(w))
            {
                json!(1)
            } else {
                json!(1_000_000i64.min(max))
            }
        }
        "boolean" => json!(before.and_then(Value::as_bool).is_none_or(|b| !b)),
        "string" if n.contains("role") => json!("admin"),
        "string" if n.ends_with("_id") || n.contains("owner") => json!(attacker?),
        _ => return None,
    };
    let _ = ctx;
    (Some(&v) != before).then_some(v)
}

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    let Some(&a) = users.first() else { return };
    let attacker = users.get(1).and_then(|&b| ctx.sessions[b].subject());
    for op in ctx.model.ops.iter().filter(|o| {
        o.body.is_some()
            && !o.is_auth()
            && !o.is_admin()
            && !o.deprecated
            && !o.sensitive
            && !super::flow::looks_sensitive(o)
            && o.url_fields.is_empty()
            && matches!(o.method, Method::POST | Method::PUT | Method::PATCH)
    }) {
        probe(ctx, op, a, attacker.as_deref()).await;
    }
}

/// The object's current state as `a` sees it, and how to read it again.
async fn read_back(ctx: &Ctx, op: &Op, a: usize, id: Option<&str>, answer: &Resp) -> Option<Value> {
    let get = match op.method {
        Method::POST => ctx.model.ops.iter().find(|g| {
            g.method == Method::GET
                && g.has_path_params()
                && g.resource() == op.resource()
                && !g.deprecated
        }),
        _ => ctx.model.find(&Method::GET, &op.path),
    };
    match (get, id) {
        (Some(g), Some(id)) if g.has_path_params() => {
            let last = g
                .path_params()
                .last()
                .map(|p| p.name.clone())
                .unwrap_or_default();
            let req = Req::new(
                Method::GET,
                ctx.target(g, Some(a), &[(last.as_str(), id.to_owned())]),
            );
            ctx.send_as(req, a)
                .await
                .filter(|(_, r)| r.ok())
                .and_then(|(_, r)| r.json())
        }
        (Some(g), _) if !g.has_path_params() => ctx
            .send_as(Req::new(Method::GET, ctx.target(g, Some(a), &[])), a)
            .await
            .filter(|(_, r)| r.ok())
            .and_then(|(_, r)| r.json()),
        _ => answer.json(),
    }
}

async fn probe(ctx: &Ctx, op: &Op, a: usize, attacker: Option<&str>) {
    let (Some(req_schema), Some(resp_schema)) = (op.body.as_ref(), op.response.as_ref()) else {
        return;
    };
    let accepted = ctx.model.declared(req_schema).unwrap_or_default();
    let Some(exposed) = ctx.model.declared(resp_schema) else {
        return;
    };
    // The object to update: the scan's own (A's), or none for collection creates / `me`.
    let object_id = if op.has_path_params() {
        let res = op.resource();
        let Some(obj) = res.and_then(|r| ctx.object_of(&r, a, true)) else {
            return;
        };
        Some(obj.id)
    } else {
        None
    };
    let path = match &object_id {
        Some(id) => {
            let last = op
                .path_params()
                .last()
                .map(|p| p.name.clone())
                .unwrap_or_default();
            ctx.target(op, Some(a), &[(last.as_str(), id.clone())])
        }
        None => ctx.target(op, Some(a), &[]),
    };
    // What the object looks like before: the baseline of a create, or a read of the target.
    let before: Value = match op.method {
        Method::POST => ctx
            .baseline(op, a)
            .and_then(|s| s.resp.json())
            .unwrap_or(Value::Null),
        _ => {
            let Some(get) = ctx.model.find(&Method::GET, &op.path) else {
                return;
            };
            let _ = get;
            let Some((_, r)) = ctx.send_as(Req::new(Method::GET, path.clone()), a).await else {
                return;
            };
            r.json().unwrap_or(Value::Null)
        }
    };
    let mut extra: BTreeMap<String, Value> = BTreeMap::new();
    for name in exposed
        .iter()
        .filter(|n| !accepted.contains(*n) && privileged(n))
    {
        let Some(schema) = ctx.model.property(resp_schema, name) else {
            continue;
        };
        if schema.get("readOnly") == Some(&Value::Bool(false)) {
            continue;
        }
        if let Some(v) = tampered(ctx, schema, name, before.get(name), attacker) {
            extra.insert(name.clone(), v);
        }
    }
    if extra.is_empty() {
        return;
    }
    ctx.ran(op, PROBE);
    let mut body = match ctx.model.sample_body(op) {
        Some(Value::Object(m)) => m,
        _ => Map::new(),
    };
    for p in op.params.iter().filter(|p| p.at == In::Path) {
        body.remove(&p.name);
    }
    let mut tries: Vec<BTreeMap<String, Value>> = vec![extra.clone()];
    if extra.len() > 1 {
        tries.extend(
            extra
                .iter()
                .map(|(k, v)| BTreeMap::from([(k.clone(), v.clone())])),
        );
    }
    for (i, attempt) in tries.into_iter().enumerate() {
        let mut b = body.clone();
        b.extend(attempt.clone());
        let req = Req::new(op.method.clone(), path.clone()).json(Value::Object(b));
        let Some((req, resp)) = ctx.send_as(req, a).await else {
            return;
        };
        if !resp.ok() {
            // The combined attempt failed: try the properties one by one (a strict server
            // may refuse the lot for one bad field).
            continue;
        }
        let id = object_id.clone().or_else(|| {
            resp.json()
                .and_then(|j| j.get("id").map(crate::ctx::scalar))
        });
        if let Some(created) = id.clone().filter(|_| op.method == Method::POST)
            && let Some(res) = op.resource()
        {
            ctx.add_object(crate::ctx::Obj {
                resource: res,
                id: created,
                owner: a,
                created: true,
                shared: false,
            });
        }
        let after = read_back(ctx, op, a, id.as_deref(), &resp)
            .await
            .unwrap_or(Value::Null);
        let taken: Vec<&String> = attempt
            .iter()
            .filter(|(k, v)| {
                after.get(k.as_str()) == Some(*v) && before.get(k.as_str()) != Some(*v)
            })
            .map(|(k, _)| k)
            .collect();
        if taken.is_empty() {
            if i == 0 {
                continue;
            }
            continue;
        }
        let critical = taken
            .iter()
            .any(|k| k.contains("role") || k.contains("admin"));
        let names: Vec<String> = taken.iter().map(|k| format!("`{k}`")).collect();
        let mut f = Finding::new(
            rules::MASS_ASSIGNMENT,
            if critical { Severity::Critical } else { Severity::High },
            &op.key(),
            "",
        )
        .detail(format!(
            "The server accepted client-set privileged properties {} and stored them (confirmed by reading the object back).",
            names.join(", ")
        ))
        .evidence(ctx.http.exchange(&req, Some(&resp)))
        .reproduce(ctx.http.curl(&req));
        if let Some(e) = after.as_object().map(|_| crate::finding::Exchange {
            identity: ctx.sessions[a].name.clone(),
            request: "read back".into(),
            status: None,
            response: ctx.http.redactor().body(&after.to_string(), 1200),
        }) {
            f = f.evidence(e);
        }
        ctx.report(f);
        // Put back what an update changed (a create made a new object of the scan's own).
        if op.method != Method::POST {
            let restore: Map<String, Value> = taken
                .iter()
                .filter_map(|k| before.get(k.as_str()).map(|v| ((*k).clone(), v.clone())))
                .collect();
            if !restore.is_empty() {
                let _ = ctx
                    .send_as(
                        Req::new(op.method.clone(), path.clone()).json(Value::Object(restore)),
                        a,
                    )
                    .await;
            }
        }
        return;
    }
}
