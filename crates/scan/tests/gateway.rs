//! The scanner proves the gateway: the shop with every weakness on is scanned directly, then
//! through a gateway running the full example policy (`examples/shop/portcullis-auth.yaml`);
//! the findings the gateway is meant to close are gone, and what remains is what it cannot
//! see (listed, with the reason).

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::BTreeSet;

use portcullis_scan::{Identity, Report, Role, ScanConfig, Severity, run};
use portcullis_shop::Vuln;
use portcullis_test_support::serde_json::json;
use portcullis_test_support::*;

fn login(name: &str, email: &str, password: &str) -> Identity {
    Identity::login(
        name,
        "/v2/auth/login",
        json!({ "email": email, "password": password }),
        "/access_token",
    )
    .with_refresh_pointer("/refresh_token")
}

async fn scan(base: &str, a: &Identity, b: &Identity) -> Report {
    let mut config = ScanConfig::new(base.parse().unwrap(), shop_spec());
    config.identities = vec![
        a.clone(),
        b.clone(),
        login("admin", ADMIN_EMAIL, ADMIN_PASSWORD).with_role(Role::Admin),
    ];
    let report = run(config).await.expect("the scan runs");
    println!("{}", report.summary());
    report
}

/// The example policy, on ephemeral ports in front of `shop`, keys from the test.
fn example_policy(shop: &Shop) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/shop/portcullis-auth.yaml"),
    )
    .unwrap();
    let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
    let mut out = String::new();
    let mut skip_admin = false;
    for line in text.lines() {
        if line.starts_with("admin:") {
            skip_admin = true;
            continue;
        }
        if skip_admin && line.starts_with("  ") {
            continue;
        }
        skip_admin = false;
        let line = match line {
            l if l.starts_with("listen:") => "listen: 127.0.0.1:0".to_owned(),
            l if l.starts_with("upstream:") => format!("upstream: http://{}", shop.addr),
            l if l.starts_with("openapi:") => format!("openapi: {}", shop_spec().display()),
            l if l.starts_with("state:") => "state: { backend: memory }".to_owned(),
            // The shop signs RS256 (jwt-key-confusion): verify with its published key set.
            l if l.contains("secret_env: SHOP_JWT_SECRET") && shop.config.jwt_rsa_signing() => {
                format!(
                    "    jwks: {{ url: http://{}/.well-known/jwks.json, algs: [RS256] }}",
                    shop.addr
                )
            }
            l => l.replace(
                "secret_env: SHOP_JWT_SECRET",
                &format!("secret: \"{secret}\""),
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[tokio::test]
async fn findings_the_gateway_closes_are_gone_behind_it() {
    // Every weakness but the two that break the shop's tokens for any verifier (no expiry, a
    // dictionary secret): the gateway refuses all such tokens, which would leave nothing
    // authenticated to scan behind it.
    let vulns: Vec<Vuln> = Vuln::ALL
        .into_iter()
        .filter(|v| !matches!(v, Vuln::JwtNoExpiry | Vuln::JwtWeakSecret))
        .collect();
    let shop = Shop::with(&vulns).await;
    let [ia, ib] = alice_and_bob(&shop).await;
    let direct = scan(&shop.base, &ia, &ib).await;
    let gw = Gw::start(&example_policy(&shop)).await;
    let behind = scan(&gw.base, &ia, &ib).await;

    // The scan behind the gateway really ran: the users' own calls got through.
    for op in ["GET /v2/users/me", "GET /v2/orders", "POST /v2/orders"] {
        let c = behind.coverage.iter().find(|c| c.operation == op).unwrap();
        assert!(
            c.baseline_2xx.contains("alice") && c.baseline_2xx.contains("bob"),
            "{op}: {:?}",
            c.baseline_2xx
        );
    }
    let rules =
        |r: &Report| -> BTreeSet<&'static str> { r.findings.iter().map(|f| f.rule).collect() };
    let (before, after) = (rules(&direct), rules(&behind));
    println!("direct: {before:?}\nbehind the gateway: {after:?}");
    // What the example policy is meant to close, and does.
    for closed in [
        "bola-read",
        "bola-write",
        "bola-delete",
        "bfla",
        "jwt-alg-none",
        "mass-assignment",
        "data-exposure-sensitive",
        "data-exposure-undeclared",
        "cors-permissive",
        "security-headers-missing",
        "version-banner",
        "verbose-errors",
        "ssrf",
        "business-flow-unlimited",
        "login-brute-force",
        "rate-limit-missing",
        "pagination-unbounded",
        "oversized-input",
        "jwt-key-confusion",
        "jwt-kid-injection",
        "nosql-injection",
        "command-injection",
    ] {
        assert!(
            before.contains(closed),
            "the direct scan finds {closed}: {before:?}"
        );
        assert!(
            !after.contains(closed),
            "{closed} is still found behind the gateway: {after:?}"
        );
    }
    // Nothing of consequence appears that was not there without the gateway (the deprecated
    // v1, still served until its sunset, is an info-level note).
    let new: Vec<_> = behind
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium && !before.contains(f.rule))
        .map(|f| f.rule)
        .collect();
    assert!(new.is_empty(), "new findings behind the gateway: {new:?}");
    // What remains is what no gateway can close from this contract: the search text and the
    // promo code are any text, so SQL injection is the service's to fix (parameterised
    // queries). The display name's pattern, enforced at the gateway, stops the shell
    // metacharacters of command injection: defense in depth, not a fix.
    let left: BTreeSet<_> = behind
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Medium)
        .map(|f| f.rule)
        .collect();
    assert_eq!(left, BTreeSet::from(["sql-injection"]), "{after:?}");
    assert!(
        behind.findings.len() < direct.findings.len() / 3,
        "{} of {}",
        behind.findings.len(),
        direct.findings.len()
    );
}

/// Alice and Bob, registered with the shop, as identities that log in.
async fn alice_and_bob(shop: &Shop) -> [Identity; 2] {
    let c = client();
    let (a, b) = (
        register(shop, &c, "alice").await,
        register(shop, &c, "bob").await,
    );
    [
        login("alice", &a.email, PASSWORD),
        login("bob", &b.email, PASSWORD),
    ]
}

/// The login probe alone, as the two identities, against `base`.
async fn scan_login(
    base: String,
    identities: [Identity; 2],
    tweak: impl FnOnce(&mut ScanConfig),
) -> Report {
    let mut config = ScanConfig::new(base.parse().unwrap(), shop_spec());
    config.identities = identities.into();
    config.probes = vec!["login".into()];
    tweak(&mut config);
    run(config).await.unwrap()
}

/// A per-address login limit is only as good as the address it counts: behind a gateway that
/// (wrongly) trusts `X-Forwarded-For` from every loopback client, rotating the header escapes
/// it; with the header not trusted, it holds, and only the missing per-account limit is left.
#[tokio::test]
async fn a_login_limit_keyed_on_a_spoofable_header_is_found() {
    // Without the shop's own per-address limit: behind a gateway every request comes from the
    // gateway's one address, and that limit (100 at once, 10 a second) would refuse the second
    // scan's guesses or not, by how fast the machine runs the first.
    let shop = Shop::with(&[Vuln::LoginNoLimit, Vuln::NoRateLimit]).await;
    let [ia, ib] = alice_and_bob(&shop).await;
    let scan_login = |base: String| scan_login(base, [ia.clone(), ib.clone()], |_| {});
    let limit = "state: { backend: memory }\nrate_limits:\n  - { match: \"POST /v2/auth/login\", key: ip, rate: 3/hour, burst: 3 }\n";
    let trusting =
        Gw::in_front_of(&shop, &format!("trusted_proxies: [127.0.0.0/8]\n{limit}")).await;
    let r = scan_login(trusting.base.clone()).await;
    let rules: BTreeSet<_> = r.findings.iter().map(|f| f.rule).collect();
    assert!(rules.contains("login-limit-xff-bypass"), "{}", r.summary());
    let strict = Gw::in_front_of(&shop, limit).await;
    let r = scan_login(strict.base.clone()).await;
    let rules: BTreeSet<_> = r.findings.iter().map(|f| f.rule).collect();
    assert!(!rules.contains("login-limit-xff-bypass"), "{}", r.summary());
    let brute = r
        .findings
        .iter()
        .find(|f| f.rule == "login-brute-force")
        .unwrap_or_else(|| panic!("no per-account limit: {}", r.summary()));
    assert!(
        brute.detail.contains("only limit is per address"),
        "{}",
        brute.detail
    );
}

/// A lockout raced by parallel guesses (the shop's, looked at before the password is checked
/// and counted after) is found straight, and not behind a gateway whose login rule counts each
/// attempt as it lets it through, at no more tries than the shop's own lockout allows.
#[tokio::test]
async fn a_raced_lockout_is_found_and_closed_by_the_gateway() {
    let shop = Shop::with(&[Vuln::LoginRace]).await;
    let [ia, ib] = alice_and_bob(&shop).await;
    // A race needs the guesses in flight together: all 12 of the burst at once, not 4 at a
    // time, 5 ms apart.
    let scan_login = |base: String| {
        scan_login(base, [ia.clone(), ib.clone()], |c| {
            c.concurrency = 16;
            c.rate_per_sec = 10_000;
        })
    };
    let direct = scan_login(shop.base.clone()).await;
    let race = direct
        .findings
        .iter()
        .find(|f| f.rule == "login-lockout-race")
        .unwrap_or_else(|| panic!("{}", direct.summary()));
    assert!(race.detail.contains("sent at once"), "{}", race.detail);
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "  login: { route: POST /v2/auth/login, account_pointer: /email, per_account_failures: 5 }\n",
        "",
    )
    .await;
    let behind = scan_login(gw.base.clone()).await;
    let rules: BTreeSet<_> = behind.findings.iter().map(|f| f.rule).collect();
    assert!(
        !rules.contains("login-lockout-race"),
        "{}",
        behind.summary()
    );
    assert!(!rules.contains("login-brute-force"), "{}", behind.summary());
}
