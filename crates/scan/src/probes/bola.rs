//! API1 (broken object level authorization): user A's objects requested by user B. A read
//! counts only when B's answer is A's object; a write only when A then reads B's change; a
//! delete only when A then finds the object gone. Deletes target a fresh object the scan
//! creates as A for the purpose.

use reqwest::Method;
use serde_json::Value;

use super::same_object;
use crate::ctx::{Ctx, Obj};
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;
use crate::model::{In, Op, type_of};

const PROBE: &str = "bola";

pub(crate) async fn run(ctx: &Ctx) {
    let users = ctx.users();
    let (Some(&a), Some(&b)) = (users.first(), users.get(1)) else {
        ctx.note("bola: needs two non-admin identities (user A and user B); skipped");
        return;
    };
    if let (Some(sa), Some(sb)) = (ctx.sessions[a].subject(), ctx.sessions[b].subject())
        && sa == sb
    {
        ctx.note("bola: identities A and B are the same user; skipped");
        return;
    }
    let targets: Vec<&Op> = ctx
        .model
        .ops
        .iter()
        .filter(|o| {
            o.secured && o.has_path_params() && !o.deprecated && !o.is_admin() && !o.is_auth()
        })
        .collect();
    for op in targets.iter().filter(|o| o.method == Method::GET) {
        read(ctx, op, a, b).await;
    }
    for op in targets
        .iter()
        .filter(|o| matches!(o.method, Method::PATCH | Method::PUT))
    {
        write(ctx, op, a, b).await;
    }
    for op in targets.iter().filter(|o| o.method == Method::DELETE) {
        delete(ctx, op, a, b).await;
    }
}

/// The GET operation on the same path, to read an object back.
fn reader<'a>(ctx: &'a Ctx, op: &Op) -> Option<&'a Op> {
    ctx.model.find(&Method::GET, &op.path)
}

async fn read(ctx: &Ctx, op: &Op, a: usize, b: usize) {
    let Some(res) = op.resource() else { return };
    if ctx.object_of(&res, a, false).is_none() {
        return;
    }
    let Some(own) = ctx.baseline(op, a).filter(|s| s.resp.ok()) else {
        return;
    };
    let Some(own_json) = own.resp.json() else {
        return;
    };
    ctx.ran(op, PROBE);
    let mut req = own.req.clone();
    req.auth = None;
    let Some((req, resp)) = ctx.send_as(req, b).await else {
        return;
    };
    if resp.ok() && resp.json().is_some_and(|j| same_object(&own_json, &j)) {
        ctx.report(
            Finding::new(rules::BOLA_READ, Severity::High, &op.key(), "")
                .detail(format!(
                    "{} read an object owned by {} by its id: the answer ({}) is {}'s object.",
                    ctx.sessions[b].name, ctx.sessions[a].name, resp.status, ctx.sessions[a].name
                ))
                .evidence(ctx.http.exchange(&own.req, Some(&own.resp)))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
    }
}

/// A string property of the body that can carry a visible marker.
fn marker_field(ctx: &Ctx, op: &Op, body: &Value) -> Option<String> {
    let schema = op.body.as_ref()?;
    let props = ctx.model.declared(schema)?;
    let obj = body.as_object()?;
    props.into_iter().find(|p| {
        let Some(s) = ctx.model.property(schema, p) else {
            return false;
        };
        type_of(s) == "string"
            && s.get("enum").is_none()
            && s.get("format").is_none()
            && s.get("maxLength")
                .and_then(Value::as_u64)
                .is_none_or(|m| m >= 24)
            && s.get("pattern")
                .and_then(Value::as_str)
                .is_none_or(|pat| pat.starts_with("^[^"))
            && (obj.contains_key(p) || obj.is_empty())
            && !p.contains("id")
    })
}

async fn write(ctx: &Ctx, op: &Op, a: usize, b: usize) {
    let Some(res) = op.resource() else { return };
    let Some(obj) = ctx.object_of(&res, a, true) else {
        return;
    };
    let Some(get) = reader(ctx, op) else { return };
    let Some(mut body) = ctx.model.sample_body(op) else {
        return;
    };
    let Some(field) = marker_field(ctx, op, &body) else {
        return;
    };
    let marker = format!("Portcullis BOLA probe {}", super::tag());
    if let Value::Object(m) = &mut body {
        m.insert(field.clone(), Value::String(marker.clone()));
    }
    ctx.ran(op, PROBE);
    let path = ctx.target(op, Some(a), &[(last_param(op), obj.id.clone())]);
    let req = Req::new(op.method.clone(), path.clone()).json(body);
    let Some((req, resp)) = ctx.send_as(req, b).await else {
        return;
    };
    if !resp.ok() {
        return;
    }
    let check = Req::new(
        Method::GET,
        ctx.target(get, Some(a), &[(last_param(get), obj.id.clone())]),
    );
    let Some((check, after)) = ctx.send_as(check, a).await else {
        return;
    };
    let changed = after
        .json()
        .and_then(|j| j.get(&field).cloned())
        .is_some_and(|v| v == Value::String(marker.clone()));
    if changed {
        ctx.report(
            Finding::new(rules::BOLA_WRITE, Severity::High, &op.key(), "")
                .detail(format!(
                    "{} changed `{field}` of an object owned by {}; {} reads the change back.",
                    ctx.sessions[b].name, ctx.sessions[a].name, ctx.sessions[a].name
                ))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .evidence(ctx.http.exchange(&check, Some(&after)))
                .reproduce(ctx.http.curl(&req)),
        );
    }
}

fn last_param(op: &Op) -> &str {
    op.params
        .iter()
        .rfind(|p| p.at == In::Path)
        .map_or("id", |p| p.name.as_str())
}

/// A fresh object of `resource` created as `a`, for a destructive test.
async fn fresh_object(ctx: &Ctx, resource: &str, a: usize) -> Option<Obj> {
    let create = ctx.model.ops.iter().find(|o| {
        crate::probes::baseline::creatable(o) && o.resource().as_deref() == Some(resource)
    })?;
    let (_, resp) = ctx.send_as(ctx.request(create, Some(a)), a).await?;
    let before = ctx.object_of(resource, a, true).map(|o| o.id);
    ctx.harvest(create, a, &resp);
    ctx.object_of(resource, a, true)
        .filter(|o| Some(&o.id) != before.as_ref())
}

async fn delete(ctx: &Ctx, op: &Op, a: usize, b: usize) {
    let Some(res) = op.resource() else { return };
    let Some(get) = reader(ctx, op) else { return };
    let obj = match fresh_object(ctx, &res, a).await {
        Some(o) => o,
        None if ctx.config.allow_destructive => match ctx.object_of(&res, a, false) {
            Some(o) => o,
            None => return,
        },
        None => return,
    };
    ctx.ran(op, PROBE);
    let read = |who| {
        let r = Req::new(
            Method::GET,
            ctx.target(get, Some(a), &[(last_param(get), obj.id.clone())]),
        );
        ctx.send_as(r, who)
    };
    // It must exist for A first, or a 404 afterwards proves nothing.
    let Some((_, first)) = read(a).await else {
        return;
    };
    if !first.ok() {
        return;
    }
    let req = Req::new(
        Method::DELETE,
        ctx.target(op, Some(a), &[(last_param(op), obj.id.clone())]),
    );
    let Some((req, resp)) = ctx.send_as(req, b).await else {
        return;
    };
    if !resp.ok() {
        return;
    }
    let Some((check, after)) = read(a).await else {
        return;
    };
    if matches!(after.status, 404 | 410) {
        ctx.report(
            Finding::new(rules::BOLA_DELETE, Severity::High, &op.key(), "")
                .detail(format!(
                    "{} deleted an object owned by {}; {} now gets {} for it.",
                    ctx.sessions[b].name, ctx.sessions[a].name, ctx.sessions[a].name, after.status
                ))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .evidence(ctx.http.exchange(&check, Some(&after)))
                .reproduce(ctx.http.curl(&req)),
        );
    }
}
