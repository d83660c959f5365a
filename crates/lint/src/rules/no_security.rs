use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-no-security",
    owasp: "API2:2023",
    cwe: 306,
    title: "Operation without authentication",
    severity: Severity::High,
    strict_only: false,
    fix: "Declare a security requirement for the operation (or globally); mark deliberately public operations with `x-portcullis-public: true`.",
    explain: "An operation with no security requirement is callable by anyone. Writes without authentication let anonymous clients change data; reads may leak it. Public operations (a product catalogue, a login) are fine when they are meant to be: say so with `x-portcullis-public: true` so the intent is reviewable.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let global = spec
        .root
        .get("security")
        .is_some_and(|s| !s.items().is_empty());
    // A description that declares no authentication anywhere gets one finding, not one per
    // operation: the fix is one too.
    let schemes = !spec.schemes().is_empty();
    let any_security = global || spec.ops.iter().any(|o| o.own_security.is_some());
    if !schemes && !any_security {
        let unmarked = spec
            .ops
            .iter()
            .filter(|o| o.node.bool_of("x-portcullis-public") != Some(true))
            .count();
        if unmarked > 0 {
            let at = spec
                .root
                .entry("paths")
                .map_or(spec.root.pos, |(k, _)| k.pos);
            out.push(Finding::new(
                &RULE,
                at,
                format!(
                    "the description declares no authentication at all ({unmarked} operation{}): say how clients authenticate, or mark public operations",
                    if unmarked == 1 { "" } else { "s" }
                ),
            ));
        }
        return;
    }
    for op in &spec.ops {
        if op.is_secured() || op.node.bool_of("x-portcullis-public") == Some(true) {
            continue;
        }
        // Switching a global requirement off is the other rule's finding.
        if global && op.own_security.is_some() {
            continue;
        }
        let (sev, what) = if op.is_write() {
            (Severity::High, "changes data")
        } else {
            (Severity::Medium, "reads data")
        };
        out.push(
            Finding::new(
                &RULE,
                op.at,
                format!("`{}` {what} without any authentication", op.label()),
            )
            .with_severity(sev),
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_description_without_any_authentication_gets_one_finding() {
        super::super::fixture::check(
            &super::RULE,
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths: # expect: auth-no-security
  /a:
    get:
      responses: { "200": { description: ok } }
  /b:
    post:
      responses: { "200": { description: ok } }
"##,
        );
    }

    #[test]
    fn fixture() {
        super::super::fixture::check(
            &super::RULE,
            r##"
openapi: 3.1.0
info: { title: t, version: "1" }
paths:
  /orders:
    get: # expect: auth-no-security
      responses: { "200": { description: ok } }
    post: # expect: auth-no-security
      security: []
      responses: { "201": { description: ok } }
  /me:
    get:
      security: [{ bearer: [] }]
      responses: { "200": { description: ok } }
  /products:
    get:
      x-portcullis-public: true
      responses: { "200": { description: ok } }
components:
  securitySchemes:
    bearer: { type: http, scheme: bearer, bearerFormat: JWT }
"##,
        );
    }
}
