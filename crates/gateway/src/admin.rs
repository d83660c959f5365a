//! The admin listener: `/healthz` (the process answers) and `/readyz` (it takes requests: 503
//! while it drains, until its workers are done) for probes; behind the admin bearer token when
//! one is configured: Prometheus `/metrics`, and `/revocations` (`GET` lists, `POST`
//! `{"jti": ..., "exp": ...}` revokes one token until its expiry, `POST {"sub": ...}` revokes
//! every token of a subject issued until now). A revocation is answered only once it is on
//! disk. Loopback by default (`127.0.0.1:9901`); the policy loader refuses a non-loopback admin listener without
//! a token.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portcullis_guard::rejection::problem;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::body::{Body, from_guard};
use crate::metrics::Metrics;
use http_body_util::{BodyExt, Limited};
use portcullis_guard::store::Store;

/// Compares in time independent of where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(req: &Request<Incoming>, token: Option<&str>) -> bool {
    let Some(token) = token else { return true };
    req.headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::bytes(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn refuse(status: StatusCode, detail: &str) -> Response<Body> {
    let mut r = from_guard(problem(status, detail, "-", vec![]));
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// `POST /revocations`: answered once the revocation is durable.
async fn revoke(store: Arc<dyn Store>, req: Request<Incoming>) -> Response<Body> {
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        Limited::new(req.into_body(), 4096).collect(),
    )
    .await;
    let Ok(Ok(body)) = read else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "the body could not be read (at most 4 KiB)",
        );
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body.to_bytes()) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not JSON");
    };
    let now = portcullis_guard::jwt::now();
    let field = |name: &str| {
        v.get(name)
            .and_then(|x| x.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 256)
            .map(str::to_owned)
    };
    let (key, at, is_token) = match (field("jti"), field("sub")) {
        // Kept until the token's own expiry; without one, past any sensible token lifetime.
        (Some(j), None) => (
            j,
            v.get("exp")
                .and_then(|x| x.as_i64())
                .unwrap_or(now + 86_400 * 31),
            true,
        ),
        (None, Some(u)) => (
            u,
            v.get("before").and_then(|x| x.as_i64()).unwrap_or(now),
            false,
        ),
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "give either `jti` (with `exp`) or `sub`",
            );
        }
    };
    let stored = if is_token {
        store.revoke_token(&key, at).await
    } else {
        store.revoke_subject(&key, at).await
    };
    match stored {
        Ok(()) => {
            tracing::info!(target: "portcullis::admin", kind = if is_token { "jti" } else { "sub" }, "revocation stored");
            let body = if is_token {
                serde_json::json!({ "jti": key, "exp": at })
            } else {
                serde_json::json!({ "sub": key, "before": at })
            };
            json(StatusCode::CREATED, &body)
        }
        Err(e) => {
            tracing::error!(target: "portcullis::admin", error = %e, "revocation not stored");
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the revocation could not be stored",
            )
        }
    }
}

/// `/readyz`: 503 once the gateway is draining (a load balancer stops sending it requests
/// while those in flight finish), 200 otherwise; the body says whether the shared state
/// backend answers or the local fallback stands in.
fn readiness(store: &dyn Store, draining: bool) -> Response<Body> {
    let state = if store.shared_backend_up() {
        "ok"
    } else {
        "fallback"
    };
    if draining {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "draining", "state": state }),
        )
    } else {
        json(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "state": state }),
        )
    }
}

async fn route(
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    token: Option<Arc<String>>,
    draining: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // Without a token the listener is on loopback, where a browser page can still reach it:
    // by a name rebound to 127.0.0.1 (its `Host` then names the attacker's site), or with a
    // form or `text/plain` post (which needs no preflight). Both are refused.
    let local_host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<http::uri::Authority>().ok())
        .is_some_and(|a| {
            let host = a.host().trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    let json_body = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"));
    let mut resp = match (req.method(), req.uri().path()) {
        _ if token.is_none() && !local_host => refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "the admin listener answers loopback names only",
        ),
        (&Method::POST, "/revocations") if !json_body => refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "expected `Content-Type: application/json`",
        ),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({ "status": "ok" })),
        (&Method::GET, "/readyz") => readiness(&*store, draining),
        (_, "/metrics" | "/revocations")
            if !authorized(&req, token.as_deref().map(String::as_str)) =>
        {
            refuse(StatusCode::UNAUTHORIZED, "the admin token is required")
        }
        (&Method::GET, "/metrics") => {
            let mut r = Response::new(Body::bytes(Bytes::from(metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            r
        }
        (&Method::GET, "/revocations") => {
            match store.revocations(portcullis_guard::jwt::now()).await {
                Ok(list) => json(StatusCode::OK, &serde_json::json!(list)),
                Err(e) => {
                    tracing::error!(target: "portcullis::admin", error = %e, "revocations not read");
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the revocations could not be read",
                    )
                }
            }
        }
        (&Method::POST, "/revocations") => revoke(store, req).await,
        _ => refuse(StatusCode::NOT_FOUND, "no such resource"),
    };
    let h = resp.headers_mut();
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    Ok(resp)
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    store: Arc<dyn Store>,
    current: Arc<crate::proxy::Current>,
    shutdown: watch::Receiver<bool>,
    mut end: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = end.changed() => return,
        };
        let (metrics, store, current) = (metrics.clone(), store.clone(), current.clone());
        let (shutdown, mut end) = (shutdown.clone(), end.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                // The token as it is now: a reload that rotated it ends the old one at once.
                let token = current.admin_token.load_full();
                route(
                    metrics.clone(),
                    store.clone(),
                    token,
                    *shutdown.borrow(),
                    req,
                )
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let builder = builder.http1_only();
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            // A probe's kept-alive connection ends with the listener.
            tokio::select! {
                _ = conn => {}
                _ = end.changed() => {}
            }
        });
    }
}
