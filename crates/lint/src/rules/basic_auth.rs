use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-http-basic",
    owasp: "API2:2023",
    cwe: 522,
    title: "HTTP Basic authentication",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Use short-lived bearer tokens (OAuth 2 / OpenID Connect) instead of sending the password with every request.",
    explain: "HTTP Basic sends the user's password on every request, cannot expire or be scoped, and invites brute force against the API itself.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for (name, at, scheme) in spec.schemes() {
        if scheme.str_of("type") == Some("http")
            && scheme
                .str_of("scheme")
                .is_some_and(|s| s.eq_ignore_ascii_case("basic"))
        {
            out.push(Finding::new(
                &RULE,
                at,
                format!("security scheme `{name}` is HTTP Basic: the password travels with every request"),
            ));
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
paths: {}
components:
  securitySchemes:
    basic: # expect: auth-http-basic
      type: http
      scheme: Basic
    bearer:
      type: http
      scheme: bearer
      bearerFormat: JWT
"##,
        );
    }
}
