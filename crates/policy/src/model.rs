//! The validated policy: what the gateway runs on. Every value here has been checked; nothing
//! is left as a string to be parsed on the hot path.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;

use crate::inventory::{Inventory, RouteId};

/// Development mode may relax what is shown to clients; production never does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Production,
    Development,
}

/// Where a secret comes from. Inline secrets load, with a warning.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
    Inline(String),
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "Env({name})"),
            SecretSource::File(path) => write!(f, "File({})", path.display()),
            SecretSource::Inline(_) => f.write_str("Inline(redacted)"),
        }
    }
}

/// The upstream API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstream {
    /// `host:port`, as sent in the upstream request's `Host`.
    pub authority: http::uri::Authority,
    pub scheme: http::uri::Scheme,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admin {
    pub listen: SocketAddr,
    /// `None` only on loopback.
    pub token: Option<SecretSource>,
}

/// Caps and timeouts of the accept and proxy phases.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_body_bytes: u64,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// Worker threads; 0 means one per available core.
    pub workers: usize,
    /// Each worker bound to its own CPU when there is one worker per CPU the process may
    /// use (thread per core); `false` leaves their placement to the scheduler.
    pub pin_workers: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 25_000,
            max_header_bytes: 16 * 1024,
            max_body_bytes: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            upstream_connect_timeout: Duration::from_secs(5),
            upstream_timeout: Duration::from_secs(30),
            max_concurrent_streams: 100,
            workers: 0,
            pin_workers: true,
        }
    }
}

/// The CORS policy (an exact origin allowlist).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cors {
    pub allow_origins: Vec<HeaderValue>,
    pub allow_credentials: bool,
    pub allow_methods: Vec<Method>,
    pub allow_headers: Vec<HeaderName>,
    pub expose_headers: Vec<HeaderName>,
    pub max_age: Duration,
}

/// Headers set on and removed from every response.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub set: Vec<(HeaderName, HeaderValue)>,
    pub remove: Vec<HeaderName>,
}

/// The response-header policy: the defaults, and per-route overrides applied after them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderPolicy {
    pub all: HeaderRules,
    pub per_route: Vec<(RouteId, HeaderRules)>,
}

impl HeaderPolicy {
    pub fn for_route(&self, id: RouteId) -> Option<&HeaderRules> {
        self.per_route
            .iter()
            .find(|(r, _)| *r == id)
            .map(|(_, h)| h)
    }
}

/// A JWT signature algorithm. Each key is bound to exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JwtAlg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl JwtAlg {
    pub const ALL: [JwtAlg; 12] = [
        JwtAlg::HS256,
        JwtAlg::HS384,
        JwtAlg::HS512,
        JwtAlg::RS256,
        JwtAlg::RS384,
        JwtAlg::RS512,
        JwtAlg::PS256,
        JwtAlg::PS384,
        JwtAlg::PS512,
        JwtAlg::ES256,
        JwtAlg::ES384,
        JwtAlg::EdDSA,
    ];

    pub fn name(self) -> &'static str {
        match self {
            JwtAlg::HS256 => "HS256",
            JwtAlg::HS384 => "HS384",
            JwtAlg::HS512 => "HS512",
            JwtAlg::RS256 => "RS256",
            JwtAlg::RS384 => "RS384",
            JwtAlg::RS512 => "RS512",
            JwtAlg::PS256 => "PS256",
            JwtAlg::PS384 => "PS384",
            JwtAlg::PS512 => "PS512",
            JwtAlg::ES256 => "ES256",
            JwtAlg::ES384 => "ES384",
            JwtAlg::EdDSA => "EdDSA",
        }
    }

    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlg::HS256 | JwtAlg::HS384 | JwtAlg::HS512)
    }

    /// RFC 7518 §3.2: an HMAC key at least as long as the hash.
    pub fn min_secret_bytes(self) -> usize {
        match self {
            JwtAlg::HS384 => 48,
            JwtAlg::HS512 => 64,
            _ => 32,
        }
    }
}

/// The verification material of one key.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An HMAC secret (already resolved and checked for strength).
    Secret(Vec<u8>),
    /// A PEM public key (RSA, EC or Ed25519, matching the algorithm).
    PublicPem(Vec<u8>),
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMaterial::Secret(_) => f.write_str("Secret(redacted)"),
            KeyMaterial::PublicPem(p) => write!(f, "PublicPem({} bytes)", p.len()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtKey {
    pub kid: Option<String>,
    pub alg: JwtAlg,
    pub material: KeyMaterial,
}

/// How an access token is told apart from other tokens signed by the same keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenType {
    /// No check (not recommended when refresh or ID tokens share the keys).
    Any,
    /// A claim with this value, such as `type: access`.
    Claim { name: String, value: String },
    /// The `typ` header, such as `at+jwt` (RFC 9068).
    Header(String),
}

/// Keys from an identity provider's JWKS endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwksSource {
    pub url: String,
    /// The algorithms its keys may be used with (each key is pinned to one of them).
    pub algs: Vec<JwtAlg>,
    /// How long a fetched set is fresh when the response says nothing (`Cache-Control`).
    pub refresh: Duration,
    /// The shortest time between two fetches, whatever tokens ask for (unknown `kid`s).
    pub min_interval: Duration,
    /// How long a set is still used after it expired while the provider is down.
    pub max_stale: Duration,
}

/// JWT verification settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Jwt {
    pub keys: Vec<JwtKey>,
    pub jwks: Option<JwksSource>,
    pub issuer: Vec<String>,
    pub audience: Vec<String>,
    /// Claims that must be present (`exp`, `sub`, ...).
    pub require: Vec<String>,
    pub leeway: Duration,
    pub max_token_bytes: usize,
    pub token_type: TokenType,
    /// Also read the token from this cookie.
    pub cookie: Option<String>,
    /// Verified claims sent upstream as headers (client-sent copies are removed).
    pub forward_claims: Vec<(String, HeaderName)>,
}

/// The refresh route: its refresh token (found in the JSON body) passes once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefreshRule {
    pub route: RouteId,
    /// JSON pointer to the refresh token in the request body.
    pub pointer: String,
    /// The type a refresh token carries (in the same place as the access type).
    pub token_type: TokenType,
}

/// Brute-force protection of a login route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginRule {
    pub route: RouteId,
    /// JSON pointer to the account name in the request body (normalised: trimmed, lower-case).
    pub account_pointer: String,
    /// Failures of one account from one client address before delays start.
    pub per_client_failures: u32,
    /// Failures of one account from all addresses before delays start for new addresses.
    pub per_account_failures: u32,
    /// Failures older than this are forgotten.
    pub window: Duration,
    /// The first delay; each further failure doubles it, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Upstream statuses that mean "wrong credentials".
    pub failure_statuses: Vec<u16>,
    /// Answer every failure the same way (no account enumeration).
    pub uniform_failures: bool,
}

/// The password policy of one route (registration, password change).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordRule {
    pub route: RouteId,
    /// JSON pointer to the new password in the request body.
    pub pointer: String,
    /// JSON pointer to the account name, to refuse passwords that contain it.
    pub account_pointer: Option<String>,
    pub min_length: usize,
    pub max_length: usize,
}

/// Authentication: which routes need a token, how it is verified, revocation, refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub jwt: Jwt,
    /// Per route: whether a valid access token is required.
    pub required: Vec<bool>,
    pub refresh: Option<RefreshRule>,
    pub login: Option<LoginRule>,
    pub passwords: Vec<PasswordRule>,
}

/// How a route's object owner is found and compared with a claim (BOLA, API1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OwnerCheck {
    /// A path parameter must equal the claim (`/users/{user_id}/...`).
    Param(String),
    /// A field of the upstream's 2xx JSON response (JSON pointer) must equal the claim.
    Response(String),
    /// Before a write, the object is read with this GET route (same parameters, the caller's
    /// credentials) and its field (JSON pointer) must equal the claim.
    Lookup { route: RouteId, pointer: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRule {
    pub route: RouteId,
    pub check: OwnerCheck,
    /// The claim that names the caller (default `sub`).
    pub claim: String,
}

/// Function- and object-level authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authz {
    /// The claim holding the caller's role or roles (a string or an array).
    pub roles_claim: String,
    /// Per route: the caller needs one of these roles (empty: no role check).
    pub roles: Vec<Vec<String>>,
    pub owners: Vec<OwnerRule>,
}

/// What happens to a 2xx JSON response property its schema does not declare (API3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFields {
    /// Pass everything (no response schema work).
    Pass,
    /// Remove undeclared properties (an allowlist), in nested objects and arrays too.
    Remove,
    /// Refuse the whole response with a generic 502.
    Refuse,
}

/// What a rate limit counts by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RateKey {
    /// The client address (after trusted proxies).
    Ip,
    /// The authenticated subject (`sub`); requests without one are counted by address.
    User,
    /// A verified claim.
    Claim(String),
    /// A request header (an API key, say).
    Header(HeaderName),
    /// A string field of the JSON request body (JSON pointer): the account a login names.
    Body(String),
    /// Several at once (`ip+body:/email`): one counter per combination.
    All(Vec<RateKey>),
}

impl RateKey {
    /// Whether the key reads the request body.
    pub fn needs_body(&self) -> bool {
        match self {
            RateKey::Body(_) => true,
            RateKey::All(parts) => parts.iter().any(RateKey::needs_body),
            _ => false,
        }
    }
}

/// A GCRA rate limit on a set of routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateRule {
    /// `r0`, `r1`, ... : the name in `RateLimit` headers and metrics.
    pub name: String,
    pub routes: Vec<RouteId>,
    pub key: RateKey,
    /// `count` requests per `period`, replenished evenly.
    pub count: u32,
    pub period: Duration,
    /// Requests allowed at once.
    pub burst: u32,
}

/// A quota on a sensitive business flow (API6): at most `limit` per `window` per key, counted
/// on success (2xx) or on every attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotaRule {
    pub name: String,
    pub routes: Vec<RouteId>,
    pub key: RateKey,
    pub limit: u32,
    pub window: Duration,
    pub count_success_only: bool,
    /// Flags (and optionally holds back) a key whose pace jumps far above its own baseline.
    pub bursts: Option<BurstRule>,
}

/// The burst detector of a sensitive flow: in each `window`, a key that makes more than
/// `min` requests and more than `factor` times its own average per window (a moving average
/// of its past windows) is flagged; with `block`, held back for the rest of the window.
#[derive(Clone, Debug, PartialEq)]
pub struct BurstRule {
    pub window: Duration,
    pub factor: f64,
    pub min: u32,
    pub block: bool,
}

impl Eq for BurstRule {}

/// The SSRF guard (API7): URL-valued request fields are checked before the request is
/// forwarded: scheme, host lists, and every address the host resolves to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ssrf {
    pub schemes: Vec<String>,
    /// Empty: any public host.
    pub allow_hosts: Vec<String>,
    pub deny_hosts: Vec<String>,
    /// Names answered from this table instead of DNS (pinning, and tests).
    pub hosts: Vec<(String, Vec<std::net::IpAddr>)>,
    /// Per route, the JSON pointers of its URL fields (`*`: every array item).
    pub fields: Vec<Vec<String>>,
}

/// At most `max` requests of one key in flight at once on the selected routes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcurrencyRule {
    /// `c0`, `c1`, ...
    pub name: String,
    pub routes: Vec<RouteId>,
    pub key: RateKey,
    pub max: u32,
}

/// Where state that must survive a restart lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateBackend {
    Memory,
    /// A crash-safe file store (redb) in this folder.
    Embedded(PathBuf),
    /// Redis, shared by every replica of the gateway.
    Redis(RedisState),
}

/// Which Redis servers hold the shared state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RedisServers {
    /// One server (`redis://` or `rediss://` URL, which may carry a password).
    Single(SecretSource),
    /// Seed nodes of a Redis Cluster.
    Cluster(Vec<String>),
    /// Sentinels and the name of the master they watch.
    Sentinel { master: String, nodes: Vec<String> },
}

/// The Redis backend and what the gateway does when it cannot reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisState {
    pub servers: RedisServers,
    /// Prepended to every key, so several gateways can share one Redis.
    pub prefix: String,
    /// Longest wait for one answer before the request falls back.
    pub timeout: Duration,
    /// After a failure, how long requests go straight to the fallback before Redis is tried
    /// again.
    pub retry_interval: Duration,
    /// Gateway replicas sharing the limits: local fallback limits are the global ones divided
    /// by this.
    pub replicas: u32,
    /// Let requests through when revocations cannot be checked (default: refuse them, 503).
    pub revocations_fail_open: bool,
}

/// The whole validated policy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub upstream: Upstream,
    pub mode: Mode,
    pub tls: Option<Tls>,
    pub admin: Option<Admin>,
    pub trusted_proxies: Vec<IpNet>,
    pub limits: Limits,
    pub cors: Option<Cors>,
    pub headers: HeaderPolicy,
    pub inventory: Inventory,
    /// Pass upstream 5xx bodies through (development only).
    pub expose_upstream_errors: bool,
    pub auth: Option<Auth>,
    pub authz: Option<Authz>,
    pub rate_limits: Vec<RateRule>,
    pub quotas: Vec<QuotaRule>,
    pub concurrency_limits: Vec<ConcurrencyRule>,
    pub ssrf: Option<Ssrf>,
    /// The OpenAPI document, when bodies are checked against its schemas.
    pub openapi_doc: Option<std::sync::Arc<serde_json::Value>>,
    /// Validate request bodies against the description.
    pub validate_requests: bool,
    /// Bounds applied where the description sets none (API4).
    pub default_bounds: DefaultBounds,
    /// What to do with response properties the description does not declare.
    pub undeclared_response_fields: ResponseFields,
    pub state: StateBackend,
    /// The files the policy was built from: this file first, then the OpenAPI description,
    /// key and secret files, TLS certificate and key. Hot reload watches these (not the
    /// embedded store's directory, nor anything else that happens to sit beside them).
    pub sources: Vec<PathBuf>,
}

/// What an unbounded request field may hold at most: applied to string, array and integer
/// schemas that state no bound of their own, and to the nesting of any JSON body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DefaultBounds {
    pub max_string_length: u64,
    pub max_array_items: u64,
    /// Integers between -max_integer and max_integer.
    pub max_integer: i64,
    pub max_depth: usize,
}

impl Default for DefaultBounds {
    fn default() -> Self {
        Self {
            max_string_length: 10_000,
            max_array_items: 1_000,
            max_integer: 9_007_199_254_740_991,
            max_depth: 32,
        }
    }
}
