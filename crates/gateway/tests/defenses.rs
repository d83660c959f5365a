//! Each misconfiguration defense of the gateway core, shown against the shop with the matching
//! weakness on: the attack works straight at the shop and fails through the gateway, while the
//! legitimate request still works.

#![allow(clippy::unwrap_used)]

use portcullis_shop::Vuln;
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::json;
use portcullis_test_support::*;

fn origin_headers(r: &reqwest::Response) -> (Option<String>, Option<String>) {
    let get = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    (
        get("access-control-allow-origin"),
        get("access-control-allow-credentials"),
    )
}

const CORS: &str = "cors:\n  allow_origins: [https://shop.example]\n  allow_credentials: true\n";

#[tokio::test]
async fn cors_wildcard_is_closed() {
    let shop = Shop::with(&[Vuln::CorsWildcard]).await;
    let gw = Gw::in_front_of(&shop, CORS).await;
    let c = client();
    for (base, attack_works) in [(shop.base.as_str(), true), (gw.base.as_str(), false)] {
        let evil = c
            .get(format!("{base}/v2/products"))
            .header("origin", "https://evil.example")
            .send()
            .await
            .unwrap();
        let (acao, acac) = origin_headers(&evil);
        assert_eq!(
            acao.as_deref() == Some("https://evil.example") && acac.as_deref() == Some("true"),
            attack_works,
            "{base}"
        );
        if !attack_works {
            assert_eq!(
                (acao, acac),
                (None, None),
                "a disallowed origin gets no CORS headers at all"
            );
        }
        let good = c
            .get(format!("{base}/v2/products"))
            .header("origin", "https://shop.example")
            .send()
            .await
            .unwrap();
        assert_eq!(
            origin_headers(&good).0.as_deref(),
            Some("https://shop.example")
        );
        assert!(
            good.headers().get_all("vary").iter().any(|v| v
                .to_str()
                .unwrap()
                .to_lowercase()
                .contains("origin"))
        );
        if !attack_works {
            // The shop's own `Vary: origin` and the gateway's, as one field naming it once.
            let vary: Vec<_> = good.headers().get_all("vary").iter().collect();
            assert_eq!(vary.len(), 1, "{vary:?}");
            let named = vary[0].to_str().unwrap().to_ascii_lowercase();
            assert_eq!(named.matches("origin").count(), 1, "{named}");
        }
    }
    // Preflights: exact methods, headers and max-age for the allowed origin, nothing for others.
    let pre = |origin: &'static str| {
        c.request(Method::OPTIONS, gw.url("/v2/orders"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let ok = pre("https://shop.example").await.unwrap();
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://shop.example"
    );
    assert!(
        ok.headers()["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert_eq!(ok.headers()["access-control-max-age"], "600");
    let allowed_headers = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed_headers.contains("authorization") && allowed_headers.contains("content-type"),
        "{allowed_headers}"
    );
    // A header the policy does not allow is not granted.
    let unlisted = c
        .request(Method::OPTIONS, gw.url("/v2/orders"))
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "x-internal-debug")
        .send()
        .await
        .unwrap();
    assert!(
        unlisted
            .headers()
            .get("access-control-allow-headers")
            .is_none_or(|v| !v
                .to_str()
                .unwrap()
                .to_ascii_lowercase()
                .contains("x-internal-debug")),
        "{:?}",
        unlisted.headers()
    );
    let bad = pre("https://evil.example").await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none());
    assert!(bad.headers().get("access-control-allow-methods").is_none());
}

#[tokio::test]
async fn security_headers_added_and_banners_removed() {
    let shop = Shop::with(&[Vuln::NoSecurityHeaders]).await;
    let gw = Gw::in_front_of(&shop, "security_headers:\n  routes:\n    - route: GET /openapi.json\n      set: { cache-control: \"public, max-age=300\" }\n").await;
    let c = client();
    let direct = send(&c, Method::GET, &shop.url("/v2/products"), None, None).await;
    assert!(
        direct.header("server").is_some_and(|s| s.contains("axum")),
        "the shop leaks its stack"
    );
    assert!(direct.header("x-content-type-options").is_none());
    assert!(direct.header("server-timing").is_some());
    assert!(direct.header("x-debug-token").is_some());
    for path in [
        "/v2/products",
        "/v2/users/me",
        "/no/such/route",
        "/v2/products/%2e%2e%2f",
    ] {
        let r = send(&c, Method::GET, &gw.url(path), None, None).await;
        assert_eq!(r.header("server"), None, "{path}");
        assert_eq!(r.header("x-powered-by"), None, "{path}");
        assert_eq!(r.header("server-timing"), None, "{path}");
        assert_eq!(r.header("x-debug-token"), None, "{path}");
        assert_eq!(
            r.header("x-content-type-options"),
            Some("nosniff"),
            "{path}"
        );
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{path}");
        assert_eq!(r.header("x-xss-protection"), Some("0"), "{path}");
        assert_eq!(r.header("referrer-policy"), Some("no-referrer"), "{path}");
        assert!(
            r.header("permissions-policy")
                .is_some_and(|v| v.contains("camera=()") && v.contains("geolocation=()")),
            "{path}"
        );
        // HSTS only where the gateway serves TLS (tls.rs): over plain HTTP it means nothing.
        assert_eq!(r.header("strict-transport-security"), None, "{path}");
        assert!(
            r.header("content-security-policy")
                .is_some_and(|v| v.contains("default-src 'none'")),
            "{path}"
        );
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}");
        assert!(r.header("x-request-id").is_some(), "{path}");
    }
    let spec = send(&c, Method::GET, &gw.url("/openapi.json"), None, None).await;
    assert_eq!(
        spec.header("cache-control"),
        Some("public, max-age=300"),
        "per-route override"
    );
    assert_eq!(spec.header("x-frame-options"), Some("DENY"));
}

#[tokio::test]
async fn verbose_errors_are_sanitised() {
    let shop = Shop::with(&[Vuln::VerboseErrors, Vuln::Sqli]).await;
    let gw = Gw::in_front_of(&shop, "").await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let malformed = |base: String| {
        let (c, tok) = (c.clone(), a.access.clone());
        async move {
            let r = c
                .post(format!("{base}/v2/orders"))
                .bearer_auth(tok)
                .header("content-type", "application/json")
                .body("{\"product_id\": ")
                .send()
                .await
                .unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, direct) = malformed(shop.base.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        direct.contains("backtrace") && direct.contains(".rs"),
        "the shop leaks: {direct}"
    );
    let (status, via) = malformed(gw.base.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "the status survives");
    for leak in ["backtrace", ".rs", "EOF while parsing", "exception"] {
        assert!(!via.contains(leak), "{leak} leaked through: {via}");
    }
    // A server error with SQL text in it: replaced whole.
    let q = "/v2/products/search?q=%27";
    let direct = send(&c, Method::GET, &shop.url(q), None, None).await;
    assert!(
        direct.text.contains("SELECT id, name"),
        "the shop leaks SQL: {}",
        direct.text
    );
    let via = send(&c, Method::GET, &gw.url(q), None, None).await;
    assert_eq!(via.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(via.header("content-type"), Some("application/problem+json"));
    assert!(
        !via.text.contains("SELECT") && !via.text.contains("backtrace"),
        "{}",
        via.text
    );
    assert_eq!(
        via.json()["request_id"].as_str(),
        via.header("x-request-id")
    );
}

#[tokio::test]
async fn upstream_error_pages_of_any_kind_are_replaced() {
    let up = Recorder::start().await;
    let gw = Gw::start(&format!("listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /fail/500, GET /fail/503, GET /fail/404, GET /fail/400json]\n", up.addr)).await;
    let c = client();
    for path in ["/fail/500", "/fail/503", "/fail/404", "/fail/400json"] {
        let r = send(&c, Method::GET, &gw.url(path), None, None).await;
        for leak in [
            "Traceback",
            "views.py",
            "hunter2",
            "SELECT",
            "Werkzeug",
            "Express",
        ] {
            assert!(
                !r.text.contains(leak) && !format!("{:?}", r.headers).contains(leak),
                "{path}: {leak} leaked: {}",
                r.text
            );
        }
        assert_eq!(
            r.status.as_u16(),
            path[6..9].parse::<u16>().unwrap(),
            "{path}: status kept"
        );
    }
    let r = send(&c, Method::GET, &gw.url("/fail/400json"), None, None).await;
    assert_eq!(
        r.json(),
        json!({ "error": "bad input" }),
        "the message survives, the debug keys do not"
    );
}

#[tokio::test]
async fn legacy_v1_deprecated_then_retired() {
    let shop = Shop::with(&[Vuln::LegacyV1]).await;
    let c = client();
    let a = register(&shop, &c, "alice").await;
    let order = send(&c, Method::POST, &shop.url("/v2/orders"), Some(&a.access), Some(json!({ "product_id": "prod_K3y8Qm2LpX", "quantity": 1, "shipping_address": "1 Castle Road" }))).await.json();
    let path = format!("/v1/orders/{}", order["id"].as_str().unwrap());
    // Straight at the shop the forgotten version hands the order to anyone.
    let direct = send(&c, Method::GET, &shop.url(&path), None, None).await;
    assert_eq!(direct.status, StatusCode::OK);
    let deprecated = Gw::in_front_of(&shop, "versions:\n  - { prefix: /v1, status: deprecated, deprecated_at: 2026-01-01, sunset: 2027-06-30, link: https://shop.example/migrate }\n").await;
    let r = send(
        &c,
        Method::GET,
        &deprecated.url(&path),
        Some(&a.access),
        None,
    )
    .await;
    assert_eq!(r.header("deprecation"), Some("@1767225600"));
    assert_eq!(r.header("sunset"), Some("Wed, 30 Jun 2027 00:00:00 GMT"));
    assert!(r.header("link").is_some_and(
        |l| l.contains("https://shop.example/migrate") && l.contains("rel=\"deprecation\"")
    ));
    let v2 = send(&c, Method::GET, &deprecated.url("/v2/products"), None, None).await;
    assert_eq!(v2.header("deprecation"), None, "v2 is not deprecated");
    let retired = Gw::in_front_of(&shop, "versions:\n  - { prefix: /v1, status: retired }\n").await;
    for p in [path.as_str(), "/v1/anything/else", "/v1"] {
        let r = send(&c, Method::GET, &retired.url(p), None, None).await;
        assert_eq!(r.status, StatusCode::GONE, "{p}");
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
    }
}

#[tokio::test]
async fn only_declared_routes_are_forwarded() {
    let shop = Shop::with(&[Vuln::Bfla]).await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    // A policy that publishes the catalogue only: the admin API is not part of the inventory.
    let gw = Gw::start(&format!("listen: 127.0.0.1:0\nupstream: http://{}\nroutes:\n  - GET /v2/products\n  - GET /v2/products/{{product_id}}\n", shop.addr)).await;
    assert_eq!(
        send(
            &c,
            Method::GET,
            &shop.url("/v2/admin/users"),
            Some(&b.access),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = send(
        &c,
        Method::GET,
        &gw.url("/v2/admin/users"),
        Some(&b.access),
        None,
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        send(
            &c,
            Method::GET,
            &gw.url("/v2/products/prod_K3y8Qm2LpX"),
            None,
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    let r = send(&c, Method::DELETE, &gw.url("/v2/products"), None, None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    for sneaky in [
        "/v2/products/../admin/users",
        "/v2/products/%2e%2e/admin/users",
        "/v2//admin/users",
        "/V2/admin/users",
    ] {
        let url = reqwest::Url::parse(&gw.url("/"))
            .unwrap()
            .join(sneaky)
            .unwrap();
        let r = c
            .get(gw.url(sneaky))
            .bearer_auth(&b.access)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), StatusCode::OK, "{sneaky} ({url})");
    }
}

/// Each security field goes out once, with the gateway's value, over HTTP/1 and HTTP/2 alike:
/// the shop (secure) sends its own copies, which the gateway's replace rather than join; a
/// route's own rule replaces the default.
#[tokio::test]
async fn each_security_field_goes_out_once_with_the_gateways_value() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let shop = Shop::with(&[]).await;
    let gw = Gw::in_front_of(
        &shop,
        "security_headers:\n  set: { x-frame-options: SAMEORIGIN }\n  routes:\n    - route: GET /v2/products\n      set: { referrer-policy: same-origin }\n",
    )
    .await;
    let direct = send(
        &client(),
        Method::GET,
        &shop.url("/v2/products"),
        None,
        None,
    )
    .await;
    assert_eq!(
        direct.header("x-frame-options"),
        Some("DENY"),
        "the shop sends its own"
    );
    let mut s = tokio::net::TcpStream::connect(gw.base.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"GET /v2/products HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let head = raw.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    for (name, value) in [
        ("x-frame-options", "sameorigin"),
        ("referrer-policy", "same-origin"),
        ("x-content-type-options", "nosniff"),
        ("cache-control", "no-store"),
    ] {
        let lines: Vec<&str> = head
            .lines()
            .filter(|l| l.starts_with(&format!("{name}:")))
            .collect();
        assert_eq!(lines, [format!("{name}: {value}")], "{head}");
    }
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .unwrap();
    let r = h2.get(gw.url("/v2/products")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    let frames: Vec<_> = r.headers().get_all("x-frame-options").iter().collect();
    assert_eq!(frames, ["SAMEORIGIN"]);
    assert_eq!(r.headers()["referrer-policy"], "same-origin");
}

/// An upstream that builds its links from the `Host` it was sent (the upstream's own
/// address) would hand clients its internal address: `Location` and `Content-Location` that
/// name the upstream become relative references; links elsewhere are left alone.
#[tokio::test]
async fn links_to_the_upstream_itself_become_relative() {
    let app = axum::Router::new()
        .route(
            "/v2/orders",
            axum::routing::post(|headers: axum::http::HeaderMap| async move {
                let host = headers["host"].to_str().unwrap().to_owned();
                (
                    axum::http::StatusCode::CREATED,
                    [
                        ("location", format!("http://{host}/v2/orders/5?x=1")),
                        ("content-location", format!("http://{host}/v2/orders/5")),
                    ],
                    "{}",
                )
            }),
        )
        .route(
            "/v2/elsewhere",
            axum::routing::get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "https://cdn.example/a.png")],
                )
            }),
        );
    let up = serve_router(app).await;
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [POST /v2/orders, GET /v2/elsewhere]\n"
    ))
    .await;
    let c = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.post(gw.url("/v2/orders")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], "/v2/orders/5?x=1");
    assert_eq!(r.headers()["content-location"], "/v2/orders/5");
    let r = c.get(gw.url("/v2/elsewhere")).send().await.unwrap();
    assert_eq!(r.headers()["location"], "https://cdn.example/a.png");
}
