//! Every refusal the gateway can send, declared once with its status, title, client-facing
//! detail and log/metric reason, and rendered once as `application/problem+json`.
//!
//! Details are written for the client and never carry a request value, an upstream body, a
//! path on disk or a stack: the internal cause goes to the log under the same request id.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use http::{Method, Response, StatusCode};
use portcullis_policy::path::PathError;

use crate::jwt::AuthFailure;

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rejection {
    /// The path could not be normalised unambiguously.
    BadPath(PathError),
    /// A malformed request other than its path.
    BadRequest(&'static str),
    /// A request the HTTP/1 server could not read (its head too large, a transfer coding
    /// it does not implement, an HTTP version it does not speak): the status, and why.
    Unreadable(StatusCode, &'static str),
    /// Not in the route inventory.
    NotFound,
    /// The path is declared, the method is not.
    MethodNotAllowed(Vec<Method>),
    /// Under a retired API version.
    Gone,
    /// The body is over the limit (declared or while streaming).
    PayloadTooLarge,
    /// The client was too slow sending its body.
    RequestTimeout,
    /// The upstream could not be reached.
    UpstreamUnavailable,
    /// The upstream did not answer in time.
    UpstreamTimeout,
    /// The upstream answered with an error whose body cannot be passed on safely (any 5xx; a
    /// 4xx that is not JSON or is too large to clean). The status is kept.
    UpstreamError(StatusCode),
    /// No valid access token; the reason is logged, never shown.
    Unauthorized(AuthFailure),
    /// A login failed; every failure gets this same answer, so accounts cannot be enumerated.
    LoginFailed,
    /// Slowed down; retry after this many seconds.
    TooManyRequests(u64),
    /// A field breaks a rule; the detail names the rule, never the value.
    Unprocessable(&'static str),
    /// The body breaks the operation's schema; the detail names the field and the rule.
    Invalid(String),
    /// The body is not of a media type the operation accepts.
    UnsupportedMediaType,
    /// Over a rate limit (GCRA): the rule's name, its quota per window, and when to retry.
    RateLimited {
        rule: String,
        quota: u32,
        window: u64,
        retry_after: u64,
    },
    /// Held back by an abuse control other than a rate (concurrency, a burst on a sensitive
    /// flow): the metric reason, and when to retry.
    Held {
        reason: &'static str,
        retry_after: u64,
    },
    /// A URL in the request points where the server must not fetch (SSRF): the field's JSON
    /// pointer and the rule, never the URL.
    UnsafeUrl(String),
    /// The caller lacks every role the route accepts (BFLA).
    Forbidden,
    /// The object belongs to someone else; answered exactly like a missing one (BOLA).
    NotOwner,
    /// State needed for a decision is unavailable (the store); refused rather than guessed.
    Unavailable,
    /// A bug in the gateway; the log has the cause.
    Internal,
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadPath(_) | Rejection::BadRequest(_) => StatusCode::BAD_REQUEST,
            Rejection::Unreadable(s, _) => *s,
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::Gone => StatusCode::GONE,
            Rejection::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::UpstreamError(s) => *s,
            Rejection::Unauthorized(_) | Rejection::LoginFailed => StatusCode::UNAUTHORIZED,
            Rejection::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Rejection::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::Forbidden => StatusCode::FORBIDDEN,
            Rejection::RateLimited { .. } | Rejection::Held { .. } => StatusCode::TOO_MANY_REQUESTS,
            Rejection::UnsafeUrl(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Rejection::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::NotOwner => StatusCode::NOT_FOUND,
            Rejection::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the gateway did with a request that ended for `reason` (a [`Rejection::reason`],
    /// or the pipeline's own: `allowed`, `cors_preflight`): `allowed` (it reached the
    /// upstream, or was a preflight the gateway answers), `failed` (the upstream or the state
    /// store could not be used), or `refused` (a defense said no).
    pub fn verdict(reason: &str) -> &'static str {
        match reason {
            "allowed" | "cors_preflight" | "upstream_error" => "allowed",
            "upstream_unavailable" | "upstream_timeout" | "state_unavailable" | "internal" => {
                "failed"
            }
            _ => "refused",
        }
    }

    /// A stable label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Rejection::BadPath(_) => "bad_path",
            Rejection::Unreadable(s, _) if *s == StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
                "head_too_large"
            }
            Rejection::Unreadable(s, _) if *s == StatusCode::REQUEST_TIMEOUT => "head_timeout",
            Rejection::Unreadable(s, _) if *s == StatusCode::NOT_IMPLEMENTED => {
                "unsupported_transfer_coding"
            }
            Rejection::Unreadable(s, _) if *s == StatusCode::HTTP_VERSION_NOT_SUPPORTED => {
                "unsupported_version"
            }
            Rejection::BadRequest(_) | Rejection::Unreadable(..) => "bad_request",
            Rejection::NotFound => "undeclared_route",
            Rejection::MethodNotAllowed(_) => "undeclared_method",
            Rejection::Gone => "retired_version",
            Rejection::PayloadTooLarge => "body_too_large",
            Rejection::RequestTimeout => "body_timeout",
            Rejection::UpstreamUnavailable => "upstream_unavailable",
            Rejection::UpstreamTimeout => "upstream_timeout",
            Rejection::UpstreamError(_) => "upstream_error",
            Rejection::Unauthorized(f) => f.reason(),
            Rejection::LoginFailed => "login_failed",
            Rejection::TooManyRequests(_) => "login_throttled",
            Rejection::Unprocessable(_) => "password_policy",
            Rejection::Forbidden => "role_missing",
            Rejection::RateLimited { .. } => "rate_limited",
            Rejection::Held { reason, .. } => reason,
            Rejection::UnsafeUrl(_) => "ssrf_blocked",
            Rejection::Invalid(_) => "schema_violation",
            Rejection::UnsupportedMediaType => "unsupported_media_type",
            Rejection::NotOwner => "not_owner",
            Rejection::Unavailable => "state_unavailable",
            Rejection::Internal => "internal",
        }
    }

    fn detail(&self) -> &'static str {
        match self {
            Rejection::BadPath(_) => "the request path is malformed or ambiguous",
            Rejection::BadRequest(d) | Rejection::Unreadable(_, d) => d,
            Rejection::NotFound => "no such resource",
            Rejection::MethodNotAllowed(_) => "this method is not allowed on this resource",
            Rejection::Gone => "this API version has been retired",
            Rejection::PayloadTooLarge => "the request body is too large",
            Rejection::RequestTimeout => "the request body was not received in time",
            Rejection::UpstreamUnavailable => "the service is unavailable",
            Rejection::UpstreamTimeout => "the service did not answer in time",
            Rejection::UpstreamError(s) if s.is_client_error() => {
                "the request could not be processed"
            }
            Rejection::UpstreamError(_) | Rejection::Internal => {
                "the server could not complete the request"
            }
            Rejection::Unauthorized(_) => "a valid access token is required",
            Rejection::Unavailable => "the service is temporarily unavailable",
            Rejection::LoginFailed => "the credentials are not valid",
            Rejection::TooManyRequests(_) => "too many attempts; retry later",
            Rejection::Unprocessable(d) => d,
            Rejection::Forbidden => "this operation needs a role you do not have",
            Rejection::RateLimited { .. } | Rejection::Held { .. } => {
                "too many requests; retry later"
            }
            Rejection::UnsafeUrl(_) => "a URL in the request is not allowed",
            Rejection::Invalid(_) => "the request body does not match the contract",
            Rejection::UnsupportedMediaType => "expected `Content-Type: application/json`",
            Rejection::NotOwner => "no such resource",
        }
    }

    /// The problem+json response for this refusal.
    pub fn response(&self, request_id: &str) -> Response<Bytes> {
        if let Rejection::Invalid(detail) | Rejection::UnsafeUrl(detail) = self {
            return problem(self.status(), detail, request_id, Vec::new());
        }
        problem(
            self.status(),
            self.detail(),
            request_id,
            self.extra_headers(),
        )
    }

    fn extra_headers(&self) -> Vec<(http::HeaderName, HeaderValue)> {
        match self {
            Rejection::MethodNotAllowed(allow) => {
                let list = allow
                    .iter()
                    .map(Method::as_str)
                    .collect::<Vec<_>>()
                    .join(", ");
                HeaderValue::from_str(&list)
                    .map(|v| vec![(ALLOW, v)])
                    .unwrap_or_default()
            }
            Rejection::UpstreamUnavailable | Rejection::Unavailable => {
                vec![(RETRY_AFTER, HeaderValue::from_static("5"))]
            }
            Rejection::TooManyRequests(secs)
            | Rejection::Held {
                retry_after: secs, ..
            } => {
                vec![(RETRY_AFTER, HeaderValue::from(*secs))]
            }
            // draft-ietf-httpapi-ratelimit-headers: the policy, and what is left of it.
            Rejection::RateLimited {
                rule,
                quota,
                window,
                retry_after,
            } => {
                let mut h = vec![(RETRY_AFTER, HeaderValue::from(*retry_after))];
                if let Ok(v) = HeaderValue::from_str(&format!("\"{rule}\";q={quota};w={window}")) {
                    h.push((http::HeaderName::from_static("ratelimit-policy"), v));
                }
                if let Ok(v) = HeaderValue::from_str(&format!("\"{rule}\";r=0;t={retry_after}")) {
                    h.push((http::HeaderName::from_static("ratelimit"), v));
                }
                h
            }
            // RFC 6750: a missing token gets the bare challenge; a bad one says so, no more.
            Rejection::Unauthorized(AuthFailure::Missing) => vec![(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            )],
            Rejection::Unauthorized(_) => {
                vec![(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                )]
            }
            _ => Vec::new(),
        }
    }
}

/// Renders an RFC 9457 problem.
pub fn problem(
    status: StatusCode,
    detail: &str,
    request_id: &str,
    headers: Vec<(http::HeaderName, HeaderValue)>,
) -> Response<Bytes> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
        "request_id": request_id,
    });
    let mut resp = Response::new(Bytes::from(body.to_string()));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    for (n, v) in headers {
        h.insert(n, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_generic_and_carry_the_id() {
        let r = Rejection::UpstreamError(StatusCode::INTERNAL_SERVER_ERROR).response("req-1");
        assert_eq!(r.status(), 500);
        assert_eq!(r.headers()[CONTENT_TYPE], "application/problem+json");
        let body: serde_json::Value = serde_json::from_slice(r.body()).expect("json");
        assert_eq!(body["request_id"], "req-1");
        assert_eq!(body["detail"], "the server could not complete the request");
        let r = Rejection::MethodNotAllowed(vec![Method::GET, Method::POST]).response("x");
        assert_eq!(r.headers()[ALLOW], "GET, POST");
    }
}
