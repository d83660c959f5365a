//! Redaction for anything that reaches a log: query strings and upstream error snippets.
//! Headers and bodies of requests are never logged at all.

/// Query parameter names whose values are secrets.
const SENSITIVE: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "key",
    "api_key",
    "apikey",
    "secret",
    "client_secret",
    "password",
    "passwd",
    "pwd",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "code",
    "signature",
    "sig",
    "jwt",
];

fn sensitive(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| {
        n == *s || n.ends_with(&format!("_{s}")) || n.ends_with(s) && n.len() <= s.len() + 4
    })
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
        if mask_next || looks_like_jwt {
            out.push(format!("REDACTED{tail}"));
            mask_next = false;
        } else if key_secret {
            let (k, _) = w.split_once(['=', ':']).unwrap_or((w, ""));
            let sep = if w[k.len()..].starts_with('=') {
                "="
            } else {
                ":"
            };
            out.push(format!("{k}{sep}REDACTED{tail}"));
        } else {
            if lower == "bearer"
                || lower.ends_with("\"bearer")
                || lower.trim_end_matches(':').ends_with("password")
            {
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
