//! An API that locks existing accounts after three failures and answers unknown accounts 401
//! forever (as Devise's or ASP.NET Identity's lockout does): the brute-force probe, which
//! guesses on accounts that do not exist so as to lock none, cannot tell it from an API
//! without a limit. It says so (medium, with the caveat); allowed to be destructive, it tries
//! the first identity's own account and finds the lock. An API without any limit is still
//! reported high then.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use portcullis_scan::{Identity, Report, Severity};
use portcullis_test_support::*;

const SPEC: &str = r#"openapi: 3.1.0
info: { title: accounts, version: "1" }
security: [{ bearer: [] }]
paths:
  /login:
    post:
      security: []
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                email: { type: string, format: email }
                password: { type: string, format: password }
      responses:
        '200': { description: ok }
        '401': { description: wrong }
  /me:
    get:
      responses:
        '200':
          description: ok
          content: { application/json: { schema: { type: object } } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer }
"#;

/// The accounts API; `lock` sets whether existing accounts are locked after three failures.
async fn accounts(lock: bool) -> std::net::SocketAddr {
    let failures: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let login = move |axum::Json(body): axum::Json<serde_json::Value>| {
        let failures = failures.clone();
        async move {
            use axum::response::IntoResponse;
            let email = body["email"].as_str().unwrap_or("").to_owned();
            let password = body["password"].as_str().unwrap_or("");
            let known = match email.as_str() {
                "alice@example.com" => Some("alice-pass-1"),
                "bob@example.com" => Some("bob-pass-1"),
                _ => None,
            };
            let wrong = || {
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(serde_json::json!({ "error": "wrong email or password" })),
                )
                    .into_response()
            };
            let Some(right) = known else { return wrong() };
            let mut failures = failures.lock().unwrap();
            let count = failures.entry(email.clone()).or_default();
            if lock && *count >= 3 {
                return StatusCode::LOCKED.into_response();
            }
            if password == right {
                return axum::Json(serde_json::json!({ "access_token": format!("tok-{email}") }))
                    .into_response();
            }
            *count += 1;
            wrong()
        }
    };
    let me = |headers: HeaderMap| async move {
        use axum::response::IntoResponse;
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some(v) if v.starts_with("Bearer tok-") => {
                axum::Json(serde_json::json!({ "me": v })).into_response()
            }
            _ => StatusCode::UNAUTHORIZED.into_response(),
        }
    };
    let app = axum::Router::new()
        .route("/login", axum::routing::post(login))
        .route("/me", axum::routing::get(me));
    serve_router(app).await
}

async fn scan(addr: std::net::SocketAddr, dir: &std::path::Path, destructive: bool) -> Report {
    let who = |name: &str, email: &str, password: &str| {
        Identity::login(
            name,
            "/login",
            serde_json::json!({ "email": email, "password": password }),
            "/access_token",
        )
    };
    let identities = vec![
        who("alice", "alice@example.com", "alice-pass-1"),
        who("bob", "bob@example.com", "bob-pass-1"),
    ];
    common::scan_as(addr, dir, identities, &["login"], destructive).await
}

fn brute_force(report: &Report) -> Option<Severity> {
    report
        .findings
        .iter()
        .find(|f| f.rule == "login-brute-force")
        .map(|f| f.severity)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockout_of_existing_accounts_is_told_apart_when_allowed_to_try_one() {
    let dir = common::folder("lockout");
    std::fs::write(dir.join("api.yaml"), SPEC).unwrap();
    // Unknown accounts only: not told apart, said with its caveat.
    let report = scan(accounts(true).await, &dir, false).await;
    assert_eq!(
        brute_force(&report),
        Some(Severity::Medium),
        "{:#?}",
        report.findings
    );
    // The first identity's own account tried: locked after three, no finding.
    let report = scan(accounts(true).await, &dir, true).await;
    assert_eq!(brute_force(&report), None, "{:#?}", report.findings);
    // No limit at all: high.
    let report = scan(accounts(false).await, &dir, true).await;
    assert_eq!(
        brute_force(&report),
        Some(Severity::High),
        "{:#?}",
        report.findings
    );
}
