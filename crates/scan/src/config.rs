//! What a scan is told: the target, the description, the identities and the safety knobs.
//!
//! Identities come from a YAML file (see [`parse_identities`]); every other knob has a safe
//! default ([`ScanConfig::new`]). The target must be a loopback address unless
//! [`ScanConfig::allow_remote`] is set: a scanner pointed at the wrong host by a typo must not
//! attack it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use url::{Host, Url};

use crate::error::ScanError;
use crate::finding::Severity;

/// Everything a scan needs. Build it with [`ScanConfig::new`] and change the fields you need.
#[derive(Clone, Debug)]
pub struct ScanConfig {
    /// Base URL of the running API; operation paths are appended to it.
    pub target: Url,
    /// The OpenAPI 3.x description (YAML or JSON).
    pub spec: PathBuf,
    /// The callers, in order: the first two non-admin identities are "user A" (the victim) and
    /// "user B" (the attacker). An anonymous caller is always added.
    pub identities: Vec<Identity>,
    /// Most requests the scan may send, logins included (default 3000).
    pub budget: u32,
    /// Most requests in flight at once (default 4).
    pub concurrency: usize,
    /// Most requests per second (default 200).
    pub rate_per_sec: u32,
    /// Timeout of each request (default 10 s).
    pub request_timeout: Duration,
    /// Allow probes that delete or change objects the scan did not create. Off by default:
    /// without it, writes touch only the scan's own objects and accounts.
    pub allow_destructive: bool,
    /// Allow a target outside 127.0.0.0/8 and ::1. Off by default.
    pub allow_remote: bool,
    /// Values for parameters and body properties by name, preferred over the description's
    /// examples (for instance `product_id: prod_K3y8Qm2LpX`).
    pub seeds: BTreeMap<String, Value>,
    /// Operations whose repetition is a business risk (API6), as `"METHOD /path"`, in addition
    /// to those marked `x-portcullis-sensitive: true` in the description.
    pub sensitive_operations: Vec<String>,
    /// Run only these probes (by [`ProbeId`] name); empty runs every probe.
    pub probes: Vec<String>,
    /// Requests sent in one burst by the rate-limit probes (default 120).
    pub burst: u32,
    /// Wrong passwords tried on one account by the brute-force probe (default 12).
    pub brute_force_attempts: u32,
    /// Where requests leave from.
    pub sources: SourceAddresses,
    /// Fingerprints of accepted findings: matching findings are reported as suppressed.
    pub accepted: Vec<String>,
    /// Told when each probe starts (its name, and the requests sent so far): for a live view.
    pub progress: Option<Progress>,
}

/// What a progress callback is told: the probe starting, and the requests sent so far.
pub type ProgressFn = dyn Fn(&str, u32) + Send + Sync;

/// A progress callback (see [`ScanConfig::progress`]).
#[derive(Clone)]
pub struct Progress(pub std::sync::Arc<ProgressFn>);

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// Reads a seeds file: a YAML (or JSON) map of parameter or property names to values.
pub fn load_seeds(path: &Path) -> Result<BTreeMap<String, Value>, ScanError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScanError::Config(format!("cannot read the seeds {}: {e}", path.display())))?;
    serde_saphyr::from_str::<BTreeMap<String, Value>>(&text)
        .map_err(|e| ScanError::Config(format!("{}: {e}", path.display())))
}

/// The local addresses requests are sent from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SourceAddresses {
    /// On Linux, for an IPv4 loopback target, spread ordinary requests over 127.0.10.1–32 so
    /// the target's per-address rate limit does not starve the scan, and give the rate-limit
    /// and brute-force probes addresses of their own; elsewhere, the system's choice.
    #[default]
    Auto,
    /// The system's choice for everything (per-address limits then throttle the scan, and the
    /// brute-force probe cannot rotate addresses).
    System,
}

impl ScanConfig {
    /// A configuration with the defaults: budget 3000, concurrency 4, 200 requests/s, no
    /// destructive probes, loopback only.
    pub fn new(target: Url, spec: impl Into<PathBuf>) -> Self {
        Self {
            target,
            spec: spec.into(),
            identities: Vec::new(),
            budget: 3000,
            concurrency: 4,
            rate_per_sec: 200,
            request_timeout: Duration::from_secs(10),
            allow_destructive: false,
            allow_remote: false,
            seeds: BTreeMap::new(),
            sensitive_operations: Vec::new(),
            probes: Vec::new(),
            burst: 120,
            brute_force_attempts: 12,
            sources: SourceAddresses::Auto,
            accepted: Vec::new(),
            progress: None,
        }
    }

    /// Checks the knobs and the target, and returns the target with `localhost` pinned to
    /// 127.0.0.1 (so no resolver can send the scan elsewhere). Sends nothing.
    pub(crate) fn checked_target(&self) -> Result<Url, ScanError> {
        if !matches!(self.target.scheme(), "http" | "https") {
            return Err(ScanError::Config(format!(
                "target `{}` must be an http or https URL",
                self.target
            )));
        }
        if self.budget == 0 || self.concurrency == 0 || self.rate_per_sec == 0 {
            return Err(ScanError::Config(
                "budget, concurrency and rate must be at least 1".into(),
            ));
        }
        let mut target = self.target.clone();
        let loopback = match target.host() {
            Some(Host::Ipv4(ip)) => ip.is_loopback(),
            Some(Host::Ipv6(ip)) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Some(Host::Domain(d)) => {
                let d = d.trim_end_matches('.').to_ascii_lowercase();
                if d == "localhost" || d.ends_with(".localhost") {
                    target
                        .set_ip_host(IpAddr::V4(Ipv4Addr::LOCALHOST))
                        .map_err(|()| ScanError::Config("cannot pin localhost".into()))?;
                    true
                } else {
                    false
                }
            }
            None => {
                return Err(ScanError::Config(format!(
                    "target `{}` has no host",
                    self.target
                )));
            }
        };
        if !loopback && !self.allow_remote {
            return Err(ScanError::RemoteTarget {
                host: self.target.host_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(target)
    }
}

/// Whether a caller is an administrator (excluded from the attacker role, and the reference
/// for function-level authorization).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    User,
    Admin,
}

/// One caller of the API.
#[derive(Clone)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    pub auth: IdentityAuth,
}

/// How an identity authenticates.
#[derive(Clone)]
pub enum IdentityAuth {
    /// A static `Authorization` header value (`Bearer ...`, `Basic ...`).
    Header(String),
    /// A login request whose answer carries the token.
    Login(LoginRecipe),
}

/// A login request and where its answer keeps the token. The identity logs in again when its
/// token is refused with 401.
#[derive(Clone)]
pub struct LoginRecipe {
    pub method: String,
    pub path: String,
    pub body: Value,
    /// JSON pointer of the access token in the answer (for example `/access_token`).
    pub token_pointer: String,
    /// JSON pointer of a refresh token, when the answer has one (tested as an access token).
    pub refresh_pointer: Option<String>,
}

impl fmt::Debug for IdentityAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityAuth::Header(_) => f.write_str("Header(<redacted>)"),
            IdentityAuth::Login(r) => write!(f, "Login({r:?})"),
        }
    }
}

impl fmt::Debug for LoginRecipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoginRecipe")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("body", &"<redacted>")
            .field("token_pointer", &self.token_pointer)
            .field("refresh_pointer", &self.refresh_pointer)
            .finish()
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = match &self.auth {
            IdentityAuth::Header(_) => "static header (redacted)".to_owned(),
            IdentityAuth::Login(r) => format!("login {} {} (body redacted)", r.method, r.path),
        };
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("auth", &auth)
            .finish()
    }
}

impl Identity {
    /// A caller with a static bearer token.
    pub fn bearer(name: impl Into<String>, token: &str) -> Self {
        Self {
            name: name.into(),
            role: Role::User,
            auth: IdentityAuth::Header(format!("Bearer {token}")),
        }
    }

    /// A caller that logs in with `POST path` and a JSON body; the token is at
    /// `token_pointer` in the answer.
    pub fn login(name: impl Into<String>, path: &str, body: Value, token_pointer: &str) -> Self {
        Self {
            name: name.into(),
            role: Role::User,
            auth: IdentityAuth::Login(LoginRecipe {
                method: "POST".into(),
                path: path.into(),
                body,
                token_pointer: token_pointer.into(),
                refresh_pointer: None,
            }),
        }
    }

    /// The same identity with another role.
    pub fn with_role(mut self, role: Role) -> Self {
        self.role = role;
        self
    }

    /// The same identity, also reading a refresh token at `pointer` after login.
    pub fn with_refresh_pointer(mut self, pointer: &str) -> Self {
        if let IdentityAuth::Login(r) = &mut self.auth {
            r.refresh_pointer = Some(pointer.into());
        }
        self
    }

    /// Strings that must never appear in a finding: tokens and passwords of this identity.
    pub(crate) fn secrets(&self) -> Vec<String> {
        match &self.auth {
            IdentityAuth::Header(h) => {
                let mut v = vec![h.clone()];
                if let Some((_, t)) = h.split_once(' ') {
                    v.push(t.trim().to_owned());
                }
                v
            }
            IdentityAuth::Login(r) => {
                let mut out = Vec::new();
                collect_secret_values(&r.body, false, &mut out);
                out
            }
        }
    }
}

/// Values of password-like keys (and every string when `all`).
fn collect_secret_values(v: &Value, all: bool, out: &mut Vec<String>) {
    match v {
        Value::String(s) if all && s.len() >= 4 => out.push(s.clone()),
        Value::Object(m) => {
            for (k, v) in m {
                collect_secret_values(v, all || crate::redact::secret_key(k), out);
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_secret_values(v, all, out)),
        _ => {}
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    identities: Vec<RawIdentity>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    name: String,
    #[serde(default)]
    role: Role,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    login: Option<RawLogin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLogin {
    #[serde(default = "post")]
    method: String,
    path: String,
    body: Value,
    token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

fn post() -> String {
    "POST".into()
}

/// Reads an identities file. See [`parse_identities`] for the format.
pub fn load_identities(path: &Path) -> Result<Vec<Identity>, ScanError> {
    let text = std::fs::read_to_string(path).map_err(|e| ScanError::Identities {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    parse_identities(&text).map_err(|message| ScanError::Identities {
        path: path.to_owned(),
        message,
    })
}

/// Parses identities from YAML:
///
/// ```yaml
/// identities:
///   - name: alice                      # user A: owns the objects
///     login:
///       path: /v2/auth/login           # method defaults to POST
///       body: { email: alice@example.com, password: "${ALICE_PASSWORD}" }
///       token: /access_token           # JSON pointer into the answer
///       refresh_token: /refresh_token  # optional
///   - name: bob                        # user B: the attacker
///     token: eyJhbGciOi...             # static bearer token
///   - name: admin
///     role: admin
///     header: "Bearer eyJhbGciOi..."   # static Authorization header
/// ```
///
/// A string that is exactly `${NAME}` is replaced by the environment variable `NAME`.
pub fn parse_identities(text: &str) -> Result<Vec<Identity>, String> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let msg = e.to_string();
        msg.lines().next().unwrap_or("invalid YAML").to_owned()
    })?;
    let mut out = Vec::new();
    for r in raw.identities {
        let name = r.name.trim().to_owned();
        if name.is_empty() || out.iter().any(|i: &Identity| i.name == name) {
            return Err(format!(
                "identity names must be unique and non-empty: `{name}`"
            ));
        }
        let auth = match (r.token, r.header, r.login) {
            (Some(t), None, None) => IdentityAuth::Header(format!("Bearer {}", expand(&t)?)),
            (None, Some(h), None) => IdentityAuth::Header(expand(&h)?),
            (None, None, Some(l)) => {
                if !l.path.starts_with('/') {
                    return Err(format!("identity `{name}`: login path must start with `/`"));
                }
                if !l.token.starts_with('/') {
                    return Err(format!(
                        "identity `{name}`: `token` must be a JSON pointer such as /access_token"
                    ));
                }
                IdentityAuth::Login(LoginRecipe {
                    method: l.method.to_ascii_uppercase(),
                    path: l.path,
                    body: expand_value(l.body)?,
                    token_pointer: l.token,
                    refresh_pointer: l.refresh_token,
                })
            }
            _ => {
                return Err(format!(
                    "identity `{name}` needs exactly one of `token`, `header` or `login`"
                ));
            }
        };
        out.push(Identity {
            name,
            role: r.role,
            auth,
        });
    }
    Ok(out)
}

fn expand(s: &str) -> Result<String, String> {
    match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        Some(var) => {
            std::env::var(var).map_err(|_| format!("environment variable `{var}` is not set"))
        }
        None => Ok(s.to_owned()),
    }
}

fn expand_value(v: Value) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand(&s)?),
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| Ok((k, expand_value(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(expand_value).collect::<Result<_, _>>()?),
        other => other,
    })
}

/// The severity at or above which [`crate::exit_code`] reports failure, from its name.
pub fn parse_severity(s: &str) -> Option<Severity> {
    Severity::parse(s)
}

/// Downloads a description from `url` (under the same loopback rule as the target) into
/// `dir`, and returns the file: for `--spec http://127.0.0.1:8081/openapi.json`.
pub async fn fetch_spec(url: &Url, allow_remote: bool, dir: &Path) -> Result<PathBuf, ScanError> {
    let mut probe = ScanConfig::new(url.clone(), "");
    probe.allow_remote = allow_remote;
    // The checked URL (`localhost` and `*.localhost` pinned to 127.0.0.1), not the one given:
    // a system resolver may send `x.localhost` off the machine.
    let pinned = probe.checked_target()?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ScanError::Config(format!("HTTP client: {e}")))?;
    let fail = |message: String| ScanError::Spec {
        path: PathBuf::from(url.as_str()),
        message,
    };
    let resp = client
        .get(pinned)
        .send()
        .await
        .map_err(|e| fail(format!("cannot fetch: {}", e.without_url())))?;
    if !resp.status().is_success() {
        return Err(fail(format!("answered {}", resp.status().as_u16())));
    }
    let json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"))
        || url.path().ends_with(".json");
    let body = resp
        .bytes()
        .await
        .map_err(|e| fail(format!("cannot read: {}", e.without_url())))?;
    if body.len() > 64 * 1024 * 1024 {
        return Err(fail("larger than 64 MiB".into()));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| fail(format!("cannot write {}: {e}", dir.display())))?;
    let file = dir.join(if json { "openapi.json" } else { "openapi.yaml" });
    std::fs::write(&file, &body)
        .map_err(|e| fail(format!("cannot write {}: {e}", file.display())))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(url: &str) -> ScanConfig {
        ScanConfig::new(Url::parse(url).expect("url"), "spec.yaml")
    }

    #[test]
    fn only_loopback_targets_pass() {
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.9.8.7/",
            "http://[::1]:9/",
            "http://localhost:1/",
        ] {
            let t = cfg(ok).checked_target().expect(ok);
            assert!(t.host_str().is_some_and(|h| h != "localhost"), "{t}");
        }
        for bad in [
            "http://10.0.0.1/",
            "http://example.com/",
            "http://192.168.1.1/",
            "http://[2001:db8::1]/",
        ] {
            assert!(matches!(
                cfg(bad).checked_target(),
                Err(ScanError::RemoteTarget { .. })
            ));
        }
        let mut remote = cfg("http://example.com/");
        remote.allow_remote = true;
        assert!(remote.checked_target().is_ok());
    }

    #[test]
    fn identities_parse_and_hide_secrets() {
        let ids = parse_identities(
            "identities:\n  - name: a\n    login: { path: /login, body: { email: a@x.io, password: hunter22 }, token: /t }\n  - name: b\n    token: abc.def.ghi\n  - name: root\n    role: admin\n    header: Basic Zm9v\n",
        )
        .expect("valid");
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2].role, Role::Admin);
        assert!(ids[0].secrets().contains(&"hunter22".to_owned()));
        assert!(ids[1].secrets().contains(&"abc.def.ghi".to_owned()));
        let dbg = format!("{ids:?}");
        assert!(!dbg.contains("hunter22") && !dbg.contains("abc.def") && !dbg.contains("Zm9v"));
        assert!(parse_identities("identities:\n  - name: a\n").is_err());
        assert!(
            parse_identities("identities:\n  - name: a\n    token: x\n    bogus: 1\n").is_err()
        );
    }
}
