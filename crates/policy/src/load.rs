//! Policy file → [`Policy`]: raw serde structs (unknown keys refused), then validation that
//! collects every problem with its file, line, column and key path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::inventory::{Inventory, Version, VersionStatus};
use crate::model::*;
use crate::problem::{Pos, Problem, Problems};
use crate::{openapi, path, shape, units};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    listen: Spanned<String>,
    upstream: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    #[serde(default)]
    openapi: Option<Spanned<String>>,
    #[serde(default)]
    routes: Vec<Spanned<String>>,
    #[serde(default)]
    tls: Option<RawTls>,
    #[serde(default)]
    admin: Option<Spanned<RawAdmin>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    cors: Option<RawCors>,
    #[serde(default)]
    security_headers: RawHeaders,
    #[serde(default)]
    versions: Vec<RawVersion>,
    #[serde(default)]
    errors: RawErrors,
    #[serde(default)]
    auth: Option<RawAuth>,
    #[serde(default)]
    authorization: Option<RawAuthz>,
    #[serde(default)]
    validation: Option<RawValidation>,
    #[serde(default)]
    rate_limits: Vec<RawRateRule>,
    #[serde(default)]
    quotas: Vec<RawQuota>,
    #[serde(default)]
    concurrency_limits: Vec<RawConcurrency>,
    #[serde(default)]
    ssrf: Option<Spanned<RawSsrf>>,
    #[serde(default)]
    state: Option<RawState>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsrf {
    #[serde(default)]
    schemes: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    allow_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    deny_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    hosts: std::collections::BTreeMap<String, Vec<Spanned<String>>>,
    #[serde(default)]
    fields: Vec<RawSsrfField>,
    /// Also guard the fields the description marks (`format: uri`, `x-portcullis-ssrf`).
    #[serde(default)]
    from_openapi: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsrfField {
    #[serde(rename = "match")]
    selector: Spanned<String>,
    pointer: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    #[serde(rename = "match")]
    selector: Spanned<String>,
    key: Spanned<String>,
    max: Spanned<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBursts {
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    factor: Option<Spanned<f64>>,
    #[serde(default)]
    min: Option<Spanned<u32>>,
    #[serde(default)]
    block: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQuota {
    #[serde(rename = "match")]
    selector: Spanned<String>,
    key: Spanned<String>,
    /// `N/day`, `N/hour`, `N/month` (30 days).
    limit: Spanned<String>,
    /// `success` (default) or `attempt`.
    #[serde(default)]
    count: Option<Spanned<String>>,
    #[serde(default)]
    bursts: Option<Spanned<RawBursts>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateRule {
    #[serde(rename = "match")]
    selector: Spanned<String>,
    key: Spanned<String>,
    /// `N/second`, `N/minute`, `N/hour`, `N/day`.
    rate: Spanned<String>,
    #[serde(default)]
    burst: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawValidation {
    /// Validate JSON request bodies against the OpenAPI schemas (default true).
    #[serde(default)]
    requests: Option<bool>,
    /// `remove` (default), `refuse` or `pass`.
    #[serde(default)]
    undeclared_response_fields: Option<Spanned<String>>,
    /// Bounds for fields the description leaves unbounded.
    #[serde(default)]
    defaults: Option<RawBounds>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBounds {
    #[serde(default)]
    max_string_length: Option<Spanned<u64>>,
    #[serde(default)]
    max_array_items: Option<Spanned<u64>>,
    #[serde(default)]
    max_integer: Option<Spanned<i64>>,
    #[serde(default)]
    max_depth: Option<Spanned<usize>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuthz {
    #[serde(default)]
    roles_claim: Option<Spanned<String>>,
    #[serde(default)]
    roles: Vec<RawRoleRule>,
    /// Default-deny: an authenticated route that no role rule (and no `x-portcullis-roles`)
    /// names is for these roles only.
    #[serde(default)]
    default_roles: Vec<Spanned<String>>,
    #[serde(default)]
    owners: Vec<RawOwner>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleRule {
    /// `METHOD /path/{p}`, `/path/**` (every method) or `METHOD /path/**`.
    #[serde(rename = "match")]
    selector: Spanned<String>,
    roles: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOwner {
    route: Spanned<String>,
    #[serde(default)]
    param: Option<Spanned<String>>,
    #[serde(default)]
    response: Option<Spanned<String>>,
    #[serde(default)]
    lookup: Option<Spanned<String>>,
    #[serde(default)]
    claim: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    jwt: RawJwt,
    /// For routes whose OpenAPI operation says nothing (policy `routes`): `required` or `none`.
    #[serde(default)]
    default: Option<Spanned<String>>,
    /// Routes that need no token, whatever the description says.
    #[serde(default)]
    public: Vec<Spanned<String>>,
    #[serde(default)]
    refresh: Option<RawRefresh>,
    #[serde(default)]
    login: Option<RawLogin>,
    #[serde(default)]
    passwords: Vec<RawPassword>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPassword {
    route: Spanned<String>,
    pointer: Spanned<String>,
    #[serde(default)]
    account_pointer: Option<Spanned<String>>,
    #[serde(default)]
    min_length: Option<Spanned<usize>>,
    #[serde(default)]
    max_length: Option<Spanned<usize>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    route: Spanned<String>,
    account_pointer: Spanned<String>,
    #[serde(default)]
    per_client_failures: Option<Spanned<String>>,
    #[serde(default)]
    per_account_failures: Option<Spanned<String>>,
    #[serde(default)]
    window: Option<Spanned<String>>,
    #[serde(default)]
    base_delay: Option<Spanned<String>>,
    #[serde(default)]
    max_delay: Option<Spanned<String>>,
    #[serde(default)]
    failure_statuses: Option<Vec<Spanned<u16>>>,
    #[serde(default)]
    uniform_failures: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwt {
    #[serde(default)]
    keys: Vec<RawKey>,
    #[serde(default)]
    jwks: Option<RawJwks>,
    #[serde(default)]
    issuer: Vec<Spanned<String>>,
    #[serde(default)]
    audience: Vec<Spanned<String>>,
    #[serde(default)]
    require: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    leeway: Option<Spanned<String>>,
    #[serde(default)]
    max_token_bytes: Option<Spanned<String>>,
    #[serde(default)]
    token_type: Option<RawTokenType>,
    #[serde(default)]
    cookie: Option<Spanned<String>>,
    #[serde(default)]
    forward_claims: BTreeMap<String, Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJwks {
    url: Spanned<String>,
    algs: Vec<Spanned<String>>,
    #[serde(default)]
    refresh: Option<Spanned<String>>,
    #[serde(default)]
    min_interval: Option<Spanned<String>>,
    #[serde(default)]
    max_stale: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    kid: Option<Spanned<String>>,
    alg: Spanned<String>,
    #[serde(default)]
    secret_env: Option<Spanned<String>>,
    #[serde(default)]
    secret_file: Option<Spanned<String>>,
    #[serde(default)]
    secret: Option<Spanned<String>>,
    #[serde(default)]
    public_key_file: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTokenType {
    #[serde(default)]
    claim: Option<Spanned<String>>,
    #[serde(default)]
    value: Option<Spanned<String>>,
    #[serde(default)]
    header: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRefresh {
    route: Spanned<String>,
    token_pointer: Spanned<String>,
    #[serde(default)]
    token_type: Option<RawTokenType>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    backend: Spanned<String>,
    #[serde(default)]
    path: Option<Spanned<String>>,
    #[serde(default)]
    redis: Option<Spanned<RawRedis>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRedis {
    #[serde(default)]
    url: Option<Spanned<String>>,
    #[serde(default)]
    url_env: Option<Spanned<String>>,
    #[serde(default)]
    cluster: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    sentinel: Option<RawSentinel>,
    #[serde(default)]
    prefix: Option<Spanned<String>>,
    #[serde(default)]
    timeout: Option<Spanned<String>>,
    #[serde(default)]
    retry_interval: Option<Spanned<String>>,
    #[serde(default)]
    replicas: Option<Spanned<u32>>,
    #[serde(default)]
    revocations_on_failure: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSentinel {
    master: Spanned<String>,
    nodes: Vec<Spanned<String>>,
}

/// HMAC secrets found at the top of every JWT cracking word list; refused whatever their
/// length.
pub const COMMON_JWT_SECRETS: &[&str] = &[
    "secret",
    "password",
    "123456",
    "changeme",
    "jwt",
    "key",
    "secretkey",
    "secret_key",
    "supersecret",
    "your-256-bit-secret",
    "your-384-bit-secret",
    "your-512-bit-secret",
    "mysecret",
    "my_secret",
    "jwtsecret",
    "jwt_secret",
    "jwt-secret",
    "s3cr3t",
    "default",
    "test",
    "admin",
    "qwerty",
    "letmein",
    "shhhhh",
    "keyboard cat",
    "secret123",
    "secretsecretsecretsecretsecretsecret",
    "0123456789abcdef0123456789abcdef",
    "00000000000000000000000000000000",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Spanned<String>,
    key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    /// Loopback by default.
    #[serde(default)]
    listen: Option<Spanned<String>>,
    #[serde(default)]
    token_env: Option<Spanned<String>>,
    #[serde(default)]
    token_file: Option<Spanned<String>>,
    #[serde(default)]
    token: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<Spanned<String>>,
    max_header_bytes: Option<Spanned<String>>,
    max_body_bytes: Option<Spanned<String>>,
    header_read_timeout: Option<Spanned<String>>,
    body_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
    upstream_connect_timeout: Option<Spanned<String>>,
    upstream_timeout: Option<Spanned<String>>,
    max_concurrent_streams: Option<Spanned<String>>,
    workers: Option<Spanned<String>>,
    pin_workers: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCors {
    allow_origins: Vec<Spanned<String>>,
    #[serde(default)]
    allow_credentials: bool,
    #[serde(default)]
    allow_methods: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    allow_headers: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    expose_headers: Vec<Spanned<String>>,
    #[serde(default)]
    max_age: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaderRules {
    #[serde(default)]
    set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHeaders {
    #[serde(default)]
    set: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    remove: Vec<Spanned<String>>,
    #[serde(default)]
    routes: Vec<RawRouteHeaders>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouteHeaders {
    route: Spanned<String>,
    #[serde(flatten)]
    rules: RawHeaderRules,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVersion {
    prefix: Spanned<String>,
    status: Spanned<String>,
    #[serde(default)]
    deprecated_at: Option<Spanned<String>>,
    #[serde(default)]
    sunset: Option<Spanned<String>>,
    #[serde(default)]
    link: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawErrors {
    #[serde(default)]
    expose_upstream_errors: Option<Spanned<bool>>,
}

/// Response headers every answer gets unless the policy says otherwise (OWASP secure headers
/// for JSON APIs; `X-XSS-Protection: 0` as current guidance says).
pub const DEFAULT_SECURITY_HEADERS: &[(&str, &str)] = &[
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    ),
    ("referrer-policy", "no-referrer"),
    (
        "permissions-policy",
        "accelerometer=(), camera=(), geolocation=(), microphone=(), payment=(), usb=()",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("x-xss-protection", "0"),
    ("cache-control", "no-store"),
];

/// HSTS, added when the gateway terminates TLS.
pub const HSTS: (&str, &str) = (
    "strict-transport-security",
    "max-age=31536000; includeSubDomains",
);

/// Banners removed from upstream responses by default.
pub const DEFAULT_REMOVED_HEADERS: &[&str] = &[
    "server",
    "x-powered-by",
    "x-aspnet-version",
    "x-aspnetmvc-version",
    "x-runtime",
    "x-generator",
    "x-version",
    "via",
    // Timing and backend identity: which server, which framework's profiler, how long the
    // database took.
    "server-timing",
    "x-debug-token",
    "x-debug-token-link",
    "x-backend-server",
    "x-served-by",
    "x-envoy-upstream-service-time",
];

/// Where the admin listener is when its section names no address: loopback, on Envoy's
/// admin port.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

/// A policy that loaded, with the warnings it raised.
#[derive(Debug)]
pub struct Loaded {
    pub policy: Policy,
    pub warnings: Problems,
}

/// Reads and validates the policy at `file` (and the OpenAPI description it names).
pub fn load(file: &Path) -> Result<Loaded, Problems> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        Problems(vec![Problem::error(
            file,
            None,
            "",
            format!("cannot read the policy file: {e}"),
        )])
    })?;
    load_str(file, &text)
}

/// Validates policy `text` as if read from `file` (relative paths resolve against its folder).
pub fn load_str(file: &Path, text: &str) -> Result<Loaded, Problems> {
    let compiler = || Compiler {
        file,
        problems: Problems::default(),
        described: Vec::new(),
        sources: vec![file.to_owned()],
    };
    let first = match typed_read(file, text) {
        Ok(raw) => return compiler().compile(raw),
        Err(first) => first,
    };
    // The typed read stops at its first problem; the schema finds the others. With the
    // misspelt keys and wrong-typed values blanked out, the rest of the file is read and
    // checked as usual, so its values' problems come too.
    let shape = shape::check(file, text);
    let mut all = shape.structure;
    let rest = shape
        .repaired
        .and_then(|repaired| typed_read(file, &repaired).ok())
        .map(|raw| match compiler().compile(raw) {
            Ok(loaded) => loaded.warnings.0,
            Err(p) => p.0,
        });
    match rest {
        Some(rest) => all.extend(rest),
        None => all.extend(shape.values),
    }
    if !all.iter().any(|p| p.pos == first.pos || p.key == first.key) {
        all.push(first);
    }
    all.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)));
    Err(Problems(all))
}

/// The policy's raw structs, or the first problem the parser met.
fn typed_read(file: &Path, text: &str) -> Result<RawPolicy, Problem> {
    // The key path of a value of the wrong shape, which the parser's own message leaves out.
    let mut key = String::new();
    serde_saphyr::with_deserializer_from_str_with_options(text, yaml_options(), |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            key = yaml_key(e.path());
            e.into_inner()
        })
    })
    .map_err(|e| {
        let pos = e.location().map(|l| Pos {
            line: l.line(),
            col: l.column(),
        });
        let mut message = yaml_message(&e);
        // The bad value, unless the message names it already or it may be a secret.
        if !message.contains('`')
            && let Some(v) = pos.and_then(|p| quoted(&key, text, p))
        {
            message = format!("{message}, found `{v}`");
        }
        Problem::error(file, pos, key.as_str(), message)
    })
}

/// Tight budgets: a policy is small, and a YAML bomb must not get far.
pub(crate) fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_depth: 64,
            max_aliases: 1_000,
        },
    }
}

/// A path as the policy's problems print keys (`cors.allow_origins[1]`); the root is no key.
/// A value read with its position (`Spanned`) is a map inside, whose `value` the path names
/// last: that step is the parser's, not the file's. (No leaf key of the policy is a plain
/// `value`: the one key of that name is itself read with its position.)
fn yaml_key(path: &serde_path_to_error::Path) -> String {
    let key = path.to_string();
    let key = key.strip_suffix(".value").unwrap_or(&key);
    if key == "." {
        String::new()
    } else {
        key.to_owned()
    }
}

/// The value under `key` written at `pos`, for a message to repeat; `None` when it may be a
/// secret (by its key, or by its shape: see [`showable`]).
pub(crate) fn quoted(key: &str, text: &str, pos: Pos) -> Option<String> {
    if is_secret_key(key) {
        return None;
    }
    value_at(text, pos).filter(|v| showable(v))
}

/// Whether the value under `key` may be a secret, which no message repeats.
fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key).to_ascii_lowercase();
    ["secret", "password", "token", "private"]
        .iter()
        .any(|w| last.contains(w))
}

/// Whether a value as written may be repeated in a message: not a mapping (it may hold a
/// secret under a key of its own: `{ secret: ... }`, or a block mapping's first entry) and no
/// URL with credentials in it (a Redis URL's password).
fn showable(written: &str) -> bool {
    let credentials = written.split("://").skip(1).any(|rest| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
        authority.contains('@')
    });
    !written.contains('{') && !written.contains(": ") && !credentials
}

/// The value written at `pos` (1-based line and column), as the file spells it: a quoted
/// string to its closing quote, a flow collection to its closing bracket, a plain scalar to
/// the end of its line, comment or flow item.
pub(crate) fn value_at(text: &str, pos: Pos) -> Option<String> {
    let line = text
        .lines()
        .nth(usize::try_from(pos.line).ok()?.checked_sub(1)?)?;
    let v = written_from(line, byte_at(line, pos.col)?)?;
    Some(if v.chars().count() > 60 {
        format!("{}...", v.chars().take(60).collect::<String>())
    } else {
        v.to_owned()
    })
}

/// The byte of `line` where 1-based character column `col` is.
pub(crate) fn byte_at(line: &str, col: u64) -> Option<usize> {
    let ci = usize::try_from(col).ok()?.checked_sub(1)?;
    line.char_indices().nth(ci).map(|(i, _)| i)
}

/// The value written in `line` from byte `start`, whole: a quoted string to its closing
/// quote, a flow collection to its closing bracket, a plain scalar to the end of the line, a
/// comment or a flow item's end. `None` for no value there.
pub(crate) fn written_from(line: &str, start: usize) -> Option<&str> {
    let rest = line.get(start..)?.trim_end_matches(['\n', '\r']);
    let v = match rest.chars().next()? {
        q @ ('"' | '\'') => rest[1..].find(q).map_or(rest, |end| &rest[..end + 2]),
        // A flow collection to its closing bracket, when that is on the same line.
        '[' | '{' => {
            let mut depth = 0usize;
            let end = rest.char_indices().find_map(|(i, c)| {
                match c {
                    '[' | '{' => depth += 1,
                    ']' | '}' => depth = depth.saturating_sub(1),
                    _ => {}
                }
                (depth == 0).then_some(i + 1)
            });
            &rest[..end.unwrap_or(rest.len())]
        }
        _ => {
            let end = rest
                .find(" #")
                .into_iter()
                .chain(rest.find([',', ']', '}']))
                .min()
                .unwrap_or(rest.len());
            rest[..end].trim_end()
        }
    };
    (!v.is_empty() && !v.ends_with(':')).then_some(v)
}

/// The parser's message without its own position suffix (ours is printed in front).
pub(crate) fn yaml_message(e: &serde_saphyr::Error) -> String {
    let msg = e.to_string();
    let mut first = msg.lines().next().unwrap_or("invalid YAML").trim();
    if let Some(i) = first.find(" at line ") {
        first = &first[..i];
    }
    first = first.strip_prefix("error: ").unwrap_or(first);
    // Drop a leading "line N column M: ": the position is printed in front already.
    if let Some(rest) = first.strip_prefix("line ")
        && let Some((_, tail)) = rest.split_once(": ")
        && rest.split(':').next().is_some_and(|p| p.contains("column"))
    {
        first = tail;
    }
    first.to_owned()
}

fn pos<T>(s: &Spanned<T>) -> Option<Pos> {
    Some(Pos {
        line: s.referenced.line(),
        col: s.referenced.column(),
    })
}

struct Compiler<'a> {
    file: &'a Path,
    problems: Problems,
    /// Rules written in the description (`x-portcullis-owner`, `x-portcullis-rate-limit`).
    described: Vec<Described>,
    /// The files read to build the policy.
    sources: Vec<PathBuf>,
}

/// Where a rule from the description came from: its key, the description, the operation.
type Origin = (String, PathBuf, Option<Pos>);

/// A rule an operation of the description carries.
#[derive(Debug)]
struct Described {
    /// `GET /v2/orders/{order_id}`.
    route: String,
    /// The extension's name.
    name: &'static str,
    value: serde_json::Value,
    file: PathBuf,
    pos: Option<Pos>,
}

impl Compiler<'_> {
    fn err<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, msg: impl Into<String>) {
        self.problems
            .push(Problem::error(self.file, pos(at), key, msg));
    }

    fn warn<T>(&mut self, at: &Spanned<T>, key: impl Into<String>, msg: impl Into<String>) {
        self.problems
            .push(Problem::warning(self.file, pos(at), key, msg));
    }

    /// A file the policy is built from (`relative`, and remembered as a source).
    fn source(&mut self, p: &str) -> PathBuf {
        let p = self.relative(p);
        if !self.sources.contains(&p) {
            self.sources.push(p.clone());
        }
        p
    }

    fn relative(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.file.parent().unwrap_or(Path::new(".")).join(p)
        }
    }

    fn compile(mut self, raw: RawPolicy) -> Result<Loaded, Problems> {
        let listen = self.addr(&raw.listen, "listen");
        let upstream = self.upstream(&raw.upstream);
        let mode = match raw.mode.as_ref().map(|m| (m, m.value.as_str())) {
            None | Some((_, "production")) => Mode::Production,
            Some((_, "development")) => Mode::Development,
            Some((m, other)) => {
                self.err(
                    m,
                    "mode",
                    format!("`{other}` is not `production` or `development`"),
                );
                Mode::Production
            }
        };
        if let (Mode::Development, Some(addr)) = (mode, listen)
            && !addr.ip().is_loopback()
        {
            self.err(
                &raw.listen,
                "listen",
                "development mode leaks detail; it may only listen on loopback",
            );
        }
        let expose_upstream_errors = match &raw.errors.expose_upstream_errors {
            Some(e) if e.value && mode != Mode::Development => {
                self.err(e, "errors.expose_upstream_errors", "passing upstream error bodies to clients leaks internals; only allowed with `mode: development`");
                false
            }
            Some(e) => e.value,
            None => false,
        };
        let tls = raw.tls.as_ref().map(|t| Tls {
            cert: self.readable(&t.cert, "tls.cert"),
            key: self.readable(&t.key, "tls.key"),
        });
        let admin = raw.admin.as_ref().and_then(|a| self.admin(a));
        let trusted_proxies = raw
            .trusted_proxies
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let v = s.value.trim();
                let net = v
                    .parse::<IpNet>()
                    .ok()
                    .or_else(|| v.parse::<std::net::IpAddr>().ok().map(IpNet::from));
                match net {
                    None => self.err(
                        s,
                        format!("trusted_proxies[{i}]"),
                        format!("`{v}` is not an IP address or CIDR range"),
                    ),
                    // Every address trusted: each client's own `X-Forwarded-For` would say who
                    // it is, and per-address limits and lockouts would hold no one.
                    Some(n) if n.prefix_len() == 0 => self.err(
                        s,
                        format!("trusted_proxies[{i}]"),
                        format!(
                            "`{v}` trusts every address: list the proxies in front of the gateway"
                        ),
                    ),
                    Some(_) => {}
                }
                net
            })
            .collect();
        let limits = self.limits(&raw.limits);
        let cors = raw.cors.as_ref().map(|c| self.cors(c));
        let inventory = self.inventory(&raw);
        let headers = self.headers(&raw.security_headers, tls.is_some(), &inventory);
        let undeclared_response_fields = match raw
            .validation
            .as_ref()
            .and_then(|v| v.undeclared_response_fields.as_ref())
        {
            None => ResponseFields::Remove,
            Some(f) => match f.value.as_str() {
                "remove" => ResponseFields::Remove,
                "refuse" => ResponseFields::Refuse,
                "pass" => ResponseFields::Pass,
                other => {
                    self.err(
                        f,
                        "validation.undeclared_response_fields",
                        format!("`{other}` is not `remove`, `refuse` or `pass`"),
                    );
                    ResponseFields::Remove
                }
            },
        };
        let mut inventory = inventory;
        let openapi_doc = self.request_schemas(&raw, &mut inventory);
        let mut auth = raw.auth.as_ref().map(|a| self.auth(a, &inventory));
        // Per-role views of answers (`x-portcullis-roles` on properties) are applied as the
        // answer is filtered: `pass` reads no answer, and would show every view to everyone.
        let views = openapi_doc
            .as_deref()
            .is_some_and(crate::openapi::has_property_roles);
        if views
            && undeclared_response_fields == ResponseFields::Pass
            && let Some(f) = raw
                .validation
                .as_ref()
                .and_then(|v| v.undeclared_response_fields.as_ref())
        {
            self.err(
                f,
                "validation.undeclared_response_fields",
                "`pass` reads no answer, so the description's per-role views (`x-portcullis-roles` on properties) would not be applied: use `remove` or `refuse`",
            );
        }
        // Roles the description carries (`x-portcullis-roles`, on operations or properties)
        // apply like a policy role rule, with or without an `authorization` section.
        let described_roles = views
            || inventory.routes.iter().any(|r| !r.roles.is_empty())
            || self
                .described
                .iter()
                .any(|d| d.name == "x-portcullis-owner");
        let no_rules = RawAuthz::default();
        let authz = match (&raw.authorization, described_roles) {
            (Some(z), _) => self.authz(z, &inventory, auth.as_mut()),
            (None, true) if auth.is_some() => self.authz(&no_rules, &inventory, auth.as_mut()),
            (None, true) => {
                if let Some(spec) = &raw.openapi {
                    self.warn(
                        spec,
                        "openapi",
                        "the description's `x-portcullis-roles` are not enforced: roles need `auth`",
                    );
                }
                None
            }
            (None, false) => None,
        };
        let mut rate_limits = self.rate_limits(&raw.rate_limits, &inventory);
        for (raw_rule, key) in
            self.described_rules::<RawRateRule>("x-portcullis-rate-limit", "match")
        {
            let mark = self.problems.0.len();
            if let Some(r) = raw_rule {
                let n = rate_limits.len();
                let mut rules = self.rate_limits(std::slice::from_ref(&r), &inventory);
                for rule in &mut rules {
                    rule.name = format!("r{n}");
                }
                rate_limits.extend(rules);
            }
            self.relocate(mark, &key);
        }
        let quotas = self.quotas(&raw.quotas, &inventory);
        let concurrency_limits = self.concurrency(&raw.concurrency_limits, &inventory);
        let default_bounds = self.bounds(raw.validation.as_ref().and_then(|v| v.defaults.as_ref()));
        let ssrf = raw
            .ssrf
            .as_ref()
            .map(|r| self.ssrf(r, &inventory, openapi_doc.as_deref()));
        let state = match &raw.state {
            None => StateBackend::Embedded(self.relative("portcullis-data")),
            Some(st) if st.backend.value != "redis" && st.redis.is_some() => {
                self.err(
                    &st.backend,
                    "state.redis",
                    "`redis` settings need `backend: redis`",
                );
                StateBackend::Memory
            }
            Some(st) => match st.backend.value.as_str() {
                "redis" => match &st.redis {
                    Some(r) => self
                        .redis(r)
                        .map_or(StateBackend::Memory, StateBackend::Redis),
                    None => {
                        self.err(
                            &st.backend,
                            "state.redis",
                            "`backend: redis` needs a `redis` section with `url`, `url_env`, `cluster` or `sentinel`",
                        );
                        StateBackend::Memory
                    }
                },
                "memory" => StateBackend::Memory,
                "embedded" => StateBackend::Embedded(
                    self.relative(
                        st.path
                            .as_ref()
                            .map_or("portcullis-data", |p| p.value.as_str()),
                    ),
                ),
                other => {
                    self.err(
                        &st.backend,
                        "state.backend",
                        format!("`{other}` is not `memory`, `embedded` or `redis`"),
                    );
                    StateBackend::Memory
                }
            },
        };
        self.problems
            .0
            .sort_by_key(|p| (p.file.clone(), p.pos.map(|p| (p.line, p.col))));
        if self.problems.has_errors() {
            return Err(self.problems);
        }
        let (Some(listen), Some(upstream)) = (listen, upstream) else {
            return Err(self.problems);
        };
        Ok(Loaded {
            policy: Policy {
                file: self.file.to_owned(),
                listen,
                upstream,
                mode,
                tls,
                admin,
                trusted_proxies,
                limits,
                cors,
                headers,
                inventory,
                expose_upstream_errors,
                auth,
                authz,
                rate_limits,
                quotas,
                concurrency_limits,
                ssrf,
                openapi_doc,
                validate_requests: raw.validation.as_ref().and_then(|v| v.requests) != Some(false),
                default_bounds,
                undeclared_response_fields,
                state,
                sources: self.sources,
            },
            warnings: self.problems,
        })
    }

    fn addr(&mut self, s: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        let a = s.value.parse().ok();
        if a.is_none() {
            self.err(
                s,
                key,
                format!("`{}` is not an address such as 127.0.0.1:8080", s.value),
            );
        }
        a
    }

    fn upstream(&mut self, s: &Spanned<String>) -> Option<Upstream> {
        let bad = |why: &str| format!("`{}` {why}", s.value);
        let uri: http::Uri = match s.value.parse() {
            Ok(u) => u,
            Err(_) => {
                self.err(
                    s,
                    "upstream",
                    bad("is not a URL such as http://127.0.0.1:8081"),
                );
                return None;
            }
        };
        if uri.scheme_str() != Some("http") {
            self.err(
                s,
                "upstream",
                bad("must be an http:// URL (TLS to the upstream is not supported yet)"),
            );
            return None;
        }
        if uri.path() != "/" && !uri.path().is_empty() || uri.query().is_some() {
            self.err(
                s,
                "upstream",
                bad("must not carry a path or query; routes are forwarded as they are"),
            );
            return None;
        }
        let Some(authority) = uri.authority().cloned() else {
            self.err(s, "upstream", bad("has no host"));
            return None;
        };
        if authority.as_str().contains('@') {
            self.err(s, "upstream", bad("must not carry credentials"));
            return None;
        }
        Some(Upstream {
            authority,
            scheme: http::uri::Scheme::HTTP,
        })
    }

    fn readable(&mut self, s: &Spanned<String>, key: &str) -> PathBuf {
        let p = self.source(&s.value);
        if let Err(e) = std::fs::metadata(&p) {
            self.err(s, key, format!("cannot read `{}`: {e}", p.display()));
        }
        p
    }

    fn redis(&mut self, r: &Spanned<RawRedis>) -> Option<RedisState> {
        let raw = &r.value;
        let url_ok = |c: &mut Self, u: &Spanned<String>, key: &str| {
            let v = u.value.as_str();
            let ok = ["redis://", "rediss://"]
                .iter()
                .any(|p| v.strip_prefix(p).is_some_and(|rest| !rest.is_empty()));
            if !ok {
                c.err(
                    u,
                    key,
                    "expected a `redis://host:port` or `rediss://host:port` URL",
                );
            }
            ok
        };
        let mut servers = Vec::new();
        if let Some(u) = &raw.url {
            if url_ok(self, u, "state.redis.url") {
                // `redis://user:password@host`: the userinfo holds a secret.
                let authority = u.value.split("://").nth(1).unwrap_or("");
                if authority.split('/').next().unwrap_or("").contains('@') {
                    self.warn(
                        u,
                        "state.redis.url",
                        "a password in the policy file; use `url_env`",
                    );
                }
            }
            servers.push(RedisServers::Single(SecretSource::Inline(u.value.clone())));
        }
        if let Some(e) = &raw.url_env {
            servers.push(RedisServers::Single(SecretSource::Env(e.value.clone())));
        }
        if let Some(nodes) = &raw.cluster {
            if nodes.is_empty() {
                self.err(r, "state.redis.cluster", "list at least one seed node");
            }
            for n in nodes {
                url_ok(self, n, "state.redis.cluster");
            }
            servers.push(RedisServers::Cluster(
                nodes.iter().map(|n| n.value.clone()).collect(),
            ));
        }
        if let Some(sn) = &raw.sentinel {
            if sn.nodes.is_empty() {
                self.err(
                    &sn.master,
                    "state.redis.sentinel.nodes",
                    "list at least one sentinel",
                );
            }
            for n in &sn.nodes {
                url_ok(self, n, "state.redis.sentinel.nodes");
            }
            servers.push(RedisServers::Sentinel {
                master: sn.master.value.clone(),
                nodes: sn.nodes.iter().map(|n| n.value.clone()).collect(),
            });
        }
        if servers.len() != 1 {
            self.err(
                r,
                "state.redis",
                "give exactly one of `url`, `url_env`, `cluster` or `sentinel`",
            );
        }
        let dur = |c: &mut Self, v: &Option<Spanned<String>>, key: &str, default: u64| match v {
            None => Duration::from_millis(default),
            Some(v) => match units::duration(&v.value) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    c.err(v, format!("state.redis.{key}"), "must be more than zero");
                    Duration::from_millis(default)
                }
                Err(e) => {
                    c.err(v, format!("state.redis.{key}"), e);
                    Duration::from_millis(default)
                }
            },
        };
        let timeout = dur(self, &raw.timeout, "timeout", 250);
        let retry_interval = dur(self, &raw.retry_interval, "retry_interval", 1000);
        let replicas = match &raw.replicas {
            None => 1,
            Some(n) if n.value == 0 => {
                self.err(n, "state.redis.replicas", "at least 1");
                1
            }
            Some(n) => n.value,
        };
        let revocations_fail_open = match &raw.revocations_on_failure {
            None => false,
            Some(v) => match v.value.as_str() {
                "closed" => false,
                "open" => {
                    self.warn(
                        v,
                        "state.redis.revocations_on_failure",
                        "revoked tokens are accepted while Redis is unreachable",
                    );
                    true
                }
                other => {
                    self.err(
                        v,
                        "state.redis.revocations_on_failure",
                        format!("`{other}` is not `closed` or `open`"),
                    );
                    false
                }
            },
        };
        let prefix = raw
            .prefix
            .as_ref()
            .map_or_else(|| "portcullis:".to_owned(), |p| p.value.clone());
        (servers.len() == 1).then(|| RedisState {
            servers: servers.remove(0),
            prefix,
            timeout,
            retry_interval,
            replicas,
            revocations_fail_open,
        })
    }

    fn admin(&mut self, section: &Spanned<RawAdmin>) -> Option<Admin> {
        let a = &section.value;
        let listen = match &a.listen {
            Some(l) => self.addr(l, "admin.listen")?,
            None => DEFAULT_ADMIN_LISTEN,
        };
        let mut sources = Vec::new();
        if let Some(env) = &a.token_env {
            sources.push(SecretSource::Env(env.value.clone()));
        }
        if let Some(f) = &a.token_file {
            sources.push(SecretSource::File(self.readable(f, "admin.token_file")));
        }
        if let Some(t) = &a.token {
            self.warn(
                t,
                "admin.token",
                "a plain-text secret in the policy file; use `token_env` or `token_file`",
            );
            if t.value.len() < 16 {
                self.err(
                    t,
                    "admin.token",
                    "the admin token must have at least 16 characters",
                );
            }
            sources.push(SecretSource::Inline(t.value.clone()));
        }
        if sources.len() > 1 {
            self.err(
                section,
                "admin",
                "give one of `token_env`, `token_file`, `token`",
            );
        }
        let token = sources.pop();
        if let Some(l) = &a.listen
            && token.is_none()
            && !listen.ip().is_loopback()
        {
            self.err(
                l,
                "admin.listen",
                "an admin listener beyond loopback needs a token (`token_env` or `token_file`)",
            );
        }
        Some(Admin { listen, token })
    }

    fn limits(&mut self, raw: &RawLimits) -> Limits {
        let mut l = Limits::default();
        let dur = |c: &mut Self, v: &Option<Spanned<String>>, key: &str, slot: &mut Duration| {
            if let Some(v) = v {
                match units::duration(&v.value) {
                    Ok(d) if !d.is_zero() => *slot = d,
                    Ok(_) => c.err(v, format!("limits.{key}"), "must be more than zero"),
                    Err(e) => c.err(v, format!("limits.{key}"), e),
                }
            }
        };
        dur(
            self,
            &raw.header_read_timeout,
            "header_read_timeout",
            &mut l.header_read_timeout,
        );
        dur(
            self,
            &raw.body_read_timeout,
            "body_read_timeout",
            &mut l.body_read_timeout,
        );
        dur(self, &raw.idle_timeout, "idle_timeout", &mut l.idle_timeout);
        dur(
            self,
            &raw.upstream_connect_timeout,
            "upstream_connect_timeout",
            &mut l.upstream_connect_timeout,
        );
        dur(
            self,
            &raw.upstream_timeout,
            "upstream_timeout",
            &mut l.upstream_timeout,
        );
        // Sizes take a unit (`64KiB`); counts are whole numbers.
        let num = |c: &mut Self,
                   v: &Option<Spanned<String>>,
                   key: &str,
                   min: u64,
                   max: u64|
         -> Option<u64> {
            let v = v.as_ref()?;
            let read = if key.ends_with("_bytes") {
                units::size(&v.value)
            } else {
                units::count(&v.value)
            };
            match read {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                Ok(_) => {
                    c.err(
                        v,
                        format!("limits.{key}"),
                        format!("must be between {min} and {max}"),
                    );
                    None
                }
                Err(e) => {
                    c.err(v, format!("limits.{key}"), e);
                    None
                }
            }
        };
        if let Some(n) = num(self, &raw.max_connections, "max_connections", 1, 1_000_000) {
            l.max_connections = n as usize;
        }
        if let Some(n) = num(
            self,
            &raw.max_header_bytes,
            "max_header_bytes",
            1024,
            1 << 20,
        ) {
            l.max_header_bytes = n as usize;
        }
        if let Some(n) = num(self, &raw.max_body_bytes, "max_body_bytes", 0, 1 << 32) {
            l.max_body_bytes = n;
        }
        if let Some(n) = num(
            self,
            &raw.max_concurrent_streams,
            "max_concurrent_streams",
            1,
            10_000,
        ) {
            l.max_concurrent_streams = n as u32;
        }
        if let Some(n) = num(self, &raw.workers, "workers", 0, 1024) {
            l.workers = n as usize;
        }
        if let Some(v) = &raw.pin_workers {
            match v.value.as_str() {
                "true" | "True" | "TRUE" => l.pin_workers = true,
                "false" | "False" | "FALSE" => l.pin_workers = false,
                _ => self.err(v, "limits.pin_workers", "must be true or false"),
            }
        }
        l
    }

    fn cors(&mut self, c: &RawCors) -> Cors {
        let mut origins = Vec::new();
        for (i, o) in c.allow_origins.iter().enumerate() {
            let key = format!("cors.allow_origins[{i}]");
            let v = o.value.trim();
            if v == "*" {
                if c.allow_credentials {
                    self.err(o, key, "`*` with `allow_credentials: true` lets any site read users' data; list the origins");
                } else {
                    self.err(
                        o,
                        key,
                        "`*` is not supported; list the origins that may call the API",
                    );
                }
                continue;
            }
            let ok = v.parse::<http::Uri>().ok().is_some_and(|u| {
                matches!(u.scheme_str(), Some("https" | "http"))
                    && u.authority().is_some()
                    && u.path() == "/"
                    && !v.ends_with('/')
            });
            if !ok {
                self.err(
                    o,
                    key,
                    format!("`{v}` is not an origin such as https://app.example"),
                );
                continue;
            }
            if v.starts_with("http://")
                && !v.contains("://localhost")
                && !v.contains("://127.0.0.1")
            {
                self.warn(
                    o,
                    format!("cors.allow_origins[{i}]"),
                    "a plain-http origin can be spoofed on the network",
                );
            }
            if let Ok(h) = HeaderValue::from_str(v) {
                origins.push(h);
            }
        }
        let methods = match &c.allow_methods {
            None => vec![
                Method::GET,
                Method::POST,
                Method::PUT,
                Method::PATCH,
                Method::DELETE,
            ],
            Some(ms) => ms
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    let parsed =
                        Method::from_bytes(m.value.trim().to_ascii_uppercase().as_bytes()).ok();
                    if parsed.is_none() || m.value.trim() == "*" {
                        self.err(
                            m,
                            format!("cors.allow_methods[{i}]"),
                            format!("`{}` is not an HTTP method", m.value),
                        );
                        return None;
                    }
                    parsed
                })
                .collect(),
        };
        let names = |c: &mut Self, list: &[Spanned<String>], key: &str| -> Vec<HeaderName> {
            list.iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    // `*` is a valid name, and a wildcard to browsers: every field of every
                    // answer exposed, or every request field allowed.
                    if h.value.trim() == "*" {
                        c.err(
                            h,
                            format!("cors.{key}[{i}]"),
                            "a wildcard is not allowed: list the header names",
                        );
                        return None;
                    }
                    let parsed = HeaderName::from_bytes(h.value.trim().as_bytes()).ok();
                    if parsed.is_none() {
                        c.err(
                            h,
                            format!("cors.{key}[{i}]"),
                            format!("`{}` is not a header name", h.value),
                        );
                    }
                    parsed
                })
                .collect()
        };
        let allow_headers = match &c.allow_headers {
            None => vec![http::header::AUTHORIZATION, http::header::CONTENT_TYPE],
            Some(hs) => names(self, hs, "allow_headers"),
        };
        let expose_headers = names(self, &c.expose_headers, "expose_headers");
        let max_age = match &c.max_age {
            None => Duration::from_secs(600),
            Some(v) => units::duration(&v.value).unwrap_or_else(|e| {
                self.err(v, "cors.max_age", e);
                Duration::ZERO
            }),
        };
        Cors {
            allow_origins: origins,
            allow_credentials: c.allow_credentials,
            allow_methods: methods,
            allow_headers,
            expose_headers,
            max_age,
        }
    }

    fn rules(
        &mut self,
        set: &BTreeMap<String, Spanned<String>>,
        remove: &[Spanned<String>],
        key: &str,
    ) -> HeaderRules {
        let mut rules = HeaderRules::default();
        // Fields the gateway itself owns: CORS (a rule could send `Access-Control-Allow-Origin:
        // null` with credentials to every origin, or drop `Vary: Origin`), the framing, and the
        // request id.
        let owned = |name: &str| {
            let n = name.trim().to_ascii_lowercase();
            n.starts_with("access-control-")
                || matches!(
                    n.as_str(),
                    "vary"
                        | "content-length"
                        | "transfer-encoding"
                        | "connection"
                        | "keep-alive"
                        | "upgrade"
                        | "trailer"
                        | "x-request-id"
                )
        };
        for (name, value) in set.iter().filter(|(n, _)| owned(n)) {
            self.err(
                value,
                format!("{key}.set.{name}"),
                format!("`{name}` is the gateway's own (CORS, framing, request id): configure `cors` instead, or leave it"),
            );
        }
        for (i, r) in remove.iter().enumerate().filter(|(_, r)| owned(&r.value)) {
            self.err(
                r,
                format!("{key}.remove[{i}]"),
                format!(
                    "`{}` is the gateway's own (CORS, framing, request id): it cannot be removed",
                    r.value
                ),
            );
        }
        for (name, value) in set.iter().filter(|(n, _)| !owned(n)) {
            match (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value.value),
            ) {
                (Ok(n), Ok(v)) => rules.set.push((n, v)),
                (Err(_), _) => self.err(
                    value,
                    format!("{key}.set.{name}"),
                    format!("`{name}` is not a header name"),
                ),
                (_, Err(_)) => self.err(
                    value,
                    format!("{key}.set.{name}"),
                    "not a valid header value",
                ),
            }
        }
        for (i, r) in remove.iter().enumerate().filter(|(_, r)| !owned(&r.value)) {
            match HeaderName::from_bytes(r.value.trim().as_bytes()) {
                Ok(n) => rules.remove.push(n),
                Err(_) => self.err(
                    r,
                    format!("{key}.remove[{i}]"),
                    format!("`{}` is not a header name", r.value),
                ),
            }
        }
        rules
    }

    fn headers(&mut self, raw: &RawHeaders, tls: bool, inventory: &Inventory) -> HeaderPolicy {
        let mut all = HeaderRules::default();
        let defaults = DEFAULT_SECURITY_HEADERS.iter().chain(tls.then_some(&HSTS));
        for (n, v) in defaults {
            all.set
                .push((HeaderName::from_static(n), HeaderValue::from_static(v)));
        }
        all.remove.extend(
            DEFAULT_REMOVED_HEADERS
                .iter()
                .map(|n| HeaderName::from_static(n)),
        );
        let user = self.rules(&raw.set, &raw.remove, "security_headers");
        // User settings replace defaults of the same name; a user `remove` drops a default.
        all.set
            .retain(|(n, _)| !user.set.iter().any(|(u, _)| u == n) && !user.remove.contains(n));
        all.set.extend(user.set);
        for r in user.remove {
            if !all.remove.contains(&r) {
                all.remove.push(r);
            }
        }
        let mut per_route = Vec::new();
        for (i, rr) in raw.routes.iter().enumerate() {
            let key = format!("security_headers.routes[{i}]");
            let rules = self.rules(&rr.rules.set, &rr.rules.remove, &key);
            match parse_route(&rr.route.value) {
                Ok((m, t)) => match inventory
                    .routes
                    .iter()
                    .position(|r| r.method == m && r.template == t)
                {
                    Some(id) => per_route.push((id, rules)),
                    None => self.err(
                        &rr.route,
                        format!("{key}.route"),
                        format!("`{}` is not a declared route", rr.route.value),
                    ),
                },
                Err(e) => self.err(&rr.route, format!("{key}.route"), e),
            }
        }
        HeaderPolicy { all, per_route }
    }

    fn token_type(
        &mut self,
        raw: Option<&RawTokenType>,
        key: &str,
        default_value: &str,
    ) -> TokenType {
        let Some(t) = raw else {
            return TokenType::Claim {
                name: "type".into(),
                value: default_value.into(),
            };
        };
        match (&t.claim, &t.value, &t.header) {
            (Some(c), Some(v), None) => TokenType::Claim {
                name: c.value.clone(),
                value: v.value.clone(),
            },
            (None, None, Some(h)) => TokenType::Header(h.value.clone()),
            (Some(c), None, None) => {
                self.err(
                    c,
                    format!("{key}.value"),
                    "a type claim needs the `value` an access token carries",
                );
                TokenType::Any
            }
            (_, _, Some(h)) => {
                self.err(h, key, "give either `claim` and `value`, or `header`");
                TokenType::Any
            }
            (None, Some(v), None) => {
                self.err(
                    v,
                    format!("{key}.claim"),
                    "`value` needs the `claim` that carries it",
                );
                TokenType::Any
            }
            (None, None, None) => TokenType::Any,
        }
    }

    fn secret(&mut self, k: &RawKey, key: &str, alg: JwtAlg) -> Option<Vec<u8>> {
        let (at, value) = match (&k.secret_env, &k.secret_file, &k.secret) {
            (Some(e), None, None) => match std::env::var(&e.value) {
                Ok(v) => (e, v.into_bytes()),
                Err(_) => {
                    self.err(
                        e,
                        format!("{key}.secret_env"),
                        format!("environment variable `{}` is not set", e.value),
                    );
                    return None;
                }
            },
            (None, Some(f), None) => match std::fs::read(self.source(&f.value)) {
                Ok(mut v) => {
                    while v.last().is_some_and(|b| b.is_ascii_whitespace()) {
                        v.pop();
                    }
                    (f, v)
                }
                Err(e) => {
                    self.err(
                        f,
                        format!("{key}.secret_file"),
                        format!("cannot read `{}`: {e}", f.value),
                    );
                    return None;
                }
            },
            (None, None, Some(s)) => {
                self.warn(
                    s,
                    format!("{key}.secret"),
                    "a plain-text secret in the policy file; use `secret_env` or `secret_file`",
                );
                (s, s.value.clone().into_bytes())
            }
            _ => {
                self.err(
                    &k.alg,
                    key,
                    format!(
                        "{} needs exactly one of `secret_env`, `secret_file`, `secret`",
                        alg.name()
                    ),
                );
                return None;
            }
        };
        let lower = String::from_utf8_lossy(&value).to_lowercase();
        if COMMON_JWT_SECRETS.contains(&lower.as_str()) {
            self.err(at, key, "this HMAC secret is in every JWT cracking word list; generate a random one (openssl rand -base64 48)");
            return None;
        }
        if value.len() < alg.min_secret_bytes() {
            self.err(
                at,
                key,
                format!(
                    "an {} secret needs at least {} bytes (RFC 7518); this one has {}",
                    alg.name(),
                    alg.min_secret_bytes(),
                    value.len()
                ),
            );
            return None;
        }
        let distinct: std::collections::HashSet<u8> = value.iter().copied().collect();
        if distinct.len() < 8 {
            self.err(
                at,
                key,
                "this HMAC secret repeats a few characters; generate a random one",
            );
            return None;
        }
        Some(value)
    }

    fn auth(&mut self, a: &RawAuth, inventory: &Inventory) -> Auth {
        let j = &a.jwt;
        let mut keys = Vec::new();
        let jwks = j.jwks.as_ref().and_then(|w| self.jwks(w));
        if j.keys.is_empty() && j.jwks.is_none() {
            self.problems.push(Problem::error(
                self.file,
                None,
                "auth.jwt.keys",
                "at least one key is needed",
            ));
        }
        for (i, k) in j.keys.iter().enumerate() {
            let key = format!("auth.jwt.keys[{i}]");
            let Some(alg) = JwtAlg::ALL.into_iter().find(|x| x.name() == k.alg.value) else {
                let names: Vec<&str> = JwtAlg::ALL.iter().map(|a| a.name()).collect();
                self.err(
                    &k.alg,
                    format!("{key}.alg"),
                    format!("`{}` is not one of {}", k.alg.value, names.join(", ")),
                );
                continue;
            };
            let material = if alg.is_hmac() {
                if let Some(p) = &k.public_key_file {
                    self.err(
                        p,
                        format!("{key}.public_key_file"),
                        format!("{} keys are secrets, not public keys", alg.name()),
                    );
                }
                self.secret(k, &key, alg).map(KeyMaterial::Secret)
            } else {
                for s in [&k.secret_env, &k.secret_file, &k.secret]
                    .into_iter()
                    .flatten()
                {
                    self.err(
                        s,
                        &key,
                        format!(
                            "{} verifies with a public key (`public_key_file`), never a secret",
                            alg.name()
                        ),
                    );
                }
                match &k.public_key_file {
                    None => {
                        self.err(
                            &k.alg,
                            &key,
                            format!("{} needs `public_key_file`", alg.name()),
                        );
                        None
                    }
                    Some(f) => match std::fs::read(self.source(&f.value)) {
                        Ok(pem)
                            if pem.starts_with(b"-----BEGIN")
                                && !pem.windows(7).any(|w| w == b"PRIVATE") =>
                        {
                            Some(KeyMaterial::PublicPem(pem))
                        }
                        Ok(_) => {
                            self.err(f, format!("{key}.public_key_file"), "not a PEM public key (a private key does not belong in the gateway)");
                            None
                        }
                        Err(e) => {
                            self.err(
                                f,
                                format!("{key}.public_key_file"),
                                format!("cannot read `{}`: {e}", f.value),
                            );
                            None
                        }
                    },
                }
            };
            let kid = k.kid.as_ref().map(|s| s.value.clone());
            if kid.is_none() && j.keys.len() > 1 {
                self.err(
                    &k.alg,
                    format!("{key}.kid"),
                    "with several keys each needs a `kid`",
                );
            }
            if let Some(material) = material {
                keys.push(JwtKey { kid, alg, material });
            }
        }
        let require = match &j.require {
            None => vec!["exp".to_owned(), "sub".to_owned()],
            Some(list) => list.iter().map(|c| c.value.clone()).collect(),
        };
        if !require.iter().any(|c| c == "exp") {
            self.problems.push(Problem::warning(
                self.file,
                None,
                "auth.jwt.require",
                "tokens without `exp` never expire",
            ));
        }
        let leeway = match &j.leeway {
            None => Duration::from_secs(30),
            Some(l) => match units::duration(&l.value) {
                Ok(d) if d <= Duration::from_secs(300) => d,
                Ok(_) => {
                    self.err(
                        l,
                        "auth.jwt.leeway",
                        "at most 5m: clocks are not that far apart",
                    );
                    Duration::from_secs(30)
                }
                Err(e) => {
                    self.err(l, "auth.jwt.leeway", e);
                    Duration::from_secs(30)
                }
            },
        };
        let max_token_bytes = match &j.max_token_bytes {
            None => 8192,
            Some(v) => units::size(&v.value)
                .map(|n| n as usize)
                .unwrap_or_else(|e| {
                    self.err(v, "auth.jwt.max_token_bytes", e);
                    8192
                }),
        };
        let token_type = self.token_type(j.token_type.as_ref(), "auth.jwt.token_type", "access");
        let mut forward_claims = Vec::new();
        for (claim, header) in &j.forward_claims {
            match HeaderName::from_bytes(header.value.trim().as_bytes()) {
                Ok(h) => forward_claims.push((claim.clone(), h)),
                Err(_) => self.err(
                    header,
                    format!("auth.jwt.forward_claims.{claim}"),
                    format!("`{}` is not a header name", header.value),
                ),
            }
        }
        let jwt = Jwt {
            keys,
            jwks,
            issuer: j.issuer.iter().map(|s| s.value.clone()).collect(),
            audience: j.audience.iter().map(|s| s.value.clone()).collect(),
            require,
            leeway,
            max_token_bytes,
            token_type,
            cookie: j.cookie.as_ref().map(|c| c.value.clone()),
            forward_claims,
        };
        // Which routes need a token: the description's security, else `default`.
        let default_required = match a.default.as_ref().map(|d| (d, d.value.as_str())) {
            None | Some((_, "required")) => true,
            Some((_, "none")) => false,
            Some((d, other)) => {
                self.err(
                    d,
                    "auth.default",
                    format!("`{other}` is not `required` or `none`"),
                );
                true
            }
        };
        let mut required: Vec<bool> = inventory
            .routes
            .iter()
            .map(|r| r.secured.unwrap_or(default_required))
            .collect();
        for (i, p) in a.public.iter().enumerate() {
            match self.route_id(&p.value, inventory) {
                Ok(id) => required[id] = false,
                Err(e) => self.err(p, format!("auth.public[{i}]"), e),
            }
        }
        let refresh = a.refresh.as_ref().and_then(|r| {
            let route = match self.route_id(&r.route.value, inventory) {
                Ok(id) => id,
                Err(e) => {
                    self.err(&r.route, "auth.refresh.route", e);
                    return None;
                }
            };
            if !r.token_pointer.value.starts_with('/') {
                self.err(
                    &r.token_pointer,
                    "auth.refresh.token_pointer",
                    "a JSON pointer starts with `/`",
                );
            }
            let token_type =
                self.token_type(r.token_type.as_ref(), "auth.refresh.token_type", "refresh");
            // The refresh call carries no access token.
            required[route] = false;
            Some(RefreshRule {
                route,
                pointer: r.token_pointer.value.clone(),
                token_type,
            })
        });
        let login = a.login.as_ref().and_then(|l| self.login(l, inventory));
        if let Some(l) = &login {
            required[l.route] = false;
        }
        let mut passwords = Vec::new();
        for (i, p) in a.passwords.iter().enumerate() {
            let key = format!("auth.passwords[{i}]");
            let route = match self.route_id(&p.route.value, inventory) {
                Ok(id) => id,
                Err(e) => {
                    self.err(&p.route, format!("{key}.route"), e);
                    continue;
                }
            };
            let min_length = p.min_length.as_ref().map_or(8, |m| m.value);
            let max_length = p.max_length.as_ref().map_or(128, |m| m.value);
            if let Some(m) = &p.min_length
                && m.value < 8
            {
                self.err(m, format!("{key}.min_length"), "NIST SP 800-63B asks for at least 8 (15 where the password is the only factor)");
            }
            if let Some(m) = &p.max_length
                && (m.value < 64 || m.value < min_length)
            {
                self.err(
                    m,
                    format!("{key}.max_length"),
                    "allow at least 64 characters (and no fewer than min_length)",
                );
            }
            passwords.push(PasswordRule {
                route,
                pointer: p.pointer.value.clone(),
                account_pointer: p.account_pointer.as_ref().map(|a| a.value.clone()),
                min_length,
                max_length,
            });
        }
        Auth {
            jwt,
            required,
            refresh,
            login,
            passwords,
        }
    }

    fn jwks(&mut self, w: &RawJwks) -> Option<JwksSource> {
        let ok_url = w.url.value.parse::<http::Uri>().ok().is_some_and(|u| {
            matches!(u.scheme_str(), Some("https" | "http")) && u.authority().is_some()
        });
        if !ok_url {
            self.err(
                &w.url,
                "auth.jwt.jwks.url",
                format!("`{}` is not an http(s) URL", w.url.value),
            );
            return None;
        }
        if w.url.value.starts_with("http://")
            && !w.url.value.contains("://127.")
            && !w.url.value.contains("://localhost")
            && !w.url.value.contains("://[::1]")
        {
            self.warn(
                &w.url,
                "auth.jwt.jwks.url",
                "keys fetched over plain http can be replaced on the network",
            );
        }
        let mut algs = Vec::new();
        for (i, a) in w.algs.iter().enumerate() {
            match JwtAlg::ALL.into_iter().find(|x| x.name() == a.value) {
                Some(x) if !x.is_hmac() => algs.push(x),
                Some(_) => self.err(
                    a,
                    format!("auth.jwt.jwks.algs[{i}]"),
                    "a JWKS carries public keys; HMAC algorithms cannot come from it",
                ),
                None => self.err(
                    a,
                    format!("auth.jwt.jwks.algs[{i}]"),
                    format!("`{}` is not an algorithm", a.value),
                ),
            }
        }
        if algs.is_empty() {
            self.err(
                &w.url,
                "auth.jwt.jwks.algs",
                "list the algorithms the provider's keys may be used with",
            );
        }
        let dur =
            |c: &mut Self, v: &Option<Spanned<String>>, key: &str, default: u64| -> Duration {
                match v {
                    None => Duration::from_secs(default),
                    Some(v) => units::duration(&v.value).unwrap_or_else(|e| {
                        c.err(v, format!("auth.jwt.jwks.{key}"), e);
                        Duration::from_secs(default)
                    }),
                }
            };
        Some(JwksSource {
            url: w.url.value.clone(),
            algs,
            refresh: dur(self, &w.refresh, "refresh", 300),
            min_interval: dur(self, &w.min_interval, "min_interval", 30),
            max_stale: dur(self, &w.max_stale, "max_stale", 3600),
        })
    }

    fn login(&mut self, l: &RawLogin, inventory: &Inventory) -> Option<LoginRule> {
        let route = match self.route_id(&l.route.value, inventory) {
            Ok(id) => id,
            Err(e) => {
                self.err(&l.route, "auth.login.route", e);
                return None;
            }
        };
        if !l.account_pointer.value.starts_with('/') {
            self.err(
                &l.account_pointer,
                "auth.login.account_pointer",
                "a JSON pointer starts with `/`",
            );
        }
        let count = |c: &mut Self, v: &Option<Spanned<String>>, key: &str, default: u32| -> u32 {
            match v {
                None => default,
                Some(v) => match v.value.parse::<u32>() {
                    Ok(n) if (1..=10_000).contains(&n) => n,
                    _ => {
                        c.err(
                            v,
                            format!("auth.login.{key}"),
                            "must be a whole number from 1 to 10000",
                        );
                        default
                    }
                },
            }
        };
        let per_client_failures = count(self, &l.per_client_failures, "per_client_failures", 5);
        let per_account_failures = count(self, &l.per_account_failures, "per_account_failures", 20);
        let dur =
            |c: &mut Self, v: &Option<Spanned<String>>, key: &str, default: Duration| -> Duration {
                match v {
                    None => default,
                    Some(v) => units::duration(&v.value).unwrap_or_else(|e| {
                        c.err(v, format!("auth.login.{key}"), e);
                        default
                    }),
                }
            };
        let window = dur(self, &l.window, "window", Duration::from_secs(900));
        let base_delay = dur(self, &l.base_delay, "base_delay", Duration::from_secs(1));
        let max_delay = dur(self, &l.max_delay, "max_delay", Duration::from_secs(900));
        if per_account_failures < per_client_failures
            && let Some(v) = &l.per_account_failures
        {
            self.warn(
                v,
                "auth.login.per_account_failures",
                "below per_client_failures: one address alone reaches the account-wide limit",
            );
        }
        Some(LoginRule {
            route,
            account_pointer: l.account_pointer.value.clone(),
            per_client_failures,
            per_account_failures,
            window,
            base_delay,
            max_delay,
            failure_statuses: l
                .failure_statuses
                .as_ref()
                .map_or(vec![401, 403, 404], |v| v.iter().map(|s| s.value).collect()),
            uniform_failures: l.uniform_failures.unwrap_or(true),
        })
    }

    /// The routes a `match` selector names; none is an error at the selector.
    fn selected(
        &mut self,
        sel: &Spanned<String>,
        key: &str,
        inventory: &Inventory,
    ) -> Option<Vec<usize>> {
        match selector_matches(&sel.value, inventory) {
            Ok(ids) if !ids.is_empty() => Some(ids),
            Ok(_) => {
                self.err(
                    sel,
                    format!("{key}.match"),
                    format!("`{}` matches no declared route", sel.value),
                );
                None
            }
            Err(e) => {
                self.err(sel, format!("{key}.match"), e);
                None
            }
        }
    }

    fn rate_key(&mut self, k: &Spanned<String>, key: &str) -> Option<RateKey> {
        if k.value.contains('+') {
            let mut parts = Vec::new();
            for part in k.value.split('+') {
                let one = Spanned {
                    value: part.trim().to_owned(),
                    referenced: k.referenced,
                    defined: k.defined,
                };
                parts.push(self.one_rate_key(&one, key)?);
            }
            return Some(RateKey::All(parts));
        }
        self.one_rate_key(k, key)
    }

    fn one_rate_key(&mut self, k: &Spanned<String>, key: &str) -> Option<RateKey> {
        Some(match k.value.as_str() {
            "ip" => RateKey::Ip,
            "user" => RateKey::User,
            v => match v.split_once(':') {
                Some(("claim", c)) if !c.is_empty() => RateKey::Claim(c.to_owned()),
                Some(("body", p)) if p.starts_with('/') => RateKey::Body(p.to_owned()),
                Some(("header", h)) => match HeaderName::from_bytes(h.trim().as_bytes()) {
                    Ok(h) => RateKey::Header(h),
                    Err(_) => {
                        self.err(
                            k,
                            format!("{key}.key"),
                            format!("`{h}` is not a header name"),
                        );
                        return None;
                    }
                },
                _ => {
                    self.err(
                        k,
                        format!("{key}.key"),
                        format!("`{v}` is not `ip`, `user`, `claim:NAME`, `header:NAME` or `body:/POINTER` (or several joined by `+`)"),
                    );
                    return None;
                }
            },
        })
    }

    fn quotas(&mut self, raw: &[RawQuota], inventory: &Inventory) -> Vec<QuotaRule> {
        let mut out = Vec::new();
        for (i, q) in raw.iter().enumerate() {
            let key = format!("quotas[{i}]");
            let Some(routes) = self.selected(&q.selector, &key, inventory) else {
                continue;
            };
            let Some(rate_key) = self.rate_key(&q.key, &key) else {
                continue;
            };
            let parsed = per_period(
                &q.limit.value,
                &[
                    ("minute", 60),
                    ("hour", 3600),
                    ("day", 86_400),
                    ("week", 7 * 86_400),
                    ("month", 30 * 86_400),
                ],
            );
            let Some((limit, window)) = parsed else {
                self.err(
                    &q.limit,
                    format!("{key}.limit"),
                    format!("`{}` is not a quota such as 3/day", q.limit.value),
                );
                continue;
            };
            let count_success_only = match q.count.as_ref().map(|c| c.value.as_str()) {
                None | Some("success") => true,
                Some("attempt") => false,
                Some(other) => {
                    if let Some(c) = &q.count {
                        self.err(
                            c,
                            format!("{key}.count"),
                            format!("`{other}` is not `success` or `attempt`"),
                        );
                    }
                    continue;
                }
            };
            let bursts = q.bursts.as_ref().map(|b| self.bursts(b, &key));
            out.push(QuotaRule {
                name: format!("q{i}"),
                routes,
                key: rate_key,
                limit,
                window,
                count_success_only,
                bursts,
            });
        }
        out
    }

    fn bursts(&mut self, b: &Spanned<RawBursts>, key: &str) -> BurstRule {
        let raw = &b.value;
        let window = match &raw.window {
            None => Duration::from_secs(60),
            Some(w) => match units::duration(&w.value) {
                Ok(d) if d >= Duration::from_secs(1) => d,
                Ok(_) => {
                    self.err(w, format!("{key}.bursts.window"), "at least 1s");
                    Duration::from_secs(60)
                }
                Err(e) => {
                    self.err(w, format!("{key}.bursts.window"), e);
                    Duration::from_secs(60)
                }
            },
        };
        let factor = match &raw.factor {
            None => 5.0,
            Some(f) if f.value.is_finite() && f.value > 1.0 => f.value,
            Some(f) => {
                self.err(f, format!("{key}.bursts.factor"), "a number above 1");
                5.0
            }
        };
        BurstRule {
            window,
            factor,
            min: raw.min.as_ref().map_or(10, |m| m.value),
            block: raw.block,
        }
    }

    fn ssrf(
        &mut self,
        r: &Spanned<RawSsrf>,
        inventory: &Inventory,
        doc: Option<&serde_json::Value>,
    ) -> Ssrf {
        let raw = &r.value;
        let lower = |v: &[Spanned<String>]| -> Vec<String> {
            v.iter()
                .map(|h| h.value.trim_end_matches('.').to_ascii_lowercase())
                .collect()
        };
        let schemes = match &raw.schemes {
            None => vec!["https".to_owned()],
            Some(list) => {
                for s in list {
                    if !matches!(s.value.as_str(), "https" | "http") {
                        self.err(
                            s,
                            "ssrf.schemes",
                            format!("`{}` is not `https` or `http`", s.value),
                        );
                    }
                }
                lower(list)
            }
        };
        let mut hosts = Vec::new();
        for (name, addrs) in &raw.hosts {
            let mut ips = Vec::new();
            for a in addrs {
                match a.value.parse::<std::net::IpAddr>() {
                    Ok(ip) => ips.push(ip),
                    Err(_) => self.err(
                        a,
                        format!("ssrf.hosts.{name}"),
                        format!("`{}` is not an IP address", a.value),
                    ),
                }
            }
            hosts.push((name.trim_end_matches('.').to_ascii_lowercase(), ips));
        }
        let mut fields = vec![Vec::new(); inventory.len()];
        for (i, f) in raw.fields.iter().enumerate() {
            let key = format!("ssrf.fields[{i}]");
            if !(f.pointer.value.is_empty() || f.pointer.value.starts_with('/')) {
                self.err(
                    &f.pointer,
                    format!("{key}.pointer"),
                    "a JSON pointer starts with `/`",
                );
                continue;
            }
            if let Some(routes) = self.selected(&f.selector, &key, inventory) {
                for id in routes {
                    fields[id].push(f.pointer.value.clone());
                }
            }
        }
        if raw.from_openapi != Some(false)
            && let Some(doc) = doc
        {
            for (id, route) in inventory.routes.iter().enumerate() {
                // The route's schema when bodies are validated, else looked up for this alone.
                let ptr = route.request_schema.clone().or_else(|| {
                    let path = if route.spec_path.is_empty() {
                        &route.template
                    } else {
                        &route.spec_path
                    };
                    openapi::request_schema(doc, &route.method, path)
                });
                if let Some(ptr) = ptr {
                    fields[id].extend(openapi::url_fields(doc, &ptr));
                }
            }
        }
        for f in &mut fields {
            f.sort();
            f.dedup();
        }
        Ssrf {
            schemes,
            allow_hosts: lower(&raw.allow_hosts),
            deny_hosts: lower(&raw.deny_hosts),
            hosts,
            fields,
        }
    }

    fn bounds(&mut self, raw: Option<&RawBounds>) -> DefaultBounds {
        let mut b = DefaultBounds::default();
        let Some(raw) = raw else { return b };
        let positive = |c: &mut Self, v: &Option<Spanned<u64>>, key: &str, slot: &mut u64| {
            if let Some(v) = v {
                if v.value == 0 {
                    c.err(
                        v,
                        format!("validation.defaults.{key}"),
                        "must be at least 1",
                    );
                } else {
                    *slot = v.value;
                }
            }
        };
        positive(
            self,
            &raw.max_string_length,
            "max_string_length",
            &mut b.max_string_length,
        );
        positive(
            self,
            &raw.max_array_items,
            "max_array_items",
            &mut b.max_array_items,
        );
        if let Some(v) = &raw.max_integer {
            if v.value <= 0 {
                self.err(v, "validation.defaults.max_integer", "must be positive");
            } else {
                b.max_integer = v.value;
            }
        }
        if let Some(v) = &raw.max_depth {
            if v.value == 0 || v.value > 1000 {
                self.err(v, "validation.defaults.max_depth", "between 1 and 1000");
            } else {
                b.max_depth = v.value;
            }
        }
        b
    }

    fn concurrency(
        &mut self,
        raw: &[RawConcurrency],
        inventory: &Inventory,
    ) -> Vec<ConcurrencyRule> {
        let mut out = Vec::new();
        for (i, c) in raw.iter().enumerate() {
            let key = format!("concurrency_limits[{i}]");
            let Some(routes) = self.selected(&c.selector, &key, inventory) else {
                continue;
            };
            let Some(rate_key) = self.rate_key(&c.key, &key) else {
                continue;
            };
            if c.max.value == 0 {
                self.err(&c.max, format!("{key}.max"), "must be at least 1");
                continue;
            }
            out.push(ConcurrencyRule {
                name: format!("c{i}"),
                routes,
                key: rate_key,
                max: c.max.value,
            });
        }
        out
    }

    fn rate_limits(&mut self, raw: &[RawRateRule], inventory: &Inventory) -> Vec<RateRule> {
        let mut out = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let key = format!("rate_limits[{i}]");
            let Some(routes) = self.selected(&r.selector, &key, inventory) else {
                continue;
            };
            let Some(rate_key) = self.rate_key(&r.key, &key) else {
                continue;
            };
            let parsed = per_period(
                &r.rate.value,
                &[
                    ("second", 1),
                    ("s", 1),
                    ("minute", 60),
                    ("m", 60),
                    ("hour", 3600),
                    ("h", 3600),
                    ("day", 86_400),
                    ("d", 86_400),
                ],
            );
            let Some((count, period)) = parsed else {
                self.err(
                    &r.rate,
                    format!("{key}.rate"),
                    format!("`{}` is not a rate such as 10/minute", r.rate.value),
                );
                continue;
            };
            let burst = r.burst.as_ref().map_or(count, |b| b.value);
            if burst == 0 {
                if let Some(b) = &r.burst {
                    self.err(b, format!("{key}.burst"), "must be at least 1");
                }
                continue;
            }
            out.push(RateRule {
                name: format!("r{i}"),
                routes,
                key: rate_key,
                count,
                period,
                burst,
            });
        }
        out
    }

    /// Finds each route's request body schema when request validation is on.
    fn request_schemas(
        &mut self,
        raw: &RawPolicy,
        inventory: &mut Inventory,
    ) -> Option<std::sync::Arc<serde_json::Value>> {
        let spec = raw.openapi.as_ref()?;
        let requests = raw.validation.as_ref().and_then(|v| v.requests) != Some(false);
        let responses = !matches!(
            raw.validation
                .as_ref()
                .and_then(|v| v.undeclared_response_fields.as_ref())
                .map(|f| f.value.as_str()),
            Some("pass")
        );
        // The SSRF guard finds URL-valued fields in the request schemas whether or not bodies
        // are validated.
        let ssrf = raw
            .ssrf
            .as_ref()
            .is_some_and(|s| s.value.from_openapi != Some(false));
        if !requests && !responses && !ssrf {
            return None;
        }
        let path = self.source(&spec.value);
        let mut doc = match openapi::document(&path) {
            Ok(d) => d,
            Err(e) => {
                self.problems.push(Problem::error(&path, None, "", e));
                return None;
            }
        };
        // Schemas are validated as JSON Schema 2020-12: a 3.0 description's dialect
        // (`nullable`, boolean exclusive bounds) is translated once, here.
        if doc
            .get("openapi")
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.starts_with("3.0"))
        {
            openapi::from_openapi_30(&mut doc);
        }
        for route in &mut inventory.routes {
            let path = if route.spec_path.is_empty() {
                route.template.clone()
            } else {
                route.spec_path.clone()
            };
            if requests {
                route.request_schema = openapi::request_schema(&doc, &route.method, &path);
                route.parameters = openapi::parameters(&doc, &route.method, &path);
            }
            if responses {
                route.response_schemas = openapi::response_schemas(&doc, &route.method, &path);
            }
        }
        Some(std::sync::Arc::new(doc))
    }

    fn authz(
        &mut self,
        z: &RawAuthz,
        inventory: &Inventory,
        auth: Option<&mut Auth>,
    ) -> Option<Authz> {
        let Some(auth) = auth else {
            let at = z
                .roles
                .first()
                .map(|r| &r.selector)
                .or(z.owners.first().map(|o| &o.route));
            match at {
                Some(at) => self.err(
                    at,
                    "authorization",
                    "authorization needs `auth`: roles and owners come from verified tokens",
                ),
                None => self.problems.push(Problem::error(
                    self.file,
                    None,
                    "authorization",
                    "authorization needs `auth`",
                )),
            }
            return None;
        };
        let mut roles: Vec<Vec<String>> = vec![Vec::new(); inventory.len()];
        for (i, r) in z.roles.iter().enumerate() {
            let key = format!("authorization.roles[{i}]");
            let Some(matched) = self.selected(&r.selector, &key, inventory) else {
                continue;
            };
            if r.roles.is_empty() {
                self.err(
                    &r.selector,
                    format!("{key}.roles"),
                    "list at least one role",
                );
            }
            for id in matched {
                // A later rule for the same route replaces an earlier one: the most specific
                // rule goes last.
                roles[id] = r.roles.iter().map(|x| x.value.clone()).collect();
                auth.required[id] = true;
            }
        }
        for (id, route) in inventory.routes.iter().enumerate() {
            if roles[id].is_empty() && !route.roles.is_empty() {
                roles[id] = route.roles.clone();
                auth.required[id] = true;
            }
            // Default-deny: public routes stay open; every other route needs a granted role.
            if roles[id].is_empty() && auth.required[id] && !z.default_roles.is_empty() {
                roles[id] = z.default_roles.iter().map(|r| r.value.clone()).collect();
            }
        }
        let mut owners = Vec::new();
        for (i, o) in z.owners.iter().enumerate() {
            let key = format!("authorization.owners[{i}]");
            if let Some(rule) = self.owner_rule(o, &key, inventory, auth) {
                owners.push(rule);
            }
        }
        // Rules written next to the operations in the description.
        for (raw, key) in self.described_rules::<RawOwner>("x-portcullis-owner", "route") {
            let mark = self.problems.0.len();
            if let Some(rule) = raw.and_then(|o| self.owner_rule(&o, &key.0, inventory, auth)) {
                owners.push(rule);
            }
            self.relocate(mark, &key);
        }
        Some(Authz {
            roles_claim: z
                .roles_claim
                .as_ref()
                .map_or("role".to_owned(), |c| c.value.clone()),
            roles,
            owners,
        })
    }

    /// One ownership rule, checked against the inventory; marks its route as needing a token.
    fn owner_rule(
        &mut self,
        o: &RawOwner,
        key: &str,
        inventory: &Inventory,
        auth: &mut Auth,
    ) -> Option<OwnerRule> {
        let route = match self.route_id(&o.route.value, inventory) {
            Ok(id) => id,
            Err(e) => {
                self.err(&o.route, format!("{key}.route"), e);
                return None;
            }
        };
        let check = match (&o.param, &o.response, &o.lookup) {
            (Some(p), None, None) => {
                if !inventory.routes[route].params.contains(&p.value) {
                    self.err(
                        p,
                        format!("{key}.param"),
                        format!("`{}` has no parameter `{}`", o.route.value, p.value),
                    );
                    return None;
                }
                OwnerCheck::Param(p.value.clone())
            }
            (None, Some(r), None) => OwnerCheck::Response(r.value.clone()),
            (None, Some(r), Some(l)) => match self.route_id(&l.value, inventory) {
                Ok(id) if inventory.routes[id].method == http::Method::GET => OwnerCheck::Lookup {
                    route: id,
                    pointer: r.value.clone(),
                },
                Ok(_) => {
                    self.err(l, format!("{key}.lookup"), "the lookup must be a GET route");
                    return None;
                }
                Err(e) => {
                    self.err(l, format!("{key}.lookup"), e);
                    return None;
                }
            },
            _ => {
                self.err(
                    &o.route,
                    key,
                    "give `param`, or `response`, or `lookup` with `response`",
                );
                return None;
            }
        };
        if let OwnerCheck::Response(p) | OwnerCheck::Lookup { pointer: p, .. } = &check
            && let Err(e) = owner_pointer(p, matches!(check, OwnerCheck::Response(_)))
        {
            self.err(&o.route, format!("{key}.response"), e);
        }
        auth.required[route] = true;
        Some(OwnerRule {
            route,
            check,
            claim: o
                .claim
                .as_ref()
                .map_or("sub".to_owned(), |c| c.value.clone()),
        })
    }

    /// The description's rules named `name`, each as the policy's raw rule (the operation
    /// filled in as `route_field`), with the key and position problems should carry.
    fn described_rules<T: serde::de::DeserializeOwned>(
        &mut self,
        name: &'static str,
        route_field: &str,
    ) -> Vec<(Option<T>, Origin)> {
        let found: Vec<_> = self
            .described
            .iter()
            .filter(|d| d.name == name)
            .map(|d| (d.route.clone(), d.value.clone(), d.file.clone(), d.pos))
            .collect();
        found
            .into_iter()
            .map(|(route, mut value, file, pos)| {
                let key = format!("paths.{route}.{name}");
                let raw = match &mut value {
                    serde_json::Value::Object(m) => {
                        m.insert(route_field.into(), serde_json::Value::String(route));
                        serde_json::from_value::<T>(value).map_err(|e| e.to_string())
                    }
                    _ => Err("expected a mapping".into()),
                };
                let raw = raw
                    .map_err(|e| {
                        self.problems.push(Problem::error(
                            &file,
                            pos,
                            &key,
                            format!("not a valid `{name}`: {e}"),
                        ));
                    })
                    .ok();
                (raw, (key, file, pos))
            })
            .collect()
    }

    /// Problems found since `mark` while compiling a rule from the description: reported at
    /// the operation in the description, under the extension's key.
    fn relocate(&mut self, mark: usize, (key, file, pos): &Origin) {
        for p in &mut self.problems.0[mark..] {
            p.file = file.clone();
            p.key = key.clone();
            if p.pos.is_none_or(|at| at.line == 0) {
                p.pos = *pos;
            }
        }
    }

    fn route_id(&self, spec: &str, inventory: &Inventory) -> Result<usize, String> {
        let (m, t) = parse_route(spec)?;
        inventory
            .routes
            .iter()
            .position(|r| r.method == m && r.template == t)
            .ok_or_else(|| format!("`{spec}` is not a declared route"))
    }

    fn inventory(&mut self, raw: &RawPolicy) -> Inventory {
        let mut inv = Inventory::default();
        for (i, v) in raw.versions.iter().enumerate() {
            let key = format!("versions[{i}]");
            let prefix = match path::normalize(&v.prefix.value) {
                Ok(p) if p != "/" => p.into_owned(),
                _ => {
                    self.err(
                        &v.prefix,
                        format!("{key}.prefix"),
                        format!("`{}` is not a path prefix such as /v1", v.prefix.value),
                    );
                    continue;
                }
            };
            let status = match v.status.value.as_str() {
                "active" => VersionStatus::Active,
                "deprecated" => VersionStatus::Deprecated,
                "retired" => VersionStatus::Retired,
                other => {
                    self.err(
                        &v.status,
                        format!("{key}.status"),
                        format!("`{other}` is not `active`, `deprecated` or `retired`"),
                    );
                    continue;
                }
            };
            let date = |c: &mut Self, d: &Option<Spanned<String>>, k: &str| {
                d.as_ref().and_then(|d| {
                    units::date(&d.value)
                        .map_err(|e| c.err(d, format!("{key}.{k}"), e))
                        .ok()
                })
            };
            let deprecated_at = date(self, &v.deprecated_at, "deprecated_at");
            let sunset = date(self, &v.sunset, "sunset");
            if status == VersionStatus::Deprecated && sunset.is_none() {
                self.warn(
                    &v.status,
                    format!("{key}.sunset"),
                    "a deprecated version without a sunset date leaves clients guessing",
                );
            }
            let link = v.link.as_ref().and_then(|l| {
                let ok = l
                    .value
                    .parse::<http::Uri>()
                    .ok()
                    .is_some_and(|u| u.scheme().is_some() || l.value.starts_with('/'));
                if !ok || l.value.contains(['<', '>', '"']) {
                    self.err(
                        l,
                        format!("{key}.link"),
                        format!("`{}` is not a URL", l.value),
                    );
                    return None;
                }
                Some(l.value.clone())
            });
            inv.add_version(Version {
                prefix,
                status,
                deprecated_at,
                sunset,
                link,
            });
        }
        if let Some(spec) = &raw.openapi {
            let spec_path = self.source(&spec.value);
            match openapi::operations(&spec_path) {
                Ok(ops) => {
                    for op in ops {
                        match inv.add(op.method, &op.path) {
                            Ok(id) => {
                                let route = &mut inv.routes[id];
                                route.secured = Some(op.secured);
                                route.spec_path = op.path.clone();
                                route.tags = op.tags;
                                route.roles = op.roles;
                                let label = format!("{} {}", route.method, route.template);
                                for (name, value) in [
                                    ("x-portcullis-owner", op.owner),
                                    ("x-portcullis-rate-limit", op.rate_limit),
                                ] {
                                    if let Some(value) = value {
                                        self.described.push(Described {
                                            route: label.clone(),
                                            name,
                                            value,
                                            file: spec_path.clone(),
                                            pos: op.pos,
                                        });
                                    }
                                }
                            }
                            Err(e) => {
                                self.problems.push(Problem::error(
                                    &spec_path,
                                    op.pos,
                                    format!("paths.{}", op.path),
                                    e.to_string(),
                                ));
                            }
                        }
                    }
                }
                Err(problems) => self.problems.0.extend(problems.0),
            }
        }
        for (i, r) in raw.routes.iter().enumerate() {
            match parse_route(&r.value) {
                Ok((m, t)) => {
                    if let Err(e) = inv.add(m, &t) {
                        self.err(r, format!("routes[{i}]"), e.to_string());
                    }
                }
                Err(e) => self.err(r, format!("routes[{i}]"), e),
            }
        }
        if inv.is_empty() {
            self.err(&raw.upstream, "routes", "no routes are declared: add `openapi` or `routes`; undeclared routes are never forwarded");
        }
        inv
    }
}

/// `N/unit` with a unit from `units` (name, seconds) → (N, period); N must be positive.
fn per_period(s: &str, units: &[(&str, u64)]) -> Option<(u32, Duration)> {
    let (n, unit) = s.split_once('/')?;
    let n: u32 = n.trim().parse().ok().filter(|n| *n > 0)?;
    let secs = units.iter().find(|(u, _)| *u == unit.trim())?.1;
    Some((n, Duration::from_secs(secs)))
}

/// The routes a role selector names: `METHOD /path/{p}` (one route), `/path/**` or
/// `METHOD /path/**` (every route under the prefix), `*` matching one segment.
pub fn selector_matches(sel: &str, inventory: &Inventory) -> Result<Vec<usize>, String> {
    let sel = sel.trim();
    // `tag:NAME`: the operations the description tags so.
    if let Some(tag) = sel.strip_prefix("tag:") {
        let tag = tag.trim();
        return Ok(inventory
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.tags.iter().any(|t| t.eq_ignore_ascii_case(tag)))
            .map(|(i, _)| i)
            .collect());
    }
    let (method, pattern) = match sel.split_once(char::is_whitespace) {
        Some((m, p)) => (Some(parse_route(&format!("{m} /"))?.0), p.trim()),
        None => (None, sel),
    };
    if !pattern.starts_with('/') {
        return Err(format!(
            "`{sel}` is not `/path/**`, `METHOD /path` or `tag:NAME`"
        ));
    }
    let want: Vec<&str> = pattern.trim_end_matches('/').split('/').skip(1).collect();
    let fits = |template: &str| {
        let have: Vec<&str> = template.split('/').skip(1).collect();
        let mut i = 0;
        for (j, w) in want.iter().enumerate() {
            if *w == "**" {
                return j == want.len() - 1;
            }
            let Some(h) = have.get(i) else { return false };
            if *w != "*" && w != h {
                return false;
            }
            i += 1;
        }
        i == have.len()
    };
    Ok(inventory
        .routes
        .iter()
        .enumerate()
        .filter(|(_, r)| method.as_ref().is_none_or(|m| *m == r.method) && fits(&r.template))
        .map(|(i, _)| i)
        .collect())
}

/// `"GET /v2/orders/{order_id}"` → (GET, `/v2/orders/{order_id}`).
/// Checks an owner field's JSON pointer: it starts with `/`; in a response rule one `*`
/// segment may stand for each item of a list (`/items/*/user_id`).
pub fn owner_pointer(p: &str, list_allowed: bool) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err("a JSON pointer starts with `/`".into());
    }
    let stars = p.split('/').filter(|s| *s == "*").count();
    match (stars, list_allowed) {
        (0, _) => Ok(()),
        (1, true) if !p.ends_with("/*") => Ok(()),
        (1, true) => Err("`*` stands for each item of a list: name the owner field after it (`/items/*/user_id`)".into()),
        (1, false) => Err("a lookup reads one object: `*` (each item of a list) is for `response` rules".into()),
        _ => Err("only one `*` (each item of one list) is allowed".into()),
    }
}

pub fn parse_route(s: &str) -> Result<(Method, String), String> {
    let (m, p) = s
        .trim()
        .split_once(char::is_whitespace)
        .ok_or_else(|| format!("`{s}` is not `METHOD /path`"))?;
    let method = match m {
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" | "TRACE" => {
            Method::from_bytes(m.as_bytes()).map_err(|e| e.to_string())?
        }
        _ => return Err(format!("`{m}` is not an HTTP method in capitals")),
    };
    let p = p.trim();
    if !p.starts_with('/') {
        return Err(format!("`{p}` is not a path starting with `/`"));
    }
    Ok((method, p.to_owned()))
}
