use super::{Finding, Rule, Severity};
use crate::spec::Spec;

pub(super) static RULE: Rule = Rule {
    id: "config-no-error-schema",
    owasp: "API8:2023",
    cwe: 209,
    title: "No error response with a schema",
    severity: Severity::Low,
    strict_only: true,
    fix: "Declare 4xx (and 5xx) responses with a schema, ideally RFC 9457 `application/problem+json`, so what errors may say is part of the contract.",
    explain: "When errors have no declared shape, whatever the framework produces (stack traces, SQL, file paths) is what clients get, and no test or gateway can tell a leak from a message.",
    check,
};

fn check(spec: &Spec<'_>, out: &mut Vec<Finding>) {
    for op in &spec.ops {
        let declared = op
            .node
            .get("responses")
            .map(|r| r.entries())
            .unwrap_or_default()
            .iter()
            .any(|(code, r)| {
                let r = spec.deref(r);
                (code.name.starts_with('4') || code.name.starts_with('5') || code.name == "default")
                    && r.get("content")
                        .is_some_and(|c| c.entries().iter().any(|(_, m)| m.get("schema").is_some()))
            });
        if !declared {
            out.push(Finding::new(
                &RULE,
                op.at,
                format!("`{}` declares no error response with a schema", op.label()),
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
paths:
  /a:
    get: # expect: config-no-error-schema
      responses: { "200": { description: ok }, "404": { description: missing } }
    post:
      responses:
        "201": { description: ok }
        "400":
          description: bad
          content:
            application/problem+json:
              schema: { type: object }
"##,
        );
    }
}
