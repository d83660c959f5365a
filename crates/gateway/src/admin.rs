//! The admin listener: `/healthz` and `/readyz` for probes, Prometheus `/metrics` behind the
//! admin bearer token when one is configured. Loopback by default; the policy loader refuses
//! a non-loopback admin listener without a token.

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

async fn route(
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let text = |status: StatusCode, ct: &'static str, body: String| {
        let mut r = Response::new(Body::bytes(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
        r
    };
    let resp = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => text(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".into(),
        ),
        (&Method::GET, "/readyz") => text(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ready\"}".into(),
        ),
        (&Method::GET, "/metrics") if authorized(&req, token.as_deref()) => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        ),
        (&Method::GET, "/metrics") => {
            let mut r = from_guard(problem(
                StatusCode::UNAUTHORIZED,
                "the admin token is required",
                "-",
                vec![],
            ));
            r.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            r
        }
        _ => from_guard(problem(
            StatusCode::NOT_FOUND,
            "no such resource",
            "-",
            vec![],
        )),
    };
    Ok(resp)
}

pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    token: Option<Arc<str>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let (metrics, token) = (metrics.clone(), token.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| route(metrics.clone(), token.clone(), req));
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
