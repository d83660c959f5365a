//! The shop's token weaknesses, attacked straight and through the gateway: the attack works
//! against the shop and fails at the gateway, while the honest user's tokens still work.

#![allow(clippy::unwrap_used)]

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

/// A gateway in front of `shop` verifying the shop's own tokens with `secret`.
async fn gateway(shop: &Shop) -> Gw {
    Gw::verifying_shop_tokens(
        shop,
        "  refresh: { route: POST /v2/auth/refresh, token_pointer: /refresh_token }\n",
        "",
    )
    .await
}

fn admin_claims(sub: &str) -> Value {
    let now = now();
    json!({ "sub": sub, "iat": now, "exp": now + 600, "jti": format!("forged-{now}"), "type": "access", "role": "admin", "fam": "x" })
}

async fn status(c: &reqwest::Client, url: String, token: &str) -> StatusCode {
    send(c, Method::GET, &url, Some(token), None).await.status
}

#[tokio::test]
async fn alg_none_forgery_is_stopped() {
    let shop = Shop::with(&[Vuln::JwtAlgNone]).await;
    let gw = gateway(&shop).await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    for alg in ["none", "None", "NONE"] {
        let forged = forge_unsigned(alg, &admin_claims(&b.id));
        assert_eq!(
            status(&c, shop.url("/v2/admin/users"), &forged).await,
            StatusCode::OK,
            "direct, {alg}"
        );
        assert_eq!(
            status(&c, gw.url("/v2/admin/users"), &forged).await,
            StatusCode::UNAUTHORIZED,
            "gateway, {alg}"
        );
    }
    assert_eq!(
        status(&c, gw.url("/v2/users/me"), &b.access).await,
        StatusCode::OK,
        "the honest token passes"
    );
}

#[tokio::test]
async fn stale_and_refresh_tokens_are_stopped() {
    let shop = Shop::with(&[Vuln::JwtNoExpiry]).await;
    let gw = gateway(&shop).await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    let mut stale = claims_of(&b.access);
    stale["iat"] = json!(now() - 7200);
    stale["exp"] = json!(now() - 3600);
    let stale = sign_hs256(JWT_SECRET, &stale);
    for (what, token) in [
        ("refresh as access", b.refresh.as_str()),
        ("expired", stale.as_str()),
    ] {
        assert_eq!(
            status(&c, shop.url("/v2/users/me"), token).await,
            StatusCode::OK,
            "direct: {what}"
        );
        assert_eq!(
            status(&c, gw.url("/v2/users/me"), token).await,
            StatusCode::UNAUTHORIZED,
            "gateway: {what}"
        );
    }
    assert_eq!(
        status(&c, gw.url("/v2/users/me"), &b.access).await,
        StatusCode::OK
    );
    // Refresh through the gateway: once, then never again.
    let refresh = |t: String| {
        let (c, url) = (c.clone(), gw.url("/v2/auth/refresh"));
        async move {
            send(
                &c,
                Method::POST,
                &url,
                None,
                Some(json!({ "refresh_token": t })),
            )
            .await
        }
    };
    let first = refresh(b.refresh.clone()).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    assert_eq!(
        refresh(b.refresh.clone()).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_cracked_weak_secret_forges_nothing_through_the_gateway() {
    let shop = Shop::with(&[Vuln::JwtWeakSecret]).await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    let cracked = crack_hs256(&b.access, &["123456", "password", "secret"]).unwrap();
    let forged = sign_hs256(cracked.as_bytes(), &admin_claims(&b.id));
    assert_eq!(
        status(&c, shop.url("/v2/admin/users"), &forged).await,
        StatusCode::OK,
        "direct"
    );
    // The gateway will not run with the weak secret at all...
    let refused = portcullis_policy::load_str(
        std::path::Path::new("p.yaml"),
        &format!(
            "{}auth:\n  jwt:\n    keys: [{{ alg: HS256, secret: {cracked} }}]\n",
            shop_policy(shop.addr, "")
        ),
    )
    .unwrap_err();
    assert!(refused.to_string().contains("p.yaml:"), "{refused}");
    assert!(
        refused.to_string().contains("every JWT cracking word list"),
        "{refused}"
    );
    // ...and with the strong key the shop should have had, the forgery is refused.
    let gw = gateway(&shop).await;
    assert_eq!(
        status(&c, gw.url("/v2/admin/users"), &forged).await,
        StatusCode::UNAUTHORIZED,
        "gateway"
    );
}

const LOGIN: &str = "  login: { route: POST /v2/auth/login, account_pointer: /email, per_client_failures: 5, per_account_failures: 20, base_delay: 30s }\n";

async fn login_gateway(shop: &Shop) -> Gw {
    Gw::verifying_shop_tokens(shop, LOGIN, "").await
}

async fn try_login(from: [u8; 4], url: &str, email: &str, password: &str) -> Reply {
    let c = client_from(std::net::IpAddr::from(from));
    send(
        &c,
        Method::POST,
        url,
        None,
        Some(json!({ "email": email, "password": password })),
    )
    .await
}

#[tokio::test]
async fn brute_force_from_100_addresses_is_stopped_and_the_owner_still_gets_in() {
    let shop = Shop::with(&[Vuln::LoginNoLimit]).await;
    let gw = login_gateway(&shop).await;
    let c = client();
    let victim = register(&shop, &c, "victim").await;
    // The owner logs in from home once, before the attack.
    let home = [127, 0, 3, 1];
    assert_eq!(
        try_login(home, &gw.url("/v2/auth/login"), &victim.email, PASSWORD)
            .await
            .status,
        StatusCode::OK
    );

    let mut guesses: Vec<String> = (0..99).map(|i| format!("guess-number-{i}")).collect();
    guesses.push(PASSWORD.into());
    let attack = |base: String| {
        let (guesses, email) = (guesses.clone(), victim.email.clone());
        async move {
            let (mut found, mut throttled) = (false, 0);
            for (i, g) in guesses.iter().enumerate() {
                let r = try_login(
                    [127, 0, 1, 1 + i as u8],
                    &format!("{base}/v2/auth/login"),
                    &email,
                    g,
                )
                .await;
                match r.status {
                    StatusCode::OK => found = true,
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert!(
                            r.header("retry-after")
                                .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)
                        );
                        throttled += 1;
                    }
                    s => assert_eq!(s, StatusCode::UNAUTHORIZED, "{}", r.text),
                }
            }
            (found, throttled)
        }
    };
    assert_eq!(
        attack(shop.base.clone()).await,
        (true, 0),
        "straight at the shop the password falls"
    );
    let (found, throttled) = attack(gw.base.clone()).await;
    assert!(!found, "through the gateway it does not");
    assert_eq!(
        throttled, 80,
        "after 20 failures account-wide, new addresses wait"
    );
    // The owner, from an address the account knows, is not locked out by the attacker...
    assert_eq!(
        try_login(home, &gw.url("/v2/auth/login"), &victim.email, PASSWORD)
            .await
            .status,
        StatusCode::OK
    );
    // ...while a new address waits like the attacker's do.
    assert_eq!(
        try_login(
            [127, 0, 3, 2],
            &gw.url("/v2/auth/login"),
            &victim.email,
            PASSWORD
        )
        .await
        .status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// Sends `count` wrong-password logins for `email` at once, each from `from(i)`; returns how
/// many the upstream judged (401) and how many waited (429).
async fn parallel_guesses(
    url: String,
    email: &str,
    count: u8,
    from: impl Fn(u8) -> [u8; 4],
) -> (usize, usize) {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let (url, email, addr) = (url.clone(), email.to_owned(), from(i));
        set.spawn(async move {
            try_login(addr, &url, &email, &format!("parallel-guess-{i}"))
                .await
                .status
        });
    }
    let (mut judged, mut waited) = (0, 0);
    while let Some(s) = set.join_next().await {
        match s.unwrap() {
            StatusCode::UNAUTHORIZED => judged += 1,
            StatusCode::TOO_MANY_REQUESTS => waited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (judged, waited)
}

#[tokio::test]
async fn parallel_guesses_get_no_more_tries_than_sequential_ones() {
    let shop = Shop::with(&[Vuln::LoginNoLimit]).await;
    let gw = login_gateway(&shop).await;
    let c = client();
    let victim = register(&shop, &c, "raced").await;
    // Straight at the shop, every guess of a burst is judged.
    let direct = parallel_guesses(shop.url("/v2/auth/login"), &victim.email, 30, |_| {
        [127, 0, 5, 1]
    })
    .await;
    assert_eq!(direct, (30, 0));
    // Through the gateway, a burst from one address gets the five tries one address has,
    // however many of its guesses are in flight before the first is answered...
    let one = parallel_guesses(gw.url("/v2/auth/login"), &victim.email, 30, |_| {
        [127, 0, 5, 2]
    })
    .await;
    assert_eq!(one, (5, 25), "one address");
    // ...and a burst from 40 addresses the fifteen left of the account's twenty.
    let many = parallel_guesses(gw.url("/v2/auth/login"), &victim.email, 40, |i| {
        [127, 0, 6, 1 + i]
    })
    .await;
    assert_eq!(many, (15, 25), "many addresses");
}

#[tokio::test]
async fn one_address_is_slowed_and_failures_look_alike() {
    let shop = Shop::with(&[Vuln::LoginNoLimit]).await;
    let gw = login_gateway(&shop).await;
    let c = client();
    let known = register(&shop, &c, "known").await;
    let from = [127, 0, 4, 1];
    for i in 0..5 {
        let r = try_login(
            from,
            &gw.url("/v2/auth/login"),
            &known.email,
            &format!("wrong-password-{i}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = try_login(from, &gw.url("/v2/auth/login"), &known.email, PASSWORD).await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "even the right password waits out the delay"
    );
    assert!(r.header("retry-after").is_some());
    // Enumeration: the shop tells unknown and known accounts apart; the gateway does not.
    let strip = |r: &Reply| {
        let mut v = r.json();
        v.as_object_mut().map(|o| o.remove("request_id"));
        (r.status, v)
    };
    let direct_unknown = try_login(
        [127, 0, 4, 2],
        &shop.url("/v2/auth/login"),
        "nobody@example.com",
        "x-password-1",
    )
    .await;
    let direct_known = try_login(
        [127, 0, 4, 2],
        &shop.url("/v2/auth/login"),
        &known.email,
        "x-password-1",
    )
    .await;
    assert_ne!(strip(&direct_unknown), strip(&direct_known));
    let via_unknown = try_login(
        [127, 0, 4, 3],
        &gw.url("/v2/auth/login"),
        "nobody@example.com",
        "x-password-1",
    )
    .await;
    let via_known = try_login(
        [127, 0, 4, 3],
        &gw.url("/v2/auth/login"),
        &known.email,
        "x-password-1",
    )
    .await;
    assert_eq!(strip(&via_unknown), strip(&via_known));
    assert_eq!(via_known.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn weak_passwords_are_refused_at_registration() {
    let shop = Shop::secure().await;
    // Without body validation (which would refuse a form body too), the password phase
    // itself.
    let gw = Gw::verifying_shop_tokens(&shop, "  passwords:\n    - { route: POST /v2/auth/register, pointer: /password, account_pointer: /email }\n", "validation: { requests: false }\n").await;
    let c = client();
    let reg = |base: String, email: &'static str, password: &'static str| {
        let c = c.clone();
        async move {
            send(
                &c,
                Method::POST,
                &format!("{base}/v2/auth/register"),
                None,
                Some(json!({ "email": email, "password": password, "name": "N" })),
            )
            .await
        }
    };
    // The shop's own list is short: these get through straight...
    assert_eq!(
        reg(shop.base.clone(), "one@example.com", "sunshine1")
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        reg(shop.base.clone(), "alice@example.com", "alice-wonderland")
            .await
            .status,
        StatusCode::CREATED
    );
    // ...and not through the gateway, which names the rule and never the password.
    for (email, pw, rule) in [
        ("two@example.com", "sunshine1", "too common"),
        ("bob@example.com", "bob-wonderland", "account name"),
        ("three@example.com", "x9k2q", "too short"),
    ] {
        let r = reg(gw.base.clone(), email, pw).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{pw}");
        assert!(r.text.contains(rule), "{}", r.text);
        assert!(!r.text.contains(pw), "the password is not echoed");
    }
    // A form-encoded body, where the rule cannot see the password, is not forwarded.
    let form = c
        .post(gw.url("/v2/auth/register"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("email=five%40example.com&password=123456&name=N")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let text = form.text().await.unwrap();
    assert!(text.contains("must be JSON"), "{text}");
    assert!(!text.contains("123456"));
    assert_eq!(
        reg(
            gw.base.clone(),
            "four@example.com",
            "a long and unguessable passphrase"
        )
        .await
        .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn a_login_that_names_no_account_is_not_forwarded() {
    let shop = Shop::with(&[Vuln::LoginNoLimit]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "  login: { route: POST /v2/auth/login, account_pointer: /email }\n",
        // Without body validation (which would refuse these too), the login phase itself.
        "validation: { requests: false }\n",
    )
    .await;
    let c = client();
    for body in [
        serde_json::json!({ "Email": "victim@example.com", "password": "guess" }),
        serde_json::json!({ "email": 42, "password": "guess" }),
    ] {
        let r = send(
            &c,
            Method::POST,
            &gw.url("/v2/auth/login"),
            None,
            Some(body),
        )
        .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
        assert_eq!(
            r.json()["detail"],
            "the login body does not name an account"
        );
    }
    // The victim for an upstream that keeps a repeated key's first copy, a new decoy account
    // each time for the gateway's count (serde keeps the last): refused, counted for nobody.
    for decoy in ["decoy-1@example.com", "decoy-2@example.com"] {
        let r = c
            .post(gw.url("/v2/auth/login"))
            .header("content-type", "application/json")
            .body(format!(
                r#"{{"email":"victim@example.com","email":"{decoy}","password":"guess"}}"#
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let text = r.text().await.unwrap();
        assert!(text.contains("repeats a key"), "{text}");
    }
}
