//! The Portcullis defenses, as plain functions and types over `http` request and response
//! parts, so each can be tested without a socket and reused by any server.
//!
//! - [`rejection`]: every way the gateway refuses a request, rendered in one place as an
//!   RFC 9457 problem with the request id and no internal detail.
//! - [`forward`]: the client address (X-Forwarded-For trusted only from trusted proxies),
//!   hop-by-hop stripping, and the X-Forwarded-* headers set toward the upstream.
//! - [`respond`]: response hardening: banners removed, security headers set, version
//!   deprecation headers.
//! - [`cors`]: the CORS policy as tower-http's `CorsLayer`.
//! - [`jwt`]: token verification with keys pinned to one algorithm each.
//! - [`store`]: revocations and single-use tokens, in memory or in a crash-safe file.

pub mod cors;
pub mod forward;
pub mod jwt;
pub mod login;
pub mod password;
pub mod rejection;
pub mod respond;
pub mod store;

pub use rejection::Rejection;
