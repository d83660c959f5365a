//! Secrets never leave the scanner: every excerpt that goes into a finding passes through here.
//!
//! Three nets, because each alone has holes: values of secret-looking JSON keys and headers,
//! anything shaped like a JWT, and the known secrets of the configured identities (passwords,
//! tokens) wherever they appear verbatim.

use serde_json::Value;

/// Replacement text.
pub(crate) const REDACTED: &str = "<redacted>";

/// Whether a JSON key or header name names a secret.
pub(crate) fn secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "authorization",
        "cookie",
        "api_key",
        "apikey",
        "api-key",
        "private_key",
        "credential",
        "session",
        "hash",
    ]
    .iter()
    .any(|s| k.contains(s))
        || personal_secret(&k)
}

/// Names of values that are secrets in any answer beside credentials: card data, national ids,
/// salts. The exposure probe reports them, and every report redacts them.
pub(crate) fn personal_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["salt", "cvv", "ssn", "card_number", "private_key"]
        .iter()
        .any(|s| k.contains(s))
}

/// The known secrets of this scan.
#[derive(Clone, Debug, Default)]
pub(crate) struct Redactor {
    secrets: Vec<String>,
}

impl Redactor {
    pub(crate) fn add(&mut self, secret: impl Into<String>) {
        let s = secret.into();
        // Very short values would redact ordinary words; they are covered by the key rule.
        if s.len() >= 6 && !self.secrets.contains(&s) {
            self.secrets.push(s);
            // Longest first, so a token is replaced before a prefix of it.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Redacts free text: known secrets and JWT-shaped strings.
    pub(crate) fn text(&self, s: &str) -> String {
        let mut out = s.to_owned();
        for secret in &self.secrets {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), REDACTED);
            }
        }
        redact_jwts(&out)
    }

    /// Redacts a JSON value: secret-looking keys keep their name, lose their value.
    pub(crate) fn json(&self, v: &Value) -> Value {
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let v = if secret_key(k) && !v.is_null() {
                            Value::String(REDACTED.into())
                        } else {
                            self.json(v)
                        };
                        (k.clone(), v)
                    })
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| self.json(v)).collect()),
            Value::String(s) => Value::String(self.text(s)),
            other => other.clone(),
        }
    }

    /// Redacts a body: as JSON when it parses, as text otherwise; cut to `max` characters.
    pub(crate) fn body(&self, body: &str, max: usize) -> String {
        let s = match serde_json::from_str::<Value>(body) {
            Ok(v) if v.is_object() || v.is_array() => self.json(&v).to_string(),
            _ => self.text(body),
        };
        truncate(&s, max)
    }

    /// A header line, redacted when the header carries credentials.
    pub(crate) fn header(&self, name: &str, value: &str) -> String {
        let n = name.to_ascii_lowercase();
        if secret_key(&n) || n == "x-api-key" || n == "proxy-authorization" {
            let scheme = value
                .split_whitespace()
                .next()
                .filter(|_| n.contains("authorization"));
            match scheme {
                Some(s) if value.contains(' ') => format!("{name}: {s} {REDACTED}"),
                _ => format!("{name}: {REDACTED}"),
            }
        } else {
            format!("{name}: {}", self.text(value))
        }
    }
}

/// Cuts `s` to at most `max` characters, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}… [truncated]")
}

fn b64url(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

/// Replaces `eyJ<b64>.<b64>.<b64?>` sequences.
fn redact_jwts(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut copied = 0;
    while i + 3 <= b.len() {
        if &b[i..i + 3] == b"eyJ" && (i == 0 || !b64url(b[i - 1])) {
            // header
            let mut j = i;
            while j < b.len() && b64url(b[j]) {
                j += 1;
            }
            if j < b.len() && b[j] == b'.' {
                let mut k = j + 1;
                while k < b.len() && b64url(b[k]) {
                    k += 1;
                }
                if k > j + 1 && k < b.len() && b[k] == b'.' {
                    let mut e = k + 1;
                    while e < b.len() && b64url(b[e]) {
                        e += 1;
                    }
                    out.push_str(&s[copied..i]);
                    out.push_str("<redacted:jwt>");
                    copied = e;
                    i = e;
                    continue;
                }
            }
        }
        i += 1;
    }
    out.push_str(&s[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jwts_keys_and_known_secrets_are_redacted() {
        let mut r = Redactor::default();
        r.add("hunter2hunter2");
        let t = r.text(
            "token eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. and eyJa.eyJb.sig and hunter2hunter2!",
        );
        assert_eq!(t, "token <redacted:jwt> and <redacted:jwt> and <redacted>!");
        let j = r.json(&json!({ "email": "a@b.c", "password_hash": "$argon2id$x", "nested": [{ "access_token": "x" }] }));
        assert_eq!(j["password_hash"], REDACTED);
        assert_eq!(j["nested"][0]["access_token"], REDACTED);
        assert_eq!(j["email"], "a@b.c");
        assert_eq!(
            r.header("Authorization", "Bearer abc"),
            "Authorization: Bearer <redacted>"
        );
        assert_eq!(r.header("Cookie", "sid=1"), "Cookie: <redacted>");
        assert_eq!(r.header("Server", "x/1"), "Server: x/1");
    }
}
