//! `portcullis-scan`: a dynamic API security tester. It reads an OpenAPI description, logs
//! in two or more identities, calls every operation as each of them, then attacks the running
//! API with one probe per weakness of the OWASP API Security Top 10 (2023) and reports only
//! what it proved, with redacted evidence, a `curl` reproduction and the fix.
//!
//! # Use
//!
//! ```no_run
//! # async fn demo() -> Result<(), portcullis_scan::ScanError> {
//! use portcullis_scan::{ScanConfig, Severity, exit_code, load_identities, run};
//!
//! let mut config = ScanConfig::new(
//!     "http://127.0.0.1:8081".parse().expect("a URL"),
//!     "examples/shop/openapi.yaml",
//! );
//! config.identities = load_identities("users.yaml".as_ref())?;
//! let report = run(config).await?;
//! println!("{}", report.summary());
//! std::fs::write("scan.sarif", report.to_sarif()).ok();
//! std::process::exit(exit_code(&report.findings, Severity::Medium));
//! # }
//! ```
//!
//! - [`run`] takes a [`ScanConfig`] and returns a [`Report`], or a [`ScanError`] when the
//!   scan could not run (bad configuration, unreadable description, a failed login, a
//!   non-loopback target). Findings are not errors.
//! - [`Report::to_json`], [`Report::to_sarif`] (SARIF 2.1.0), [`Report::to_junit`] (JUnit
//!   XML), [`Report::summary`] (text) and [`Report::to_baseline`] (accepted fingerprints).
//! - [`exit_code`]`(findings, fail_on)` is 1 when a finding is at or above `fail_on`, else 0;
//!   the CLI uses 2 for a [`ScanError`].
//! - Identities come from YAML ([`load_identities`], format in [`parse_identities`]): the
//!   first two non-admin identities are user A (the victim, whose objects are attacked) and
//!   user B (the attacker); `role: admin` marks administrators; an anonymous caller is always
//!   added.
//! - Accepted findings: put their fingerprints in [`ScanConfig::accepted`] (read a file with
//!   [`load_accepted`]); they move to [`Report::suppressed`].
//!
//! # Probes
//!
//! | probe | OWASP | proves |
//! |---|---|---|
//! | `exposure` | API3 | secret or undeclared properties in answers |
//! | `misconfig` | API8 | missing security headers, version banners, CORS trusting any origin, verbose errors |
//! | `auth` | API2 | secured operations answering without or with a garbage token |
//! | `jwt` | API2 | `alg: none`, stripped signature, dictionary HMAC secret, expired token, refresh token as access token, no `exp` |
//! | `bola` | API1 | B reads, changes or deletes A's object (confirmed by A) |
//! | `bfla` | API5 | admin operations answering normal users; GET switched onto admin paths |
//! | `mass-assignment` | API3 | privileged properties stored when sent (read back, then restored) |
//! | `ssrf` | API7 | URL fields fetched by the server (hits on the scan's loopback canary) |
//! | `injection` | API8 | SQL injection, error-based and boolean differential |
//! | `business-flow` | API6 | a sensitive flow repeatable without limit |
//! | `versions` | API9 | deprecated or undeclared older versions with weaker controls |
//! | `rate-limit` | API4 | no 429 on a burst, on login; unbounded page size |
//! | `login` | API2 | no per-account limit on login (rotating source addresses); account enumeration |
//!
//! # Safety
//!
//! Every request goes through one engine that enforces the budget (default 3000 requests),
//! the concurrency cap (4), the rate cap (200/s) and the loopback rule: unless
//! [`ScanConfig::allow_remote`] is set, a target outside 127.0.0.0/8 and ::1 is refused
//! before anything is sent, `localhost` is pinned to 127.0.0.1, proxies from the environment
//! are ignored and redirects are not followed. SSRF probes point only at a canary the scan
//! runs on loopback. Writes touch only objects the scan created or the identities' own
//! profiles (restored afterwards); the brute-force probe targets an account that does not
//! exist. Tokens, passwords, `Authorization` and cookies are redacted from evidence and logs.

pub mod config;
pub mod error;
pub mod finding;
pub mod report;

mod canary;
mod ctx;
mod http;
mod model;
mod probes;
mod redact;

use std::sync::Arc;
use std::time::Instant;

pub use config::{
    Identity, IdentityAuth, LoginRecipe, Progress, Role, ScanConfig, SourceAddresses, fetch_spec,
    load_identities, load_seeds, parse_identities,
};
pub use ctx::OperationCoverage;
pub use error::ScanError;
pub use finding::{Exchange, Finding, Rule, Severity, rules};
pub use probes::jwt::rsa_public_key_pem;
pub use report::{Report, exit_code, load_accepted};

/// The names of every probe, in the order they run (for [`ScanConfig::probes`]).
pub const PROBES: &[&str] = probes::ALL;

/// Runs a scan. See the crate documentation.
pub async fn run(config: ScanConfig) -> Result<Report, ScanError> {
    let started = Instant::now();
    let started_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    // Checked first: a remote target is refused before the description is even read.
    let target = config.checked_target()?;
    if let Some(bad) = config.probes.iter().find(|p| !PROBES.contains(&p.as_str())) {
        return Err(ScanError::Config(format!(
            "unknown probe `{bad}` (expected one of: {})",
            PROBES.join(", ")
        )));
    }
    let model = model::Model::load(&config.spec, &config.sensitive_operations)?;
    let engine = http::Engine::new(&config, target.clone())?;
    let ctx = Arc::new(ctx::Ctx::new(config, model, engine));
    if ctx.users().len() < 2 {
        ctx.note("fewer than two non-admin identities: BOLA probes need user A and user B");
    }
    ctx.login_all().await?;
    probes::baseline::run(&ctx).await;
    let reached = ctx.reached();
    if !reached {
        ctx.note("no identity got past authentication on any secured operation: tokens expired or refused, a wrong target, or a server not listening where the scan connects; nothing behind authentication was tested");
    }
    let mut ran = Vec::new();
    for &name in PROBES {
        if ctx.config.probes.is_empty() || ctx.config.probes.iter().any(|p| p == name) {
            if let Some(p) = &ctx.config.progress {
                (p.0)(name, ctx.http.sent());
            }
            probes::run(&ctx, name).await;
            ran.push(name);
        }
    }
    if ctx.http.exhausted() {
        ctx.note("the request budget ran out: some probes did not finish");
    }
    let (mut findings, coverage, notes) = ctx.take();
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.operation.cmp(&b.operation))
            .then_with(|| a.rule.cmp(b.rule))
    });
    let (suppressed, findings): (Vec<Finding>, Vec<Finding>) = findings
        .into_iter()
        .partition(|f| ctx.config.accepted.contains(&f.fingerprint));
    Ok(Report {
        tool: "portcullis-scan",
        version: env!("CARGO_PKG_VERSION"),
        target: target.to_string(),
        spec: ctx.config.spec.display().to_string(),
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        requests: ctx.http.sent(),
        budget: ctx.config.budget,
        budget_exhausted: ctx.http.exhausted(),
        reached,
        probes: ran,
        findings,
        suppressed,
        coverage,
        notes,
    })
}
