use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-bearer-no-format",
    owasp: "API2:2023",
    cwe: 287,
    title: "Bearer token without a stated format",
    severity: Severity::Info,
    strict_only: true,
    fix: "State `bearerFormat` (say `JWT`), so clients, gateways and reviewers know how tokens are verified.",
    explain: "A bearer scheme without `bearerFormat` leaves open what the token is and how it is checked; stating it lets tooling (a gateway, a scanner) apply the right verification.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for (name, at, scheme) in spec.schemes() {
        if scheme.str_of("type") == Some("http")
            && scheme
                .str_of("scheme")
                .is_some_and(|s| s.eq_ignore_ascii_case("bearer"))
            && scheme.get("bearerFormat").is_none()
        {
            out.push(Finding::new(
                &RULE,
                at,
                format!("bearer scheme `{name}` does not say what its tokens are"),
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
    plain: { type: http, scheme: bearer } # expect: auth-bearer-no-format
    jwt: { type: http, scheme: bearer, bearerFormat: JWT }
"##,
        );
    }
}
