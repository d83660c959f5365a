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
//!
//! An attempt is counted as a failure when it is let through, in the same atomic step that
//! looks at the holds ([`Store::attempt`]), and given back if it turns out otherwise: had the
//! count waited for the upstream's answer, a burst of parallel guesses would all pass the
//! look before the first was counted, and get as many tries as it has requests.

use portcullis_policy::LoginRule;

use crate::store::{Backoff, Store, StoreError};

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

/// The holds of a rule: per account and address, and per account.
fn backoffs(rule: &LoginRule) -> (Backoff, Backoff) {
    let window = i64::try_from(rule.window.as_secs()).unwrap_or(900);
    let base = i64::try_from(rule.base_delay.as_secs()).unwrap_or(1);
    let max = i64::try_from(rule.max_delay.as_secs()).unwrap_or(i64::MAX);
    let b = |limit| Backoff {
        limit,
        window,
        base,
        max,
    };
    (b(rule.per_client_failures), b(rule.per_account_failures))
}

/// An attempt let through to the upstream, counted as a failure until [`settle`] says how it
/// ended. One whose outcome is never told (its client left first) stays a failure: its guess
/// may have been judged.
#[derive(Debug)]
#[must_use = "an attempt stays a failure until it is settled"]
pub struct Attempt {
    /// Whether the account-wide count has it (not for an address the account knows, let
    /// through an account-wide hold).
    account_counted: bool,
}

/// How an attempt ended upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Neither (an error, a refusal before the upstream judged it): it does not count.
    Undecided,
}

/// Lets an attempt through, or says why not. The attempt is counted (as a failure, until
/// settled) in the same step that looks at the holds, so a burst of parallel attempts gets
/// the tries that the same attempts one after another would, and no more.
pub async fn check(
    store: &dyn Store,
    rule: &LoginRule,
    account: &str,
    client: &str,
    now: i64,
) -> Result<Attempt, Held> {
    let (pair, acct, known) = keys(account, client);
    let (per_client, per_account) = backoffs(rule);
    let wait = |until: i64| Held::Wait(u64::try_from(until - now).unwrap_or(1).max(1));
    // First one look at both holds, which changes nothing: the counts below cannot be taken
    // back exactly (an address past its tries, counted and then refused for the account,
    // would keep the hold its count started).
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
    let exempt = acct_until > now
        && store
            .remembered(&known, now)
            .await
            .map_err(|_| Held::Unknown)?;
    if acct_until > now && !exempt {
        return Err(wait(acct_until));
    }
    // Then the counts, each atomic with its own look: a parallel attempt may have started a
    // hold since.
    if let Err(until) = store
        .attempt(&pair, now, per_client)
        .await
        .map_err(|_| Held::Unknown)?
    {
        return Err(wait(until));
    }
    if exempt {
        return Ok(Attempt {
            account_counted: false,
        });
    }
    let held = match store.attempt(&acct, now, per_account).await {
        Ok(Ok(_)) => {
            return Ok(Attempt {
                account_counted: true,
            });
        }
        // Held since the look (a parallel attempt): the address's count goes back, as this
        // attempt never reaches the upstream.
        Ok(Err(until)) => match store.remembered(&known, now).await {
            Ok(true) => {
                return Ok(Attempt {
                    account_counted: false,
                });
            }
            Ok(false) => wait(until),
            Err(_) => Held::Unknown,
        },
        Err(_) => Held::Unknown,
    };
    let _ = store.release(&pair, per_client.limit).await;
    Err(held)
}

/// Settles an attempt [`check`] let through.
pub async fn settle(
    store: &dyn Store,
    rule: &LoginRule,
    account: &str,
    client: &str,
    attempt: Attempt,
    outcome: Outcome,
    now: i64,
) -> Result<(), StoreError> {
    let (pair, acct, known) = keys(account, client);
    let (per_client, per_account) = backoffs(rule);
    match outcome {
        Outcome::Succeeded => {
            store.clear(&pair).await?;
            if attempt.account_counted {
                store.release(&acct, per_account.limit).await?;
            }
            // Known for 30 days: the account-wide delay does not apply to this address.
            store.remember(&known, now + 30 * 86_400).await
        }
        // Counted when let through, except account-wide from a known address.
        Outcome::Failed if attempt.account_counted => Ok(()),
        Outcome::Failed => {
            let m = store.fail(&acct, now, per_account.window).await?;
            match per_account.hold(m) {
                0 => Ok(()),
                hold => store.block(&acct, now + hold).await,
            }
        }
        // (A hold it started past the limit stays: the address had used its tries.)
        Outcome::Undecided => {
            store.release(&pair, per_client.limit).await?;
            if attempt.account_counted {
                store.release(&acct, per_account.limit).await?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::{LocalStore, MemoryStore};

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

    /// One attempt, let through or not, settled as `outcome` when let through.
    async fn attempt(
        s: &MemoryStore,
        account: &str,
        client: &str,
        outcome: Outcome,
        now: i64,
    ) -> Result<(), Held> {
        let a = check(s, &rule(), account, client, now).await?;
        settle(s, &rule(), account, client, a, outcome, now)
            .await
            .expect("store");
        Ok(())
    }

    /// A day of guesses at one account from a new address each time (a botnet), each sent as
    /// soon as the account's hold lets it, with the default rule (20 failures, holds from 1 s
    /// doubling to 15 min, a 15 min window). The holds add up to longer than the window: a
    /// count that restarted with the window handed the 20 free tries out again every ~17 min
    /// (2,464 guesses a day); held at the cap, it is about one per 15 min.
    #[tokio::test]
    async fn a_day_of_guesses_from_rotating_addresses_stays_near_the_cap() {
        let rule = LoginRule {
            per_client_failures: 5,
            per_account_failures: 20,
            window: Duration::from_secs(900),
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(900),
            ..rule()
        };
        let s = MemoryStore::default();
        let (start, mut now, mut judged) = (1_000_000, 1_000_000, 0u32);
        while now < start + 86_400 {
            let client = format!(
                "10.{}.{}.{}",
                judged >> 16 & 255,
                judged >> 8 & 255,
                judged & 255
            );
            match check(&s, &rule, "victim@x", &client, now).await {
                Ok(a) => {
                    settle(&s, &rule, "victim@x", &client, a, Outcome::Failed, now)
                        .await
                        .expect("store");
                    judged += 1;
                    now += 1;
                }
                Err(Held::Wait(w)) => now += i64::try_from(w).expect("wait"),
                Err(Held::Unknown) => panic!("store"),
            }
        }
        // 20 free, 10 holds growing to the cap (1,023 s), then one per 900 s.
        assert!(
            (110..=130).contains(&judged),
            "{judged} guesses judged in a day"
        );
    }

    #[tokio::test]
    async fn one_address_is_slowed_after_its_own_failures() {
        let (s, now) = (MemoryStore::default(), 1_000_000);
        for _ in 0..3 {
            assert!(
                attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now)
                    .await
                    .is_ok()
            );
        }
        assert_eq!(
            check(&s, &rule(), "a@x", "1.1.1.1", now).await.map(drop),
            Err(Held::Wait(2))
        );
        assert!(
            attempt(&s, "a@x", "2.2.2.2", Outcome::Failed, now)
                .await
                .is_ok(),
            "other addresses are not affected yet"
        );
        assert!(
            attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now + 2)
                .await
                .is_ok(),
            "a delay, not a lock"
        );
        assert_eq!(
            check(&s, &rule(), "a@x", "1.1.1.1", now + 2)
                .await
                .map(drop),
            Err(Held::Wait(4)),
            "the next delay is twice as long"
        );
    }

    #[tokio::test]
    async fn attempts_in_flight_count_before_they_are_answered() {
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        // Ten parallel guesses from one address: all looked at before any is answered.
        let mut let_through = Vec::new();
        for _ in 0..10 {
            if let Ok(a) = check(&s, &r, "a@x", "1.1.1.1", now).await {
                let_through.push(a);
            }
        }
        assert_eq!(let_through.len(), 3, "the address's three tries, no more");
        for a in let_through {
            settle(&s, &r, "a@x", "1.1.1.1", a, Outcome::Failed, now)
                .await
                .expect("store");
        }
        assert_eq!(
            check(&s, &r, "a@x", "1.1.1.1", now).await.map(drop),
            Err(Held::Wait(2))
        );
    }

    #[tokio::test]
    async fn successes_and_undecided_attempts_give_their_count_back() {
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        for _ in 0..2 {
            attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now)
                .await
                .expect("let through");
        }
        // An error upstream is neither: the third try is still there, and after a success
        // the address starts again.
        for outcome in [Outcome::Undecided, Outcome::Undecided, Outcome::Succeeded] {
            attempt(&s, "a@x", "1.1.1.1", outcome, now)
                .await
                .expect("let through");
        }
        for _ in 0..3 {
            attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now)
                .await
                .expect("three tries again");
        }
        assert!(check(&s, &r, "a@x", "1.1.1.1", now).await.is_err());
        // The account-wide count has the five failures only.
        for i in 0..5 {
            attempt(&s, "a@x", &format!("3.3.3.{i}"), Outcome::Failed, now)
                .await
                .expect("under the account's ten");
        }
        assert!(
            check(&s, &r, "a@x", "3.3.3.9", now).await.is_err(),
            "the tenth failure holds the account"
        );
    }

    #[tokio::test]
    async fn a_refusal_for_the_account_leaves_the_address_as_it_was() {
        let (s, r, now) = (MemoryStore::default(), rule(), 1_000_000);
        // The address uses its three tries; its hold (2 s) runs out...
        for _ in 0..3 {
            attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now)
                .await
                .expect("let through");
        }
        // ...while others bring the account to its ten (held 2 s from now + 2).
        for i in 0..7 {
            attempt(&s, "a@x", &format!("2.2.2.{i}"), Outcome::Failed, now + 2)
                .await
                .expect("let through");
        }
        assert_eq!(
            check(&s, &r, "a@x", "1.1.1.1", now + 3).await.map(drop),
            Err(Held::Wait(1)),
            "the account's wait"
        );
        let (pair, _, _) = keys("a@x", "1.1.1.1");
        assert_eq!(
            LocalStore::blocked_until(&s, &pair),
            now + 2,
            "the address's own hold is as it was"
        );
        assert!(
            attempt(&s, "a@x", "1.1.1.1", Outcome::Failed, now + 4)
                .await
                .is_ok(),
            "both holds over: the address's next try"
        );
    }

    #[tokio::test]
    async fn a_distributed_attack_slows_new_addresses_but_not_the_owners() {
        let (s, now) = (MemoryStore::default(), 1_000_000);
        attempt(&s, "a@x", "10.0.0.1", Outcome::Succeeded, now)
            .await
            .expect("let through");
        for i in 0..10 {
            let ip = format!("6.6.6.{i}");
            attempt(&s, "a@x", &ip, Outcome::Failed, now)
                .await
                .expect("let through");
        }
        assert!(
            check(&s, &rule(), "a@x", "6.6.6.200", now).await.is_err(),
            "a new address waits"
        );
        assert!(
            attempt(&s, "a@x", "10.0.0.1", Outcome::Failed, now)
                .await
                .is_ok(),
            "the owner's address does not"
        );
        assert!(
            attempt(&s, "a@x", "10.0.0.1", Outcome::Succeeded, now)
                .await
                .is_ok(),
            "nor after its own failure"
        );
    }

    #[tokio::test]
    async fn no_account_name_spells_another_accounts_key() {
        // Failing on the made-up account `alice|9.9.9.9` must not hold alice at 9.9.9.9.
        let (s, now) = (MemoryStore::default(), 1_000_000);
        for i in 0..12 {
            let client = format!("1.1.1.{i}");
            let _ = attempt(&s, "alice|9.9.9.9", &client, Outcome::Failed, now).await;
        }
        assert!(
            check(&s, &rule(), "alice|9.9.9.9", "1.1.1.200", now)
                .await
                .is_err(),
            "the made-up account itself is held"
        );
        assert!(check(&s, &rule(), "alice", "9.9.9.9", now).await.is_ok());
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
