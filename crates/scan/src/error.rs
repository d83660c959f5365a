//! Why a scan could not run. Findings are not errors: a scan that finds weaknesses succeeds.

use std::path::PathBuf;

/// A scan that could not start or had to stop. Messages name the offending input and never
/// carry a secret.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The target is not a loopback address and `allow_remote` is off. Nothing was sent.
    #[error(
        "refusing to scan `{host}`: only loopback targets (127.0.0.0/8, ::1, localhost) are scanned unless remote scanning is allowed explicitly"
    )]
    RemoteTarget { host: String },
    /// The configuration is unusable (the caller's fault).
    #[error("invalid scan configuration: {0}")]
    Config(String),
    /// The OpenAPI description could not be read.
    #[error("cannot read the OpenAPI description {path}: {message}")]
    Spec { path: PathBuf, message: String },
    /// The identities file could not be read or parsed.
    #[error("cannot read the identities file {path}: {message}")]
    Identities { path: PathBuf, message: String },
    /// An identity's login recipe did not yield a token (the target's or the recipe's fault).
    #[error("identity `{identity}` could not log in: {reason}")]
    Login { identity: String, reason: String },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    /// The canary listener for SSRF probes could not bind a loopback port.
    #[error("cannot start the SSRF canary on loopback: {0}")]
    Canary(String),
    /// A report could not be rendered.
    #[error("cannot render the report: {0}")]
    Render(String),
}
