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
    let limited = count(gw.base.clone(), 20).await;
    assert_eq!(limited.len(), 15, "five pass, the rest wait");
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
                outcomes.push((r.status, r.header("retry-after").map(str::to_owned)));
            }
            outcomes
        }
    };
    let a = register(&shop, &c, "alice").await;
    let direct = redeem(shop.base.clone(), a.access.clone()).await;
    assert!(
        direct.iter().all(|(s, _)| *s == StatusCode::OK),
        "the shop credits every redemption: {direct:?}"
    );
    let b = register(&shop, &c, "bob").await;
    let via = redeem(gw.base.clone(), b.access.clone()).await;
    let ok = via.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(ok, 3, "{via:?}");
    let (status, retry) = &via[3];
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
