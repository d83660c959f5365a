use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "auth-security-overridden",
    owasp: "API2:2023",
    cwe: 306,
    title: "Global security switched off for an operation",
    severity: Severity::Medium,
    strict_only: false,
    fix: "Remove `security: []` from the operation, or mark it `x-portcullis-public: true` if it is meant to be public.",
    explain: "`security: []` on an operation removes the document's global requirement: an easy way to open one endpoint by accident, and invisible in code review unless flagged.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    let global = spec
        .root
        .get("security")
        .is_some_and(|s| !s.items().is_empty());
    if !global {
        return;
    }
    for op in &spec.ops {
        let Some((key, sec)) = op.own_security else {
            continue;
        };
        let off = sec.items().is_empty() || sec.items().iter().any(|r| r.entries().is_empty());
        if off && op.node.bool_of("x-portcullis-public") != Some(true) {
            let sev = if op.is_write() {
                Severity::High
            } else {
                Severity::Medium
            };
            out.push(
                Finding::new(
                    &RULE,
                    key.pos,
                    format!(
                        "`{}` switches the global security requirement off",
                        op.label()
                    ),
                )
                .with_severity(sev),
            );
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
security: [{ bearer: [] }]
paths:
  /orders:
    delete:
      security: [] # expect: auth-security-overridden
      responses: { "204": { description: ok } }
    get:
      security: [{}, { bearer: [] }] # expect: auth-security-overridden
      responses: { "200": { description: ok } }
  /login:
    post:
      security: []
      x-portcullis-public: true
      responses: { "200": { description: ok } }
  /me:
    get:
      security: [{ bearer: [] }]
      responses: { "200": { description: ok } }
"##,
        );
    }
}
