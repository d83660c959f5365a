//! CORS from the policy, enforced by tower-http's `CorsLayer`: an exact origin allowlist,
//! preflights answered with the allowed methods, headers and max-age, `Vary: Origin` always,
//! and no CORS headers at all for an origin that is not listed.

use portcullis_policy::Cors;
use tower_http::cors::{AllowOrigin, CorsLayer};

pub fn layer(c: &Cors) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(c.allow_origins.iter().cloned()))
        .allow_credentials(c.allow_credentials)
        .allow_methods(c.allow_methods.clone())
        .allow_headers(c.allow_headers.clone())
        .expose_headers(c.expose_headers.clone())
        .max_age(c.max_age)
}
