//! Authorization at the gateway (API1, API5): the shop with `bola`, `bfla` and `legacy-v1` on,
//! its ground-truth exploits replayed through the gateway — all refused — while the owner and
//! the administrator keep working.

#![allow(clippy::unwrap_used)]

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::json;
use portcullis_test_support::*;

const AUTHZ: &str = "authorization:
  roles:
    - { match: /v2/admin/**, roles: [admin] }
  owners:
    - { route: \"GET /v2/orders/{order_id}\", response: /user_id }
    - { route: \"PATCH /v2/orders/{order_id}\", lookup: \"GET /v2/orders/{order_id}\", response: /user_id }
    - { route: \"DELETE /v2/orders/{order_id}\", lookup: \"GET /v2/orders/{order_id}\", response: /user_id }
    - { route: \"GET /v1/orders/{order_id}\", response: /user_id }
";

async fn gateway(shop: &Shop) -> Gw {
    Gw::verifying_shop_tokens(shop, "", AUTHZ).await
}

#[tokio::test]
async fn bola_reads_writes_and_deletes_are_refused_owners_still_work() {
    let shop = Shop::with(&[Vuln::Bola, Vuln::LegacyV1]).await;
    let gw = gateway(&shop).await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let order = send(&c, Method::POST, &gw.url("/v2/orders"), Some(&a.access), Some(json!({ "product_id": "prod_K3y8Qm2LpX", "quantity": 1, "shipping_address": "1 Castle Road" }))).await;
    assert_eq!(order.status, StatusCode::CREATED, "{}", order.text);
    let id = order.json()["id"].as_str().unwrap().to_owned();
    let v2 = |base: &str| format!("{base}/v2/orders/{id}");

    // Straight at the shop, B gets A's order.
    assert_eq!(
        send(&c, Method::GET, &v2(&shop.base), Some(&b.access), None)
            .await
            .status,
        StatusCode::OK
    );
    // Through the gateway: read, write, delete, all 404 — as if the order did not exist.
    let read = send(&c, Method::GET, &v2(&gw.base), Some(&b.access), None).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND);
    assert!(
        !read.text.contains(&a.id),
        "nothing of A's order leaks: {}",
        read.text
    );
    let write = send(
        &c,
        Method::PATCH,
        &v2(&gw.base),
        Some(&b.access),
        Some(json!({ "shipping_address": "Attacker Lane 1" })),
    )
    .await;
    assert_eq!(write.status, StatusCode::NOT_FOUND);
    let delete = send(&c, Method::DELETE, &v2(&gw.base), Some(&b.access), None).await;
    assert_eq!(delete.status, StatusCode::NOT_FOUND);
    // A's order is untouched, and A still manages it through the gateway.
    let mine = send(&c, Method::GET, &v2(&gw.base), Some(&a.access), None).await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["shipping_address"], "1 Castle Road");
    let patched = send(
        &c,
        Method::PATCH,
        &v2(&gw.base),
        Some(&a.access),
        Some(json!({ "quantity": 2 })),
    )
    .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text);

    // The forgotten v1: anonymous and B straight at the shop, refused at the gateway.
    let v1 = |base: &str| format!("{base}/v1/orders/{id}");
    assert_eq!(
        send(&c, Method::GET, &v1(&shop.base), None, None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(&c, Method::GET, &v1(&gw.base), None, None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&c, Method::GET, &v1(&gw.base), Some(&b.access), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&c, Method::GET, &v1(&gw.base), Some(&a.access), None)
            .await
            .status,
        StatusCode::OK
    );

    assert_eq!(
        send(&c, Method::DELETE, &v2(&gw.base), Some(&a.access), None)
            .await
            .status,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn admin_functions_need_the_admin_role_whatever_the_method() {
    let shop = Shop::with(&[Vuln::Bfla]).await;
    let gw = gateway(&shop).await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let adm = admin(&shop, &c).await;
    let users = "/v2/admin/users";
    let delete_a = format!("/v2/admin/users/{}", a.id);
    assert_eq!(
        send(&c, Method::GET, &shop.url(users), Some(&b.access), None)
            .await
            .status,
        StatusCode::OK,
        "the shop lets a customer in"
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url(users), Some(&b.access), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    // Method switching: allowed nothing on the list, nothing on the item either.
    assert_eq!(
        send(
            &c,
            Method::DELETE,
            &gw.url(&delete_a),
            Some(&b.access),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &c,
            Method::GET,
            &gw.url("/v2/users/me"),
            Some(&a.access),
            None
        )
        .await
        .status,
        StatusCode::OK,
        "A still exists"
    );
    // The administrator is let through.
    assert_eq!(
        send(&c, Method::GET, &gw.url(users), Some(&adm.access), None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        send(
            &c,
            Method::DELETE,
            &gw.url(&delete_a),
            Some(&adm.access),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
}

#[test]
fn authorization_policies_are_checked_at_load() {
    let base = shop_policy("127.0.0.1:1".parse().unwrap(), "");
    let with_auth = format!(
        "{base}auth:\n  jwt:\n    keys: [{{ alg: HS256, secret: k7Qw9zR2xV5mN8pL3tY6uB1cF4hJ0dS2gA }}]\n"
    );
    let cases = [
        (
            format!("{base}authorization:\n  roles: [{{ match: /v2/admin/**, roles: [admin] }}]\n"),
            "authorization needs `auth`",
        ),
        (
            format!("{with_auth}authorization:\n  roles: [{{ match: /v9/**, roles: [admin] }}]\n"),
            "matches no declared route",
        ),
        (
            format!(
                "{with_auth}authorization:\n  owners: [{{ route: \"GET /v2/orders/{{order_id}}\", param: user_id }}]\n"
            ),
            "has no parameter `user_id`",
        ),
        (
            format!(
                "{with_auth}authorization:\n  owners: [{{ route: \"PATCH /v2/orders/{{order_id}}\", lookup: \"DELETE /v2/orders/{{order_id}}\", response: /user_id }}]\n"
            ),
            "the lookup must be a GET route",
        ),
    ];
    for (text, msg) in cases {
        let p = portcullis_policy::load_str(std::path::Path::new("p.yaml"), &text).unwrap_err();
        assert!(p.to_string().contains(msg), "{msg}: {p}");
    }
}

#[tokio::test]
async fn roles_written_in_the_description_are_enforced_without_a_policy_rule() {
    // No `authorization` section: the shop's description says `x-portcullis-roles: [admin]`
    // on its admin operations, and that is enough.
    let shop = Shop::with(&[Vuln::Bfla]).await;
    let gw = Gw::verifying_shop_tokens(&shop, "", "").await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    let adm = admin(&shop, &c).await;
    let users = "/v2/admin/users";
    assert_eq!(
        send(&c, Method::GET, &shop.url(users), Some(&b.access), None)
            .await
            .status,
        StatusCode::OK,
        "the shop lets a customer in"
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url(users), Some(&b.access), None)
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url(users), Some(&adm.access), None)
            .await
            .status,
        StatusCode::OK
    );
    // Operations the description marks public stay public.
    assert_eq!(
        send(&c, Method::GET, &gw.url("/v2/products?limit=1"), None, None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_tag_selects_the_operations_it_tags() {
    let shop = Shop::secure().await;
    let spec = std::fs::read_to_string(shop_spec()).unwrap();
    let tags: Vec<&str> = spec
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tags: ["))
        .collect();
    assert!(!tags.is_empty(), "the shop's operations are tagged");
    // Every operation tagged `orders` needs the (made-up) `auditor` role.
    let gw = Gw::verifying_shop_tokens(
        &shop,
        "",
        "authorization:\n  roles:\n    - { match: \"tag:orders\", roles: [auditor] }\n",
    )
    .await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    assert_eq!(
        send(
            &c,
            Method::GET,
            &gw.url("/v2/orders"),
            Some(&a.access),
            None
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(
            &c,
            Method::GET,
            &gw.url("/v2/users/me"),
            Some(&a.access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
}
