//! The shop's token weaknesses, attacked straight and through the gateway: the attack works
//! against the shop and fails at the gateway, while the honest user's tokens still work.

#![allow(clippy::unwrap_used)]

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

/// A gateway in front of `shop` verifying the shop's own tokens with `secret`.
async fn gateway(shop: &Shop, secret: &[u8]) -> Gw {
    let dir = std::env::temp_dir().join(format!(
        "portcullis-shop-auth-{}-{}",
        std::process::id(),
        shop.addr.port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("jwt.key");
    std::fs::write(&key, secret).unwrap();
    let extra = format!(
        "state: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret_file: {} }}]\n    require: [exp, iat, sub, jti]\n    token_type: {{ claim: type, value: access }}\n  refresh: {{ route: POST /v2/auth/refresh, token_pointer: /refresh_token }}\n",
        key.display()
    );
    Gw::in_front_of(shop, &extra).await
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
    let gw = gateway(&shop, JWT_SECRET).await;
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
    let gw = gateway(&shop, JWT_SECRET).await;
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
    let gw = gateway(&shop, JWT_SECRET).await;
    assert_eq!(
        status(&c, gw.url("/v2/admin/users"), &forged).await,
        StatusCode::UNAUTHORIZED,
        "gateway"
    );
}
