//! The SSRF guard (API7): the shop with `ssrf` fetches whatever URL it is given, so a loopback
//! canary receives its request when attacked directly; through the gateway the same URLs (and
//! their disguises) are refused before forwarding, and the canary receives nothing. Names are
//! answered from the policy's host table, so no test does real DNS or connects anywhere but
//! loopback.

#![allow(clippy::unwrap_used)]

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;
use serde_json::json;

async fn set_avatar(base: &str, token: &str, url: &str) -> Reply {
    send(
        &client(),
        Method::POST,
        &format!("{base}/v2/users/me/avatar"),
        Some(token),
        Some(json!({ "url": url })),
    )
    .await
}

#[tokio::test]
async fn internal_urls_reach_the_canary_direct_and_never_through_the_gateway() {
    let shop = Shop::with(&[Vuln::Ssrf]).await;
    let canary = Canary::start().await;
    let port = canary.addr.port();
    // Schema validation off and http allowed: only the SSRF guard stands in the way.
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "validation: { requests: false }\nssrf:\n  schemes: [https, http]\n  from_openapi: false\n  hosts: { metadata.internal: [169.254.169.254], rebind.test: [93.184.215.14, 127.0.0.1] }\n  fields: [{ match: \"POST /v2/users/me/avatar\", pointer: /url }]\n",
    )
    .await;
    let u = register(&shop, &client(), "mallory").await;

    let direct = set_avatar(
        &shop.base,
        &u.access,
        &format!("http://127.0.0.1:{port}/latest/meta-data/"),
    )
    .await;
    assert!(direct.status.is_success(), "{}", direct.text);
    assert_eq!(canary.hits(), 1, "the shop fetched the internal URL");

    for url in [
        format!("http://127.0.0.1:{port}/latest/meta-data/"),
        format!("http://2130706433:{port}/"),
        format!("http://0x7f.1:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("http://127.0.0.1.:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://%31%32%37.0.0.1:{port}/"),
        format!("http://images.example@127.0.0.1:{port}/"),
        format!("http://127.0.0.1:{port}\\@images.example/"),
        "http://metadata.internal/latest/meta-data/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://rebind.test/".to_owned(),
        format!("gopher://127.0.0.1:{port}/"),
        "file:///etc/passwd".to_owned(),
    ] {
        let r = set_avatar(&gw.base, &u.access, &url).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {}",
            r.text
        );
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.starts_with("/url: "), "{detail}");
        assert!(
            !r.text.contains("127.0.0.1") && !r.text.contains("meta-data"),
            "no echo: {}",
            r.text
        );
    }
    // A body the guard cannot read is not forwarded either.
    let r = client()
        .post(gw.url("/v2/users/me/avatar"))
        .bearer_auth(&u.access)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("url=http://127.0.0.1:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        canary.hits(),
        1,
        "nothing reached the canary through the gateway"
    );
}

#[tokio::test]
async fn the_fields_the_description_marks_are_guarded_without_listing_them() {
    let shop = Shop::with(&[Vuln::Ssrf]).await;
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "admin: { listen: 127.0.0.1:0 }\nssrf:\n  hosts: { internal.test: [10.1.2.3], images.test: [93.184.215.14] }\n",
    )
    .await;
    let u = register(&shop, &client(), "mallory").await;
    // `format: uri` on AvatarRequest.url: guarded from the description alone.
    let r = set_avatar(&gw.base, &u.access, "https://internal.test/a.png").await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        r.json()["detail"],
        "/url: the host is or resolves to a non-public address"
    );
    let r = set_avatar(&gw.base, &u.access, "https://user:pw@images.test/a.png").await;
    assert_eq!(
        r.json()["detail"],
        "/url: credentials in a URL are not allowed"
    );
    let m = send(
        &client(),
        Method::GET,
        &format!("{}/metrics", gw.admin.clone().unwrap()),
        None,
        None,
    )
    .await
    .text;
    assert!(m.contains("decision=\"ssrf_blocked\"} 2"), "{m}");
}

/// With request validation off, the fields the description marks used to be forgotten too:
/// the guard found them through the validated schemas only, and the canary was hit.
#[tokio::test]
async fn the_described_fields_are_guarded_with_validation_off() {
    let shop = Shop::with(&[Vuln::Ssrf]).await;
    let canary = Canary::start().await;
    let port = canary.addr.port();
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "validation: { requests: false }\nssrf:\n  schemes: [https, http]\n",
    )
    .await;
    let u = register(&shop, &client(), "mallory").await;
    let r = set_avatar(&gw.base, &u.access, &format!("http://127.0.0.1:{port}/")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(
        canary.hits(),
        0,
        "the canary was reached through the gateway"
    );
}
