//! An API that reads its tokens without checking their signature (any HS256 signature
//! passes): reported once, as a signature not checked, and not as key confusion or `kid`
//! injection, which a forged token's success would otherwise "prove" as well.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod common;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use portcullis_test_support::*;

const SPEC: &str = r#"openapi: 3.1.0
info: { title: careless, version: "1" }
security: [{ bearer: [] }]
paths:
  /me:
    get:
      responses:
        '200':
          description: ok
          content: { application/json: { schema: { type: object } } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
"#;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Accepts any token with an HS256 header, a payload and a non-empty signature.
async fn careless() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/me",
        axum::routing::get(|headers: HeaderMap| async move {
            use axum::response::IntoResponse;
            let token = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("");
            let parts: Vec<&str> = token.split('.').collect();
            let header = parts
                .first()
                .and_then(|h| B64.decode(h).ok())
                .and_then(|h| serde_json::from_slice::<serde_json::Value>(&h).ok());
            let payload = parts
                .get(1)
                .and_then(|p| B64.decode(p).ok())
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok());
            match (header, payload, parts.get(2)) {
                (Some(h), Some(p), Some(sig)) if h["alg"] == "HS256" && !sig.is_empty() => {
                    axum::Json(serde_json::json!({ "sub": p["sub"] })).into_response()
                }
                _ => StatusCode::UNAUTHORIZED.into_response(),
            }
        }),
    );
    serve_router(app).await
}

fn token(sub: &str) -> String {
    let claims = serde_json::json!({ "sub": sub, "iat": now(), "exp": now() + 600 });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"a real secret of the server, 256 bits long!!")
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_nobody_checks_is_reported_once_for_what_it_is() {
    let dir = common::folder("jwt-unchecked");
    std::fs::write(dir.join("api.yaml"), SPEC).unwrap();
    let (a, b) = (token("usr_a"), token("usr_b"));
    let report = common::scan(careless().await, &dir, [&a, &b], &["jwt"]).await;
    let rules: Vec<&str> = report.findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains(&"jwt-signature-unchecked"), "{rules:?}");
    for wrong in ["jwt-kid-injection", "jwt-key-confusion"] {
        assert!(!rules.contains(&wrong), "{rules:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
