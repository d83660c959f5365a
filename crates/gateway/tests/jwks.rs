//! Keys from an identity provider's JWKS on loopback: fetched at start, refreshed for a new
//! `kid` (at most once per `min_interval`, however many random kids arrive), served stale for
//! `max_stale` while the provider is down, then dropped.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

#[derive(Clone, Default)]
struct Provider {
    keys: Arc<Mutex<Vec<Value>>>,
    max_age: Arc<Mutex<u32>>,
    down: Arc<AtomicBool>,
    hits: Arc<AtomicUsize>,
    /// How long each answer takes.
    delay: Arc<Mutex<Duration>>,
}

async fn start_provider(p: Provider) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let p = p.clone();
            async move {
                use axum::response::IntoResponse;
                p.hits.fetch_add(1, Ordering::SeqCst);
                let delay = *p.delay.lock().unwrap();
                tokio::time::sleep(delay).await;
                if p.down.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                let cc = format!("max-age={}", *p.max_age.lock().unwrap());
                let body = json!({ "keys": *p.keys.lock().unwrap() }).to_string();
                (
                    [
                        ("cache-control", cc),
                        ("content-type", "application/json".into()),
                    ],
                    body,
                )
                    .into_response()
            }
        }),
    );
    serve_router(app).await
}

fn jwk(key: &rcgen::KeyPair, alg: Algorithm, kid: &str, with_alg: bool) -> Value {
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
    };
    let mut v = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&enc, alg).unwrap())
        .unwrap();
    v["kid"] = json!(kid);
    if !with_alg {
        v.as_object_mut().unwrap().remove("alg");
    }
    v
}

fn token(key: &rcgen::KeyPair, alg: Algorithm, kid: &str) -> String {
    let enc = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        _ => EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).unwrap(),
    };
    let mut h = Header::new(alg);
    h.kid = Some(kid.into());
    let now = now();
    encode(
        &h,
        &json!({ "sub": "usr_j", "iat": now, "exp": now + 600, "type": "access" }),
        &enc,
    )
    .unwrap()
}

#[tokio::test]
async fn jwks_keys_rotate_refresh_and_go_stale() {
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let provider = Provider::default();
    *provider.keys.lock().unwrap() = vec![jwk(&rsa, Algorithm::RS256, "a", true)];
    *provider.max_age.lock().unwrap() = 3600;
    let idp = start_provider(provider.clone()).await;
    let up = Recorder::start().await;
    let gw = Gw::start(&format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    token_type: {{ claim: type, value: access }}\n    jwks: {{ url: http://{idp}/jwks.json, algs: [RS256, ES256], min_interval: 1s, max_stale: 3s }}\n",
        up.addr
    ))
    .await;
    let c = client();
    let status = |t: String| {
        let (c, url) = (c.clone(), gw.url("/api/items"));
        async move { send(&c, Method::GET, &url, Some(&t), None).await.status }
    };
    assert_eq!(provider.hits.load(Ordering::SeqCst), 1, "fetched at start");
    assert_eq!(
        status(token(&rsa, Algorithm::RS256, "a")).await,
        StatusCode::OK
    );
    // A key the provider's JWK pins to RS256 cannot be used with PS256.
    assert_eq!(
        status(token(&rsa, Algorithm::PS256, "a")).await,
        StatusCode::UNAUTHORIZED
    );

    // Rotation: a new EC key (no `alg` in its JWK: ES256 is the only allowed fit).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    *provider.keys.lock().unwrap() = vec![
        jwk(&rsa, Algorithm::RS256, "a", true),
        jwk(&ec, Algorithm::ES256, "b", false),
    ];
    *provider.max_age.lock().unwrap() = 2;
    assert_eq!(
        status(token(&ec, Algorithm::ES256, "b")).await,
        StatusCode::OK,
        "an unknown kid refreshes the set"
    );
    let after_rotation = provider.hits.load(Ordering::SeqCst);
    assert_eq!(after_rotation, 2);

    // Random kids cannot make the gateway hammer the provider.
    for i in 0..40 {
        assert_eq!(
            status(token(&ec, Algorithm::ES256, &format!("random-{i}"))).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert!(
        provider.hits.load(Ordering::SeqCst) <= after_rotation + 1,
        "hits: {}",
        provider.hits.load(Ordering::SeqCst)
    );

    // The provider goes down: the set is served stale for max_stale, then dropped.
    provider.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status(token(&ec, Algorithm::ES256, "b")).await,
        StatusCode::OK,
        "stale but within max_stale"
    );
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        status(token(&ec, Algorithm::ES256, "b")).await,
        StatusCode::UNAUTHORIZED,
        "past max_stale: fail closed"
    );
    // Back up: keys return.
    provider.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        status(token(&ec, Algorithm::ES256, "b")).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn tokens_of_a_new_key_arriving_together_all_pass_and_long_intervals_are_taken() {
    let old = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let new = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let provider = Provider::default();
    *provider.keys.lock().unwrap() = vec![jwk(&old, Algorithm::ES256, "old", true)];
    *provider.max_age.lock().unwrap() = 3600;
    let idp = start_provider(provider.clone()).await;
    let up = Recorder::start().await;
    let policy = |min_interval: &str| {
        format!(
            "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items]\nstate: {{ backend: memory }}\nauth:\n  jwt:\n    jwks: {{ url: http://{idp}/jwks.json, algs: [ES256], min_interval: {min_interval} }}\n",
            up.addr
        )
    };
    // A `min_interval` over a day (the longest a set is kept fresh) is taken as it is.
    let long = Gw::start(&policy("2d")).await;
    let c = client();
    let t = token(&old, Algorithm::ES256, "old");
    let r = send(&c, Method::GET, &long.url("/api/items"), Some(&t), None).await;
    assert_eq!(r.status, StatusCode::OK);
    drop(long);

    let gw = Gw::start(&policy("1s")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The key rotates, and the provider is slow: eight tokens of the new key arrive while the
    // first one's fetch is out. Every one passes, on one fetch.
    *provider.keys.lock().unwrap() = vec![
        jwk(&old, Algorithm::ES256, "old", true),
        jwk(&new, Algorithm::ES256, "new", true),
    ];
    *provider.delay.lock().unwrap() = Duration::from_millis(400);
    let hits = provider.hits.load(Ordering::SeqCst);
    let t = token(&new, Algorithm::ES256, "new");
    let all: Vec<_> = (0..8)
        .map(|_| {
            let (c, url, t) = (c.clone(), gw.url("/api/items"), t.clone());
            tokio::spawn(async move { send(&c, Method::GET, &url, Some(&t), None).await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for task in all {
        statuses.push(task.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK),
        "{statuses:?}"
    );
    assert_eq!(provider.hits.load(Ordering::SeqCst), hits + 1);
}
