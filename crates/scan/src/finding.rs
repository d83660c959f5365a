//! Findings: what a probe proved, with the evidence, a reproduction and the fix; and the
//! catalogue of rules each finding belongs to (OWASP API Security Top 10 2023 id, CWE, fix).

use serde::Serialize;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses `info`, `low`, `medium`, `high` or `critical` (any case).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "info" | "note" => Severity::Info,
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }

    /// The SARIF `security-severity` score GitHub code scanning reads.
    pub(crate) fn score(self) -> &'static str {
        match self {
            Severity::Info => "0.0",
            Severity::Low => "3.0",
            Severity::Medium => "5.5",
            Severity::High => "8.0",
            Severity::Critical => "9.5",
        }
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One rule: a kind of weakness a probe can prove.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Rule {
    /// Stable id, used in fingerprints, SARIF and JUnit (`bola-read`).
    pub id: &'static str,
    pub title: &'static str,
    /// OWASP API Security Top 10 2023 id (`API1:2023`).
    pub owasp: &'static str,
    pub cwe: u32,
    /// The classic fix.
    pub fix: &'static str,
}

impl Rule {
    /// The OWASP category name.
    pub fn owasp_name(&self) -> &'static str {
        match self.owasp.split(':').next().unwrap_or("") {
            "API1" => "Broken Object Level Authorization",
            "API2" => "Broken Authentication",
            "API3" => "Broken Object Property Level Authorization",
            "API4" => "Unrestricted Resource Consumption",
            "API5" => "Broken Function Level Authorization",
            "API6" => "Unrestricted Access to Sensitive Business Flows",
            "API7" => "Server Side Request Forgery",
            "API8" => "Security Misconfiguration",
            "API9" => "Improper Inventory Management",
            "API10" => "Unsafe Consumption of APIs",
            _ => "",
        }
    }
}

macro_rules! rules {
    ($($name:ident = $id:literal, $owasp:literal, $cwe:literal, $title:literal, $fix:literal;)*) => {
        /// Every rule the scanner reports.
        pub mod rules {
            use super::Rule;
            $(pub const $name: Rule = Rule { id: $id, title: $title, owasp: $owasp, cwe: $cwe, fix: $fix };)*
            /// All of them, in report order.
            pub const ALL: &[Rule] = &[$($name),*];
        }
    };
}

rules! {
    BOLA_READ = "bola-read", "API1:2023", 639, "Another user's object can be read",
        "Look every object up by its id AND its owner (or check the owner after loading) on every route that takes an object id; answer 404 for objects the caller may not see.";
    BOLA_WRITE = "bola-write", "API1:2023", 639, "Another user's object can be changed",
        "Check that the caller owns (or may edit) the object before every update; filter the update by owner in the same query.";
    BOLA_DELETE = "bola-delete", "API1:2023", 639, "Another user's object can be deleted",
        "Check ownership before deleting; delete by id AND owner, and answer 404 otherwise.";
    AUTH_MISSING = "auth-missing", "API2:2023", 306, "A secured operation answers without credentials",
        "Require authentication by default on every route (deny unless a route is explicitly public) and test the unauthenticated case of every operation.";
    AUTH_GARBAGE = "auth-invalid-token", "API2:2023", 287, "A secured operation accepts an invalid token",
        "Verify the token's signature and claims on every request; treat any verification error as 401.";
    JWT_ALG_NONE = "jwt-alg-none", "API2:2023", 347, "Unsigned JWTs (alg none) are accepted",
        "Pin the accepted algorithm(s) per key on the server; never let the token header choose the algorithm, and refuse `none` in any casing.";
    JWT_NO_SIGNATURE = "jwt-signature-stripped", "API2:2023", 347, "JWTs without a signature are accepted",
        "Always verify the signature; a token with an empty or missing signature must be refused.";
    JWT_ANY_KEY = "jwt-signature-unchecked", "API2:2023", 347, "JWTs signed with any key are accepted",
        "Verify the signature against the server's own key(s), pinned per key to its algorithm; a token signed with any other key must be refused.";
    JWT_WEAK_SECRET = "jwt-weak-secret", "API2:2023", 1391, "The JWT HMAC secret is a dictionary word",
        "Sign with a random key of at least 256 bits (or an asymmetric key), kept out of the code; rotate it now, since every token can be forged.";
    JWT_KEY_CONFUSION = "jwt-key-confusion", "API2:2023", 347, "An HS256 token keyed with the server's public RSA key is accepted",
        "Pin the algorithm to the key type (RS256 for an RSA key) when verifying; never let the token header choose it, and keep HMAC secrets and public keys in separate key objects.";
    JWT_KID_INJECTION = "jwt-kid-injection", "API2:2023", 347, "The token's `kid` header chooses an attacker-controlled key",
        "Treat `kid` as an opaque name looked up in a fixed key set (an allowlist); never splice it into SQL, file paths or URLs.";
    JWT_REFRESH_AS_ACCESS = "jwt-refresh-as-access", "API2:2023", 613, "A refresh token is accepted as an access token",
        "Give each token a type (claim or `typ` header) and accept only access tokens on API routes; keep refresh tokens for the refresh endpoint.";
    JWT_EXPIRED = "jwt-expired-accepted", "API2:2023", 613, "Expired JWTs are accepted",
        "Require and validate `exp` (with a small leeway) on every token.";
    JWT_NO_EXPIRY = "jwt-no-expiry", "API2:2023", 613, "Tokens are issued without an expiry",
        "Issue short-lived access tokens with an `exp` claim and require it when verifying.";
    LOGIN_BRUTE_FORCE = "login-brute-force", "API2:2023", 307, "Login has no per-account attempt limit",
        "Count failed logins per account (whatever the source address) and lock or slow the account down after a few failures; add per-address limits as well.";
    LOGIN_XFF_BYPASS = "login-limit-xff-bypass", "API2:2023", 348, "The login limit trusts a client-supplied X-Forwarded-For",
        "Key per-address limits on the socket address, or on X-Forwarded-For only as set by proxies you run (a trusted-proxies list), and add a per-account limit that no address rotation escapes.";
    LOGIN_LOCKOUT_RACE = "login-lockout-race", "API2:2023", 367, "Parallel login attempts get past the lockout",
        "Count an attempt against the account in the same atomic step that looks at the lockout (before the password is checked), and forget it on success; a lockout looked at first and counted after the check lets every attempt in flight through.";
    LOGIN_ENUMERATION = "login-account-enumeration", "API2:2023", 204, "Login answers reveal which accounts exist",
        "Answer every failed login identically (status, body, headers and timing), whether or not the account exists.";
    MASS_ASSIGNMENT = "mass-assignment", "API3:2023", 915, "Privileged properties can be set by the client",
        "Bind request bodies to explicit per-operation input types (allowlist), refuse unknown fields, and set privileged properties (role, balance, price, owner, status) on the server only.";
    EXPOSURE_SENSITIVE = "data-exposure-sensitive", "API3:2023", 213, "Responses carry secrets (hashes, tokens, internal fields)",
        "Serialise responses from explicit output types (allowlist) that never include credentials or internal fields; do not rely on clients to filter.";
    EXPOSURE_UNDECLARED = "data-exposure-undeclared", "API3:2023", 213, "Responses carry properties the API description does not declare",
        "Return only the properties the contract declares (output allowlist); review each undeclared property for sensitivity.";
    RATE_LIMIT = "rate-limit-missing", "API4:2023", 770, "No rate limit on an operation",
        "Rate limit every route per client (address, user or key), answer 429 with Retry-After, and set quotas that match real usage.";
    LOGIN_RATE_LIMIT = "login-rate-limit-missing", "API4:2023", 307, "No per-address rate limit on login",
        "Limit login attempts per source address (and per account) and answer 429 with Retry-After.";
    PAGINATION = "pagination-unbounded", "API4:2023", 770, "Page size is not bounded",
        "Validate `limit`/page-size parameters against a maximum (refuse or clamp) and cap the rows any query returns.";
    OVERSIZED = "oversized-input", "API4:2023", 770, "Oversized input is accepted",
        "Enforce the declared `maxLength`/`maxItems` on every field and a request body size limit (413) before any work is done; an unbounded field is a lever for memory, storage and CPU exhaustion.";
    BFLA = "bfla", "API5:2023", 285, "An administrative function is available to normal users",
        "Check the caller's role/permission on every function, deny by default, and keep admin functions behind a separate authorization layer.";
    BUSINESS_FLOW = "business-flow-unlimited", "API6:2023", 799, "A sensitive business flow can be repeated without limit",
        "Enforce business limits on the server (once per user, N per day), atomically with the effect, and monitor repeated use.";
    SSRF = "ssrf", "API7:2023", 918, "The server fetches URLs the client supplies, internal addresses included",
        "Allowlist schemes and hosts for server-side fetches, resolve names and refuse non-public addresses (loopback, private, link-local, metadata) at connect time, and do not follow redirects.";
    CORS = "cors-permissive", "API8:2023", 942, "CORS trusts arbitrary origins",
        "Allow only an exact list of trusted origins; never reflect the Origin header, and never combine a wildcard or reflection with credentials.";
    DEBUG_ENDPOINT = "debug-endpoint-exposed", "API8:2023", 215, "A debug or management endpoint is exposed",
        "Remove debug, profiling and management endpoints from production builds, or bind them to a separate, authenticated, internal listener.";
    TRACE = "trace-enabled", "API8:2023", 693, "HTTP TRACE is enabled",
        "Disable the TRACE method on the server and any proxy in front of it (it echoes requests, credentials included, back to the caller).";
    HEADERS = "security-headers-missing", "API8:2023", 693, "Security headers are missing",
        "Send `X-Content-Type-Options: nosniff`, `Cache-Control: no-store` on authenticated answers, `Content-Security-Policy: default-src 'none'; frame-ancestors 'none'` (or `X-Frame-Options: DENY`) and `Strict-Transport-Security` on every answer.";
    BANNER = "version-banner", "API8:2023", 497, "Server and framework versions are disclosed",
        "Remove `X-Powered-By` and version details from `Server` and other banners.";
    VERBOSE_ERRORS = "verbose-errors", "API8:2023", 209, "Error answers reveal internals",
        "Return generic problem documents (RFC 9457) with a request id; keep stack traces, SQL and file paths in server logs only.";
    SQLI = "sql-injection", "API8:2023", 89, "SQL injection",
        "Use parameterised queries (bound parameters) everywhere; never build SQL from request data, and escape LIKE wildcards.";
    NOSQLI = "nosql-injection", "API8:2023", 943, "NoSQL operator injection",
        "Validate types before querying: a field that should be a string must be refused when it is an object; never pass request JSON to a query as a filter (and disable operators in user input).";
    CMDI = "command-injection", "API8:2023", 78, "OS command injection",
        "Never build a shell command line from request data: call programs directly with an argument list (no shell), and validate the value against a strict pattern.";
    OLD_VERSION = "old-version-exposed", "API9:2023", 1059, "An older API version answers with weaker controls",
        "Retire old versions (410), or route them through the same authentication and authorization as the current one; keep an inventory with owners and sunset dates.";
    OLD_VERSION_LIVE = "old-version-live", "API9:2023", 1059, "An older API version is still served",
        "Keep old versions documented with Deprecation/Sunset headers and remove them on schedule.";
}

/// One request and its answer, redacted.
#[derive(Clone, Debug, Serialize)]
pub struct Exchange {
    /// Who sent it (`alice`, `anonymous`, `forged token`).
    pub identity: String,
    /// Request line, notable headers and body excerpt, redacted.
    pub request: String,
    /// Status code, or none when the request failed.
    pub status: Option<u16>,
    /// Notable headers and body excerpt, redacted.
    pub response: String,
}

/// A proven weakness.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub rule: &'static str,
    pub title: String,
    pub severity: Severity,
    pub owasp: &'static str,
    pub owasp_name: &'static str,
    pub cwe: u32,
    /// `METHOD /path/template`, or `*` for API-wide findings.
    pub operation: String,
    /// What was shown, in one or two sentences.
    pub detail: String,
    pub evidence: Vec<Exchange>,
    /// A `curl` command that repeats the decisive request (credentials as variables).
    pub reproduce: String,
    pub fix: &'static str,
    /// Stable across runs: rule, operation and the discriminator (property, parameter...).
    pub fingerprint: String,
    /// Line of the operation's path in the description (YAML), when known.
    pub spec_line: Option<u64>,
}

impl Finding {
    pub(crate) fn new(rule: Rule, severity: Severity, operation: &str, key: &str) -> Self {
        Self {
            rule: rule.id,
            title: rule.title.to_owned(),
            severity,
            owasp: rule.owasp,
            owasp_name: rule.owasp_name(),
            cwe: rule.cwe,
            operation: operation.to_owned(),
            detail: String::new(),
            evidence: Vec::new(),
            reproduce: String::new(),
            fix: rule.fix,
            fingerprint: fingerprint(&[rule.id, operation, key]),
            spec_line: None,
        }
    }

    pub(crate) fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = d.into();
        self
    }

    pub(crate) fn evidence(mut self, e: Exchange) -> Self {
        self.evidence.push(e);
        self
    }

    pub(crate) fn reproduce(mut self, curl: impl Into<String>) -> Self {
        self.reproduce = curl.into();
        self
    }

    /// The rule this finding belongs to.
    pub fn rule(&self) -> Option<Rule> {
        rules::ALL.iter().copied().find(|r| r.id == self.rule)
    }
}

/// FNV-1a, 64 bits, hex: stable across runs, platforms and Rust versions.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain(std::iter::once(0u8)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_order_and_parse() {
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Info);
        assert_eq!(Severity::parse("MEDIUM"), Some(Severity::Medium));
        assert_eq!(Severity::parse("x"), None);
    }

    #[test]
    fn fingerprints_are_stable() {
        assert_eq!(fingerprint(&["a", "b"]), fingerprint(&["a", "b"]));
        assert_ne!(fingerprint(&["a", "b"]), fingerprint(&["ab", ""]));
        let ids: std::collections::BTreeSet<_> = rules::ALL.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), rules::ALL.len(), "rule ids are unique");
    }
}
