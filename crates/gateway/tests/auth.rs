//! Authentication at the gateway, table-driven through a real gateway in front of a recording
//! upstream: every algorithm verifies with its own key, and every known way of forging,
//! replaying or smuggling a token is refused before the upstream sees it.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::serde_json::{Value, json};
use portcullis_test_support::*;

struct Keys {
    hs256: Vec<u8>,
    hs384: Vec<u8>,
    hs512: Vec<u8>,
    rsa: rcgen::KeyPair,
    p256: rcgen::KeyPair,
    p384: rcgen::KeyPair,
    ed: rcgen::KeyPair,
    /// An attacker's own RSA key.
    evil: rcgen::KeyPair,
}

fn random(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| {
            b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
                [(i * 7 + n * 13 + i * i) % 64]
        })
        .collect()
}

fn keys() -> Keys {
    Keys {
        hs256: random(32),
        hs384: random(48),
        hs512: random(64),
        rsa: rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap(),
        p256: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
        p384: rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
        ed: rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        evil: rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap(),
    }
}

/// The policy: every algorithm under its own kid; the RSA key serves RS* and PS*.
fn policy(up: &Recorder, k: &Keys, dir: &Path) -> String {
    let w = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p.display().to_string()
    };
    let (hs256, hs384, hs512) = (
        w("hs256", &k.hs256),
        w("hs384", &k.hs384),
        w("hs512", &k.hs512),
    );
    let rsa = w("rsa.pub.pem", k.rsa.public_key_pem().as_bytes());
    let p256 = w("p256.pub.pem", k.p256.public_key_pem().as_bytes());
    let p384 = w("p384.pub.pem", k.p384.public_key_pem().as_bytes());
    let ed = w("ed.pub.pem", k.ed.public_key_pem().as_bytes());
    let mut keys = format!(
        "      - {{ kid: HS256, alg: HS256, secret_file: {hs256} }}\n      - {{ kid: HS384, alg: HS384, secret_file: {hs384} }}\n      - {{ kid: HS512, alg: HS512, secret_file: {hs512} }}\n"
    );
    for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"] {
        keys.push_str(&format!(
            "      - {{ kid: {alg}, alg: {alg}, public_key_file: {rsa} }}\n"
        ));
    }
    keys.push_str(&format!(
        "      - {{ kid: ES256, alg: ES256, public_key_file: {p256} }}\n      - {{ kid: ES384, alg: ES384, public_key_file: {p384} }}\n      - {{ kid: EdDSA, alg: EdDSA, public_key_file: {ed} }}\n"
    ));
    format!(
        "listen: 127.0.0.1:0\nupstream: http://{}\nroutes: [GET /api/items, GET /public]\nstate: {{ backend: memory }}\nauth:\n  public: [GET /public]\n  jwt:\n    issuer: [https://idp.test]\n    audience: [api]\n    require: [exp, sub, jti]\n    token_type: {{ claim: type, value: access }}\n    forward_claims: {{ sub: x-auth-subject }}\n    keys:\n{keys}",
        up.addr
    )
}

fn claims() -> Value {
    let now = now();
    json!({ "sub": "usr_alice", "iss": "https://idp.test", "aud": "api", "iat": now, "exp": now + 600, "jti": format!("jti-{now}"), "type": "access" })
}

fn sign(k: &Keys, alg: &str, claims: &Value) -> String {
    sign_with_header(k, alg, claims, |_| {})
}

fn sign_with_header(k: &Keys, alg: &str, claims: &Value, edit: impl FnOnce(&mut Header)) -> String {
    let (algorithm, key) = match alg {
        "HS256" => (
            Algorithm::HS256,
            EncodingKey::from_secret(&k.hs256).unwrap(),
        ),
        "HS384" => (
            Algorithm::HS384,
            EncodingKey::from_secret(&k.hs384).unwrap(),
        ),
        "HS512" => (
            Algorithm::HS512,
            EncodingKey::from_secret(&k.hs512).unwrap(),
        ),
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => {
            let a: Algorithm = alg.parse().unwrap();
            (
                a,
                EncodingKey::from_rsa_pem(k.rsa.serialize_pem().as_bytes()).unwrap(),
            )
        }
        "ES256" => (
            Algorithm::ES256,
            EncodingKey::from_ec_pem(k.p256.serialize_pem().as_bytes()).unwrap(),
        ),
        "ES384" => (
            Algorithm::ES384,
            EncodingKey::from_ec_pem(k.p384.serialize_pem().as_bytes()).unwrap(),
        ),
        "EdDSA" => (
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(k.ed.serialize_pem().as_bytes()).unwrap(),
        ),
        other => panic!("{other}"),
    };
    let mut h = Header::new(algorithm);
    h.kid = Some(alg.to_owned());
    edit(&mut h);
    encode(&h, claims, &key).unwrap()
}

/// A token assembled by hand: any header, any payload, any signature.
fn raw_token(header: &str, payload: &str, sig: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header),
        B64.encode(payload),
        B64.encode(sig)
    )
}

fn hs256_raw(secret: &[u8], header: &str, payload: &str) -> String {
    let signing_input = format!("{}.{}", B64.encode(header), B64.encode(payload));
    let key = EncodingKey::from_secret(secret).unwrap();
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{signing_input}.{sig}")
}

#[tokio::test]
async fn every_algorithm_verifies_and_every_forgery_is_refused() {
    let up = Recorder::start().await;
    let k = keys();
    let dir = std::env::temp_dir().join(format!("portcullis-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gw = Gw::start(&(policy(&up, &k, &dir) + "admin: { listen: 127.0.0.1:0 }\n")).await;
    let c = client();
    let get = |token: Option<String>| {
        let (c, url) = (c.clone(), gw.url("/api/items"));
        async move {
            // The client's copy of the forwarded claim, spelled both ways, and a `Connection`
            // naming it (which once took out the gateway's own copy).
            let mut req = c
                .get(url)
                .header("x-auth-subject", "usr_admin")
                .header("x_auth_subject", "usr_admin")
                .header("connection", "x-auth-subject");
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let r = req.send().await.unwrap();
            let www = r
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            (r.status(), www)
        }
    };

    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ] {
        let (status, _) = get(Some(sign(&k, alg, &claims()))).await;
        assert_eq!(status, StatusCode::OK, "a valid {alg} token");
    }
    let accepted = up.seen().len();
    assert_eq!(accepted, 12);
    assert!(
        up.seen().iter().all(|r| r
            .headers
            .get("x-auth-subject")
            .is_some_and(|v| v == "usr_alice")
            && r.headers.get("x_auth_subject").is_none()),
        "the verified subject replaces the client's copies"
    );

    let now = now();
    let c0 = claims();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = c0.clone();
        f(&mut c);
        c
    };
    let payload = c0.to_string();
    let rsa_pub_pem = k.rsa.public_key_pem();
    let rsa_pub_der = k.rsa.public_key_raw().to_vec();
    let rsa_jwk = {
        let parsed = jsonwebtoken::jwk::Jwk::from_encoding_key(
            &EncodingKey::from_rsa_pem(k.rsa.serialize_pem().as_bytes()).unwrap(),
            Algorithm::RS256,
        )
        .unwrap();
        serde_json::to_string(&parsed).unwrap()
    };
    let real = sign(&k, "RS256", &c0);
    let real_parts: Vec<&str> = real.split('.').collect();
    let mut cases: Vec<(&str, &str, String)> = vec![
        (
            "alg none",
            "token_malformed",
            raw_token(r#"{"alg":"none","typ":"JWT"}"#, &payload, b""),
        ),
        (
            "alg None",
            "token_malformed",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"None"}"#),
                B64.encode(&payload)
            ),
        ),
        (
            "alg NONE",
            "token_malformed",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"NONE","kid":"HS256"}"#),
                B64.encode(&payload)
            ),
        ),
        (
            "alg nOnE",
            "token_malformed",
            format!(
                "{}.{}.",
                B64.encode(r#"{"alg":"nOnE","kid":"RS256"}"#),
                B64.encode(&payload)
            ),
        ),
        (
            "alg none with a signature",
            "token_algorithm_mismatch",
            raw_token(r#"{"alg":"none","kid":"HS256"}"#, &payload, b"sig"),
        ),
        (
            "signature stripped",
            "token_malformed",
            format!("{}.{}.", real_parts[0], real_parts[1]),
        ),
        (
            "signature removed",
            "token_malformed",
            format!("{}.{}", real_parts[0], real_parts[1]),
        ),
        (
            "RS256 to HS256, PEM public key as secret",
            "token_algorithm_mismatch",
            hs256_raw(
                rsa_pub_pem.as_bytes(),
                r#"{"alg":"HS256","kid":"RS256"}"#,
                &payload,
            ),
        ),
        (
            "RS256 to HS256, DER public key as secret",
            "token_algorithm_mismatch",
            hs256_raw(&rsa_pub_der, r#"{"alg":"HS256","kid":"RS256"}"#, &payload),
        ),
        (
            "RS256 to HS256, JWK as secret",
            "token_algorithm_mismatch",
            hs256_raw(
                rsa_jwk.as_bytes(),
                r#"{"alg":"HS256","kid":"RS256"}"#,
                &payload,
            ),
        ),
        (
            "algorithm switch RS256 to PS256",
            "token_algorithm_mismatch",
            {
                let t = sign(&k, "PS256", &c0);
                let p: Vec<&str> = t.split('.').collect();
                format!(
                    "{}.{}.{}",
                    B64.encode(r#"{"alg":"PS256","kid":"RS256"}"#),
                    p[1],
                    p[2]
                )
            },
        ),
        (
            "expired",
            "token_expired",
            sign(&k, "HS256", &with(&|c| c["exp"] = json!(now - 3600))),
        ),
        (
            "not yet valid",
            "token_not_yet_valid",
            sign(&k, "HS256", &with(&|c| c["nbf"] = json!(now + 3600))),
        ),
        (
            "issued in the future",
            "token_not_yet_valid",
            sign(&k, "HS256", &with(&|c| c["iat"] = json!(now + 3600))),
        ),
        (
            "no exp",
            "token_missing_claim",
            sign(
                &k,
                "HS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("exp");
                }),
            ),
        ),
        (
            "no sub",
            "token_missing_claim",
            sign(
                &k,
                "HS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("sub");
                }),
            ),
        ),
        (
            "no jti",
            "token_missing_claim",
            sign(
                &k,
                "HS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("jti");
                }),
            ),
        ),
        (
            "wrong iss",
            "token_wrong_issuer",
            sign(
                &k,
                "HS256",
                &with(&|c| c["iss"] = json!("https://evil.test")),
            ),
        ),
        (
            "wrong aud",
            "token_wrong_audience",
            sign(&k, "HS256", &with(&|c| c["aud"] = json!("other-api"))),
        ),
        // An audience and an issuer to check are claims a token must carry.
        (
            "no aud",
            "token_missing_claim",
            sign(
                &k,
                "HS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("aud");
                }),
            ),
        ),
        (
            "no iss",
            "token_missing_claim",
            sign(
                &k,
                "HS256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("iss");
                }),
            ),
        ),
        (
            "refresh token as access token",
            "token_wrong_type",
            sign(&k, "HS256", &with(&|c| c["type"] = json!("refresh"))),
        ),
        (
            "id token as access token",
            "token_wrong_type",
            sign(
                &k,
                "ES256",
                &with(&|c| {
                    c.as_object_mut().unwrap().remove("type");
                }),
            ),
        ),
        (
            "kid path traversal",
            "token_unknown_key",
            sign_with_header(&k, "HS256", &c0, |h| {
                h.kid = Some("../../../../../../dev/null".into())
            }),
        ),
        (
            "kid SQL injection",
            "token_unknown_key",
            sign_with_header(&k, "HS256", &c0, |h| {
                h.kid = Some("x' UNION SELECT 'secret' --".into())
            }),
        ),
        (
            "unknown kid",
            "token_unknown_key",
            sign_with_header(&k, "HS256", &c0, |h| h.kid = Some("k9".into())),
        ),
        ("jwk header injection", "token_bad_signature", {
            let evil_jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(
                &EncodingKey::from_rsa_pem(k.evil.serialize_pem().as_bytes()).unwrap(),
                Algorithm::RS256,
            )
            .unwrap();
            let key = EncodingKey::from_rsa_pem(k.evil.serialize_pem().as_bytes()).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("RS256".into());
            h.jwk = Some(evil_jwk);
            encode(&h, &c0, &key).unwrap()
        }),
        ("jku header injection", "token_bad_signature", {
            let key = EncodingKey::from_rsa_pem(k.evil.serialize_pem().as_bytes()).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("RS256".into());
            h.jku = Some("http://127.0.0.1:9/jwks.json".into());
            encode(&h, &c0, &key).unwrap()
        }),
        ("x5u header injection", "token_bad_signature", {
            let key = EncodingKey::from_rsa_pem(k.evil.serialize_pem().as_bytes()).unwrap();
            let mut h = Header::new(Algorithm::RS256);
            h.kid = Some("RS256".into());
            h.x5u = Some("http://127.0.0.1:9/cert.pem".into());
            encode(&h, &c0, &key).unwrap()
        }),
        (
            "ES256 signature of zeros",
            "token_bad_signature",
            raw_token(r#"{"alg":"ES256","kid":"ES256"}"#, &payload, &[0u8; 64]),
        ),
        (
            "malformed base64",
            "token_malformed",
            format!("{}.!!!.{}", real_parts[0], real_parts[2]),
        ),
        ("four segments", "token_malformed", format!("{real}.AAAA")),
        ("one segment", "token_malformed", real_parts[0].to_owned()),
        (
            "duplicate header keys",
            "token_duplicate_keys",
            hs256_raw(
                &k.hs256,
                r#"{"alg":"HS256","kid":"HS256","alg":"none"}"#,
                &payload,
            ),
        ),
        (
            "duplicate payload keys",
            "token_duplicate_keys",
            hs256_raw(
                &k.hs256,
                r#"{"alg":"HS256","kid":"HS256"}"#,
                &payload.replacen('{', r#"{"sub":"usr_admin","#, 1),
            ),
        ),
        (
            "crit header",
            "token_crit_header",
            hs256_raw(
                &k.hs256,
                r#"{"alg":"HS256","kid":"HS256","crit":["exp"]}"#,
                &payload,
            ),
        ),
        (
            "oversized",
            "token_too_large",
            sign(&k, "HS256", &with(&|c| c["pad"] = json!("x".repeat(9000)))),
        ),
        ("garbage", "token_malformed", "not-a-token".into()),
    ];
    cases.push(("tampered payload", "token_bad_signature", {
        let other = B64.encode(with(&|c| c["sub"] = json!("usr_admin")).to_string());
        format!("{}.{}.{}", real_parts[0], other, real_parts[2])
    }));
    let mut expected: std::collections::BTreeMap<&str, u32> = Default::default();
    for (what, reason, token) in cases {
        let (status, www) = get(Some(token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
        assert_eq!(
            www.as_deref(),
            Some("Bearer error=\"invalid_token\""),
            "{what}"
        );
        *expected.entry(reason).or_default() += 1;
    }
    // Each refusal was for the reason the case is about (the metrics count them by reason).
    let metrics = send(
        &c,
        Method::GET,
        &format!("{}/metrics", gw.admin.clone().unwrap()),
        None,
        None,
    )
    .await
    .text;
    for (reason, n) in expected {
        let line = format!(
            "portcullis_requests_total{{route=\"/api/items\",status=\"401\",decision=\"{reason}\"}} {n}"
        );
        assert!(metrics.contains(&line), "missing `{line}` in\n{metrics}");
    }
    let (status, www) = get(None).await;
    assert_eq!(
        (status, www.as_deref()),
        (StatusCode::UNAUTHORIZED, Some("Bearer"))
    );
    assert_eq!(
        up.seen().len(),
        accepted,
        "no refused request reached the upstream"
    );
    // Two tokens: the gateway would verify the first, an upstream might read the last.
    let valid = sign(&k, "HS256", &claims());
    let forged = hs256_raw(b"not-the-key", r#"{"alg":"HS256","kid":"HS256"}"#, &payload);
    let two = c
        .get(gw.url("/api/items"))
        .header("authorization", format!("Bearer {valid}"))
        .header("authorization", format!("Bearer {forged}"))
        .send()
        .await
        .unwrap();
    assert_eq!(two.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(up.seen().len(), accepted);
    // A public route needs no token.
    let r = c.get(gw.url("/public")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn revocation_by_jti_and_by_subject_through_the_admin_api() {
    let up = Recorder::start().await;
    let k = keys();
    let dir = std::env::temp_dir().join(format!("portcullis-revoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = policy(&up, &k, &dir)
        + "admin: { listen: 127.0.0.1:0, token: admin-token-for-tests-0001 }\n";
    let gw = Gw::start(&text).await;
    let admin = gw.admin.clone().unwrap();
    let c = client();
    let status = |t: String| {
        let (c, url) = (c.clone(), gw.url("/api/items"));
        async move { c.get(url).bearer_auth(t).send().await.unwrap().status() }
    };
    let one = sign(
        &k,
        "HS256",
        &json!({ "sub": "usr_a", "iss": "https://idp.test", "aud": "api", "iat": now(), "exp": now() + 600, "jti": "jti-one", "type": "access" }),
    );
    let two = sign(
        &k,
        "ES256",
        &json!({ "sub": "usr_a", "iss": "https://idp.test", "aud": "api", "iat": now(), "exp": now() + 600, "jti": "jti-two", "type": "access" }),
    );
    assert_eq!(status(one.clone()).await, StatusCode::OK);
    let denied = send(
        &c,
        Method::POST,
        &format!("{admin}/revocations"),
        None,
        Some(json!({ "jti": "jti-one" })),
    )
    .await;
    assert_eq!(
        denied.status,
        StatusCode::UNAUTHORIZED,
        "the admin API needs its token"
    );
    let tok = Some("admin-token-for-tests-0001");
    let r = send(
        &c,
        Method::POST,
        &format!("{admin}/revocations"),
        tok,
        Some(json!({ "jti": "jti-one", "exp": now() + 600 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(status(one).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(two.clone()).await, StatusCode::OK, "only that token");
    // Logout everywhere: every token of the subject issued until now.
    let r = send(
        &c,
        Method::POST,
        &format!("{admin}/revocations"),
        tok,
        Some(json!({ "sub": "usr_a" })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(status(two).await, StatusCode::UNAUTHORIZED);
    let later = sign(
        &k,
        "HS256",
        &json!({ "sub": "usr_a", "iss": "https://idp.test", "aud": "api", "iat": now() + 2, "exp": now() + 600, "jti": "jti-three", "type": "access" }),
    );
    assert_eq!(
        status(later).await,
        StatusCode::OK,
        "a token issued after the cut-off works"
    );
    let list = send(&c, Method::GET, &format!("{admin}/revocations"), tok, None)
        .await
        .json();
    assert_eq!(list["tokens"][0][0], "jti-one");
    assert_eq!(list["subjects"][0][0], "usr_a");
    let bad = send(
        &c,
        Method::POST,
        &format!("{admin}/revocations"),
        tok,
        Some(json!({ "nothing": 1 })),
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refresh_tokens_pass_once_and_reuse_revokes_the_family() {
    let up = Recorder::start().await;
    let k = keys();
    let dir = std::env::temp_dir().join(format!("portcullis-refresh-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = policy(&up, &k, &dir).replace(
        "routes: [GET /api/items, GET /public]",
        "routes: [GET /api/items, GET /public, POST /auth/refresh]",
    ) + "  refresh: { route: POST /auth/refresh, token_pointer: /refresh_token }\n";
    let gw = Gw::start(&text).await;
    let c = client();
    let iat = now() - 5;
    let refresh = sign(
        &k,
        "HS256",
        &json!({ "sub": "usr_r", "iss": "https://idp.test", "aud": "api", "iat": iat, "exp": now() + 6000, "jti": "rt-1", "type": "refresh" }),
    );
    let access = sign(
        &k,
        "HS256",
        &json!({ "sub": "usr_r", "iss": "https://idp.test", "aud": "api", "iat": iat, "exp": now() + 600, "jti": "at-1", "type": "access" }),
    );
    let post = |body: Value| {
        let (c, url) = (c.clone(), gw.url("/auth/refresh"));
        async move { send(&c, Method::POST, &url, None, Some(body)).await.status }
    };
    assert_eq!(
        post(json!({ "refresh_token": access.clone() })).await,
        StatusCode::UNAUTHORIZED,
        "an access token is no refresh token"
    );
    assert_eq!(
        post(json!({ "refresh_token": refresh.clone() })).await,
        StatusCode::OK
    );
    let forwarded = up.seen().last().unwrap().clone();
    assert_eq!(forwarded.target, "/auth/refresh");
    assert_eq!(
        serde_json::from_slice::<Value>(&forwarded.body).unwrap()["refresh_token"],
        refresh.as_str(),
        "the body goes on as it came"
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/items"), Some(&access), None)
            .await
            .status,
        StatusCode::OK
    );
    // Stolen and replayed: refused, and the whole family with it.
    assert_eq!(
        post(json!({ "refresh_token": refresh })).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/items"), Some(&access), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(post(json!({ "other": 1 })).await, StatusCode::UNAUTHORIZED);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A refresh refused before the upstream judged it (here by a rate limit) gives its use back:
/// the client's retry is answered, where it was taken for theft and revoked the user's whole
/// family.
#[tokio::test]
async fn a_refresh_refused_before_the_upstream_can_be_retried() {
    let up = Recorder::start().await;
    let k = keys();
    let dir = std::env::temp_dir().join(format!("portcullis-refresh-retry-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = policy(&up, &k, &dir).replace(
        "routes: [GET /api/items, GET /public]",
        "routes: [GET /api/items, GET /public, POST /auth/refresh]",
    ) + "  refresh: { route: POST /auth/refresh, token_pointer: /refresh_token }\nrate_limits: [{ match: POST /auth/refresh, key: ip, rate: 1/second, burst: 1 }]\n";
    let gw = Gw::start(&text).await;
    let c = client();
    let iat = now() - 5;
    let token = |jti: &str, typ: &str| {
        sign(
            &k,
            "HS256",
            &json!({ "sub": "usr_r", "iss": "https://idp.test", "aud": "api", "iat": iat, "exp": now() + 600, "jti": jti, "type": typ }),
        )
    };
    let access = token("at-1", "access");
    let post = |t: String| {
        let (c, url) = (c.clone(), gw.url("/auth/refresh"));
        async move {
            send(
                &c,
                Method::POST,
                &url,
                None,
                Some(json!({ "refresh_token": t })),
            )
            .await
            .status
        }
    };
    assert_eq!(post(token("rt-a", "refresh")).await, StatusCode::OK);
    // Over the rate: refused before the upstream saw it.
    assert_eq!(
        post(token("rt-b", "refresh")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(post(token("rt-b", "refresh")).await, StatusCode::OK);
    assert_eq!(
        send(&c, Method::GET, &gw.url("/api/items"), Some(&access), None)
            .await
            .status,
        StatusCode::OK,
        "the family is not revoked"
    );
    // Used once through to the upstream, it is still single-use.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        post(token("rt-b", "refresh")).await,
        StatusCode::UNAUTHORIZED
    );
    let _ = std::fs::remove_dir_all(&dir);
}
