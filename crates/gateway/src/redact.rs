//! Redaction for anything that reaches a log: query strings and upstream error snippets.
//! Headers and bodies of requests are never logged at all.

/// What a name whose value is a secret contains, once lower-cased and stripped of everything
/// but letters and digits (`accessToken`, `X-Amz-Signature`, `client.secret`, `x-api-key`).
const SECRET_STEMS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "authorization",
    "session",
    "signature",
    "credential",
    "cookie",
    "jwt",
    "privatekey",
];

/// What such a name ends with, where containing it would catch too much (`keyword`).
const SECRET_ENDINGS: &[&str] = &["key", "pwd", "auth", "code", "sig"];

fn sensitive(name: &str) -> bool {
    let decoded = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
    let n: String = decoded
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    !n.is_empty()
        && (SECRET_STEMS.iter().any(|s| n.contains(s))
            || SECRET_ENDINGS.iter().any(|s| n.ends_with(s)))
}

/// A query string with the values of sensitive parameters replaced.
pub fn query(q: &str) -> String {
    q.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if sensitive(k) => format!("{k}=REDACTED"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// A text snippet with bearer tokens, JWTs and `"secretish": "value"` pairs masked.
pub fn text(s: &str) -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for word in s.split_inclusive(|c: char| c.is_whitespace() || c == ',' || c == '&') {
        let w = word.trim_end_matches(|c: char| c.is_whitespace() || c == ',' || c == '&');
        let tail = &word[w.len()..];
        let lower = w.to_ascii_lowercase();
        let looks_like_jwt = w.trim_matches('"').starts_with("eyJ") && w.matches('.').count() >= 2;
        let key_secret = lower.split_once(['=', ':']).is_some_and(|(k, _)| {
            sensitive(k.trim_matches(|c: char| c == '"' || c == '{' || c == '\''))
        });
        let scheme = matches!(
            lower.trim_matches('"'),
            "basic" | "bearer" | "digest" | "token" | "negotiate"
        );
        if mask_next && (scheme || matches!(w, "=" | ":")) {
            // `Authorization: Basic dXNlcjpw`: the credentials follow the scheme; `key = v`:
            // the value follows the separator.
            out.push(word.to_owned());
        } else if mask_next || looks_like_jwt {
            out.push(format!("REDACTED{tail}"));
            mask_next = false;
        } else if key_secret {
            let (k, v) = w.split_once(['=', ':']).unwrap_or((w, ""));
            let sep = if w[k.len()..].starts_with('=') {
                "="
            } else {
                ":"
            };
            out.push(format!("{k}{sep}REDACTED{tail}"));
            // `"password": "hunter2"`: the value is the next word.
            mask_next = v
                .trim_matches(|c: char| c == '"' || c == '\'' || c == ' ')
                .is_empty();
        } else {
            // A secret's name on its own (`api_key = k`, `password hunter2`, `Bearer t`).
            let bare = lower.trim_matches(|c: char| matches!(c, '"' | '\'' | '{' | ':'));
            if bare == "bearer" || sensitive(bare) {
                mask_next = true;
            }
            out.push(word.to_owned());
        }
    }
    out.concat()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_lose_secret_values_only() {
        assert_eq!(
            query("limit=5&access_token=abc&q=mug"),
            "limit=5&access_token=REDACTED&q=mug"
        );
        assert_eq!(query("api_key=k1&page=2"), "api_key=REDACTED&page=2");
        assert_eq!(query("keyword=mug"), "keyword=mug");
        for name in [
            "accessToken",
            "refreshToken",
            "clientSecret",
            "X-Amz-Signature",
            "x-api-key",
            "access%5Ftoken",
            "SESSION_ID",
            "otp_code",
        ] {
            assert_eq!(
                query(&format!("q=mug&{name}=S3CRET")),
                format!("q=mug&{name}=REDACTED")
            );
        }
    }

    #[test]
    fn values_apart_from_their_keys_are_masked() {
        let s = text(
            "{\"password\": \"hunter2\", \"user\": \"bob\"} Authorization: Basic dXNlcjpwYXNz cookie: sid=abc123; x=1 api_key = k9",
        );
        for secret in ["hunter2", "dXNlcjpwYXNz", "sid=abc123", "k9"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(s.contains("bob"), "{s}");
    }

    #[test]
    fn snippets_lose_tokens_and_passwords() {
        let s = text(
            "failed for Bearer abc.def.ghi with {\"password\":\"hunter2\", \"user\":\"bob\"} token=xyz eyJhbGciOi.eyJzdWIi.sig",
        );
        for secret in ["abc.def.ghi", "hunter2", "xyz", "eyJhbGciOi"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(s.contains("bob"));
    }
}
