//! API v1, kept for old clients: deprecated (RFC 9745) with a sunset date (RFC 8594). The
//! secure default authenticates and owner-checks it like v2; `legacy-v1` is the forgotten
//! version that does neither.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthUser;
use crate::config::Vuln;
use crate::error::ApiResult;
use crate::extract::{Json, Path};
use crate::routes::orders::load_order;
use crate::state::AppState;

/// 2026-01-01T00:00:00Z, the day v1 was deprecated.
pub const DEPRECATED_AT: i64 = 1_767_225_600;
pub const SUNSET: &str = "Wed, 30 Jun 2027 23:59:59 GMT";

fn deprecate(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    h.insert(
        HeaderName::from_static("deprecation"),
        HeaderValue::from_str(&format!("@{DEPRECATED_AT}"))
            .unwrap_or(HeaderValue::from_static("?1")),
    );
    h.insert(
        HeaderName::from_static("sunset"),
        HeaderValue::from_static(SUNSET),
    );
    h.insert(
        axum::http::header::LINK,
        HeaderValue::from_static("</v2/orders>; rel=\"successor-version\""),
    );
    resp
}

pub async fn get_order(
    State(state): State<AppState>,
    Path(id): Path<String>,
    mut parts: Parts,
) -> Response {
    deprecate(
        get_order_inner(&state, id, &mut parts)
            .await
            .into_response(),
    )
}

async fn get_order_inner(
    state: &AppState,
    id: String,
    parts: &mut Parts,
) -> ApiResult<impl IntoResponse> {
    let open = state.config.vulns.has(Vuln::LegacyV1);
    let owner = if open {
        None
    } else {
        Some(AuthUser::from_request_parts(parts, state).await?.id)
    };
    let row = load_order(state, id, owner).await?;
    Ok(Json(
        row.view(open || state.config.vulns.has(Vuln::DataExposure)),
    ))
}
