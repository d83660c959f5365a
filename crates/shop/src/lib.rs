//! `portcullis-shop`: the demo web shop of the OWASP API Security examples, the reference
//! upstream that Portcullis is tested against.
//!
//! Secure by default: every defense is written here in plain application code. Each
//! [`Vuln`](config::Vuln) switch turns one defense off, so the scanner can be shown finding the
//! weakness and the gateway closing it.

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod extract;
pub mod middleware;
pub mod routes;
pub mod spec;
pub mod ssrf;
pub mod state;

use std::net::SocketAddr;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, delete, get, patch, post};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::{ShopConfig, Vuln, VulnSet};
pub use state::{AppState, StartError};

use crate::error::ApiError;

/// The routes the shop answers, as (method, path template). The router is built from this
/// table and a test checks it against the OpenAPI description, both ways.
pub fn route_table() -> Vec<(Method, &'static str)> {
    routes_with_handlers()
        .into_iter()
        .map(|(m, p, _)| (m, p))
        .collect()
}

fn routes_with_handlers() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    use routes::*;
    vec![
        (Method::GET, "/healthz", get(meta::healthz)),
        (Method::GET, "/openapi.json", get(meta::openapi)),
        (Method::POST, "/v2/auth/register", post(auth::register)),
        (Method::POST, "/v2/auth/login", post(auth::login)),
        (Method::POST, "/v2/auth/refresh", post(auth::refresh)),
        (Method::POST, "/v2/auth/logout", post(auth::logout)),
        (Method::GET, "/v2/users/me", get(users::me)),
        (Method::PATCH, "/v2/users/me", patch(users::update_me)),
        (Method::POST, "/v2/users/me/avatar", post(users::avatar)),
        (Method::GET, "/v2/products", get(products::list)),
        (Method::GET, "/v2/products/search", get(products::search)),
        (
            Method::GET,
            "/v2/products/{product_id}",
            get(products::get_one),
        ),
        (Method::POST, "/v2/orders", post(orders::create)),
        (Method::GET, "/v2/orders", get(orders::list)),
        (Method::GET, "/v2/orders/{order_id}", get(orders::get_one)),
        (
            Method::PATCH,
            "/v2/orders/{order_id}",
            patch(orders::update),
        ),
        (
            Method::DELETE,
            "/v2/orders/{order_id}",
            delete(orders::remove),
        ),
        (Method::POST, "/v2/promo/redeem", post(promo::redeem)),
        (Method::GET, "/v2/admin/users", get(admin::list_users)),
        (
            Method::DELETE,
            "/v2/admin/users/{user_id}",
            delete(admin::delete_user),
        ),
        (Method::GET, "/v1/orders/{order_id}", get(legacy::get_order)),
    ]
}

/// The whole application, layers included.
pub fn app(state: AppState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in routes_with_handlers() {
        router = router.route(path, handler);
    }
    // Not an API operation (so not in the description): the key set clients verify with.
    router = router.route("/.well-known/jwks.json", get(routes::meta::jwks));
    let config = &state.config;
    router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed",
                "this method is not allowed on this resource",
            )
        })
        .layer(
            // Outermost first: the request id must exist before anything can fail; panics are
            // caught inside it so their 500 carries the id; headers and CORS apply to every
            // answer, rate-limit rejections included.
            ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::request_context,
                ))
                .layer(CatchPanicLayer::custom(middleware::panic_response))
                .layer(tower_http::trace::TraceLayer::new_for_http())
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::security_headers,
                ))
                .layer(middleware::cors(config))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    middleware::rate_limit,
                ))
                .layer(axum::extract::DefaultBodyLimit::max(
                    // `no-rate-limit`: bodies up to 16 MiB (API4).
                    if config.vulns.has(crate::config::Vuln::NoRateLimit) {
                        16 << 20
                    } else {
                        config.body_limit
                    },
                )),
        )
        .with_state(state)
}

/// Serves the shop on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sweeper = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state::SWEEP_EVERY);
            loop {
                tick.tick().await;
                state.limits.sweep();
            }
        })
    };
    let result = axum::serve(
        listener,
        app(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    sweeper.abort();
    result
}
