//! Misconfigurations the shop has no switch for, against a deliberately careless API on
//! loopback: TRACE echoing requests and CORS trusting the `null` origin with credentials.
//! And the same probes against the secure shop: nothing.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use axum::http::{HeaderMap, HeaderValue, StatusCode};
mod common;

use portcullis_scan::{Identity, ScanConfig, run};

use portcullis_test_support::*;

const SPEC: &str = r#"openapi: 3.1.0
info: { title: careless, version: "1" }
security: [{ bearer: [] }]
paths:
  /things:
    get:
      responses:
        '200':
          description: ok
          content: { application/json: { schema: { type: object, properties: { n: { type: integer } } } } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
"#;

async fn careless() -> std::net::SocketAddr {
    let app = axum::Router::new()
        .route(
            "/actuator/env",
            axum::routing::get(|| async {
                "{\"activeProfiles\":[\"prod\"],\"propertySources\":[{\"name\":\"systemEnvironment\"}]}"
            }),
        )
        .route(
        "/things",
        axum::routing::get(|headers: HeaderMap| async move {
            let mut out = HeaderMap::new();
            // Only `null` is trusted (a common "allow local files" mistake).
            if let Some(o) = headers.get("origin").filter(|o| *o == "null") {
                out.insert("access-control-allow-origin", o.clone());
                out.insert(
                    "access-control-allow-credentials",
                    HeaderValue::from_static("true"),
                );
            }
            if headers.get("authorization").is_none() {
                return (StatusCode::UNAUTHORIZED, out, String::new());
            }
            (StatusCode::OK, out, "{\"n\":1}".to_owned())
        })
        .fallback(|req: axum::extract::Request| async move {
            // TRACE: the request echoed back, as old servers do.
            let echo: String = req
                .headers()
                .iter()
                .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
                .collect();
            (
                StatusCode::OK,
                format!("{} {}\n{echo}", req.method(), req.uri()),
            )
        }),
    );
    serve_router(app).await
}

#[tokio::test]
async fn trace_and_the_null_origin_are_found_where_they_are_and_not_elsewhere() {
    let addr = careless().await;
    let dir = common::folder("careless");
    std::fs::write(dir.join("api.yaml"), SPEC).unwrap();
    let report = common::scan(addr, &dir, ["token-a", "token-b"], &["misconfig"]).await;
    let rules: Vec<_> = report
        .findings
        .iter()
        .map(|f| (f.rule, f.detail.clone()))
        .collect();
    assert!(
        rules.iter().any(|(r, _)| *r == "trace-enabled"),
        "{rules:?}"
    );
    // Of the well-known debug paths, the one it really serves is reported, once.
    let debug: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "debug-endpoint-exposed")
        .map(|f| f.operation.clone())
        .collect();
    assert_eq!(debug, ["GET /actuator/env"], "{rules:?}");
    assert!(
        rules
            .iter()
            .any(|(r, d)| *r == "cors-permissive" && d.contains("`null` origin")),
        "{rules:?}"
    );

    // The secure shop: neither.
    let shop = Shop::secure().await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.identities = vec![
        Identity::bearer("alice", &a.access),
        Identity::bearer("bob", &b.access),
    ];
    config.probes = vec!["misconfig".into()];
    let report = run(config).await.unwrap();
    assert!(
        report.findings.iter().all(|f| !matches!(
            f.rule,
            "trace-enabled" | "cors-permissive" | "debug-endpoint-exposed"
        )),
        "{}",
        report.summary()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
