//! Login attempts through each state backend the gateway ships (memory, embedded, a real
//! `redis-server`): an attempt is counted in the same atomic step that looks at the holds, so
//! a burst of parallel guesses gets the tries the same guesses one after another would.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use portcullis_gateway::metrics::Metrics;
use portcullis_gateway::redis::RedisStore;
use portcullis_guard::login::{self, Held, Outcome};
use portcullis_guard::store::{Backoff, EmbeddedStore, MemoryStore, Store};
use portcullis_policy::{LoginRule, RedisServers, RedisState, SecretSource};
use portcullis_test_support::*;

fn rule() -> LoginRule {
    LoginRule {
        route: 0,
        account_pointer: "/email".into(),
        per_client_failures: 3,
        per_account_failures: 10,
        window: Duration::from_secs(900),
        base_delay: Duration::from_secs(2),
        max_delay: Duration::from_secs(60),
        failure_statuses: vec![401],
        uniform_failures: true,
    }
}

/// The Redis state of a test: `redis`, keys under `prefix`, the given waits and replicas.
fn redis_state(
    redis: &RedisServer,
    prefix: &str,
    timeout: Duration,
    retry_interval: Duration,
    replicas: u32,
) -> RedisState {
    RedisState {
        servers: RedisServers::Single(SecretSource::Inline(redis.url())),
        prefix: prefix.into(),
        timeout,
        retry_interval,
        replicas,
        revocations_fail_open: false,
    }
}

/// What `redis-cli` prints for `args` against `redis`.
fn redis_cli(redis: &RedisServer, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &redis.port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `count` parallel attempts on `account`, from `client(i)`; the ones let through.
async fn burst(
    store: &Arc<dyn Store>,
    account: &str,
    count: u8,
    now: i64,
    client: impl Fn(u8) -> String,
) -> Vec<(String, login::Attempt)> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..count {
        let (store, account, client) = (store.clone(), account.to_owned(), client(i));
        set.spawn(async move {
            let held = login::check(store.as_ref(), &rule(), &account, &client, now).await;
            match held {
                Ok(a) => Some((client, a)),
                Err(Held::Wait(s)) => {
                    assert!(s >= 1);
                    None
                }
                Err(Held::Unknown) => panic!("the store could not say"),
            }
        });
    }
    let mut through = Vec::new();
    while let Some(r) = set.join_next().await {
        through.extend(r.unwrap());
    }
    through
}

/// Settles every attempt of a burst on `a@x` as `outcome`.
async fn settle(
    store: &Arc<dyn Store>,
    through: Vec<(String, login::Attempt)>,
    outcome: Outcome,
    now: i64,
) {
    for (client, a) in through {
        login::settle(store.as_ref(), &rule(), "a@x", &client, a, outcome, now)
            .await
            .unwrap();
    }
}

async fn exercise(store: Arc<dyn Store>) {
    let now = now();
    // One address: three tries of twenty parallel guesses.
    let through = burst(&store, "a@x", 20, now, |_| "10.0.0.1".into()).await;
    assert_eq!(through.len(), 3, "one address");
    settle(&store, through, Outcome::Failed, now).await;
    // Twenty addresses: the seven left of the account's ten.
    let through = burst(&store, "a@x", 20, now, |i| format!("10.0.1.{i}")).await;
    assert_eq!(through.len(), 7, "many addresses");
    // Settled otherwise, they give their tries back.
    settle(&store, through, Outcome::Undecided, now).await;
    assert_eq!(
        burst(&store, "a@x", 20, now, |i| format!("10.0.2.{i}"))
            .await
            .len(),
        7
    );
    // The raw operation: refused while held, counted and held as a failure would be.
    let b = Backoff {
        limit: 2,
        window: 60,
        base: 5,
        max: 60,
    };
    assert_eq!(store.attempt("k", now, b).await.unwrap(), Ok(1));
    assert_eq!(store.attempt("k", now, b).await.unwrap(), Ok(2));
    assert_eq!(store.attempt("k", now + 1, b).await.unwrap(), Err(now + 5));
    assert_eq!(store.blocked_until(&["k"]).await.unwrap(), vec![now + 5]);
    store.release("k", 2).await.unwrap();
    assert_eq!(store.blocked_until(&["k"]).await.unwrap(), vec![0]);
    assert_eq!(store.attempt("k", now + 1, b).await.unwrap(), Ok(2));
    assert_eq!(store.attempt("k", now + 6, b).await.unwrap(), Ok(3));
    assert_eq!(store.blocked_until(&["k"]).await.unwrap(), vec![now + 16]);
    // The count lasts the window past the hold, not past the first failure: after the hold,
    // the next try is the fourth, held twice as long. (Redis counts its own time, which does
    // not pass here; its count's lifetime is read below.)
    assert_eq!(store.attempt("k", now + 70, b).await.unwrap(), Ok(4));
    assert_eq!(store.blocked_until(&["k"]).await.unwrap(), vec![now + 90]);
    // A refresh token's single use, and the use given back.
    assert!(store.use_once("rt-1", now + 600, now).await.unwrap());
    assert!(!store.use_once("rt-1", now + 600, now).await.unwrap());
    store.unuse("rt-1").await.unwrap();
    assert!(store.use_once("rt-1", now + 600, now).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory() {
    exercise(Arc::new(MemoryStore::default())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded() {
    let dir = std::env::temp_dir().join(format!("portcullis-login-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    exercise(Arc::new(EmbeddedStore::open(&dir).unwrap())).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_redis() {
    let redis = RedisServer::start();
    let state = redis_state(
        &redis,
        "login-test:",
        Duration::from_secs(2),
        Duration::from_secs(1),
        1,
    );
    let store = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    exercise(store.clone()).await;
    // Nothing of it came from the fallback: the keys are in Redis.
    let keys = redis_cli(&redis, &["--scan", "--pattern", "login-test:*"]);
    assert!(keys.contains("login-pair"), "{keys}");
    assert!(keys.contains("login-acct"), "{keys}");
    // The raw attempts' count lasts the window (60 s) past the last one's hold (20 s).
    let ttl: i64 = redis_cli(&redis, &["TTL", "login-test:{h:k}:n"])
        .trim()
        .parse()
        .unwrap();
    assert!((75..=80).contains(&ttl), "the count expires in {ttl} s");
}

/// A subject's cut-off has no end in Redis either: a long-lived token issued before it stays
/// refused however long after (it expired from Redis after 31 days, and with it the refusal).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_revocations_in_redis_do_not_expire() {
    let redis = RedisServer::start();
    let state = redis_state(
        &redis,
        "sub-test:",
        Duration::from_secs(2),
        Duration::from_secs(1),
        1,
    );
    let store = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    let now = portcullis_guard::jwt::now();
    let cli = |args: &[&str]| redis_cli(&redis, args);
    // As an older gateway left them: the cut-off and the index with an end.
    let (old, index) = ("sub-test:{s:usr_stolen}", "sub-test:{index:subjects}");
    cli(&["SET", old, &now.to_string(), "EX", "1000"]);
    cli(&["ZADD", index, &now.to_string(), "usr_stolen"]);
    cli(&["EXPIRE", index, "1000"]);
    store.revoke_subject("usr_stolen", now).await.unwrap();
    let keys = cli(&["--scan", "--pattern", "sub-test:*"]);
    assert_eq!(keys.lines().count(), 2, "the cut-off and its index: {keys}");
    for key in keys.lines() {
        assert_eq!(cli(&["TTL", key]).trim(), "-1", "{key} expires");
    }
    // Another replica (no memory of the revocation) reads it from Redis, a year on.
    let other = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    assert!(
        other
            .is_revoked(None, Some("usr_stolen"), Some(now - 10))
            .await
            .unwrap()
    );
    let listed = other.revocations(now + 365 * 86_400).await.unwrap();
    assert_eq!(listed.subjects, vec![("usr_stolen".to_owned(), now)]);
}

/// A refresh-token use whose answer from Redis was lost (here: writes held back longer than the
/// store waits) may have been recorded all the same. The client's retry finds its own mark and
/// goes through; it was taken for a theft, which revokes every token of the user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_whose_answer_was_lost_is_no_theft_when_tried_again() {
    let redis = RedisServer::start();
    let state = redis_state(
        &redis,
        "lost-test:",
        Duration::from_millis(200),
        Duration::from_millis(100),
        1,
    );
    let store = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    let now = portcullis_guard::jwt::now();
    assert!(redis_cli(&redis, &["CLIENT", "PAUSE", "800", "WRITE"]).contains("OK"));
    assert!(store.use_once("rt-lost", now + 600, now).await.is_err());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        redis_cli(&redis, &["EXISTS", "lost-test:{u:rt-lost}"]).trim(),
        "1",
        "the first use did land"
    );
    assert!(
        store.use_once("rt-lost", now + 600, now).await.unwrap(),
        "the retry is the first use"
    );
    assert!(
        !store.use_once("rt-lost", now + 600, now).await.unwrap(),
        "a copy after it is a theft"
    );
    // Another replica, which never tried, sees a used token.
    let other = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    assert!(!other.use_once("rt-lost", now + 600, now).await.unwrap());
}

/// While Redis is away a replica cannot see the others' quota uses: each counts its own
/// against its share of the limit (`limit / replicas`), as rate limits do, so together they
/// stay within it. (Each replica gave the whole limit again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_while_redis_is_away_count_each_replica_against_its_share() {
    let redis = RedisServer::start();
    let state = redis_state(
        &redis,
        "away-test:",
        Duration::from_millis(200),
        Duration::from_secs(60),
        2,
    );
    let store = RedisStore::connect(&state, Metrics::new(1)).unwrap();
    drop(redis);
    let now = portcullis_guard::jwt::now();
    // A limit of 4 over two replicas: this one's first two uses count as 2 and 4; a third is
    // over the limit.
    assert_eq!(store.count("q", now, 3600, 4).await.unwrap(), 2);
    assert_eq!(store.count("q", now, 3600, 4).await.unwrap(), 4);
    assert!(store.count("q", now, 3600, 4).await.unwrap() > 4);
    // A limit below the replica count still gives each replica one use (as rate limits do),
    // not none.
    assert_eq!(store.count("q1", now, 3600, 1).await.unwrap(), 1);
    assert!(store.count("q1", now, 3600, 1).await.unwrap() > 1);
}
