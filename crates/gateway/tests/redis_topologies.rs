//! The Redis backend on a Redis Cluster (three masters) and behind a Sentinel: two gateways
//! share one budget (so the state is in Redis, not in a fallback), single-use refresh tokens
//! and revocations are shared, and quotas count across both. Every server is a real
//! `redis-server` on a loopback port.

#![allow(clippy::unwrap_used)]

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;

fn policy(upstream: std::net::SocketAddr, state: &str) -> String {
    let secret = String::from_utf8(JWT_SECRET.to_vec()).unwrap();
    format!(
        "listen: 127.0.0.1:0
upstream: http://{upstream}
routes: [GET /api/items, GET /api/public, POST /api/redeem]
admin: {{ listen: 127.0.0.1:0 }}
state:
  backend: redis
  redis: {state}
auth:
  jwt:
    keys: [{{ alg: HS256, secret: \"{secret}\" }}]
  public: [GET /api/public]
rate_limits:
  - {{ match: GET /api/public, key: ip, rate: 100/hour, burst: 100 }}
  - {{ match: GET /api/public, key: \"header:x-api-key\", rate: 5/hour, burst: 5 }}
quotas:
  - {{ match: POST /api/redeem, key: user, limit: 3/day }}
"
    )
}

async fn exercise(state: &str) {
    let up = Recorder::start().await;
    let a = Gw::start(&policy(up.addr, state)).await;
    let b = Gw::start(&policy(up.addr, state)).await;
    let c = client();

    // One budget across both gateways, two rules decided per request.
    let mut ok = 0;
    for i in 0..12 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = c
            .get(gw.url("/api/public"))
            .header("x-api-key", "shared")
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 5, "one budget in Redis, not 5 per gateway");

    // Quotas count across both.
    let now = now();
    let token = sign_hs256(
        JWT_SECRET,
        &serde_json::json!({ "sub": "usr_q", "iat": now, "exp": now + 600, "jti": "jti-q", "type": "access" }),
    );
    let mut redeemed = 0;
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = send(
            &c,
            Method::POST,
            &gw.url("/api/redeem"),
            Some(&token),
            Some(serde_json::json!({})),
        )
        .await;
        if r.status == StatusCode::OK {
            redeemed += 1;
        }
    }
    assert_eq!(redeemed, 3);

    // A revocation through one admin API is honoured by the other gateway.
    assert_eq!(
        send(&c, Method::GET, &b.url("/api/items"), Some(&token), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = send(
        &c,
        Method::POST,
        &format!("{}/revocations", a.admin.clone().unwrap()),
        None,
        Some(serde_json::json!({ "jti": "jti-q", "exp": now + 600 })),
    )
    .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(
        send(&c, Method::GET, &b.url("/api/items"), Some(&token), None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let listed = send(
        &c,
        Method::GET,
        &format!("{}/revocations", b.admin.clone().unwrap()),
        None,
        None,
    )
    .await;
    assert!(listed.text.contains("jti-q"), "{}", listed.text);

    let m = send(
        &c,
        Method::GET,
        &format!("{}/metrics", a.admin.clone().unwrap()),
        None,
        None,
    )
    .await
    .text;
    assert!(m.contains("portcullis_state_backend_up 1"), "{m}");
    assert!(
        !m.contains("portcullis_state_fallbacks_total{"),
        "no fallback: {m}"
    );
}

#[tokio::test]
async fn a_redis_cluster_holds_the_shared_state() {
    let dir = std::env::temp_dir().join(format!("portcullis-cluster-{}", std::process::id()));
    let nodes = RedisServer::start_cluster(&dir);
    let seeds: Vec<String> = nodes.iter().map(|n| format!("\"{}\"", n.url())).collect();
    exercise(&format!(
        "{{ cluster: [{}], timeout: 1s }}",
        seeds.join(", ")
    ))
    .await;
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_sentinel_names_the_master_that_holds_the_shared_state() {
    let dir = std::env::temp_dir().join(format!("portcullis-sentinel-{}", std::process::id()));
    let master = RedisServer::start();
    let sentinel = RedisServer::start_sentinel(master.port, &dir);
    exercise(&format!(
        "{{ sentinel: {{ master: mymaster, nodes: [\"{}\"] }}, timeout: 1s }}",
        sentinel.url()
    ))
    .await;
    // Every key the gateways wrote expires by itself.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &master.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let keys = cli(&["--scan"]);
    assert!(keys.lines().count() >= 5, "{keys}");
    for key in keys.lines() {
        let ttl: i64 = cli(&["TTL", key]).trim().parse().unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
    drop(sentinel);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sentinels and master behind one password (in the sentinels' URLs): the master is asked
/// with it too. It was asked with none, refused every command, and the gateways fell back to
/// their own state.
#[tokio::test]
async fn a_sentinel_and_its_master_with_a_password() {
    let dir = std::env::temp_dir().join(format!("portcullis-sentinel-pw-{}", std::process::id()));
    let master = RedisServer::start_with_password("s3cret-pw");
    let sentinel = RedisServer::start_sentinel_with_password(master.port, &dir, "s3cret-pw");
    exercise(&format!(
        "{{ sentinel: {{ master: mymaster, nodes: [\"redis://:s3cret-pw@127.0.0.1:{}\"] }}, timeout: 1s }}",
        sentinel.port
    ))
    .await;
    drop(sentinel);
    let _ = std::fs::remove_dir_all(&dir);
}
