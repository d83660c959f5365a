//! Rate limits (API4): the shop with `no-rate-limit` answers every request of a burst; the
//! gateway answers 429 with `Retry-After` and the IETF `RateLimit`/`RateLimit-Policy` headers
//! once a rule's budget is spent, per address and per user, stacked.

#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;

#[tokio::test]
async fn bursts_are_cut_per_address_and_per_user() {
    let shop = Shop::with(&[Vuln::NoRateLimit]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "rate_limits:\n  - { match: \"GET /v2/products\", key: ip, rate: 5/minute }\n  - { match: \"GET /v2/users/me\", key: user, rate: 3/minute }\n",
    )
    .await;
    let c = client();
    let count = |base: String, n: usize| {
        let c = c.clone();
        async move {
            let mut limited = Vec::new();
            for _ in 0..n {
                let r = send(
                    &c,
                    Method::GET,
                    &format!("{base}/v2/products?limit=1"),
                    None,
                    None,
                )
                .await;
                if r.status == StatusCode::TOO_MANY_REQUESTS {
                    limited.push(r);
                }
            }
            limited
        }
    };
    assert!(
        count(shop.base.clone(), 20).await.is_empty(),
        "the shop never says no"
    );
    // An allowed answer says what is left.
    let first = send(&c, Method::GET, &gw.url("/v2/products?limit=1"), None, None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("ratelimit-policy"), Some("\"r0\";q=5;w=60"));
    assert_eq!(first.header("ratelimit"), Some("\"r0\";r=4"));
    let limited = count(gw.base.clone(), 20).await;
    assert_eq!(limited.len(), 16, "five pass (one above), the rest wait");
    let r = &limited[0];
    assert!(
        r.header("retry-after")
            .is_some_and(|s| s.parse::<u64>().unwrap() >= 1)
    );
    assert_eq!(r.header("ratelimit-policy"), Some("\"r0\";q=5;w=60"));
    assert!(
        r.header("ratelimit")
            .is_some_and(|v| v.starts_with("\"r0\";r=0;t="))
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    // Another address has its own budget.
    let other = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 5, 1)));
    assert_eq!(
        send(
            &other,
            Method::GET,
            &gw.url("/v2/products?limit=1"),
            None,
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    // Per user: rotating addresses does not help; another user is not affected.
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let mut statuses = Vec::new();
    for i in 0..5u8 {
        let from = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 6, 1 + i)));
        statuses.push(
            send(
                &from,
                Method::GET,
                &gw.url("/v2/users/me"),
                Some(&a.access),
                None,
            )
            .await
            .status,
        );
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        send(
            &c,
            Method::GET,
            &gw.url("/v2/users/me"),
            Some(&b.access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_business_flow_quota_holds_per_user() {
    let shop = Shop::with(&[Vuln::BusinessFlow]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "quotas:\n  - { match: \"POST /v2/promo/redeem\", key: user, limit: 3/day }\n",
    )
    .await;
    let c = client();
    let redeem = |base: String, token: String| {
        let c = c.clone();
        async move {
            let mut outcomes = Vec::new();
            for _ in 0..5 {
                let r = send(
                    &c,
                    Method::POST,
                    &format!("{base}/v2/promo/redeem"),
                    Some(&token),
                    Some(serde_json::json!({ "code": "WELCOME10" })),
                )
                .await;
                outcomes.push((
                    r.status,
                    r.header("retry-after").map(str::to_owned),
                    r.header("ratelimit").map(str::to_owned),
                ));
            }
            outcomes
        }
    };
    let a = register(&shop, &c, "alice").await;
    let direct = redeem(shop.base.clone(), a.access.clone()).await;
    assert!(
        direct.iter().all(|(s, _, _)| *s == StatusCode::OK),
        "the shop credits every redemption: {direct:?}"
    );
    let b = register(&shop, &c, "bob").await;
    let via = redeem(gw.base.clone(), b.access.clone()).await;
    let ok = via.iter().filter(|(s, _, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 3, "{via:?}");
    // What is left of the quota travels with every counted answer.
    let left: Vec<_> = via[..3].iter().map(|(_, _, l)| l.as_deref()).collect();
    assert_eq!(
        left,
        [Some("\"q0\";r=2"), Some("\"q0\";r=1"), Some("\"q0\";r=0")]
    );
    let (status, retry, _) = &via[3];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert!(
        retry
            .as_deref()
            .is_some_and(|r| r.parse::<u64>().unwrap() > 3600),
        "{retry:?}"
    );
    let balance = send(
        &c,
        Method::GET,
        &gw.url("/v2/users/me"),
        Some(&b.access),
        None,
    )
    .await
    .json()["balance_cents"]
        .as_i64();
    assert_eq!(balance, Some(3000));
    // Another user has a quota of their own.
    let d = register(&shop, &c, "dora").await;
    assert_eq!(
        redeem(gw.base.clone(), d.access.clone()).await[0].0,
        StatusCode::OK
    );
}

/// An upstream that takes 300 ms per answer, so requests overlap.
async fn slow_upstream() -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/api/report",
        axum::routing::get(|| async {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            "done"
        }),
    );
    serve_router(app).await
}

#[tokio::test]
async fn concurrency_is_capped_per_key_and_places_come_back() {
    let up = slow_upstream().await;
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [GET /api/report]\nstate: {{ backend: memory }}\nconcurrency_limits:\n  - {{ match: GET /api/report, key: \"header:x-api-key\", max: 2 }}\n"
    ))
    .await;
    let c = client();
    let fire = |key: &'static str, n: usize| {
        let (c, url) = (c.clone(), gw.url("/api/report"));
        async move {
            let mut tasks = Vec::new();
            for _ in 0..n {
                let (c, url) = (c.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let r = c.get(url).header("x-api-key", key).send().await.unwrap();
                    (r.status(), r.headers().get("retry-after").cloned())
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        }
    };
    let (one, other) = tokio::join!(fire("k1", 5), fire("k2", 2));
    let ok = one.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 2, "two at once for one key: {one:?}");
    assert!(
        one.iter()
            .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
            .all(|(_, r)| r.is_some())
    );
    assert!(
        other.iter().all(|(s, _)| *s == StatusCode::OK),
        "another key has its own places"
    );
    // Finished requests give their places back.
    let again = fire("k1", 2).await;
    assert!(again.iter().all(|(s, _)| *s == StatusCode::OK), "{again:?}");
}

#[tokio::test]
async fn a_burst_far_above_a_users_own_pace_is_flagged_and_held() {
    let shop = Shop::with(&[Vuln::BusinessFlow]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "admin: { listen: 127.0.0.1:0 }\nquotas:\n  - { match: \"POST /v2/promo/redeem\", key: user, limit: 1000/day, bursts: { window: 1m, factor: 4, min: 5, block: true } }\n",
    )
    .await;
    let c = client();
    let u = register(&shop, &c, "hoarder").await;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            send(
                &c,
                Method::POST,
                &gw.url("/v2/promo/redeem"),
                Some(&u.access),
                Some(serde_json::json!({ "code": "WELCOME10" })),
            )
            .await
            .status,
        );
    }
    assert_eq!(&statuses[..5], &[StatusCode::OK; 5], "{statuses:?}");
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let admin = gw.admin.clone().unwrap();
    let m = send(&c, Method::GET, &format!("{admin}/metrics"), None, None)
        .await
        .text;
    assert!(
        m.contains("portcullis_bursts_flagged_total{rule=\"q0\"} 1"),
        "flagged once: {m}"
    );
    assert!(m.contains("decision=\"burst_detected\""), "{m}");
}

#[tokio::test]
async fn a_limit_keyed_on_the_account_holds_against_rotating_addresses() {
    let shop = Shop::with(&[Vuln::LoginNoLimit]).await;
    let gw = Gw::in_front_of(
        &shop,
        "state: { backend: memory }\nrate_limits:\n  - { match: \"POST /v2/auth/login\", key: \"body:/email\", rate: 5/hour, burst: 5 }\n  - { match: \"POST /v2/auth/login\", key: \"ip+body:/email\", rate: 3/hour, burst: 3 }\n",
    )
    .await;
    let victim = register(&shop, &client(), "victim").await;
    let attempt = |base: String, ip: IpAddr, email: String| async move {
        send(
            &client_from(ip),
            Method::POST,
            &format!("{base}/v2/auth/login"),
            None,
            Some(serde_json::json!({ "email": email, "password": "wrong-password-guess" })),
        )
        .await
        .status
    };
    // Directly, 30 guesses from 30 addresses all reach the password check.
    let mut direct = Vec::new();
    for i in 0..30u8 {
        direct.push(
            attempt(
                shop.base.clone(),
                IpAddr::V4(Ipv4Addr::new(127, 0, 2, i + 1)),
                victim.email.clone(),
            )
            .await,
        );
    }
    assert!(
        direct.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{direct:?}"
    );
    // Through the gateway the account's budget is 5, whatever the address; the spelling of
    // the account does not make a new key.
    let mut via = Vec::new();
    for i in 0..30u8 {
        // (Surrounding spaces would not pass the description's `format: email`.)
        let email = if i % 2 == 0 {
            victim.email.to_uppercase()
        } else {
            let mut e = victim.email.clone();
            e[..1].make_ascii_uppercase();
            e
        };
        via.push(
            attempt(
                gw.base.clone(),
                IpAddr::V4(Ipv4Addr::new(127, 0, 3, i + 1)),
                email,
            )
            .await,
        );
    }
    let tried = via
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    assert_eq!(tried, 5, "{via:?}");
    // The pair rule: one address gets 3 tries at another account, then waits.
    let other = register(&shop, &client(), "other").await;
    let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 4, 1));
    let mut pair = Vec::new();
    for _ in 0..5 {
        pair.push(attempt(gw.base.clone(), ip, other.email.clone()).await);
    }
    assert_eq!(
        pair,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

#[tokio::test]
async fn parallel_requests_cannot_race_past_a_quota() {
    let shop = Shop::with(&[Vuln::BusinessFlow]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "quotas:\n  - { match: \"POST /v2/promo/redeem\", key: user, limit: 3/day }\n",
    )
    .await;
    let c = client();
    let u = register(&shop, &c, "racer").await;
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let (c, url, token) = (c.clone(), gw.url("/v2/promo/redeem"), u.access.clone());
        tasks.push(tokio::spawn(async move {
            send(
                &c,
                Method::POST,
                &url,
                Some(&token),
                Some(serde_json::json!({ "code": "WELCOME10" })),
            )
            .await
            .status
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 3, "exactly the quota, however many race");
    // A failed attempt on a success-counted quota gives its use back.
    let v = register(&shop, &c, "unlucky").await;
    let bad = send(
        &c,
        Method::POST,
        &gw.url("/v2/promo/redeem"),
        Some(&v.access),
        Some(serde_json::json!({ "code": "NOSUCHCODE" })),
    )
    .await;
    assert!(bad.status.is_client_error(), "{}", bad.text);
    for _ in 0..3 {
        let r = send(
            &c,
            Method::POST,
            &gw.url("/v2/promo/redeem"),
            Some(&v.access),
            Some(serde_json::json!({ "code": "WELCOME10" })),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
}

/// A gateway behind a trusted proxy (127.0.0.1) allowing one request a minute per address.
async fn one_per_minute_behind_a_proxy() -> (Recorder, Gw) {
    let up = Recorder::start().await;
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\ntrusted_proxies: [127.0.0.1/32]\nstate: {{ backend: memory }}\nrate_limits: [{{ match: GET /api/items, key: ip, rate: 1/minute, burst: 1 }}]\n",
        up.addr
    ))
    .await;
    (up, gw)
}

/// An IPv6 client is counted by its /64, the block one subscriber is given: rotating through
/// its addresses (the address the trusted proxy reports) does not give fresh budgets, while
/// another /64 has its own.
#[tokio::test]
async fn ipv6_clients_are_counted_by_their_64() {
    let (_up, gw) = one_per_minute_behind_a_proxy().await;
    let c = client();
    let from = |addr: &'static str| {
        c.get(gw.url("/api/items"))
            .header("x-forwarded-for", addr)
            .send()
    };
    assert_eq!(
        from("2001:db8:1:2::1").await.unwrap().status(),
        StatusCode::OK
    );
    for rotated in ["2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
        assert_eq!(
            from(rotated).await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "{rotated}"
        );
    }
    assert_eq!(
        from("2001:db8:1:3::1").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(from("203.0.113.5").await.unwrap().status(), StatusCode::OK);
}

/// A client behind a trusted proxy cannot leave its own budget by writing junk before the
/// address the proxy appends (`X-Forwarded-For: junk, <its address>`): the chain is read from
/// the right, and the junk is never reached. It used to make the client count as the proxy.
#[tokio::test]
async fn junk_before_the_appended_address_does_not_change_the_client() {
    let (_up, gw) = one_per_minute_behind_a_proxy().await;
    let c = client();
    let chain = |xff: &'static str| {
        c.get(gw.url("/api/items"))
            .header("x-forwarded-for", xff)
            .send()
    };
    assert_eq!(
        chain("203.0.113.66").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        chain("203.0.113.66").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        chain("not-an-address, 203.0.113.66")
            .await
            .unwrap()
            .status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the junk gave the client a fresh budget"
    );
}
