//! The shop and its OpenAPI description agree: the served document is the file in
//! `examples/shop/openapi.yaml`, every operation in it is answered, and every route the server
//! answers is in it.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

fn spec_from_disk() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/shop/openapi.yaml"
    );
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ] {
            if item.get(method).is_some() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

#[tokio::test]
async fn served_description_is_the_file_on_disk() {
    let shop = Shop::secure().await;
    let r = send(
        &client(),
        Method::GET,
        &shop.url("/openapi.json"),
        None,
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let served = r.json();
    assert_eq!(served, spec_from_disk());
    assert_eq!(served["openapi"].as_str().unwrap(), "3.1.0");
}

#[test]
fn route_table_and_description_list_the_same_operations() {
    let table: BTreeSet<_> = portcullis_shop::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    let spec = operations(&spec_from_disk());
    let missing: Vec<_> = table.difference(&spec).collect();
    let extra: Vec<_> = spec.difference(&table).collect();
    assert!(
        missing.is_empty(),
        "answered but not described: {missing:?}"
    );
    assert!(extra.is_empty(), "described but not answered: {extra:?}");
}

/// Every described operation reaches a handler: whatever the status, it is not the router's
/// 404 or 405.
#[tokio::test]
async fn every_described_operation_is_answered() {
    let shop = Shop::secure().await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let order = send(
        &c,
        Method::POST,
        &shop.url("/v2/orders"),
        Some(&a.access),
        Some(json!({ "product_id": "prod_K3y8Qm2LpX", "quantity": 1, "shipping_address": "1 Castle Road" })),
    )
    .await
    .json();
    let mut ops: Vec<_> = operations(&spec_from_disk()).into_iter().collect();
    // Destructive calls last, so the others still find their objects.
    ops.sort_by_key(|(m, p)| {
        (
            m == "DELETE" || p.ends_with("/logout"),
            m.clone(),
            p.clone(),
        )
    });
    for (method, template) in ops {
        let path = template
            .replace("{product_id}", "prod_K3y8Qm2LpX")
            .replace("{order_id}", order["id"].as_str().unwrap())
            .replace("{user_id}", &b.id);
        let query = if path.ends_with("/search") {
            "?q=mug"
        } else {
            ""
        };
        let body = (method == "POST" || method == "PATCH").then(|| json!({}));
        let r = send(
            &c,
            method.parse().unwrap(),
            &shop.url(&format!("{path}{query}")),
            Some(&a.access),
            body,
        )
        .await;
        assert_ne!(
            r.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {template}"
        );
        let answered =
            r.status != StatusCode::NOT_FOUND || r.json()["detail"] != "no such resource";
        assert!(
            answered,
            "{method} {template} fell through to the router: {}",
            r.text
        );
        assert!(
            !r.status.is_server_error(),
            "{method} {template}: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn undescribed_routes_are_not_answered() {
    let shop = Shop::secure().await;
    let c = client();
    for (method, path, status) in [
        (Method::GET, "/v2/debug", StatusCode::NOT_FOUND),
        (Method::GET, "/v1/users", StatusCode::NOT_FOUND),
        (Method::GET, "/v3/orders", StatusCode::NOT_FOUND),
        (Method::GET, "/.env", StatusCode::NOT_FOUND),
        (
            Method::GET,
            "/v2/auth/login",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (Method::PUT, "/v2/users/me", StatusCode::METHOD_NOT_ALLOWED),
        (
            Method::DELETE,
            "/v1/orders/ord_AAAAAAAAAAAA",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
    ] {
        let r = send(&c, method.clone(), &shop.url(path), None, None).await;
        assert_eq!(r.status, status, "{method} {path}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
}
