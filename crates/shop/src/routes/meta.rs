//! Health, the API description and, when tokens are RS256, the public key set.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde_json::json;

use crate::extract::Json;
use crate::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

pub async fn openapi(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.spec_json.clone(),
    )
}

/// The public signing key as a JWK set; 404 when tokens are HMAC-signed.
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    match state.keys.rsa() {
        Some(rsa) => Json(rsa.jwks.clone()).into_response(),
        None => crate::error::ApiError::not_found().into_response(),
    }
}
