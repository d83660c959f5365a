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
        (
            format!(
                "{with_auth}authorization:\n  owners: [{{ route: \"PATCH /v2/orders/{{order_id}}\", lookup: \"GET /v2/orders/{{order_id}}\", response: /items/*/user_id }}]\n"
            ),
            "`*` (each item of a list) is for `response` rules",
        ),
        (
            format!(
                "{with_auth}authorization:\n  owners: [{{ route: \"GET /v2/orders\", response: /items/* }}]\n"
            ),
            "name the owner field after it",
        ),
        (
            format!(
                "{with_auth}authorization:\n  owners: [{{ route: \"GET /v2/orders\", response: /a/*/b/*/c }}]\n"
            ),
            "only one `*`",
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

/// The auth part of a policy verifying the shop's tokens (HS256, the test key).
fn shop_auth() -> String {
    let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
    format!(
        "state: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret: \"{secret}\" }}]\n    require: [exp, iat, sub, jti]\n    token_type: {{ claim: type, value: access }}\n"
    )
}

/// The shop's description, edited by `edit`, written next to a policy; returns the policy.
fn edited_shop_policy(
    shop: &Shop,
    name: &str,
    edit: impl Fn(&str) -> String,
    extra: &str,
) -> String {
    let dir = std::env::temp_dir().join(format!("portcullis-authz-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("openapi.yaml");
    std::fs::write(&spec, edit(&std::fs::read_to_string(shop_spec()).unwrap())).unwrap();
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nopenapi: {}\n{}{extra}",
        shop.addr,
        spec.display(),
        shop_auth()
    )
}

#[tokio::test]
async fn default_roles_deny_what_no_rule_grants() {
    // The description without its `x-portcullis-roles`: nothing marks the admin operations.
    let shop = Shop::with(&[Vuln::Bfla]).await;
    let unmarked = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("x-portcullis-roles"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let c = client();
    let (b, adm) = (register(&shop, &c, "bob").await, admin(&shop, &c).await);
    async fn status(
        c: &reqwest::Client,
        gw: &Gw,
        m: Method,
        path: &str,
        who: Option<&str>,
    ) -> StatusCode {
        send(c, m, &gw.url(path), who, None).await.status
    }

    // Without default-deny, a customer reaches the unmarked admin operations.
    let open = Gw::start(&edited_shop_policy(&shop, "open", unmarked, "")).await;
    assert_eq!(
        status(&c, &open, Method::GET, "/v2/admin/users", Some(&b.access)).await,
        StatusCode::OK
    );

    // Default-deny: only what a rule grants to customers is theirs; the rest is the admin's.
    let gw = Gw::start(&edited_shop_policy(
        &shop,
        "deny",
        unmarked,
        "authorization:\n  default_roles: [admin]\n  roles:\n    - { match: /v2/users/**, roles: [customer, admin] }\n    - { match: \"GET /v2/orders\", roles: [customer, admin] }\n",
    ))
    .await;
    let target = format!("/v2/admin/users/{}", adm.id);
    for (m, path, who, want) in [
        (
            Method::GET,
            "/v2/admin/users".to_owned(),
            &b.access,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::DELETE,
            target.clone(),
            &b.access,
            StatusCode::FORBIDDEN,
        ),
        // Granted for GET is not granted for POST (method switching).
        (
            Method::POST,
            "/v2/orders".to_owned(),
            &b.access,
            StatusCode::FORBIDDEN,
        ),
        (
            Method::GET,
            "/v2/orders".to_owned(),
            &b.access,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/v2/users/me".to_owned(),
            &b.access,
            StatusCode::OK,
        ),
        (
            Method::GET,
            "/v2/admin/users".to_owned(),
            &adm.access,
            StatusCode::OK,
        ),
    ] {
        assert_eq!(
            status(&c, &gw, m.clone(), &path, Some(who)).await,
            want,
            "{m} {path}"
        );
    }
    // Public operations stay public.
    assert_eq!(
        status(&c, &gw, Method::GET, "/v2/products?limit=1", None).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_per_role_view_shows_admins_what_users_do_not_see() {
    // `balance_cents` of a user is declared for admins only.
    let shop = Shop::secure().await;
    let admin_only = |s: &str| {
        s.replace(
            "          maximum: 100000000\n        avatar_url:",
            "          maximum: 100000000\n          x-portcullis-roles: [admin]\n        avatar_url:",
        )
    };
    let edited = admin_only(&std::fs::read_to_string(shop_spec()).unwrap());
    assert!(
        edited.contains("x-portcullis-roles: [admin]\n        avatar_url:"),
        "the edit applies"
    );
    let gw = Gw::start(&edited_shop_policy(
        &shop,
        "view",
        admin_only,
        "authorization:\n  roles_claim: role\n",
    ))
    .await;
    let c = client();
    let (b, adm) = (register(&shop, &c, "bob").await, admin(&shop, &c).await);
    let me = |who: String| {
        let (c, url) = (c.clone(), gw.url("/v2/users/me"));
        async move { send(&c, Method::GET, &url, Some(&who), None).await }
    };
    // Straight at the shop, everyone sees it.
    let direct = send(
        &c,
        Method::GET,
        &shop.url("/v2/users/me"),
        Some(&b.access),
        None,
    )
    .await;
    assert!(direct.json().get("balance_cents").is_some());
    let user = me(b.access.clone()).await;
    assert_eq!(user.status, StatusCode::OK);
    assert!(user.json().get("balance_cents").is_none(), "{}", user.text);
    assert_eq!(
        user.json()["id"],
        b.id.as_str(),
        "the rest of the view is intact"
    );
    let admin = me(adm.access.clone()).await;
    assert_eq!(admin.json()["balance_cents"], 0, "{}", admin.text);
    // In lists too: the admin's user list keeps it, for the admin.
    let list = send(
        &c,
        Method::GET,
        &gw.url("/v2/admin/users"),
        Some(&adm.access),
        None,
    )
    .await;
    assert!(list.text.contains("balance_cents"), "{}", list.text);
}

/// A description whose only roles are on properties still has its views applied without an
/// `authorization` section (they were not: no role on an operation, no authorization, every
/// view for everyone), and `pass`, which reads no answer, is refused with them.
#[tokio::test]
async fn per_role_views_hold_without_an_authorization_section_and_refuse_pass() {
    let shop = Shop::secure().await;
    let only_views = |s: &str| {
        s.replace("      x-portcullis-roles: [admin]\n", "").replace(
            "          maximum: 100000000\n        avatar_url:",
            "          maximum: 100000000\n          x-portcullis-roles: [admin]\n        avatar_url:",
        )
    };
    let edited = only_views(&std::fs::read_to_string(shop_spec()).unwrap());
    assert_eq!(
        edited.matches("x-portcullis-roles").count(),
        1,
        "the edit applies"
    );
    let gw = Gw::start(&edited_shop_policy(&shop, "views-only", only_views, "")).await;
    let c = client();
    let b = register(&shop, &c, "bob").await;
    let user = send(
        &c,
        Method::GET,
        &gw.url("/v2/users/me"),
        Some(&b.access),
        None,
    )
    .await;
    assert_eq!(user.status, StatusCode::OK, "{}", user.text);
    assert!(user.json().get("balance_cents").is_none(), "{}", user.text);
    let pass = edited_shop_policy(
        &shop,
        "views-pass",
        only_views,
        "validation: { undeclared_response_fields: pass }\n",
    );
    let e = portcullis_policy::load_str(std::path::Path::new("p.yaml"), &pass).unwrap_err();
    assert!(e.to_string().contains("per-role views"), "{e}");
}

/// Every owner rule of a route holds, not only the last: an order of the caller's tenant but
/// of another user is refused. And the owner is read from the body, so a conditional request
/// cannot have the upstream answer without one (a 304 would tell the order exists).
#[tokio::test]
async fn every_owner_rule_of_a_route_holds_and_conditional_requests_cannot_skip_them() {
    let app = axum::Router::new().route(
        "/api/orders/{id}",
        axum::routing::get(|headers: axum::http::HeaderMap| async move {
            use axum::response::IntoResponse;
            if headers.contains_key("if-none-match") {
                return (axum::http::StatusCode::NOT_MODIFIED, [("etag", "\"o1\"")])
                    .into_response();
            }
            axum::Json(json!({ "id": 1, "user_id": "usr_b", "tenant_id": "t1" })).into_response()
        }),
    );
    let up = serve_router(app).await;
    let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [\"GET /api/orders/{{id}}\"]\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret: \"{secret}\" }}]\nauthorization:\n  owners:\n    - {{ route: \"GET /api/orders/{{id}}\", response: /user_id }}\n    - {{ route: \"GET /api/orders/{{id}}\", response: /tenant_id, claim: tenant }}\n"
    ))
    .await;
    let token = |sub: &str, tenant: &str| {
        sign_hs256(
            JWT_SECRET,
            &json!({ "sub": sub, "tenant": tenant, "iat": now(), "exp": now() + 600, "jti": format!("t-{sub}-{tenant}"), "type": "access" }),
        )
    };
    let c = client();
    let get = |t: String, etag: Option<&'static str>| {
        let mut r = c.get(gw.url("/api/orders/1")).bearer_auth(t);
        if let Some(e) = etag {
            r = r.header("if-none-match", e);
        }
        r.send()
    };
    // The owner, of the right tenant.
    let b = get(token("usr_b", "t1"), None).await.unwrap();
    assert_eq!(b.status(), StatusCode::OK);
    // Same tenant, another user: the first rule refuses (only the last rule was checked).
    let a = get(token("usr_a", "t1"), None).await.unwrap();
    assert_eq!(a.status(), StatusCode::NOT_FOUND);
    // The right user, another tenant: the second rule refuses.
    let b2 = get(token("usr_b", "t2"), None).await.unwrap();
    assert_eq!(b2.status(), StatusCode::NOT_FOUND);
    // A conditional request from another user: neither a 304 nor the object.
    let cond = get(token("usr_a", "t1"), Some("*")).await.unwrap();
    assert_eq!(cond.status(), StatusCode::NOT_FOUND);
    assert!(cond.headers().get("etag").is_none());
    // The owner's conditional request is sent unconditionally and answered whole.
    let own = get(token("usr_b", "t1"), Some("*")).await.unwrap();
    assert_eq!(own.status(), StatusCode::OK);
    // HEAD (served by the GET route): the owner check needs the body a HEAD answer lacks, so
    // the upstream is asked with GET. Another's object is as absent as it is to a GET; the
    // owner gets the GET's head, its length included, and no body.
    let head = |t: String| c.head(gw.url("/api/orders/1")).bearer_auth(t).send();
    let theirs = head(token("usr_a", "t1")).await.unwrap();
    assert_eq!(theirs.status(), StatusCode::NOT_FOUND);
    let mine = head(token("usr_b", "t1")).await.unwrap();
    assert_eq!(mine.status(), StatusCode::OK);
    let whole = get(token("usr_b", "t1"), None).await.unwrap();
    let length = whole.headers().get("content-length").cloned();
    assert!(length.is_some());
    assert_eq!(mine.headers().get("content-length"), length.as_ref());
    assert_eq!(
        whole.bytes().await.unwrap().len().to_string(),
        length.unwrap().to_str().unwrap()
    );
    assert!(mine.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn list_items_of_other_subjects_are_taken_out() {
    // An upstream whose list ignores ownership (the list form of BOLA).
    let app = axum::Router::new()
        .route(
            "/api/notes",
            axum::routing::get(|| async {
                axum::Json(json!({ "items": [
                { "id": 1, "owner": "usr_a", "text": "a's" },
                { "id": 2, "owner": "usr_b", "text": "b's" },
                { "id": 3, "text": "nobody's" },
                { "id": 4, "owner": 7, "text": "a number" }
            ] }))
            }),
        )
        .route(
            "/api/other",
            axum::routing::get(|| async { axum::Json(json!({ "count": 2 })) }),
        );
    let up = serve_router(app).await;
    let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{up}\nroutes: [GET /api/notes, GET /api/other]\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    keys: [{{ alg: HS256, secret: \"{secret}\" }}]\nauthorization:\n  owners:\n    - {{ route: \"GET /api/notes\", response: /items/*/owner }}\n    - {{ route: \"GET /api/other\", response: /items/*/owner }}\n"
    ))
    .await;
    let token = |sub: &str| {
        sign_hs256(
            JWT_SECRET,
            &json!({ "sub": sub, "iat": now(), "exp": now() + 600, "jti": format!("t-{sub}"), "type": "access" }),
        )
    };
    let c = client();
    let direct = send(
        &c,
        Method::GET,
        &format!("http://{up}/api/notes"),
        None,
        None,
    )
    .await;
    assert_eq!(direct.json()["items"].as_array().unwrap().len(), 4);
    let a = send(
        &c,
        Method::GET,
        &gw.url("/api/notes"),
        Some(&token("usr_a")),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.text);
    assert_eq!(
        a.json()["items"],
        json!([{ "id": 1, "owner": "usr_a", "text": "a's" }])
    );
    let seven = send(
        &c,
        Method::GET,
        &gw.url("/api/notes"),
        Some(&token("7")),
        None,
    )
    .await;
    assert_eq!(seven.json()["items"][0]["id"], 4);
    let nobody = send(
        &c,
        Method::GET,
        &gw.url("/api/notes"),
        Some(&token("usr_z")),
        None,
    )
    .await;
    assert_eq!(nobody.json()["items"], json!([]));
    // A body without the list the rule names is not passed on.
    let other = send(
        &c,
        Method::GET,
        &gw.url("/api/other"),
        Some(&token("usr_a")),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::NOT_FOUND);
    assert!(!other.text.contains("count"));
}

#[tokio::test]
async fn owner_and_rate_rules_written_in_the_description_are_enforced() {
    // No `authorization` or `rate_limits` in the policy: the rules sit next to the operations.
    let shop = Shop::with(&[Vuln::Bola]).await;
    let with_rules = |s: &str| {
        s.replace(
            "      operationId: getOrder\n",
            "      operationId: getOrder\n      x-portcullis-owner: { response: /user_id }\n",
        )
        .replace(
            "      operationId: searchProducts\n",
            "      operationId: searchProducts\n      x-portcullis-rate-limit: { key: ip, rate: 2/minute }\n",
        )
    };
    let gw = Gw::start(&edited_shop_policy(&shop, "ext", with_rules, "")).await;
    let c = client();
    let (a, b) = (
        register(&shop, &c, "alice").await,
        register(&shop, &c, "bob").await,
    );
    let order = send(&c, Method::POST, &gw.url("/v2/orders"), Some(&a.access), Some(json!({ "product_id": "prod_K3y8Qm2LpX", "quantity": 1, "shipping_address": "1 Castle Road" }))).await;
    let path = format!("/v2/orders/{}", order.json()["id"].as_str().unwrap());
    assert_eq!(
        send(&c, Method::GET, &shop.url(&path), Some(&b.access), None)
            .await
            .status,
        StatusCode::OK,
        "straight at the shop, B reads A's order"
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url(&path), Some(&b.access), None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url(&path), Some(&a.access), None)
            .await
            .status,
        StatusCode::OK
    );
    let search = |c: reqwest::Client, url: String| async move {
        send(&c, Method::GET, &url, None, None).await.status
    };
    let url = gw.url("/v2/products/search?q=mug");
    assert_eq!(search(c.clone(), url.clone()).await, StatusCode::OK);
    assert_eq!(search(c.clone(), url.clone()).await, StatusCode::OK);
    assert_eq!(
        search(c.clone(), url.clone()).await,
        StatusCode::TOO_MANY_REQUESTS
    );

    // A broken rule in the description is reported at the operation, in the description.
    let broken = edited_shop_policy(
        &shop,
        "ext-broken",
        |s| {
            s.replace(
                "      operationId: getOrder\n",
                "      operationId: getOrder\n      x-portcullis-owner: { param: user_id }\n",
            )
            .replace(
                "      operationId: searchProducts\n",
                "      operationId: searchProducts\n      x-portcullis-rate-limit: { key: ip, rate: lots }\n",
            )
        },
        "",
    );
    let p = portcullis_policy::load_str(std::path::Path::new("p.yaml"), &broken).unwrap_err();
    let text = p.to_string();
    for (key, msg) in [
        (
            "paths.GET /v2/orders/{order_id}.x-portcullis-owner",
            "has no parameter `user_id`",
        ),
        (
            "paths.GET /v2/products/search.x-portcullis-rate-limit",
            "`lots` is not a rate",
        ),
    ] {
        let problem =
            p.0.iter()
                .find(|x| x.key == key)
                .unwrap_or_else(|| panic!("{key}: {text}"));
        assert!(problem.message.contains(msg), "{text}");
        assert!(problem.file.ends_with("openapi.yaml"), "{text}");
        assert!(problem.pos.is_some_and(|at| at.line > 100), "{text}");
    }
}
