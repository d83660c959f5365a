use super::{Finding, Rule, Severity};
use crate::node::Node;
use crate::spec::{Spec, type_of};

pub(super) static RULE: Rule = Rule {
    id: "ssrf-url-input",
    owasp: "API7:2023",
    cwe: 918,
    title: "URL input without an allowlist",
    severity: Severity::High,
    strict_only: false,
    fix: "Restrict the URL to known hosts (a `pattern` anchored on the host, or an `enum`), and check it on the server after resolving the name (every non-public address refused); mark fields guarded that way with `x-portcullis-ssrf: true`.",
    explain: "A URL the server fetches on the client's behalf (webhooks, avatars, imports, callbacks) is how attackers reach the cloud metadata address and internal services (SSRF). The contract should pin the hosts; the server (or the gateway's SSRF guard) must refuse internal addresses whatever the spelling.",
    check,
};

const NAMES: &[&str] = &[
    "url",
    "uri",
    "href",
    "callback",
    "callback_url",
    "webhook",
    "webhook_url",
    "redirect",
    "redirect_url",
    "redirect_uri",
    "return_url",
    "image_url",
    "avatar_url",
    "feed_url",
];

fn url_like(name: Option<&str>, s: &Node) -> bool {
    let format = s
        .str_of("format")
        .is_some_and(|f| matches!(f, "uri" | "url" | "iri" | "uri-reference"));
    let named = name.is_some_and(|n| super::named(n, NAMES));
    type_of(s) == Some("string") && (format || named)
}

/// A pattern that pins a host (`^https://images\.example\.com/`), not only a scheme.
fn pinned(s: &Node) -> bool {
    if s.get("enum").is_some() || s.get("const").is_some() {
        return true;
    }
    s.str_of("pattern").is_some_and(|p| {
        let rest = p.trim_start_matches('^').split("://").nth(1).unwrap_or("");
        rest.chars()
            .take_while(|c| *c != '/')
            .any(|c| c.is_ascii_alphanumeric())
    })
}

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let mut seen = std::collections::HashSet::new();
    for op in &spec.ops {
        for (name, s, at) in spec.inputs(op) {
            if url_like(name, s)
                && !pinned(s)
                && s.bool_of("x-portcullis-ssrf") != Some(true)
                && seen.insert(at)
            {
                out.push(Finding::new(
                    &RULE,
                    at,
                    format!(
                        "`{}` takes a URL with no host allowlist (`{}`)",
                        name.unwrap_or("value"),
                        op.label()
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fixture() {
        super::super::fixture::check(
            &super::RULE,
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /hooks:
    post:
      parameters:
        - name: callback # expect: ssrf-url-input
          in: query
          schema: { type: string }
      requestBody:
        content:
          application/json:
            schema:
              type: object
              properties:
                target: { type: string, format: uri, pattern: "^https://" } # expect: ssrf-url-input
                endpoint: { type: string }
                image: { type: string, format: uri, pattern: "^https://images\\.example\\.com/" }
                guarded: { type: string, format: uri, x-portcullis-ssrf: true }
                name: { type: string }
                callbackUrl: { type: string } # expect: ssrf-url-input
                Redirect-URI: { type: string } # expect: ssrf-url-input
      responses: { "201": { description: ok } }
"##,
        );
    }
}
