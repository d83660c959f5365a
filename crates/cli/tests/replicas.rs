//! Two `portcullis serve` processes sharing one real Redis behave as one gateway: one global
//! rate limit (N allowed in total across both, not 2N), a revocation made through one replica
//! honoured by the other at once; and when Redis dies, the documented fallback (local limits
//! at 1/replicas of the budget, revocation checks failing closed, both in the metrics and the
//! log), then recovery without a restart when it comes back.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use portcullis_test_support::reqwest::{Method, StatusCode};
use portcullis_test_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");
const ADMIN_TOKEN: &str = "admin-token-for-replica-tests";

fn policy(
    dir: &std::path::Path,
    upstream: std::net::SocketAddr,
    redis: &str,
) -> std::path::PathBuf {
    let key = dir.join("jwt.key");
    std::fs::write(&key, JWT_SECRET).unwrap();
    let path = dir.join("portcullis.yaml");
    std::fs::write(
        &path,
        format!(
            "listen: 127.0.0.1:0
upstream: http://{upstream}
routes: [GET /api/items, GET /api/public]
admin: {{ listen: 127.0.0.1:0, token: {ADMIN_TOKEN} }}
state:
  backend: redis
  redis: {{ url: \"{redis}\", replicas: 2, timeout: 200ms, retry_interval: 300ms }}
auth:
  jwt:
    keys: [{{ alg: HS256, secret_file: {} }}]
  public: [GET /api/public]
rate_limits:
  - {{ match: GET /api/public, key: \"header:x-api-key\", rate: 10/hour, burst: 10 }}
",
            key.display()
        ),
    )
    .unwrap();
    path
}

/// Sends `n` concurrent requests with this API key, alternating between the replicas;
/// returns how many got through.
async fn burst(replicas: &[&str], key: &str, n: usize) -> usize {
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, url, key) = (
            c.clone(),
            format!("{}/api/public", replicas[i % replicas.len()]),
            key.to_owned(),
        );
        tasks.push(tokio::spawn(async move {
            c.get(url)
                .header("x-api-key", key)
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("unexpected {other}"),
        }
    }
    ok
}

async fn status(url: &str, token: &str) -> StatusCode {
    send(&client(), Method::GET, url, Some(token), None)
        .await
        .status
}

async fn revoke(admin: &str, jti: &str, exp: i64) -> StatusCode {
    send(
        &client(),
        Method::POST,
        &format!("{admin}/revocations"),
        Some(ADMIN_TOKEN),
        Some(serde_json::json!({ "jti": jti, "exp": exp })),
    )
    .await
    .status
}

async fn readiness(admin: &str) -> Reply {
    send(
        &client(),
        Method::GET,
        &format!("{admin}/readyz"),
        None,
        None,
    )
    .await
}

async fn metrics(admin: &str) -> String {
    send(
        &client(),
        Method::GET,
        &format!("{admin}/metrics"),
        Some(ADMIN_TOKEN),
        None,
    )
    .await
    .text
}

fn token(jti: &str) -> String {
    let now = now();
    sign_hs256(
        JWT_SECRET,
        &serde_json::json!({ "sub": "usr_r", "iat": now, "exp": now + 600, "jti": jti, "type": "access" }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_redis_act_as_one_and_survive_its_loss() {
    let mut redis = RedisServer::start();
    let up = Recorder::start().await;
    let dir = std::env::temp_dir().join(format!("portcullis-replicas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = policy(&dir, up.addr, &redis.url());
    let a = Served::start(BIN, &path).await;
    let b = Served::start(BIN, &path).await;
    let (a_admin, b_admin) = (a.admin.clone().unwrap(), b.admin.clone().unwrap());
    let both = [a.base.as_str(), b.base.as_str()];

    // One global limit: 10 in total across both replicas, under concurrent load.
    assert_eq!(
        burst(&both, "key-1", 40).await,
        10,
        "10 allowed across both, not 20"
    );
    assert_eq!(burst(&both, "key-1", 4).await, 0);

    // A revocation through A is honoured by B at once.
    let t = token("jti-shared");
    assert_eq!(
        status(&format!("{}/api/items", b.base), &t).await,
        StatusCode::OK
    );
    assert_eq!(
        revoke(&a_admin, "jti-shared", now() + 600).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status(&format!("{}/api/items", b.base), &t).await,
        StatusCode::UNAUTHORIZED
    );

    // Redis dies.
    redis.kill();
    let live = token("jti-live");
    assert_eq!(
        status(&format!("{}/api/items", a.base), &live).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "revocations cannot be checked: fail closed"
    );
    // Local fallback: each replica enforces its share, 10 / 2 replicas = 5.
    assert_eq!(burst(&[a.base.as_str()], "key-2", 12).await, 5);
    assert_eq!(burst(&[b.base.as_str()], "key-2", 12).await, 5);
    assert_eq!(
        revoke(&b_admin, "jti-during", now() + 600).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "the admin is told the revocation is not shared"
    );
    let m = metrics(&a_admin).await;
    assert!(m.contains("portcullis_state_backend_up 0"), "{m}");
    // Still taking requests, from the fallback: ready, and saying so.
    let ready = readiness(&a_admin).await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(
        ready.json(),
        serde_json::json!({ "status": "ready", "state": "fallback" })
    );
    assert!(
        m.contains("portcullis_state_fallbacks_total{op=\"rate\"}"),
        "{m}"
    );
    a.wait_for_log("redis unreachable").await;

    // Redis comes back (empty): the replicas use it again without a restart.
    let _redis = RedisServer::start_on(redis.port);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut back = false;
    for _ in 0..50 {
        if status(&format!("{}/api/items", a.base), &live).await == StatusCode::OK
            && status(&format!("{}/api/items", b.base), &live).await == StatusCode::OK
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the replicas did not return to Redis");
    assert_eq!(
        burst(&both, "key-3", 30).await,
        10,
        "one global limit again"
    );
    assert_eq!(
        revoke(&b_admin, "jti-live", now() + 600).await,
        StatusCode::CREATED
    );
    assert_eq!(
        status(&format!("{}/api/items", a.base), &live).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(
        metrics(&a_admin)
            .await
            .contains("portcullis_state_backend_up 1")
    );
    assert_eq!(readiness(&a_admin).await.json()["state"], "ok");
    a.wait_for_log("redis reachable again").await;
    let _ = std::fs::remove_dir_all(&dir);
}
