//! Every failure the shop can answer with, as one type rendered in one place: an RFC 9457
//! `application/problem+json` body with the request id.
//!
//! In the secure default the body says what the client did wrong and nothing about the server.
//! Under `verbose-errors` it also carries the internal message, the source location, a
//! backtrace and, for database errors, the SQL text: the leak that switch exists to show.

use std::backtrace::Backtrace;
use std::borrow::Cow;
use std::panic::Location;

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

tokio::task_local! {
    static CTX: RequestCtx;
}

/// What an error needs to know about the request it answers.
#[derive(Clone, Debug)]
pub(crate) struct RequestCtx {
    pub(crate) id: String,
    pub(crate) verbose: bool,
}

impl RequestCtx {
    pub(crate) async fn scope<F: Future>(self, f: F) -> F::Output {
        CTX.scope(self, f).await
    }

    fn current() -> Option<RequestCtx> {
        CTX.try_with(Clone::clone).ok()
    }
}

/// A failure that becomes a problem+json response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    title: &'static str,
    detail: Cow<'static, str>,
    /// Never shown in the secure default; logged, and shown under `verbose-errors`.
    internal: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    location: &'static Location<'static>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    #[track_caller]
    pub fn new(
        status: StatusCode,
        title: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            status,
            title,
            detail: detail.into(),
            internal: None,
            headers: Vec::new(),
            location: Location::caller(),
        }
    }

    #[track_caller]
    pub fn bad_request(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "Bad Request", detail)
    }

    #[track_caller]
    pub fn unprocessable(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Unprocessable Content",
            detail,
        )
    }

    #[track_caller]
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "a valid access token is required",
        )
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }

    #[track_caller]
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "this operation needs a role you do not have",
        )
    }

    #[track_caller]
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Not Found", "no such resource")
    }

    #[track_caller]
    pub fn conflict(detail: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", detail)
    }

    #[track_caller]
    pub fn too_many(retry_after_secs: u64) -> Self {
        let secs = retry_after_secs.max(1);
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "slow down and retry later",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
    }

    /// A failure of the server itself: the client learns nothing but the request id.
    #[track_caller]
    pub fn internal(internal: impl Into<String>) -> Self {
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal Server Error",
            "the server could not complete the request",
        );
        e.internal = Some(internal.into());
        e
    }

    /// A database failure; `sql` is kept for the log and for `verbose-errors`.
    #[track_caller]
    pub fn db(sql: &str, err: &rusqlite::Error) -> Self {
        Self::internal(format!("database error: {err}; query: {sql}"))
    }

    pub fn with_detail(mut self, detail: impl Into<Cow<'static, str>>) -> Self {
        self.detail = detail.into();
        self
    }

    pub fn with_internal(mut self, internal: impl Into<String>) -> Self {
        self.internal = Some(internal.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.title,
            self.detail
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ctx = RequestCtx::current();
        let request_id = ctx.as_ref().map(|c| c.id.as_str()).unwrap_or("-");
        if self.status.is_server_error() {
            tracing::error!(
                request_id,
                status = self.status.as_u16(),
                location = %self.location,
                internal = self.internal.as_deref().unwrap_or(""),
                "request failed"
            );
        }
        let mut body = json!({
            "type": "about:blank",
            "title": self.title,
            "status": self.status.as_u16(),
            "detail": self.detail,
            "request_id": request_id,
        });
        if ctx.as_ref().is_some_and(|c| c.verbose) {
            body["exception"] = json!(self.internal.as_deref().unwrap_or(&self.detail));
            body["location"] = json!(self.location.to_string());
            body["source_file"] = json!(
                std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
                    .join(self.location.file())
                    .display()
                    .to_string()
            );
            body["backtrace"] = json!(Backtrace::force_capture().to_string());
        }
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body.to_string(),
        )
            .into_response();
        for (name, value) in self.headers {
            resp.headers_mut().append(name, value);
        }
        resp
    }
}

/// Serde's messages name the offending field but may quote the offending value; the secure
/// default keeps only the part before any quoted value.
fn describe_body_error(msg: &str) -> String {
    let cut = msg
        .find(": invalid")
        .or_else(|| msg.find("invalid type"))
        .unwrap_or(msg.len());
    let head = msg[..cut].trim_end_matches(':').trim();
    if head.is_empty() {
        "the body does not match the expected schema".into()
    } else {
        head.into()
    }
}

impl From<JsonRejection> for ApiError {
    #[track_caller]
    fn from(rej: JsonRejection) -> Self {
        let internal = rej.body_text();
        let e = match &rej {
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::bad_request("the body is not valid JSON")
            }
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "Unsupported Media Type",
                "expected `Content-Type: application/json`",
            ),
            JsonRejection::JsonDataError(err) => {
                ApiError::unprocessable(describe_body_error(&err.body_text()))
            }
            _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => too_large(),
            _ => ApiError::bad_request("the request body could not be read"),
        };
        e.with_internal(internal)
    }
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Content Too Large",
        "the request body is too large",
    )
}

impl From<BytesRejection> for ApiError {
    #[track_caller]
    fn from(rej: BytesRejection) -> Self {
        let e = if rej.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::bad_request("the request body could not be read")
        };
        e.with_internal(rej.body_text())
    }
}

impl From<PathRejection> for ApiError {
    #[track_caller]
    fn from(rej: PathRejection) -> Self {
        ApiError::bad_request("a path parameter is malformed").with_internal(rej.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    #[track_caller]
    fn from(rej: QueryRejection) -> Self {
        ApiError::bad_request("a query parameter is malformed").with_internal(rej.body_text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_errors_never_quote_values() {
        let msg = "Failed to deserialize the JSON body into the target type: quantity: invalid type: string \"DROP TABLE\", expected u32 at line 1 column 20";
        let d = describe_body_error(msg);
        assert!(!d.contains("DROP"), "{d}");
        assert!(d.contains("quantity"), "{d}");
        let unknown = "Failed to deserialize the JSON body into the target type: unknown field `role`, expected `name` at line 1 column 7";
        assert!(describe_body_error(unknown).contains("unknown field `role`"));
    }
}
