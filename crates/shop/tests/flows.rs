//! The legitimate flows of the secure shop: token rotation, reuse detection, logout, orders,
//! promo limits. The defenses must not get in the way of the honest user.

#![allow(clippy::unwrap_used)]

use portcullis_shop::{ShopConfig, VulnSet};
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::json;
use portcullis_test_support::*;

#[tokio::test]
async fn login_issues_short_lived_typed_tokens() {
    let shop = Shop::secure().await;
    let a = register(&shop, &client(), "alice").await;
    let (at, rt) = (claims_of(&a.access), claims_of(&a.refresh));
    for claim in ["sub", "iat", "exp", "jti"] {
        assert!(at.get(claim).is_some(), "access token lacks {claim}");
    }
    assert_eq!(
        (at["type"].as_str(), rt["type"].as_str()),
        (Some("access"), Some("refresh"))
    );
    assert_eq!(
        at["exp"].as_i64().unwrap() - at["iat"].as_i64().unwrap(),
        15 * 60
    );
    assert_ne!(at["jti"], rt["jti"]);
}

#[tokio::test]
async fn refresh_rotates_and_reuse_revokes_the_family() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let url = shop.url("/v2/auth/refresh");
    let first = send(
        &c,
        Method::POST,
        &url,
        None,
        Some(json!({ "refresh_token": a.refresh })),
    )
    .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let rotated = first.json();
    let new_access = rotated["access_token"].as_str().unwrap();
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(new_access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );

    // The old refresh token again: theft. Everything in the family dies.
    let replay = send(
        &c,
        Method::POST,
        &url,
        None,
        Some(json!({ "refresh_token": a.refresh })),
    )
    .await;
    assert_eq!(replay.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(new_access),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let next = send(
        &c,
        Method::POST,
        &url,
        None,
        Some(json!({ "refresh_token": rotated["refresh_token"] })),
    )
    .await;
    assert_eq!(next.status, StatusCode::UNAUTHORIZED);
    // An access token is no refresh token.
    let b = register(&shop, &c, "bob").await;
    let wrong = send(
        &c,
        Method::POST,
        &url,
        None,
        Some(json!({ "refresh_token": b.access })),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    // Logging in again starts a new family.
    let again = login(&shop, &c, &a.email, PASSWORD).await;
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(&again.access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn logout_revokes_the_session() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let other = login(&shop, &c, &a.email, PASSWORD).await;
    let out = send(
        &c,
        Method::POST,
        &shop.url("/v2/auth/logout"),
        Some(&a.access),
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(&a.access),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let refresh = send(
        &c,
        Method::POST,
        &shop.url("/v2/auth/refresh"),
        None,
        Some(json!({ "refresh_token": a.refresh })),
    )
    .await;
    assert_eq!(refresh.status, StatusCode::UNAUTHORIZED);
    // Another session of the same user is untouched.
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(&other.access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn owner_manages_own_orders() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let created = send(
        &c,
        Method::POST,
        &shop.url("/v2/orders"),
        Some(&a.access),
        Some(json!({ "product_id": "prod_T7vB9nR4sW", "quantity": 2, "discount_code": "SAVE10", "shipping_address": "1 Castle Road" })),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let order = created.json();
    assert_eq!(order["total_cents"], 5900 * 2 * 90 / 100);
    let id = order["id"].as_str().unwrap();
    assert!(
        id.starts_with("ord_") && id.len() == 24,
        "unguessable id: {id}"
    );
    assert_eq!(
        created.header("location"),
        Some(format!("/v2/orders/{id}").as_str())
    );
    let url = shop.url(&format!("/v2/orders/{id}"));
    let patched = send(
        &c,
        Method::PATCH,
        &url,
        Some(&a.access),
        Some(json!({ "quantity": 3 })),
    )
    .await;
    assert_eq!(patched.json()["total_cents"], 5900 * 3 * 90 / 100);
    let list = send(
        &c,
        Method::GET,
        &shop.url("/v2/orders"),
        Some(&a.access),
        None,
    )
    .await
    .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        send(&c, Method::DELETE, &url, Some(&a.access), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        send(&c, Method::GET, &url, Some(&a.access), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn promo_codes_once_each_and_a_daily_cap() {
    let config = ShopConfig {
        promo_daily_limit: 1,
        ..test_config(VulnSet::secure())
    };
    let shop = Shop::start(config).await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let redeem = |code: &'static str| {
        let (c, url, tok) = (c.clone(), shop.url("/v2/promo/redeem"), a.access.clone());
        async move {
            send(
                &c,
                Method::POST,
                &url,
                Some(&tok),
                Some(json!({ "code": code })),
            )
            .await
        }
    };
    assert_eq!(redeem("WELCOME10").await.status, StatusCode::OK);
    let second = redeem("SPRING5").await;
    assert_eq!(
        second.status,
        StatusCode::TOO_MANY_REQUESTS,
        "daily cap of 1"
    );
    assert!(second.header("retry-after").is_some());
    assert_eq!(
        redeem("NOPE").await.status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn deleted_users_tokens_stop_working() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let adm = admin(&shop, &c).await;
    let del = send(
        &c,
        Method::DELETE,
        &shop.url(&format!("/v2/admin/users/{}", a.id)),
        Some(&adm.access),
        None,
    )
    .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/users/me"),
            Some(&a.access),
            None
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    let self_delete = send(
        &c,
        Method::DELETE,
        &shop.url(&format!("/v2/admin/users/{}", adm.id)),
        Some(&adm.access),
        None,
    )
    .await;
    assert_eq!(self_delete.status, StatusCode::CONFLICT);
}
