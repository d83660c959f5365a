//! API2 (broken authentication), part three: login brute force on one account from rotating
//! loopback source addresses (does a per-account limit exist?), whether that limit can be
//! raced (more guesses judged when sent at once than one after another), and account
//! enumeration from differing login failures. The brute-forced accounts are ones that do not
//! exist, so no real account is locked, unless destructive probes are allowed: then a limit
//! missing for unknown accounts is confirmed on the first identity's own account (an API may
//! count existing accounts only). The enumeration costs the first identity one failed login.

use std::sync::Arc;

use reqwest::Method;
use serde_json::Value;

use super::{burst, login_body, login_recipe, stable, unknown_account};
use crate::ctx::Ctx;
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;

const PROBE: &str = "login";
const WRONG: &str = "Portcullis-wrong-password-1";

pub(crate) async fn run(ctx: &Arc<Ctx>) {
    let Some((_, recipe, account, password)) = login_recipe(ctx) else {
        ctx.note("login: no identity logs in with a recipe; login probes skipped");
        return;
    };
    let Ok(method) = Method::from_bytes(recipe.method.as_bytes()) else {
        return;
    };
    let key = format!("{} {}", recipe.method, recipe.path);
    if let Some(op) = ctx.model.find(&method, &recipe.path) {
        ctx.ran(op, PROBE);
    }
    let real = recipe
        .body
        .get(&account)
        .and_then(Value::as_str)
        .unwrap_or("user")
        .to_owned();

    // Enumeration: a real account with a wrong password against an unknown one.
    let known = Req::new(method.clone(), recipe.path.clone())
        .json(login_body(&recipe, &account, &password, &real, WRONG))
        .from(ctx.lane(3, 0));
    let unknown = Req::new(method.clone(), recipe.path.clone())
        .json(login_body(
            &recipe,
            &account,
            &password,
            &unknown_account(&real, "nobody"),
            WRONG,
        ))
        .from(ctx.lane(3, 0));
    if let (Some(k), Some(u)) = (ctx.send(&known).await, ctx.send(&unknown).await)
        && !k.ok()
        && k.status != 429
        && u.status != 429
    {
        let body = |r: &crate::http::Resp| {
            r.json()
                .map(|j| stable(&j))
                .unwrap_or_else(|| Value::String(r.text.clone()))
        };
        if k.status != u.status || body(&k) != body(&u) {
            ctx.report(
                Finding::new(rules::LOGIN_ENUMERATION, Severity::Medium, &key, "")
                    .detail(format!(
                        "A wrong password for an existing account is answered {}, an unknown account {}{}: the answers tell which accounts exist.",
                        k.status,
                        u.status,
                        if k.status == u.status { " with a different body" } else { "" }
                    ))
                    .evidence(ctx.http.exchange(&known, Some(&k)))
                    .evidence(ctx.http.exchange(&unknown, Some(&u)))
                    .reproduce(ctx.http.curl(&unknown)),
            );
        }
    }

    // Brute force: one account, each attempt from another address.
    let n = ctx.config.brute_force_attempts.clamp(6, 250);
    if !ctx.http.can_rotate_sources() {
        ctx.note("login: source addresses cannot be rotated here; the brute-force probe sends from one address");
    }
    if ctx.http.remaining() < n * 2 {
        return;
    }
    // First the guesses one after another, on one account, until the first refusal: how many
    // the limit allows when it is not raced (measured first, so a budget the parallel guesses
    // share with them, such as a per-address limit behind a proxy, cannot make it look lower).
    // The `i`-th wrong password for `victim`, from `source`.
    let guess = |victim: &str, i: u32, source: crate::http::Source| {
        Req::new(method.clone(), recipe.path.clone())
            .json(login_body(
                &recipe,
                &account,
                &password,
                victim,
                &format!("{WRONG}{i}"),
            ))
            .from(source)
    };
    let mut one_by_one = None;
    if ctx.http.remaining() >= n * 3 {
        let sequential = unknown_account(&real, "sequential");
        let mut statuses = Vec::new();
        for i in 0..n {
            let req = guess(&sequential, i, ctx.lane(7, i as u8));
            let Some(resp) = ctx.send(&req).await else {
                break;
            };
            if refusal(resp.status) {
                one_by_one = Some(OneByOne {
                    judged: i as usize,
                    refused: (req, resp),
                    statuses,
                });
                break;
            }
            if !resp.ok() && !statuses.contains(&resp.status) {
                statuses.push(resp.status);
            }
        }
    }
    let victim = unknown_account(&real, "bruteforce");
    let reqs: Vec<Req> = (0..n)
        .map(|i| guess(&victim, i, ctx.lane(2, i as u8)))
        .collect();
    let answers = burst(ctx, reqs).await;
    let refused = |answers: &[(Req, Option<crate::http::Resp>)]| {
        answers
            .iter()
            .filter(|(_, r)| r.as_ref().is_some_and(|r| refusal(r.status)))
            .count()
    };
    let answered = answers.iter().filter(|(_, r)| r.is_some()).count();
    let rotating_refused = refused(&answers);

    // The same guesses from one address: is there a per-address limit at all, and does it
    // trust an X-Forwarded-For the client chooses?
    let mut per_address = false;
    if ctx.http.can_rotate_sources() && ctx.http.remaining() >= n * 2 {
        let single = unknown_account(&real, "single");
        let plain = burst(
            ctx,
            (0..n).map(|i| guess(&single, i, ctx.lane(5, 0))).collect(),
        )
        .await;
        per_address = refused(&plain) > 0;
        if per_address {
            let other = unknown_account(&real, "spoofed");
            // Documentation addresses (RFC 5737): a header value only, nothing is sent there.
            let spoofed = burst(
                ctx,
                (0..n)
                    .map(|i| {
                        guess(&other, i, ctx.lane(6, 0))
                            .header("X-Forwarded-For", format!("203.0.113.{}", i % 250 + 1))
                    })
                    .collect(),
            )
            .await;
            let all_answered = spoofed.iter().all(|(_, r)| r.is_some());
            if refused(&spoofed) == 0
                && all_answered
                && let Some((req, Some(resp))) = spoofed.last()
            {
                ctx.report(
                    Finding::new(rules::LOGIN_XFF_BYPASS, Severity::High, &key, "")
                        .detail(format!(
                            "{n} wrong passwords from one address are throttled, but the same {n} from that address with a different `X-Forwarded-For` each are all answered {}: the limit believes the client's header.",
                            resp.status
                        ))
                        .evidence(ctx.http.exchange(req, Some(resp)))
                        .reproduce(ctx.http.curl(req)),
                );
            }
        }
    }

    // More judged when sent at once than one after another: the limit is looked at before an
    // attempt is counted. Judged: answered as the guesses one after another were before their
    // refusal (an error under load is not a verdict).
    let verdict = |r: &Option<crate::http::Resp>| {
        r.as_ref().is_some_and(|r| {
            one_by_one
                .as_ref()
                .is_some_and(|o| o.statuses.contains(&r.status))
        })
    };
    let judged = answers.iter().filter(|(_, r)| verdict(r)).count();
    // One more is not a race: a delay that ends while the burst is in flight lets one more
    // guess through, as it should.
    if let Some(OneByOne {
        judged: allowed,
        refused: (req, resp),
        ..
    }) = &one_by_one
        && judged > *allowed + 1
        && let Some((first, Some(first_resp))) = answers.iter().find(|(_, r)| verdict(r))
    {
        ctx.report(
            Finding::new(rules::LOGIN_LOCKOUT_RACE, Severity::Medium, &key, "")
                .detail(format!(
                    "Sent one after another, {allowed} wrong passwords for one account are judged before the next is refused ({}); sent at once, {judged} of {n} were judged: the limit is looked at before an attempt is counted, so every guess in flight gets past it.",
                    resp.status
                ))
                .evidence(ctx.http.exchange(first, Some(first_resp)))
                .evidence(ctx.http.exchange(req, Some(resp)))
                .reproduce(ctx.http.curl(first)),
        );
    }

    // (No refusal at once, but one after another: that limit exists, and is raced.)
    if rotating_refused == 0
        && answered as u32 == n
        && one_by_one.is_none()
        && let Some((req, Some(resp))) = answers.last()
    {
        let sources = if ctx.http.can_rotate_sources() { n } else { 1 };
        let through = if per_address {
            " (the only limit is per address: rotating addresses escapes it)"
        } else {
            ""
        };
        // Some APIs count the failures of existing accounts only (and lock them): allowed to
        // be destructive, the same guesses on the first identity's own account tell (it may
        // be locked after); otherwise the finding says what it could not tell.
        let (severity, account, on_real) = if ctx.config.allow_destructive {
            let reqs: Vec<Req> = (0..n)
                .map(|i| guess(&real, i, ctx.lane(8, i as u8)))
                .collect();
            let on_real = burst(ctx, reqs).await;
            if refused(&on_real) > 0 || on_real.iter().any(|(_, r)| r.is_none()) {
                return;
            }
            (
                Severity::High,
                "an existing account (the first identity's)",
                on_real,
            )
        } else {
            (Severity::Medium, "one account", Vec::new())
        };
        let (req, resp) = match on_real.last() {
            Some((req, Some(resp))) => (req, resp),
            _ => (req, resp),
        };
        let caveat = if severity == Severity::High {
            ""
        } else {
            " The account does not exist (no real account is locked by the scan): an API that counts the failures of existing accounts only is not affected; `--allow-destructive` tries the first identity's own account."
        };
        ctx.report(
            Finding::new(rules::LOGIN_BRUTE_FORCE, severity, &key, "")
                .detail(format!(
                    "{n} wrong passwords for {account}, sent from {sources} source addresses, were all answered {} and never throttled or locked: passwords can be guessed without limit{through}.{caveat}",
                    resp.status
                ))
                .evidence(ctx.http.exchange(req, Some(resp)))
                .reproduce(ctx.http.curl(req)),
        );
    }
}

/// Guesses sent one after another until the first refusal.
struct OneByOne {
    /// How many were judged before it.
    judged: usize,
    /// The refused one and its answer.
    refused: (Req, crate::http::Resp),
    /// The statuses the judged ones were answered with (their verdict).
    statuses: Vec<u16>,
}

/// An answer that refuses the attempt rather than judging it.
fn refusal(status: u16) -> bool {
    matches!(status, 429 | 423 | 403)
}
