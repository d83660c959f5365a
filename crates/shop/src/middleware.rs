//! The layers every request passes: request id and error context, panic catching, security
//! headers (or the banners that replace them under `no-security-headers`), CORS, and the
//! per-address rate limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{ShopConfig, Vuln};
use crate::error::{ApiError, RequestCtx};
use crate::state::{AppState, Limits, hex, random_bytes};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's address, from the socket: the shop trusts no forwarding header.
pub fn client_ip(req_ext: &axum::http::Extensions) -> IpAddr {
    req_ext
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ci| ci.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Accepts a caller's request id only if it is short and plain, else makes one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=64).contains(&v.len())
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| hex(&random_bytes(12)))
}

/// Outermost layer: every response, errors included, carries the request id.
pub async fn request_context(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = request_id(&req);
    let ctx = RequestCtx {
        id: id.clone(),
        verbose: state.config.vulns.has(Vuln::VerboseErrors),
    };
    let mut resp = ctx.scope(next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    resp
}

/// The OWASP secure-headers set for a JSON API.
const SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "geolocation=(), camera=(), microphone=(), payment=()",
    ),
    ("cross-origin-resource-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-xss-protection", "0"),
    ("cache-control", "no-store"),
];

pub async fn security_headers(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if state.config.vulns.has(Vuln::NoSecurityHeaders) {
        headers.insert(
            header::SERVER,
            HeaderValue::from_static("portcullis-shop/0.1.0 (axum/0.8.9; hyper/1.8)"),
        );
        headers.insert(
            "x-powered-by",
            HeaderValue::from_static("Rust/1.95 axum/0.8.9 SQLite/3.50"),
        );
        // How long the database took, and the profiler's token: timing and internals.
        headers.insert(
            "server-timing",
            HeaderValue::from_static("db;dur=3.1;desc=\"sqlite users\""),
        );
        headers.insert("x-debug-token", HeaderValue::from_static("5f3a1c"));
    } else {
        for (name, value) in SECURITY_HEADERS {
            headers
                .entry(*name)
                .or_insert(HeaderValue::from_static(value));
        }
    }
    resp
}

/// Per-address GCRA limit on every route; login has its own, stricter one in the handler.
pub async fn rate_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if !state.config.vulns.has(Vuln::NoRateLimit) {
        let ip = client_ip(req.extensions());
        if let Err(wait) = Limits::check(&state.limits.all, ip) {
            return ApiError::too_many(wait).into_response();
        }
    }
    next.run(req).await
}

/// The CORS policy: an exact origin allowlist, or under `cors-wildcard` any origin reflected
/// with credentials.
pub fn cors(config: &ShopConfig) -> CorsLayer {
    let origin = if config.vulns.has(Vuln::CorsWildcard) {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            config
                .cors_origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok()),
        )
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_credentials(true)
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(std::time::Duration::from_secs(600))
}

/// A panic in a handler becomes a generic 500 problem; the message goes to the log only.
pub fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into());
    ApiError::internal(format!("handler panicked: {msg}")).into_response()
}
