//! Token verification per algorithm through the gateway's `Verifier` (header checks, duplicate
//! keys, key pinning, claims, type) next to a plain `jsonwebtoken::decode` with the same key:
//! the ratio is the price of the extra checks. Also the revocation lookup of the hot path.
//!
//! `cargo bench -p portcullis-guard --bench jwt`

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use portcullis_guard::jwt::{Verifier, now};
use portcullis_guard::store::{LocalStore, MemoryStore};
use portcullis_policy::{Jwt, JwtAlg, JwtKey, KeyMaterial, TokenType};

fn claims() -> serde_json::Value {
    let n = now();
    serde_json::json!({ "sub": "usr_1", "iat": n, "exp": n + 3600, "jti": "j1", "type": "access" })
}

fn jwt(alg: JwtAlg, material: KeyMaterial) -> Jwt {
    Jwt {
        keys: vec![JwtKey {
            kid: None,
            alg,
            material,
        }],
        jwks: None,
        issuer: vec![],
        audience: vec![],
        require: vec!["exp".into(), "sub".into(), "jti".into()],
        leeway: Duration::from_secs(30),
        max_token_bytes: 8192,
        token_type: TokenType::Claim {
            name: "type".into(),
            value: "access".into(),
        },
        cookie: None,
        forward_claims: vec![],
    }
}

fn bench(c: &mut Criterion) {
    let secret = b"0123456789abcdefghijklmnopqrstuvwxyzABCD".to_vec();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let rsa = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
        .unwrap();
    let cases: Vec<(
        &str,
        JwtAlg,
        Algorithm,
        EncodingKey,
        DecodingKey,
        KeyMaterial,
    )> = vec![
        (
            "HS256",
            JwtAlg::HS256,
            Algorithm::HS256,
            EncodingKey::from_secret(&secret).unwrap(),
            DecodingKey::from_secret(&secret).unwrap(),
            KeyMaterial::Secret(secret.clone()),
        ),
        (
            "RS256",
            JwtAlg::RS256,
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
            DecodingKey::from_rsa_pem(rsa.public_key_pem().as_bytes()).unwrap(),
            KeyMaterial::PublicPem(rsa.public_key_pem().into_bytes()),
        ),
        (
            "ES256",
            JwtAlg::ES256,
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            DecodingKey::from_ec_pem(ec.public_key_pem().as_bytes()).unwrap(),
            KeyMaterial::PublicPem(ec.public_key_pem().into_bytes()),
        ),
        (
            "EdDSA",
            JwtAlg::EdDSA,
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap(),
            DecodingKey::from_ed_pem(ed.public_key_pem().as_bytes()).unwrap(),
            KeyMaterial::PublicPem(ed.public_key_pem().into_bytes()),
        ),
    ];
    let mut g = c.benchmark_group("verify");
    for (name, alg, algorithm, enc, dec, material) in cases {
        let token = jsonwebtoken::encode(&Header::new(algorithm), &claims(), &enc).unwrap();
        let verifier = Verifier::new(&jwt(alg, material)).unwrap();
        let ty = TokenType::Claim {
            name: "type".into(),
            value: "access".into(),
        };
        let t = now();
        assert!(verifier.verify(&token, &ty, t).is_ok());
        g.bench_function(format!("{name}/portcullis"), |b| {
            b.iter(|| verifier.verify(black_box(&token), &ty, t).is_ok())
        });
        let v = Validation::new(algorithm);
        g.bench_function(format!("{name}/jsonwebtoken"), |b| {
            b.iter(|| {
                jsonwebtoken::decode::<serde_json::Value>(black_box(&token), &dec, &v).is_ok()
            })
        });
    }
    g.finish();
    let store = MemoryStore::default();
    for i in 0..10_000 {
        store
            .revoke_token(&format!("jti-{i}"), now() + 3600)
            .unwrap();
    }
    c.bench_function("revocation/lookup_10k", |b| {
        b.iter(|| store.is_revoked(black_box(Some("jti-unknown")), Some("usr_1"), Some(1)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
