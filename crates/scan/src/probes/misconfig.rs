//! API8 (security misconfiguration): missing security headers and version banners (passive,
//! from the baseline), permissive CORS (a preflight from an origin nobody would trust), and
//! verbose errors provoked by malformed input.

use reqwest::Method;

use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;
use crate::model::In;

const PROBE: &str = "misconfig";
const EVIL_ORIGIN: &str = "https://evil.portcullis-scan.example";

pub(crate) async fn run(ctx: &Ctx) {
    headers(ctx);
    cors(ctx).await;
    trace(ctx).await;
    debug_endpoints(ctx).await;
    verbose_errors(ctx).await;
}

/// Well-known debug and management paths, with what their answer looks like when they are
/// real (so a catch-all 200 page is not taken for one).
const DEBUG_PATHS: &[(&str, &[&str])] = &[
    ("/actuator/env", &["propertysources", "activeprofiles"]),
    ("/actuator/heapdump", &["java profile"]),
    ("/actuator", &["\"_links\""]),
    (
        "/.env",
        &["db_password", "secret_key", "aws_secret", "database_url"],
    ),
    ("/debug/pprof/", &["goroutine", "heap"]),
    ("/debug/vars", &["memstats", "cmdline"]),
    ("/server-status", &["apache server status"]),
    ("/phpinfo.php", &["phpinfo()", "php version"]),
    ("/_profiler/", &["symfony profiler"]),
    ("/__debug__/", &["django debug"]),
    ("/console", &["werkzeug", "interactive console"]),
    ("/graphiql", &["graphiql"]),
];

/// Debug and management endpoints answering anonymous callers (API8/API9).
async fn debug_endpoints(ctx: &Ctx) {
    for (path, signs) in DEBUG_PATHS {
        let req = Req::new(Method::GET, (*path).to_owned());
        let Some(resp) = ctx.send(&req).await else {
            return;
        };
        let body = resp.text.to_ascii_lowercase();
        if resp.ok() && signs.iter().any(|s| body.contains(s)) {
            ctx.report(
                Finding::new(
                    rules::DEBUG_ENDPOINT,
                    Severity::High,
                    &format!("GET {path}"),
                    "",
                )
                .detail(format!(
                    "`{path}` answers anonymous callers with debugging or management data."
                ))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
            );
        }
    }
}

/// TRACE answered 200 with the request echoed (a marker header comes back in the body).
async fn trace(ctx: &Ctx) {
    let Some(op) = ctx.model.ops.iter().find(|o| o.method == Method::GET) else {
        return;
    };
    let path = ctx.target(op, None, &[]);
    let marker = "portcullis-trace-7f3a";
    let req = Req::new(Method::TRACE, path).header("X-Portcullis-Trace", marker);
    let Some(resp) = ctx.send(&req).await else {
        return;
    };
    if resp.ok() && resp.text.contains(marker) {
        ctx.report(
            Finding::new(rules::TRACE, Severity::Low, &op.key(), "")
                .detail("TRACE echoes the request back, headers included: with a cross-site request, cookies and Authorization can be read back (Cross-Site Tracing).".to_owned())
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
    }
}

fn headers(ctx: &Ctx) {
    let mut missing_seen: Option<(Vec<&str>, crate::ctx::Seen)> = None;
    let mut banner_seen: Option<(String, crate::ctx::Seen)> = None;
    for ((key, who), seen) in ctx.all_baseline() {
        let op = ctx.model.ops.iter().find(|o| o.key() == key);
        if let Some(op) = op {
            ctx.ran(op, PROBE);
        }
        let r = &seen.resp;
        let mut missing = Vec::new();
        if r.header("x-content-type-options")
            .is_none_or(|v| !v.eq_ignore_ascii_case("nosniff"))
        {
            missing.push("X-Content-Type-Options: nosniff");
        }
        let csp = r.header("content-security-policy").unwrap_or("");
        if r.header("x-frame-options").is_none() && !csp.contains("frame-ancestors") {
            missing.push("X-Frame-Options or CSP frame-ancestors");
        }
        if csp.is_empty() {
            missing.push("Content-Security-Policy");
        }
        // Private data is what must not be cached: an answer to an identity on an operation
        // the description secures (a public document fetched with a token may be cached).
        let authenticated = !ctx.sessions[who].is_anonymous() && op.is_none_or(|o| o.secured);
        let cc = r.header("cache-control").unwrap_or("").to_ascii_lowercase();
        if authenticated && r.ok() && !cc.contains("no-store") && !cc.contains("private") {
            missing.push("Cache-Control: no-store (authenticated answer)");
        }
        if !missing.is_empty()
            && missing_seen
                .as_ref()
                .is_none_or(|(m, _)| missing.len() > m.len())
        {
            missing_seen = Some((missing, seen.clone()));
        }
        let mut banners = Vec::new();
        if let Some(s) = r
            .header("server")
            .filter(|s| s.chars().any(|c| c.is_ascii_digit()))
        {
            banners.push(format!("Server: {s}"));
        }
        for h in [
            "x-powered-by",
            "x-aspnet-version",
            "x-aspnetmvc-version",
            "x-runtime",
            "x-generator",
        ] {
            if let Some(v) = r.header(h) {
                banners.push(format!("{h}: {v}"));
            }
        }
        if !banners.is_empty() && banner_seen.is_none() {
            banner_seen = Some((banners.join("; "), seen.clone()));
        }
    }
    if let Some((missing, seen)) = missing_seen {
        ctx.report(
            Finding::new(rules::HEADERS, Severity::Low, "*", "")
                .detail(format!(
                    "Answers lack security headers: {}.",
                    missing.join(", ")
                ))
                .evidence(ctx.http.exchange(&seen.req, Some(&seen.resp)))
                .reproduce(ctx.http.curl(&seen.req)),
        );
    }
    if let Some((banners, seen)) = banner_seen {
        ctx.report(
            Finding::new(rules::BANNER, Severity::Low, "*", "")
                .detail(format!("Answers name software versions: {banners}."))
                .evidence(ctx.http.exchange(&seen.req, Some(&seen.resp)))
                .reproduce(ctx.http.curl(&seen.req)),
        );
    }
}

async fn cors(ctx: &Ctx) {
    // An authenticated read is what a hostile page would want to read cross-origin.
    let users = ctx.users();
    let Some(&a) = users.first() else { return };
    let Some(op) = ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && o.secured && !o.deprecated && !o.is_admin())
        .find(|o| ctx.baseline(o, a).is_some_and(|s| s.resp.ok()))
    else {
        return;
    };
    ctx.ran(op, PROBE);
    let path = ctx.target(op, Some(a), &[]);
    let preflight = Req::new(Method::OPTIONS, path.clone())
        .header("Origin", EVIL_ORIGIN)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization");
    let simple = ctx.as_who(
        Req::new(Method::GET, path.clone()).header("Origin", EVIL_ORIGIN),
        a,
    );
    // `null` is what sandboxed iframes and local files send: trusting it trusts any page.
    let null = ctx.as_who(Req::new(Method::GET, path).header("Origin", "null"), a);
    for req in [preflight, simple, null] {
        let Some(resp) = ctx.send(&req).await else {
            continue;
        };
        let acao = resp.header("access-control-allow-origin").unwrap_or("");
        let creds = resp
            .header("access-control-allow-credentials")
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (sev, what) = match (acao, creds) {
            (o, true) if o == EVIL_ORIGIN => (
                Severity::High,
                "reflects an arbitrary Origin and allows credentials",
            ),
            (o, false) if o == EVIL_ORIGIN => (Severity::Medium, "reflects an arbitrary Origin"),
            ("*", true) => (Severity::Medium, "allows any origin (`*`) with credentials"),
            ("*", false) => (
                Severity::Low,
                "allows any origin (`*`) on an authenticated operation",
            ),
            ("null", true) => (
                Severity::High,
                "trusts the `null` origin (sandboxed iframes, local files) with credentials",
            ),
            _ => continue,
        };
        ctx.report(
            Finding::new(rules::CORS, sev, &op.key(), "")
                .detail(format!("The CORS policy {what}: any web page can read the answers with the visitor's credentials."))
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
        return;
    }
}

/// Text that betrays internals in an error answer.
pub(crate) fn leak_signature(body: &str) -> Option<&'static str> {
    let b = body.to_ascii_lowercase();
    let sql = (b.contains("select ") && b.contains(" from "))
        || b.contains("insert into")
        || b.contains("update ") && b.contains(" set ");
    [
        ("backtrace", b.contains("backtrace")),
        (
            "stack trace",
            b.contains("stack trace")
                || b.contains("stacktrace")
                || b.contains("traceback (most recent call last)"),
        ),
        ("panic message", b.contains("panicked at")),
        (
            "source file path",
            b.contains(".rs:")
                || b.contains("/src/")
                || b.contains(".py\"")
                || b.contains(".java:")
                || b.contains("/home/")
                || b.contains("c:\\"),
        ),
        (
            "exception class",
            b.contains("exception in thread")
                || b.contains("at java.")
                || b.contains("org.hibernate"),
        ),
        ("SQL text", sql),
        (
            "database error",
            b.contains("sqlstate")
                || b.contains("sqlite")
                || b.contains("syntax error at or near")
                || b.contains("database error")
                || b.contains("mysql")
                || b.contains("ora-0"),
        ),
        (
            "parser internals",
            b.contains("eof while parsing")
                || b.contains("expected value at line")
                || b.contains("serde"),
        ),
    ]
    .into_iter()
    .find_map(|(name, hit)| hit.then_some(name))
}

async fn verbose_errors(ctx: &Ctx) {
    let users = ctx.users();
    let who = users.first().copied();
    let mut tried = 0;
    for op in ctx
        .model
        .ops
        .iter()
        .filter(|o| !o.is_auth() && !o.is_admin() && !o.deprecated)
    {
        if tried >= 8 {
            break;
        }
        let mut probes = Vec::new();
        if op.body.is_some() && op.method != Method::GET {
            probes.push(
                Req::new(op.method.clone(), ctx.target(op, who, &[]))
                    .raw("application/json", "{\"portcullis\": "),
            );
        }
        if op.method == Method::GET {
            let bad = op
                .params
                .iter()
                .find(|p| p.at == In::Query && crate::model::type_of(&p.schema) == "integer")
                .map(|p| (p.name.as_str(), "portcullis'\"<>".to_owned()));
            if let Some(over) = bad {
                probes.push(Req::new(Method::GET, ctx.target(op, who, &[over])));
            }
        }
        for req in probes {
            tried += 1;
            ctx.ran(op, PROBE);
            let sent = match (op.secured, who) {
                (true, Some(w)) => ctx.send_as(req, w).await,
                _ => ctx.send(&req).await.map(|r| (req, r)),
            };
            let Some((req, resp)) = sent else { continue };
            if resp.status < 400 {
                continue;
            }
            if let Some(sig) = leak_signature(&resp.text) {
                ctx.report(
                    Finding::new(rules::VERBOSE_ERRORS, Severity::Medium, &op.key(), "")
                        .detail(format!("A malformed request is answered {} with an error that reveals internals ({sig}).", resp.status))
                        .evidence(ctx.http.exchange(&req, Some(&resp)))
                        .reproduce(ctx.http.curl(&req)),
                );
            }
        }
    }
}
