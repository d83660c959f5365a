use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-credentials-in-url",
    owasp: "API2:2023",
    cwe: 598,
    title: "Credentials in the URL",
    severity: Severity::High,
    strict_only: false,
    fix: "Send API keys and tokens in a header (`Authorization` or a custom header), never in the query string or the path.",
    explain: "URLs end up in proxy and server logs, browser history and Referer headers: a key in the query string leaks to everyone who can read those.",
    check,
};

const SECRET_NAMES: &[&str] = &[
    "api_key",
    "apikey",
    "api-key",
    "token",
    "access_token",
    "accesstoken",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "sessionid",
    "session_id",
    "jwt",
];

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for (name, at, scheme) in spec.schemes() {
        if scheme.str_of("type") == Some("apiKey") && scheme.str_of("in") == Some("query") {
            out.push(Finding::new(
                &RULE,
                at,
                format!("API key scheme `{name}` is sent in the query string"),
            ));
        }
    }
    for op in &spec.ops {
        for p in &op.params {
            let (Some(name), Some(loc)) = (p.str_of("name"), p.str_of("in")) else {
                continue;
            };
            if matches!(loc, "query" | "path") && super::named(name, SECRET_NAMES) {
                out.push(Finding::new(
                    &RULE,
                    p.get("name").map_or(p.pos, |n| n.pos),
                    format!("parameter `{name}` carries a credential in the {loc}"),
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
  /reports:
    get:
      parameters:
        - name: access_token # expect: auth-credentials-in-url
          in: query
          schema: { type: string }
        - name: token
          in: header
          schema: { type: string }
        - name: page
          in: query
          schema: { type: integer, maximum: 100 }
      responses: { "200": { description: ok } }
components:
  securitySchemes:
    query_key: # expect: auth-credentials-in-url
      type: apiKey
      in: query
      name: api_key
    header_key:
      type: apiKey
      in: header
      name: X-Api-Key
"##,
        );
    }
}
