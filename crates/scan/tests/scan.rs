//! The scanner against real shops on loopback: each weakness switched on alone is reported
//! with the right OWASP id, the secure default yields nothing at medium or above, and one
//! scan of a shop with every weakness on reports them all within the budget.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use portcullis_scan::{Identity, Report, Role, ScanConfig, ScanError, Severity, exit_code, run};
use portcullis_shop::{Vuln, VulnSet};
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

fn login_identity(name: &str, email: &str, password: &str) -> Identity {
    Identity::login(
        name,
        "/v2/auth/login",
        json!({ "email": email, "password": password }),
        "/access_token",
    )
    .with_refresh_pointer("/refresh_token")
}

/// A scan of `shop` as alice (A), bob (B) and the administrator, all logging in with recipes.
async fn scan_with(shop: &Shop, tweak: impl FnOnce(&mut ScanConfig)) -> Report {
    let c = client();
    let a = register(shop, &c, "alice").await;
    let b = register(shop, &c, "bob").await;
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.identities = vec![
        login_identity("alice", &a.email, PASSWORD),
        login_identity("bob", &b.email, PASSWORD),
        login_identity("admin", ADMIN_EMAIL, ADMIN_PASSWORD).with_role(Role::Admin),
    ];
    tweak(&mut config);
    let started = Instant::now();
    let report = run(config).await.expect("the scan runs");
    println!("{}", report.summary());
    println!("scan took {:?}", started.elapsed());
    report
}

async fn scan(shop: &Shop) -> Report {
    scan_with(shop, |_| {}).await
}

fn rules_of(r: &Report) -> Vec<(&'static str, &'static str, Severity)> {
    r.findings
        .iter()
        .map(|f| (f.rule, f.owasp, f.severity))
        .collect()
}

fn assert_found(r: &Report, rule: &str, owasp: &str) {
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == rule && f.owasp == owasp),
        "expected {rule} ({owasp}); found {:?}",
        rules_of(r)
    );
}

/// The rules each weakness switch must trigger, with their OWASP ids.
fn expected(v: Vuln) -> &'static [(&'static str, &'static str)] {
    match v {
        Vuln::Bola => &[
            ("bola-read", "API1:2023"),
            ("bola-write", "API1:2023"),
            ("bola-delete", "API1:2023"),
        ],
        Vuln::Bfla => &[("bfla", "API5:2023")],
        Vuln::MassAssignment => &[("mass-assignment", "API3:2023")],
        Vuln::DataExposure => &[
            ("data-exposure-sensitive", "API3:2023"),
            ("data-exposure-undeclared", "API3:2023"),
        ],
        Vuln::JwtAlgNone => &[("jwt-alg-none", "API2:2023")],
        Vuln::JwtWeakSecret => &[("jwt-weak-secret", "API2:2023")],
        Vuln::JwtNoExpiry => &[("jwt-refresh-as-access", "API2:2023")],
        Vuln::LoginNoLimit => &[
            ("login-brute-force", "API2:2023"),
            ("login-account-enumeration", "API2:2023"),
            ("login-rate-limit-missing", "API4:2023"),
        ],
        Vuln::LoginRace => &[("login-lockout-race", "API2:2023")],
        Vuln::NoRateLimit => &[
            ("rate-limit-missing", "API4:2023"),
            ("pagination-unbounded", "API4:2023"),
            ("oversized-input", "API4:2023"),
        ],
        Vuln::BusinessFlow => &[("business-flow-unlimited", "API6:2023")],
        Vuln::Ssrf => &[("ssrf", "API7:2023")],
        Vuln::CorsWildcard => &[("cors-permissive", "API8:2023")],
        Vuln::NoSecurityHeaders => &[
            ("security-headers-missing", "API8:2023"),
            ("version-banner", "API8:2023"),
        ],
        Vuln::VerboseErrors => &[("verbose-errors", "API8:2023")],
        Vuln::LegacyV1 => &[("old-version-exposed", "API9:2023")],
        Vuln::Sqli => &[("sql-injection", "API8:2023")],
        Vuln::JwtKeyConfusion => &[("jwt-key-confusion", "API2:2023")],
        Vuln::JwtKidInjection => &[("jwt-kid-injection", "API2:2023")],
        Vuln::Nosqli => &[("nosql-injection", "API8:2023")],
        Vuln::Cmdi => &[("command-injection", "API8:2023")],
    }
}

macro_rules! detects {
    ($name:ident, $vuln:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let shop = Shop::with(&[$vuln]).await;
            let report = scan(&shop).await;
            for (rule, owasp) in expected($vuln) {
                assert_found(&report, rule, owasp);
            }
            assert!(!report.budget_exhausted);
        }
    };
}

detects!(bola_read_write_delete_of_another_users_order, Vuln::Bola);
detects!(bfla_customer_reaches_admin_routes, Vuln::Bfla);
detects!(
    mass_assignment_of_role_balance_price_status,
    Vuln::MassAssignment
);
detects!(
    data_exposure_of_hashes_and_undeclared_fields,
    Vuln::DataExposure
);
detects!(jwt_alg_none_accepted, Vuln::JwtAlgNone);
detects!(jwt_weak_secret_cracked_offline, Vuln::JwtWeakSecret);
detects!(
    jwt_refresh_token_accepted_as_access_token,
    Vuln::JwtNoExpiry
);
detects!(
    login_brute_force_enumeration_and_spraying,
    Vuln::LoginNoLimit
);

/// A raced lockout shows only to guesses in flight together: the scan may send all 12 of its
/// burst at once (not 4 at a time, 5 ms apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_lockout_raced_by_parallel_guesses() {
    let shop = Shop::with(&[Vuln::LoginRace]).await;
    let report = scan_with(&shop, |c| {
        c.concurrency = 16;
        c.rate_per_sec = 10_000;
    })
    .await;
    for (rule, owasp) in expected(Vuln::LoginRace) {
        assert_found(&report, rule, owasp);
    }
    let race = report
        .findings
        .iter()
        .find(|f| f.rule == "login-lockout-race")
        .unwrap();
    assert!(
        race.detail.contains("one after another, 5 wrong passwords"),
        "{}",
        race.detail
    );
}
detects!(no_rate_limit_and_unbounded_page_size, Vuln::NoRateLimit);
detects!(promo_redeemed_without_limit, Vuln::BusinessFlow);
detects!(ssrf_avatar_fetch_hits_the_canary, Vuln::Ssrf);
detects!(
    cors_reflects_any_origin_with_credentials,
    Vuln::CorsWildcard
);
detects!(
    missing_security_headers_and_banners,
    Vuln::NoSecurityHeaders
);
detects!(verbose_errors_leak_internals, Vuln::VerboseErrors);
detects!(legacy_v1_without_auth, Vuln::LegacyV1);
detects!(sql_injection_in_product_search, Vuln::Sqli);
detects!(
    jwt_hs256_keyed_with_the_published_rsa_key,
    Vuln::JwtKeyConfusion
);
detects!(jwt_kid_header_spliced_into_sql, Vuln::JwtKidInjection);
detects!(nosql_operator_instead_of_a_password, Vuln::Nosqli);
detects!(command_injection_found_by_time, Vuln::Cmdi);

/// SQL injection is found in a JSON field of a write (the promo code) as well as in a query
/// parameter, each at its own operation and field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_injection_in_a_json_field_and_a_parameter() {
    let shop = Shop::with(&[Vuln::Sqli]).await;
    let report = scan(&shop).await;
    let at = |op: &str, key: &str| {
        report
            .findings
            .iter()
            .any(|f| f.rule == "sql-injection" && f.operation == op && f.detail.contains(key))
    };
    assert!(
        at("GET /v2/products/search", "Parameter `q`"),
        "{:?}",
        rules_of(&report)
    );
    assert!(
        at("POST /v2/promo/redeem", "JSON field `code`"),
        "{:?}",
        rules_of(&report)
    );
}

/// NoSQL operators are found where the shop takes them: the login password, the search
/// parameter and the promo code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nosql_operators_in_login_parameters_and_fields() {
    let shop = Shop::with(&[Vuln::Nosqli]).await;
    let report = scan(&shop).await;
    let ops: std::collections::BTreeSet<_> = report
        .findings
        .iter()
        .filter(|f| f.rule == "nosql-injection")
        .map(|f| f.operation.as_str())
        .collect();
    assert_eq!(
        ops,
        [
            "GET /v2/products/search",
            "POST /v2/auth/login",
            "POST /v2/promo/redeem"
        ]
        .into_iter()
        .collect(),
        "{:?}",
        rules_of(&report)
    );
}

/// The secure default signing RS256 and publishing its key set: the key confusion and `kid`
/// probes run (the key set is found) and find nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_shop_with_a_published_rsa_key_has_no_jwt_finding() {
    let mut config = test_config(VulnSet::secure());
    config.jwt_rsa = true;
    let shop = Shop::start(config).await;
    let jwks = send(
        &client(),
        Method::GET,
        &shop.url("/.well-known/jwks.json"),
        None,
        None,
    )
    .await;
    assert_eq!(jwks.status, StatusCode::OK);
    assert_eq!(jwks.json()["keys"][0]["kty"], "RSA");
    let report = scan(&shop).await;
    let serious: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
        .collect();
    assert!(serious.is_empty(), "false positives: {serious:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_shop_has_no_finding_at_medium_or_above() {
    let shop = Shop::secure().await;
    let report = scan(&shop).await;
    let serious: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
        .collect();
    assert!(serious.is_empty(), "false positives: {serious:#?}");
    assert_eq!(exit_code(&report.findings, Severity::Medium), 0);
    assert!(!report.budget_exhausted);
    assert!(report.reached);
    // The baseline reached the operations, so the silence means something.
    let cov = |op: &str| report.coverage.iter().find(|c| c.operation == op).unwrap();
    let orders = cov("GET /v2/orders/{order_id}");
    assert!(orders.baseline_2xx.contains("alice") && orders.baseline_2xx.contains("bob"));
    assert!(orders.probes.contains("bola") && orders.probes.contains("auth"));
    assert!(cov("GET /v2/admin/users").baseline_2xx.contains("admin"));
    assert!(!cov("GET /v2/admin/users").baseline_2xx.contains("alice"));
    for op in [
        "POST /v2/users/me/avatar",
        "POST /v2/promo/redeem",
        "PATCH /v2/users/me",
        "GET /v2/products/search",
    ] {
        assert!(!cov(op).probes.is_empty(), "{op} was not probed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_weakness_at_once_within_the_budget() {
    let shop = Shop::start(test_config(VulnSet::all())).await;
    let started = Instant::now();
    let report = scan(&shop).await;
    let took = started.elapsed();
    // With `login-no-limit` on there is no lockout left to race.
    for v in Vuln::ALL.into_iter().filter(|v| *v != Vuln::LoginRace) {
        for (rule, owasp) in expected(v) {
            assert_found(&report, rule, owasp);
        }
    }
    assert!(
        report.requests < report.budget,
        "{} requests",
        report.requests
    );
    assert!(!report.budget_exhausted);
    println!(
        "all weaknesses: {} findings, {} requests, {took:?}",
        report.findings.len(),
        report.requests
    );
    assert_eq!(exit_code(&report.findings, Severity::High), 1);

    // Every rendering works and carries the findings.
    let json: Value = portcullis_test_support::serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(
        json["findings"].as_array().unwrap().len(),
        report.findings.len()
    );
    let sarif: Value = portcullis_test_support::serde_json::from_str(&report.to_sarif()).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), report.findings.len());
    assert!(
        results
            .iter()
            .all(|r| r["ruleIndex"].is_u64() && r["partialFingerprints"].is_object())
    );
    assert!(
        results
            .iter()
            .any(|r| r["locations"][0]["physicalLocation"]["region"]["startLine"].is_u64())
    );
    let junit = report.to_junit(Severity::Medium).unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("<failure"),
        "{junit}"
    );
    // Judged at the exit code's threshold: at `critical`, only the cases with a critical
    // finding fail; the others pass with their findings as the cases' output.
    let lenient = report.to_junit(Severity::Critical).unwrap();
    let (strict, relaxed) = (
        junit.matches("<failure").count(),
        lenient.matches("<failure").count(),
    );
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.severity == Severity::Critical)
    );
    assert!(relaxed >= 1 && relaxed < strict, "{relaxed} of {strict}");
    assert!(lenient.contains("<system-out>"), "{lenient}");
    let summary = report.summary();
    assert!(summary.contains("API1:2023") && summary.contains("coverage:"));

    // Nothing secret leaks into any rendering.
    let c = client();
    let fresh = login(&shop, &c, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for (name, text) in [
        ("json", report.to_json()),
        ("sarif", report.to_sarif()),
        ("junit", junit),
        ("summary", summary),
    ] {
        for secret in [
            PASSWORD,
            ADMIN_PASSWORD,
            "$argon2id$",
            "eyJ",
            fresh.access.as_str(),
        ] {
            assert!(!text.contains(secret), "{name} leaks `{secret}`");
        }
        assert!(
            !text.contains(portcullis_shop::config::WEAK_JWT_SECRET)
                || !text.contains("\"secret\""),
            "{name} names the cracked secret"
        );
    }
    for f in &report.findings {
        assert!(
            !f.reproduce.is_empty() && f.reproduce.starts_with("curl")
                || f.rule == "rate-limit-missing",
            "{f:?}"
        );
        assert!(!f.fix.is_empty() && f.cwe > 0 && f.owasp.starts_with("API"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_fingerprints_are_suppressed() {
    let shop = Shop::with(&[Vuln::CorsWildcard]).await;
    let only_misconfig = |c: &mut ScanConfig| c.probes = vec!["misconfig".into()];
    let first = scan_with(&shop, only_misconfig).await;
    assert_eq!(first.probes, vec!["misconfig"]);
    let cors = first
        .findings
        .iter()
        .find(|f| f.rule == "cors-permissive")
        .unwrap()
        .clone();
    let baseline = first.to_baseline();
    let accepted = {
        let dir =
            std::env::temp_dir().join(format!("portcullis-scan-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("accepted.txt");
        std::fs::write(&file, baseline).unwrap();
        let list = portcullis_scan::load_accepted(&file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        list
    };
    let second = scan_with(&shop, |c| {
        only_misconfig(c);
        c.accepted = accepted;
    })
    .await;
    assert!(
        second
            .findings
            .iter()
            .all(|f| f.fingerprint != cors.fingerprint)
    );
    assert!(
        second
            .suppressed
            .iter()
            .any(|f| f.fingerprint == cors.fingerprint)
    );
    assert_eq!(exit_code(&second.findings, Severity::Info), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_bearer_tokens_work_as_identities() {
    let shop = Shop::with(&[Vuln::Bola]).await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.identities = vec![
        Identity::bearer("alice", &a.access),
        Identity::bearer("bob", &b.access),
    ];
    config.probes = vec!["bola".into()];
    let report = run(config).await.unwrap();
    assert_found(&report, "bola-read", "API1:2023");
    assert!(!report.to_json().contains(&a.access));
}

#[tokio::test]
async fn non_loopback_targets_are_refused_before_anything_is_sent() {
    for target in [
        "http://192.0.2.10:8080/",
        "http://example.com/",
        "https://10.0.0.1/api",
    ] {
        let mut config = ScanConfig::new(target.parse().unwrap(), "/nonexistent/openapi.yaml");
        config.identities = vec![login_identity("alice", "a@example.com", PASSWORD)];
        let started = Instant::now();
        let err = run(config).await.expect_err("refused");
        // Refused before the description is read (it does not exist) or a connection tried.
        assert!(
            matches!(err, ScanError::RemoteTarget { .. }),
            "{target}: {err}"
        );
        assert!(started.elapsed() < Duration::from_millis(200));
        assert!(err.to_string().contains("loopback"));
    }
}

#[tokio::test]
async fn bad_configuration_is_an_error_not_a_scan() {
    let shop = Shop::secure().await;
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.probes = vec!["nope".into()];
    assert!(matches!(run(config).await, Err(ScanError::Config(_))));
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.identities = vec![login_identity(
        "mallory",
        "nobody@example.com",
        "wrong password 123",
    )];
    let err = run(config).await.expect_err("login fails");
    assert!(matches!(err, ScanError::Login { .. }), "{err}");
    assert!(!err.to_string().contains("wrong password 123"));
}

/// Tokens that every secured operation refuses (expired, forged, for another API): nothing
/// behind authentication is tested, and the report says so (the command exits 2) instead of
/// passing as a clean scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_that_never_gets_past_authentication_says_so() {
    let shop = Shop::secure().await;
    let mut config = ScanConfig::new(shop.base.parse().unwrap(), shop_spec());
    config.identities = vec![
        Identity::bearer("alice", "eyJhbGciOiJIUzI1NiJ9.e30.expired"),
        Identity::bearer("bob", "not-a-token"),
    ];
    config.probes = vec!["bola".into(), "exposure".into()];
    let report = run(config).await.expect("the scan runs");
    assert!(!report.reached);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("nothing behind authentication")),
        "{:?}",
        report.notes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_every_request() {
    let shop = Shop::start(test_config(VulnSet::all())).await;
    let report = scan_with(&shop, |c| c.budget = 60).await;
    assert!(report.requests <= 60, "{} requests", report.requests);
    assert!(report.budget_exhausted);
    assert!(report.notes.iter().any(|n| n.contains("budget")));
}

/// The SARIF is valid SARIF 2.1.0 (the OASIS schema, vendored), and the HTML report is one
/// self-contained page that shows every finding and escapes what the target sent.
#[tokio::test]
async fn sarif_validates_and_html_shows_every_finding() {
    let shop = Shop::with(&[Vuln::Bola, Vuln::CorsWildcard, Vuln::VerboseErrors]).await;
    let report = scan(&shop).await;
    assert!(report.findings.len() >= 3);
    let schema: Value = portcullis_test_support::serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../schemas/third-party/sarif-2.1.0.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let sarif: Value = portcullis_test_support::serde_json::from_str(&report.to_sarif()).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sarif)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let html = report.to_html();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(
        !html.contains("<script") && !html.contains("src=\"http"),
        "self-contained"
    );
    for f in &report.findings {
        assert!(
            html.contains(&format!("data-rule=\"{}\"", f.rule)),
            "{} missing",
            f.rule
        );
    }
    let high = report
        .findings
        .iter()
        .filter(|f| f.severity == Severity::High)
        .count();
    assert!(html.contains(&format!("id=\"count-high\">{high}</text>")));
    // The verbose errors carry the target's text (SQL, paths): escaped, never markup.
    assert!(!html.contains("<pre><html"), "target text is escaped");
}
