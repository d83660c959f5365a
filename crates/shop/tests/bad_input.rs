//! Hostile and broken input to the secure shop: always a 4xx problem+json with a request id,
//! never a 500, never the offending value echoed back.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

fn assert_problem(r: &Reply, status: StatusCode, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.text);
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let body = r.json();
    assert_eq!(
        body["status"].as_u64(),
        Some(u64::from(status.as_u16())),
        "{what}"
    );
    let id = body["request_id"].as_str().unwrap();
    assert_eq!(
        r.header("x-request-id"),
        Some(id),
        "{what}: the body and header ids agree"
    );
    for leak in ["backtrace", "exception", "location", "source_file"] {
        assert!(body.get(leak).is_none(), "{what}: {leak} leaked");
    }
}

async fn raw(
    c: &reqwest::Client,
    method: Method,
    url: &str,
    token: Option<&str>,
    ct: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Reply {
    let mut req = c.request(method, url).body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    let resp = req.send().await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    Reply {
        status,
        headers,
        text: resp.text().await.unwrap(),
    }
}

#[tokio::test]
async fn malformed_bodies_get_problems() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let orders = shop.url("/v2/orders");
    let json_ct = Some("application/json");
    let tok = Some(a.access.as_str());

    let cases: Vec<(&str, Option<&str>, Vec<u8>, StatusCode)> = vec![
        ("truncated JSON", json_ct, b"{\"product_id\": ".to_vec(), StatusCode::BAD_REQUEST),
        ("not JSON", json_ct, b"product_id=prod_K3y8Qm2LpX".to_vec(), StatusCode::BAD_REQUEST),
        ("invalid UTF-8", json_ct, vec![b'{', b'"', 0xff, 0xfe, b'"', b'}'], StatusCode::BAD_REQUEST),
        ("trailing garbage", json_ct, b"{\"product_id\":\"prod_K3y8Qm2LpX\",\"quantity\":1,\"shipping_address\":\"x\"} {}".to_vec(), StatusCode::BAD_REQUEST),
        ("empty body", json_ct, Vec::new(), StatusCode::BAD_REQUEST),
        ("no content type", None, b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("text/plain", Some("text/plain"), b"{}".to_vec(), StatusCode::UNSUPPORTED_MEDIA_TYPE),
        ("wrong type", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":"DROP TABLE users","shipping_address":"x"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("missing field", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("unknown field", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":1,"shipping_address":"x","user_id":"usr_x"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("array body", json_ct, b"[1,2,3]".to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("quantity 0", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":0,"shipping_address":"x"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("quantity huge", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":99999999999999999999,"shipping_address":"x"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("markup", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":1,"shipping_address":"<script>alert(1)</script>"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("long discount", json_ct, br#"{"product_id":"prod_K3y8Qm2LpX","quantity":1,"shipping_address":"x","discount_code":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("bad product id", json_ct, br#"{"product_id":"../../etc/passwd","quantity":1,"shipping_address":"x"}"#.to_vec(), StatusCode::UNPROCESSABLE_ENTITY),
        ("oversized", json_ct, format!("{{\"shipping_address\":\"{}\"}}", "A".repeat(200_000)).into_bytes(), StatusCode::PAYLOAD_TOO_LARGE),
    ];
    for (what, ct, body, status) in cases {
        let r = raw(&c, Method::POST, &orders, tok, ct, body).await;
        assert_problem(&r, status, what);
        assert!(
            !r.text.contains("DROP TABLE") && !r.text.contains("<script>"),
            "{what}: value echoed: {}",
            r.text
        );
    }
}

#[tokio::test]
async fn bad_tokens_get_401_with_www_authenticate() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let mut parts: Vec<String> = a.access.split('.').map(String::from).collect();
    parts[2] = parts[2].chars().rev().collect();
    let tampered = parts.join(".");
    let huge = format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c");
    let other_key = sign_hs256(b"some other key entirely, 32 byte", &claims_of(&a.access));
    let url = shop.url("/v2/users/me");
    for (what, header) in [
        ("no header", None),
        ("empty bearer", Some("Bearer ".to_owned())),
        ("garbage", Some("Bearer garbage".to_owned())),
        ("two segments", Some("Bearer abc.def".to_owned())),
        ("bad base64", Some("Bearer !!!.@@@.###".to_owned())),
        ("tampered signature", Some(format!("Bearer {tampered}"))),
        ("other key", Some(format!("Bearer {other_key}"))),
        ("oversized", Some(format!("Bearer {huge}"))),
        ("basic scheme", Some("Basic YWRtaW46YWRtaW4=".to_owned())),
    ] {
        let mut req = c.get(&url);
        if let Some(h) = header {
            req = req.header("authorization", h);
        }
        let resp = req.send().await.unwrap();
        let (status, headers) = (resp.status(), resp.headers().clone());
        let r = Reply {
            status,
            headers,
            text: resp.text().await.unwrap(),
        };
        assert_problem(&r, StatusCode::UNAUTHORIZED, what);
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{what}");
    }
}

#[tokio::test]
async fn bad_paths_queries_and_methods() {
    let shop = Shop::secure().await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let tok = Some(a.access.as_str());
    for (what, method, path, status) in [
        (
            "unknown route",
            Method::GET,
            "/v2/secret-admin",
            StatusCode::NOT_FOUND,
        ),
        (
            "traversal",
            Method::GET,
            "/v2/../etc/passwd",
            StatusCode::NOT_FOUND,
        ),
        (
            "wrong method",
            Method::PUT,
            "/v2/products",
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            "bad product id",
            Method::GET,
            "/v2/products/1%20OR%201=1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown product",
            Method::GET,
            "/v2/products/prod_ZZZZZZZZZZ",
            StatusCode::NOT_FOUND,
        ),
        (
            "unpublished product",
            Method::GET,
            "/v2/products/prod_S0cr3tPr0t0",
            StatusCode::NOT_FOUND,
        ),
        (
            "bad order id",
            Method::GET,
            "/v2/orders/1",
            StatusCode::NOT_FOUND,
        ),
        (
            "limit not a number",
            Method::GET,
            "/v2/products?limit=abc",
            StatusCode::BAD_REQUEST,
        ),
        (
            "negative limit",
            Method::GET,
            "/v2/products?limit=-1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "limit 0",
            Method::GET,
            "/v2/products?limit=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown query",
            Method::GET,
            "/v2/products?debug=true",
            StatusCode::BAD_REQUEST,
        ),
        (
            "missing q",
            Method::GET,
            "/v2/products/search",
            StatusCode::BAD_REQUEST,
        ),
        (
            "long q",
            Method::GET,
            &format!("/v2/products/search?q={}", "a".repeat(500)),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let r = send(&c, method, &shop.url(path), tok, None).await;
        assert_problem(&r, status, what);
    }
}

#[tokio::test]
async fn register_rejects_weak_and_malformed_credentials() {
    let shop = Shop::secure().await;
    let c = client();
    let url = shop.url("/v2/auth/register");
    for (what, body) in [
        (
            "short password",
            json!({ "email": "a@example.com", "password": "short", "name": "A" }),
        ),
        (
            "common password",
            json!({ "email": "a@example.com", "password": "password123", "name": "A" }),
        ),
        (
            "bad email",
            json!({ "email": "not-an-email", "password": PASSWORD, "name": "A" }),
        ),
        (
            "markup name",
            json!({ "email": "a@example.com", "password": PASSWORD, "name": "<img src=x>" }),
        ),
        (
            "role",
            json!({ "email": "a@example.com", "password": PASSWORD, "name": "A", "role": "admin" }),
        ),
    ] {
        let r = send(&c, Method::POST, &url, None, Some(body)).await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, what);
        assert!(
            !r.text.contains("short") && !r.text.contains("password123"),
            "{what}: password echoed"
        );
    }
    let ok = json!({ "email": "dup@example.com", "password": PASSWORD, "name": "D" });
    assert_eq!(
        send(&c, Method::POST, &url, None, Some(ok.clone()))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_problem(
        &send(&c, Method::POST, &url, None, Some(ok)).await,
        StatusCode::CONFLICT,
        "duplicate",
    );
}

#[tokio::test]
async fn problems_carry_the_callers_request_id_only_when_it_is_plain() {
    let shop = Shop::secure().await;
    let c = client();
    let r = c
        .get(shop.url("/nope"))
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc_123");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-abc_123");
    let r = c
        .get(shop.url("/nope"))
        .header("x-request-id", "<script>\"x\"</script>")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        id.chars().all(|c| c.is_ascii_hexdigit()),
        "a hostile id is replaced: {id}"
    );
}
