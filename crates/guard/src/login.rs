//! Login brute-force protection (API2), designed so that an attacker cannot lock the victim
//! out from everywhere:
//!
//! - failures are counted per account **and client address**; past `per_client_failures` that
//!   pair is delayed, exponentially (base delay doubled per further failure, capped);
//! - failures are also counted per account from all addresses; past `per_account_failures`
//!   the account is delayed for every address **except those that have logged in to it
//!   successfully before**, so a brute force spread over a botnet stops, while the owner, from
//!   an address the account already knows, still gets in;
//! - delays, not hard locks: they end by themselves, and the cap bounds how long a victim who
//!   moves to a new address waits.
//!
//! A blocked attempt is answered 429 with `Retry-After` without reaching the upstream, so it
//! costs the attacker a round trip and the upstream nothing.

use portcullis_policy::LoginRule;

use crate::store::{Store, StoreError};

/// The account a login body names, normalised (trimmed, lower-case).
pub fn account(body: &[u8], pointer: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let a = v.pointer(pointer)?.as_str()?.trim().to_lowercase();
    (!a.is_empty() && a.len() <= 320).then_some(a)
}

/// The pair, account and known-address keys. The client address (which never contains `|`)
/// comes first, so no account name can spell another key: `alice|203.0.113.5` as an account
/// is not alice at 203.0.113.5.
fn keys(account: &str, client: &str) -> (String, String, String) {
    (
        format!("login-pair|{client}|{account}"),
        format!("login-acct|{account}"),
        format!("login-known|{client}|{account}"),
    )
}

/// Why an attempt must not reach the upstream.
#[derive(Debug, PartialEq, Eq)]
pub enum Held {
    /// Wait this many seconds.
    Wait(u64),
    /// The store could not say: the attempt is held back (fail closed).
    Unknown,
}

/// `Err` when this attempt must not reach the upstream. One look at the store: both holds
/// at once; the known-address exemption only when the account is held.
pub async fn check(store: &dyn Store, account: &str, client: &str, now: i64) -> Result<(), Held> {
    let (pair, acct, known) = keys(account, client);
    let wait = |until: i64| Held::Wait(u64::try_from(until - now).unwrap_or(1).max(1));
    let holds = store
        .blocked_until(&[&pair, &acct])
        .await
        .map_err(|_| Held::Unknown)?;
    let (pair_until, acct_until) = (
        holds.first().copied().unwrap_or(0),
        holds.get(1).copied().unwrap_or(0),
    );
    if pair_until > now {
        return Err(wait(pair_until));
    }
    if acct_until > now
        && !store
            .remembered(&known, now)
            .await
            .map_err(|_| Held::Unknown)?
    {
        return Err(wait(acct_until));
    }
    Ok(())
}

fn delay(rule: &LoginRule, over: u32) -> i64 {
    let base = rule.base_delay.as_secs().max(1);
    let d = base.saturating_mul(1u64 << over.min(30));
    i64::try_from(d.min(rule.max_delay.as_secs().max(1))).unwrap_or(i64::MAX)
}

/// Records the outcome of a login attempt that reached the upstream.
pub async fn record(
    store: &dyn Store,
    rule: &LoginRule,
    account: &str,
    client: &str,
    success: bool,
    now: i64,
) -> Result<(), StoreError> {
    let (pair, acct, known) = keys(account, client);
    if success {
        store.clear(&pair).await?;
        // Known for 30 days: the account-wide delay does not apply to this address.
        return store.remember(&known, now + 30 * 86_400).await;
    }
    let window = i64::try_from(rule.window.as_secs()).unwrap_or(900);
    let n = store.fail(&pair, now, window).await?;
    if n >= rule.per_client_failures {
        store
            .block(&pair, now + delay(rule, n - rule.per_client_failures))
            .await?;
    }
    let m = store.fail(&acct, now, window).await?;
    if m >= rule.per_account_failures {
        store
            .block(&acct, now + delay(rule, m - rule.per_account_failures))
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::MemoryStore;

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

    #[test]
    fn delays_grow_exponentially_to_the_cap() {
        let r = rule();
        assert_eq!([0, 1, 2, 3, 10].map(|k| delay(&r, k)), [2, 4, 8, 16, 60]);
    }

    #[tokio::test]
    async fn one_address_is_slowed_after_its_own_failures() {
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        for _ in 0..3 {
            assert!(check(&s, "a@x", "1.1.1.1", now).await.is_ok());
            record(&s, &r, "a@x", "1.1.1.1", false, now)
                .await
                .expect("store");
        }
        assert_eq!(check(&s, "a@x", "1.1.1.1", now).await, Err(Held::Wait(2)));
        assert!(
            check(&s, "a@x", "2.2.2.2", now).await.is_ok(),
            "other addresses are not affected yet"
        );
        assert!(
            check(&s, "a@x", "1.1.1.1", now + 3).await.is_ok(),
            "a delay, not a lock"
        );
    }

    #[tokio::test]
    async fn a_distributed_attack_slows_new_addresses_but_not_the_owners() {
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        record(&s, &r, "a@x", "10.0.0.1", true, now)
            .await
            .expect("store");
        for i in 0..10 {
            let ip = format!("6.6.6.{i}");
            record(&s, &r, "a@x", &ip, false, now).await.expect("store");
        }
        assert!(
            check(&s, "a@x", "6.6.6.200", now).await.is_err(),
            "a new address waits"
        );
        assert!(
            check(&s, "a@x", "10.0.0.1", now).await.is_ok(),
            "the owner's address does not"
        );
    }

    #[tokio::test]
    async fn no_account_name_spells_another_accounts_key() {
        // Failing on the made-up account `alice|9.9.9.9` must not hold alice at 9.9.9.9.
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        for i in 0..12 {
            let client = format!("1.1.1.{i}");
            record(&s, &r, "alice|9.9.9.9", &client, false, now)
                .await
                .expect("store");
        }
        assert!(
            check(&s, "alice|9.9.9.9", "1.1.1.200", now).await.is_err(),
            "the made-up account itself is held"
        );
        assert!(check(&s, "alice", "9.9.9.9", now).await.is_ok());
    }

    #[test]
    fn accounts_are_normalised() {
        assert_eq!(
            account(br#"{"email":"  Alice@Example.COM "}"#, "/email").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(account(br#"{"email":42}"#, "/email"), None);
        assert_eq!(account(b"not json", "/email"), None);
    }
}
