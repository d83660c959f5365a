//! A target that answers every path with 200 (a single-page app's fallback page in front of the
//! API): an undeclared older version or an undeclared method on an administrative path that
//! answers only that page proves nothing, and is not reported. A real older version behind the
//! same fallback still is, and so is a declared administrative operation that answers a user
//! with something else than that page (a CSV export).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use axum::http::HeaderMap;
use portcullis_test_support::*;

const SPEC: &str = r#"openapi: 3.1.0
info: { title: items, version: "2" }
security: [{ bearer: [] }]
paths:
  /v2/items:
    get:
      responses:
        '200':
          description: ok
          content: { application/json: { schema: { type: object } } }
  /admin/export:
    get:
      tags: [admin]
      responses:
        '200':
          description: every user, as CSV
          content: { text/csv: { schema: { type: string } } }
  /admin/users:
    post:
      tags: [admin]
      requestBody:
        content: { application/json: { schema: { type: object, properties: { name: { type: string } } } } }
      responses:
        '201': { description: created }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer }
"#;

/// The API, with a fallback page for every other path; `old` also serves `/v1/items`.
async fn target(old: bool) -> std::net::SocketAddr {
    let items = |headers: HeaderMap| async move {
        use axum::response::IntoResponse;
        if !headers.contains_key("authorization") {
            return axum::http::StatusCode::UNAUTHORIZED.into_response();
        }
        axum::Json(serde_json::json!({ "items": [{ "id": 1, "name": "lamp" }] })).into_response()
    };
    let mut app = axum::Router::new()
        .route("/v2/items", axum::routing::get(items))
        .route(
            "/admin/users",
            axum::routing::post(|| async { axum::http::StatusCode::FORBIDDEN }),
        );
    if old {
        // And an administrative export any user may read: no JSON, still a finding.
        app = app.route("/v1/items", axum::routing::get(items)).route(
            "/admin/export",
            axum::routing::get(|| async { ([("content-type", "text/csv")], "id,email\n1,a@x\n") }),
        );
    }
    let app = app.fallback(|| async {
        axum::response::Html("<!doctype html><html><body><div id=app></div></body></html>")
    });
    serve_router(app).await
}

async fn scan(addr: std::net::SocketAddr, dir: &std::path::Path) -> portcullis_scan::Report {
    common::scan(addr, dir, ["token-a", "token-b"], &["versions", "bfla"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_page_is_no_finding_and_a_real_old_version_still_is() {
    let dir = common::folder("catch-all");
    std::fs::write(dir.join("api.yaml"), SPEC).unwrap();

    let report = scan(target(false).await, &dir).await;
    assert!(report.reached);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);

    let report = scan(target(true).await, &dir).await;
    let old: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "old-version-exposed")
        .collect();
    assert_eq!(old.len(), 1, "{:#?}", report.findings);
    assert_eq!(old[0].operation, "GET /v1/items");
    let bfla: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "bfla")
        .map(|f| f.operation.as_str())
        .collect();
    assert_eq!(bfla, ["GET /admin/export"], "{:#?}", report.findings);
    let _ = std::fs::remove_dir_all(&dir);
}
