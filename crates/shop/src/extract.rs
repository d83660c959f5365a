//! Axum's extractors with their rejections turned into problem+json.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode};

use crate::error::{ApiError, ApiResult};

/// A JSON body; malformed, mistyped, oversized or unknown-field bodies become 4xx problems.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl<T: serde::Serialize> axum::response::IntoResponse for Json<T> {
    fn into_response(self) -> axum::response::Response {
        axum::Json(self.0).into_response()
    }
}

/// Path parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

/// Query parameters.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct Query<T>(pub T);

/// A JSON body read as bytes, for handlers that choose the target type at run time (the
/// strict type, or the open one of `mass-assignment`). Content type and size are checked here.
#[derive(Debug)]
pub struct RawJson(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawJson {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> ApiResult<Self> {
        require_json(req.headers())?;
        Ok(RawJson(Bytes::from_request(req, state).await?))
    }
}

/// The content-type check of the `Json` extractor, for handlers that parse bodies themselves.
pub fn require_json(headers: &HeaderMap) -> ApiResult<()> {
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unsupported Media Type",
            "expected `Content-Type: application/json`",
        ))
    }
}

/// Parses a JSON body the way the `Json` extractor does, for handlers that pick the target
/// type at run time.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = T::deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    value.map_err(|e| match e.classify() {
        serde_json::error::Category::Data => {
            let msg = e.to_string();
            let field = msg.split(" at line").next().unwrap_or("").to_owned();
            if field.starts_with("unknown field") || field.starts_with("missing field") {
                ApiError::unprocessable(field)
            } else {
                ApiError::unprocessable("the body does not match the expected schema")
            }
            .with_internal(msg)
        }
        _ => ApiError::bad_request("the body is not valid JSON").with_internal(e.to_string()),
    })
}
